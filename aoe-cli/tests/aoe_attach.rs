//! `aoe attach`: the remote disk as a local file and loop device, end to end.
//!
//! The how-to's workflow against the `aoe-target` program and Debian's vblade: attach with
//! `--loop`, write a partition table with sfdisk, reach the partition through a second loop
//! device with `--offset/--sizelimit` (this kernel does not scan loop partitions), mkfs.ext4,
//! mount, write files and directories, sync, unmount, detach; e2fsck on the target's image
//! file finds no error; attach again, mount, and every file's sha256 is the same.
//!
//! Failures: a target that stops answering makes I/O fail with EIO after the dead timeout
//! (and detach still works), one that answers again within it lets the I/O complete; a
//! read-only export fails writes with EIO and serves reads; bad mount points, an unknown
//! disk, no /dev/fuse and no permission are one-line errors that leave nothing mounted.
//!
//! The target runs in one network namespace; `aoe attach` runs in the other's network
//! namespace only (nsenter --net), so its mount and loop devices are the test's.
//! Needs root, FUSE, loop devices, sfdisk, losetup, mkfs.ext4 and e2fsck (and vblade for
//! its half); skipped otherwise, unless AOE_REQUIRE_NETNS / AOE_REQUIRE_PEERS say a skip
//! is a failure. Every process is bounded in time.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::{Link, Netns};
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::{vblade, wait_until, Guarded};

const AOE: &str = env!("CARGO_BIN_EXE_aoe");
const AOE_TARGET: &str = env!("CARGO_BIN_EXE_aoe-target");
/// The test disks.
const DISK_BYTES: usize = 256 * MIB;
/// Where the partition starts (the usual first MiB).
const PART_OFFSET: u64 = MIB as u64;
/// The longest any one command may take.
const LIMIT: Duration = Duration::from_secs(120);
/// The tools every test here runs.
const TOOLS: [&str; 7] = ["nsenter", "losetup", "sfdisk", "mkfs.ext4", "e2fsck", "sha256sum", "unshare"];

/// Which target serves the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// The `aoe-target` program.
    Program,
    /// Debian's vblade.
    Vblade,
}

/// A target serving an image as e1.0 on a veth link; the target stops before the link goes.
struct Setup {
    target: Guarded,
    link: Link,
    /// The attach records of this test, apart from any other's.
    runtime: TempDir,
}

impl Setup {
    fn new(test: &str, peer: Peer, image: &TempImage, target_flags: &[&str]) -> Option<Setup> {
        if !netns_available(test) || !devices_available(test) {
            return None;
        }
        if TOOLS.iter().any(|t| !tool_available(test, t)) {
            return None;
        }
        if peer == Peer::Vblade && !tool_available(test, "vblade") {
            return None;
        }
        let link = Link::new("aoeatt", 9000).unwrap();
        let target = match peer {
            Peer::Vblade => vblade(&link.target, 1, 0, link.target_if(), image.path()),
            Peer::Program => aoe_target(&link.target, link.target_if(), image.path(), target_flags),
        };
        Some(Setup { target, link, runtime: TempDir::new("run") })
    }

