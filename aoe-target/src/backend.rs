//! Where an export's sectors live: a file or block device, or memory, behind positional I/O.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use aoe_proto::SECTOR_SIZE;
use aoe_transport::MappedFile;

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
    /// Makes written data durable.
    fn flush(&self) -> io::Result<()>;
    /// The backend's bytes as a file mapping, with the offset of byte 0 within it, when it
    /// has one: reads can then be answered from the mapping without copying
    /// ([`Export::handle_with_tail`](crate::export::Export::handle_with_tail)). What the
    /// mapping shows must always equal what [`read_at`](Self::read_at) would return.
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        None
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
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        (**self).mapping()
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
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        (**self).mapping()
    }
}

fn out_of_range(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("I/O of {len} bytes at offset {offset} is outside the {size}-byte export"),
    )
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
}

impl MemoryBackend {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        Self::from_vec(vec![0; len])
    }
    /// The given bytes.
    pub fn from_vec(data: Vec<u8>) -> Self {
        MemoryBackend { data: RwLock::new(data.into_boxed_slice()) }
    }
    /// A copy of the contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).to_vec()
    }
}

impl Backend for MemoryBackend {
    fn len(&self) -> u64 {
        self.data.read().unwrap_or_else(|e| e.into_inner()).len() as u64
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
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.inner.read_at(buf, self.offset + offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.inner.write_at(buf, self.offset + offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        self.inner.mapping().map(|(map, start)| (map, start + self.offset))
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
    len: u64,
    direct: bool,
    map: Option<Arc<MappedFile>>,
}

/// Alignment O_DIRECT transfers get (the logical block size of nearly every device).
const DIRECT_ALIGN: usize = 4096;

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
        Ok(FileBackend { file, len, direct: options.direct, map })
    }

    fn bounce<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&mut [u8], u64, usize) -> io::Result<R>,
    ) -> io::Result<R> {
        // O_DIRECT wants the buffer, offset and length aligned: widen to aligned bounds
        // and go through an aligned bounce buffer.
        let align = DIRECT_ALIGN as u64;
        let start = offset / align * align;
        let end = (offset + len as u64).div_ceil(align) * align;
        let span = (end - start) as usize;
        let mut raw = vec![0u8; span + DIRECT_ALIGN];
        let skew = raw.as_ptr().align_offset(DIRECT_ALIGN);
        let aligned = &mut raw[skew..skew + span];
        f(aligned, start, (offset - start) as usize)
    }
}

impl Backend for FileBackend {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        if !self.direct {
            return self.file.read_exact_at(buf, offset);
        }
        self.bounce(offset, buf.len(), |aligned, start, skip| {
            read_direct(&self.file, aligned, start, self.len)?;
            buf.copy_from_slice(&aligned[skip..skip + buf.len()]);
            Ok(())
        })
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        if !self.direct {
            return self.file.write_all_at(buf, offset);
        }
        self.bounce(offset, buf.len(), |aligned, start, skip| {
            let partial = skip != 0 || aligned.len() != buf.len();
            if partial {
                read_direct(&self.file, aligned, start, self.len)?;
            }
            aligned[skip..skip + buf.len()].copy_from_slice(buf);
            let keep = aligned.len().min((self.len - start) as usize);
            self.file.write_all_at(&aligned[..keep.div_ceil(SECTOR_SIZE) * SECTOR_SIZE], start)
        })
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        self.map.as_ref().map(|map| (map, 0))
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
