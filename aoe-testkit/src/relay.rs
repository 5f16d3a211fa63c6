//! A userspace relay that injects faults into AoE traffic on real interfaces.
//!
//! A [`Relay`] is three network namespaces in a row: the initiator's, a middle one, the
//! target's, joined by two veth pairs. A thread in the middle forwards every AoE frame
//! (EtherType 0x88A2) that arrives from one side out of the other, byte for byte (MAC
//! addresses unchanged, so each side sees the other's real MAC), never back out of the
//! interface it came in on, through a [`FaultInjector`] per way: each direction has its own
//! seeded [`Plan`] (loss, duplication, reordering, delay, corruption) and can be partitioned
//! and healed while traffic flows. Frames of other EtherTypes are not forwarded.
//!
//! From a test in any crate (needs root; gate it as every namespace test is):
//!
//! ```no_run
//! use aoe_testkit::privilege::netns_available;
//! use aoe_testkit::relay::Relay;
//! use aoe_transport::fault::{Heal, Plan};
//!
//! if !netns_available("my_lossy_test") {
//!     return;
//! }
//! let lossy = Plan { drop: 0.05, duplicate: 0.02, reorder: 0.05, seed: 1, ..Plan::NONE };
//! let relay = Relay::new("mylossy", 1500, lossy, Plan { seed: 2, ..lossy }).unwrap();
//! // Serve on `relay.target_if()` inside `relay.target`, open the initiator on
//! // `relay.initiator_if()` inside `relay.initiator` (e.g. with `Netns::enter`)...
//! relay.partition(Heal::After(std::time::Duration::from_millis(300)));
//! // ...and read what the relay did.
//! println!("{:?}", relay.to_target().stats());
//! ```
//!
//! The relay stops when dropped, within about a second (a send stalled on a full queue is
//! the longest wait), before its interfaces and namespaces go.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::fault::{FaultInjector, Faults, Heal, Plan};
use aoe_transport::{wait_readable, FrameBatch, Transport};

use crate::netns::{Netns, Veth};

/// Longest the relay thread sleeps before it looks at its stop flag.
const TICK: Duration = Duration::from_millis(20);
/// Frames one receive takes.
const BATCH: usize = 64;
/// Batches taken from one side before the other side's turn.
const TURN: usize = 8;

