//! Where an export's sectors live: a file or block device, memory, or an NBD server
//! ([`nbd`]), behind positional I/O.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use aoe_proto::SECTOR_SIZE;

mod mapped;
pub mod nbd;

pub use mapped::{MappedFile, Tail};

/// Positional byte storage behind an export. Offsets are relative to the export's start.
///
/// Implementations are shared between threads and must be safe for concurrent calls.
pub trait Backend: Send + Sync {
    /// Size in bytes.
    fn len(&self) -> u64;
    /// True when the backend holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`. Fails on any short read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes `bufs` one after another from `offset`, as one [`write_at`](Self::write_at)
    /// of their concatenation would: all of it, or an error. A range that runs past the end
    /// is refused whole, before anything is written; after any other error, some of the
    /// bytes may have been written. The default checks the range, then writes each buffer
    /// with `write_at`; stores that can take several buffers in one call do so.
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        check_range(offset, total_len(bufs), self.len())?;
        write_each(self, bufs, offset)
    }
    /// Makes written data durable.
    fn flush(&self) -> io::Result<()>;
    /// Looks again at how many bytes the store holds, for stores that can shrink under a
    /// running target (a file truncated by someone else), and returns [`len`](Self::len) as
    /// it is now: never more than at the start. The default changes nothing.
    fn refresh_len(&self) -> io::Result<u64> {
        Ok(self.len())
    }
    /// The backend's bytes as a file mapping, with the offset of byte 0 within it, when it
    /// has one: reads can then be answered from the mapping without copying
    /// ([`SectorIo::tail`](crate::export::SectorIo::tail)). What the mapping shows must
    /// always equal what [`read_at`](Self::read_at) would return.
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        None
    }
    /// True when the storage itself refuses writes (an NBD export the server offers
    /// read-only): the export is then served read-only whatever it was told.
    fn read_only(&self) -> bool {
        false
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        (**self).write_vectored_at(bufs, offset)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn refresh_len(&self) -> io::Result<u64> {
        (**self).refresh_len()
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        (**self).mapping()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        (**self).write_vectored_at(bufs, offset)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn refresh_len(&self) -> io::Result<u64> {
        (**self).refresh_len()
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        (**self).mapping()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
}

/// No such bytes: `UnexpectedEof`, which an answer reports as IDNF (no such sector).
fn out_of_range(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("I/O of {len} bytes at offset {offset} is outside the {size}-byte export"),
    )
}

/// [`Backend::write_vectored_at`] as one `write_at` per buffer.
fn write_each<B: Backend + ?Sized>(backend: &B, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
    let mut at = offset;
    for buf in bufs {
        backend.write_at(buf, at)?;
        at += buf.len() as u64;
    }
    Ok(())
}

/// The bytes of `bufs` together; `usize::MAX` when they would overflow it, which no range
/// holds.
fn total_len(bufs: &[&[u8]]) -> usize {
    bufs.iter().try_fold(0usize, |sum, buf| sum.checked_add(buf.len())).unwrap_or(usize::MAX)
}

fn check_range(offset: u64, len: usize, size: u64) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(out_of_range(offset, len, size)),
    }
}

/// An export held in memory (tests, benches, the demo disk).
#[derive(Debug)]
pub struct MemoryBackend {
    data: RwLock<Box<[u8]>>,
    /// The data's length, which never changes: read without the lock.
    len: u64,
}

impl MemoryBackend {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        Self::from_vec(vec![0; len])
    }
    /// The given bytes.
    pub fn from_vec(data: Vec<u8>) -> Self {
        let len = data.len() as u64;
        MemoryBackend { data: RwLock::new(data.into_boxed_slice()), len }
    }
    /// A copy of the contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).to_vec()
    }
}

