//! Runs `scripts/kernel-driver-check.sh`: the real Linux `aoe` driver, in a qemu guest,
//! discovers, reads and writes an aoe-target export. It downloads a Debian kernel package
//! and boots a VM, so it only runs when `AOE_KERNEL_CHECK=1` (and as root).

use std::path::Path;
use std::process::Command;

#[test]
fn linux_aoe_driver_discovers_reads_and_writes() {
    if std::env::var("AOE_KERNEL_CHECK").as_deref() != Ok("1") {
        eprintln!("SKIP: kernel_driver: set AOE_KERNEL_CHECK=1 to boot the Linux aoe driver in qemu");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kernel-driver-check.sh");
    let out = Command::new("bash").arg(&script).output().expect("run scripts/kernel-driver-check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "kernel-driver-check failed: {}", out.status);
    if stdout.contains("SKIP:") {
        return;
    }
    assert!(stdout.contains("discover ok, write ok, read ok"), "no success line from kernel-driver-check");
}