    /// `aoe -i IF ARGS` in the initiator's network namespace (and the test's mounts).
    fn aoe(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.link.initiator.name()))
            .args([AOE, "-i", self.link.initiator_if()])
            .args(args)
            .env("AOE_RUNTIME_DIR", self.runtime.path())
            .env_remove("RUST_LOG");
        cmd
    }

    /// Starts `aoe attach [FLAGS] e1.0 DIR` and waits for its ready line(s).
    fn attach(&self, flags: &[&str], dir: &Path) -> Attach {
        let mut args = vec!["attach"];
        args.extend_from_slice(flags);
        args.extend(["e1.0", dir.to_str().unwrap()]);
        let process = Guarded::spawn(self.aoe(&args)).unwrap();
        let with_loop = flags.contains(&"--loop");
        let mut attach = Attach { process, dir: dir.to_path_buf(), loop_device: None };
        let ready = format!("attached e1.0 at {}/e1.0\n", dir.display());
        let done = |a: &mut Attach| {
            let out = a.process.stdout();
            out.contains(&ready) && (!with_loop || out.lines().any(|l| l.starts_with("e1.0: /dev/loop")))
                || matches!(a.process.try_wait(), Ok(Some(_)))
        };
        assert!(wait_until(Duration::from_secs(30), || done(&mut attach)), "attach did not get ready");
        let out = attach.process.stdout();
        assert!(out.contains(&ready), "attach failed: {out:?} {:?}", attach.process.stderr());
        attach.loop_device = out.lines().find_map(|l| l.strip_prefix("e1.0: ")).map(PathBuf::from);
        attach
    }

    /// `aoe detach WHAT`, which must succeed; then the attach must have exited 0, and left
    /// neither its mount nor its loop device.
    fn detach(&self, mut attach: Attach, what: &str) {
        let out = run(self.aoe(&["detach", what]), None);
        assert!(out.status.success(), "aoe detach {what}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("detached e1.0 from {}\n", attach.dir.display()));
        let status = attach.process.wait_timeout(LIMIT).unwrap().expect("attach did not exit");
        assert!(status.success(), "attach: {status:?}: {}", attach.process.stderr());
        assert!(!is_mount_point(&attach.dir), "{} is still mounted", attach.dir.display());
        if let Some(dev) = &attach.loop_device {
            let left = loops_backed_by(&attach.file());
            assert!(left.is_empty(), "{} is still attached: {}", dev.display(), attach.process.stderr());
        }
    }
}

