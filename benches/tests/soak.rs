//! The soak, shortened to a minute: four writers on their own MACs and a whole-disk reader
//! against aoe-target, every byte checked. Needs root; a SKIP line otherwise, or a failure
//! when `AOE_REQUIRE_NETNS=1` asks for namespaces.

use std::process::Command;
use std::time::Duration;

use aoe_testkit::privilege::netns_available;
use aoe_testkit::process::Guarded;

#[test]
fn a_minute_of_four_writers_and_a_reader_finds_no_mismatch() {
    if !netns_available("a_minute_of_four_writers_and_a_reader_finds_no_mismatch") {
        return;
    }
    // aoe-target is looked for next to the soak program: the workspace's debug build.
    let target = std::path::Path::new(env!("CARGO_BIN_EXE_soak")).with_file_name("aoe-target");
    assert!(target.exists(), "{} is missing: cargo build -p aoe-cli first", target.display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_soak"));
    cmd.args(["--seconds", "60", "--size", "32"]);
    let mut soak = Guarded::spawn(cmd).unwrap();
    let status =
        soak.wait_timeout(Duration::from_secs(180)).unwrap().expect("the soak ends within 3 minutes");
    let out = soak.stdout();
    eprintln!("{out}{}", soak.stderr());
    assert!(status.success() && out.contains("soak: no mismatches"), "{out}");
}
