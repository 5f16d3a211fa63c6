//! An in-process Ethernet segment for tests and benchmarks.
//!
//! A [`MemoryHub`] behaves like a switch: a frame sent by one [`MemoryPort`] goes to the port
//! whose MAC is the destination (frames to an unknown unicast MAC are dropped), or, when the
//! destination is broadcast or multicast, to every port except the sender. As with the kernel
//! filter on a raw AoE socket, only frames with EtherType 0x88A2 reach a receiver, and frames
//! longer than `14 + mtu` are dropped.
//!
//! The hub is thread-safe: ports can live in different threads (a target in one, an initiator
//! in another), and receivers block on a condition variable, honouring their timeout.
//!
//! [`Impairments`] make the segment lossy in a reproducible way: each frame put on a port's
//! queue may be dropped, duplicated or reordered, decided by a [`Pipe`] per receiving
//! port seeded from the hub's seed, so the same seed and the same sequence of sends give the
//! same losses. For more (delay, corruption, partitions) or for one port only, wrap the port
//! in a [`FaultInjector`](crate::fault::FaultInjector).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aoe_proto::ethernet::{MacAddr, ETHERTYPE_AOE, HEADER_LEN};

use crate::fault::{Pipe, Plan};
use crate::{FrameBatch, Transport};

/// Frames a port queues before further frames to it are dropped (see [`MemoryHub::set_queue_limit`]).
pub const DEFAULT_QUEUE_LIMIT: usize = 65_536;

/// Probabilities of loss, duplication and reordering, applied to every frame the hub queues
/// for a receiving port (a broadcast is judged once per receiver).
///
/// Probabilities are clamped to `0.0..=1.0` (NaN counts as 0). A reordered frame is held back and delivered right
/// after the next frame for the same port, or as soon as that port's receiver finds its queue
/// otherwise empty: reordering delays frames but never loses them. At most one frame per port is
/// held back at a time. These are the [`Plan`] of every port's [`Pipe`]
/// ([`Plan::from`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairments {
    /// Probability that a frame is lost.
    pub drop: f64,
    /// Probability that a frame (not lost) is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame (not lost) is delivered after the next one.
    pub reorder: f64,
    /// PRNG seed; the same seed gives the same decisions for the same sequence of frames.
    pub seed: u64,
}

impl Impairments {
    /// A perfect link.
    pub const NONE: Impairments = Impairments { drop: 0.0, duplicate: 0.0, reorder: 0.0, seed: 0 };

    /// The plan of the pipe into port number `port`: this seed mixed with the port number,
    /// so that ports draw apart.
    fn plan_for(&self, port: usize) -> Plan {
        let seed = self.seed ^ (port as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Plan { seed, ..Plan::from(*self) }
    }
}

impl From<Impairments> for Plan {
    fn from(imp: Impairments) -> Plan {
        Plan { drop: imp.drop, duplicate: imp.duplicate, reorder: imp.reorder, seed: imp.seed, ..Plan::NONE }
    }
}

/// Frame counters of a hub, since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// Frames put on a port's queue, duplicates included.
    pub delivered: u64,
    /// Frames lost to [`Impairments::drop`].
    pub dropped: u64,
    /// Extra copies made by [`Impairments::duplicate`].
    pub duplicated: u64,
    /// Frames held back by [`Impairments::reorder`].
    pub reordered: u64,
    /// Frames dropped for being longer than `14 + mtu`, or than the receiver's batch slot.
    pub oversized: u64,
    /// Frames no port took: unknown unicast destination, or the sender's or receiver's link down.
    pub unroutable: u64,
    /// Frames dropped because the receiving port's queue was full.
    pub overflowed: u64,
    /// Frames filtered out for not being AoE (other EtherType, or shorter than 14 bytes).
    pub filtered: u64,
}

/// A shared Ethernet segment. Cloning gives another handle to the same hub.
#[derive(Clone)]
pub struct MemoryHub {
    shared: Arc<Shared>,
}

struct Shared {
    mtu: usize,
    state: Mutex<State>,
}

