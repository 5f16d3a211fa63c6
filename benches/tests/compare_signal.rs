//! `compare` interrupted mid-run leaves nothing behind: no namespace, no vblade or
//! aoe-target process, no backing file.
//!
//! Needs root, iproute2 and vblade; without them it prints a SKIP line, or fails when
//! `AOE_REQUIRE_NETNS=1` / `AOE_REQUIRE_PEERS=1` ask for them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aoe_testkit::data::images_made_by;
use aoe_testkit::netns;
use aoe_testkit::privilege::{netns_available, tool_available};

/// Command lines of the running processes that mention `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn sigint_mid_run_cleans_up() {
    let test = "sigint_mid_run_cleans_up";
    if !netns_available(test) || !tool_available(test, "vblade") {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--size", "16", "--reps", "1", "--seconds", "3", "--mtu", "1500", "--no-initiator"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting compare");
    let pid = child.id();
    // Wait until a measurement is under way: vblade and aoe-target both run by then.
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("link ceiling") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(120)).is_err() {
        let _ = child.kill();
        panic!("compare did not start measuring within 120 s");
    }
    std::thread::sleep(Duration::from_millis(500));
    let ours =
        || -> Vec<String> { netns::list().unwrap().into_iter().filter(|n| netns::made_by(n, pid)).collect() };
    let image = format!("aoe-testkit-{pid}-");
    assert!(!ours().is_empty(), "the run's namespaces exist while it measures");
    assert!(!processes_mentioning(&image).is_empty(), "vblade and aoe-target serve the run's file");

    // SAFETY: kill has no memory-safety preconditions; `pid` is our child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) }, 0);
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = child.try_wait().expect("waiting for compare") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("compare did not exit within 30 s of SIGINT");
    };
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "exit status after SIGINT");
    let left = ours();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let running = processes_mentioning(&image);
    assert!(running.is_empty(), "processes left behind: {running:?}");
    let files = images_made_by(pid);
    assert!(files.is_empty(), "backing files left behind: {files:?}");
}
