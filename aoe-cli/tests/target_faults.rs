//! A store that fails under a running `aoe-target`: a disk whose file lies on a full
//! filesystem answers each write it cannot take with the registers that say "full", and the
//! `aoe` tool names the byte offset and the cause, while the target's other export and the
//! failing disk's reads keep working. On a veth link between two private network
//! namespaces, the full filesystem a private tmpfs of 1 MiB.
//!
//! Also: exports with `-s` and `-d` hold their file open with O_SYNC and O_DIRECT, so that
//! an answered write is on stable storage.
//!
//! Needs root; skipped otherwise, unless AOE_REQUIRE_NETNS says a skip is a failure.

// kill has no safe wrapper in std.
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::netns_available;
use aoe_testkit::process::{wait_until, Guarded};

const AOE_TARGET: &str = env!("CARGO_BIN_EXE_aoe-target");
const AOE: &str = env!("CARGO_BIN_EXE_aoe");

/// A tmpfs of `size` mounted on a directory of its own, unmounted and removed on drop.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn mount(name: &str, size: &str) -> SmallFs {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), name])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
        SmallFs { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Starts `aoe-target ARGS` in the target namespace and waits for its start-up line that
/// contains `ready` (e.g. "e1.0 on ").
fn start_target(link: &Link, args: &[&str], ready: &str) -> Guarded {
    let mut cmd = link.target.command(AOE_TARGET);
    cmd.args(args).env_remove("RUST_LOG");
    let target = Guarded::spawn(cmd).unwrap();
    assert!(wait_until(Duration::from_secs(10), || target.stderr().contains(ready)), "{}", target.stderr());
    target
}

fn aoe(link: &Link, args: &[&str]) -> Output {
    let mut all = vec!["-i", link.initiator_if(), "--timeout", "0.5", "--dead-timeout", "5"];
    all.extend_from_slice(args);
    let out = link.initiator.run(AOE, &all, Duration::from_secs(60)).unwrap();
    eprintln!("aoe {}: {:?}\n{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn a_full_store_fails_writes_by_name_and_nothing_else() {
    if !netns_available("a_full_store_fails_writes_by_name_and_nothing_else") {
        return;
    }
    let link = Link::new("tgfull", 9000).unwrap();
    let small = SmallFs::mount("aoe-full-fs", "1m");
    // 8 MiB of holes on a filesystem that holds 1 MiB.
    let full = small.dir.join("disk.img");
    std::fs::File::create(&full).unwrap().set_len(8 * MIB as u64).unwrap();
    let other = TempImage::zeroed(8 * MIB).unwrap();
    let config = small.dir.join("exports.toml");
    let iface = link.target_if();
    std::fs::write(
        &config,
        format!(
            "[[export]]\nshelf = 5\nslot = 0\ninterfaces = [{iface:?}]\nfile = {full:?}\n\n\
             [[export]]\nshelf = 5\nslot = 1\ninterfaces = [{iface:?}]\nfile = {other:?}\n",
            other = other.path()
        ),
    )
    .unwrap();
    let mut target =
        start_target(&link, &["--config", config.to_str().unwrap()], &format!("e5.1 on {iface} ("));

    let data = std::env::temp_dir().join(format!("aoe-full-data-{}", std::process::id()));
    std::fs::write(&data, pattern(3, 4 * MIB)).unwrap();
    let data_arg = data.to_str().unwrap();

    let out = aoe(&link, &["write", "e5.0", data_arg]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("aoe: e5.0: write at byte "), "{err}");
    assert!(err.trim_end().ends_with("failed: disk full (ATA DF UNC)"), "{err}");
    let at: u64 = err["aoe: e5.0: write at byte ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(at > 0 && at < 4 * MIB as u64, "the first failing write is where the store filled up: {at}");

    // What was written before the store filled up reads back; the other disk takes writes.
    let back = std::env::temp_dir().join(format!("aoe-full-back-{}", std::process::id()));
    assert!(aoe(&link, &["read", "--length", "64K", "e5.0", back.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read(&back).unwrap(), pattern(3, 4 * MIB)[..64 << 10]);
    assert!(aoe(&link, &["write", "--verify", "e5.1", data_arg]).status.success());
    assert_eq!(other.read_at(0, 4 * MIB).unwrap(), pattern(3, 4 * MIB));

    let pid = libc::pid_t::try_from(target.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = target.wait_timeout(Duration::from_secs(5)).unwrap();
    // Flushing the full file at exit may fail; the target says so and exits non-zero, or 0.
    assert!(status.is_some(), "{}", target.stderr());
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(&back);
}

/// The open flags of the file descriptor of `target` that refers to `path`, from
/// /proc/PID/fdinfo (octal).
fn open_flags(pid: u32, path: &std::path::Path) -> Option<u32> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for fd in fds.flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() == Some(path) {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_str()?)).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            return u32::from_str_radix(flags.trim(), 8).ok();
        }
    }
    None
}

#[test]
fn sync_and_direct_exports_write_through_to_stable_storage() {
    if !netns_available("sync_and_direct_exports_write_through_to_stable_storage") {
        return;
    }
    let link = Link::new("tgsync", 1500).unwrap();
    // O_DIRECT needs a filesystem that takes it, not tmpfs: cargo's scratch directory is on disk.
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("aoe-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("disk.img");
    std::fs::write(&image, vec![0u8; MIB]).unwrap();
    for (option, flag, name) in [("-s", libc::O_SYNC, "O_SYNC"), ("-d", libc::O_DIRECT, "O_DIRECT")] {
        let mut target =
            start_target(&link, &[option, "1", "0", link.target_if(), image.to_str().unwrap()], "e1.0 on ");
        let flags = open_flags(target.pid(), &image).expect("the target holds the image open");
        assert_eq!(
            flags & flag as u32,
            flag as u32,
            "{option}: the image is not open with {name}: flags {flags:o}"
        );
        let data = dir.join("data");
        std::fs::write(&data, pattern(5, 256 << 10)).unwrap();
        assert!(aoe(&link, &["write", "--verify", "e1.0", data.to_str().unwrap()]).status.success());
        let _ = target.terminate();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_mtu_lowered_under_a_running_target_is_picked_up() {
    if !netns_available("an_mtu_lowered_under_a_running_target_is_picked_up") {
        return;
    }
    let link = Link::new("tgmtu", 9000).unwrap();
    let image = TempImage::new(4 * MIB, 11).unwrap();
    let mut target =
        start_target(&link, &["1", "0", link.target_if(), image.path().to_str().unwrap()], "e1.0 on ");
    let discover =
        |link: &Link| String::from_utf8_lossy(&aoe(link, &["discover", "--json"]).stdout).into_owned();
    assert!(discover(&link).contains("\"sectors_per_frame\": 17"), "{}", discover(&link));

    for (ns, iface) in [(&link.target, link.target_if()), (&link.initiator, link.initiator_if())] {
        let out =
            ns.run("ip", &["link", "set", "dev", iface, "mtu", "1500"], Duration::from_secs(5)).unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert!(
        wait_until(Duration::from_secs(5), || target
            .stderr()
            .contains("MTU is now 1500: 2 sectors per frame")),
        "{}",
        target.stderr()
    );
    assert!(discover(&link).contains("\"sectors_per_frame\": 2,"), "{}", discover(&link));
    let back = std::env::temp_dir().join(format!("aoe-mtu-back-{}", std::process::id()));
    assert!(aoe(&link, &["read", "e1.0", back.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read(&back).unwrap(), image.read_all(), "every byte arrives at the new MTU");
    let _ = std::fs::remove_file(&back);
    let _ = target.terminate();
}

#[test]
fn a_file_truncated_under_a_running_target_is_served_at_its_new_size() {
    if !netns_available("a_file_truncated_under_a_running_target_is_served_at_its_new_size") {
        return;
    }
    let link = Link::new("tgtrunc", 9000).unwrap();
    let image = TempImage::new(8 * MIB, 12).unwrap();
    let before = image.read_all();
    let mut target =
        start_target(&link, &["1", "0", link.target_if(), image.path().to_str().unwrap()], "e1.0 on ");
    let back = std::env::temp_dir().join(format!("aoe-trunc-back-{}", std::process::id()));
    let back_arg = back.to_str().unwrap();
    // The whole disk once, so that its pages are mapped and sent from the mapping.
    assert!(aoe(&link, &["read", "e1.0", back_arg]).status.success());

    std::fs::OpenOptions::new().write(true).open(image.path()).unwrap().set_len(3 * MIB as u64).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || target.stderr().contains("now holds 6144 sectors, not 16384")),
        "{}",
        target.stderr()
    );
    let identify = String::from_utf8_lossy(&aoe(&link, &["identify", "--json", "e1.0"]).stdout).into_owned();
    assert!(identify.contains("6144"), "IDENTIFY reports the new size: {identify}");
    // What is left reads back as it was; the target answers on, it did not go silent.
    assert!(aoe(&link, &["read", "e1.0", back_arg]).status.success());
    assert_eq!(std::fs::read(&back).unwrap(), before[..3 * MIB]);
    let _ = std::fs::remove_file(&back);
    assert_eq!(target.try_wait().unwrap(), None, "the target is still running");
    let _ = target.terminate();
}
