//! The memory an AF_XDP socket shares with the kernel: the UMEM that frames are sent from, and
//! the two rings that pass its chunks back and forth (TX: ours to the kernel; completion: the
//! kernel's back to us once a frame has gone).
//!
//! Each ring is a power-of-two array of entries after a producer and a consumer index, free
//! running `u32`s that each side only ever increases. The side that fills entries writes them,
//! then publishes its index with Release ordering; the other side reads that index with
//! Acquire ordering before reading the entries, and publishes its own index (Release) once it
//! is done with them, so that the entries can be filled again.

// Maps memory shared with the kernel and reads and writes it; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{self, AtomicU32, Ordering};

/// `XDP_RING_NEED_WAKEUP` from `<linux/if_xdp.h>`: the kernel wants a `sendto` to look at the
/// TX ring (always so in copy mode).
const XDP_RING_NEED_WAKEUP: u32 = 1 << 0;

/// A region mapped with `mmap`, unmapped on drop.
#[derive(Debug)]
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// `len` bytes of private anonymous memory, zeroed and faulted in now, so that the kernel
    /// can pin it at once (`XDP_UMEM_REG`).
    pub(super) fn anonymous(len: usize) -> io::Result<Mapping> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        // SAFETY: a new anonymous mapping at an address the kernel picks; it aliases nothing.
        let ptr =
            unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        Self::from_mmap(ptr, len)
    }

    /// `len` bytes of the ring that socket `fd` maps at page offset `pgoff`.
    fn ring(fd: BorrowedFd<'_>, len: usize, pgoff: libc::off_t) -> io::Result<Mapping> {
        let (prot, flags) = (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_POPULATE);
        // SAFETY: a new shared mapping of a ring of a socket we hold, at an address the kernel
        // picks; the kernel checks `len` against the ring's size.
        let ptr = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), pgoff) };
        Self::from_mmap(ptr, len)
    }

    fn from_mmap(ptr: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Mapping { ptr, len })
    }

    pub(super) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The address `offset` bytes in, for an object of `T` that must lie wholly inside the
    /// mapping at `T`'s alignment: offsets come from the kernel (`XDP_MMAP_OFFSETS`), so
    /// they are checked once, here.
    fn field<T>(&self, offset: u64) -> io::Result<NonNull<T>> {
        let bad =
            || io::Error::other(format!("ring offset {offset} outside a mapping of {} bytes", self.len));
        let offset = usize::try_from(offset).map_err(|_| bad())?;
        if offset.checked_add(mem::size_of::<T>()).is_none_or(|end| end > self.len) {
            return Err(bad());
        }
        // In bounds, checked above.
        let at = self.ptr.as_ptr().wrapping_add(offset);
        if at.align_offset(mem::align_of::<T>()) != 0 {
            return Err(io::Error::other(format!("ring offset {offset} is misaligned")));
        }
        Ok(NonNull::new(at.cast()).expect("inside a non-null mapping"))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `from_mmap`, unmapped once, here; nothing borrows it past
        // its owner.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One ring mapped from the socket: indexes, flags and `size` entries of `T`.
#[derive(Debug)]
struct Ring<T> {
    /// What the pointers below point into, kept mapped as long as they are used.
    _map: Mapping,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    size: u32,
}

impl<T> Ring<T> {
    /// Maps the ring of `size` entries that socket `fd` has at `pgoff`, laid out as `off` says.
    fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: libc::off_t,
    ) -> io::Result<Self> {
        let len = usize::try_from(off.desc)
            .ok()
            .and_then(|d| d.checked_add(size as usize * mem::size_of::<T>()))
            .ok_or_else(|| io::Error::other("ring size overflows"))?;
        let map = Mapping::ring(fd, len, pgoff)?;
        let entries = map.field::<T>(off.desc)?;
        Ok(Ring {
            producer: map.field(off.producer)?,
            consumer: map.field(off.consumer)?,
            flags: map.field(off.flags)?,
            entries,
            size,
            _map: map,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: checked in bounds and aligned at `map`; the kernel only ever accesses the
        // word atomically too, and it lives as long as the mapping in `self`.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { self.consumer.as_ref() }
    }

    /// Entry `index` (taken modulo the size): a pointer into the mapping.
    fn entry(&self, index: u32) -> *mut T {
        // `size` is a power of two (the kernel refuses others) and the entries were checked to
        // fit the mapping at `map`.
        self.entries.as_ptr().wrapping_add((index & (self.size - 1)) as usize)
    }
}

/// The TX ring: we produce descriptors of frames in the UMEM, the kernel consumes them.
#[derive(Debug)]
pub(super) struct TxRing {
    ring: Ring<libc::xdp_desc>,
    /// Our producer index, including descriptors written but not yet published.
    head: u32,
}

impl TxRing {
    pub(super) fn map(fd: BorrowedFd<'_>, off: &libc::xdp_ring_offset, size: u32) -> io::Result<Self> {
        let ring = Ring::map(fd, off, size, libc::XDP_PGOFF_TX_RING)?;
        let head = ring.producer().load(Ordering::Relaxed);
        Ok(TxRing { ring, head })
    }

    /// Descriptors written and not yet taken by the kernel.
    pub(super) fn pending(&self) -> u32 {
        self.head.wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    /// Entries that can be written now.
    pub(super) fn room(&self) -> u32 {
        self.ring.size - self.pending()
    }

    /// Writes a descriptor of the `len` bytes at UMEM address `addr`, for the next
    /// [`publish`](Self::publish). The caller checks [`room`](Self::room) first.
    pub(super) fn push(&mut self, addr: u64, len: u32) {
        debug_assert!(self.room() > 0);
        let entry = self.ring.entry(self.head);
        // SAFETY: the entry lies in the mapping (`Ring::entry`), and it is ours: `room` said
        // the kernel has consumed it (its Acquire load of the consumer index orders this write
        // after the kernel's read); the kernel reads it only after `publish`.
        unsafe { ptr::write(entry, libc::xdp_desc { addr, len, options: 0 }) };
        self.head = self.head.wrapping_add(1);
    }

    /// Hands the descriptors written so far to the kernel.
    pub(super) fn publish(&self) {
        self.ring.producer().store(self.head, Ordering::Release);
    }

    /// Whether the kernel asks for a `sendto` to look at the ring.
    pub(super) fn needs_wakeup(&self) -> bool {
        // Orders the producer store before this load, or a wakeup could be missed.
        atomic::fence(Ordering::SeqCst);
        // SAFETY: as in `Ring::producer`.
        let flags = unsafe { self.ring.flags.as_ref() };
        flags.load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }
}

/// The completion ring: the kernel produces the UMEM addresses of frames it has sent (or
/// dropped), we consume them.
#[derive(Debug)]
pub(super) struct CompletionRing {
    ring: Ring<u64>,
}

impl CompletionRing {
    pub(super) fn map(fd: BorrowedFd<'_>, off: &libc::xdp_ring_offset, size: u32) -> io::Result<Self> {
        let pgoff = libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t;
        Ok(CompletionRing { ring: Ring::map(fd, off, size, pgoff)? })
    }

    /// Moves every address the kernel has completed to `into`; returns how many.
    pub(super) fn take(&mut self, into: &mut Vec<u64>) -> usize {
        let tail = self.ring.consumer().load(Ordering::Relaxed);
        let head = self.ring.producer().load(Ordering::Acquire);
        let n = head.wrapping_sub(tail);
        for i in 0..n {
            // SAFETY: entries between our consumer index and the kernel's producer index were
            // written before the kernel's Release store of the latter, which the Acquire load
            // above saw; the entry lies in the mapping (`Ring::entry`).
            into.push(unsafe { ptr::read(self.ring.entry(tail.wrapping_add(i))) });
        }
        if n > 0 {
            self.ring.consumer().store(head, Ordering::Release);
        }
        n as usize
    }
}

// SAFETY: the pointers point into mappings owned by the same value, which the kernel shares
// with the socket and not with any thread; moving them to another thread changes nothing.
unsafe impl Send for TxRing {}
// SAFETY: as for `TxRing`.
unsafe impl Send for CompletionRing {}
// SAFETY: a mapping owned by one value; the pointer is only its address.
unsafe impl Send for Mapping {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anonymous_mapping_is_zeroed_and_fields_are_checked() {
        let map = Mapping::anonymous(8192).unwrap();
        assert_eq!(map.len(), 8192);
        // SAFETY: 8192 bytes were just mapped, readable.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
        assert!(bytes.iter().all(|&b| b == 0));
        assert!(map.field::<u32>(8188).is_ok());
        assert!(map.field::<u32>(8189).is_err(), "past the end");
        assert!(map.field::<u32>(2).is_err(), "misaligned");
        assert!(map.field::<u64>(u64::MAX).is_err());
    }
}
