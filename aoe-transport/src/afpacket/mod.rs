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
//! headers apart from its sectors (see [`AfPacketOptions::vnet_header`]), or, with
//! [`AfPacketOptions::tx_ring`], copied into a ring shared with the kernel (`tx_ring` module)
//! on a send-only socket of its own, which one `send` empties. It is received with
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

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_proto::ethernet::{MacAddr, ETHERTYPE_AOE, HEADER_LEN};

use crate::{AnswerFilter, FrameBatch, Transport};
use recv::WaitState;
use rx_ring::{AttachError, RxRing};
use socket::{attach_filter, bind, set_buffer, setsockopt_int, socket};
use tuning::Tuning;
use tx_ring::TxRing;
use vectors::{RxVectors, TxVectors, VNET_HEADER_LEN};

mod interface;
mod recv;
mod rx_ring;
mod send;
pub(crate) mod socket;
mod tuning;
mod tx_ring;
mod vectors;
pub(crate) mod wait;

pub use interface::{interface_info, InterfaceInfo};
pub use tx_ring::TxRingStats;
pub use wait::{wait_readable, MAX_WAIT_FDS};

/// `PACKET_IGNORE_OUTGOING` from `<linux/if_packet.h>` (Linux 4.20).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

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
    /// refuses the option. Default on. Does not apply to frames sent through a transmit ring
    /// ([`tx_ring`](Self::tx_ring)), which the ring holds whole.
    pub vnet_header: bool,
    /// Send through a ring of about `send_buffer` bytes mapped from the kernel
    /// (`PACKET_TX_RING`, `TPACKET_V2`) rather than with `sendmmsg`: each frame, its tail
    /// included, is copied into a slot of the ring and one `send` per batch has the kernel
    /// send every slot filled, pointing the packets at the ring's pages. The ring lives on a
    /// send-only socket of its own beside this one (bound to the interface and to no
    /// EtherType, as an [`AfPacket::sender`] is), so that it does not share this socket's
    /// mapping with a receive ring nor its `virtio_net_hdr`s; each handle
    /// ([`AfPacket::try_clone`], [`AfPacket::sender`]) gets a ring of its own. Slots hold
    /// frames of up to the MTU at open, in the smallest power of two of bytes that also holds
    /// the slot's 52-byte header (2 KiB at MTU 1500, 16 KiB at MTU 9000), at least 64 of
    /// them. Frames longer than the MTU or the slots, or shorter than an Ethernet header, are
    /// dropped (`PACKET_LOSS`) rather than sent; [`AfPacket::tx_ring_stats`] counts what
    /// was. When the kernel refuses the ring the socket sends with `sendmmsg`
    /// ([`AfPacket::tx_ring_refused`] tells). On a veth pair on a busy two-core machine
    /// (the ignored `throughput` test of `tests/afxdp_veth.rs`, MTU 1500) it sent 1.6 to 1.7
    /// times the frames per second of `sendmmsg`, for about half the CPU per frame, whether
    /// 1514-byte frames or 36-byte heads with 1 KiB mapped tails; an AF_XDP sender did better
    /// still. Default off.
    pub tx_ring: bool,
    /// Send frames straight to the device's driver, past the kernel's queueing discipline
    /// (`PACKET_QDISC_BYPASS`), on this socket and on its [`AfPacket::sender`]s. A send then
    /// skips the qdisc's enqueue and dequeue and its lock, which a fast link with a
    /// multi-queue qdisc (`mq`, `fq_codel`) otherwise takes for every frame; it helps when
    /// sending costs the target CPU. The frames also skip traffic shaping and anything the
    /// qdisc would have buffered: a frame the device cannot take at that moment is dropped
    /// (lost as on the wire) rather than queued. On a device without a queue (veth, by
    /// default) nothing changes. When the kernel refuses the option the socket sends through
    /// the qdisc ([`AfPacket::qdisc_bypass_refused`] tells). Default off.
    pub qdisc_bypass: bool,
    /// Busy-poll the device's receive queue for up to this long (`SO_BUSY_POLL`, whole
    /// microseconds) when a receive or `poll` on the socket finds no frame, rather than
    /// sleeping until the interrupt; where the kernel has them (Linux 5.11) also prefer
    /// busy-polling to interrupts (`SO_PREFER_BUSY_POLL`) and take up to 64 frames a round
    /// (`SO_BUSY_POLL_BUDGET`, which needs `CAP_NET_ADMIN`; skipped when refused). It trades
    /// CPU time spinning in the kernel for latency: it helps a target that answers small
    /// requests one at a time over a NIC whose driver uses NAPI, and does nothing where the
    /// kernel knows no receive queue for the socket (veth without GRO, say). A time above
    /// the socket's current one needs `CAP_NET_ADMIN`; when the kernel refuses `SO_BUSY_POLL`
    /// the socket sleeps as usual ([`AfPacket::kernel_busy_poll_refused`] tells). `None`,
    /// the default, leaves the kernel's setting (`net.core.busy_read`) alone.
    pub kernel_busy_poll: Option<Duration>,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            recv_buffer: 4 << 20,
            send_buffer: 4 << 20,
            rx_ring: false,
            vnet_header: true,
            tx_ring: false,
            qdisc_bypass: false,
            kernel_busy_poll: None,
        }
    }
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
    /// Where frames leave when a transmit ring was asked for ([`AfPacketOptions::tx_ring`])
    /// and the kernel gave one; the ring has a socket of its own.
    tx_ring: Option<TxRing>,
    /// Why the kernel refused the transmit ring that was asked for.
    tx_ring_refused: Option<io::Error>,
    /// Whether a transmit ring was asked for: handles made from this one ask for one too.
    tx_ring_wanted: bool,
    /// The send buffer asked for at open ([`AfPacketOptions::send_buffer`]).
    send_buffer: usize,
    /// The kernel socket variants asked for at open, and which the kernel refused.
    tuning: Tuning,
    wait: WaitState,
    /// Shared by every handle on the socket ([`try_clone`](Self::try_clone)): the receive
    /// timeout belongs to the socket, so only a handle alone on it may rely on or change it.
    handles: Arc<()>,
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
        let tuning = Tuning::apply(fd.as_fd(), opts.qdisc_bypass, opts.kernel_busy_poll);
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
        let mut socket = AfPacket {
            fd,
            info,
            rx: RxVectors::new(vnet),
            ring,
            ring_refused,
            ring_error_checked: None,
            tx: TxVectors::new(vnet),
            tx_ring: None,
            tx_ring_refused: None,
            tx_ring_wanted: opts.tx_ring,
            send_buffer: opts.send_buffer,
            tuning,
            wait: WaitState::default(),
            handles: Arc::new(()),
        };
        (socket.tx_ring, socket.tx_ring_refused) = socket.open_tx_ring();
        Ok(socket)
    }

    /// A transmit ring on a socket of its own, when one was asked for; else, or when the
    /// kernel refuses it, none, and why.
    fn open_tx_ring(&self) -> (Option<TxRing>, Option<io::Error>) {
        if !self.tx_ring_wanted {
            return (None, None);
        }
        let max_frame = HEADER_LEN + self.info.mtu;
        match TxRing::open(self.info.index, max_frame, self.send_buffer, self.tuning.qdisc_bypass()) {
            Ok(ring) => (Some(ring), None),
            Err(e) => (None, Some(e)),
        }
    }

    /// Another handle to the same socket (the descriptor is duplicated), so one thread can
    /// receive while another sends. Each frame is received by one handle only.
    ///
    /// Fails for a socket with a receive ring ([`AfPacketOptions::rx_ring`]), which has one
    /// reader. A socket asked for a transmit ring ([`AfPacketOptions::tx_ring`]) gives the
    /// handle a ring of its own.
    pub fn try_clone(&self) -> io::Result<AfPacket> {
        if self.ring.is_some() {
            let e = "a socket with a receive ring has a single handle";
            return Err(io::Error::new(io::ErrorKind::Unsupported, e));
        }
        let (tx_ring, tx_ring_refused) = self.open_tx_ring();
        Ok(AfPacket {
            fd: self.fd.try_clone()?,
            info: self.info.clone(),
            rx: RxVectors::new(self.tx.vnet),
            ring: None,
            ring_refused: None,
            ring_error_checked: None,
            tx: TxVectors::new(self.tx.vnet),
            tx_ring,
            tx_ring_refused,
            tx_ring_wanted: self.tx_ring_wanted,
            send_buffer: self.send_buffer,
            tuning: self.tuning.clone(),
            wait: WaitState { socket_timeout: self.wait.socket_timeout, ..WaitState::default() },
            handles: Arc::clone(&self.handles),
        })
    }

    /// A handle that only sends: a socket of its own, bound to the same interface but to no
    /// EtherType, so that other threads can send while this handle receives, whether or not
    /// it has a receive ring. Its frames go out as this socket's do (with a `virtio_net_hdr`
    /// when this socket has them, past the qdisc when it was asked to bypass it, through a
    /// transmit ring of its own when this socket was asked for one). It receives nothing: its
    /// `recv_batch` only waits.
    pub fn sender(&self) -> io::Result<AfPacket> {
        let (tx_ring, tx_ring_refused) = self.open_tx_ring();
        let (fd, vnet) = match &tx_ring {
            // The ring's socket only sends already: this handle is that socket.
            Some(ring) => (ring.as_fd().try_clone_to_owned()?, false),
            None => {
                let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
                let vnet = self.tx.vnet
                    && setsockopt_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1).is_ok();
                set_buffer(fd.as_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, self.send_buffer)?;
                (fd, vnet)
            }
        };
        let tuning = self.tuning.for_sender(fd.as_fd());
        if tx_ring.is_none() {
            // EtherType 0: the kernel hands this socket no frame.
            bind(fd.as_fd(), self.info.index, 0)?;
        }
        Ok(AfPacket {
            fd,
            info: self.info.clone(),
            rx: RxVectors::new(vnet),
            ring: None,
            ring_refused: None,
            ring_error_checked: None,
            tx: TxVectors::new(vnet),
            tx_ring,
            tx_ring_refused,
            tx_ring_wanted: self.tx_ring_wanted,
            send_buffer: self.send_buffer,
            tuning,
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

    /// True when frames leave through a transmit ring ([`AfPacketOptions::tx_ring`]).
    pub fn has_tx_ring(&self) -> bool {
        self.tx_ring.is_some()
    }

    /// Why the kernel refused the transmit ring that was asked for, if it did; frames are
    /// sent with `sendmmsg` then.
    pub fn tx_ring_refused(&self) -> Option<&io::Error> {
        self.tx_ring_refused.as_ref()
    }

    /// What this handle's transmit ring has done since it was set up; `None` without one.
    pub fn tx_ring_stats(&self) -> Option<TxRingStats> {
        self.tx_ring.as_ref().map(TxRing::stats)
    }

    /// The interface as it was when the socket was opened.
    pub fn info(&self) -> &InterfaceInfo {
        &self.info
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
        self.receive(batch, timeout)
    }

    /// Uses `sendmmsg`; when the socket's send queue is full it waits for room and retries,
    /// for up to a second without progress. A frame the device drops (`ENOBUFS`) counts as
    /// sent: it is lost as on the wire. Returns `Ok(n)` with `n < batch.len()` when it gave
    /// up or hit an error after sending `n` frames, and the error when it sent none.
    ///
    /// With a transmit ring ([`AfPacketOptions::tx_ring`]) it copies the frames into free
    /// slots and has the kernel send them, and returns once the kernel has taken them all;
    /// when no slot is free it waits for one, for up to a second without progress (frames
    /// still in the ring then leave with a later send). Frames the ring drops (too long, a
    /// tail it cannot read) count as sent too ([`AfPacket::tx_ring_stats`]). When the
    /// interface is down or gone the frames are taken back from the ring, unsent.
    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize> {
        self.send_with_tails(batch, &[])
    }

    /// As [`send_batch`](Self::send_batch); each tail goes to the kernel as a second piece of
    /// its frame, read from where it lies (one copy, into the packet). A tail the kernel
    /// cannot read (a mapping whose file was truncated under it: `EFAULT`) loses that frame.
    fn send_with_tails(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        self.send_frames(batch, tails)
    }

    fn mac(&self) -> MacAddr {
        self.info.mac
    }

    fn mtu(&self) -> usize {
        self.info.mtu
    }

    fn refresh_mtu(&mut self) -> io::Result<usize> {
        let info = interface::interface_info(&self.info.name).map_err(io::Error::other)?;
        self.info.mtu = info.mtu;
        Ok(info.mtu)
    }

    fn name(&self) -> &str {
        &self.info.name
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    /// A classic BPF socket filter ([`AnswerFilter::program`]), run by the kernel on every
    /// frame before it is queued, for the socket and so for every handle
    /// ([`try_clone`](AfPacket::try_clone)) on it; a receive ring gets only what passes too.
    /// Frames queued before the call stay queued.
    fn filter_answers(&mut self, filter: &AnswerFilter) -> io::Result<bool> {
        attach_filter(self.fd.as_fd(), &filter.program())?;
        Ok(true)
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