impl Backend for MemoryBackend {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        check_range(offset, buf.len(), data.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        check_range(offset, buf.len(), data.len() as u64)?;
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    /// One lock for all the buffers: no reader sees some of them written and not the rest.
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        check_range(offset, total_len(bufs), data.len() as u64)?;
        let mut start = offset as usize;
        for buf in bufs {
            data[start..start + buf.len()].copy_from_slice(buf);
            start += buf.len();
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A window `[offset, offset + len)` of another backend, as vblade's `-o`/`-l` export part
/// of a file. Every access is checked against the window, whatever the caller checked.
#[derive(Debug)]
pub struct Window<B> {
    inner: B,
    offset: u64,
    len: u64,
}

impl<B: Backend> Window<B> {
    /// The bytes `[offset, offset + len)` of `inner`; `len = None` runs to its end.
    pub fn new(inner: B, offset: u64, len: Option<u64>) -> Result<Self, WindowError> {
        let size = inner.len();
        if offset > size {
            return Err(WindowError::OffsetBeyondEnd { offset, size });
        }
        let len = len.unwrap_or(size - offset);
        if len > size - offset {
            return Err(WindowError::LengthBeyondEnd { offset, len, size });
        }
        Ok(Window { inner, offset, len })
    }
    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

/// Why a window does not fit its backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The offset is past the end.
    #[error("offset of {offset} bytes is beyond the end of the {size}-byte file")]
    OffsetBeyondEnd {
        /// Requested offset.
        offset: u64,
        /// Backend size.
        size: u64,
    },
    /// The window runs past the end.
    #[error("length of {len} bytes at offset {offset} runs past the end of the {size}-byte file")]
    LengthBeyondEnd {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Backend size.
        size: u64,
    },
}

impl<B: Backend> Backend for Window<B> {
    /// The window's length, or less once the backend under it has shrunk into it.
    fn len(&self) -> u64 {
        self.len.min(self.inner.len().saturating_sub(self.offset))
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len())?;
        self.inner.read_at(buf, self.offset + offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len())?;
        self.inner.write_at(buf, self.offset + offset)
    }
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        check_range(offset, total_len(bufs), self.len())?;
        self.inner.write_vectored_at(bufs, self.offset + offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn refresh_len(&self) -> io::Result<u64> {
        self.inner.refresh_len()?;
        Ok(self.len())
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        self.inner.mapping().map(|(map, start)| (map, start + self.offset))
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
}

/// How to open a file or block device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Open read-only.
    pub read_only: bool,
    /// O_DIRECT: bypass the page cache (vblade `-d`).
    pub direct: bool,
    /// O_SYNC: every write is durable when answered (vblade `-s`).
    pub sync: bool,
}

/// A regular file or block device, accessed with pread/pwrite, and mapped for answering
/// reads without a copy unless it was opened for direct I/O.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    /// Bytes the file holds now, as last looked at ([`Backend::refresh_len`]): the size at
    /// the start, or less once the file was truncated under the export.
    len: AtomicU64,
    /// The size at the start: a file that grows later is not exported further.
    opened_len: u64,
    /// With O_DIRECT: the alignment the file wants.
    direct: Option<DirectAlignment>,
    /// Held exclusively by a write that reads, changes and writes back a span wider than
    /// itself (O_DIRECT with a block wider than a sector), shared by every other write, so
    /// that no write lands inside that span meanwhile and is undone by its write-back.
    widened_writes: RwLock<()>,
    map: Option<Arc<MappedFile>>,
}

/// Alignment of offsets, lengths and buffers of O_DIRECT transfers when the kernel does not
/// say what the file needs: the largest logical block size in use. Buffers are always
/// aligned at least this much.
const DIRECT_ALIGN: usize = 4096;
/// Largest alignment taken from the kernel; a larger figure is not believed.
const MAX_DIRECT_ALIGN: usize = 1 << 20;

/// What O_DIRECT needs of a file's transfers, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectAlignment {
    /// Of file offsets and lengths.
    pub offset: usize,
    /// Of memory buffers.
    pub memory: usize,
}

thread_local! {
    /// Each thread's O_DIRECT bounce buffer, kept between calls.
    static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl FileBackend {
    /// True when the file is a block device (a disk, not a file the page cache holds).
    pub fn is_block_device(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.file.metadata().is_ok_and(|m| m.file_type().is_block_device())
    }

    /// Opens `path`; the size comes from the file or device itself.
    pub fn open(path: &Path, options: FileOptions) -> io::Result<Self> {
        let mut flags = 0;
        if options.direct {
            flags |= libc::O_DIRECT;
        }
        if options.sync {
            flags |= libc::O_SYNC;
        }
        let mut file =
            OpenOptions::new().read(true).write(!options.read_only).custom_flags(flags).open(path)?;
        // Seeking to the end gives the size of regular files and block devices alike.
        let len = file.seek(SeekFrom::End(0))?;
        // Direct I/O bypasses the page cache, which is what a mapping shows. Files that cannot
        // be mapped are still served, through pread.
        let map = if options.direct { None } else { MappedFile::map(&file, len).ok() };
        let direct = options.direct.then(|| direct_alignment(&file));
        Ok(FileBackend {
            file,
            len: AtomicU64::new(len),
            opened_len: len,
            direct,
            widened_writes: RwLock::new(()),
            map,
        })
    }

    /// With O_DIRECT, the alignment transfers use: what the kernel says the file needs (a
    /// sector of offset and length, on most disks), else 4096 bytes.
    pub fn direct_alignment(&self) -> Option<DirectAlignment> {
        self.direct
    }

    /// Runs `f` on an aligned buffer spanning `[offset, offset + len)` widened to multiples
    /// of `align.offset`, with the span's start and where the asked bytes begin within it.
    fn bounce<R>(
        align: DirectAlignment,
        offset: u64,
        len: usize,
        f: impl FnOnce(&mut [u8], u64, usize) -> io::Result<R>,
    ) -> io::Result<R> {
        let wide = align.offset as u64;
        let start = offset / wide * wide;
        let end = (offset + len as u64).div_ceil(wide) * wide;
        let span = (end - start) as usize;
        let memory = align.memory.max(align.offset).max(DIRECT_ALIGN);
        BOUNCE.with_borrow_mut(|raw| {
            if raw.len() < span + memory {
                raw.resize(span + memory, 0);
            }
            let skew = raw.as_ptr().align_offset(memory);
            f(&mut raw[skew..skew + span], start, (offset - start) as usize)
        })
    }
}

/// What O_DIRECT needs of `file`: `statx`'s `STATX_DIOALIGN`, else, for a block device, its
/// logical block size, else [`DIRECT_ALIGN`].
// statx and ioctl have no safe wrappers in std.
#[allow(unsafe_code)]
fn direct_alignment(file: &File) -> DirectAlignment {
    use std::os::fd::AsRawFd;
    let usable = |a: u32| a.is_power_of_two() && a as usize <= MAX_DIRECT_ALIGN;
    let fallback = DirectAlignment { offset: DIRECT_ALIGN, memory: DIRECT_ALIGN };
    // SAFETY: all zeros is a valid statx; the kernel fills it for the descriptor (empty path
    // with AT_EMPTY_PATH) and reads nothing from it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_DIOALIGN | libc::STATX_TYPE;
    // SAFETY: a valid descriptor, a NUL-terminated empty path and a live statx to fill.
    let r = unsafe { libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, mask, &mut stx) };
    if r != 0 {
        return fallback;
    }
    let (offset, memory) = (stx.stx_dio_offset_align, stx.stx_dio_mem_align);
    if stx.stx_mask & libc::STATX_DIOALIGN != 0 && usable(offset) && usable(memory) {
        return DirectAlignment { offset: offset as usize, memory: memory as usize };
    }
    let block_device = u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFBLK;
    let mut logical: libc::c_int = 0;
    // SAFETY: BLKSSZGET on a block device writes one int, to the live `logical`.
    if block_device && unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut logical) } == 0 {
        if let Ok(logical) = u32::try_from(logical) {
            if usable(logical) {
                return DirectAlignment { offset: logical as usize, memory: logical as usize };
            }
        }
    }
    fallback
}

