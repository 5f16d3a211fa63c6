//! Operating a running `aoe-target`: live reload (SIGHUP and `aoe-target ctl reload`) while
//! an initiator streams a read, the Prometheus metrics endpoint, the control socket's
//! answers and whom it refuses, and systemd's notifications. On a veth link between two
//! private network namespaces, driven by our `aoe` tool.
//!
//! Needs root, curl and setpriv; skipped otherwise, unless AOE_REQUIRE_NETNS /
//! AOE_REQUIRE_PEERS say a skip is a failure.

// kill has no safe wrapper in std.
#![allow(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::{wait_until, Guarded};

const AOE_TARGET: &str = env!("CARGO_BIN_EXE_aoe-target");
const AOE: &str = env!("CARGO_BIN_EXE_aoe");

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("aoe-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(target: &Guarded, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(target.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Starts `aoe-target -v --config CONFIG ARGS` in the target namespace; waits for `ready`
/// in its log.
fn start(link: &Link, config: &Path, args: &[&str], env: &[(&str, &str)], ready: &str) -> Guarded {
    let mut cmd = link.target.command(AOE_TARGET);
    cmd.args(["-v", "--config", config.to_str().unwrap()]).args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let target = Guarded::spawn(cmd).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || target.stderr().contains(ready)),
        "aoe-target did not start: {:?}",
        target.stderr()
    );
    target
}

/// SIGTERM, and a clean exit; returns the log.
fn stop(mut target: Guarded) -> String {
    signal(&target, libc::SIGTERM);
    let status = target.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{:?}", target.stderr());
    target.stderr()
}

