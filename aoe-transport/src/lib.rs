//! Batch-oriented Ethernet frame transports for ATA over Ethernet.
//!
//! A [`Transport`] receives a batch of AoE frames (EtherType 0x88A2) and sends a batch of
//! frames, each batch a [`FrameBatch`]: a fixed set of buffers allocated once and reused, so the
//! fast path never allocates per frame. Two transports exist:
//!
//! - [`afpacket::AfPacket`]: raw Ethernet on a Linux interface (needs root or `CAP_NET_RAW`);
//! - [`memory::MemoryPort`]: a port on an in-process [`memory::MemoryHub`], for tests and
//!   benchmarks, optionally lossy.
//!
//! [`fault::FaultInjector`] wraps either (or any transport) to lose, duplicate, reorder, delay
//! and corrupt frames, and to cut the link for a while, with a seed; [`rng::SplitMix64`] is the
//! generator behind it, shared by the workspace's tests and benchmarks.
//!
//! ```
//! use std::time::Duration;
//! use aoe_transport::{memory, FrameBatch, MacAddr, Transport};
//!
//! let a_mac = MacAddr([2, 0, 0, 0, 0, 0xa]);
//! let b_mac = MacAddr([2, 0, 0, 0, 0, 0xb]);
//! let (mut a, mut b) = memory::pair(1500, a_mac, b_mac);
//!
//! // One frame from a to b: destination, source, EtherType 0x88A2, payload.
//! let mut out = FrameBatch::new(8, 14 + a.mtu());
//! out.push_with(|slot| {
//!     slot[..6].copy_from_slice(&b_mac.0);
//!     slot[6..12].copy_from_slice(&a_mac.0);
//!     slot[12..14].copy_from_slice(&0x88A2u16.to_be_bytes());
//!     slot[14..60].fill(0);
//!     60
//! });
//! assert_eq!(a.send_batch(&out)?, 1);
//!
//! let mut inbox = FrameBatch::new(8, 14 + b.mtu());
//! assert_eq!(b.recv_batch(&mut inbox, Some(Duration::from_secs(1)))?, 1);
//! assert_eq!(&inbox.get(0).unwrap()[6..12], &a_mac.0);
//!
//! // Nothing else is coming: a zero timeout just polls.
//! assert_eq!(b.recv_batch(&mut inbox, Some(Duration::ZERO))?, 0);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

pub use aoe_proto::ethernet::MacAddr;

mod batch;
pub mod fault;
pub mod filter;
pub mod memory;
pub mod rng;
pub mod split;
#[cfg(target_os = "linux")]
mod tail_copy;

#[cfg(target_os = "linux")]
pub mod afpacket;
#[cfg(target_os = "linux")]
pub mod afxdp;

#[cfg(target_os = "linux")]
pub use afpacket::{wait_readable, MAX_WAIT_FDS};
pub use batch::FrameBatch;
pub use filter::AnswerFilter;
pub use split::Split;

/// A link that carries AoE frames in batches.
///
/// Frames are whole Ethernet frames without the frame check sequence. Implementations deliver
/// only frames with EtherType 0x88A2 and never the frames they sent themselves.
pub trait Transport: Send {
    /// Clears `batch`, then receives up to `batch.capacity()` AoE frames.
    ///
    /// Blocks until at least one frame arrives or `timeout` passes (`None` waits forever,
    /// `Some(Duration::ZERO)` only polls). Returns the number of frames received, 0 on timeout.
    /// An interrupted system call (`EINTR`) is retried or returns 0, never an error.
    ///
    /// The frames may stay where the transport received them (a receive ring) until the batch
    /// is cleared or dropped: clear it once they are read (see [`FrameBatch`]).
    fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize>;

    /// Sends every frame in `batch`, in order; returns how many were sent.
    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize>;

