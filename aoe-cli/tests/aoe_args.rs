//! The `aoe` program's command line: help, and one-line errors for arguments that make no
//! sense, found before any network traffic. Needs no privilege.
//!
//! Every command that gets past argument checking names an interface that does not exist
//! (`-i`), so a regression that reached the network would fail here instead of talking on a
//! real interface of the machine.

use std::process::{Command, Output};

const AOE: &str = env!("CARGO_BIN_EXE_aoe");
/// An interface name no machine has.
const NO_IF: &str = "aoe-no-such0";

fn aoe(args: &[&str]) -> Output {
    let out = Command::new(AOE).args(args).env_remove("RUST_LOG").output().expect("run aoe");
    eprintln!(
        "aoe {}: {:?}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `aoe ARGS` and checks it fails with `code` and exactly one stderr line, which
/// contains `want`. Returns the line.
fn fails(args: &[&str], code: i32, want: &str) -> String {
    let out = aoe(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "aoe {args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "aoe {args:?} printed on stdout");
    assert_eq!(stderr.lines().count(), 1, "aoe {args:?}: not one line: {stderr:?}");
    assert!(stderr.starts_with("aoe: "), "{stderr:?}");
    assert!(stderr.contains(want), "aoe {args:?}: {stderr:?} lacks {want:?}");
    stderr
}

#[test]
fn bad_disk_names_are_usage_errors() {
    for (name, want) in [
        ("x1.0", "\"x1.0\" is not a disk name: use e<shelf>.<slot>, e.g. e1.0"),
        ("e1", "\"e1\" is not a disk name"),
        ("e1.0.1", "is not a disk name"),
        ("e65535.0", "e65535.0: shelf 65535 is the broadcast shelf; use 0 to 65534"),
        ("e1.255", "e1.255: slot 255 is the broadcast slot; use 0 to 254"),
        ("e1.999", "slot 999 is too large; use 0 to 254"),
    ] {
        let line = fails(&["-i", NO_IF, "identify", name], 2, want);
        assert!(line.trim_end().ends_with("(see aoe identify --help)"), "{line:?}");
    }
    fails(&["-i", NO_IF, "read", "e1.x", "out"], 2, "is not a disk name");
}

#[test]
fn bad_macs_are_usage_errors() {
    fails(
        &["-i", NO_IF, "mask", "e1.0", "add", "00:11:22:33:44"],
        2,
        "\"00:11:22:33:44\" is not a MAC address (like 00:11:22:aa:bb:cc or 001122aabbcc)",
    );
    fails(&["-i", NO_IF, "reserve", "e1.0", "set", "zz:11:22:33:44:55"], 2, "is not a MAC address");
    fails(&["-i", NO_IF, "mask", "e1.0", "add"], 2, "mask add needs at least one MAC");
    fails(&["-i", NO_IF, "mask", "e1.0", "list", "001122334455"], 2, "mask list takes no MAC");
    fails(&["-i", NO_IF, "reserve", "e1.0", "release", "001122334455"], 2, "reserve release takes no MAC");
}

#[test]
fn bad_sizes_are_usage_errors() {
    fails(
        &["-i", NO_IF, "read", "--length", "12X", "e1.0", "out"],
        2,
        "\"12X\" is not a size: unknown suffix \"X\"",
    );
    fails(&["-i", NO_IF, "write", "--offset", "1.5G", "e1.0", "in"], 2, "is not a size");
    fails(&["-i", NO_IF, "read", "--offset", "K", "e1.0", "out"], 2, "no number");
    fails(&["-i", NO_IF, "bench", "--size", "99999999999T", "e1.0"], 2, "too large");
    fails(&["-i", NO_IF, "--timeout", "soon", "discover"], 2, "\"soon\" is not a duration");
}

#[test]
fn other_usage_errors() {
    fails(&["frobnicate"], 2, "unrecognized subcommand 'frobnicate' (see aoe --help)");
    fails(&["-i", NO_IF, "read", "e1.0"], 2, "required arguments were not provided");
    fails(&["-i", NO_IF, "config", "e1.0", "set"], 2, "config set needs a STRING");
    fails(&["-i", NO_IF, "config", "e1.0", "read", "x"], 2, "config read takes no STRING");
    fails(&["-i", NO_IF, "config", "e1.0", "frob"], 2, "invalid value 'frob' for '[ACTION]'");
    let long = "x".repeat(1025);
    fails(&["-i", NO_IF, "config", "e1.0", "force", &long], 2, "1025 bytes long; at most 1024 fit");
}

#[test]
fn missing_input_file_fails_before_the_network() {
    fails(&["-i", NO_IF, "write", "e1.0", "/nonexistent/aoe-input"], 1, "cannot open /nonexistent/aoe-input");
}

#[test]
fn unknown_interface_is_one_line() {
    fails(&["-i", NO_IF, "discover"], 1, "no such interface: aoe-no-such0");
    fails(&["discover", NO_IF], 1, "no such interface: aoe-no-such0");
}

#[test]
fn every_command_has_help_with_an_example() {
    let out = aoe(&["--help"]);
    assert!(out.status.success());
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(top.contains("Examples:") && top.contains("powers of 1024"), "{top}");
    for cmd in ["discover", "identify", "config", "mask", "reserve", "read", "write", "bench", "demo"] {
        for flag in ["-h", "--help"] {
            let out = aoe(&[cmd, flag]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "aoe {cmd} {flag}");
            assert!(text.contains(&format!("Usage: aoe {cmd}")), "aoe {cmd} {flag}: {text}");
            assert!(
                text.contains(&format!("Examples:\n  aoe {cmd}")) || text.contains("sudo aoe demo"),
                "{text}"
            );
        }
    }
    for (cmd, unit) in [("read", "powers of 1024"), ("write", "powers of 1024"), ("bench", "BYTES")] {
        let text = String::from_utf8_lossy(&aoe(&[cmd, "--help"]).stdout).into_owned();
        assert!(text.contains(unit), "aoe {cmd} --help lacks {unit:?}");
    }
    let out = aoe(&["--version"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("aoe "));
}

#[test]
fn nbd_bad_arguments_and_unusable_sockets() {
    fails(
        &["-i", NO_IF, "nbd", "--unix", "/tmp/x", "--tcp", "127.0.0.1:1", "e1.0"],
        2,
        "cannot be used with",
    );
    fails(&["-i", NO_IF, "nbd", "--tcp", "localhost", "e1.0"], 2, "invalid socket address");
    fails(
        &["-i", NO_IF, "nbd", "--unix", "/nonexistent-aoe-dir/s", "e1.0"],
        1,
        "cannot listen on /nonexistent-aoe-dir/s",
    );
    let name = format!("--name={}", "x".repeat(5000));
    fails(&["-i", NO_IF, "nbd", &name, "e1.0"], 2, "at most 4096 bytes");
    // Past the arguments the interface is missing: one line, nothing on stdout, and the
    // socket it listened on is gone again.
    let sock = std::env::temp_dir().join(format!("aoe-args-nbd-{}.sock", std::process::id()));
    fails(&["-i", NO_IF, "nbd", "--unix", sock.to_str().unwrap(), "e1.0"], 1, NO_IF);
    assert!(!sock.exists(), "aoe nbd left its socket behind");
}

#[test]
fn nbd_replaces_a_dead_socket_but_not_a_live_one() {
    use std::os::unix::net::UnixListener;
    let dir = std::env::temp_dir();
    // A socket file whose server is gone is taken over (then the missing interface fails).
    let dead = dir.join(format!("aoe-args-nbd-dead-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&dead);
    drop(UnixListener::bind(&dead).unwrap());
    assert!(dead.exists());
    fails(&["-i", NO_IF, "nbd", "--unix", dead.to_str().unwrap(), "e1.0"], 1, NO_IF);
    assert!(!dead.exists());
    // A live one is left alone.
    let live = dir.join(format!("aoe-args-nbd-live-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&live);
    let listener = UnixListener::bind(&live).unwrap();
    fails(&["-i", NO_IF, "nbd", "--unix", live.to_str().unwrap(), "e1.0"], 1, "cannot listen on");
    assert!(live.exists(), "aoe nbd removed another server's socket");
    drop(listener);
    let _ = std::fs::remove_file(&live);
}