/// Whether /dev/fuse and /dev/loop-control exist; prints a SKIP line (or panics, when
/// AOE_REQUIRE_NETNS asks for every privileged test to run) when not.
fn devices_available(test: &str) -> bool {
    let missing: Vec<&str> =
        ["/dev/fuse", "/dev/loop-control"].into_iter().filter(|d| !Path::new(d).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    let line = format!("SKIP: {test}: needs {}", missing.join(" and "));
    let required = std::env::var(aoe_testkit::privilege::REQUIRE_NETNS_ENV)
        .is_ok_and(|v| ["1", "true", "yes"].contains(&v.to_ascii_lowercase().as_str()));
    assert!(!required, "{line}");
    eprintln!("{line}");
    false
}

/// Starts `aoe-target [FLAGS] 1 0 IFNAME FILE` in `ns` and waits for its start-up line.
fn aoe_target(ns: &Netns, ifname: &str, file: &Path, flags: &[&str]) -> Guarded {
    let mut cmd = ns.command(AOE_TARGET);
    cmd.args(flags).args(["1", "0", ifname]).arg(file).env_remove("RUST_LOG");
    let target = Guarded::spawn(cmd).unwrap();
    let ready = format!("e1.0 on {ifname} (");
    assert!(
        wait_until(Duration::from_secs(10), || target.stderr().contains(&ready)),
        "aoe-target did not start: {:?}",
        target.stderr()
    );
    target
}

/// A running `aoe attach`. Dropped while still running (a failing test), it gets SIGTERM;
/// whatever it left behind is unmounted and detached by name.
struct Attach {
    process: Guarded,
    dir: PathBuf,
    loop_device: Option<PathBuf>,
}

impl Attach {
    fn file(&self) -> PathBuf {
        self.dir.join("e1.0")
    }

    fn loop_device(&self) -> &Path {
        self.loop_device.as_deref().expect("attached without --loop")
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        let _ = self.process.terminate();
        for dev in loops_backed_by(&self.file()) {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
        if is_mount_point(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A directory removed (after unmounting anything on it) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aoe-attach-test-{}-{what}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if is_mount_point(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loop device over part of another, detached on drop.
struct PartLoop(PathBuf);

impl PartLoop {
    /// `losetup --find --show --offset --sizelimit` over `dev`.
    fn new(dev: &Path, offset: u64, size: u64) -> PartLoop {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--offset", &offset.to_string(), "--sizelimit", &size.to_string()])
            .arg(dev);
        let out = run(cmd, None);
        assert!(out.status.success(), "losetup: {}", text(&out.stderr));
        PartLoop(PathBuf::from(text(&out.stdout).trim()))
    }
}

impl Drop for PartLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A mounted filesystem, unmounted on drop.
struct Mount(TempDir);

impl Mount {
    fn new(dev: &Path) -> Mount {
        let dir = TempDir::new("fs");
        let mut cmd = Command::new("mount");
        cmd.arg(dev).arg(dir.path());
        let out = run(cmd, None);
        assert!(out.status.success(), "mount {}: {}", dev.display(), text(&out.stderr));
        Mount(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn unmount(self) {
        let mut cmd = Command::new("umount");
        cmd.arg(self.path());
        let out = run(cmd, None);
        assert!(out.status.success(), "umount: {}", text(&out.stderr));
    }
}

/// Runs `cmd` (stdin from `input`) to completion within LIMIT; kills it and panics past that.
fn run(mut cmd: Command, input: Option<&[u8]>) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{shown}: {e}"));
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `sh -c SCRIPT` and returns its stdout; panics unless it succeeds.
fn sh(script: &str) -> String {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    let out = run(cmd, None);
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn is_mount_point(dir: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| Path::new(m) == dir)
}

/// The loop devices whose backing file is `file`.
fn loops_backed_by(file: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    dir.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim()) == file)
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect()
}

/// Writes the test's files and directories under `root`: 72 MiB in all.
fn write_files(root: &Path) {
    for d in 0..4 {
        let dir = root.join(format!("dir{d}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..8 {
            let seed = (d * 100 + f) as u64;
            std::fs::write(dir.join(format!("file{f}.bin")), pattern(seed, 2 * MIB + f * 4099)).unwrap();
        }
        for f in 0..16 {
            std::fs::write(root.join(format!("dir{d}/small{f}.txt")), format!("file {f} of directory {d}\n"))
                .unwrap();
        }
    }
    std::fs::write(root.join("big.bin"), pattern(7, 8 * MIB)).unwrap();
}

/// `sha256sum` of every file under `root`, sorted by path.
fn checksums(root: &Path) -> String {
    sh(&format!("cd '{}' && find . -type f | LC_ALL=C sort | xargs sha256sum", root.display()))
}

/// The whole how-to, twice attached: see the module docs.
fn workflow(test: &str, peer: Peer) {
    let image = TempImage::zeroed(DISK_BYTES).unwrap();
    let Some(setup) = Setup::new(test, peer, &image, &[]) else { return };
    let dir = TempDir::new("mnt");
    let part_size = DISK_BYTES as u64 - PART_OFFSET;

    let attach = setup.attach(&["--loop"], dir.path());
    let dev = attach.loop_device().to_path_buf();
    let mut cmd = Command::new("sfdisk");
    cmd.arg("-q").arg(&dev);
    let out = run(cmd, Some(b"label: dos\nstart=2048, type=83\n"));
    assert!(out.status.success(), "sfdisk: {}", text(&out.stderr));
    let dump = sh(&format!("sfdisk -d {}", dev.display()));
    assert!(dump.contains("start=        2048"), "{dump}");

    let part = PartLoop::new(&dev, PART_OFFSET, part_size);
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F"]).arg(&part.0);
    let out = run(cmd, None);
    assert!(out.status.success(), "mkfs.ext4: {}", text(&out.stderr));
    let fs = Mount::new(&part.0);
    write_files(fs.path());
    sh("sync");
    let before = checksums(fs.path());
    assert_eq!(before.lines().count(), 4 * 8 + 4 * 16 + 1, "{before}");
    fs.unmount();
    drop(part);
    setup.detach(attach, dir.path().to_str().unwrap());

    let fsck = run(
        {
            let mut c = Command::new("e2fsck");
            c.arg("-fn").arg(format!("{}?offset={PART_OFFSET}", image.path().display()));
            c
        },
        None,
    );
    assert!(fsck.status.success(), "e2fsck found errors: {}{}", text(&fsck.stdout), text(&fsck.stderr));

    // Again, detached by disk name this time.
    let attach = setup.attach(&["--loop"], dir.path());
    let part = PartLoop::new(attach.loop_device(), PART_OFFSET, part_size);
    let fs = Mount::new(&part.0);
    let after = checksums(fs.path());
    assert_eq!(after, before, "the files changed between two attaches");
    fs.unmount();
    drop(part);
    setup.detach(attach, "e1.0");
    eprintln!("{peer:?}: partitioned, formatted, filled, checked and read back through aoe attach");
}

#[test]
fn workflow_against_aoe_target() {
    workflow("workflow_against_aoe_target", Peer::Program);
}

#[test]
fn workflow_against_vblade() {
    workflow("workflow_against_vblade", Peer::Vblade);
}

/// Reads `len` bytes at `offset` of `path` with O_DIRECT on a thread; the result within
/// LIMIT (a read that hangs fails the test).
fn direct_read(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| {
            let file = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path)?;
            let mut buf = Aligned::new(len);
            file.read_exact_at(buf.as_mut(), offset)?;
            Ok(buf.as_mut().to_vec())
        })();
        let _ = tx.send(result);
    });
    rx.recv_timeout(LIMIT).expect("an O_DIRECT read hung")
}

/// Writes `data` at `offset` of `path` with O_DIRECT and fsyncs, on a thread, bounded by LIMIT.
fn direct_write(path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let (path, data) = (path.to_path_buf(), data.to_vec());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| {
            let file = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&path)?;
            let mut buf = Aligned::new(data.len());
            buf.as_mut().copy_from_slice(&data);
            file.write_all_at(buf.as_mut(), offset)?;
            file.sync_all()
        })();
        let _ = tx.send(result);
    });
    rx.recv_timeout(LIMIT).expect("an O_DIRECT write hung")
}

