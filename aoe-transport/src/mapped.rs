//! Frames whose data the kernel takes straight from a file's pages: a [`MappedFile`] and the
//! [`Tail`]s that point into it.
//!
//! A target answering a read would otherwise copy sectors twice: from the page cache into a
//! frame buffer (`pread`), and from that buffer into the kernel's packet (`sendmsg`). With the
//! file mapped, an answer is sent as two pieces, its headers from a [`FrameBatch`] slot and
//! its sectors from the mapping, and the kernel copies the sectors once, from the page cache
//! into the packet, with no `pread` at all.
//!
//! The mapping is only ever read by the kernel (through `sendmsg`) on the fast path. A file
//! truncated under it then makes that send fail with `EFAULT` instead of raising `SIGBUS`.
//!
//! [`FrameBatch`]: crate::FrameBatch

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;

/// A read-only, shared mapping of the first `len` bytes of a file or block device.
///
/// Its contents change as the file does (writes through the file descriptor land in the same
/// page cache), so no Rust reference to them is ever made: they are handed to the kernel by
/// address, or copied out with [`Tail::copy_to`].
pub struct MappedFile {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value until it is dropped; it is never
// written through this value, and reads of it go through raw pointers only.
unsafe impl Send for MappedFile {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps the first `len` bytes of `file` (which must be open for reading).
    ///
    /// Fails for an empty length, a length the address space cannot hold, and files the
    /// kernel cannot map (pipes, some character devices); callers fall back to `pread`.
    pub fn map(file: &File, len: u64) -> io::Result<Arc<MappedFile>> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= isize::MAX as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("cannot map {len} bytes")))?;
        // SAFETY: a new shared read-only mapping of a descriptor we hold; the kernel checks
        // the arguments and the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Arc::new(MappedFile { ptr, len }))
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is mapped (never, for a value [`map`](Self::map) returned).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; no Tail outlives the Arc holding
        // this value, so nothing points into it any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl core::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MappedFile").field("len", &self.len).finish()
    }
}

/// `len` bytes at `offset` of a [`MappedFile`]: the data part of a frame sent by
/// [`Transport::send_with_tails`](crate::Transport::send_with_tails). Holding a tail keeps
/// the mapping alive.
#[derive(Clone)]
pub struct Tail {
    map: Arc<MappedFile>,
    offset: usize,
    len: usize,
}

impl Tail {
    /// The bytes `[offset, offset + len)` of `map`, or `None` when they are not all inside it.
    pub fn new(map: &Arc<MappedFile>, offset: u64, len: usize) -> Option<Tail> {
        let offset = usize::try_from(offset).ok()?;
        (offset.checked_add(len)? <= map.len).then(|| Tail { map: Arc::clone(map), offset, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a tail of no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tail's address, for the kernel to read from. Valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.map.ptr.as_ptr().wrapping_add(self.offset)
    }

    /// Copies the tail into `dst`, which must be [`len`](Self::len) bytes long.
    ///
    /// Unlike a send, this reads the mapping in this process: if the file was truncated
    /// under it, the process gets `SIGBUS`. Transports that hand frames to the kernel send
    /// tails without copying them.
    ///
    /// # Panics
    ///
    /// If `dst.len() != self.len()`.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(dst.len(), self.len, "tail of {} bytes copied into {} bytes", self.len, dst.len());
        // SAFETY: `offset + len <= map.len` (checked in `new`) and the mapping lives as long
        // as `self.map`; `dst` is a distinct, writable buffer of `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), dst.as_mut_ptr(), self.len) }
    }
}

impl core::fmt::Debug for Tail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tail").field("offset", &self.offset).field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(bytes: &[u8]) -> (std::path::PathBuf, File) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("aoe-mapped-{}-{n}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(bytes).unwrap();
        (path, f)
    }

    #[test]
    fn tails_read_the_file_and_follow_its_writes() {
        use std::os::unix::fs::FileExt;
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let (path, file) = temp_file(&data);
        let map = MappedFile::map(&file, data.len() as u64).unwrap();
        assert_eq!(map.len(), 8192);
        let tail = Tail::new(&map, 1000, 3000).unwrap();
        let mut out = vec![0; 3000];
        tail.copy_to(&mut out);
        assert_eq!(out, data[1000..4000]);
        // A write through the descriptor is what the mapping shows next.
        file.write_all_at(&[0xAB; 10], 1000).unwrap();
        tail.copy_to(&mut out);
        assert_eq!(out[..10], [0xAB; 10]);
        assert_eq!(out[10..], data[1010..4000]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn tails_stay_inside_the_mapping() {
        let (path, file) = temp_file(&[1; 4096]);
        let map = MappedFile::map(&file, 4096).unwrap();
        assert!(Tail::new(&map, 0, 4096).is_some());
        assert!(Tail::new(&map, 4096, 0).is_some());
        assert!(Tail::new(&map, 1, 4096).is_none());
        assert!(Tail::new(&map, 4097, 0).is_none());
        assert!(Tail::new(&map, u64::MAX, 2).is_none());
        assert!(Tail::new(&map, 2, usize::MAX).is_none());
        assert!(MappedFile::map(&file, 0).is_err(), "an empty mapping");
        std::fs::remove_file(path).unwrap();
    }
}
