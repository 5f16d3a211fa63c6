//! Each export's config string, MAC mask and reserve list, kept in a directory so that a
//! restarted target answers as the one before it (`state_dir` in the configuration).
//!
//! One TOML file per export, `e{shelf}.{slot}.toml`, replaced atomically (written to a
//! temporary file, synced, renamed over the old one, the directory synced) whenever an
//! initiator changes what it holds. It also records the mask the configuration gave when it
//! was written: when the configuration's mask has changed since, the administrator's edit
//! wins over the saved list.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aoe_proto::MacAddr;
use aoe_target::export::ExportState;
use serde::{Deserialize, Serialize};

/// Longest state file read: a full one is about 5 KiB.
const MAX_STATE_FILE: u64 = 64 * 1024;

/// The directory of state files.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// What a state file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The config string and lists.
    pub state: ExportState,
    /// The configuration's mask when the file was written.
    pub config_mask: Vec<MacAddr>,
}

/// The file's layout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// The config string, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_string: Option<String>,
    /// The config string as hex, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_string_hex: Option<String>,
    #[serde(default)]
    mask: Vec<String>,
    #[serde(default)]
    reserve: Vec<String>,
    #[serde(default)]
    config_mask: Vec<String>,
}

impl StateDir {
    /// The directory `dir`, created (mode 0700) if missing.
    ///
    /// A directory others may write to is refused: they could plant a symlink where the
    /// target (root) writes its files, or a file with a mask of their choosing.
    pub fn open(dir: &Path) -> io::Result<StateDir> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let meta = fs::symlink_metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory"));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "others may write to it (group or world writable): make it 0700 (chmod go-w)",
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "owned by another user"));
        }
        Ok(StateDir { dir: dir.to_owned() })
    }

    /// The state file of export `name` (`e1.0`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// What was saved for `name`, `None` when nothing was. A file that cannot be read or
    /// parsed is an error naming it: a mask that protected a disk is not dropped silently.
    pub fn load(&self, name: &str) -> Result<Option<Saved>, String> {
        let path = self.path(name);
        let fail = |why: String| format!("state file {}: {why}", path.display());
        // Not through a symlink, and not a FIFO or device that would block or never end.
        let file =
            match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(fail("is a symlink".into())),
                Err(e) => return Err(fail(e.to_string())),
            };
        if !file.metadata().map_err(|e| fail(e.to_string()))?.is_file() {
            return Err(fail("is not a regular file".into()));
        }
        let mut text = String::new();
        file.take(MAX_STATE_FILE + 1).read_to_string(&mut text).map_err(|e| fail(e.to_string()))?;
        if text.len() as u64 > MAX_STATE_FILE {
            return Err(fail(format!("longer than {MAX_STATE_FILE} bytes")));
        }
        let parsed: StateFile =
            toml::from_str(&text).map_err(|e| fail(e.message().trim().replace('\n', "; ")))?;
        let macs = |list: &[String], key: &str| -> Result<Vec<MacAddr>, String> {
            list.iter()
                .map(|t| match t.parse::<MacAddr>() {
                    Ok(mac) if mac.is_multicast() => {
                        Err(fail(format!("{key}: {t} is a group address, no initiator's")))
                    }
                    Ok(mac) => Ok(mac),
                    Err(_) => Err(fail(format!("{key}: {t:?} is not a MAC address"))),
                })
                .collect()
        };
        let config_string = match (parsed.config_string, parsed.config_string_hex) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(hex)) => from_hex(&hex).ok_or_else(|| fail("config_string_hex is not hex".into()))?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => return Err(fail("both config_string and config_string_hex".into())),
        };
        Ok(Some(Saved {
            state: ExportState {
                config_string,
                mask: macs(&parsed.mask, "mask")?,
                reserve: macs(&parsed.reserve, "reserve")?,
            },
            config_mask: macs(&parsed.config_mask, "config_mask")?,
        }))
    }

    /// Replaces the state file of `name` atomically.
    pub fn save(&self, name: &str, saved: &Saved) -> io::Result<()> {
        let strings = |list: &[MacAddr]| list.iter().map(ToString::to_string).collect();
        let text = String::from_utf8(saved.state.config_string.clone()).ok();
        let file = StateFile {
            config_string_hex: text.is_none().then(|| to_hex(&saved.state.config_string)),
            config_string: text,
            mask: strings(&saved.state.mask),
            reserve: strings(&saved.state.reserve),
            config_mask: strings(&saved.config_mask),
        };
        let body = toml::to_string(&file).map_err(io::Error::other)?;
        let header = format!(
            "# {name}: config string, MAC mask and reserve list, kept by aoe-target across restarts.\n"
        );
        let path = self.path(name);
        let temporary = self.dir.join(format!(".{name}.toml.tmp"));
        // A leftover (or planted) temporary is removed, not followed; the new one must be new.
        match fs::remove_file(&temporary) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(header.as_bytes())?;
        out.write_all(body.as_bytes())?;
        out.sync_all()?;
        fs::rename(&temporary, &path)?;
        File::open(&self.dir)?.sync_all()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("aoe-state-test-{}-{n}", std::process::id()))
    }

    #[test]
    fn saved_state_reads_back_text_and_binary_strings() {
        let dir = scratch();
        let states = StateDir::open(&dir).unwrap();
        assert_eq!(states.load("e1.0"), Ok(None));
        for string in [b"host=db1".to_vec(), vec![0, 0xFF, b'x']] {
            let saved = Saved {
                state: ExportState {
                    config_string: string,
                    mask: vec![MacAddr([2, 0, 0, 0, 0, 1])],
                    reserve: vec![MacAddr([2, 0, 0, 0, 0, 2])],
                },
                config_mask: vec![],
            };
            states.save("e1.0", &saved).unwrap();
            assert_eq!(states.load("e1.0"), Ok(Some(saved)));
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn planted_symlinks_fifos_and_open_directories_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch();
        let states = StateDir::open(&dir).unwrap();
        // A symlink planted as the temporary is removed, not written through.
        let victim = dir.with_extension("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".e1.0.toml.tmp")).unwrap();
        states.save("e1.0", &Saved { state: ExportState::default(), config_mask: vec![] }).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        // A state file that is a symlink or a FIFO is refused at once, not followed or waited on.
        fs::remove_file(states.path("e1.0")).unwrap();
        std::os::unix::fs::symlink(&victim, states.path("e1.0")).unwrap();
        assert!(states.load("e1.0").unwrap_err().contains("is a symlink"));
        let fifo = states.path("e2.0");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(states.load("e2.0").unwrap_err().contains("is not a regular file"));
        // A directory others may write to is not used.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(StateDir::open(&dir).unwrap_err().to_string().contains("group or world writable"));
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_file(victim).unwrap();
    }

    #[test]
    fn a_damaged_state_file_is_an_error_that_names_it() {
        let dir = scratch();
        let states = StateDir::open(&dir).unwrap();
        for (text, why) in [
            ("mask = [\"nope\"]\n", "mask: \"nope\" is not a MAC address"),
            ("colour = 1\n", "unknown field"),
            ("config_string_hex = \"abc\"\n", "not hex"),
            ("reserve = [\"ff:ff:ff:ff:ff:ff\"]\n", "reserve: ff:ff:ff:ff:ff:ff is a group address"),
        ] {
            fs::write(states.path("e2.3"), text).unwrap();
            let err = states.load("e2.3").unwrap_err();
            assert!(err.starts_with(&format!("state file {}: ", states.path("e2.3").display())), "{err}");
            assert!(err.contains(why), "{err}");
        }
        fs::write(states.path("e2.3"), vec![b'#'; MAX_STATE_FILE as usize + 1]).unwrap();
        assert!(states.load("e2.3").unwrap_err().contains("longer than"));
        fs::remove_dir_all(dir).unwrap();
    }
}