    /// Sends every frame in `batch`, in order, frame `i` followed on the wire by `tails[i]`
    /// (`tails` may be shorter than the batch, and an empty tail adds nothing); returns how
    /// many were sent.
    ///
    /// Transports that hand frames to the kernel send a tail from where it lies, without
    /// copying it: a target answers reads with its headers in the batch and its sectors in a
    /// mapping of the disk image, which the kernel copies once, into the packet. A tail the
    /// kernel cannot read (a mapping whose file was truncated under it) loses that frame.
    /// This default copies each frame and its tail into a new batch and sends that.
    fn send_with_tails(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        if tails.iter().all(|t| t.is_empty()) {
            return self.send_batch(batch);
        }
        let tail = |i: usize| tails.get(i).copied().unwrap_or_default();
        let longest =
            batch.iter().enumerate().map(|(i, frame)| frame.len() + tail(i).len()).max().unwrap_or(0);
        let mut joined = FrameBatch::new(batch.len(), longest);
        for (i, frame) in batch.iter().enumerate() {
            joined.push_with(|slot| {
                let tail = tail(i);
                slot[..frame.len()].copy_from_slice(frame);
                slot[frame.len()..frame.len() + tail.len()].copy_from_slice(tail);
                frame.len() + tail.len()
            });
        }
        self.send_batch(&joined)
    }

    /// The local MAC address.
    fn mac(&self) -> MacAddr;

    /// The link MTU: payload bytes after the 14-byte Ethernet header, e.g. 1500 or 9000.
    fn mtu(&self) -> usize;

    /// A name for logs: the interface name, e.g. `eth0`.
    fn name(&self) -> &str;

    /// The MTU as it is now, looked up again where it can change under a running program
    /// (an interface reconfigured with `ip link set ... mtu`); [`mtu`](Self::mtu) then
    /// reports it too. The default returns [`mtu`](Self::mtu).
    fn refresh_mtu(&mut self) -> io::Result<usize> {
        Ok(self.mtu())
    }

    /// A descriptor that polls readable when frames may be waiting, so that a caller with
    /// several transports can wait on all of them at once ([`wait_readable`]). `None` for
    /// transports without one (the in-memory link).
    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Asks the transport to drop received frames that cannot be answers of the session
    /// `filter` describes, before they cost the program a copy and a wake-up (see
    /// [`filter`](mod@filter)); a later call replaces the filter. Returns `Ok(true)` when the
    /// filter is in place, `Ok(false)` when the transport cannot filter (the default) and
    /// delivers everything as before. Either way the caller checks every frame it receives in
    /// full: a filter only saves work. Call it on a handle used by one session only.
    fn filter_answers(&mut self, filter: &AnswerFilter) -> io::Result<bool> {
        let _ = filter;
        Ok(false)
    }

    /// Another handle that sends on the same link, from the same address, for a thread that
    /// sends while this handle receives. What it receives is unspecified: use it only to
    /// send. Fails with [`io::ErrorKind::Unsupported`] for transports that cannot make one
    /// (the default).
    fn sender(&self) -> io::Result<Box<dyn Transport>> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "this transport has no separate sender"))
    }
}

impl Transport for Box<dyn Transport> {
    fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        (**self).recv_batch(batch, timeout)
    }

    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize> {
        (**self).send_batch(batch)
    }

    fn send_with_tails(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        (**self).send_with_tails(batch, tails)
    }

    fn mac(&self) -> MacAddr {
        (**self).mac()
    }

    fn mtu(&self) -> usize {
        (**self).mtu()
    }

    fn refresh_mtu(&mut self) -> io::Result<usize> {
        (**self).refresh_mtu()
    }

    fn name(&self) -> &str {
        (**self).name()
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        (**self).readiness_fd()
    }

    fn filter_answers(&mut self, filter: &AnswerFilter) -> io::Result<bool> {
        (**self).filter_answers(filter)
    }

    fn sender(&self) -> io::Result<Box<dyn Transport>> {
        (**self).sender()
    }
}
