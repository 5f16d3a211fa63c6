//! A transmit ring shared with the kernel: `PACKET_TX_RING` with `TPACKET_V2` frames, on a
//! send-only packet socket of its own.
//!
//! The sender copies each frame into the next free slot of a ring mapped into both address
//! spaces, sets its length and flips the slot's status word to "send request"; one `send`
//! with no data then has the kernel turn every requested slot into a packet, in ring order,
//! and hand it to the device. The packet points at the slot's pages rather than copying them,
//! so the slot comes back ("available") only once the device (or, on a veth, the peer's
//! receiver) is done with the packet: a full ring is waited for with `poll`, which the kernel
//! wakes as packets are freed.
//!
//! Why a socket of its own: a packet socket with both rings maps them as one region, RX ring
//! first, and a socket that sends through a ring must not have `PACKET_VNET_HDR` (the kernel
//! would read a `virtio_net_hdr` at the start of every slot), which the receiving socket may
//! want. A second socket bound to the interface and to EtherType 0 receives nothing, so it
//! costs no memory but the ring; and [`AfPacket::sender`](super::AfPacket::sender) handles,
//! which are send-only sockets anyway, carry the ring on their own socket.
//!
//! `PACKET_LOSS` is set, so that the kernel skips a slot it cannot send (too long for the
//! device, shorter than an Ethernet header) rather than stop the ring at it. A frame this
//! side decides to drop after its slot was taken (its tail could not be read) is sent as
//! such a slot, of length 0: slots must be handed over in order, and the kernel stops at a
//! slot that is not requested.
//!
//! Layout (`<linux/if_packet.h>`): as for the receive ring, `block_nr` blocks of `block_size`
//! bytes, each of `block_size / frame_size` slots; a slot starts with a `tpacket2_hdr`, and
//! (without `PACKET_TX_HAS_OFF`) the frame to send lies at `TPACKET2_HDRLEN - sizeof(struct
//! sockaddr_ll)`, 32 bytes in, `tp_len` bytes long.

// Talks to the kernel through shared memory; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::socket::{bind, set_buffer, setsockopt, setsockopt_int, socket};
use super::wait::wait_for;
use crate::tail_copy::{self, TailCopies, MAX_IOVECS};
use crate::FrameBatch;

/// Where a frame starts in its slot: `TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)`.
const DATA_OFFSET: usize = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
/// Fewest slots a ring has, whatever its size in bytes: one batch of the serving loop.
const MIN_SLOTS: usize = 64;
/// How long a send keeps trying while no slot comes back and the kernel takes nothing.
const SEND_STALL_LIMIT: Duration = Duration::from_secs(1);
/// How long a send retries a frame the device drops (`ENOBUFS`) before it counts it lost.
const DEVICE_DROP_PATIENCE: Duration = Duration::from_millis(2);
/// How long one wait for a slot lasts before the next look: `poll` reports a slot coming
/// back, but not the kernel's socket buffer freeing up, which a waiting slot may need too.
const SLOT_WAIT: Duration = Duration::from_millis(1);
/// Status bits of a slot that is not ours: requested, being sent, or refused.
const BUSY: u32 = libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING | libc::TP_STATUS_WRONG_FORMAT;

/// What a transmit ring has done since it was set up, in frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxRingStats {
    /// Frames handed to the kernel in the ring.
    pub queued: u64,
    /// Frames dropped before the kernel saw them because they were longer than the MTU or a
    /// slot (after an MTU change, say).
    pub bad_length: u64,
    /// Frames dropped because their tail could not be read (a mapping whose file was
    /// truncated under it).
    pub unreadable_tail: u64,
    /// Frames the device dropped (the kernel answered `ENOBUFS`) for longer than a send
    /// retries them: lost as on the wire.
    pub device_dropped: u64,
    /// Slots the kernel handed back as malformed (`TP_STATUS_WRONG_FORMAT`), taken back.
    pub wrong_format: u64,
}

/// A `TPACKET_V2` transmit ring on a send-only packet socket, filled in order.
pub(crate) struct TxRing {
    // Unmapped in `drop`, before the socket closes.
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    frame_size: usize,
    frames_per_block: usize,
    frames: usize,
    /// The next slot to fill, in ring order.
    head: usize,
    stats: TxRingStats,
    /// Scratch for one round of a send, kept to avoid allocating per call: the slots filled
    /// and the lengths to give them, where each tail goes and comes from (and which slot it
    /// belongs to).
    staged: Vec<(usize, u32)>,
    tails: TailCopies,
}

