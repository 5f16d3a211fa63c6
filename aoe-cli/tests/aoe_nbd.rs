//! `aoe nbd` against real NBD clients: an AoE target (the `aoe-target` program, or Debian's
//! vblade) serves an image on tmpfs in one private network namespace, `aoe nbd` serves that
//! disk on a Unix socket from the other, and libnbd's `nbdinfo`, `nbdcopy` and `nbdfuse`
//! and QEMU's `qemu-img` use it. Every byte is compared: what clients read against the
//! image, and the image file against what clients wrote.
//!
//! Needs root and the tools (libnbd-bin, qemu-utils, e2fsprogs, util-linux); skipped
//! otherwise, unless AOE_REQUIRE_NETNS / AOE_REQUIRE_PEERS say a skip is a failure. Every
//! process is bounded in time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::{vblade, wait_until, Guarded};

const AOE: &str = env!("CARGO_BIN_EXE_aoe");
const AOE_TARGET: &str = env!("CARGO_BIN_EXE_aoe-target");
/// The disk: 80 MiB, so that 64 MiB copies fit with room to spare.
const DISK: usize = 80 * MIB;
/// The longest any one client command may take.
const LIMIT: Duration = Duration::from_secs(120);

/// Which AoE target serves the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Program,
    Vblade,
}

/// An image served over AoE in one namespace and as NBD from the other. Fields drop in
/// order: the NBD server, the target, then the namespaces.
struct Setup {
    nbd: Guarded,
    target: Guarded,
    socket: SocketPath,
    link: Link,
    image: TempImage,
}

/// A socket path removed on drop.
struct SocketPath(PathBuf);

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn unique(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    scratch().join(format!(
        "aoe-nbd-test-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Checks privileges and tools; false (after a SKIP line) when the test cannot run.
fn available(test: &str, tools: &[&str]) -> bool {
    netns_available(test) && tools.iter().all(|t| tool_available(test, t))
}

impl Setup {
    fn new(test: &str, peer: Peer, nbd_args: &[&str]) -> Setup {
        let image = TempImage::new(DISK, 0x4E_4244).unwrap();
        let link = Link::new("aoenbd", 9000).unwrap();
        let target = match peer {
            Peer::Program => {
                let mut cmd = link.target.command(AOE_TARGET);
                cmd.args(["1", "0", link.target_if()]).arg(image.path()).env_remove("RUST_LOG");
                let target = Guarded::spawn(cmd).unwrap();
                let ready = format!("e1.0 on {} (", link.target_if());
                assert!(
                    wait_until(Duration::from_secs(10), || target.stderr().contains(&ready)),
                    "{test}: aoe-target did not start: {:?}",
                    target.stderr()
                );
                target
            }
            Peer::Vblade => vblade(&link.target, 1, 0, link.target_if(), image.path()),
        };
        let socket = SocketPath(unique("sock"));
        let nbd = serve_nbd(&link, &socket.0, nbd_args);
        Setup { nbd, target, socket, link, image }
    }

    fn uri(&self) -> String {
        uri(&self.socket.0)
    }
}

fn uri(socket: &Path) -> String {
    format!("nbd+unix:///e1.0?socket={}", socket.display())
}

/// Starts `aoe nbd --unix SOCKET ARGS e1.0` in the initiator namespace and waits for its
/// ready line.
fn serve_nbd(link: &Link, socket: &Path, args: &[&str]) -> Guarded {
    let mut cmd = link.initiator.command(AOE);
    cmd.arg("nbd").arg("--unix").arg(socket).args(args).arg("e1.0").env_remove("RUST_LOG");
    let mut nbd = Guarded::spawn(cmd).unwrap();
    let ready = format!("serving e1.0 as {}", uri(socket));
    let started = wait_until(Duration::from_secs(20), || {
        nbd.stdout().contains(&ready) || matches!(nbd.try_wait(), Ok(Some(_)))
    });
    assert!(
        started && nbd.try_wait().unwrap().is_none(),
        "aoe nbd did not start: stdout {:?}, stderr {:?}",
        nbd.stdout(),
        nbd.stderr()
    );
    nbd
}

/// Runs `program args` in this namespace, killed after LIMIT (then the test fails).
fn run(program: &str, args: &[&str]) -> Output {
    run_for(program, args, LIMIT)
        .unwrap_or_else(|| panic!("`{program} {}` did not finish within {LIMIT:?}", args.join(" ")))
}

/// As [`run`], with a time limit; None if it was reached.
fn run_for(program: &str, args: &[&str], limit: Duration) -> Option<Output> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let out = std::thread::scope(|s| {
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let o = s.spawn(move || read_to_end(stdout));
        let e = s.spawn(move || read_to_end(stderr));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                // The child's whole process group, through the kill command.
                let _ = Command::new("kill").args(["-KILL", &format!("-{}", child.id())]).status();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (o.join().unwrap(), e.join().unwrap());
        status.map(|status| Output { status, stdout, stderr })
    });
    out
}

fn read_to_end(mut r: impl std::io::Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}

/// Runs and requires exit status 0; returns stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "`{program} {}`: {:?}: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {at}");
    }
}