struct State {
    queues: Queues,
    /// What happens to the frames queued for each port (same index as `queues.ports`).
    pipes: Vec<Pipe>,
    impairments: Impairments,
}

/// The ports' receive queues.
struct Queues {
    ports: Vec<PortState>,
    stats: HubStats,
    queue_limit: usize,
    /// Frame buffers to reuse, so a warmed-up hub does not allocate per frame.
    spare: Vec<Vec<u8>>,
}

struct PortState {
    mac: MacAddr,
    down: bool,
    queue: VecDeque<Vec<u8>>,
    ready: Arc<Condvar>,
}

impl MemoryHub {
    /// A perfect segment with the given MTU (payload bytes after the Ethernet header).
    pub fn new(mtu: usize) -> Self {
        Self::with_impairments(mtu, Impairments::NONE)
    }

    /// A segment that loses, duplicates and reorders frames as `impairments` says.
    pub fn with_impairments(mtu: usize, impairments: Impairments) -> Self {
        MemoryHub {
            shared: Arc::new(Shared {
                mtu,
                state: Mutex::new(State {
                    queues: Queues {
                        ports: Vec::new(),
                        stats: HubStats::default(),
                        queue_limit: DEFAULT_QUEUE_LIMIT,
                        spare: Vec::new(),
                    },
                    pipes: Vec::new(),
                    impairments: clamp(impairments),
                }),
            }),
        }
    }

    /// The MTU given at creation.
    pub fn mtu(&self) -> usize {
        self.shared.mtu
    }

    /// Replaces the impairments and reseeds the decisions from `impairments.seed`.
    pub fn set_impairments(&self, impairments: Impairments) {
        let impairments = clamp(impairments);
        let mut st = self.lock();
        st.impairments = impairments;
        for (port, pipe) in st.pipes.iter_mut().enumerate() {
            pipe.set_plan(impairments.plan_for(port));
        }
    }

    /// Caps every port's receive queue at `frames`; frames beyond it are dropped and counted
    /// in [`HubStats::overflowed`]. The default is [`DEFAULT_QUEUE_LIMIT`].
    pub fn set_queue_limit(&self, frames: usize) {
        self.lock().queues.queue_limit = frames;
    }

    /// Plugs a new port with address `mac` into the hub. Ports sharing a MAC all receive the
    /// frames sent to it.
    pub fn port(&self, mac: MacAddr) -> MemoryPort {
        let ready = Arc::new(Condvar::new());
        let mut st = self.lock();
        let id = st.queues.ports.len();
        st.queues.ports.push(PortState { mac, down: false, queue: VecDeque::new(), ready: ready.clone() });
        let pipe = Pipe::new(st.impairments.plan_for(id), HEADER_LEN + self.shared.mtu);
        st.pipes.push(pipe);
        MemoryPort { hub: self.clone(), id, mac, name: format!("mem{id}"), ready }
    }

