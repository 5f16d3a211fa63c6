//! Raw Ethernet on a named Linux interface through an `AF_PACKET` socket.
//!
//! The socket is made with `libc` directly rather than the `afpacket` crate, which listens to
//! every EtherType and offers neither `recvmmsg`/`sendmmsg` batching nor the socket options set
//! here.
//!
//! The socket is bound to one interface and to EtherType 0x88A2, so the kernel hands it AoE
//! frames only, and never the frames it sent: the kernel mirrors outgoing frames only to
//! sockets listening to every EtherType, and `PACKET_IGNORE_OUTGOING` (Linux 4.20 and later)
//! is set as well, in case that changes. A batch is sent with one `sendmmsg` call, each frame's
//! headers apart from its sectors (see [`AfPacketOptions::vnet_header`]). It is received with
//! one `recvmmsg` call straight into the [`FrameBatch`] slots, or, with
//! [`AfPacketOptions::rx_ring`], read in a ring shared with the kernel (`rx_ring` module),
//! where the batch holds them. No path allocates.
//!
//! With `recvmmsg`, receiving costs one system call per batch when the caller waits the same
//! way each time (a server loop that wakes every so often to look at a stop flag): the wait
//! becomes the socket's receive timeout (`SO_RCVTIMEO`) and a blocking `recvmmsg` with
//! `MSG_WAITFORONE` sleeps until the first frame and then takes whatever else is queued. Other
//! waits `poll` the socket. With a ring, frames that wait are taken without a system call and
//! an empty ring is waited for with `poll`.

// The one module that talks to the kernel; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_proto::ethernet::{MacAddr, ETHERTYPE_AOE, HEADER_LEN};
use aoe_proto::sizing::ATA_DATA_OFFSET;

use crate::{FrameBatch, Transport};
use rx_ring::{AttachError, RxRing};

mod rx_ring;

/// `PACKET_IGNORE_OUTGOING` from `<linux/if_packet.h>` (Linux 4.20).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Bytes of the `virtio_net_hdr` that `PACKET_VNET_HDR` puts before every frame the socket
/// sends or receives.
const VNET_HEADER_LEN: usize = 10;
/// How often a receive from the ring that finds nothing and may not wait (a busy-polling
/// loop) asks the socket for a pending error, each time a system call.
const RING_ERROR_CHECK: Duration = Duration::from_millis(1);