/// A 4096-aligned buffer, as O_DIRECT wants.
struct Aligned {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let bytes = vec![0u8; len + 4096];
        let start = bytes.as_ptr().align_offset(4096);
        Aligned { bytes, start, len }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// Sends `sig` (STOP, CONT, KILL) to `process`. `ip netns exec` and `nsenter` exec the
/// program in place: the child's pid is the program's.
fn signal(process: &Guarded, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(process.pid().to_string()).status().unwrap();
    assert!(status.success(), "kill -{sig} {}", process.pid());
}

/// A target that stops answering: reads through the loop device fail with EIO once the
/// dead timeout passes; a later read after it answers again succeeds (a new request tries
/// again); and with the target silent again, a filesystem on the disk still unmounts and
/// the attach still detaches.
#[test]
fn silent_target_fails_io_with_eio_and_detach_still_works() {
    let test = "silent_target_fails_io_with_eio_and_detach_still_works";
    let image = TempImage::new(DISK_BYTES, 0x51_1e47).unwrap();
    let Some(setup) = Setup::new(test, Peer::Program, &image, &[]) else { return };
    let dir = TempDir::new("mnt");
    let attach = setup.attach(&["--loop", "--dead-timeout", "2"], dir.path());
    let dev = attach.loop_device().to_path_buf();
    let want = pattern(0x51_1e47, 3 * MIB);
    assert_eq!(direct_read(&dev, 0, MIB).unwrap(), want[..MIB]);

    signal(&setup.target, "STOP");
    let start = Instant::now();
    let err = direct_read(&dev, MIB as u64, 64 * 1024).expect_err("a read from a silent target succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    eprintln!("silent target: EIO after {:.1} s (dead timeout 2 s)", start.elapsed().as_secs_f64());

    signal(&setup.target, "CONT");
    assert_eq!(direct_read(&dev, 2 * MIB as u64, MIB).unwrap(), want[2 * MIB..3 * MIB]);

    // A filesystem in use when the target goes silent again: it still unmounts (its last
    // writes fail), and the attach still detaches (its last flush fails).
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F"]).arg(&dev);
    assert!(run(cmd, None).status.success(), "mkfs.ext4");
    let fs = Mount::new(&dev);
    std::fs::write(fs.path().join("file"), pattern(1, MIB)).unwrap();
    sh("sync");
    std::fs::write(fs.path().join("unsynced"), pattern(2, MIB)).unwrap();
    signal(&setup.target, "STOP");
    let start = Instant::now();
    fs.unmount();
    eprintln!("silent target: unmounted in {:.1} s", start.elapsed().as_secs_f64());
    let mut attach = attach;
    let out = run(setup.aoe(&["--dead-timeout", "2", "detach", dir.path().to_str().unwrap()]), None);
    signal(&setup.target, "CONT");
    assert!(out.status.success(), "aoe detach: {}", text(&out.stderr));
    let status = attach.process.wait_timeout(LIMIT).unwrap().expect("attach did not exit");
    let stderr = attach.process.stderr();
    assert!(!is_mount_point(dir.path()), "attach left its mount: {stderr}");
    assert!(loops_backed_by(&attach.file()).is_empty(), "attach left {}: {stderr}", dev.display());
    assert!(status.success() || stderr.contains("final flush failed"), "{status:?}: {stderr}");
}

/// A target silent for less than the dead timeout: the reads and writes waiting on it
/// complete once it answers, with the right bytes.
///
/// Also the regression test for close flushing the disk: the `kill` that resumes the
/// target is spawned while the test has the file open with a write pending, and its exec
/// closes the inherited descriptors; were close a FLUSH CACHE, it would wait behind that
/// write, for a target that is never resumed.
#[test]
fn target_back_within_dead_timeout_loses_nothing() {
    let test = "target_back_within_dead_timeout_loses_nothing";
    let image = TempImage::new(DISK_BYTES, 0xBAC4).unwrap();
    let Some(setup) = Setup::new(test, Peer::Program, &image, &[]) else { return };
    let dir = TempDir::new("mnt");
    let attach = setup.attach(&["--dead-timeout", "10"], dir.path());
    let file = attach.file();
    let want = pattern(0xBAC4, 8 * MIB);
    signal(&setup.target, "STOP");
    let (reader, writer) = {
        let (f1, f2) = (file.clone(), file.clone());
        let data = pattern(0xF00D, MIB);
        (
            std::thread::spawn(move || direct_read(&f1, 4 * MIB as u64, MIB)),
            std::thread::spawn(move || direct_write(&f2, 6 * MIB as u64, &data)),
        )
    };
    std::thread::sleep(Duration::from_millis(1500));
    signal(&setup.target, "CONT");
    assert_eq!(reader.join().unwrap().expect("read after the pause"), want[4 * MIB..5 * MIB]);
    writer.join().unwrap().expect("write after the pause");
    assert_eq!(direct_read(&file, 6 * MIB as u64, MIB).unwrap(), pattern(0xF00D, MIB));
    assert_eq!(image.read_at(6 * MIB as u64, MIB).unwrap(), pattern(0xF00D, MIB));
    setup.detach(attach, dir.path().to_str().unwrap());
}

/// A read-only export refuses writes (ATA ABRT): each write is EIO, reads still work, and
/// so do later writes' neighbours (the attach goes on).
#[test]
fn write_error_from_target_is_eio_for_that_write() {
    let test = "write_error_from_target_is_eio_for_that_write";
    let image = TempImage::new(DISK_BYTES, 0x3E4D).unwrap();
    let Some(setup) = Setup::new(test, Peer::Program, &image, &["-r"]) else { return };
    let dir = TempDir::new("mnt");
    let attach = setup.attach(&[], dir.path());
    let file = attach.file();
    let err = direct_write(&file, 0, &[0xAB; 4096]).expect_err("a write to a read-only export succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(direct_read(&file, 0, MIB).unwrap(), pattern(0x3E4D, MIB));
    let err = std::fs::write(&file, b"x").expect_err("a buffered write succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(direct_read(&file, 0, 4096).unwrap(), pattern(0x3E4D, 4096));
    setup.detach(attach, dir.path().to_str().unwrap());
}

/// `--read-only`: the file is 0444 and opening it for writing fails with EROFS, also for
/// root; the loop device is read-only too.
#[test]
fn read_only_attach_refuses_writes() {
    let test = "read_only_attach_refuses_writes";
    let image = TempImage::new(DISK_BYTES, 0x0E0E).unwrap();
    let Some(setup) = Setup::new(test, Peer::Program, &image, &[]) else { return };
    let dir = TempDir::new("mnt");
    let attach = setup.attach(&["--read-only", "--loop"], dir.path());
    let file = attach.file();
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o444);
    let err = OpenOptions::new().write(true).open(&file).expect_err("opened for writing");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let ro = sh(&format!("blockdev --getro {}", attach.loop_device().display()));
    assert_eq!(ro.trim(), "1");
    assert_eq!(direct_read(attach.loop_device(), 0, 4096).unwrap(), pattern(0x0E0E, 4096));
    let listed = text(&run(setup.aoe(&["attached", "--json"]), None).stdout);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v[0]["disk"], "e1.0");
    assert_eq!(v[0]["read_only"], true);
    assert_eq!(v[0]["state"], "attached");
    assert_eq!(v[0]["loop_device"], attach.loop_device().to_str().unwrap());
    setup.detach(attach, dir.path().to_str().unwrap());
    assert_eq!(text(&run(setup.aoe(&["attached"]), None).stdout), "no disk is attached\n");
}

/// Runs `aoe attach` expecting failure: exit status 1, one line `aoe: ...` on stderr that
/// contains `want`, nothing mounted on `dir` and no loop device on its file.
fn expect_failure(mut cmd: Command, dir: &Path, want: &str) {
    let shown = format!("{cmd:?}");
    let out = run(std::mem::replace(&mut cmd, Command::new("true")), None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{shown}: {:?}: {err}", out.status);
    assert!(err.starts_with("aoe: ") && err.ends_with('\n') && err.lines().count() == 1, "{shown}: {err:?}");
    assert!(err.contains(want), "{shown}: {err:?} lacks {want:?}");
    assert!(!is_mount_point(dir), "{shown} left {} mounted", dir.display());
    assert!(loops_backed_by(&dir.join("e1.0")).is_empty(), "{shown} left a loop device");
}

#[test]
fn attach_failures_are_one_line_and_leave_nothing_mounted() {
    let test = "attach_failures_are_one_line_and_leave_nothing_mounted";
    let image = TempImage::zeroed(16 * MIB).unwrap();
    let Some(setup) = Setup::new(test, Peer::Program, &image, &[]) else { return };
    let dir = TempDir::new("mnt");
    let d = dir.path().to_str().unwrap();
    let init = format!("--net=/run/netns/{}", setup.link.initiator.name());

    expect_failure(
        setup.aoe(&["--timeout", "0.3", "attach", "--loop", "e9.9", d]),
        dir.path(),
        "no such disk",
    );
    let missing = dir.path().join("missing");
    expect_failure(setup.aoe(&["attach", "e1.0", missing.to_str().unwrap()]), &missing, "does not exist");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"").unwrap();
    expect_failure(setup.aoe(&["attach", "e1.0", file.to_str().unwrap()]), &file, "is not a directory");

    // Busy: something is mounted there already (and stays, untouched).
    let busy = TempDir::new("busy");
    sh(&format!("mount -t tmpfs aoe-test {}", busy.path().display()));
    expect_failure(
        setup.aoe(&["attach", "e1.0", busy.path().to_str().unwrap()]),
        Path::new("/nonexistent"),
        "is busy",
    );
    assert!(is_mount_point(busy.path()));
    sh(&format!("umount {}", busy.path().display()));

    // Busy: another attach holds it.
    let first = setup.attach(&[], dir.path());
    expect_failure(setup.aoe(&["attach", "e1.0", d]), Path::new("/nonexistent"), "is busy");
    setup.detach(first, d);

    // No /dev/fuse: a private mount namespace with an empty /dev.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs none /dev && exec \"$@\"",
        "sh",
    ])
    .args(["nsenter", &init, AOE, "-i", setup.link.initiator_if(), "attach", "e1.0", d])
    .env("AOE_RUNTIME_DIR", setup.runtime.path());
    expect_failure(cmd, dir.path(), "no /dev/fuse");

