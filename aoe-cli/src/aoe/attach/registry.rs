//! The record of running attaches that `aoe attached` lists and `aoe detach` acts on: one
//! JSON file per attach in the runtime directory, written whole (a temporary file renamed
//! over it), removed when the attach ends.
//!
//! The directory is `$AOE_RUNTIME_DIR/attach` when that is set, else `/run/aoe/attach` for
//! root and `$XDG_RUNTIME_DIR/aoe/attach` (or `/tmp/aoe-UID/attach`) for others. A record
//! whose process is gone is *stale*: listed as such, and removed by the next look.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One path to the disk: local interface and the target's MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PathRecord {
    pub(crate) iface: String,
    pub(crate) mac: String,
}

/// One running attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The disk, e.g. `e1.0`.
    pub(crate) disk: String,
    /// The process serving it.
    pub(crate) pid: u32,
    /// Where the FUSE filesystem is mounted (absolute).
    pub(crate) mount_point: PathBuf,
    /// The disk's file in it.
    pub(crate) file: PathBuf,
    /// `/dev/loopN` with `--loop`.
    pub(crate) loop_device: Option<PathBuf>,
    /// Capacity in bytes.
    pub(crate) size_bytes: u64,
    pub(crate) read_only: bool,
    pub(crate) paths: Vec<PathRecord>,
    /// `attached`, `detaching`; `stale` is never written, only reported.
    pub(crate) state: String,
}

/// The directory of the records.
pub(crate) fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AOE_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("attach");
    }
    if crate::aoe::sys::is_root() {
        return PathBuf::from("/run/aoe/attach");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("aoe/attach"),
        None => PathBuf::from(format!("/tmp/aoe-{}/attach", crate::aoe::sys::uid())),
    }
}

/// The record's file: named after the mount point, which is unique among live mounts.
fn file_for(dir: &Path, mount_point: &Path) -> PathBuf {
    let name: String = mount_point
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    // Two mount points that differ only in punctuation still get two files.
    let hash = mount_point
        .to_string_lossy()
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    dir.join(format!("{name}-{:08x}.json", hash as u32))
}

impl Record {
    /// Writes the record (atomically) and returns its file.
    pub(crate) fn save(&self) -> io::Result<PathBuf> {
        let dir = dir();
        std::fs::create_dir_all(&dir)?;
        let path = file_for(&dir, &self.mount_point);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Whether its process still runs.
    pub(crate) fn alive(&self) -> bool {
        crate::aoe::sys::process_alive(self.pid)
    }
}

/// A record and the file it came from.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) file: PathBuf,
    pub(crate) record: Record,
    /// Its process is gone.
    pub(crate) stale: bool,
}

/// Every record, sorted by disk and mount point. Files that do not parse are skipped.
pub(crate) fn list() -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(dir()) else { return Vec::new() };
    let mut entries: Vec<Entry> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|file| {
            let text = std::fs::read_to_string(&file).ok()?;
            let record: Record = serde_json::from_str(&text).ok()?;
            let stale = !record.alive();
            Some(Entry { file, record, stale })
        })
        .collect();
    entries.sort_by(|a, b| {
        (&a.record.disk, &a.record.mount_point).cmp(&(&b.record.disk, &b.record.mount_point))
    });
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_flat_and_distinct() {
        let d = Path::new("/run/aoe/attach");
        let a = file_for(d, Path::new("/mnt/aoe"));
        let b = file_for(d, Path::new("/mnt_aoe"));
        assert_eq!(a.parent(), Some(d));
        assert!(a.file_name().unwrap().to_str().unwrap().starts_with("mnt_aoe-"));
        assert_ne!(a, b);
    }

    #[test]
    fn records_round_trip() {
        let r = Record {
            disk: "e1.0".into(),
            pid: 42,
            mount_point: "/mnt/aoe".into(),
            file: "/mnt/aoe/e1.0".into(),
            loop_device: Some("/dev/loop3".into()),
            size_bytes: 1 << 30,
            read_only: false,
            paths: vec![PathRecord { iface: "eth1".into(), mac: "00:11:22:33:44:55".into() }],
            state: "attached".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }
}
