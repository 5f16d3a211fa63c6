//! Sending Ethernet frames through an AF_XDP socket: [`XdpSender`], a send-only transport.
//!
//! An AF_XDP socket (XSK) sends frames from a region of its own memory, the UMEM, that it
//! registers with the kernel: each frame is copied into a free 4 KiB chunk of it, the chunk's
//! address and length go into a TX ring shared with the kernel, and one `sendto` has the
//! kernel send what the ring holds. Once a frame has left, the kernel hands its chunk back in
//! a completion ring. In copy mode (the only mode used here, which every driver has) the
//! kernel copies each frame into a packet of its own and gives it straight to the device's
//! queue, past the traffic-control layer; that costs less per frame than `sendmmsg` on a raw
//! socket. On a veth pair on a busy two-core machine it sent 1.4 to 2.4 times the frames per
//! second of `sendmmsg`, for a third to two thirds of the CPU per frame, whether 1514-byte
//! frames from the batch or 36-byte heads with 1 KiB tails from a mapped file (tails are
//! copied with `process_vm_readv`, which reports a file truncated under its mapping where a
//! plain copy would raise `SIGBUS`; consecutive tails are read in one piece). The ignored
//! `throughput` test of `tests/afxdp_veth.rs` measures it.
//!
//! The socket only sends: receiving through an XSK would need an XDP program to steer frames
//! into it, and none is loaded. A target keeps receiving on an [`AfPacket`](crate::afpacket)
//! socket and answers through an [`XdpSender`].
//!
//! Limits, each reported by [`XdpSender::open`]:
//!
//! - a frame must fit one chunk: interfaces whose MTU is above [`MAX_MTU`] are refused (send
//!   through AF_PACKET there);
//! - one XSK per queue of an interface: a second sender on the same queue is refused
//!   ([`XdpOpenError::QueueBusy`]), whatever process holds the first;
//! - it needs `CAP_NET_RAW`, and the UMEM is locked memory (`RLIMIT_MEMLOCK` unless the
//!   process has `CAP_IPC_LOCK`).
//!
//! ```no_run
//! use aoe_transport::afxdp::{XdpOptions, XdpSender};
//! use aoe_transport::{FrameBatch, Transport};
//!
//! let mut tx = XdpSender::open("eth0", XdpOptions::default())?;
//! let mut batch = FrameBatch::new(64, 14 + tx.mtu());
//! batch.push(&[0xff; 60]);
//! assert_eq!(tx.send_batch(&batch)?, 1);
//! println!("{:?}", tx.stats());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Copies into memory shared with the kernel and calls process_vm_readv; every block says why
// it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use aoe_proto::ethernet::{MacAddr, HEADER_LEN};

use crate::afpacket::{interface_info, InterfaceInfo, OpenError};
use crate::{FrameBatch, Transport};
use ring::{CompletionRing, Mapping, TxRing};

mod ring;
mod sys;

// The AF_PACKET TX ring copies tails the same way.
use crate::tail_copy::{self, TailCopies, MAX_IOVECS};

/// Bytes in each chunk of the UMEM: the longest frame an [`XdpSender`] sends.
pub const CHUNK_SIZE: usize = 4096;
/// The largest MTU [`XdpSender::open`] accepts: a frame of `14 + MAX_MTU` bytes fits a chunk.
pub const MAX_MTU: usize = 4000;

/// Entries of the fill ring. The kernel will not bind a socket without one, but a socket
/// that only sends never uses it.
const FILL_RING_SIZE: u32 = 64;
/// How long a send keeps trying while the kernel takes nothing and gives no chunk back.
const SEND_STALL_LIMIT: Duration = Duration::from_secs(1);
/// How long [`XdpSender::open`] waits for a queue whose socket was just closed to be free.
const QUEUE_RELEASE_WAIT: Duration = Duration::from_millis(500);
/// How long one wait for room lasts before the next look.
const ROOM_WAIT: Duration = Duration::from_micros(50);

/// Settings for [`XdpSender::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpOptions {
    /// Chunks of [`CHUNK_SIZE`] bytes in the UMEM, each holding one frame from the moment it
    /// is queued until the kernel has sent it: a power of two from 64 to 65536. The UMEM is
    /// `chunks * 4096` bytes of locked memory. Default 4096 (16 MiB).
    pub chunks: u32,
    /// Entries of the TX ring: a power of two from 64 to `chunks`. Default 2048.
    pub tx_ring: u32,
    /// The interface queue to send on. Default 0.
    pub queue: u32,
    /// Requested send buffer in bytes (`SO_SNDBUFFORCE`, else `SO_SNDBUF`), which bounds the
    /// packets the kernel has made from chunks and not yet freed. Default 4 MiB.
    pub send_buffer: usize,
    /// How many frames one `sendto` may have the kernel send (`XDP_MAX_TX_SKB_BUDGET`, Linux
    /// 6.17; the kernel's own is 32, kept when it refuses), from 32 to `tx_ring`. Default 32.
    pub tx_budget: u32,
}

