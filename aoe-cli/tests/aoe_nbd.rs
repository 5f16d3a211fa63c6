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
    // 8 MiB of it zeroes, which nbdcopy sends as WRITE_ZEROES (fast ones refused first).
    let mut data = pattern(0xD47A, 64 * MIB);
    data[20 * MIB..28 * MIB].fill(0);
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

#[test]
fn tcp_on_loopback_by_default() {
    let test = "tcp_on_loopback_by_default";
    if !available(test, &["nbdinfo"]) {
        return;
    }
    let setup = Setup::new(test, Peer::Program, &[]);
    // Without --unix or --tcp: TCP on 127.0.0.1:10809 (of the initiator's private namespace,
    // where nothing else listens).
    let mut cmd = setup.link.initiator.command(AOE);
    cmd.args(["nbd", "e1.0"]).env_remove("RUST_LOG");
    let mut tcp = Guarded::spawn(cmd).unwrap();
    let ready = "serving e1.0 as nbd://127.0.0.1:10809/e1.0\n";
    assert!(
        wait_until(Duration::from_secs(20), || tcp.stdout().contains(ready)
            || matches!(tcp.try_wait(), Ok(Some(_)))),
        "aoe nbd: stdout {:?}, stderr {:?}",
        tcp.stdout(),
        tcp.stderr()
    );
    let out = setup.link.initiator.run("nbdinfo", &["--json", "nbd://127.0.0.1:10809/e1.0"], LIMIT).unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nbdinfo: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_field(&json, "export-size"), DISK.to_string(), "{json}");
    assert_eq!(json_field(&json, "is_read_only"), "false", "{json}");
    // An explicit address, port chosen by the system: the ready line says which.
    let mut cmd = setup.link.initiator.command(AOE);
    cmd.args(["nbd", "--tcp", "127.0.0.1:0", "--name", "disk", "e1.0"]).env_remove("RUST_LOG");
    let any = Guarded::spawn(cmd).unwrap();
    assert!(wait_until(Duration::from_secs(20), || any.stdout().contains("/disk\n")), "{}", any.stderr());
    let line = any.stdout();
    let uri = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(uri.starts_with("nbd://127.0.0.1:") && !uri.contains(":0/"), "{line}");
    let out = setup.link.initiator.run("nbdinfo", &["--size", &uri], LIMIT).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), DISK.to_string());
    assert!(tcp.terminate().unwrap().success());
}

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    kib.unwrap_or(0) * 1024
}

#[test]
fn clients_that_vanish_or_stop_reading_leave_nothing_behind() {
    use aoe_nbd::wire::{
        ClientFlags, ClientFlagsField, Command as Cmd, CommandFlags, OptionHeader, OptionType, RequestHeader,
    };
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use zerocopy::IntoBytes;

    let test = "clients_that_vanish_or_stop_reading_leave_nothing_behind";
    if !available(test, &["nbdcopy"]) {
        return;
    }
    let setup = Setup::new(test, Peer::Program, &[]);
    let pid = setup.nbd.pid();
    let uri = setup.uri();
    let baseline = threads(pid);
    // nbdcopy killed in the middle of a copy, three times.
    for _ in 0..3 {
        let out = TempFile::new("killed", &[]);
        let mut cmd = Command::new("nbdcopy");
        cmd.args([&uri, out.path()]);
        let mut copy = Guarded::spawn(cmd).unwrap();
        wait_until(Duration::from_secs(10), || std::fs::metadata(&out.0).is_ok_and(|m| m.len() > 0));
        let _ = Command::new("kill").args(["-KILL", &format!("-{}", copy.pid())]).status();
        let _ = copy.wait_timeout(Duration::from_secs(10));
    }
    // A client that asks for 2 GiB and never reads the replies, then goes away.
    let mut c = UnixStream::connect(&setup.socket.0).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hello = ClientFlagsField::new(ClientFlags::all()).as_bytes().to_vec();
    hello.extend_from_slice(OptionHeader::new(OptionType::ExportName, 0).as_bytes());
    c.write_all(&hello).unwrap();
    let mut greeting = [0u8; 18 + 10];
    c.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    let mut reqs = Vec::new();
    for i in 0..2048u64 {
        let offset = (i % (DISK as u64 / MIB as u64 - 1)) * MIB as u64;
        reqs.extend_from_slice(
            RequestHeader::new(Cmd::Read, CommandFlags::empty(), i, offset, MIB as u32).as_bytes(),
        );
    }
    c.write_all(&reqs).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let held = rss(pid);
    assert!(held < 512 * MIB as u64, "aoe nbd holds {held} bytes for a client that does not read");
    drop(c);
    // A client that connects and goes away during the handshake.
    drop(UnixStream::connect(&setup.socket.0).unwrap());
    assert!(
        wait_until(Duration::from_secs(30), || threads(pid) <= baseline),
        "aoe nbd has {} threads, {baseline} before the clients",
        threads(pid)
    );
    // And it still serves.
    let again = TempFile::new("again", &[]);
    ok("nbdcopy", &[&uri, again.path()]);
    assert_same("after the vanished clients", &again.read(), &pattern(0x4E_4244, DISK));
}