impl TxRing {
    /// Opens a packet socket bound to interface `index` and to no EtherType, with a transmit
    /// ring of about `bytes` (at least [`MIN_SLOTS`] slots) for frames of up to `max_frame`
    /// bytes, mapped; and a send buffer to match. `qdisc_bypass` sets
    /// `PACKET_QDISC_BYPASS` on it. Any error means no ring: send another way.
    pub(crate) fn open(index: u32, max_frame: usize, bytes: usize, qdisc_bypass: bool) -> io::Result<TxRing> {
        // Tails are copied with process_vm_readv: without it every frame with one is lost.
        tail_copy::probe()?;
        let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        // SAFETY: plain query with no pointer argument.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let (block_size, frame_size) = geometry(max_frame, page);
        let frames_per_block = block_size / frame_size;
        let blocks = (bytes / block_size).max(MIN_SLOTS.div_ceil(frames_per_block));
        let u32_of = |n: usize| {
            u32::try_from(n)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "transmit ring too large"))
        };
        let req = libc::tpacket_req {
            tp_block_size: u32_of(block_size)?,
            tp_block_nr: u32_of(blocks)?,
            tp_frame_size: u32_of(frame_size)?,
            tp_frame_nr: u32_of(blocks * frames_per_block)?,
        };
        let map_len = block_size * blocks;
        // Each packet in flight counts its slot against the send buffer: room for the whole
        // ring and the packets' own overhead, so that the ring runs out first.
        set_buffer(fd.as_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, map_len.saturating_mul(2))?;
        if qdisc_bypass {
            setsockopt_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        }
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
        setsockopt_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_LOSS, 1)?;
        setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_TX_RING, &req)?;
        // SAFETY: maps `map_len` bytes of the socket's ring, exactly its size; the result is
        // checked before use and unmapped in `drop`.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            // The socket, and its ring, go with `fd`.
            return Err(io::Error::last_os_error());
        }
        // mmap never returns null for a request without MAP_FIXED.
        let map = NonNull::new(map.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let ring = TxRing {
            fd,
            map,
            map_len,
            block_size,
            frame_size,
            frames_per_block,
            frames: blocks * frames_per_block,
            head: 0,
            stats: TxRingStats::default(),
            staged: Vec::with_capacity(MAX_IOVECS),
            tails: TailCopies::new(),
        };
        // EtherType 0: the kernel hands this socket no frame.
        bind(ring.fd.as_fd(), index, 0)?;
        Ok(ring)
    }

    /// What the ring has done since it was set up.
    pub(crate) fn stats(&self) -> TxRingStats {
        self.stats
    }

    /// Sends `batch`, frame `i` followed by `tails[i]`, dropping frames longer than
    /// `max_frame`, as [`send_with_tails`](crate::Transport::send_with_tails) on
    /// [`AfPacket`](super::AfPacket) says. Returns once the kernel has taken every frame of
    /// the batch (sent or dropped), or after [`SEND_STALL_LIMIT`] without progress.
    pub(crate) fn send(
        &mut self,
        batch: &FrameBatch,
        tails: &[&[u8]],
        max_frame: usize,
    ) -> io::Result<usize> {
        let total = batch.len();
        let mut done = 0;
        let mut last_progress = Instant::now();
        let mut device_drops_since: Option<Instant> = None;
        loop {
            if done < total {
                let n = self.stage(batch, tails, done, max_frame);
                done += n;
                if n > 0 {
                    last_progress = Instant::now();
                }
            }
            match kick(self.fd.as_fd()) {
                Ok(n) if n > 0 => last_progress = Instant::now(),
                Ok(_) => {}
                // No room in the send buffer, or a signal: the rest waits in the ring.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {}
                // The device dropped the frame the kernel stopped at, which stays requested.
                // Give a full queue a moment to drain; past that the frame is lost as on the
                // wire and the rest goes on, without waiting again in this call.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    let since = *device_drops_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < DEVICE_DROP_PATIENCE {
                        wait_for(self.fd.as_fd(), 0, Some(Duration::from_micros(100)))?;
                    } else if self.skip_stuck_frame() {
                        self.stats.device_dropped += 1;
                        last_progress = Instant::now();
                    }
                    continue;
                }
                // The interface is down or gone: the kernel takes nothing. The frames still
                // requested are taken back, unsent.
                Err(e) => {
                    let unsent = self.take_back_requests();
                    let sent = done.saturating_sub(unsent);
                    return if sent > 0 { Ok(sent) } else { Err(e) };
                }
            }
            if done == total && !self.requests_left() {
                return Ok(done);
            }
            if last_progress.elapsed() >= SEND_STALL_LIMIT {
                // Frames still requested leave with a later send.
                return if done > 0 {
                    Ok(done)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "transmit ring made no progress for a second",
                    ))
                };
            }
            wait_for(self.fd.as_fd(), libc::POLLOUT, Some(SLOT_WAIT))?;
        }
    }

    /// Copies frames `from..` of `batch` (with their tails) into free slots and requests them
    /// in order, as many as there are free slots for; returns how many frames it dealt with
    /// (requested, or dropped).
    fn stage(&mut self, batch: &FrameBatch, tails: &[&[u8]], from: usize, max_frame: usize) -> usize {
        self.staged.clear();
        let capacity = (self.frame_size - DATA_OFFSET).min(max_frame);
        let mut i = from;
        while i < batch.len() && self.staged.len() < MAX_IOVECS {
            let slot = self.head;
            let status = self.status_word(slot).load(Ordering::Acquire);
            if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
                // Only a socket without PACKET_LOSS gets these back; the slot is ours again.
                self.stats.wrong_format += 1;
            } else if status & BUSY != 0 {
                break;
            }
            let head = batch.get(i).unwrap_or_default();
            let tail = tails.get(i).copied().unwrap_or_default();
            let len = head.len() + tail.len();
            let at = self.slot(slot).as_ptr().wrapping_add(DATA_OFFSET);
            if len > capacity {
                self.stats.bad_length += 1;
                self.staged.push((slot, 0));
            } else {
                // SAFETY: the slot is available (the acquire load above saw the kernel hand it
                // back), so the kernel neither reads nor writes it until it is requested again;
                // the frame fits after the header (`len <= capacity`); the head is memory of
                // the batch, distinct from the ring.
                unsafe { ptr::copy_nonoverlapping(head.as_ptr(), at, head.len()) };
                if !tail.is_empty() {
                    self.tails.push(at.wrapping_add(head.len()), tail, self.staged.len());
                }
                self.staged.push((slot, len as u32));
            }
            self.head = (slot + 1) % self.frames;
            i += 1;
        }
        self.copy_tails();
        for &(slot, len) in &self.staged {
            let hdr = self.slot(slot).as_ptr().cast::<libc::tpacket2_hdr>();
            // SAFETY: the slot starts with a tpacket2_hdr in the mapping and is still ours (not
            // yet requested); `tp_len` is written as a plain field before the release store
            // below publishes it.
            unsafe { ptr::addr_of_mut!((*hdr).tp_len).write_volatile(len) };
            self.status_word(slot).store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        }
        self.stats.queued += self.staged.iter().filter(|&&(_, len)| len > 0).count() as u64;
        i - from
    }

    /// Copies the tails staged by [`stage`](Self::stage) into their slots; a frame whose tail
    /// cannot be read is given length 0, which the kernel skips.
    fn copy_tails(&mut self) {
        let (staged, stats) = (&mut self.staged, &mut self.stats);
        // SAFETY: each destination lies within an available slot that `stage` took and has
        // not yet requested, after the head; nothing else writes it meanwhile.
        unsafe {
            self.tails.copy_all(|owner| {
                staged[owner].1 = 0;
                stats.unreadable_tail += 1;
            })
        };
    }

    /// Whether the last slot filled is still requested: the kernel takes requests in order,
    /// so when it is not, none is.
    fn requests_left(&self) -> bool {
        let last = (self.head + self.frames - 1) % self.frames;
        self.status_word(last).load(Ordering::Acquire) & libc::TP_STATUS_SEND_REQUEST != 0
    }

    /// The requested slots, oldest first, are those just before `head`: the kernel stopped at
    /// the oldest. Gives it length 0, so that the next `send` skips it (`PACKET_LOSS`); false
    /// when no slot is requested.
    fn skip_stuck_frame(&mut self) -> bool {
        let Some(oldest) = self.requested().last() else { return false };
        let hdr = self.slot(oldest).as_ptr().cast::<libc::tpacket2_hdr>();
        // SAFETY: the slot lies in the mapping; it is requested, and the kernel reads requested
        // slots only within a `send` on this socket, which this handle alone makes and is not
        // making now.
        unsafe { ptr::addr_of_mut!((*hdr).tp_len).write_volatile(0) };
        self.stats.queued = self.stats.queued.saturating_sub(1);
        true
    }

    /// Takes every requested slot back, unsent, and moves `head` back to the oldest of them,
    /// where the kernel will look next. Returns how many there were.
    fn take_back_requests(&mut self) -> usize {
        let Some(oldest) = self.requested().last() else { return 0 };
        let n = (self.head + self.frames - oldest) % self.frames;
        let n = if n == 0 { self.frames } else { n };
        for k in 0..n {
            // Not ours until the kernel answered: no `send` is running (as in
            // `skip_stuck_frame`), so no kernel code looks at requested slots.
            self.status_word((oldest + k) % self.frames).store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
        }
        self.head = oldest;
        self.stats.queued = self.stats.queued.saturating_sub(n as u64);
        n
    }

    /// The requested slots, from the newest back.
    fn requested(&self) -> impl Iterator<Item = usize> + '_ {
        (1..=self.frames)
            .map(|back| (self.head + self.frames - back) % self.frames)
            .take_while(|&i| self.status_word(i).load(Ordering::Acquire) & libc::TP_STATUS_SEND_REQUEST != 0)
    }

    /// Frame slot `i` of the ring.
    ///
    /// # Panics
    ///
    /// If `i` is not a slot of the ring.
    fn slot(&self, i: usize) -> NonNull<u8> {
        assert!(i < self.frames, "slot {i} of a ring of {}", self.frames);
        let offset =
            (i / self.frames_per_block) * self.block_size + (i % self.frames_per_block) * self.frame_size;
        // SAFETY: `i < frames`, so the slot (`frame_size` bytes from `offset`) lies within the
        // mapping of `blocks * block_size` bytes.
        unsafe { self.map.add(offset) }
    }

    /// The status word at the start of frame slot `i`, which the kernel and the sender hand
    /// the slot back and forth with.
    fn status_word(&self, i: usize) -> &AtomicU32 {
        // SAFETY: every slot starts at a multiple of TPACKET_ALIGNMENT (16) in a page-aligned
        // mapping that lives as long as `self`, with `tp_status`, a u32, first; the kernel
        // accesses it only as a whole aligned word, so treating it as an atomic is sound.
        unsafe { AtomicU32::from_ptr(self.slot(i).as_ptr().cast::<u32>()) }
    }
}