impl Default for XdpOptions {
    fn default() -> Self {
        XdpOptions { chunks: 4096, tx_ring: 2048, queue: 0, send_buffer: 4 << 20, tx_budget: 32 }
    }
}

/// Why [`XdpSender::open`] failed. Each message is one line that names the interface.
#[derive(Debug, thiserror::Error)]
pub enum XdpOpenError {
    /// Looking the interface up failed, or it is down or not Ethernet, or the process may not
    /// open the socket.
    #[error(transparent)]
    Interface(#[from] OpenError),
    /// The interface's MTU is above [`MAX_MTU`]: its frames do not fit a chunk.
    #[error(
        "interface {ifname} has MTU {mtu}: an AF_XDP sender takes MTUs up to {MAX_MTU} \
         (frames must fit a {CHUNK_SIZE}-byte chunk); send through AF_PACKET"
    )]
    MtuTooLarge {
        /// The interface.
        ifname: String,
        /// Its MTU.
        mtu: usize,
    },
    /// Another AF_XDP socket, in this process or another, is bound to the queue (`EBUSY`).
    #[error("queue {queue} of interface {ifname} already has an AF_XDP socket bound (one per queue)")]
    QueueBusy {
        /// The interface.
        ifname: String,
        /// The queue ([`XdpOptions::queue`]).
        queue: u32,
    },
    /// The kernel has no AF_XDP sockets (`CONFIG_XDP_SOCKETS` off) or lacks what this needs.
    #[error("AF_XDP sockets are not available for {ifname}: {error}")]
    Unsupported {
        /// The interface.
        ifname: String,
        /// The system's error.
        error: io::Error,
    },
    /// An option is out of range; `field` names it.
    #[error("XdpOptions::{field} = {value}: {expected}")]
    InvalidOption {
        /// The field of [`XdpOptions`].
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it must be.
        expected: &'static str,
    },
    /// Any other system call failure; `op` says what was being done.
    #[error("{op} on {ifname}: {error}")]
    Io {
        /// What was being done, e.g. "registering the UMEM".
        op: &'static str,
        /// The interface.
        ifname: String,
        /// The system's error.
        error: io::Error,
    },
}

/// What an [`XdpSender`] has done since it was opened, in frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames handed to the kernel in the TX ring.
    pub queued: u64,
    /// Frames the kernel has finished with (sent or dropped by the device): chunks returned.
    pub completed: u64,
    /// Frames dropped before the ring because they were shorter than an Ethernet header or
    /// longer than a chunk (after an MTU change, say).
    pub bad_length: u64,
    /// Frames dropped before the ring because their tail could not be read (a mapping whose
    /// file was truncated under it).
    pub unreadable_tail: u64,
    /// Frames the device dropped (the kernel answered `EBUSY`).
    pub device_dropped: u64,
}

/// A send-only AoE transport: an AF_XDP socket in copy mode on one queue of a Linux interface,
/// for MTUs up to [`MAX_MTU`] (see [the module](self)).
///
/// It receives nothing: [`recv_batch`](Transport::recv_batch) only waits out its timeout.
/// Opening needs `CAP_NET_RAW`; the MAC and MTU are read at open.
pub struct XdpSender {
    // Dropped first, so that the kernel lets go of the rings and the UMEM before they are
    // unmapped.
    fd: OwnedFd,
    tx: TxRing,
    completions: CompletionRing,
    umem: Mapping,
    /// UMEM addresses of the chunks that hold no queued frame.
    free: Vec<u64>,
    info: InterfaceInfo,
    stats: XdpStats,
    /// Scratch for one round of a send, kept to avoid allocating per call: the frames staged,
    /// where each tail goes and comes from, and the sources of one copy, merged where tails
    /// follow each other in memory.
    staged: Vec<Staged>,
    tails: TailCopies,
}

/// A frame of a send round: its chunk (`None`: dropped) and its length.
#[derive(Debug, Clone, Copy)]
struct Staged {
    chunk: Option<u64>,
    len: u32,
}