/// Runs `program ARGS` (at most 60 s) and echoes what it said.
fn echo(program: &str, args: &[&str], out: &Output) {
    eprintln!(
        "{program} {}: {:?}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `aoe ARGS` in the initiator namespace, with short timeouts.
fn aoe(link: &Link, args: &[&str]) -> Output {
    let mut all = vec!["-i", link.initiator_if(), "--timeout", "0.5", "--dead-timeout", "3"];
    all.extend_from_slice(args);
    let out = link.initiator.run(AOE, &all, Duration::from_secs(60)).unwrap();
    echo("aoe", &all, &out);
    out
}

/// `aoe-target ctl --socket SOCKET ARGS` (the socket is a file: any namespace will do).
fn ctl(socket: &Path, args: &[&str]) -> Output {
    let mut all = vec!["ctl", "--socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run_bounded(std::process::Command::new(AOE_TARGET).args(&all));
    echo("aoe-target", &all, &out);
    out
}

/// Runs a command for at most 30 s.
fn run_bounded(cmd: &mut std::process::Command) -> Output {
    let mut child = Guarded::spawn(std::mem::replace(cmd, std::process::Command::new("true"))).unwrap();
    let status = child.wait_timeout(Duration::from_secs(30)).unwrap().expect("the command ended in time");
    Output { status, stdout: child.stdout().into_bytes(), stderr: child.stderr().into_bytes() }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn export(shelf: u16, slot: u8, iface: &str, file: &Path, extra: &str) -> String {
    format!(
        "\n[[export]]\nshelf = {shelf}\nslot = {slot}\ninterfaces = [{iface:?}]\nfile = {file:?}\n{extra}"
    )
}

#[test]
fn reload_adds_removes_and_changes_exports_while_another_streams_a_read() {
    let test = "reload_adds_removes_and_changes_exports_while_another_streams_a_read";
    if !netns_available(test) {
        return;
    }
    let link = Link::new("tgreload", 1500).unwrap();
    let iface = link.target_if().to_owned();
    let scratch = Scratch::new("reload");
    let big = TempImage::zeroed(64 * MIB).unwrap();
    std::fs::write(big.path(), pattern(11, 64 * MIB)).unwrap();
    let small = TempImage::zeroed(4 * MIB).unwrap();
    let added = TempImage::zeroed(4 * MIB).unwrap();
    std::fs::write(added.path(), pattern(12, 4 * MIB)).unwrap();
    let socket = scratch.path("ctl.sock");
    let config = scratch.path("exports.toml");
    let head = format!("control = {socket:?}\n");
    let streamed = export(5, 0, &iface, big.path(), "");
    std::fs::write(&config, format!("{head}{streamed}{}", export(5, 1, &iface, small.path(), ""))).unwrap();
    let target = start(&link, &config, &[], &[], &format!("e5.1 on {iface} ("));

    // One initiator reads all of e5.0 while the configuration changes around it.
    let out_file = scratch.path("streamed");
    let mut read = link.initiator.command(AOE);
    read.args(["-i", link.initiator_if(), "read", "e5.0", out_file.to_str().unwrap()]);
    let mut reader = Guarded::spawn(read).unwrap();

    // Added: announced and served.
    let with_added = export(5, 2, &iface, added.path(), "");
    std::fs::write(
        &config,
        format!("{head}{streamed}{}{with_added}", export(5, 1, &iface, small.path(), "")),
    )
    .unwrap();
    let out = ctl(&socket, &["reload"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("added e5.2"), "{}", text(&out.stdout));
    let part = scratch.path("part");
    assert!(aoe(&link, &["read", "--length", "64K", "e5.2", part.to_str().unwrap()]).status.success());
    assert!(std::fs::read(&part).unwrap() == pattern(12, 4 * MIB)[..64 << 10]);

    // Changed: the buffer count and the mask of e5.1 applied in place.
    let changed = export(5, 1, &iface, small.path(), "buffer_count = 8\nmask = [\"02:00:5e:00:00:77\"]\n");
    std::fs::write(&config, format!("{head}{streamed}{changed}{with_added}")).unwrap();
    let out = ctl(&socket, &["reload"]);
    assert!(text(&out.stdout).contains("changed e5.1 (mask, buffer_count)"), "{}", text(&out.stdout));
    let status = text(&ctl(&socket, &["status"]).stdout);
    assert!(status.contains("e5.1: 8192 sectors") && status.contains("bufcnt 8"), "{status}");
    let out = aoe(&link, &["read", "--length", "64K", "e5.1", part.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "outside the new mask");

    // Removed (by SIGHUP this time): it no longer answers.
    std::fs::write(&config, format!("{head}{streamed}{with_added}")).unwrap();
    signal(&target, libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || target.stderr().contains("removed e5.1")),
        "{}",
        target.stderr()
    );
    let status = text(&ctl(&socket, &["status"]).stdout);
    assert!(!status.contains("e5.1") && status.contains("e5.2"), "{status}");

    // Interfaces: e5.2 offered on a second interface too, which gets a server of its own,
    // then on the first alone again, which stops that server.
    // (A veth pair of its own inside the target's namespace: this kernel may have no dummy.)
    for args in [
        &["link", "add", "aoedummy0", "type", "veth", "peer", "name", "aoedummy1"][..],
        &["link", "set", "aoedummy1", "up"],
        &["link", "set", "aoedummy0", "up"],
    ] {
        let out = link.target.run("ip", args, Duration::from_secs(5)).unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let two = with_added.replace(&format!("[{iface:?}]"), &format!("[{iface:?}, \"aoedummy0\"]"));
    std::fs::write(&config, format!("{head}{streamed}{two}")).unwrap();
    let out = ctl(&socket, &["reload"]);
    assert!(text(&out.stdout).contains("changed e5.2 (interfaces)"), "{}", text(&out.stdout));
    assert!(text(&ctl(&socket, &["status"]).stdout).contains("aoedummy0: "));
    std::fs::write(&config, format!("{head}{streamed}{with_added}")).unwrap();
    let out = ctl(&socket, &["reload"]);
    assert!(text(&out.stdout).contains("stopped serving on aoedummy0"), "{}", text(&out.stdout));
    assert!(!text(&ctl(&socket, &["status"]).stdout).contains("aoedummy0"));

    // Read-only: the file is reopened so, and writes are refused; reads go on.
    let read_only = format!("{with_added}read_only = true\n");
    std::fs::write(&config, format!("{head}{streamed}{read_only}")).unwrap();
    let out = ctl(&socket, &["reload"]);
    assert!(text(&out.stdout).contains("reopened e5.2"), "{}", text(&out.stdout));
    let out = aoe(&link, &["write", "e5.2", part.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a read-only export refuses writes");
    assert!(aoe(&link, &["read", "--length", "64K", "e5.2", part.to_str().unwrap()]).status.success());
    assert!(std::fs::read(&part).unwrap() == pattern(12, 4 * MIB)[..64 << 10]);

    // A file with an error is refused, with its place; the running exports keep serving.
    std::fs::write(&config, format!("{head}{streamed}\n[[export]\nshelf = 9\n")).unwrap();
    let out = ctl(&socket, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:", config.display())) && err.contains("exports.toml:"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(wait_until(Duration::from_secs(5), || target.stderr().contains("reload refused")));
    let refused: Vec<String> =
        target.stderr().lines().filter(|l| l.contains("reload refused")).map(str::to_owned).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("exports.toml:"), "{refused:?}");
    assert!(aoe(&link, &["read", "--length", "64K", "e5.2", part.to_str().unwrap()]).status.success());

    // The streamed read ran through all of it without an error.
    let started = Instant::now();
    let status = reader.wait_timeout(Duration::from_secs(240)).unwrap().expect("the read ended");
    eprintln!("the read went on {:?} after the reloads; {}", started.elapsed(), reader.stderr());
    assert!(status.success(), "{}", reader.stderr());
    assert!(std::fs::read(&out_file).unwrap() == pattern(11, 64 * MIB), "the data read is the file's");
    let log = stop(target);
    let errors: Vec<&str> =
        log.lines().filter(|l| l.contains("ERROR") && !l.contains("reload refused")).collect();
    assert!(errors.is_empty(), "{log}");
}

/// The value of the sample `name` in a scrape.
fn sample(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{scrape}"))
}

fn scrape(link: &Link, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = link.target.run("curl", &["-sf", "--max-time", "5", &url], Duration::from_secs(10)).unwrap();
    assert!(out.status.success(), "curl {url}: {out:?}");
    text(&out.stdout)
}

#[test]
fn metrics_move_by_the_bytes_read_and_ctl_answers_root_only() {
    let test = "metrics_move_by_the_bytes_read_and_ctl_answers_root_only";
    if !netns_available(test) || !tool_available(test, "curl") || !tool_available(test, "setpriv") {
        return;
    }
    let link = Link::new("tgmetric", 1500).unwrap();
    let iface = link.target_if().to_owned();
    let scratch = Scratch::new("metrics");
    let image = TempImage::zeroed(4 * MIB).unwrap();
    let socket = scratch.path("ctl.sock");
    let config = scratch.path("metrics.toml");
    let port = 9172;
    std::fs::write(
        &config,
        format!("metrics = \"127.0.0.1:{port}\"\n{}", export(6, 0, &iface, image.path(), "")),
    )
    .unwrap();
    let target =
        start(&link, &config, &["--control", socket.to_str().unwrap()], &[], &format!("e6.0 on {iface} ("));

    let bytes = "aoe_target_read_bytes_total{export=\"e6.0\"}";
    let received = format!("aoe_target_frames_received_total{{interface=\"{iface}\"}}");
    let before = scrape(&link, port);
    let out_file = scratch.path("read");
    assert!(aoe(&link, &["read", "--length", "1M", "e6.0", out_file.to_str().unwrap()]).status.success());
    let after = scrape(&link, port);
    assert_eq!(sample(&after, bytes) - sample(&before, bytes), 1 << 20);
    assert!(sample(&after, &received) > sample(&before, &received));
    let reads = "aoe_target_requests_total{export=\"e6.0\",command=\"read\"}";
    assert!(sample(&after, reads) >= 512, "{after}");
    assert!(after.contains("# TYPE aoe_target_io_latency_seconds histogram"), "{after}");

    // stats --json parses and agrees.
    let out = ctl(&socket, &["stats", "--json"]);
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["exports"][0]["name"], "e6.0");
    assert!(stats["exports"][0]["read_bytes"].as_u64().unwrap() >= 1 << 20);
    let out = ctl(&socket, &["monitor", "1", "--count", "2"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).lines().filter(|l| l.starts_with("e6.0")).count(),
        2,
        "{}",
        text(&out.stdout)
    );

    // Another user: the socket's mode keeps it out, and so does the peer check when the mode
    // would not.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let nobody = scratch.path("aoe-target");
    std::fs::copy(AOE_TARGET, &nobody).unwrap();
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = || {
        run_bounded(
            std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&nobody)
                .args(["ctl", "--socket", socket.to_str().unwrap(), "status"]),
        )
    };
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("Permission denied"), "{}", text(&out.stderr));
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("permission denied: user 65534"), "{}", text(&out.stderr));
    assert!(ctl(&socket, &["status"]).status.success(), "root is answered");
    stop(target);
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let test = "systemd_hears_ready_reloading_and_stopping";
    if !netns_available(test) {
        return;
    }
    let link = Link::new("tgnotify", 1500).unwrap();
    let iface = link.target_if().to_owned();
    let scratch = Scratch::new("notify");
    let image = TempImage::zeroed(MIB).unwrap();
    let config = scratch.path("notify.toml");
    let socket = scratch.path("ctl.sock");
    std::fs::write(&config, format!("control = {socket:?}\n{}", export(7, 0, &iface, image.path(), "")))
        .unwrap();
    let notify = scratch.path("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = listener.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let target = start(
        &link,
        &config,
        &[],
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
        &format!("e7.0 on {iface} ("),
    );
    assert_eq!(next(), "READY=1\n");
    signal(&target, libc::SIGHUP);
    let reloading = next();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    assert_eq!(next(), "READY=1\n");
    assert!(ctl(&socket, &["reload"]).status.success());
    assert!(next().starts_with("RELOADING=1\n"));
    assert_eq!(next(), "READY=1\n");
    signal(&target, libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1\n");
    stop_reaped(target);
}

/// Waits for a target already told to stop.
fn stop_reaped(mut target: Guarded) {
    let status = target.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{:?}", target.stderr());
}

/// A tmpfs mounted for one test, unmounted on drop.
struct SmallFs(PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_is_logged_once_per_run_of_failures_and_counted() {
    let test = "a_full_disk_is_logged_once_per_run_of_failures_and_counted";
    if !netns_available(test) || !tool_available(test, "curl") {
        return;
    }
    let link = Link::new("tgfull", 1500).unwrap();
    let iface = link.target_if().to_owned();
    let scratch = Scratch::new("full");
    // A 4 MiB export in a sparse file on a 256 KiB file system: writes past its room fail
    // with ENOSPC.
    let fs = SmallFs(scratch.path("fs"));
    std::fs::create_dir(&fs.0).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "aoe-ops-full"])
        .arg(&fs.0)
        .status()
        .unwrap();
    assert!(mounted.success());
    let image = fs.0.join("disk.img");
    std::fs::File::create(&image).unwrap().set_len(4 * MIB as u64).unwrap();
    let config = scratch.path("full.toml");
    let port = 9173;
    std::fs::write(&config, format!("metrics = \"127.0.0.1:{port}\"\n{}", export(8, 0, &iface, &image, "")))
        .unwrap();
    let target = start(&link, &config, &[], &[], &format!("e8.0 on {iface} ("));
    let data = scratch.path("data");
    std::fs::write(&data, pattern(3, 2 * MIB)).unwrap();
    let out = aoe(&link, &["write", "e8.0", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "the write cannot all land");
    let scraped = scrape(&link, port);
    let failures = sample(&scraped, "aoe_target_backend_errors_total{export=\"e8.0\",op=\"write\"}");
    assert!(failures >= 1, "{scraped}");
    assert!(sample(&scraped, "aoe_target_ata_errors_total{export=\"e8.0\"}") >= failures);
    let log = stop(target);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert!(!warnings.is_empty(), "{log}");
    assert!(
        warnings.iter().all(|l| l.contains("e8.0: backend write of") && l.contains("(os error 28)")),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("at byte ") && warnings[0].contains("No space left on device"),
        "{warnings:?}"
    );
    eprintln!("{failures} failed writes, {} warnings", warnings.len());
    if failures > 1 {
        assert!((warnings.len() as u64) < failures, "not one line per failed frame: {warnings:?}");
    }
}
