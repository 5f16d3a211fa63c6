//! A receive ring shared with the kernel: `PACKET_RX_RING` with `TPACKET_V2` frames.
//!
//! The kernel writes each frame it takes for the socket into the next free slot of a ring
//! mapped into both address spaces and flips the slot's status word to "user"; the reader
//! copies the frame out and flips the status back. No system call is made while frames keep
//! coming: a receive that finds frames waiting only reads memory, and one that finds none
//! sleeps in `poll`, which the kernel wakes when a slot turns.
//!
//! Layout (`<linux/if_packet.h>`): the ring is `block_nr` blocks of `block_size` bytes, each
//! holding `block_size / frame_size` frame slots; a frame slot starts with a `tpacket2_hdr`
//! whose `tp_mac` gives the offset of the Ethernet frame within the slot and `tp_snaplen` its
//! stored length (`tp_len` is its length on the wire).
//!
//! Frames are not copied out: each is lent to the [`FrameBatch`] that receives it, which reads
//! it in the ring and hands its slot back to the kernel when the batch is cleared (the next
//! receive into it) or dropped. The reader stops at a slot still lent out, so that slots are
//! taken in the order the kernel fills them whatever the batches do.

// Talks to the kernel through shared memory; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use aoe_proto::ethernet::HEADER_LEN;

use super::socket::setsockopt;
use crate::batch::Lender;
use crate::FrameBatch;

/// Where the kernel puts a frame's network header in a `SOCK_RAW` slot at most:
/// `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)`; the Ethernet header lies just before it.
const NETWORK_OFFSET: usize = (libc::TPACKET2_HDRLEN + 16).next_multiple_of(libc::TPACKET_ALIGNMENT);

/// Why [`RxRing::attach`] failed.
#[derive(Debug)]
pub(crate) enum AttachError {
    /// The kernel refused the ring; the socket has none and receives as before.
    Refused(io::Error),
    /// The ring was set up but could not be mapped, nor taken down again: frames would go to a
    /// ring nobody reads, so the socket is of no use.
    Stuck(io::Error),
}

/// A `TPACKET_V2` receive ring mapped from a packet socket, read in order.
pub(crate) struct RxRing {
    memory: Arc<RingMemory>,
    /// The same, as the lender batches hold.
    lender: Arc<dyn Lender>,
    /// The next slot the kernel fills, in ring order.
    head: usize,
}

/// The ring's mapping and layout, shared by the reader and the batches it lends frames to;
/// unmapped when the last of them lets go.
struct RingMemory {
    map: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    frame_size: usize,
    frames_per_block: usize,
    frames: usize,
    /// Which slots a batch holds: the kernel filled them and has not had them back.
    lent: Box<[AtomicBool]>,
}

impl RxRing {
    /// Sets up a ring of about `bytes` (at least 64 slots) on the packet socket `fd` for
    /// frames of up to `max_frame` bytes (a socket with virtio_net_hdrs counts theirs in
    /// too: the kernel puts one before each frame), and maps it. The socket must not have one yet. On
    /// error the socket has none.
    pub(crate) fn attach(fd: BorrowedFd<'_>, max_frame: usize, bytes: usize) -> Result<RxRing, AttachError> {
        // SAFETY: plain query with no pointer argument.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let (block_size, frame_size) = geometry(max_frame, page);
        let frames_per_block = block_size / frame_size;
        let blocks = (bytes / block_size).max(64usize.div_ceil(frames_per_block));
        let too_big =
            || AttachError::Refused(io::Error::new(io::ErrorKind::InvalidInput, "receive ring too large"));
        let u32_of = |n: usize| u32::try_from(n).map_err(|_| too_big());
        let req = libc::tpacket_req {
            tp_block_size: u32_of(block_size)?,
            tp_block_nr: u32_of(blocks)?,
            tp_frame_size: u32_of(frame_size)?,
            tp_frame_nr: u32_of(blocks * frames_per_block)?,
        };
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version).map_err(AttachError::Refused)?;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req).map_err(AttachError::Refused)?;
        let map_len = block_size * blocks;
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
            let e = io::Error::last_os_error();
            // Frames would go to a ring nobody reads: take it down again.
            // SAFETY: all zeros is a valid tpacket_req (it asks for no ring).
            let none: libc::tpacket_req = unsafe { mem::zeroed() };
            setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &none).map_err(AttachError::Stuck)?;
            return Err(AttachError::Refused(e));
        }
        // mmap never returns null for a request without MAP_FIXED.
        let map = NonNull::new(map.cast::<u8>())
            .ok_or_else(|| AttachError::Stuck(io::Error::other("mmap returned null")))?;
        let frames = blocks * frames_per_block;
        let memory = Arc::new(RingMemory {
            map,
            map_len,
            block_size,
            frame_size,
            frames_per_block,
            frames,
            lent: (0..frames).map(|_| AtomicBool::new(false)).collect(),
        });
        Ok(RxRing { lender: memory.clone(), memory, head: 0 })
    }

    /// Lends the frames waiting in the ring to `batch`, oldest first, until the batch is full,
    /// no frame waits or the next slot is still lent out. Frames shorter than an Ethernet
    /// header, cut short by the ring, or longer than the batch's slots are dropped and their
    /// slots handed back at once. Returns how many ring slots it took.
    pub(crate) fn drain_into(&mut self, batch: &mut FrameBatch) -> usize {
        let ring = &*self.memory;
        let mut taken = 0;
        while !batch.is_full() && taken < ring.frames {
            let i = self.head;
            // The flag first: a batch hands a slot back by setting its status, then clearing
            // the flag, so a cleared flag seen here means the status read next is the
            // kernel's, never the one the batch left.
            if ring.lent[i].load(Ordering::Acquire) {
                break;
            }
            if ring.status_word(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break;
            }
            let slot = ring.slot(i);
            // SAFETY: the slot starts with a tpacket2_hdr (the kernel wrote it before setting
            // TP_STATUS_USER, which the acquire load above saw); the slot is ours until the
            // status is set back, and the header's fields are read by value.
            let hdr = unsafe { ptr::read_volatile(slot.as_ptr().cast::<libc::tpacket2_hdr>()) };
            let (mac, snap) = (usize::from(hdr.tp_mac), hdr.tp_snaplen as usize);
            let whole = snap == hdr.tp_len as usize;
            // The frame lies after the header (so never over the status word) and in the slot.
            let after_header = mac >= mem::size_of::<libc::tpacket2_hdr>();
            let fits = after_header && mac.checked_add(snap).is_some_and(|end| end <= ring.frame_size);
            if whole && fits && (HEADER_LEN..=batch.frame_capacity()).contains(&snap) {
                ring.lent[i].store(true, Ordering::Relaxed);
                // SAFETY: `mac..mac + snap` lies within slot `i` (checked just above) of a
                // mapping that lives as long as the lender; the kernel does not write the slot
                // while its status says "user", and the flag just set keeps this reader off it,
                // until the batch hands it back through `release`.
                if !unsafe { batch.lend(&self.lender, slot.add(mac), snap, i) } {
                    // Only a batch holding frames of another ring refuses one that fits (a
                    // receive clears its batch first): leave the frame for the next receive.
                    ring.lent[i].store(false, Ordering::Relaxed);
                    debug_assert!(false, "a batch holds frames of another ring");
                    break;
                }
            } else {
                // Dropped: the slot goes straight back.
                ring.status_word(i).store(libc::TP_STATUS_KERNEL, Ordering::Release);
            }
            self.head = (i + 1) % ring.frames;
            taken += 1;
        }
        taken
    }
}

