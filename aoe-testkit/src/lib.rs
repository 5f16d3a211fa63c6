//! Private networks and peers for testing ATA over Ethernet code, shared by the
//! integration tests of the aoe-rs crates; its network namespaces and veth pairs are also
//! what `aoe demo` runs in.
//!
//! * [`privilege`] decides whether a test can run here (root, iproute2,
//!   external peer programs) and prints a uniform `SKIP:` line when it
//!   cannot, or fails hard when CI demands it.
//! * [`netns`] builds private networks: network namespaces joined by veth
//!   pairs, all removed again by name when dropped.
//! * [`process`] runs external peers (`vblade`, `aoeping`, ...) that are
//!   always killed and reaped, with their output kept for diagnostics.
//! * [`data`] makes deterministic test payloads and disk images.
//! * [`packet`] is a small raw Ethernet socket to inject and observe frames
//!   independently of the code under test.
//! * [`target`] runs our target engine as a peer: servers on interfaces of
//!   a namespace, one thread each.
//! * [`relay`] puts a fault-injecting AoE forwarder between an initiator's
//!   namespace and a target's: loss, duplication, reordering, delay,
//!   corruption and partitions on real interfaces.
//!
//! The only process-wide state is a counter used to make names unique.
//!
//! ```no_run
//! use aoe_testkit::{netns::Link, privilege};
//!
//! if !privilege::netns_available("my_test") {
//!     return;
//! }
//! let link = Link::new("mytest", 1500).unwrap();
//! // Open a socket of the code under test on the initiator's end of the link.
//! let socket = link.initiator.enter(|| {
//!     aoe_testkit::packet::PacketSocket::open(link.initiator_if(), aoe_testkit::packet::ETH_P_AOE)
//! });
//! # drop(socket);
//! ```

#![warn(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};

pub mod data;
pub mod netns;
pub mod packet;
pub mod privilege;
pub mod process;
pub mod relay;
pub mod target;

/// Process-wide counter: together with the pid it makes every name this
/// crate invents unique on the machine.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Next value of the process-wide counter.
pub(crate) fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Directory for scratch files: `/dev/shm` when present, else the system
/// temp directory.
pub(crate) fn scratch_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