/// How long `send_batch` keeps retrying a full send queue before it gives up.
const SEND_STALL_LIMIT: Duration = Duration::from_secs(1);
/// How long a send retries frames the device drops (`ENOBUFS`) before it counts them lost.
const DEVICE_DROP_PATIENCE: Duration = Duration::from_millis(2);
/// Shortest wait that may become the socket's receive timeout. The kernel keeps that timeout in
/// scheduler ticks (1 to 10 ms), rounded up, so a wait this long or longer ends at most a tick
/// late; shorter waits are deadlines (retransmissions) and `poll`, which keeps milliseconds.
const MIN_SOCKET_TIMEOUT: Duration = Duration::from_millis(20);
/// Longest wait that may become the socket's receive timeout; longer ones `poll`.
const MAX_SOCKET_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Socket settings for [`AfPacket::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// Requested receive buffer in bytes (`SO_RCVBUFFORCE`, else `SO_RCVBUF`, which the kernel
    /// caps at `net.core.rmem_max`). Default 4 MiB.
    pub recv_buffer: usize,
    /// Requested send buffer in bytes (`SO_SNDBUFFORCE`, else `SO_SNDBUF`, capped at
    /// `net.core.wmem_max`). Default 4 MiB.
    pub send_buffer: usize,
    /// Receive through a ring of about `recv_buffer` bytes mapped from the kernel
    /// (`PACKET_RX_RING`, `TPACKET_V2`) rather than with `recvmmsg`: frames that keep coming
    /// are then taken without a system call. When the kernel refuses the ring the socket
    /// receives with `recvmmsg` ([`AfPacket::has_rx_ring`] tells). A socket with a ring has one
    /// receiver: [`AfPacket::try_clone`] refuses it. Frames are not copied out of the ring:
    /// a batch reads them there and holds their slots until it is cleared (the next receive
    /// into it clears it) or dropped; while a batch holds the slot the kernel fills next,
    /// frames that come are dropped. A batch that outlives the `AfPacket` keeps the ring, and
    /// so the socket, open (still receiving) until it lets go. Default off.
    pub rx_ring: bool,
    /// Give the kernel each sent frame's headers, its first 36 bytes (Ethernet, AoE, ATA),
    /// for the packet's own buffer and the rest, the sectors, for pages of their own, by way
    /// of a `virtio_net_hdr` (`PACKET_VNET_HDR`); the kernel otherwise splits a frame of about
    /// a page or more after its 14-byte Ethernet header (smaller ones stay whole). Sectors
    /// copied from the page cache then start at the same offset within a page as they end up
    /// at, rather than 22 bytes on, a distance at which the CPU's string copy runs about three
    /// times slower (4 KiB aliasing). Frames received are unchanged. Ignored when the kernel
    /// refuses the option. Default on.
    pub vnet_header: bool,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions { recv_buffer: 4 << 20, send_buffer: 4 << 20, rx_ring: false, vnet_header: true }
    }
}

/// What the kernel says about a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Hardware address.
    pub mac: MacAddr,
    /// MTU: payload bytes after the 14-byte Ethernet header.
    pub mtu: usize,
    /// True when the interface is administratively up (`IFF_UP`).
    pub up: bool,
}

/// Why [`AfPacket::open`] or [`interface_info`] failed. Each message is one line that names
/// the interface.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The interface does not exist (in this network namespace).
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    /// The interface exists but is not up.
    #[error("interface {0} is down")]
    InterfaceDown(String),
    /// The interface does not carry Ethernet frames (a tun or WireGuard device, say).
    #[error("interface {0} is not an Ethernet interface")]
    NotEthernet(String),
    /// The process may not open raw sockets.
    #[error("permission denied opening a raw socket on {0} (needs root or CAP_NET_RAW)")]
    PermissionDenied(String),
    /// Any other system call failure; `op` says what was being done.
    #[error("{op} on {ifname}: {error}")]
    Io {
        /// What was being done, e.g. "binding the raw socket".
        op: &'static str,
        /// The interface.
        ifname: String,
        /// The system's error.
        error: io::Error,
    },
}

/// An AoE transport over a raw socket bound to one Linux interface.
///
/// Opening needs root or `CAP_NET_RAW`. The MAC and MTU are read once, at open.
#[derive(Debug)]
pub struct AfPacket {
    fd: OwnedFd,
    info: InterfaceInfo,
    rx: RxVectors,
    /// Where frames arrive when the socket has a receive ring ([`AfPacketOptions::rx_ring`]).
    ring: Option<RxRing>,
    /// Why the kernel refused the ring that was asked for.
    ring_refused: Option<io::Error>,
    /// When a receive from the ring last asked the socket for a pending error.
    ring_error_checked: Option<Instant>,
    tx: TxVectors,
    /// The send buffer asked for at open ([`AfPacketOptions::send_buffer`]).
    send_buffer: usize,
    wait: WaitState,
    /// Shared by every handle on the socket ([`try_clone`](Self::try_clone)): the receive
    /// timeout belongs to the socket, so only a handle alone on it may rely on or change it.
    handles: Arc<()>,
}

/// What `recv_batch` knows about how to wait.
#[derive(Debug, Clone, Copy, Default)]
struct WaitState {
    /// The socket's `SO_RCVTIMEO`, `None` for none (the kernel's default: wait forever).
    socket_timeout: Option<Duration>,
    /// The timeout the previous `recv_batch` asked for, once there was one.
    last_asked: Option<Option<Duration>>,
    /// The previous polled receive waited and then found a single frame, as a request and
    /// answer at queue depth 1 do: the next one polls before it tries.
    poll_first: bool,
}

impl AfPacket {
    /// Opens a raw AoE socket on interface `ifname`, which must exist and be up.
    pub fn open(ifname: &str, opts: AfPacketOptions) -> Result<AfPacket, OpenError> {
        let info = interface_info(ifname)?;
        if !info.up {
            return Err(OpenError::InterfaceDown(info.name));
        }
        let io_err = |op, error| OpenError::Io { op, ifname: ifname.to_owned(), error };
        // Protocol 0 receives nothing until bind() names both the interface and the EtherType,
        // so no frame from another interface can slip in between.
        let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => OpenError::PermissionDenied(ifname.to_owned()),
            _ => io_err("opening a raw socket", e),
        })?;
        // Older kernels lack the option; a socket bound to one EtherType does not see its own
        // frames there either.
        match setsockopt_int(fd.as_fd(), libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) {
            Err(e) if e.raw_os_error() != Some(libc::ENOPROTOOPT) => {
                return Err(io_err("setting PACKET_IGNORE_OUTGOING", e));
            }
            _ => {}
        }
        // Before any ring: the kernel refuses the option on a socket that has one.
        let vnet = opts.vnet_header
            && setsockopt_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1).is_ok();
        set_buffer(fd.as_fd(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, opts.recv_buffer)
            .map_err(|e| io_err("setting the receive buffer", e))?;
        set_buffer(fd.as_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, opts.send_buffer)
            .map_err(|e| io_err("setting the send buffer", e))?;
        // Before bind, so that no frame queued for recvmmsg is purged when the ring comes. A
        // kernel that refuses the ring leaves the socket as it was: it receives with recvmmsg.
        let slot_bytes = HEADER_LEN + info.mtu + if vnet { VNET_HEADER_LEN } else { 0 };
        let (ring, ring_refused) = match opts.rx_ring {
            false => (None, None),
            true => match RxRing::attach(fd.as_fd(), slot_bytes, opts.recv_buffer) {
                Ok(ring) => (Some(ring), None),
                Err(AttachError::Refused(e)) => (None, Some(e)),
                Err(AttachError::Stuck(e)) => return Err(io_err("taking down a receive ring", e)),
            },
        };

        if let Err(e) = bind(fd.as_fd(), info.index, ETHERTYPE_AOE) {
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) => OpenError::NoSuchInterface(ifname.to_owned()),
                Some(libc::ENETDOWN) => OpenError::InterfaceDown(ifname.to_owned()),
                _ => io_err("binding the raw socket", e),
            });
        }
        Ok(AfPacket {
            fd,
            info,
            rx: RxVectors::new(vnet),
            ring,
            ring_refused,
            ring_error_checked: None,
            tx: TxVectors::new(vnet),
            send_buffer: opts.send_buffer,
            wait: WaitState::default(),
            handles: Arc::new(()),
        })
    }

    /// Another handle to the same socket (the descriptor is duplicated), so one thread can
    /// receive while another sends. Each frame is received by one handle only.
    ///
    /// Fails for a socket with a receive ring ([`AfPacketOptions::rx_ring`]), which has one
    /// reader.
    pub fn try_clone(&self) -> io::Result<AfPacket> {
        if self.ring.is_some() {
            let e = "a socket with a receive ring has a single handle";
            return Err(io::Error::new(io::ErrorKind::Unsupported, e));
        }
        Ok(AfPacket {
            fd: self.fd.try_clone()?,
            info: self.info.clone(),
            rx: RxVectors::new(self.tx.vnet),
            ring: None,
            ring_refused: None,
            ring_error_checked: None,
            tx: TxVectors::new(self.tx.vnet),
            send_buffer: self.send_buffer,
            wait: WaitState { socket_timeout: self.wait.socket_timeout, ..WaitState::default() },
            handles: Arc::clone(&self.handles),
        })
    }

    /// A handle that only sends: a socket of its own, bound to the same interface but to no
    /// EtherType, so that other threads can send while this handle receives, whether or not
    /// it has a receive ring. Its frames go out as this socket's do (with a `virtio_net_hdr`
    /// when this socket has them). It receives nothing: its `recv_batch` only waits.
    pub fn sender(&self) -> io::Result<AfPacket> {
        let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        let vnet =
            self.tx.vnet && setsockopt_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1).is_ok();
        set_buffer(fd.as_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, self.send_buffer)?;
        // EtherType 0: the kernel hands this socket no frame.
        bind(fd.as_fd(), self.info.index, 0)?;
        Ok(AfPacket {
            fd,
            info: self.info.clone(),
            rx: RxVectors::new(vnet),
            ring: None,
            ring_refused: None,
            ring_error_checked: None,
            tx: TxVectors::new(vnet),
            send_buffer: self.send_buffer,
            wait: WaitState::default(),
            handles: Arc::new(()),
        })
    }

    /// True when frames arrive through a receive ring ([`AfPacketOptions::rx_ring`]).
    pub fn has_rx_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Why the kernel refused the receive ring that was asked for, if it did.
    pub fn rx_ring_refused(&self) -> Option<&io::Error> {
        self.ring_refused.as_ref()
    }

    /// The interface as it was when the socket was opened.
    pub fn info(&self) -> &InterfaceInfo {
        &self.info
    }

    /// One `recvmmsg` into the free slots of `batch`: with `MSG_DONTWAIT` it takes what is
    /// queued now; with `MSG_WAITFORONE` on a blocking socket it first waits (at most the
    /// socket's receive timeout) for one frame. Ok(None) when nothing came, or a signal
    /// interrupted the wait; else the frames the batch now holds (0 when every frame that came
    /// was skipped).
    fn recv_now(&mut self, batch: &mut FrameBatch, flags: libc::c_int) -> io::Result<Option<usize>> {
        let base = batch.len();
        let prefix = self.rx.prefix();
        let msgs = self.rx.point_at(batch);
        let vlen = msgs.len() - base;
        // SAFETY: every entry of `msgs` points at the iovecs of `self.rx`: one that covers one
        // whole slot of `batch` (`point_at` just checked the slots' address and sizes), after
        // one for the scratch buffer `self.rx` owns when the socket has virtio_net_hdrs; entries
        // `base..` are its free slots. `batch` is borrowed mutably for the whole call, so the
        // kernel's writes overlap nothing else; the vectors are not touched meanwhile.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr().add(base),
                vlen as libc::c_uint,
                flags,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        for (i, m) in msgs[base..base + n as usize].iter().enumerate() {
            // A virtio_net_hdr, when the socket has them, went to the scratch buffer first.
            let len = (m.msg_len as usize).saturating_sub(prefix);
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // Runts cannot be AoE; a frame bigger than the slot would arrive cut short.
            if len >= HEADER_LEN && !truncated {
                batch.accept(base + i, len);
            }
        }
        Ok(Some(batch.len()))
    }

    /// Whether this receive may sleep in `recvmmsg` under the socket's receive timeout:
    /// the handle is alone on the socket and the timeout is what the socket has, or what the
    /// previous receive asked for too (a loop that waits the same way each time), which is
    /// then set.
    fn may_block(&mut self, timeout: Option<Duration>) -> bool {
        let repeated = self.wait.last_asked == Some(timeout);
        self.wait.last_asked = Some(timeout);
        let long = timeout.is_none_or(|t| (MIN_SOCKET_TIMEOUT..=MAX_SOCKET_TIMEOUT).contains(&t));
        if !long || Arc::strong_count(&self.handles) > 1 {
            return false;
        }
        if self.wait.socket_timeout == timeout {
            return true;
        }
        if !repeated {
            return false;
        }
        match set_receive_timeout(self.fd.as_fd(), timeout) {
            Ok(()) => {
                self.wait.socket_timeout = timeout;
                true
            }
            Err(_) => false,
        }
    }

    /// Receives from the ring: takes what waits there, else sleeps in `poll` until a frame
    /// comes or `timeout` passes. The interface going down shows as an error on the socket
    /// (`POLLERR`), which is taken and returned, as `recvmmsg` would return it. A receive that
    /// may not wait asks for that error at most every [`RING_ERROR_CHECK`], so that a
    /// busy-polling loop makes no system call while nothing comes.
    ///
    /// `poll` reports frames while the slot the kernel filled last is not back in its hands,
    /// which is also the case while another batch holds it: after a wake-up that found
    /// nothing because a batch holds a slot in the way, it sleeps [`RING_ERROR_CHECK`] before
    /// it looks again, rather than spin.
    fn recv_ring(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let Some(ring) = self.ring.as_mut() else { return Ok(0) };
        // The last wake-up found the ring empty: `poll` may be reporting a slot another batch
        // holds, and would report it again at once.
        let mut woken_for_nothing = false;
        loop {
            let taken = ring.drain_into(batch);
            if !batch.is_empty() {
                return Ok(batch.len());
            }
            let wait = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    // Time is up: report the interface going down, else that nothing came.
                    _ => {
                        let now = Instant::now();
                        if self.ring_error_checked.is_some_and(|t| now.duration_since(t) < RING_ERROR_CHECK) {
                            return Ok(0);
                        }
                        self.ring_error_checked = Some(now);
                        return take_socket_error(self.fd.as_fd()).map(|()| 0);
                    }
                },
            };
            if woken_for_nothing && taken == 0 {
                woken_for_nothing = false;
                if ring.held_in_the_way() {
                    std::thread::sleep(wait.map_or(RING_ERROR_CHECK, |w| w.min(RING_ERROR_CHECK)));
                } else {
                    // The kernel marks a slot it filled out of order (two CPUs filling the
                    // next two) before the one the reader waits at: that one comes soon.
                    std::thread::yield_now();
                }
                continue;
            }
            match poll_one(self.fd.as_fd(), libc::POLLIN, wait)? {
                Some(revents) if revents & libc::POLLERR != 0 => {
                    take_socket_error(self.fd.as_fd())?;
                    // An error-queue entry, not an error: nothing to take here, and waiting
                    // again would wake at once.
                    if revents & libc::POLLIN == 0 {
                        return Ok(0);
                    }
                }
                Some(_) => {}
                None => return Ok(0),
            }
            woken_for_nothing = true;
        }
    }

    /// Receives with `poll`: tries first when frames are likely queued, else waits first.
    fn recv_polling(
        &mut self,
        batch: &mut FrameBatch,
        start: Instant,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let deadline = timeout.and_then(|t| start.checked_add(t));
        let mut waited = false;
        let mut try_now = !self.wait.poll_first;
        loop {
            if try_now {
                if let Some(n @ 1..) = self.recv_now(batch, libc::MSG_DONTWAIT)? {
                    self.wait.poll_first = waited && n == 1;
                    return Ok(n);
                }
            }
            try_now = true;
            let wait = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break,
                },
            };
            waited = true;
            if !wait_for(self.fd.as_fd(), libc::POLLIN, wait)? {
                break;
            }
        }
        self.wait.poll_first = true;
        Ok(0)
    }
}

impl Transport for AfPacket {
    /// Frames shorter than 14 bytes, and frames longer than the batch's `frame_capacity`, are
    /// skipped. A signal interrupting the wait makes it return `Ok(0)`, or is waited through.
    ///
    /// Without a receive ring, a wait of 20 ms or more (or `None`) asked for by two calls in a
    /// row becomes the socket's receive timeout, so that each later call with it is a single
    /// system call; the kernel counts that timeout in scheduler ticks, so it may run up to one
    /// tick (1 to 10 ms) long. Not while other handles ([`AfPacket::try_clone`]) share the
    /// socket. With a ring, frames waiting in it are taken without a system call.
    fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        if batch.capacity() == 0 {
            return Ok(0);
        }
        if self.ring.is_some() {
            return self.recv_ring(batch, timeout);
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(self.recv_now(batch, libc::MSG_DONTWAIT)?.unwrap_or(0));
        }
        let start = Instant::now();
        if self.may_block(timeout) {
            match self.recv_now(batch, libc::MSG_WAITFORONE)? {
                // Only frames it skipped: wait out the rest of the time below.
                Some(0) => {}
                Some(n) => return Ok(n),
                None => return Ok(0),
            }
        }
        self.recv_polling(batch, start, timeout)
    }

    /// Uses `sendmmsg`; when the socket's send queue is full it waits for room and retries,
    /// for up to a second without progress. A frame the device drops (`ENOBUFS`) counts as
    /// sent: it is lost as on the wire. Returns `Ok(n)` with `n < batch.len()` when it gave
    /// up or hit an error after sending `n` frames, and the error when it sent none.
    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize> {
        self.send_with_tails(batch, &[])
    }

    /// As [`send_batch`](Self::send_batch); each tail goes to the kernel as a second piece of
    /// its frame, read from where it lies (one copy, into the packet). A tail the kernel
    /// cannot read (a mapping whose file was truncated under it: `EFAULT`) loses that frame.
    fn send_with_tails(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        let total = batch.len();
        let msgs = self.tx.point_at(batch, tails);
        let mut sent = 0;
        let mut stalled: Option<Instant> = None;
        while sent < total {
            // SAFETY: entries `sent..total` of `msgs` point at live iovecs covering frames of
            // `batch` and the slices of `tails`, both borrowed for the whole call; the kernel
            // only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr().add(sent),
                    (total - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                stalled = None;
                continue;
            }
            let e = io::Error::last_os_error();
            let give_up = |e| if sent > 0 { Ok(sent) } else { Err(e) };
            let full_since = *stalled.get_or_insert_with(Instant::now);
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                // The device dropped the frame: its queue is full, or it cannot send at all
                // (a veth whose peer is down). Give a full queue a moment to drain; past
                // that the frame is lost as on the wire and the rest of the batch goes on,
                // without waiting again in this call.
                Some(libc::ENOBUFS) if full_since.elapsed() < DEVICE_DROP_PATIENCE => {
                    wait_for(self.fd.as_fd(), 0, Some(Duration::from_micros(100)))?;
                }
                Some(libc::ENOBUFS) => sent += 1,
                Some(libc::EFAULT) => sent += 1,
                Some(libc::EAGAIN) => {
                    let Some(left) = SEND_STALL_LIMIT.checked_sub(full_since.elapsed()) else {
                        return give_up(e);
                    };
                    wait_for(self.fd.as_fd(), libc::POLLOUT, Some(left))?;
                }
                _ => return give_up(e),
            }
        }
        Ok(sent)
    }

    fn mac(&self) -> MacAddr {
        self.info.mac
    }

    fn mtu(&self) -> usize {
        self.info.mtu
    }

    fn name(&self) -> &str {
        &self.info.name
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    /// [`AfPacket::sender`]: a send-only socket of its own.
    fn sender(&self) -> io::Result<Box<dyn Transport>> {
        Ok(Box::new(AfPacket::sender(self)?))
    }
}

impl AsFd for AfPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for AfPacket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Index, MAC, MTU and state of interface `ifname`. Needs no privilege.
pub fn interface_info(ifname: &str) -> Result<InterfaceInfo, OpenError> {
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(|error| OpenError::Io {
        op: "opening a socket to query the interface",
        ifname: ifname.to_owned(),
        error,
    })?;
    let fd = sock.as_fd();
    let index = ifreq_ioctl(fd, ifname, libc::SIOCGIFINDEX, "reading the interface index")?;
    let flags = ifreq_ioctl(fd, ifname, libc::SIOCGIFFLAGS, "reading the interface flags")?;
    let hw = ifreq_ioctl(fd, ifname, libc::SIOCGIFHWADDR, "reading the MAC address")?;
    let mtu = ifreq_ioctl(fd, ifname, libc::SIOCGIFMTU, "reading the MTU")?;
    // SAFETY: each ioctl above filled the union member that is read from its answer.
    let (index, flags, hw, mtu) = unsafe {
        (
            index.ifr_ifru.ifru_ifindex,
            flags.ifr_ifru.ifru_flags,
            hw.ifr_ifru.ifru_hwaddr,
            mtu.ifr_ifru.ifru_mtu,
        )
    };
    if !matches!(hw.sa_family, libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK) {
        return Err(OpenError::NotEthernet(ifname.to_owned()));
    }
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(hw.sa_data) {
        *m = b as u8;
    }
    Ok(InterfaceInfo {
        name: ifname.to_owned(),
        index: index as u32,
        mac: MacAddr(mac),
        mtu: mtu.max(0) as usize,
        up: flags & libc::IFF_UP as libc::c_short != 0,
    })
}

/// Runs a `SIOCGIF*` ioctl for `ifname` and returns the filled request.
fn ifreq_ioctl(
    fd: BorrowedFd<'_>,
    ifname: &str,
    request: libc::c_ulong,
    op: &'static str,
) -> Result<libc::ifreq, OpenError> {
    let no_such = || OpenError::NoSuchInterface(ifname.to_owned());
    // Names are at most IFNAMSIZ - 1 bytes plus the terminating NUL.
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(no_such());
    }
    // SAFETY: ifreq is a plain C struct (with a union) for which all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid, NUL-terminated ifreq that outlives the call; SIOCGIF* requests
    // write only within it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut req) };
    if r < 0 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => no_such(),
            _ => OpenError::Io { op, ifname: ifname.to_owned(), error },
        });
    }
    Ok(req)
}

fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly opened descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds packet socket `fd` to interface `index` and EtherType `ethertype` (0: none, so that
/// the socket only sends).
fn bind(fd: BorrowedFd<'_>, index: u32, ethertype: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is a plain C struct for which all zeros is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = index as libc::c_int;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            ptr::addr_of!(addr).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// Sets socket option `name` at `level` to `value`, a plain C value of the type the option
/// takes (an int, a timeval, a tpacket_req).
pub(crate) fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is live for the call and the length passed is its size; the kernel only
    // reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(value).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the socket's receive timeout (`SO_RCVTIMEO`): how long a blocking receive waits;
/// `None` waits forever, and so does a wait shorter than a microsecond (callers pass none).
fn set_receive_timeout(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<()> {
    // The kernel reads a zero timeval as no limit.
    let t = timeout.unwrap_or(Duration::ZERO);
    let tv = libc::timeval {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// Sets a socket buffer size, past the sysctl cap when privileged (`force`), else within it.
fn set_buffer(fd: BorrowedFd<'_>, force: libc::c_int, normal: libc::c_int, bytes: usize) -> io::Result<()> {
    // The kernel doubles the value it is given (for bookkeeping), so ask for half.
    let value = (bytes / 2).min(libc::c_int::MAX as usize) as libc::c_int;
    setsockopt_int(fd, libc::SOL_SOCKET, force, value)
        .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, normal, value))
}

/// Waits until `fd` is ready for `events` or `timeout` passes (`None`: no limit). Returns
/// false on timeout or when a signal interrupted the wait.
fn wait_for(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Option<Duration>) -> io::Result<bool> {
    Ok(poll_one(fd, events, timeout)?.is_some())
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up) or `timeout` passes
/// (`None`: no limit). Returns the events seen, `None` on timeout or when a signal
/// interrupted the wait.
fn poll_one(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout: Option<Duration>,
) -> io::Result<Option<libc::c_short>> {
    let ms = timeout.map_or(-1, poll_millis);
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    // SAFETY: one live pollfd, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
    }
    Ok((r > 0).then_some(pfd.revents))
}

/// `timeout` as `poll` takes it: milliseconds, rounded up, or a wait of less than a
/// millisecond would spin.
fn poll_millis(timeout: Duration) -> libc::c_int {
    timeout.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int
}

/// Takes the error pending on socket `fd` (`SO_ERROR`, which reading clears) and returns it;
/// Ok when there is none.
fn take_socket_error(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut error: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the value and length pointers point at live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            ptr::addr_of_mut!(error).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    match error {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Most descriptors [`wait_readable`] waits on at once.
pub const MAX_WAIT_FDS: usize = 16;

/// Waits until one of `fds` is readable (or reports an error, such as its interface going
/// down) or `timeout` passes, and marks each readable one in `ready` (as many flags as
/// descriptors). Returns how many are ready: 0 on timeout or on an interrupting signal. At
/// most [`MAX_WAIT_FDS`] descriptors are watched; the rest are reported ready, so that a caller
/// polls them rather than misses them.
pub fn wait_readable<'a>(
    fds: impl IntoIterator<Item = BorrowedFd<'a>>,
    ready: &mut [bool],
    timeout: Duration,
) -> io::Result<usize> {
    let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX_WAIT_FDS];
    let mut watched = 0;
    for (p, fd) in pfds.iter_mut().zip(fds) {
        *p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        watched += 1;
    }
    let ms = poll_millis(timeout);
    // SAFETY: `pfds[..watched]` are live pollfd structs; `watched` ≤ the array's length.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), watched as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
    }
    let mut count = 0;
    for (i, flag) in ready.iter_mut().enumerate() {
        *flag = pfds.get(i).filter(|_| i < watched).is_none_or(|p| p.revents != 0);
        count += usize::from(*flag);
    }
    Ok(count)
}

/// `recvmmsg` headers and iovecs pointing at the slots of one receive batch, after a scratch
/// buffer for the `virtio_net_hdr` of a socket that has them.
///
/// They are set up once per batch (slot address and sizes) rather than on every call: the
/// kernel writes only `msg_len` and `msg_flags`, which are read back for the frames it
/// received and never otherwise, so nothing needs resetting between calls.
struct RxVectors {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 2]>,
    /// Where the kernel puts each frame's virtio_net_hdr, which is not read: an allocation
    /// of VNET_HEADER_LEN bytes owned here (a raw pointer, so that moving `RxVectors` keeps
    /// the iovecs' copies of it valid) and freed on drop; `None` when the socket has none.
    scratch: Option<ptr::NonNull<[u8; VNET_HEADER_LEN]>>,
    /// Slot memory the vectors point at: address, slot count, bytes per slot.
    points_at: (usize, usize, usize),
}

impl RxVectors {
    fn new(vnet: bool) -> Self {
        RxVectors {
            msgs: Vec::new(),
            iovs: Vec::new(),
            scratch: vnet.then(|| ptr::NonNull::from(Box::leak(Box::new([0; VNET_HEADER_LEN])))),
            points_at: (0, 0, 0),
        }
    }

    /// Bytes each received message has before its frame.
    fn prefix(&self) -> usize {
        if self.scratch.is_some() {
            VNET_HEADER_LEN
        } else {
            0
        }
    }

    /// The headers, one per slot of `batch`, pointed at its slots.
    fn point_at(&mut self, batch: &mut FrameBatch) -> &mut [libc::mmsghdr] {
        let (slots, size) = (batch.capacity(), batch.frame_capacity());
        let (base, stride) = batch.slots_mut_ptr();
        if self.points_at != (base as usize, slots, size) {
            // SAFETY: mmsghdr and iovec are plain C structs (integers and raw pointers) for
            // which all zeros is a valid value.
            let (msg, iov) = unsafe { (mem::zeroed(), mem::zeroed()) };
            self.msgs.clear();
            self.iovs.clear();
            self.msgs.resize(slots, msg);
            self.iovs.resize(slots, [iov, iov]);
            let scratch = self.scratch.map(|s| s.as_ptr().cast::<u8>());
            for (i, (m, iov)) in self.msgs.iter_mut().zip(self.iovs.iter_mut()).enumerate() {
                // Slot `i` (`size` bytes from `base + i * stride`) lies within the batch's buffer.
                let slot = libc::iovec { iov_base: base.wrapping_add(i * stride).cast(), iov_len: size };
                m.msg_hdr.msg_iov = iov.as_mut_ptr();
                m.msg_hdr.msg_iovlen = match scratch {
                    Some(s) => {
                        *iov = [libc::iovec { iov_base: s.cast(), iov_len: VNET_HEADER_LEN }, slot];
                        2
                    }
                    None => {
                        iov[0] = slot;
                        1
                    }
                };
            }
            self.points_at = (base as usize, slots, size);
        }
        &mut self.msgs
    }
}

impl Drop for RxVectors {
    fn drop(&mut self) {
        if let Some(scratch) = self.scratch.take() {
            // SAFETY: the pointer came from `Box::leak` in `new` and is freed once, here.
            drop(unsafe { Box::from_raw(scratch.as_ptr()) });
        }
    }
}

/// `sendmmsg` headers, each with up to three iovecs (the virtio_net_hdr when the socket has
/// them, the frame, then its tail if it has one), grown to the largest batch sent.
struct TxVectors {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 3]>,
    /// One virtio_net_hdr per frame.
    heads: Vec<[u8; VNET_HEADER_LEN]>,
    /// Whether the socket sends a virtio_net_hdr before each frame.
    vnet: bool,
}

impl TxVectors {
    fn new(vnet: bool) -> Self {
        TxVectors { msgs: Vec::new(), iovs: Vec::new(), heads: Vec::new(), vnet }
    }

    /// The headers for the frames of `batch` and their `tails`, pointed at them.
    fn point_at(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> &mut [libc::mmsghdr] {
        let n = batch.len();
        if self.msgs.len() < n {
            // SAFETY: as in `RxVectors::point_at`.
            let (msg, iov) = unsafe { (mem::zeroed(), mem::zeroed()) };
            // Growing moves the iovecs: point every header again.
            self.msgs.resize(n, msg);
            self.iovs.resize(n, [iov; 3]);
            self.heads.resize(n, [0; VNET_HEADER_LEN]);
            for (m, iov) in self.msgs.iter_mut().zip(self.iovs.iter_mut()) {
                m.msg_hdr.msg_iov = iov.as_mut_ptr();
            }
        }
        let vnet = usize::from(self.vnet);
        let vectors = self.msgs.iter_mut().zip(self.iovs.iter_mut().zip(self.heads.iter_mut()));
        for (i, ((m, (iov, head)), frame)) in vectors.zip(batch.iter()).enumerate() {
            let tail = tails.get(i).copied().unwrap_or_default();
            if self.vnet {
                let whole = frame.len() + tail.len();
                *head = vnet_header(whole.min(ATA_DATA_OFFSET));
                iov[0] = libc::iovec { iov_base: head.as_mut_ptr().cast(), iov_len: VNET_HEADER_LEN };
            }
            // The kernel only reads from a send buffer, whatever the pointer's type says.
            iov[vnet] = libc::iovec { iov_base: frame.as_ptr().cast_mut().cast(), iov_len: frame.len() };
            m.msg_hdr.msg_iovlen = vnet + 1;
            if !tail.is_empty() {
                iov[vnet + 1] =
                    libc::iovec { iov_base: tail.as_ptr().cast_mut().cast(), iov_len: tail.len() };
                m.msg_hdr.msg_iovlen = vnet + 2;
            }
        }
        &mut self.msgs[..n]
    }
}

/// A `virtio_net_hdr` (no offloads, no segmentation) asking for the frame's first `linear`
/// bytes in the packet's own buffer. A packet socket reads its fields in the machine's byte
/// order (legacy virtio).
fn vnet_header(linear: usize) -> [u8; VNET_HEADER_LEN] {
    let mut h = [0; VNET_HEADER_LEN];
    h[2..4].copy_from_slice(&u16::try_from(linear).unwrap_or(u16::MAX).to_ne_bytes());
    h
}

// SAFETY: the raw pointers inside point at our own iovecs and at the slots of a batch; they
// are dereferenced (by the kernel) only within a call that holds `&mut AfPacket` and borrows
// that batch, after checking they still match it.
unsafe impl Send for RxVectors {}
// SAFETY: as for `RxVectors`; each send points the iovecs at the batch it sends.
unsafe impl Send for TxVectors {}

impl core::fmt::Debug for RxVectors {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RxVectors").field("slots", &self.msgs.len()).finish()
    }
}

impl core::fmt::Debug for TxVectors {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TxVectors").field("slots", &self.msgs.len()).finish()
    }
}
