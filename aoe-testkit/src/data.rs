//! Deterministic test payloads and disk images.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use aoe_transport::rng::SplitMix64;

/// Bytes in a mebibyte, for sizes of test disks and transfers.
pub const MIB: usize = 1 << 20;

/// Deterministic pseudo-random bytes for test payloads.
///
/// The bytes are the splitmix64 sequence started from `seed`, each 64-bit
/// output written little-endian. The same `seed` always gives the same bytes,
/// on every platform, and `pattern(seed, n)` is a prefix of
/// `pattern(seed, m)` for `n <= m`, so `pattern(seed, len)[a..b]` is the
/// expected content of bytes `a..b` of a [`TempImage::new(len, seed)`].
///
/// [`TempImage::new(len, seed)`]: TempImage::new
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    SplitMix64(seed).fill(&mut out);
    out
}

/// A scratch file used as a disk image, deleted on drop.
///
/// It lives under `/dev/shm` when that exists (so image I/O never touches a
/// disk), else in [`std::env::temp_dir`], with a name unique on the machine
/// (`aoe-testkit-{pid}-{counter}.img`).
#[derive(Debug)]
pub struct TempImage {
    path: PathBuf,
    len: usize,
}

/// How the names of the images process `pid` makes begin.
fn image_prefix(pid: u32) -> String {
    format!("aoe-testkit-{pid}-")
}

/// The image files of process `pid` that exist now (its drops did not remove them).
pub fn images_made_by(pid: u32) -> Vec<PathBuf> {
    let prefix = image_prefix(pid);
    let Ok(entries) = std::fs::read_dir(crate::scratch_dir()) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Removes the image files of process `pid`: for a program cleaning up after itself on a
/// signal, when its destructors will not run. Best effort.
pub fn remove_images_made_by(pid: u32) {
    for path in images_made_by(pid) {
        let _ = std::fs::remove_file(path);
    }
}

impl TempImage {
    /// Creates an image of `len` bytes holding [`pattern(seed, len)`](pattern).
    pub fn new(len: usize, seed: u64) -> io::Result<TempImage> {
        let (image, mut file) = TempImage::create(len)?;
        let mut generator = SplitMix64(seed);
        // Chunks are a multiple of 8 bytes, so the stream equals `pattern`.
        let mut buf = vec![0u8; len.min(1 << 20)];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            generator.fill(&mut buf[..n]);
            file.write_all(&buf[..n])?;
            left -= n;
        }
        file.sync_data()?;
        Ok(image)
    }

    /// Creates an image of `len` zero bytes (a sparse file).
    pub fn zeroed(len: usize) -> io::Result<TempImage> {
        let (image, file) = TempImage::create(len)?;
        file.set_len(len as u64)?;
        Ok(image)
    }

    fn create(len: usize) -> io::Result<(TempImage, File)> {
        let path = crate::scratch_dir().join(format!(
            "{}{}.img",
            image_prefix(std::process::id()),
            crate::next_id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
        // From here on, drop removes the file even if filling it fails.
        Ok((TempImage { path, len }, file))
    }

    /// Path of the image file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size the image was created with, in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length image.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole current content of the file (which a peer may have changed
    /// or grown).
    ///
    /// # Panics
    /// If the file cannot be read (it is private to the test, so that is a
    /// broken test environment).
    pub fn read_all(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("cannot read {}: {e}", self.path.display()))
    }

    /// `len` bytes of the current content starting at byte `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf)?;
        Ok(buf)
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("aoe-testkit: could not remove {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_splitmix64() {
        // First outputs of splitmix64 seeded with 0 (reference values).
        let p = pattern(0, 16);
        assert_eq!(p[..8], 0xE220_A839_7B1D_CDAFu64.to_le_bytes());
        assert_eq!(p[8..], 0x6E78_9E6A_A1B9_65F4u64.to_le_bytes());
    }

    #[test]
    fn pattern_is_deterministic_and_prefix_stable() {
        assert_eq!(pattern(42, 1000), pattern(42, 1000));
        assert_ne!(pattern(42, 64), pattern(43, 64));
        let long = pattern(7, 1001);
        for n in [0, 1, 7, 8, 9, 500, 1001] {
            assert_eq!(pattern(7, n)[..], long[..n]);
        }
        assert!(pattern(1, 0).is_empty());
    }

    #[test]
    fn image_holds_pattern_and_is_removed() {
        // Larger than one write chunk, and not a multiple of 8.
        let len = (1 << 20) * 2 + 13;
        let image = TempImage::new(len, 99).unwrap();
        let path = image.path().to_path_buf();
        if Path::new("/dev/shm").is_dir() {
            assert!(path.starts_with("/dev/shm"), "{}", path.display());
        }
        assert_eq!(image.len(), len);
        assert!(!image.is_empty());
        let expected = pattern(99, len);
        assert!(image.read_all() == expected);
        assert_eq!(image.read_at(1 << 20, 20).unwrap(), expected[1 << 20..][..20]);
        let other = TempImage::new(16, 99).unwrap();
        assert_ne!(other.path(), image.path());
        drop(image);
        assert!(!path.exists());
    }

    #[test]
    fn zeroed_image() {
        let image = TempImage::zeroed(4096 * 3).unwrap();
        assert_eq!(image.read_all(), vec![0u8; 4096 * 3]);
        let empty = TempImage::zeroed(0).unwrap();
        assert!(empty.is_empty());
        assert!(empty.read_all().is_empty());
    }
}