impl XdpSender {
    /// Opens an AF_XDP socket on queue [`XdpOptions::queue`] of interface `ifname`, which must
    /// exist, be up, and have an MTU of at most [`MAX_MTU`].
    pub fn open(ifname: &str, opts: XdpOptions) -> Result<XdpSender, XdpOpenError> {
        check_options(&opts)?;
        let info = interface_info(ifname)?;
        if !info.up {
            return Err(OpenError::InterfaceDown(info.name).into());
        }
        if info.mtu > MAX_MTU {
            return Err(XdpOpenError::MtuTooLarge { ifname: info.name, mtu: info.mtu });
        }
        let io_err = |op, error| XdpOpenError::Io { op, ifname: ifname.to_owned(), error };
        let unsupported = |error| XdpOpenError::Unsupported { ifname: ifname.to_owned(), error };
        tail_copy::probe().map_err(|e| io_err("copying with process_vm_readv (seccomp?)", e))?;

        let fd = sys::xdp_socket().map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => OpenError::PermissionDenied(ifname.to_owned()).into(),
            Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT) => unsupported(e),
            _ => io_err("opening an AF_XDP socket", e),
        })?;
        let umem = Mapping::anonymous(opts.chunks as usize * CHUNK_SIZE)
            .map_err(|e| io_err("mapping memory for the UMEM", e))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.as_ptr() as u64,
            len: umem.len() as u64,
            chunk_size: CHUNK_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::setsockopt(fd.as_fd(), libc::SOL_XDP, libc::XDP_UMEM_REG, &reg).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOMEM | libc::ENOBUFS | libc::EPERM) => io_err(
                    "registering the UMEM (locked memory: raise RLIMIT_MEMLOCK or use fewer chunks)",
                    e,
                ),
                _ => io_err("registering the UMEM", e),
            }
        })?;
        let ring_size = |name, entries: u32| {
            sys::setsockopt(fd.as_fd(), libc::SOL_XDP, name, &(entries as libc::c_int))
                .map_err(|e| io_err("sizing the AF_XDP rings", e))
        };
        ring_size(libc::XDP_UMEM_FILL_RING, FILL_RING_SIZE)?;
        ring_size(libc::XDP_UMEM_COMPLETION_RING, opts.chunks)?;
        ring_size(libc::XDP_TX_RING, opts.tx_ring)?;
        let off = sys::mmap_offsets(fd.as_fd()).map_err(|e| match e.kind() {
            io::ErrorKind::Unsupported => unsupported(e),
            _ => io_err("reading the ring offsets", e),
        })?;
        let tx =
            TxRing::map(fd.as_fd(), &off.tx, opts.tx_ring).map_err(|e| io_err("mapping the TX ring", e))?;
        let completions = CompletionRing::map(fd.as_fd(), &off.cr, opts.chunks)
            .map_err(|e| io_err("mapping the completion ring", e))?;
        // Needs root: without it the kernel's limit on the socket stays.
        let half = (opts.send_buffer / 2).min(libc::c_int::MAX as usize) as libc::c_int;
        sys::setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &half)
            .or_else(|_| sys::setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, &half))
            .map_err(|e| io_err("setting the send buffer", e))?;

        if let Err(e) = bind_waiting_for_release(fd.as_fd(), info.index, opts.queue) {
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => XdpOpenError::QueueBusy { ifname: ifname.to_owned(), queue: opts.queue },
                Some(libc::ENODEV) => OpenError::NoSuchInterface(ifname.to_owned()).into(),
                Some(libc::ENETDOWN) => OpenError::InterfaceDown(ifname.to_owned()).into(),
                Some(libc::EINVAL) => io_err("binding the AF_XDP socket (no such queue?)", e),
                _ => io_err("binding the AF_XDP socket", e),
            });
        }
        // After bind: the kernel checks the budget against the TX ring then in place. Kernels
        // before 6.17 lack the option and send 32 per call.
        if opts.tx_budget != 32 {
            let _ = sys::setsockopt(fd.as_fd(), libc::SOL_XDP, sys::XDP_MAX_TX_SKB_BUDGET, &opts.tx_budget);
        }
        let free = (0..u64::from(opts.chunks)).rev().map(|i| i * CHUNK_SIZE as u64).collect();
        Ok(XdpSender {
            fd,
            tx,
            completions,
            umem,
            free,
            info,
            stats: XdpStats::default(),
            staged: Vec::with_capacity(MAX_IOVECS),
            tails: TailCopies::new(),
        })
    }

    /// What the sender has done since it was opened.
    pub fn stats(&self) -> XdpStats {
        self.stats
    }

    /// The interface as it was when the socket was opened (its MTU as last refreshed).
    pub fn info(&self) -> &InterfaceInfo {
        &self.info
    }

    /// Takes back the chunks of frames the kernel has finished with.
    fn reap(&mut self) -> usize {
        let n = self.completions.take(&mut self.free);
        self.stats.completed += n as u64;
        n
    }

    /// Copies frames `from..` of `batch` (with their tails) into free chunks and queues them,
    /// as many as there are chunks and ring entries for; returns how many frames it dealt
    /// with (queued or dropped).
    fn queue_frames(&mut self, batch: &FrameBatch, tails: &[&[u8]], from: usize) -> usize {
        let room = (batch.len() - from).min(self.free.len()).min(self.tx.room() as usize).min(MAX_IOVECS);
        self.staged.clear();
        for i in from..from + room {
            let head = batch.get(i).unwrap_or_default();
            let tail = tails.get(i).copied().unwrap_or_default();
            let len = head.len() + tail.len();
            if !(HEADER_LEN..=CHUNK_SIZE).contains(&len) {
                self.stats.bad_length += 1;
                self.staged.push(Staged { chunk: None, len: 0 });
                continue;
            }
            let chunk = self.free.pop().expect("room counted the free chunks");
            let at = self.umem.as_ptr().wrapping_add(chunk as usize);
            // SAFETY: the chunk is free, so the kernel does not read it, and it lies in the
            // UMEM (`CHUNK_SIZE` bytes at a multiple of `CHUNK_SIZE` below its length); the
            // head fits it (`len` was checked) and is memory of the batch, distinct from it.
            unsafe { std::ptr::copy_nonoverlapping(head.as_ptr(), at, head.len()) };
            if !tail.is_empty() {
                self.tails.push(at.wrapping_add(head.len()), tail, self.staged.len());
            }
            self.staged.push(Staged { chunk: Some(chunk), len: len as u32 });
        }
        let (staged, free, stats) = (&mut self.staged, &mut self.free, &mut self.stats);
        // SAFETY: each destination lies within a free chunk (above) that only this call
        // writes, after the head.
        unsafe {
            self.tails.copy_all(|owner| {
                free.extend(staged[owner].chunk.take());
                stats.unreadable_tail += 1;
            })
        };
        for s in &self.staged {
            if let Some(chunk) = s.chunk {
                self.tx.push(chunk, s.len);
                self.stats.queued += 1;
            }
        }
        self.tx.publish();
        room
    }

    /// Sends `batch` as [`Transport::send_with_tails`] on [`XdpSender`] says.
    fn send_frames(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        let total = batch.len();
        let mut done = 0;
        let mut last_progress = Instant::now();
        loop {
            let mut progress = self.reap() > 0;
            if done < total {
                let n = self.queue_frames(batch, tails, done);
                done += n;
                progress |= n > 0;
            }
            let pending = self.tx.pending();
            if pending == 0 && done == total {
                return Ok(done);
            }
            if pending > 0 && self.tx.needs_wakeup() {
                if let Err(e) = sys::kick(self.fd.as_fd()) {
                    match e.raw_os_error() {
                        // More to send (the kernel's budget per call), or no room for it yet.
                        Some(libc::EAGAIN | libc::EINTR | libc::ENOBUFS) => {}
                        // The device dropped a frame; its descriptor was taken.
                        Some(libc::EBUSY) => self.stats.device_dropped += 1,
                        _ => return if done > 0 { Ok(done) } else { Err(e) },
                    }
                }
                progress |= self.tx.pending() < pending;
            }
            if progress {
                last_progress = Instant::now();
                continue;
            }
            if last_progress.elapsed() >= SEND_STALL_LIMIT {
                return if done > 0 {
                    Ok(done)
                } else {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "AF_XDP send made no progress for a second"))
                };
            }
            // The ring is full or every chunk is in flight: the kernel frees chunks as the
            // device sends, which poll cannot wait for; look again shortly. (poll on the socket
            // also has the kernel send from the ring.)
            crate::afpacket::wait::wait_for(self.fd.as_fd(), libc::POLLOUT, Some(Duration::ZERO))?;
            std::thread::sleep(ROOM_WAIT);
        }
    }
}