    /// Takes the links of every port with address `mac` down (`true`) or back up (`false`);
    /// see [`MemoryPort::set_down`].
    pub fn set_down(&self, mac: MacAddr, down: bool) {
        let mut st = self.lock();
        let ids: Vec<usize> = (0..st.queues.ports.len()).filter(|&i| st.queues.ports[i].mac == mac).collect();
        for id in ids {
            st.set_port_down(id, down);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> HubStats {
        let st = self.lock();
        let mut stats = st.queues.stats;
        for pipe in &st.pipes {
            let faults = pipe.stats();
            stats.dropped += faults.dropped;
            stats.duplicated += faults.duplicated;
            stats.reordered += faults.reordered;
        }
        stats
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take every other port down with it.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl core::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let st = self.lock();
        f.debug_struct("MemoryHub")
            .field("mtu", &self.shared.mtu)
            .field("ports", &st.queues.ports.len())
            .field("impairments", &st.impairments)
            .finish()
    }
}

impl State {
    fn set_port_down(&mut self, id: usize, down: bool) {
        let q = &mut self.queues;
        let port = &mut q.ports[id];
        port.down = down;
        if down {
            // Frames in flight on a pulled cable are gone.
            q.spare.extend(port.queue.drain(..));
            self.pipes[id].discard_held();
        }
    }

    /// Routes one frame sent by port `from`.
    fn route(&mut self, from: usize, frame: &[u8], mtu: usize) {
        let q = &mut self.queues;
        if frame.len() < HEADER_LEN || frame[12..14] != ETHERTYPE_AOE.to_be_bytes() {
            q.stats.filtered += 1;
            return;
        }
        if frame.len() > HEADER_LEN + mtu {
            q.stats.oversized += 1;
            return;
        }
        // A perfect hub never asks the time.
        let now = (self.impairments != Impairments::NONE).then(Instant::now);
        let mut taken = false;
        if !q.ports[from].down {
            let dst = MacAddr([frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]]);
            for to in 0..q.ports.len() {
                let port = &q.ports[to];
                if to != from && !port.down && (dst.is_multicast() || port.mac == dst) {
                    match now {
                        None => q.enqueue(to, frame),
                        Some(now) => self.pipes[to].offer(now, frame, &mut |f| {
                            q.enqueue(to, f);
                            true
                        }),
                    }
                    taken = true;
                }
            }
        }
        if !taken {
            q.stats.unroutable += 1;
        }
    }

    /// Moves queued frames of port `id` into `batch`; returns how many.
    fn take(&mut self, id: usize, batch: &mut FrameBatch) -> usize {
        let q = &mut self.queues;
        if q.ports[id].queue.is_empty() && self.pipes[id].held() > 0 {
            // The receiver found nothing else: a reordered frame goes now.
            self.pipes[id].release_idle(Instant::now(), &mut |f| {
                q.enqueue(id, f);
                true
            });
        }
        q.take(id, batch)
    }
}

impl Queues {
    fn enqueue(&mut self, to: usize, frame: &[u8]) {
        let port = &mut self.ports[to];
        if port.queue.len() >= self.queue_limit {
            self.stats.overflowed += 1;
            return;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        port.queue.push_back(buf);
        port.ready.notify_one();
        self.stats.delivered += 1;
    }

    fn take(&mut self, id: usize, batch: &mut FrameBatch) -> usize {
        while !batch.is_full() {
            let Some(buf) = self.ports[id].queue.pop_front() else {
                break;
            };
            if !batch.push(&buf) {
                self.stats.oversized += 1;
            }
            self.spare.push(buf);
        }
        batch.len()
    }
}

/// One station on a [`MemoryHub`]. Cloning gives another handle to the same port (same MAC,
/// same receive queue), so one thread can receive while another sends or pulls the cable.
#[derive(Clone)]
pub struct MemoryPort {
    hub: MemoryHub,
    id: usize,
    mac: MacAddr,
    name: String,
    ready: Arc<Condvar>,
}

impl MemoryPort {
    /// The hub this port is plugged into.
    pub fn hub(&self) -> &MemoryHub {
        &self.hub
    }

    /// Takes the link down (`true`) or up again (`false`). While down, frames sent by or to
    /// this port are lost, as are the frames already queued for it; `recv_batch` just waits.
    pub fn set_down(&self, down: bool) {
        self.hub.lock().set_port_down(self.id, down);
    }

