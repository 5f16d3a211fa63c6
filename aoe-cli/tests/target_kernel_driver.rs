//! Runs `scripts/kernel-driver-check.sh`: the real Linux `aoe` driver, in a qemu guest,
//! discovers, reads and writes an aoe-target export, directly and through aoe-testkit's
//! fault-injecting relay (no faults, 1 % loss, 5 % loss with duplication and reordering,
//! 20 % loss each way on 128 KiB, and, with `AOE_KERNEL_CHECK_SLOW=1`, 20 % on 1 MiB); each
//! run prints the guest's write and read rates.
//! It downloads a Debian kernel package and boots a VM, so it only runs when
//! `AOE_KERNEL_CHECK=1` (and as root).

use std::path::Path;
use std::process::Command;

use aoe_testkit::relay::Relay;
use aoe_transport::fault::Plan;

fn enabled(test: &str) -> bool {
    if std::env::var("AOE_KERNEL_CHECK").as_deref() != Ok("1") {
        eprintln!("SKIP: {test}: set AOE_KERNEL_CHECK=1 to boot the Linux aoe driver in qemu");
        return false;
    }
    true
}

/// Runs the script with `env`; panics unless it succeeds. Its output, or `None` on a SKIP.
fn check(env: &[(&str, String)]) -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kernel-driver-check.sh");
    let out = Command::new("bash")
        .arg(&script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run scripts/kernel-driver-check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "kernel-driver-check failed: {}", out.status);
    if stdout.contains("SKIP:") {
        return None;
    }
    assert!(stdout.contains("discover ok, write ok, read ok"), "no success line from kernel-driver-check");
    Some(stdout)
}

#[test]
fn linux_aoe_driver_discovers_reads_and_writes() {
    if enabled("kernel_driver") {
        check(&[]);
    }
}

/// The guest's tap bridged with the initiator end of a relay, aoe-target on its target end;
/// the guest reads `read_kib` KiB of host data, then writes and reads back `write_kib` KiB.
fn through_relay(test: &str, plan: Plan, write_kib: u32, read_kib: u32) {
    if !enabled(test) || !aoe_testkit::privilege::netns_available(test) {
        return;
    }
    let relay = Relay::new("aoekrel", 1500, plan, Plan { seed: plan.seed + 1, ..plan }).unwrap();
    let env = [
        ("AOE_KCHECK_NETNS", relay.initiator.name().to_string()),
        ("AOE_KCHECK_BRIDGE", relay.initiator_if().to_string()),
        ("AOE_KCHECK_TARGET_NETNS", relay.target.name().to_string()),
        ("AOE_KCHECK_TARGET_IF", relay.target_if().to_string()),
        ("AOE_KCHECK_WRITE_KIB", write_kib.to_string()),
        ("AOE_KCHECK_READ_KIB", read_kib.to_string()),
        // The driver waits for its 100 ms timer tick after every loss.
        ("AOE_QEMU_TIMEOUT", "900".to_string()),
    ];
    if check(&env).is_none() {
        return;
    }
    let (there, back) = (relay.to_target().stats(), relay.to_initiator().stats());
    eprintln!("{test}: relay to the target {there:?}; to the guest {back:?}");
    if plan.drop > 0.0 {
        assert!(there.dropped > 0 && back.dropped > 0, "the relay dropped frames both ways");
    }
}

/// The reference for the lossy runs: the same relay, no faults.
#[test]
fn linux_aoe_driver_through_the_relay_without_faults() {
    through_relay("linux_aoe_driver_through_the_relay_without_faults", Plan::NONE, 4096, 1024);
}

#[test]
fn linux_aoe_driver_through_one_percent_loss() {
    through_relay(
        "linux_aoe_driver_through_one_percent_loss",
        Plan { drop: 0.01, seed: 21, ..Plan::NONE },
        4096,
        1024,
    );
}

#[test]
fn linux_aoe_driver_through_five_percent_loss_duplication_and_reordering() {
    let plan = Plan { drop: 0.05, duplicate: 0.02, reorder: 0.05, seed: 23, ..Plan::NONE };
    through_relay("linux_aoe_driver_through_five_percent_loss_duplication_and_reordering", plan, 4096, 1024);
}

/// A fifth of the frames lost each way, on 128 KiB each way: the driver falls back to one
/// frame in flight and its 100 ms timer tick at every loss, so that this takes about a
/// minute where 1 MiB takes twelve (below).
#[test]
fn linux_aoe_driver_through_twenty_percent_loss() {
    through_relay(
        "linux_aoe_driver_through_twenty_percent_loss",
        Plan { drop: 0.2, seed: 25, ..Plan::NONE },
        128,
        128,
    );
}

/// As above on 1 MiB each way, only with `AOE_KERNEL_CHECK_SLOW=1` too: 29 s to write 1 MiB
/// and 345 s to read it back, besides the 1 MiB read first, in the emulated guest.
#[test]
fn linux_aoe_driver_through_twenty_percent_loss_on_a_mebibyte() {
    if std::env::var("AOE_KERNEL_CHECK_SLOW").as_deref() != Ok("1") {
        eprintln!(
            "SKIP: twenty percent through the relay on 1 MiB: set AOE_KERNEL_CHECK_SLOW=1 as well (about 12 minutes)"
        );
        return;
    }
    through_relay(
        "linux_aoe_driver_through_twenty_percent_loss_on_a_mebibyte",
        Plan { drop: 0.2, seed: 25, ..Plan::NONE },
        1024,
        1024,
    );
}