impl Backend for FileBackend {
    fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let len = self.len();
        check_range(offset, buf.len(), len)?;
        let Some(align) = self.direct else {
            let read = self.file.read_exact_at(buf, offset);
            if read.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::UnexpectedEof) {
                // The file ended early: it was truncated. Later requests see its new size.
                let _ = self.refresh_len();
            }
            return read;
        };
        Self::bounce(align, offset, buf.len(), |aligned, start, skip| {
            read_direct(&self.file, aligned, start, len)?;
            buf.copy_from_slice(&aligned[skip..skip + buf.len()]);
            Ok(())
        })
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let len = self.len();
        check_range(offset, buf.len(), len)?;
        let Some(align) = self.direct else {
            return self.file.write_all_at(buf, offset);
        };
        Self::bounce(align, offset, buf.len(), |aligned, start, skip| {
            let widened = skip != 0 || aligned.len() != buf.len();
            // A poisoned lock guards nothing but the order of writes: go on.
            let (_alone, _beside) = match widened {
                true => (Some(self.widened_writes.write().unwrap_or_else(|e| e.into_inner())), None),
                false => (None, Some(self.widened_writes.read().unwrap_or_else(|e| e.into_inner()))),
            };
            if widened {
                read_direct(&self.file, aligned, start, len)?;
            }
            aligned[skip..skip + buf.len()].copy_from_slice(buf);
            let keep = aligned.len().min((len - start) as usize);
            self.file.write_all_at(&aligned[..keep.div_ceil(SECTOR_SIZE) * SECTOR_SIZE], start)
        })
    }
    /// With `pwritev`: one system call for up to 1024 buffers. With O_DIRECT the
    /// kernel takes the buffers as they are only when the offset, every length and every
    /// buffer are aligned as the file wants; otherwise each goes through
    /// [`write_at`](Backend::write_at)'s aligned bounce buffer, as it would alone.
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        check_range(offset, total_len(bufs), self.len())?;
        let Some(align) = self.direct else {
            return pwritev_all(&self.file, bufs, offset);
        };
        let aligned = offset % align.offset as u64 == 0
            && bufs
                .iter()
                .all(|buf| buf.len() % align.offset == 0 && buf.as_ptr().align_offset(align.memory) == 0);
        if !aligned {
            return write_each(self, bufs, offset);
        }
        // Whole blocks, so never widened; but no widened write may land among them meanwhile.
        let _beside = self.widened_writes.read().unwrap_or_else(|e| e.into_inner());
        pwritev_all(&self.file, bufs, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    /// A regular file's size now (block devices do not shrink), capped at the size at the
    /// start.
    fn refresh_len(&self) -> io::Result<u64> {
        let meta = self.file.metadata()?;
        if meta.is_file() {
            self.len.store(meta.len().min(self.opened_len), Ordering::Relaxed);
        }
        Ok(self.len())
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        self.map.as_ref().map(|map| (map, 0))
    }
}