    /// True while the link is down.
    pub fn is_down(&self) -> bool {
        self.hub.lock().queues.ports[self.id].down
    }
}

impl core::fmt::Debug for MemoryPort {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryPort").field("name", &self.name).field("mac", &self.mac).finish()
    }
}

impl Transport for MemoryPort {
    fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        if batch.capacity() == 0 {
            return Ok(0);
        }
        // A timeout too large for an Instant is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = self.hub.lock();
        loop {
            let n = st.take(self.id, batch);
            if n > 0 {
                return Ok(n);
            }
            st = match deadline {
                None => self.ready.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(0);
                    }
                    self.ready.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }

    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize> {
        let mtu = self.hub.shared.mtu;
        let mut st = self.hub.lock();
        for frame in batch.iter() {
            st.route(self.id, frame, mtu);
        }
        Ok(batch.len())
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.hub.shared.mtu
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// A clone of the port: it shares the port's receive queue, so use it only to send.
    fn sender(&self) -> io::Result<Box<dyn Transport>> {
        Ok(Box::new(self.clone()))
    }
}

/// Two ports on a fresh perfect hub: a point-to-point link.
pub fn pair(mtu: usize, mac_a: MacAddr, mac_b: MacAddr) -> (MemoryPort, MemoryPort) {
    let hub = MemoryHub::new(mtu);
    (hub.port(mac_a), hub.port(mac_b))
}

fn clamp(mut imp: Impairments) -> Impairments {
    for p in [&mut imp.drop, &mut imp.duplicate, &mut imp.reorder] {
        // NaN would survive `clamp`; treat it as "never".
        *p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    }
    imp
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: usize = 1500;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    /// An AoE frame of `len` bytes from `src` to `dst`, carrying `id` after the header.
    fn frame(dst: MacAddr, src: MacAddr, id: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&ETHERTYPE_AOE.to_be_bytes());
        f[14..18].copy_from_slice(&id.to_be_bytes());
        f
    }

    fn id_of(f: &[u8]) -> u32 {
        u32::from_be_bytes(f[14..18].try_into().unwrap())
    }

    fn send(port: &mut MemoryPort, frames: &[Vec<u8>]) {
        let mut b = FrameBatch::new(frames.len(), 14 + MTU + 100);
        for f in frames {
            assert!(b.push(f));
        }
        assert_eq!(port.send_batch(&b).unwrap(), frames.len());
    }

    /// Every frame queued for `port`, in arrival order.
    fn drain(port: &mut MemoryPort) -> Vec<Vec<u8>> {
        let mut b = FrameBatch::new(64, 14 + MTU);
        let mut out = Vec::new();
        while port.recv_batch(&mut b, Some(Duration::ZERO)).unwrap() > 0 {
            out.extend(b.iter().map(<[u8]>::to_vec));
        }
        out
    }

    /// Sends `n` numbered frames a -> b, one batch of 100 at a time, then drains b.
    fn run(imp: Impairments, n: u32) -> (Vec<u32>, HubStats) {
        let hub = MemoryHub::with_impairments(MTU, imp);
        let (mut a, mut b) = (hub.port(mac(1)), hub.port(mac(2)));
        let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(mac(2), mac(1), i, 60)).collect();
        for chunk in frames.chunks(100) {
            send(&mut a, chunk);
        }
        let ids = drain(&mut b).iter().map(|f| id_of(f)).collect();
        (ids, hub.stats())
    }

    #[test]
    fn unicast_goes_to_its_port_only() {
        let hub = MemoryHub::new(MTU);
        let (mut a, mut b, mut c) = (hub.port(mac(1)), hub.port(mac(2)), hub.port(mac(3)));
        send(&mut a, &[frame(mac(2), mac(1), 7, 60), frame(mac(2), mac(1), 8, 1514)]);
        let got = drain(&mut b);
        assert_eq!(got, vec![frame(mac(2), mac(1), 7, 60), frame(mac(2), mac(1), 8, 1514)]);
        assert!(drain(&mut c).is_empty());
        assert!(drain(&mut a).is_empty());
        assert_eq!(hub.stats().delivered, 2);
    }