impl RxRing {
    /// True when a batch holds the slot the kernel fills next or the one it filled last: the
    /// kernel then drops frames or `poll` reports frames that are not there, until the
    /// batch lets go.
    pub(crate) fn held_in_the_way(&self) -> bool {
        let ring = &*self.memory;
        let last = (self.head + ring.frames - 1) % ring.frames;
        ring.lent[self.head].load(Ordering::Relaxed) || ring.lent[last].load(Ordering::Relaxed)
    }
}

impl RingMemory {
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

    /// The status word at the start of frame slot `i`, which the kernel and the reader hand
    /// the slot back and forth with.
    fn status_word(&self, i: usize) -> &AtomicU32 {
        // SAFETY: every slot starts at a multiple of TPACKET_ALIGNMENT (16) in a page-aligned
        // mapping that lives as long as `self`, with `tp_status`, a u32, first; the kernel
        // accesses it only as a whole aligned word, so treating it as an atomic is sound.
        unsafe { AtomicU32::from_ptr(self.slot(i).as_ptr().cast::<u32>()) }
    }
}

impl Lender for RingMemory {
    /// Hands slot `slot` back to the kernel, then lets the reader past it.
    fn release(&self, slot: usize) {
        self.status_word(slot).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.lent[slot].store(false, Ordering::Release);
    }
}

/// Block and frame-slot sizes for frames of up to `max_frame` bytes: slots of a power of two
/// up to a page, else of whole pages, one block per page or per slot. For slots of 1024 bytes
/// or more (an MTU of about 900 or more) a frame's sector data (36 bytes in) then lies at the
/// same offset modulo 1024 in every slot, some 400 bytes short of where [`FrameBatch`] slots
/// want it, so that copies out of the ring never run at the slow distance its docs describe.
fn geometry(max_frame: usize, page: usize) -> (usize, usize) {
    let needed = NETWORK_OFFSET + max_frame;
    if needed <= page {
        (page, needed.next_power_of_two())
    } else {
        let frame = needed.next_multiple_of(page);
        (frame, frame)
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `attach`; the reader and every batch
        // that held a frame from it are done with it (this is the last reference).
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

// SAFETY: the mapping is the ring's alone (its socket has one reader). Slot status words and
// flags are atomics; a slot's frame is touched by the reader until it is lent, then by the
// batch holding it alone, until handed back. The rest of the struct does not change.
unsafe impl Send for RingMemory {}
// SAFETY: as for Send.
unsafe impl Sync for RingMemory {}

impl core::fmt::Debug for RxRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RxRing")
            .field("slots", &self.memory.frames)
            .field("slot_size", &self.memory.frame_size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_the_largest_frame_and_tile_their_blocks() {
        for max_frame in [60, 1514, 4096, 9014, 65_550] {
            let (block, frame) = geometry(max_frame, 4096);
            assert!(frame >= NETWORK_OFFSET + max_frame, "{max_frame}");
            assert_eq!(block % 4096, 0, "{max_frame}");
            assert_eq!(block % frame, 0, "{max_frame}");
            assert_eq!(frame % libc::TPACKET_ALIGNMENT, 0, "{max_frame}");
        }
        assert_eq!(geometry(1514, 4096), (4096, 2048));
        assert_eq!(geometry(9014, 4096), (12_288, 12_288));
    }
}
