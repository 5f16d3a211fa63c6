//! The `aoe-target` program's command line: help, version, and one line on stderr with a
//! non-zero exit for every bad setting. Nothing here opens a socket; only the test of
//! `--check` accepting good settings needs root (for an interface in a private namespace).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aoe_testkit::data::TempImage;
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::netns_available;
use aoe_testkit::process::Guarded;

const BIN: &str = env!("CARGO_BIN_EXE_aoe-target");

/// Runs the program to completion (at most 10 s) and returns exit code, stdout and stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    let mut child = Guarded::spawn(cmd).unwrap();
    let status = child.wait_timeout(Duration::from_secs(10)).unwrap();
    let status = status.unwrap_or_else(|| panic!("aoe-target {args:?} still running after 10 s"));
    (status.code().expect("exited normally"), child.stdout(), child.stderr())
}

/// Asserts that the program refuses `args` with exit status `code` and exactly one line on
/// stderr, `aoe-target: ...` containing `want`.
fn refused(args: &[&str], code: i32, want: &str) {
    let (got, stdout, stderr) = run(args);
    assert_eq!(got, code, "aoe-target {args:?}: stderr {stderr:?}");
    assert_eq!(stdout, "", "aoe-target {args:?}");
    assert_eq!(stderr.lines().count(), 1, "aoe-target {args:?}: not one line: {stderr:?}");
    assert!(stderr.starts_with("aoe-target: ") && stderr.ends_with('\n'), "{stderr:?}");
    assert!(stderr.contains(want), "aoe-target {args:?}: {stderr:?} lacks {want:?}");
}