/// Binds `fd` to queue `queue` of interface `index`. A queue whose socket was just closed
/// stays bound for a moment (the kernel lets go of it from a work queue, tens of milliseconds
/// later): `EBUSY` is retried for up to [`QUEUE_RELEASE_WAIT`].
fn bind_waiting_for_release(fd: BorrowedFd<'_>, index: u32, queue: u32) -> io::Result<()> {
    let start = Instant::now();
    loop {
        match sys::bind(fd, index, queue) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < QUEUE_RELEASE_WAIT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

/// Checks `opts` before anything is made from them.
fn check_options(opts: &XdpOptions) -> Result<(), XdpOpenError> {
    let bad = |field, value: u32, expected| {
        Err(XdpOpenError::InvalidOption { field, value: value.into(), expected })
    };
    if !opts.chunks.is_power_of_two() || !(64..=65536).contains(&opts.chunks) {
        return bad("chunks", opts.chunks, "a power of two from 64 to 65536");
    }
    if !opts.tx_ring.is_power_of_two() || !(64..=opts.chunks).contains(&opts.tx_ring) {
        return bad("tx_ring", opts.tx_ring, "a power of two from 64 to `chunks`");
    }
    if !(32..=opts.tx_ring).contains(&opts.tx_budget) {
        return bad("tx_budget", opts.tx_budget, "from 32 to `tx_ring`");
    }
    Ok(())
}

impl Transport for XdpSender {
    /// Receives nothing: waits out `timeout` (`None`: forever) and returns 0. The socket only
    /// sends; receive on an [`AfPacket`](crate::afpacket::AfPacket).
    fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        std::thread::sleep(timeout.unwrap_or(Duration::MAX));
        Ok(0)
    }

    /// As [`send_with_tails`](Self::send_with_tails) without tails.
    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize> {
        self.send_frames(batch, &[])
    }

    /// Copies each frame and its tail into a chunk of the UMEM, queues it, and has the kernel
    /// send until the TX ring is empty. When the ring is full or every chunk is in flight it
    /// waits, for up to a second without progress. Returns `Ok(n)` with `n < batch.len()` when
    /// it gave up or hit an error after queueing `n` frames (frames still in the ring then
    /// leave with a later send), and the error when it queued none: `ENETDOWN` when the
    /// interface is down, `ENXIO` when it is gone.
    ///
    /// Frames the device drops count as sent, lost as on the wire, and so do frames dropped
    /// before the ring ([`XdpStats`] counts each kind): frames shorter than 14 bytes or longer
    /// than a chunk (an MTU raised past [`MAX_MTU`] after open), and frames whose tail cannot
    /// be read (a mapping whose file was truncated under it). Tails are copied with
    /// `process_vm_readv`, which reports such memory where a plain copy would raise `SIGBUS`.
    fn send_with_tails(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        self.send_frames(batch, tails)
    }

    fn mac(&self) -> MacAddr {
        self.info.mac
    }

    fn mtu(&self) -> usize {
        self.info.mtu
    }

    /// Reads the MTU again. Past [`MAX_MTU`] frames longer than a chunk are dropped
    /// ([`XdpStats::bad_length`]): reopen the link over AF_PACKET then.
    fn refresh_mtu(&mut self) -> io::Result<usize> {
        let info = interface_info(&self.info.name).map_err(io::Error::other)?;
        self.info.mtu = info.mtu;
        Ok(info.mtu)
    }

    fn name(&self) -> &str {
        &self.info.name
    }
}

impl std::fmt::Debug for XdpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpSender")
            .field("interface", &self.info.name)
            .field("free_chunks", &self.free.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

// SAFETY: the iovecs' pointers are scratch, meaningful only within one call that holds
// `&mut self`; everything else the raw pointers reach is owned by this value.
unsafe impl Send for XdpSender {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_are_named() {
        let err = |opts| check_options(&opts).unwrap_err().to_string();
        let base = XdpOptions::default();
        assert_eq!(
            err(XdpOptions { chunks: 1000, ..base.clone() }),
            "XdpOptions::chunks = 1000: a power of two from 64 to 65536"
        );
        assert!(err(XdpOptions { tx_ring: 8192, ..base.clone() }).starts_with("XdpOptions::tx_ring = 8192"));
        assert!(err(XdpOptions { tx_budget: 16, ..base.clone() }).starts_with("XdpOptions::tx_budget = 16"));
        assert!(check_options(&base).is_ok());
    }

    #[test]
    fn a_missing_interface_is_named() {
        let err = XdpSender::open("aoexdp-nope0", XdpOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "no such interface: aoexdp-nope0");
    }
}
