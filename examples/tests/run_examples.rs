//! Every example program runs and prints what it promises. The ones on the in-memory link
//! run anywhere; `read_sector0` runs in a private network namespace against our target
//! engine serving a known sector 0 (needs root: a SKIP line otherwise).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::SharedExport;
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::netns_available;
use aoe_testkit::target::Targets;

/// Runs an example and returns its stdout; fails the test on a non-zero exit.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("start the example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn codec_round_trip() {
    let out = run(env!("CARGO_BIN_EXE_codec_round_trip"), &[]);
    assert!(out.contains("query:"), "{out}");
}

#[test]
fn memory_target() {
    let out = run(env!("CARGO_BIN_EXE_memory_target"), &[]);
    assert!(out.contains("read back: hello, AoE"), "{out}");
}

#[test]
fn pattern_backend() {
    let out = run(env!("CARGO_BIN_EXE_pattern_backend"), &[]);
    assert!(out.contains("its last sector says LBA 2147483647"), "{out}");
    assert!(
        out.contains("writing to it: write at byte 0 (1 sector) failed") && out.contains("ATA ABRT"),
        "{out}"
    );
}

#[test]
fn lossy_transport() {
    let out = run(env!("CARGO_BIN_EXE_lossy_transport"), &[]);
    assert!(out.contains("intact"), "{out}");
    assert!(!out.contains(" 0 dropped"), "{out}");
}

#[test]
fn read_sector0_over_a_veth_pair() {
    if !netns_available("read_sector0_over_a_veth_pair") {
        return;
    }
    let link = Link::new("aoeex", 1500).unwrap();
    let mut sector0 = vec![0u8; 1 << 20];
    sector0[..17].copy_from_slice(b"\xeb\x63\x90aoe-rs-example");
    let export: SharedExport<MemoryBackend> =
        Arc::new(Mutex::new(Export::new(ExportConfig::new(3, 1), MemoryBackend::from_vec(sector0))));
    let mut targets = Targets::default();
    targets.serve(&link.target, link.target_if(), vec![export]);

    let out = link
        .initiator
        .run(env!("CARGO_BIN_EXE_read_sector0"), &[link.initiator_if()], Duration::from_secs(30))
        .expect("run read_sector0");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("e3.1: 2048 sectors"), "{stdout}");
    assert!(stdout.contains("eb 63 90 61 6f 65 2d 72 73"), "{stdout}");
    targets.stop();
}