/// A file of `data` in scratch space, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(what: &str, data: &[u8]) -> TempFile {
        let path = unique(what);
        std::fs::write(&path, data).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn read(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn json_field<'a>(json: &'a str, key: &str) -> &'a str {
    let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = json[at + key.len() + 3..].trim_start();
    let end = rest.find([',', '\n', '}']).unwrap();
    rest[..end].trim()
}

#[test]
fn nbdinfo_reports_size_and_flags() {
    let test = "nbdinfo_reports_size_and_flags";
    if !available(test, &["nbdinfo"]) {
        return;
    }
    let setup = Setup::new(test, Peer::Program, &[]);
    let json = ok("nbdinfo", &["--json", &setup.uri()]);
    assert_eq!(json_field(&json, "export-size"), DISK.to_string(), "{json}");
    assert_eq!(json_field(&json, "is_read_only"), "false", "{json}");
    assert_eq!(json_field(&json, "can_flush"), "true", "{json}");
    assert_eq!(json_field(&json, "can_fua"), "true", "{json}");
    assert_eq!(json_field(&json, "can_zero"), "true", "{json}");
    assert_eq!(json_field(&json, "can_trim"), "false", "{json}");
    assert_eq!(json_field(&json, "can_multi_conn"), "true", "{json}");
    assert_eq!(json_field(&json, "block_size_maximum"), (32 * MIB).to_string(), "{json}");
    // The default export (empty name) is the disk too, and --list names it.
    let list = ok("nbdinfo", &["--list", &format!("nbd+unix:///?socket={}", setup.socket.0.display())]);
    assert!(list.contains("export=\"e1.0\""), "{list}");

    // A second server on the same disk, read-only: says so, and refuses writes.
    let ro_socket = SocketPath(unique("ro.sock"));
    let _ro = serve_nbd(&setup.link, &ro_socket.0, &["--read-only"]);
    let json = ok("nbdinfo", &["--json", &uri(&ro_socket.0)]);
    assert_eq!(json_field(&json, "is_read_only"), "true", "{json}");
    assert_eq!(json_field(&json, "can_zero"), "false", "{json}");
    let src = TempFile::new("src", &[0x5A; MIB]);
    let out = run("nbdcopy", &[src.path(), &uri(&ro_socket.0)]);
    assert!(!out.status.success(), "nbdcopy wrote to a read-only export");
    assert_same(
        "image after a refused write",
        &setup.image.read_at(0, MIB).unwrap(),
        &pattern(0x4E_4244, MIB),
    );
}

