//! Copying frames' tails into send buffers of our own (a TX ring's slots, an AF_XDP UMEM's
//! chunks) from memory that may fault.
//!
//! A target's read answers carry tails from a mapping of the disk image; a file truncated
//! under its mapping makes a plain copy of those pages raise `SIGBUS`. `process_vm_readv`
//! on our own process answers `EFAULT` there instead, so the frame whose tail cannot be read
//! is lost, as on the wire, and nothing crashes. Tails that follow each other in memory (the
//! answers to one read) are read as one piece, so that the kernel pins their pages in one go.

// Calls the kernel with pointers; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;

/// Most iovecs `process_vm_readv` takes on each side (`UIO_MAXIOV`): the most tails one
/// [`TailCopies`] holds.
pub(crate) const MAX_IOVECS: usize = 1024;

/// Tails waiting to be copied, each to its place in a send buffer, on behalf of a frame the
/// caller numbers. The vectors are allocated once and reused.
#[derive(Debug)]
pub(crate) struct TailCopies {
    to: Vec<libc::iovec>,
    from: Vec<libc::iovec>,
    owner: Vec<usize>,
    /// The sources of one copy, merged where tails follow each other.
    merged: Vec<libc::iovec>,
}

// SAFETY: the iovecs are plain addresses, only dereferenced by the kernel within
// `copy_all`, whose caller vouches for them; between calls they are scratch.
unsafe impl Send for TailCopies {}

impl TailCopies {
    pub(crate) fn new() -> Self {
        TailCopies {
            to: Vec::with_capacity(MAX_IOVECS),
            from: Vec::with_capacity(MAX_IOVECS),
            owner: Vec::with_capacity(MAX_IOVECS),
            merged: Vec::with_capacity(MAX_IOVECS),
        }
    }

    /// True when [`MAX_IOVECS`] tails wait: copy them before staging more.
    pub(crate) fn is_full(&self) -> bool {
        self.to.len() >= MAX_IOVECS
    }

    /// Stages `tail` (not empty) to be copied to `dst`, for frame `owner`.
    pub(crate) fn push(&mut self, dst: *mut u8, tail: &[u8], owner: usize) {
        debug_assert!(!self.is_full());
        self.to.push(libc::iovec { iov_base: dst.cast(), iov_len: tail.len() });
        self.from.push(libc::iovec { iov_base: tail.as_ptr().cast_mut().cast(), iov_len: tail.len() });
        self.owner.push(owner);
    }

    /// Copies every staged tail to its place and forgets them; calls `failed(owner)` for
    /// each frame whose tail could not be read (its place then holds part of it, or nothing).
    ///
    /// # Safety
    ///
    /// Every `dst` given to [`push`](Self::push) since the last call must be valid for writes
    /// of its tail's length, and touched by nothing else until this returns.
    pub(crate) unsafe fn copy_all(&mut self, mut failed: impl FnMut(usize)) {
        let mut start = 0;
        while start < self.to.len() {
            self.merged.clear();
            for v in &self.from[start..] {
                match self.merged.last_mut() {
                    Some(last) if last.iov_base.wrapping_byte_add(last.iov_len) == v.iov_base => {
                        last.iov_len += v.iov_len;
                    }
                    _ => self.merged.push(*v),
                }
            }
            let to = &self.to[start..];
            // SAFETY: the destinations are what the caller vouches for.
            let copied = unsafe { read_own_memory(to, &self.merged) }.unwrap_or(0);
            // The first tail not copied whole could not be read: its frame fails, and the
            // copy goes on after it.
            let mut left = copied;
            let Some(at) = to.iter().position(|v| match left.checked_sub(v.iov_len) {
                Some(rest) => {
                    left = rest;
                    false
                }
                None => true,
            }) else {
                break;
            };
            failed(self.owner[start + at]);
            start += at + 1;
        }
        self.to.clear();
        self.from.clear();
        self.owner.clear();
    }
}

/// Copies, within this process, the bytes of `from` in order into those of `to` (as many in
/// all; the pieces need not match) with `process_vm_readv`, which answers `EFAULT` where a
/// plain copy would raise `SIGBUS` (a mapping whose file shrank). Returns the bytes copied:
/// fewer than asked when it stopped at memory it could not read, then or within a piece.
///
/// # Safety
///
/// Every `to[i]` must be valid for writes of its length and touched by nothing else during
/// the call; `from` may point anywhere (unreadable memory is reported, not touched).
unsafe fn read_own_memory(to: &[libc::iovec], from: &[libc::iovec]) -> io::Result<usize> {
    debug_assert!(to.len() <= MAX_IOVECS && from.len() <= MAX_IOVECS);
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: both arrays are live for the call; the kernel writes only the local buffers,
    // which the caller vouches for, and reads the remote ones through the page tables,
    // failing with EFAULT rather than faulting.
    let r = unsafe {
        libc::process_vm_readv(
            pid,
            to.as_ptr(),
            to.len() as libc::c_ulong,
            from.as_ptr(),
            from.len() as libc::c_ulong,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Checks that `process_vm_readv` works here (a seccomp filter may refuse it): without it
/// every frame with a tail would be lost.
pub(crate) fn probe() -> io::Result<()> {
    let src = [0x5au8; 8];
    let mut dst = [0u8; 8];
    let to = [libc::iovec { iov_base: dst.as_mut_ptr().cast(), iov_len: dst.len() }];
    let from = [libc::iovec { iov_base: src.as_ptr().cast_mut().cast(), iov_len: src.len() }];
    // SAFETY: `dst` is a live local that nothing else touches during the call.
    let n = unsafe { read_own_memory(&to, &from) }?;
    if n != src.len() || dst != src {
        return Err(io::Error::other("process_vm_readv copied the wrong bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_land_and_an_unreadable_one_fails_alone() {
        probe().unwrap();
        let source: Vec<u8> = (0..64u8).collect();
        let mut dst = vec![0u8; 64];
        let mut copies = TailCopies::new();
        // Two adjacent tails (merged into one source), a gap, then an unreadable one, then a
        // last one after it.
        copies.push(dst.as_mut_ptr(), &source[0..8], 0);
        copies.push(dst[8..].as_mut_ptr(), &source[8..16], 1);
        copies.push(dst[16..].as_mut_ptr(), &source[32..40], 2);
        // A page no one may read, as a mapping whose file shrank is.
        // SAFETY: an anonymous mapping with no address asked for; unmapped below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        // SAFETY: the slice lies within the mapping, which lives until the end of the test;
        // only the kernel is handed it, and it reports it unreadable.
        let bad = unsafe { std::slice::from_raw_parts(page.cast::<u8>(), 8) };
        copies.push(dst[24..].as_mut_ptr(), bad, 3);
        copies.push(dst[32..].as_mut_ptr(), &source[48..56], 4);
        let mut failed = Vec::new();
        // SAFETY: every destination is within `dst`, which nothing else touches.
        unsafe { copies.copy_all(|owner| failed.push(owner)) };
        assert_eq!(failed, [3]);
        assert_eq!(&dst[..16], &source[..16]);
        assert_eq!(&dst[16..24], &source[32..40]);
        assert_eq!(&dst[32..40], &source[48..56]);
        assert!(!copies.is_full());
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(page, 4096) };
    }
}