    #[test]
    fn broadcast_and_multicast_reach_everyone_but_the_sender() {
        let hub = MemoryHub::new(MTU);
        let (mut a, mut b, mut c) = (hub.port(mac(1)), hub.port(mac(2)), hub.port(mac(3)));
        let multicast = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]);
        send(&mut a, &[frame(MacAddr::BROADCAST, mac(1), 1, 60), frame(multicast, mac(1), 2, 60)]);
        for port in [&mut b, &mut c] {
            let ids: Vec<u32> = drain(port).iter().map(|f| id_of(f)).collect();
            assert_eq!(ids, vec![1, 2]);
        }
        assert!(drain(&mut a).is_empty());
    }

    #[test]
    fn unknown_destination_is_dropped() {
        let hub = MemoryHub::new(MTU);
        let (mut a, mut b) = (hub.port(mac(1)), hub.port(mac(2)));
        send(&mut a, &[frame(mac(9), mac(1), 1, 60)]);
        assert!(drain(&mut b).is_empty());
        assert_eq!(hub.stats().unroutable, 1);
    }

    #[test]
    fn frames_beyond_the_mtu_are_dropped() {
        let hub = MemoryHub::new(MTU);
        let (mut a, mut b) = (hub.port(mac(1)), hub.port(mac(2)));
        send(&mut a, &[frame(mac(2), mac(1), 1, 14 + MTU + 1), frame(mac(2), mac(1), 2, 14 + MTU)]);
        let ids: Vec<u32> = drain(&mut b).iter().map(|f| id_of(f)).collect();
        assert_eq!(ids, vec![2]);
        assert_eq!(hub.stats().oversized, 1);
    }

    #[test]
    fn only_aoe_frames_are_received() {
        let hub = MemoryHub::new(MTU);
        let (mut a, mut b) = (hub.port(mac(1)), hub.port(mac(2)));
        let mut ipv4 = frame(mac(2), mac(1), 1, 60);
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        send(&mut a, &[ipv4, vec![0xff; 13]]);
        assert!(drain(&mut b).is_empty());
        assert_eq!(hub.stats().filtered, 2);
    }

    #[test]
    fn timeout_returns_zero_without_spinning() {
        let (_a, mut b) = pair(MTU, mac(1), mac(2));
        let mut batch = FrameBatch::new(4, 14 + MTU);
        let start = Instant::now();
        assert_eq!(b.recv_batch(&mut batch, Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(b.recv_batch(&mut batch, Some(Duration::from_millis(30))).unwrap(), 0);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn blocked_receiver_wakes_when_a_frame_arrives() {
        let (mut a, mut b) = pair(MTU, mac(1), mac(2));
        let rx = std::thread::spawn(move || {
            let mut batch = FrameBatch::new(4, 14 + MTU);
            let n = b.recv_batch(&mut batch, None).unwrap();
            (n, id_of(batch.get(0).unwrap()))
        });
        std::thread::sleep(Duration::from_millis(20));
        send(&mut a, &[frame(mac(2), mac(1), 42, 60)]);
        assert_eq!(rx.join().unwrap(), (1, 42));
    }

    #[test]
    fn receive_fills_at_most_the_batch() {
        let (mut a, mut b) = pair(MTU, mac(1), mac(2));
        let frames: Vec<Vec<u8>> = (0..10).map(|i| frame(mac(2), mac(1), i, 60)).collect();
        send(&mut a, &frames);
        let mut batch = FrameBatch::new(4, 14 + MTU);
        assert_eq!(b.recv_batch(&mut batch, None).unwrap(), 4);
        assert_eq!(b.recv_batch(&mut batch, None).unwrap(), 4);
        assert_eq!(b.recv_batch(&mut batch, None).unwrap(), 2);
        assert_eq!(id_of(batch.get(1).unwrap()), 9);
    }

    #[test]
    fn down_link_loses_frames_both_ways() {
        let hub = MemoryHub::new(MTU);
        let (mut a, mut b) = (hub.port(mac(1)), hub.port(mac(2)));
        send(&mut a, &[frame(mac(2), mac(1), 1, 60)]);
        b.set_down(true);
        assert!(b.is_down());
        send(&mut a, &[frame(mac(2), mac(1), 2, 60)]);
        send(&mut b, &[frame(mac(1), mac(2), 3, 60)]);
        assert!(drain(&mut b).is_empty(), "queued frame lost with the link");
        assert!(drain(&mut a).is_empty());
        hub.set_down(mac(2), false);
        send(&mut a, &[frame(mac(2), mac(1), 4, 60)]);
        assert_eq!(drain(&mut b).len(), 1);
        assert_eq!(hub.stats().unroutable, 2);
    }

    #[test]
    fn full_queue_overflows() {
        let hub = MemoryHub::new(MTU);
        hub.set_queue_limit(3);
        let (mut a, mut b) = (hub.port(mac(1)), hub.port(mac(2)));
        let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(mac(2), mac(1), i, 60)).collect();
        send(&mut a, &frames);
        assert_eq!(drain(&mut b).len(), 3);
        assert_eq!(hub.stats().overflowed, 2);
    }

    #[test]
    fn drop_rate_is_about_right_and_deterministic() {
        let imp = Impairments { drop: 0.2, seed: 7, ..Impairments::NONE };
        let (ids, stats) = run(imp, 10_000);
        assert!((1_800..=2_200).contains(&stats.dropped), "{stats:?}");
        assert_eq!(ids.len() as u64 + stats.dropped, 10_000);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "drop alone keeps order");
        assert_eq!(run(imp, 10_000).0, ids, "same seed, same losses");
        let other = run(Impairments { seed: 8, ..imp }, 10_000).0;
        assert_ne!(other, ids, "another seed, other losses");
    }

    #[test]
    fn reorder_never_loses_frames() {
        let imp = Impairments { reorder: 0.3, seed: 1, ..Impairments::NONE };
        let (ids, stats) = run(imp, 10_000);
        assert!(stats.reordered > 1_000, "{stats:?}");
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
        assert_ne!(ids, sorted, "some frames came out of order");
        // A held frame comes right after the next one: nothing moves further than one place.
        for (pos, &id) in ids.iter().enumerate() {
            assert!(pos.abs_diff(id as usize) <= 1, "frame {id} at {pos}");
        }
    }

    #[test]
    fn held_frame_is_released_when_the_queue_runs_dry() {
        let hub = MemoryHub::with_impairments(MTU, Impairments { reorder: 1.0, ..Impairments::NONE });
        let (mut a, mut b) = (hub.port(mac(1)), hub.port(mac(2)));
        send(&mut a, &[frame(mac(2), mac(1), 1, 60)]);
        let ids: Vec<u32> = drain(&mut b).iter().map(|f| id_of(f)).collect();
        assert_eq!(ids, vec![1]);
    }

    #[test]
    fn duplicate_doubles_some_frames() {
        let imp = Impairments { duplicate: 0.1, seed: 3, ..Impairments::NONE };
        let (ids, stats) = run(imp, 10_000);
        assert!((800..=1_200).contains(&stats.duplicated), "{stats:?}");
        assert_eq!(ids.len() as u64, 10_000 + stats.duplicated);
        assert_eq!(stats.delivered, ids.len() as u64);
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn ports_work_across_threads() {
        let (mut a, mut b) = pair(MTU, mac(1), mac(2));
        let echo = std::thread::spawn(move || {
            let mut batch = FrameBatch::new(16, 14 + MTU);
            let mut seen = 0;
            while seen < 1_000 {
                let n = b.recv_batch(&mut batch, Some(Duration::from_secs(5))).unwrap();
                assert!(n > 0, "timed out");
                seen += n;
                for i in 0..n {
                    let f = batch.get_mut(i).unwrap();
                    f.copy_within(6..12, 0);
                    f[6..12].copy_from_slice(&mac(2).0);
                }
                b.send_batch(&batch).unwrap();
            }
        });
        let mut inbox = FrameBatch::new(16, 14 + MTU);
        let mut got = Vec::new();
        for chunk in (0..1_000).collect::<Vec<u32>>().chunks(50) {
            let frames: Vec<Vec<u8>> = chunk.iter().map(|&i| frame(mac(2), mac(1), i, 100)).collect();
            send(&mut a, &frames);
        }
        while got.len() < 1_000 {
            let n = a.recv_batch(&mut inbox, Some(Duration::from_secs(5))).unwrap();
            assert!(n > 0, "timed out");
            got.extend(inbox.iter().map(id_of));
        }
        echo.join().unwrap();
        assert_eq!(got, (0..1_000).collect::<Vec<_>>());
    }
}