#[test]
fn nbdcopy_both_ways_byte_for_byte() {
    let test = "nbdcopy_both_ways_byte_for_byte";
    if !available(test, &["nbdcopy"]) {
        return;
    }
    let setup = Setup::new(test, Peer::Program, &[]);
    let uri = setup.uri();
    // Read the whole disk, twice at once (two clients, several connections each).
    let want = pattern(0x4E_4244, DISK);
    let outs = [TempFile::new("out-a", &[]), TempFile::new("out-b", &[])];
    std::thread::scope(|s| {
        for out in &outs {
            let uri = &uri;
            s.spawn(move || ok("nbdcopy", &[uri, out.path()]));
        }
    });
    for out in &outs {
        assert_same("nbdcopy from aoe nbd", &out.read(), &want);
    }
    // Write 64 MiB of other data (from offset 0, as nbdcopy does), with a flush, then compare
    // the image file (the rest untouched) and a read back through NBD.
    let data = pattern(0xD47A, 64 * MIB);
    let src = TempFile::new("src", &data);
    ok("nbdcopy", &["--flush", src.path(), &uri]);
    let image = setup.image.read_all();
    assert_same("image file after nbdcopy to aoe nbd", &image[..64 * MIB], &data);
    assert_same("image file past the copy", &image[64 * MIB..], &want[64 * MIB..]);
    let back = TempFile::new("back", &[]);
    ok("nbdcopy", &[&uri, back.path()]);
    assert_same("nbdcopy read back", &back.read(), &image);
}

#[test]
fn qemu_img_compare_and_convert() {
    let test = "qemu_img_compare_and_convert";
    if !available(test, &["qemu-img"]) {
        return;
    }
    let setup = Setup::new(test, Peer::Program, &[]);
    let uri = setup.uri();
    let image = setup.image.path().to_str().unwrap().to_owned();
    let cmp = ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", &image, &uri]);
    assert!(cmp.contains("identical"), "{cmp}");
    // Out to qcow2 and compared with the image.
    let qcow = TempFile::new("qcow2", &[]);
    ok("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", &uri, qcow.path()]);
    let cmp = ok("qemu-img", &["compare", "-f", "qcow2", "-F", "raw", qcow.path(), &image]);
    assert!(cmp.contains("identical"), "{cmp}");
    // In from a raw file with a zero hole in the middle (qemu writes zeroes its own way).
    let mut data = pattern(0x9E3, DISK);
    data[16 * MIB..40 * MIB].fill(0);
    let src = TempFile::new("raw", &data);
    ok("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", src.path(), &uri]);
    assert_same("image file after qemu-img convert", &setup.image.read_all(), &data);
    let cmp = ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", src.path(), &uri]);
    assert!(cmp.contains("identical"), "{cmp}");
}

/// Unmounts, detaches and unmounts again on drop, whatever happened.
struct Mounted {
    fuse_dir: PathBuf,
    loop_dev: Option<String>,
    mnt: PathBuf,
    _nbdfuse: Option<Guarded>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = run_for("umount", &[self.mnt.to_str().unwrap()], Duration::from_secs(30));
        if let Some(dev) = &self.loop_dev {
            let _ = run_for("losetup", &["-d", dev], Duration::from_secs(30));
        }
        let _ = run_for("fusermount3", &["-u", self.fuse_dir.to_str().unwrap()], Duration::from_secs(30));
        let _ = run_for("umount", &["-l", self.fuse_dir.to_str().unwrap()], Duration::from_secs(30));
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = std::fs::remove_dir(&self.fuse_dir);
    }
}