fn config(text: &str) -> TempImage {
    let file = TempImage::zeroed(0).unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn path(p: &TempImage) -> &str {
    p.path().to_str().unwrap()
}

#[test]
fn help_reads_like_a_manual() {
    let (code, help, stderr) = run(&["--help"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    for want in [
        "Usage: aoe-target [OPTIONS] SHELF SLOT NETIF FILE",
        "--config FILE",
        "-b, --buffer-count <BUFCNT>",
        "[default: 16]",
        "-o, --offset <SECTORS>",
        "Sectors of 512 bytes",
        "-l, --length <SECTORS>",
        "-d, --direct",
        "O_DIRECT",
        "-s, --sync",
        "O_SYNC",
        "-r, --read-only",
        "-m, --mask <MAC[,MAC...]>",
        "001122aabbcc",
        "-v, --verbose",
        "RUST_LOG",
        "[SHELF]",
        "0 to 65534",
        "[SLOT]",
        "0 to 254",
        "[NETIF]",
        "[FILE]",
        "Examples:",
        "aoe-target 1 0 eth1 /srv/disk0.img",
        "Configuration file:",
        "[[export]]",
        "interfaces = [\"eth1\", \"eth2\"]",
        "SIGTERM",
        "Exit status:",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
    let (code, short, _) = run(&["-h"]);
    assert_eq!(code, 0);
    assert!(short.len() < help.len() && short.contains("--help"), "{short}");
    let (code, version, _) = run(&["--version"]);
    assert_eq!((code, version.trim()), (0, concat!("aoe-target ", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn bad_command_lines() {
    let image = TempImage::zeroed(16 * 512).unwrap();
    let img = path(&image);
    refused(&[], 2, "the following required arguments were not provided: <SHELF> <SLOT> <NETIF> <FILE>");
    refused(&["1", "0", "lo"], 2, "<FILE>");
    refused(&["-x", "1", "0", "lo", img], 2, "unexpected argument '-x'");
    refused(&["1", "256", "lo", img], 2, "invalid value '256' for '[SLOT]'");
    refused(&["65536", "0", "lo", img], 2, "invalid value '65536' for '[SHELF]'");
    refused(&["-b", "0", "1", "0", "lo", img], 2, "invalid value '0' for '--buffer-count <BUFCNT>'");
    refused(&["-o", "-1", "1", "0", "lo", img], 2, "unexpected argument '-1'");
    refused(&["-m", "00:11:22:33:44", "1", "0", "lo", img], 2, "\"00:11:22:33:44\" is not a MAC address");
    refused(&["-m", "001122334455,nope", "1", "0", "lo", img], 2, "\"nope\" is not a MAC address");
    refused(&["--config", img, "1", "0", "lo", img], 2, "cannot be used with");

    refused(&["65535", "0", "lo", img], 1, "e65535.0: shelf 65535 is the broadcast shelf; use 0 to 65534");
    refused(&["1", "255", "lo", img], 1, "e1.255: slot 255 is the broadcast slot; use 0 to 254");
    refused(&["1", "0", "lo", "/nonexistent/aoe.img"], 1, "e1.0: file /nonexistent/aoe.img: No such file");
    refused(&["1", "0", "lo", "/tmp"], 1, "file /tmp is not a regular file or block device");
    refused(
        &["-o", "17", "1", "0", "lo", img],
        1,
        &format!("e1.0: offset of 17 sectors is beyond the end of {img} (16 sectors)"),
    );
    refused(&["-o", "16", "1", "0", "lo", img], 1, "nothing to export");
    refused(
        &["-o", "8", "-l", "9", "1", "0", "lo", img],
        1,
        &format!("e1.0: offset 8 + length 9 sectors runs past the end of {img} (16 sectors)"),
    );
    refused(&["-l", "0", "1", "0", "lo", img], 1, "length must be at least 1 sector");
    refused(&["1", "0", "aoe-no-such0", img], 1, "e1.0: interfaces: no such interface: aoe-no-such0");
}

#[test]
fn bad_configuration_files() {
    let image = TempImage::zeroed(16 * 512).unwrap();
    let export = |extra: &str| {
        format!(
            "[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"lo\"]\nfile = \"{}\"\n{extra}",
            path(&image)
        )
    };
    let cases = [
        (export("colour = \"blue\"\n"), ":6:1: unknown field `colour`, expected one of"),
        (export("offset = \"8\"\n"), ":6:10: invalid type: string \"8\", expected u64 (in `offset = \"8\"`)"),
        (export("slot = 1\n"), "duplicate key"),
        (export("mask = [\"00:11:22\"]\n"), "invalid MAC address \"00:11:22\""),
        (export("").replace("file", "files"), "unknown field `files`"),
        (export("").replace("slot = 0", "slot = 255"), "export[0] (e1.255): slot 255 is the broadcast slot"),
        (
            export("").replace("shelf = 1", "shelf = 65535"),
            "export[0] (e65535.0): shelf 65535 is the broadcast",
        ),
        (export("").replace("shelf = 1", "shelf = -1"), "(in `shelf = -1`)"),
        (
            format!("{}{}", export(""), export("")),
            "export[1] (e1.0): shelf and slot: e1.0 is already exported by export[0]",
        ),
        (export("offset = 17\n"), "export[0] (e1.0): offset of 17 sectors is beyond the end"),
        (export("offset = 8\nlength = 9\n"), "offset 8 + length 9 sectors runs past the end"),
        (export("").replace("[\"lo\"]", "[\"aoe-no-such0\"]"), "interfaces: no such interface: aoe-no-such0"),
        (export(""), "interfaces: lo is a loopback interface, which reaches no other host"),
        (
            export("mask = [\"ff:ff:ff:ff:ff:ff\"]\n"),
            "mask: ff:ff:ff:ff:ff:ff is a group (broadcast or multicast) address",
        ),
        (export("rules = [\"allow 01:00:5e:00:00:01\"]\n"), "rules: 01:00:5e:00:00:01 is a group"),
        (format!("{}{}", export(""), export("").replace("slot = 0", "slot = 1")), "export[1] (e1.1): file "),
        (
            format!("{}{}", export(""), export("").replace("slot = 0", "slot = 1")),
            "is also exported by export[0] (e1.0) over the same sectors",
        ),
        (export("").replace("[\"lo\"]", "[]"), "interfaces is empty"),
        ("# nothing\n".to_string(), ": no [[export]] table: nothing to serve"),
        ("[[export]\n".to_string(), ":1:"),
        ("[export]\nshelf = 1\n".to_string(), "invalid type"),
    ];
    for (text, want) in cases {
        let file = config(&text);
        let name = path(&file);
        refused(&["--config", name], 1, &format!("aoe-target: {name}"));
        refused(&["--config", name], 1, want);
    }
    refused(
        &["--config", "/nonexistent/exports.toml"],
        1,
        "cannot read configuration file /nonexistent/exports.toml",
    );
    refused(
        &["--config", "/dev/zero"],
        1,
        "cannot read configuration file /dev/zero: longer than 4194304 bytes",
    );
    let many: Vec<String> =
        (0..129).map(|i| format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)).collect();
    refused(
        &["-m", &many.join(","), "1", "0", "lo", path(&image)],
        1,
        "e1.0: mask has 129 entries; the protocol's list holds at most 128",
    );
    refused(
        &["-m", "01:80:c2:00:00:00", "1", "0", "lo", path(&image)],
        1,
        "e1.0: mask: 01:80:c2:00:00:00 is a group",
    );
    refused(&["1", "0", "lo", path(&image)], 1, "e1.0: interfaces: lo is a loopback interface");
}

#[test]
fn check_accepts_good_settings_without_serving() {
    // An interface that is up, Ethernet and not a loopback: one end of a veth pair in a
    // private namespace (root only; `--check` itself opens no socket).
    if !netns_available("check_accepts_good_settings_without_serving") {
        return;
    }
    let link = Link::new("tgchk", 1500).unwrap();
    let iface = link.target_if();
    let check = |args: &[&str]| {
        let out = link.target.run(BIN, args, Duration::from_secs(10)).unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    };
    let image = TempImage::zeroed(64 * 512 + 100).unwrap();
    let (code, stdout, stderr) = check(&["--check", "-o", "8", "1", "0", iface, path(&image)]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout, format!("e1.0: 56 sectors of {} on {iface}\n", path(&image)));
    let other = TempImage::zeroed(512).unwrap();
    // e1.0 and e1.2 share the image, in disjoint windows; e1.1 and e1.3 share the other file,
    // read-only both.
    let file = config(&format!(
        "[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"{iface}\"]\nfile = \"{img}\"\nlength = 10\nmask = [\"AABBCCDDEEFF\"]\n\
         [[export]]\nshelf = 1\nslot = 1\ninterfaces = [\"{iface}\"]\nfile = \"{oth}\"\nread_only = true\n\
         [[export]]\nshelf = 1\nslot = 2\ninterfaces = [\"{iface}\"]\nfile = \"{img}\"\noffset = 10\n\
         [[export]]\nshelf = 1\nslot = 3\ninterfaces = [\"{iface}\"]\nfile = \"{oth}\"\nread_only = true\n",
        img = path(&image),
        oth = path(&other)
    ));
    let (code, stdout, stderr) = check(&["--config", path(&file), "--check"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("e1.0: 10 sectors of {} on {iface}", path(&image)),
            format!("e1.1: 1 sectors of {} on {iface}", path(&other)),
            format!("e1.2: 54 sectors of {} on {iface}", path(&image)),
            format!("e1.3: 1 sectors of {} on {iface}", path(&other)),
        ]
    );
    assert!(Path::new(path(&file)).exists());
}
