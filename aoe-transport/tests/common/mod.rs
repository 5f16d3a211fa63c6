//! What the veth tests share: a veth pair between two fresh network namespaces, and the root
//! check that turns a missing privilege into a SKIP line (or a failure, with
//! `AOE_REQUIRE_NETNS=1`).

// Each test crate uses part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use aoe_transport::MacAddr;

/// The interface of side A (in namespace `a`), and its MAC.
pub const IF_A: &str = "vaoe-a";
pub const MAC_A: MacAddr = MacAddr([0x02, 0xae, 0, 0, 0, 0x0a]);
/// The interface of side B (in namespace `b`), and its MAC.
pub const IF_B: &str = "vaoe-b";
pub const MAC_B: MacAddr = MacAddr([0x02, 0xae, 0, 0, 0, 0x0b]);

/// True when the test can run; otherwise says why (or fails, when CI demands these tests).
pub fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("AOE_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test}: needs root for network namespaces, and AOE_REQUIRE_NETNS=1");
    }
    // Straight to stderr: the test harness would swallow `eprintln!` of a passing test.
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: needs root for network namespaces");
    false
}

/// Runs `ip ARGS`, bounded in time; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("timeout")
        .args(["10", "ip"])
        .args(args)
        .output()
        .expect("running `timeout 10 ip` (iproute2 and coreutils needed)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// Two namespaces joined by a veth pair, `IF_A` (MAC_A) in `a` and `IF_B` (MAC_B) in `b`, both
/// up. Deleted on drop, panics included.
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    /// Namespaces named `PREFIX-PID-N-a` and `-b`, joined at MTU `mtu`.
    pub fn new(prefix: &str, mtu: usize) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let pair = VethPair { a: format!("{base}-a"), b: format!("{base}-b") };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        let (mac_a, mac_b, mtu) = (MAC_A.to_string(), MAC_B.to_string(), mtu.to_string());
        #[rustfmt::skip]
        ip(&[
            "link", "add", IF_A, "netns", &pair.a, "address", &mac_a, "mtu", &mtu,
            "type", "veth", "peer", "name", IF_B, "netns", &pair.b, "address", &mac_b, "mtu", &mtu,
        ]);
        ip(&["-n", &pair.a, "link", "set", IF_A, "up"]);
        ip(&["-n", &pair.b, "link", "set", IF_B, "up"]);
        pair
    }

    /// Runs `f` with this thread inside namespace `ns`; sockets made there stay there.
    pub fn within<T>(ns: &str, f: impl FnOnce() -> T) -> T {
        struct Restore(File);
        impl Drop for Restore {
            fn drop(&mut self) {
                // SAFETY: setns on a namespace descriptor we hold open.
                let r = unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "restoring the network namespace");
            }
        }
        let home = File::open("/proc/thread-self/ns/net").expect("opening our netns");
        let target = File::open(format!("/var/run/netns/{ns}")).expect("opening the test netns");
        // SAFETY: setns on a namespace descriptor we hold open; it affects this thread only.
        let r = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "entering netns {ns}: {}", std::io::Error::last_os_error());
        let _restore = Restore(home);
        f()
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end in it, and so the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("timeout").args(["10", "ip", "netns", "del", ns]).output();
        }
    }
}