#[test]
fn raw_client_unaligned_pipelined_and_refused_requests() {
    use aoe_nbd::wire::{
        ClientFlags, ClientFlagsField, Command as Cmd, CommandFlags, OptionHeader, OptionType, RequestHeader,
        SimpleReplyHeader, EINVAL, ENOSPC,
    };
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use zerocopy::IntoBytes;

    let test = "raw_client_unaligned_pipelined_and_refused_requests";
    if !available(test, &[]) {
        return;
    }
    let setup = Setup::new(test, Peer::Program, &[]);
    let mut c = UnixStream::connect(&setup.socket.0).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut hello = ClientFlagsField::new(ClientFlags::all()).as_bytes().to_vec();
    hello.extend_from_slice(OptionHeader::new(OptionType::ExportName, 0).as_bytes());
    c.write_all(&hello).unwrap();
    let mut greeting = [0u8; 18 + 10];
    c.read_exact(&mut greeting).unwrap();
    assert_eq!(u64::from_be_bytes(greeting[18..26].try_into().unwrap()), DISK as u64);

    let mut model = pattern(0x4E_4244, DISK);
    let disk = DISK as u64;
    let a = pattern(0xA, 3000);
    let b = pattern(0xB, 4096);
    // (handle, command, flags, offset, length, payload, expected error, read length)
    let mut sent = Vec::new();
    let mut expect: HashMap<u64, (u32, usize)> = HashMap::new();
    let mut push = |h: u64, cmd: Cmd, flags: CommandFlags, off: u64, len: u32, payload: &[u8], err: u32| {
        sent.extend_from_slice(RequestHeader::new(cmd, flags, h, off, len).as_bytes());
        sent.extend_from_slice(payload);
        let read = if cmd == Cmd::Read && err == 0 { len as usize } else { 0 };
        expect.insert(h, (err, read));
    };
    push(1, Cmd::Write, CommandFlags::empty(), 1000, 3000, &a, 0);
    push(2, Cmd::WriteZeroes, CommandFlags::empty(), 5001, 10_000, &[], 0);
    push(3, Cmd::Write, CommandFlags::FUA, 65_536, 4096, &b, 0);
    push(4, Cmd::Flush, CommandFlags::empty(), 0, 0, &[], 0);
    push(5, Cmd::Read, CommandFlags::empty(), disk - 10, 20, &[], EINVAL);
    push(6, Cmd::Write, CommandFlags::empty(), disk - 10, 20, &[7u8; 20], ENOSPC);
    push(7, Cmd::Trim, CommandFlags::empty(), 0, 4096, &[], EINVAL);
    push(8, Cmd::WriteZeroes, CommandFlags::FAST_ZERO, 0, 4096, &[], aoe_nbd::wire::ENOTSUP);
    push(9, Cmd::Read, CommandFlags::empty(), disk - 7, 7, &[], 0);
    c.write_all(&sent).unwrap();
    model[1000..4000].copy_from_slice(&a);
    model[5001..15_001].fill(0);
    model[65_536..65_536 + 4096].copy_from_slice(&b);
    let mut replies = HashMap::new();
    while replies.len() < expect.len() {
        let mut h = [0u8; 16];
        c.read_exact(&mut h).unwrap();
        let (r, _) = SimpleReplyHeader::parse(&h).unwrap();
        let (err, read) = expect[&r.handle()];
        assert_eq!(r.error(), err, "handle {}", r.handle());
        let mut data = vec![0u8; read];
        c.read_exact(&mut data).unwrap();
        assert!(replies.insert(r.handle(), data).is_none(), "two replies to {}", r.handle());
    }
    assert_eq!(replies[&9], model[DISK - 7..]);
    // Reads that straddle what was written, in flight together.
    let mut reqs = Vec::new();
    let spans = [(999u64, 3002u32), (5000, 10_002), (65_535, 4098), (0, 70_000)];
    for (i, (off, len)) in spans.iter().enumerate() {
        reqs.extend_from_slice(
            RequestHeader::new(Cmd::Read, CommandFlags::empty(), 100 + i as u64, *off, *len).as_bytes(),
        );
    }
    c.write_all(&reqs).unwrap();
    for _ in spans {
        let mut h = [0u8; 16];
        c.read_exact(&mut h).unwrap();
        let (r, _) = SimpleReplyHeader::parse(&h).unwrap();
        assert_eq!(r.error(), 0);
        let (off, len) = spans[(r.handle() - 100) as usize];
        let mut data = vec![0u8; len as usize];
        c.read_exact(&mut data).unwrap();
        assert_same(
            &format!("read {len} at {off}"),
            &data,
            &model[off as usize..off as usize + len as usize],
        );
    }
    c.write_all(RequestHeader::new(Cmd::Disc, CommandFlags::empty(), 200, 0, 0).as_bytes()).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after DISC: {rest:?}");
    assert_same("image file", &setup.image.read_all(), &model);
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    let test = "connections_beyond_the_limit_are_closed";
    if !available(test, &[]) {
        return;
    }
    let setup = Setup::new(test, Peer::Program, &[]);
    let greet = |c: &mut UnixStream| -> usize {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut g = [0u8; 18];
        let mut got = 0;
        while got < g.len() {
            match c.read(&mut g[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    };
    // 64 clients at once, each greeted (they sit in the handshake).
    let mut held: Vec<UnixStream> = (0..64).map(|_| UnixStream::connect(&setup.socket.0).unwrap()).collect();
    for c in &mut held {
        assert_eq!(greet(c), 18);
    }
    let mut extra = UnixStream::connect(&setup.socket.0).unwrap();
    assert_eq!(greet(&mut extra), 0, "a 65th connection was served");
    drop(held);
    // Once they are gone, new clients are served again.
    assert!(wait_until(Duration::from_secs(20), || greet(
        &mut UnixStream::connect(&setup.socket.0).unwrap()
    ) == 18));
}