impl AsFd for TxRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Has the kernel send what the ring requests (`send` with no data, without waiting for the
/// packets to be freed). Returns the bytes it handed to the device.
fn kick(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: no buffer: the kernel reads nothing through the null pointer.
    let r = unsafe { libc::send(fd.as_raw_fd(), ptr::null(), 0, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Block and frame-slot sizes for frames of up to `max_frame` bytes: slots of the smallest
/// power of two that holds the `tpacket2_hdr` (with the `sockaddr_ll` the kernel counts in)
/// and the frame; blocks of a page, or of one slot when slots are larger.
fn geometry(max_frame: usize, page: usize) -> (usize, usize) {
    let frame = (libc::TPACKET2_HDRLEN + max_frame).next_power_of_two();
    (frame.max(page), frame)
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; nothing else points into it.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

// SAFETY: the mapping is this value's alone (its socket has one sender, this one); the iovecs'
// pointers are scratch, meaningful only within one call that holds `&mut self`.
unsafe impl Send for TxRing {}

impl core::fmt::Debug for TxRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TxRing")
            .field("slots", &self.frames)
            .field("slot_size", &self.frame_size)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_the_largest_frame_and_tile_their_blocks() {
        for max_frame in [60, 1514, 4096, 9014, 65_550] {
            let (block, frame) = geometry(max_frame, 4096);
            assert!(frame >= libc::TPACKET2_HDRLEN + max_frame, "{max_frame}");
            assert!(frame - DATA_OFFSET >= max_frame, "{max_frame}");
            assert!(frame.is_power_of_two(), "{max_frame}");
            assert_eq!(block % 4096, 0, "{max_frame}");
            assert_eq!(block % frame, 0, "{max_frame}");
        }
        assert_eq!(DATA_OFFSET, 32);
        assert_eq!(geometry(1514, 4096), (4096, 2048));
        assert_eq!(geometry(9014, 4096), (16_384, 16_384));
    }
}
