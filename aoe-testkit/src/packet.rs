//! A minimal raw Ethernet socket, independent of the crates under test.
//!
//! Tests use it to inject hand-made frames and to see what really went over
//! a test link without trusting the transport code being tested. A socket
//! opened with [`ETH_P_ALL`] is a sniffer: it also sees the frames sent on
//! the interface by others in its namespace (but never its own); a socket
//! opened for one EtherType sees incoming frames of that type only.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// EtherType of ATA over Ethernet.
pub const ETH_P_AOE: u16 = 0x88A2;

/// Pseudo-EtherType that receives every frame, incoming and outgoing.
pub const ETH_P_ALL: u16 = 0x0003;

/// Smallest Ethernet frame without FCS; [`PacketSocket::send`] pads up to it.
pub const ETH_MIN_FRAME: usize = 60;

/// An `AF_PACKET`/`SOCK_RAW` socket bound to one interface and EtherType.
///
/// Frames are whole Ethernet frames (destination, source, EtherType,
/// payload; no FCS).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a socket on `ifname` in the calling thread's current network
    /// namespace (call it inside [`Netns::enter`]), receiving frames of
    /// `ethertype` only ([`ETH_P_ALL`]: all frames, both directions).
    pub fn open(ifname: &str, ethertype: u16) -> io::Result<PacketSocket> {
        let ifindex = ifindex(ifname)?;
        let proto = ethertype.to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto)) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `addr` is a valid sockaddr_ll of the stated length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Opens a socket on `ifname` inside `netns` (see [`PacketSocket::open`]).
    pub fn open_in(netns: &Netns, ifname: &str, ethertype: u16) -> io::Result<PacketSocket> {
        netns.enter(|| PacketSocket::open(ifname, ethertype))
    }

    /// Asks for a receive buffer of `bytes` (`SO_RCVBUFFORCE`, which needs `CAP_NET_ADMIN`,
    /// else `SO_RCVBUF`, capped by `net.core.rmem_max`), so that a burst of frames waits
    /// for the reader rather than being dropped.
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let set = |option| {
            // SAFETY: `value` is a c_int that outlives the call; its size is given.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        set(libc::SO_RCVBUFFORCE).or_else(|_| set(libc::SO_RCVBUF))
    }

    /// Index of the interface the socket is bound to (in its namespace).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends one frame, zero-padded to [`ETH_MIN_FRAME`] bytes if shorter.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut padded;
        let frame = if frame.len() < ETH_MIN_FRAME {
            padded = frame.to_vec();
            padded.resize(ETH_MIN_FRAME, 0);
            &padded[..]
        } else {
            frame
        };
        // SAFETY: the pointer and length describe `frame`, which outlives the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else if n as usize != frame.len() {
            Err(io::Error::other(format!("short send: {n} of {} bytes", frame.len())))
        } else {
            Ok(())
        }
    }

    /// Receives the next frame (see [`PacketSocket::open`] for which), waiting
    /// at most `timeout`; `Ok(None)` on timeout.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                return Ok(None);
            }
            // SAFETY: the pointer and length describe `buf`.
            let n = unsafe {
                libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                    continue;
                }
                return Err(e);
            }
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
    }

    /// Receives frames until `pred` accepts one or `timeout` passes; returns
    /// the accepted frame, if any. Frames not accepted are discarded.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_timeout(left)? {
                Some(frame) if pred(&frame) => return Ok(Some(frame)),
                Some(_) if !left.is_zero() => {}
                _ => return Ok(None),
            }
        }
    }
}

/// Index of interface `ifname` in the calling thread's network namespace.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("no interface {ifname:?} here: {e}")))
    } else {
        Ok(index)
    }
}