/// Most buffers one `pwritev` takes (Linux's `UIO_MAXIOV`; more fail with EINVAL).
const IOV_MAX: usize = 1024;

/// Writes `bufs` one after another from `offset`, in as many `pwritev` calls as it takes:
/// [`IOV_MAX`] buffers at most each, and again from where a short write stopped.
// pwritev has no wrapper in std (FileExt has no vectored positional write).
#[allow(unsafe_code)]
fn pwritev_all(file: &File, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    // On the stack (16 KiB): no allocation per call.
    let mut iov = [empty; IOV_MAX];
    // The first byte not written yet: byte `skip` of buffer `next`, at `at` in the file.
    let (mut next, mut skip, mut at) = (0, 0, offset);
    loop {
        // Empty buffers (or the written part of one) take no iovec: a call then always has a
        // byte to write, and a return of 0 is a failure, not the end.
        while next < bufs.len() && skip == bufs[next].len() {
            (next, skip) = (next + 1, 0);
        }
        let Some(rest) = bufs.get(next..).filter(|rest| !rest.is_empty()) else { return Ok(()) };
        let count = rest.len().min(IOV_MAX);
        for (v, buf) in iov.iter_mut().zip(&rest[..count]) {
            *v = libc::iovec { iov_base: buf.as_ptr().cast_mut().cast(), iov_len: buf.len() };
        }
        let first = &rest[0][skip..];
        iov[0] = libc::iovec { iov_base: first.as_ptr().cast_mut().cast(), iov_len: first.len() };
        let pos = libc::off_t::try_from(at).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the first `count` iovecs point at live buffers of their lengths, borrowed for
        // the call; pwritev only reads them.
        let written = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), count as libc::c_int, pos) };
        let mut written = match written {
            n if n > 0 => n as usize,
            0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => continue,
                e => return Err(e),
            },
        };
        at += written as u64;
        while written > 0 && next < bufs.len() {
            let left = bufs[next].len() - skip;
            if written < left {
                skip += written;
                break;
            }
            written -= left;
            (next, skip) = (next + 1, 0);
        }
    }
}