#[test]
fn nbdfuse_loop_ext4_mount() {
    let test = "nbdfuse_loop_ext4_mount";
    if !available(test, &["nbdfuse", "losetup", "mkfs.ext4", "fusermount3"]) {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        return eprintln!("SKIP: {test}: needs /dev/fuse");
    }
    let setup = Setup::new(test, Peer::Program, &[]);
    let fuse_dir = unique("fuse");
    let mnt = unique("mnt");
    std::fs::create_dir(&fuse_dir).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mut m = Mounted { fuse_dir: fuse_dir.clone(), loop_dev: None, mnt: mnt.clone(), _nbdfuse: None };
    let file = fuse_dir.join("disk");
    let mut cmd = Command::new("nbdfuse");
    cmd.arg(&file).arg(setup.uri());
    m._nbdfuse = Some(Guarded::spawn(cmd).unwrap());
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::metadata(&file)
            .is_ok_and(|md| md.len() == DISK as u64)),
        "nbdfuse did not show the disk"
    );
    let dev = ok("losetup", &["-f", "--show", file.to_str().unwrap()]).trim().to_owned();
    m.loop_dev = Some(dev.clone());
    ok("mkfs.ext4", &["-q", "-F", &dev]);
    let mnt_s = mnt.to_str().unwrap().to_owned();
    ok("mount", &[&dev, &mnt_s]);
    let files: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("file{i}"), pattern(0xF11E + i as u64, (3 + i) * MIB + 123))).collect();
    for (name, data) in &files {
        std::fs::write(mnt.join(name), data).unwrap();
    }
    ok("umount", &[&mnt_s]);
    // Mounted again: the files are there, byte for byte (sha256sum as the check).
    ok("mount", &[&dev, &mnt_s]);
    let paths: Vec<String> = files.iter().map(|(n, _)| mnt.join(n).to_str().unwrap().to_owned()).collect();
    let sums = ok("sha256sum", &paths.iter().map(String::as_str).collect::<Vec<_>>());
    for (name, data) in &files {
        let want = TempFile::new("sum", data);
        let want_sum = ok("sha256sum", &[want.path()]);
        let want_sum = want_sum.split_whitespace().next().unwrap();
        assert!(
            sums.lines().any(|l| l.starts_with(want_sum) && l.ends_with(name.as_str())),
            "{name}: {sums}"
        );
        assert_same(name, &std::fs::read(mnt.join(name)).unwrap(), data);
    }
    drop(m);
}

#[test]
fn dead_target_gives_errors_not_a_hang() {
    let test = "dead_target_gives_errors_not_a_hang";
    if !available(test, &["nbdcopy"]) {
        return;
    }
    let mut setup = Setup::new(test, Peer::Program, &["--dead-timeout", "2s"]);
    let uri = setup.uri();
    let first = TempFile::new("first", &[]);
    ok("nbdcopy", &[&uri, first.path()]);
    let stop = |sig: &str| {
        let _ = Command::new("kill").args([sig, &setup.target.pid().to_string()]).status();
    };
    stop("-STOP");
    let out = TempFile::new("out", &[]);
    let started = Instant::now();
    let got = run_for("nbdcopy", &[&uri, out.path()], Duration::from_secs(60));
    stop("-CONT");
    let got = got.expect("nbdcopy hung on a stopped target");
    assert!(!got.status.success(), "nbdcopy from a stopped target succeeded");
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(err.contains("Input/output error"), "{err}");
    eprintln!("{test}: nbdcopy failed after {:.1} s: {}", started.elapsed().as_secs_f64(), err.trim());
    // The target is back: the server serves again.
    let again = TempFile::new("again", &[]);
    ok("nbdcopy", &[&uri, again.path()]);
    assert_same("after the target came back", &again.read(), &pattern(0x4E_4244, DISK));
    // SIGTERM: exits 0, removes its socket.
    let status = setup.nbd.terminate().unwrap();
    assert!(status.success(), "aoe nbd on SIGTERM: {status:?}: {}", setup.nbd.stderr());
    assert!(!setup.socket.0.exists(), "the socket outlived the server");
}

#[test]
fn vblade_nbdcopy_round_trip() {
    let test = "vblade_nbdcopy_round_trip";
    if !available(test, &["nbdcopy", "vblade"]) {
        return;
    }
    let setup = Setup::new(test, Peer::Vblade, &[]);
    let uri = setup.uri();
    let data = pattern(0x7B1A, DISK);
    let src = TempFile::new("src", &data);
    ok("nbdcopy", &["--flush", src.path(), &uri]);
    assert_same("vblade's image after nbdcopy", &setup.image.read_all(), &data);
    let back = TempFile::new("back", &[]);
    ok("nbdcopy", &[&uri, back.path()]);
    assert_same("nbdcopy back from vblade", &back.read(), &data);
}