    // No permission: an unprivileged user, first without raw sockets, then with them
    // (mounting on root's directory is refused).
    let mut cmd = Command::new("nsenter");
    cmd.args([&init, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", AOE])
        .args(["-i", setup.link.initiator_if(), "attach", "e1.0", d])
        .env("AOE_RUNTIME_DIR", setup.runtime.path());
    expect_failure(cmd, dir.path(), "permission denied");
    let mut cmd = Command::new("nsenter");
    cmd.args([&init, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=+net_raw", "--ambient-caps=+net_raw", AOE])
        .args(["-i", setup.link.initiator_if(), "attach", "e1.0", d])
        .env("AOE_RUNTIME_DIR", setup.runtime.path());
    expect_failure(cmd, dir.path(), "cannot mount FUSE");

    // Nothing to detach.
    let out = run(setup.aoe(&["detach", "e1.0"]), None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "aoe: nothing is attached at e1.0 (`aoe attached` lists what is)\n");
}

/// An attach killed with SIGKILL leaves a record: `aoe attached` shows it stale and
/// removes it, and `aoe detach` cleans the dead mount.
#[test]
fn killed_attach_is_stale_and_cleaned() {
    let test = "killed_attach_is_stale_and_cleaned";
    let image = TempImage::zeroed(16 * MIB).unwrap();
    let Some(setup) = Setup::new(test, Peer::Program, &image, &[]) else { return };
    let dir = TempDir::new("mnt");
    let d = dir.path().to_str().unwrap();
    let mut attach = setup.attach(&["--loop"], dir.path());
    let dev = attach.loop_device().to_path_buf();
    signal(&attach.process, "KILL");
    attach.process.wait_timeout(LIMIT).unwrap().expect("killed attach did not exit");
    // Auto-clear: the loop device goes once nothing holds it.
    let file = attach.file();
    assert!(
        wait_until(Duration::from_secs(10), || loops_backed_by(&file).is_empty()),
        "{} stayed attached",
        dev.display()
    );
    let listed = text(&run(setup.aoe(&["attached"]), None).stdout);
    assert!(listed.contains("stale (process gone)"), "{listed}");
    let out = run(setup.aoe(&["detach", d]), None);
    assert_eq!(out.status.code(), Some(1), "the record was removed by `aoe attached`");
    assert!(!is_mount_point(dir.path()), "the dead FUSE mount is still there");
    let _ = attach;
}

/// Reads and writes of the file at any offset and length (partial sectors read, patched and
/// written back), buffered and with O_DIRECT, land in the image where they should, and
/// fsync reaches the target.
#[test]
fn unaligned_io_through_the_file() {
    let test = "unaligned_io_through_the_file";
    let image = TempImage::new(16 * MIB, 0xA11).unwrap();
    let Some(setup) = Setup::new(test, Peer::Program, &image, &[]) else { return };
    let dir = TempDir::new("mnt");
    let attach = setup.attach(&[], dir.path());
    let mut want = pattern(0xA11, 16 * MIB);
    let file = OpenOptions::new().read(true).write(true).open(attach.file()).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 16 * MIB as u64);
    for (offset, len, seed) in
        [(1234u64, 1000usize, 1u64), (511, 2, 2), (4095, 8193, 3), (3 * MIB as u64 + 7, 300_000, 4)]
    {
        let data = pattern(seed, len);
        file.write_all_at(&data, offset).unwrap();
        want[offset as usize..offset as usize + len].copy_from_slice(&data);
    }
    file.sync_all().unwrap();
    assert!(image.read_all() == want, "the image differs from what was written");
    let mut got = vec![0u8; 777];
    file.read_exact_at(&mut got, 4000).unwrap();
    assert_eq!(got, want[4000..4777]);
    // The last bytes, and a read across the end, which stops at it.
    let mut tail = vec![0u8; 100];
    assert_eq!(file.read_at(&mut tail, 16 * MIB as u64 - 10).unwrap(), 10);
    assert_eq!(tail[..10], want[16 * MIB - 10..]);
    assert_eq!(direct_read(&attach.file(), 8192, 4096).unwrap(), want[8192..12288]);
    drop(file);
    setup.detach(attach, dir.path().to_str().unwrap());
}
