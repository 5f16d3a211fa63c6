//! Access rules and the state directory of the `aoe-target` program, on a veth link between
//! two private network namespaces, driven by aoetools' aoecfg and our `aoe` tool.
//!
//! Rules: one segment, the initiator's interface taking three MAC addresses in turn (one
//! allowed, one read-only by its name in an ethers file, one denied). State: the config
//! string, mask and reserve list set by initiators survive a restart of the target.
//!
//! Needs root and aoetools; skipped otherwise, unless AOE_REQUIRE_NETNS / AOE_REQUIRE_PEERS
//! say a skip is a failure.

// kill has no safe wrapper in std.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use aoe_testkit::data::{pattern, TempImage};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::{wait_until, Guarded};

const AOE_TARGET: &str = env!("CARGO_BIN_EXE_aoe-target");
const AOE: &str = env!("CARGO_BIN_EXE_aoe");
const WRITER: &str = "02:00:5e:a0:00:01";
const READER: &str = "02:00:5e:a0:00:02";
const STRANGER: &str = "02:00:5e:a0:00:03";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("aoe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `aoe-target --config CONFIG` in the target namespace; waits for e4.2's start line.
fn start(link: &Link, config: &Path) -> Guarded {
    let mut cmd = link.target.command(AOE_TARGET);
    cmd.args(["-v", "--config", config.to_str().unwrap()]).env_remove("RUST_LOG");
    let target = Guarded::spawn(cmd).unwrap();
    let ready = format!("e4.2 on {} (", link.target_if());
    assert!(
        wait_until(Duration::from_secs(10), || target.stderr().contains(&ready)),
        "aoe-target did not start: {:?}",
        target.stderr()
    );
    target
}

/// SIGTERM, and a clean exit.
fn stop(mut target: Guarded) -> String {
    let pid = libc::pid_t::try_from(target.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = target.wait_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{:?}", target.stderr());
    target.stderr()
}

/// Gives the initiator's interface `mac`.
fn become_(link: &Link, mac: &str) {
    let out = link
        .initiator
        .run("ip", &["link", "set", "dev", link.initiator_if(), "address", mac], Duration::from_secs(5))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Runs `program ARGS` in the initiator namespace (at most 30 s).
fn run(link: &Link, program: &str, args: &[&str]) -> Output {
    let out = link.initiator.run(program, args, Duration::from_secs(30)).unwrap();
    eprintln!(
        "{program} {}: {:?}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `aoe ARGS` on the initiator's interface, with short timeouts.
fn aoe(link: &Link, args: &[&str]) -> Output {
    let mut all = vec!["-i", link.initiator_if(), "--timeout", "0.5", "--dead-timeout", "3"];
    all.extend_from_slice(args);
    run(link, AOE, &all)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn gate(test: &str) -> bool {
    netns_available(test) && tool_available(test, "aoecfg")
}

/// The configuration: e4.2 with rules, state kept in `scratch/state`.
fn config(link: &Link, scratch: &Scratch, image: &TempImage) -> PathBuf {
    let ethers = scratch.0.join("ethers");
    std::fs::write(&ethers, format!("# test hosts\n{READER} reader\n")).unwrap();
    let path = scratch.0.join("exports.toml");
    std::fs::write(
        &path,
        format!(
            "ethers = {ethers:?}\nstate_dir = {state:?}\n\n[[export]]\nshelf = 4\nslot = 2\ninterfaces = [{iface:?}]\nfile = {file:?}\nrules = [\"read-only reader\", \"deny {STRANGER}\", \"allow *\"]\n",
            state = scratch.0.join("state"),
            iface = link.target_if(),
            file = image.path(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn rules_allow_read_only_and_deny_by_initiator() {
    if !gate("rules_allow_read_only_and_deny_by_initiator") {
        return;
    }
    let link = Link::new("tgrule", 1500).unwrap();
    let scratch = Scratch::new("rules");
    let image = TempImage::zeroed(4 << 20).unwrap();
    let target = start(&link, &config(&link, &scratch, &image));
    let data = scratch.0.join("data");
    std::fs::write(&data, pattern(7, 64 << 10)).unwrap();
    let data = data.to_str().unwrap();

    // Allowed by `*`: writes land.
    become_(&link, WRITER);
    assert!(aoe(&link, &["write", "e4.2", data]).status.success());
    assert_eq!(image.read_at(0, 64 << 10).unwrap(), pattern(7, 64 << 10));

    // The reader, named in the ethers file: reads, but writes and config changes are refused.
    become_(&link, READER);
    let back = scratch.0.join("back");
    assert!(aoe(&link, &["read", "--length", "64K", "e4.2", back.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read(&back).unwrap(), pattern(7, 64 << 10));
    let refused = aoe(&link, &["write", "--offset", "1M", "e4.2", data]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("ABRT"), "{}", stderr(&refused));
    assert_eq!(image.read_at(1 << 20, 512).unwrap(), vec![0; 512], "the refused write did not land");
    let out = run(&link, "aoecfg", &["-c", "fset", "-s", "mine", "-t", "1", "4", "2", link.initiator_if()]);
    assert!(!stdout(&out).contains("mine"), "{}", stdout(&out));
    assert!(aoe(&link, &["config", "e4.2"]).status.success(), "reading the config string is not refused");
    let out = aoe(&link, &["mask", "e4.2", "add", READER]);
    assert_eq!(out.status.code(), Some(1), "a mask edit is refused");
    assert!(aoe(&link, &["mask", "e4.2"]).status.success(), "reading the mask is not");

    // Denied: the disk does not exist for it.
    become_(&link, STRANGER);
    let out = aoe(&link, &["discover", "--json"]);
    assert!(!stdout(&out).contains("e4.2"), "{}", stdout(&out));
    assert!(stderr(&out).contains("no AoE disk answered"), "{}", stderr(&out));

    stop(target);
}

#[test]
fn config_string_mask_and_reservation_survive_a_restart() {
    if !gate("config_string_mask_and_reservation_survive_a_restart") {
        return;
    }
    let link = Link::new("tgstate", 1500).unwrap();
    let scratch = Scratch::new("state");
    let image = TempImage::zeroed(4 << 20).unwrap();
    let config = config(&link, &scratch, &image);
    become_(&link, WRITER);
    let iface = link.initiator_if();

    let target = start(&link, &config);
    let out = run(&link, "aoecfg", &["-c", "set", "-s", "host=db1", "-t", "2", "4", "2", iface]);
    assert_eq!(stdout(&out), "host=db1\n");
    assert!(aoe(&link, &["mask", "e4.2", "add", WRITER, READER]).status.success());
    assert!(aoe(&link, &["reserve", "e4.2", "set", WRITER]).status.success());
    let log = stop(target);
    assert!(!log.contains("WARN"), "{log}");
    let saved = std::fs::read_to_string(scratch.0.join("state/e4.2.toml")).unwrap();
    assert!(saved.contains("config_string = \"host=db1\""), "{saved}");

    let target = start(&link, &config);
    assert!(target.stderr().contains("e4.2: restored from"), "{}", target.stderr());
    let out = run(&link, "aoecfg", &["-t", "2", "4", "2", iface]);
    assert_eq!(stdout(&out), "host=db1\n");
    let mask = stdout(&aoe(&link, &["mask", "e4.2"]));
    assert!(mask.contains(WRITER) && mask.contains(READER), "{mask}");
    let reserve = stdout(&aoe(&link, &["reserve", "e4.2"]));
    assert!(reserve.contains(WRITER), "{reserve}");
    // The restored mask is enforced: a MAC outside it gets nothing.
    become_(&link, "02:00:5e:a0:00:09");
    let out = aoe(&link, &["discover", "--json"]);
    assert!(!stdout(&out).contains("e4.2"), "{}", stdout(&out));
    assert!(stderr(&out).contains("no AoE disk answered"), "{}", stderr(&out));
    stop(target);

    // A damaged state file stops the target at start, naming the file.
    std::fs::write(scratch.0.join("state/e4.2.toml"), "mask = [\"nope\"]\n").unwrap();
    let out = link
        .target
        .run(AOE_TARGET, &["--config", config.to_str().unwrap()], Duration::from_secs(10))
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("state file") && err.contains("e4.2.toml") && err.contains("not a MAC address"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
