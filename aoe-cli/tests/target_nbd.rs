//! The `aoe-target` program exporting NBD servers over AoE: nbdkit's memory plugin on a Unix
//! socket and on TCP loopback, qemu-nbd serving a thin qcow2 image, a read-only export, and
//! an nbdkit stopped and started again mid-transfer. The `aoe` program in the other
//! namespace writes and reads; libnbd's nbdcopy and qemu-img check what the NBD server holds.
//! Needs root and nbdkit, libnbd-bin and qemu-utils; skipped otherwise, unless
//! AOE_REQUIRE_NETNS / AOE_REQUIRE_PEERS say a skip is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aoe_testkit::data::{TempImage, MIB};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::{wait_until, Guarded};

const TARGET: &str = env!("CARGO_BIN_EXE_aoe-target");
const AOE: &str = env!("CARGO_BIN_EXE_aoe");
/// The longest one run of a program may take.
const LIMIT: Duration = Duration::from_secs(120);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A path in the scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Scratch(std::env::temp_dir().join(format!("aoe-target-nbd-{}-{n}-{what}", std::process::id())))
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn text(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn available(test: &str, tools: &[&str]) -> bool {
    netns_available(test) && tools.iter().all(|t| tool_available(test, t))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `nbdkit -f ARGS` on the Unix socket `socket` (reachable from every namespace), once it
/// listens.
fn nbdkit_unix(socket: &Path, args: &[&str]) -> Guarded {
    let _ = std::fs::remove_file(socket);
    let mut cmd = Command::new("nbdkit");
    cmd.args(["-f", "--exit-with-parent", "-U"]).arg(socket).args(args);
    let server = Guarded::spawn(cmd).unwrap();
    assert!(wait_until(Duration::from_secs(10), || socket.exists()), "nbdkit {args:?}: {}", server.stderr());
    server
}

fn unix_uri(socket: &Path, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", socket.display())
}

/// `aoe-target 1 0 IF URI` in the target namespace, once it serves e1.0.
fn target(link: &Link, uri: &str) -> Guarded {
    let mut cmd = link.target.command(TARGET);
    cmd.args(["1", "0", link.target_if(), uri]).env_remove("RUST_LOG");
    let target = Guarded::spawn(cmd).unwrap();
    let ready = format!("e1.0 on {} (", link.target_if());
    assert!(
        wait_until(Duration::from_secs(15), || target.stderr().contains(&ready)),
        "aoe-target {uri} did not start: {:?}",
        target.stderr()
    );
    target
}

/// `aoe ARGS` in the initiator namespace.
fn aoe(link: &Link, args: &[&str]) -> Output {
    let out = link.initiator.run(AOE, args, LIMIT).unwrap();
    eprintln!("$ aoe {}\n{:?}\n{}{}", args.join(" "), out.status, text(&out.stdout), text(&out.stderr));
    out
}

fn aoe_ok(link: &Link, args: &[&str]) {
    let out = aoe(link, args);
    assert!(out.status.success(), "aoe {args:?}: {}", text(&out.stderr));
}

/// Writes `len` bytes of pattern `seed` at `offset` of e1.0 with `aoe write --verify`,
/// reads them back with `aoe read` and compares. Returns the data.
fn write_and_read_back(link: &Link, offset: usize, len: usize, seed: u64) -> Vec<u8> {
    let input = TempImage::new(len, seed).unwrap();
    let offset_arg = offset.to_string();
    aoe_ok(link, &["write", "--verify", "--offset", &offset_arg, "e1.0", input.path().to_str().unwrap()]);
    let back = Scratch::new("back");
    let len_arg = len.to_string();
    aoe_ok(link, &["read", "--offset", &offset_arg, "--length", &len_arg, "e1.0", back.text()]);
    let data = input.read_all();
    assert!(std::fs::read(back.path()).unwrap() == data, "aoe read gave other bytes than aoe wrote");
    data
}

/// What `nbdcopy` reads of the NBD export `uri` (run in `link`'s target namespace, or here).
fn nbdcopy(link: Option<&Link>, uri: &str) -> Vec<u8> {
    let out_file = Scratch::new("nbdcopy");
    let args = ["--", uri, out_file.text()];
    let out = match link {
        Some(link) => link.target.run("nbdcopy", &args, LIMIT).unwrap(),
        None => Command::new("timeout").arg("120").arg("nbdcopy").args(args).output().unwrap(),
    };
    assert!(out.status.success(), "nbdcopy {uri}: {}", text(&out.stderr));
    std::fs::read(out_file.path()).unwrap()
}

#[test]
fn nbdkit_memory_on_a_unix_socket_is_an_aoe_disk() {
    if !available("nbdkit_memory_on_a_unix_socket_is_an_aoe_disk", &["nbdkit", "nbdcopy"]) {
        return;
    }
    let link = Link::new("aoetnbd", 9000).unwrap();
    let socket = Scratch::new("sock");
    let _nbdkit = nbdkit_unix(socket.path(), &["memory", "256M"]);
    let uri = unix_uri(socket.path(), "");
    let target = target(&link, &uri);
    assert!(target.stderr().contains("connected: 268435456 bytes, read-write"), "{}", target.stderr());
    let data = write_and_read_back(&link, 3 * MIB, 24 * MIB, 11);
    let all = nbdcopy(None, &uri);
    assert_eq!(all.len(), 256 * MIB);
    assert!(all[3 * MIB..27 * MIB] == data[..], "the NBD server holds other bytes than aoe wrote");
    assert!(all[..3 * MIB].iter().all(|&b| b == 0));
}

#[test]
fn nbdkit_memory_on_tcp_loopback_is_an_aoe_disk() {
    if !available("nbdkit_memory_on_tcp_loopback_is_an_aoe_disk", &["nbdkit", "nbdcopy"]) {
        return;
    }
    let link = Link::new("aoetnbd", 9000).unwrap();
    // In the target's namespace, on its own loopback: nothing outside sees it.
    let mut cmd = link.target.command("nbdkit");
    cmd.args(["-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", "10809", "memory", "256M"]);
    let nbdkit = Guarded::spawn(cmd).unwrap();
    let probe = |_: ()| link.target.run("nbdinfo", &["--size", "nbd://127.0.0.1"], Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(10), || probe(()).is_ok_and(|o| o.status.success())),
        "nbdkit did not listen: {}",
        nbdkit.stderr()
    );
    let uri = "nbd://127.0.0.1/";
    let _target = target(&link, uri);
    let data = write_and_read_back(&link, 100 * MIB + 512, 16 * MIB, 12);
    let all = nbdcopy(Some(&link), "nbd://127.0.0.1");
    assert!(all[100 * MIB + 512..116 * MIB + 512] == data[..]);
}

#[test]
fn qemu_nbd_serves_a_thin_qcow2_image_over_aoe() {
    if !available("qemu_nbd_serves_a_thin_qcow2_image_over_aoe", &["qemu-nbd", "qemu-img"]) {
        return;
    }
    let link = Link::new("aoetnbd", 9000).unwrap();
    let qcow2 = Scratch::new("disk.qcow2");
    let out =
        Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", qcow2.text(), "64M"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let socket = Scratch::new("qemu.sock");
    let mut cmd = Command::new("qemu-nbd");
    cmd.args(["--persistent", "-f", "qcow2", "-x", "thin", "--socket", socket.text(), qcow2.text()]);
    let mut qemu_nbd = Guarded::spawn(cmd).unwrap();
    assert!(wait_until(Duration::from_secs(10), || socket.path().exists()), "{}", qemu_nbd.stderr());
    let mut target = target(&link, &unix_uri(socket.path(), "thin"));
    assert!(target.stderr().contains("connected: 67108864 bytes"), "{}", target.stderr());
    let offset = 5 * MIB + 4096;
    let data = write_and_read_back(&link, offset, 8 * MIB, 13);
    target.terminate().unwrap();
    qemu_nbd.terminate().unwrap();
    // Thin: only what was written is allocated; and it holds what aoe wrote.
    let raw = Scratch::new("expected.raw");
    let mut expected = vec![0u8; 64 * MIB];
    expected[offset..offset + data.len()].copy_from_slice(&data);
    std::fs::write(raw.path(), &expected).unwrap();
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw", qcow2.text(), raw.text()])
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-img compare: {}{}", text(&out.stdout), text(&out.stderr));
    let size = std::fs::metadata(qcow2.path()).unwrap().len();
    assert!(size < 32 * MIB as u64, "the qcow2 image grew to {size} bytes: not thin");
}

#[test]
fn a_read_only_nbd_export_is_a_read_only_aoe_disk() {
    if !available("a_read_only_nbd_export_is_a_read_only_aoe_disk", &["nbdkit"]) {
        return;
    }
    let link = Link::new("aoetnbd", 9000).unwrap();
    let socket = Scratch::new("sock");
    let _nbdkit = nbdkit_unix(socket.path(), &["-r", "pattern", "16M"]);
    let target = target(&link, &unix_uri(socket.path(), ""));
    assert!(target.stderr().contains("(read-only)"), "{}", target.stderr());
    let back = Scratch::new("back");
    aoe_ok(&link, &["read", "--offset", "1M", "--length", "64K", "e1.0", back.text()]);
    // The pattern plugin: each 8-byte word holds its own offset.
    let got = std::fs::read(back.path()).unwrap();
    assert_eq!(&got[8..16], &(MIB as u64 + 8).to_be_bytes());
    let input = TempImage::new(4096, 5).unwrap();
    let out = aoe(&link, &["write", "e1.0", input.path().to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("aoe: ") && err.lines().count() == 1, "{err:?}");
    assert!(err.contains("read-only") && err.contains("ABRT"), "{err:?}");
}

#[test]
fn nbdkit_restarted_mid_transfer_loses_nothing() {
    if !available("nbdkit_restarted_mid_transfer_loses_nothing", &["nbdkit"]) {
        return;
    }
    let link = Link::new("aoetnbd", 9000).unwrap();
    let image = TempImage::zeroed(64 * MIB).unwrap();
    let image_arg = image.path().to_str().unwrap().to_owned();
    let socket = Scratch::new("sock");
    let mut nbdkit = nbdkit_unix(socket.path(), &["file", &image_arg]);
    let target = target(&link, &unix_uri(socket.path(), ""));
    let input = TempImage::new(48 * MIB, 21).unwrap();
    let mut cmd = link.initiator.command(AOE);
    cmd.args(["write", "--verify", "e1.0", input.path().to_str().unwrap()]);
    let mut writer = Guarded::spawn(cmd).unwrap();
    // Mid-transfer: once some of it is on the file, stop nbdkit and start another.
    let started = wait_until(Duration::from_secs(30), || {
        image.read_at(4 * MIB as u64, 4096).is_ok_and(|b| b.iter().any(|&x| x != 0))
    });
    assert!(started, "nothing was written: {}", writer.stderr());
    nbdkit.terminate().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _nbdkit = nbdkit_unix(socket.path(), &["file", &image_arg]);
    let status = writer.wait_timeout(LIMIT).unwrap().expect("aoe write finished");
    let log = target.stderr();
    assert!(log.contains("connection lost") && log.contains("reconnected"), "{log}");
    if status.success() {
        // --verify read it all back through AoE; the file behind nbdkit agrees.
        assert!(image.read_at(0, 48 * MIB).unwrap() == input.read_all(), "the file holds other bytes");
    } else {
        // Failing is allowed, cleanly: one line, exit 1.
        let err = writer.stderr();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.starts_with("aoe: "), "{err}");
    }
    eprintln!("aoe write across the restart: {status:?}");
}