/// Reads an aligned span, tolerating the end of the file inside it.
fn read_direct(file: &File, aligned: &mut [u8], start: u64, size: u64) -> io::Result<()> {
    let want = aligned.len().min(size.saturating_sub(start) as usize);
    let mut done = 0;
    while done < want {
        match file.read_at(&mut aligned[done..], start + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if done < want {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read from export"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_backend_bounds() {
        let m = MemoryBackend::new(1024);
        m.write_at(&[7; 512], 512).unwrap();
        let mut buf = [0; 512];
        m.read_at(&mut buf, 512).unwrap();
        assert_eq!(buf, [7; 512]);
        assert!(m.read_at(&mut buf, 513).is_err());
        assert!(m.write_at(&buf, u64::MAX).is_err());
    }

    #[test]
    fn window_confines_io() {
        let m = MemoryBackend::new(4096);
        let w = Window::new(m, 1024, Some(1024)).unwrap();
        assert_eq!(w.len(), 1024);
        w.write_at(&[1; 1024], 0).unwrap();
        assert!(w.write_at(&[1; 1], 1024).is_err());
        let all = w.inner().snapshot();
        assert!(all[..1024].iter().all(|&b| b == 0));
        assert!(all[1024..2048].iter().all(|&b| b == 1));
        assert!(all[2048..].iter().all(|&b| b == 0));
        assert!(matches!(
            Window::new(MemoryBackend::new(10), 11, None),
            Err(WindowError::OffsetBeyondEnd { .. })
        ));
        assert!(matches!(
            Window::new(MemoryBackend::new(10), 5, Some(6)),
            Err(WindowError::LengthBeyondEnd { .. })
        ));
    }

    /// Regression: with O_DIRECT and a block wider than a sector, a write reads its block,
    /// changes its sectors and writes the block back; two such writes to one block at once
    /// (I/O threads) lost one of them.
    #[test]
    fn widened_direct_writes_to_one_block_do_not_undo_each_other() {
        let path = std::env::temp_dir().join(format!("aoe-backend-widened-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 32 * 1024]).unwrap();
        let opts = FileOptions { direct: true, ..Default::default() };
        let mut f = match FileBackend::open(&path, opts) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                std::fs::remove_file(&path).unwrap();
                return;
            }
            Err(e) => panic!("{e}"),
        };
        // As on a disk with 4 KiB logical blocks: every sector write is widened.
        f.direct = Some(DirectAlignment { offset: 4096, memory: 4096 });
        let sectors = 64u64;
        let rounds = 40u8;
        std::thread::scope(|scope| {
            for parity in 0..2u64 {
                let f = &f;
                scope.spawn(move || {
                    for round in 1..=rounds {
                        for sector in (parity..sectors).step_by(2) {
                            f.write_at(&[round; 512], sector * 512).unwrap();
                        }
                    }
                });
            }
        });
        let mut all = vec![0u8; (sectors * 512) as usize];
        f.read_at(&mut all, 0).unwrap();
        let lost: Vec<usize> = (0..sectors as usize).filter(|&i| all[i * 512] != rounds).collect();
        std::fs::remove_file(&path).unwrap();
        assert!(lost.is_empty(), "sectors whose last write was undone: {lost:?}");
    }

    #[test]
    fn direct_alignment_is_what_the_kernel_says_or_4096() {
        let path = std::env::temp_dir().join(format!("aoe-backend-align-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let file = File::open(&path).unwrap();
        let a = direct_alignment(&file);
        std::fs::remove_file(&path).unwrap();
        eprintln!("O_DIRECT alignment of {}: {a:?}", path.display());
        assert!(a.offset.is_power_of_two() && a.offset >= 1 && a.offset <= MAX_DIRECT_ALIGN, "{a:?}");
        assert!(a.memory.is_power_of_two() && a.memory <= MAX_DIRECT_ALIGN, "{a:?}");
    }

    /// More buffers than one pwritev takes, of lengths that are not multiples of anything,
    /// land one after another; a range past the end is refused whole; a window shifts and
    /// bounds them. With O_DIRECT, unaligned buffers (as sectors in received frames are)
    /// take the bounce buffer, aligned ones go as they are.
    #[test]
    fn vectored_file_writes_land_in_order() {
        let image = aoe_testkit::data::TempImage::zeroed(256 * 1024).unwrap();
        let pieces: Vec<Vec<u8>> = (0..1500).map(|i| vec![(i % 251) as u8 + 1; 1 + i % 7]).collect();
        let bufs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let joined = bufs.concat();
        assert!(bufs.len() > IOV_MAX && joined.len() < 8192);
        let f = FileBackend::open(image.path(), FileOptions::default()).unwrap();
        f.write_vectored_at(&bufs, 1000).unwrap();
        let all = image.read_all();
        assert!(all[..1000].iter().all(|&b| b == 0));
        assert!(all[1000..1000 + joined.len()] == joined[..], "every buffer, in order");
        assert!(all[1000 + joined.len()..].iter().all(|&b| b == 0));
        // Ends one byte past the end: nothing written.
        let end = f.len() - joined.len() as u64 + 1;
        assert_eq!(f.write_vectored_at(&bufs, end).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(image.read_all()[128 * 1024..].iter().all(|&b| b == 0), "nothing of a refused write");

        let w = Window::new(f, 64 * 1024, Some(16 * 1024)).unwrap();
        let over = [&[7u8; 8192][..], &[8u8; 8192][..], &[9u8; 1][..]];
        assert!(w.write_vectored_at(&over, 0).is_err(), "past the window's end");
        assert!(image.read_all()[64 * 1024..96 * 1024].iter().all(|&b| b == 0), "refused whole");
        w.write_vectored_at(&over[..2], 0).unwrap();
        let all = image.read_all();
        assert!(all[64 * 1024..72 * 1024].iter().all(|&b| b == 7));
        assert!(all[72 * 1024..80 * 1024].iter().all(|&b| b == 8));
        assert!(all[80 * 1024..].iter().all(|&b| b == 0), "nothing past the window");

        let direct = match FileBackend::open(image.path(), FileOptions { direct: true, ..Default::default() })
        {
            Ok(f) => f,
            // tmpfs does not take O_DIRECT on older kernels
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("{e}"),
        };
        let align = direct.direct_alignment().unwrap();
        // Sectors 36 bytes into a buffer, as in a received frame: not aligned.
        let frame = [vec![0u8; 36], vec![0x5a; 1024]].concat();
        let unaligned = [&frame[36..36 + 512], &frame[36 + 512..]];
        direct.write_vectored_at(&unaligned, 512 * 3).unwrap();
        assert!(image.read_at(512 * 3, 1024).unwrap().iter().all(|&b| b == 0x5a));
        let memory = align.memory.max(align.offset);
        let mut raw = vec![0x6bu8; 2 * align.offset + memory];
        let skew = raw.as_ptr().align_offset(memory);
        let block = &mut raw[skew..skew + 2 * align.offset];
        block[align.offset..].fill(0x6c);
        let (one, two) = block.split_at(align.offset);
        direct.write_vectored_at(&[one, two], 2 * align.offset as u64).unwrap();
        let back = image.read_at(2 * align.offset as u64, 2 * align.offset).unwrap();
        assert!(
            back[..align.offset].iter().all(|&b| b == 0x6b)
                && back[align.offset..].iter().all(|&b| b == 0x6c)
        );
    }

    #[test]
    fn file_backend_plain_and_direct() {
        let dir = std::env::temp_dir().join(format!("aoe-backend-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 64 * 1024]).unwrap();
        for direct in [false, true] {
            let opts = FileOptions { direct, ..Default::default() };
            let f = match FileBackend::open(&dir, opts) {
                Ok(f) => f,
                // tmpfs does not take O_DIRECT on older kernels
                Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => continue,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(f.len(), 64 * 1024);
            let data: Vec<u8> = (0..1536).map(|i| (i % 251) as u8 ^ direct as u8).collect();
            f.write_at(&data, 512 * 7).unwrap();
            let mut back = vec![0; 1536];
            f.read_at(&mut back, 512 * 7).unwrap();
            assert_eq!(back, data);
            f.flush().unwrap();
            assert!(f.read_at(&mut back, 64 * 1024 - 512).is_err());
        }
        std::fs::remove_file(&dir).unwrap();
    }
}