/// Three namespaces and two veth pairs with a fault-injecting forwarder in the middle; see
/// the [module docs](self).
///
/// On drop the thread is stopped, then the veth pairs go, then the namespaces.
#[derive(Debug)]
pub struct Relay {
    /// Initiator side: end A in [`initiator`](Self::initiator), end B in
    /// [`middle`](Self::middle).
    pub initiator_veth: Veth,
    /// Target side: end A in [`target`](Self::target), end B in [`middle`](Self::middle).
    pub target_veth: Veth,
    /// Namespace for the AoE initiator, named `{prefix}-i-...`.
    pub initiator: Netns,
    /// Namespace of the relay itself, named `{prefix}-m-...`.
    pub middle: Netns,
    /// Namespace for the AoE target, named `{prefix}-t-...`.
    pub target: Netns,
    to_target: Faults,
    to_initiator: Faults,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What went wrong in the relay thread.
#[derive(Debug, Default)]
struct Health {
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Relay {
    /// Creates namespaces `{prefix}-i-…`, `{prefix}-m-…` and `{prefix}-t-…`, veth pairs of
    /// the given MTU from the middle one to each of the others, and starts forwarding:
    /// frames from the initiator's side follow `to_target`, frames from the target's side
    /// `to_initiator`. `prefix` is as for [`Netns::new`], at most 38 characters.
    pub fn new(prefix: &str, mtu: u32, to_target: Plan, to_initiator: Plan) -> io::Result<Relay> {
        let target = Netns::new(&format!("{prefix}-t"))?;
        let middle = Netns::new(&format!("{prefix}-m"))?;
        let initiator = Netns::new(&format!("{prefix}-i"))?;
        let target_veth = Veth::new(&target, &middle, mtu)?;
        let initiator_veth = Veth::new(&initiator, &middle, mtu)?;
        let open = |ifname: &str| {
            middle.enter(|| AfPacket::open(ifname, AfPacketOptions::default())).map_err(io::Error::other)
        };
        // Each socket sends what the other received: the send plan is the way's plan.
        let toward_target = FaultInjector::new(open(target_veth.b_name())?, to_target, Plan::NONE);
        let toward_initiator = FaultInjector::new(open(initiator_veth.b_name())?, to_initiator, Plan::NONE);
        let (to_target, to_initiator) = (toward_target.send_faults(), toward_initiator.send_faults());
        let health = Arc::new(Health::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (health, stop) = (Arc::clone(&health), Arc::clone(&stop));
            let frame = 14 + mtu as usize;
            std::thread::Builder::new()
                .name(format!("relay:{}", middle.name()))
                .spawn(move || forward(toward_initiator, toward_target, frame, &health, &stop))?
        };
        Ok(Relay {
            initiator_veth,
            target_veth,
            initiator,
            middle,
            target,
            to_target,
            to_initiator,
            health,
            stop,
            thread: Some(thread),
        })
    }

    /// The initiator's interface (in [`initiator`](Self::initiator)).
    pub fn initiator_if(&self) -> &str {
        self.initiator_veth.a_name()
    }

    /// The target's interface (in [`target`](Self::target)).
    pub fn target_if(&self) -> &str {
        self.target_veth.a_name()
    }

    /// MAC address of the initiator's interface.
    pub fn initiator_mac(&self) -> [u8; 6] {
        self.initiator_veth.a_mac()
    }

    /// MAC address of the target's interface.
    pub fn target_mac(&self) -> [u8; 6] {
        self.target_veth.a_mac()
    }

    /// The faults of frames on their way to the target: change the plan, partition, heal,
    /// read the counters ([`FaultStats::offered`](aoe_transport::fault::FaultStats) is what
    /// the relay took in from the initiator's side, `passed` what it sent on).
    pub fn to_target(&self) -> &Faults {
        &self.to_target
    }

    /// The faults of frames on their way to the initiator.
    pub fn to_initiator(&self) -> &Faults {
        &self.to_initiator
    }

    /// Replaces both plans (each reseeded from its own seed).
    pub fn set_plans(&self, to_target: Plan, to_initiator: Plan) {
        self.to_target.set_plan(to_target);
        self.to_initiator.set_plan(to_initiator);
    }

    /// Cuts both ways until the partition heals as `heal` says (frame counts are per way).
    pub fn partition(&self, heal: Heal) {
        self.to_target.partition(heal);
        self.to_initiator.partition(heal);
    }

    /// Ends a partition both ways now.
    pub fn heal(&self) {
        self.to_target.heal();
        self.to_initiator.heal();
    }

    /// How many receives or sends failed in the relay thread, and the last failure. A
    /// failure loses the frames involved; the relay goes on.
    pub fn errors(&self) -> (u64, Option<String>) {
        let last = self.health.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (self.health.errors.load(Ordering::Relaxed), last)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("aoe-testkit: the relay thread of {} panicked", self.middle.name());
            }
        }
    }
}

/// The relay thread: moves frames between the two sockets until told to stop.
fn forward(
    mut initiator_side: FaultInjector<AfPacket>,
    mut target_side: FaultInjector<AfPacket>,
    frame: usize,
    health: &Health,
    stop: &AtomicBool,
) {
    let mut batch = FrameBatch::new(BATCH, frame);
    let failed = |e: io::Error| {
        health.errors.fetch_add(1, Ordering::Relaxed);
        *health.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
        // An error that repeats must not spin the CPU.
        std::thread::sleep(Duration::from_millis(1));
    };
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due = [initiator_side.next_release(), target_side.next_release()].into_iter().flatten().min();
        let wait = due.map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
        let mut ready = [false; 2];
        let fds = [initiator_side.inner().readiness_fd(), target_side.inner().readiness_fd()];
        if let Err(e) = wait_readable(fds.into_iter().flatten(), &mut ready, wait) {
            failed(e);
        }
        if ready[0] {
            pump(&mut initiator_side, &mut target_side, &mut batch, &failed);
        }
        if ready[1] {
            pump(&mut target_side, &mut initiator_side, &mut batch, &failed);
        }
        for side in [&mut initiator_side, &mut target_side] {
            if let Err(e) = side.release_due() {
                failed(e);
            }
        }
    }
}

/// Forwards what `from` has received (up to [`TURN`] batches) out of `to`.
fn pump(
    from: &mut FaultInjector<AfPacket>,
    to: &mut FaultInjector<AfPacket>,
    batch: &mut FrameBatch,
    failed: &impl Fn(io::Error),
) {
    for _ in 0..TURN {
        match from.recv_batch(batch, Some(Duration::ZERO)) {
            Ok(0) => return,
            Ok(_) => {
                if let Err(e) = to.send_batch(batch) {
                    failed(e);
                }
                batch.clear();
            }
            Err(e) => return failed(e),
        }
    }
}
