//! A backend's bytes as a file mapping: a [`MappedFile`] and the [`Tail`]s that point into it,
//! so that read answers are sent from the page cache without a copy of their own.
//!
//! A target answering a read would otherwise copy sectors twice: from the page cache into a
//! frame buffer (`pread`), and from that buffer into the kernel's packet (`sendmsg`). With the
//! file mapped, an answer is sent as two pieces, its headers from a frame buffer and its
//! sectors from the mapping ([`Tail::bytes`], handed to
//! [`Transport::send_with_tails`](aoe_transport::Transport::send_with_tails)), and the kernel
//! copies the sectors once, from the page cache into the packet, with no `pread` at all.
//!
//! The mapping is only ever read by the kernel (through `sendmsg`) on the fast path. A file
//! truncated under it then makes that send fail with `EFAULT` instead of raising `SIGBUS`;
//! a transport that copies tails itself (the in-memory link) reads it in this process.

// mmap, munmap and reading the mapping: the only unsafe code of the crate's I/O path.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;

/// A read-only, shared mapping of the first `len` bytes of a file or block device.
///
/// Its contents change as the file does: writes through the file descriptor land in the same
/// page cache. The bytes a [`Tail`] lends ([`Tail::bytes`]) are therefore only stable while
/// nothing writes those sectors; the server sends its read answers before it handles a
/// write ([`Received::writes_sectors`](crate::export::Received::writes_sectors)).
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

/// `len` bytes at `offset` of a [`MappedFile`]: the data part of a read answer, sent by
/// [`Transport::send_with_tails`](aoe_transport::Transport::send_with_tails) as
/// [`bytes`](Self::bytes). Holding a tail keeps the mapping alive.
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

    /// The tail's bytes, to hand to a transport.
    ///
    /// They are the file's page cache: a write to these sectors (through the backend, or by
    /// another process) shows in them, and reading them in this process after the file was
    /// truncated below them raises `SIGBUS`. Transports that send through the kernel only
    /// pass their address on.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `offset + len <= map.len` (checked in `new`), the mapping is readable and
        // lives as long as `self.map`, which `self` holds while the slice is borrowed. Its
        // bytes are never written through this process's memory (the mapping is read-only),
        // only through the file, like any shared file mapping's.
        unsafe { std::slice::from_raw_parts(self.map.ptr.as_ptr().add(self.offset), self.len) }
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
        assert_eq!(tail.len(), 3000);
        assert_eq!(tail.bytes(), &data[1000..4000]);
        // A write through the descriptor is what the mapping shows next.
        file.write_all_at(&[0xAB; 10], 1000).unwrap();
        let out = tail.bytes().to_vec();
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
