//! The fault-injecting relay on real interfaces (needs root; skipped otherwise, a failure
//! under AOE_REQUIRE_NETNS=1). Frames go in and come out through aoe-testkit's own
//! PacketSocket, independent of the transport the relay is built on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aoe_testkit::netns::Netns;
use aoe_testkit::packet::{PacketSocket, ETH_P_AOE};
use aoe_testkit::privilege::netns_available;
use aoe_testkit::process::wait_until;
use aoe_testkit::relay::Relay;
use aoe_transport::fault::{Faults, Heal, Plan};

/// The relay is quiet this long: everything it was going to forward has arrived.
const SETTLE: Duration = Duration::from_millis(300);

/// An AoE frame of `len` bytes from `src` to `dst` carrying `id`, then a filler made of it.
fn frame(dst: [u8; 6], src: [u8; 6], id: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u32 ^ id) as u8).collect();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETH_P_AOE.to_be_bytes());
    f[14..18].copy_from_slice(&id.to_be_bytes());
    f
}

fn id_of(f: &[u8]) -> u32 {
    u32::from_be_bytes(f[14..18].try_into().unwrap())
}

/// One side of the relay: its namespace, interface and MAC.
struct End<'a> {
    ns: &'a Netns,
    ifname: &'a str,
    mac: [u8; 6],
}

fn initiator(relay: &Relay) -> End<'_> {
    End { ns: &relay.initiator, ifname: relay.initiator_if(), mac: relay.initiator_mac() }
}

fn target(relay: &Relay) -> End<'_> {
    End { ns: &relay.target, ifname: relay.target_if(), mac: relay.target_mac() }
}

/// Frames sent but not yet taken in by the relay, or forwarded but not yet read, before the
/// sender waits: well within every socket buffer on the way.
const IN_FLIGHT: u64 = 64;

/// What the relay makes of `frames` sent from `from` to `to` through `way`: the frames `to`
/// received, in order, and how many came back to `from` (must be none).
fn exchange(from: &End, to: &End, way: &Faults, frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
    let tx = PacketSocket::open_in(from.ns, from.ifname, ETH_P_AOE).unwrap();
    let rx = PacketSocket::open_in(to.ns, to.ifname, ETH_P_AOE).unwrap();
    rx.set_recv_buffer(16 << 20).unwrap();
    let sent = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let start = way.stats();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let mut got = Vec::new();
            loop {
                match rx.recv_timeout(SETTLE).unwrap() {
                    Some(f) => {
                        got.push(f);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    None if sent.load(Ordering::Relaxed) => return got,
                    None => {}
                }
            }
        });
        for (n, f) in frames.iter().enumerate() {
            // Flow control: the relay has taken in nearly all that was sent, and the
            // receiver has read nearly all that the relay passed on.
            let caught_up = || {
                let s = way.stats();
                s.offered - start.offered + IN_FLIGHT >= n as u64
                    && received.load(Ordering::Relaxed) + IN_FLIGHT >= s.passed - start.passed
            };
            assert!(wait_until(Duration::from_secs(5), caught_up), "the relay stalled: {:?}", way.stats());
            tx.send(f).unwrap();
        }
        sent.store(true, Ordering::Relaxed);
        let got = receiver.join().unwrap();
        let mut back = 0;
        while tx.recv_timeout(Duration::ZERO).unwrap().is_some() {
            back += 1;
        }
        (got, back)
    })
}

/// `n` numbered frames from `from` to `to`, of lengths from 60 to 1514 bytes.
fn numbered(from: &End, to: &End, n: u32) -> Vec<Vec<u8>> {
    (0..n).map(|id| frame(to.mac, from.mac, id, 60 + (id as usize * 97) % 1455)).collect()
}

#[test]
fn relay_is_transparent_both_ways_without_faults() {
    if !netns_available("relay_is_transparent_both_ways_without_faults") {
        return;
    }
    let relay = Relay::new("tkrelay", 1500, Plan::NONE, Plan::NONE).unwrap();
    let (i, t) = (initiator(&relay), target(&relay));
    assert_ne!(i.mac, t.mac);
    assert!(relay.middle.name().starts_with("tkrelay-m-"));

    let frames = numbered(&i, &t, 300);
    let (got, back) = exchange(&i, &t, relay.to_target(), &frames);
    assert_eq!(back, 0, "nothing goes back out of the interface it came in on");
    assert_eq!(got.len(), frames.len());
    assert!(got == frames, "byte for byte, in order, MACs unchanged");

    let frames = numbered(&t, &i, 300);
    let (got, back) = exchange(&t, &i, relay.to_initiator(), &frames);
    assert_eq!(back, 0);
    assert!(got == frames);

    for way in [relay.to_target(), relay.to_initiator()] {
        let s = way.stats();
        assert_eq!((s.offered, s.passed), (300, 300), "{s:?}");
    }
    assert_eq!(relay.errors().0, 0, "{:?}", relay.errors());
}

#[test]
fn relay_drops_about_the_planned_share_one_way_only() {
    if !netns_available("relay_drops_about_the_planned_share_one_way_only") {
        return;
    }
    let relay = Relay::new("tkdrop", 1500, Plan { drop: 0.2, seed: 1, ..Plan::NONE }, Plan::NONE).unwrap();
    let (i, t) = (initiator(&relay), target(&relay));
    let frames = numbered(&i, &t, 1000);
    let (got, _) = exchange(&i, &t, relay.to_target(), &frames);
    let s = relay.to_target().stats();
    assert_eq!(s.offered, 1000, "{s:?}");
    assert!((150..=250).contains(&s.dropped), "{s:?}");
    assert_eq!(got.len() as u64, 1000 - s.dropped, "{s:?}");
    let mut last = None;
    for f in &got {
        let id = id_of(f);
        assert_eq!(f, &frames[id as usize], "intact");
        assert!(last < Some(id), "in order");
        last = Some(id);
    }

    let (back, _) = exchange(&t, &i, relay.to_initiator(), &numbered(&t, &i, 100));
    assert_eq!(back.len(), 100, "the other way is perfect");
}

#[test]
fn relay_duplicates_about_the_planned_share() {
    if !netns_available("relay_duplicates_about_the_planned_share") {
        return;
    }
    let dup = Plan { duplicate: 0.2, seed: 2, ..Plan::NONE };
    let relay = Relay::new("tkdup", 1500, Plan::NONE, dup).unwrap();
    let (i, t) = (initiator(&relay), target(&relay));
    let (got, _) = exchange(&t, &i, relay.to_initiator(), &numbered(&t, &i, 1000));
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for f in &got {
        *seen.entry(id_of(f)).or_default() += 1;
    }
    let twice = seen.values().filter(|&&n| n == 2).count() as u64;
    let s = relay.to_initiator().stats();
    assert_eq!(seen.len(), 1000, "none lost");
    assert!(seen.values().all(|&n| n <= 2));
    assert_eq!(twice, s.duplicated, "{s:?}");
    assert!((140..=260).contains(&twice), "{s:?}");
}

#[test]
fn relay_partition_heals_by_count_and_by_hand() {
    if !netns_available("relay_partition_heals_by_count_and_by_hand") {
        return;
    }
    let relay = Relay::new("tkpart", 1500, Plan::NONE, Plan::NONE).unwrap();
    let (i, t) = (initiator(&relay), target(&relay));
    relay.partition(Heal::Manually);
    assert!(exchange(&i, &t, relay.to_target(), &numbered(&i, &t, 20)).0.is_empty());
    assert!(exchange(&t, &i, relay.to_initiator(), &numbered(&t, &i, 20)).0.is_empty());
    relay.heal();
    assert_eq!(exchange(&i, &t, relay.to_target(), &numbered(&i, &t, 20)).0.len(), 20);

    relay.to_target().partition(Heal::AfterFrames(10));
    let (got, _) = exchange(&i, &t, relay.to_target(), &numbered(&i, &t, 30));
    assert_eq!(got.iter().map(|f| id_of(f)).collect::<Vec<_>>(), (10..30).collect::<Vec<_>>());
    assert_eq!(relay.to_target().stats().partitioned, 30);
}

#[test]
fn relay_delays_and_changes_plans_at_runtime() {
    if !netns_available("relay_delays_and_changes_plans_at_runtime") {
        return;
    }
    let relay = Relay::new("tkdelay", 1500, Plan::NONE, Plan::NONE).unwrap();
    let (i, t) = (initiator(&relay), target(&relay));
    relay.set_plans(Plan { delay: Duration::from_millis(150), ..Plan::NONE }, Plan::NONE);
    let tx = PacketSocket::open_in(i.ns, i.ifname, ETH_P_AOE).unwrap();
    let rx = PacketSocket::open_in(t.ns, t.ifname, ETH_P_AOE).unwrap();
    let f = frame(t.mac, i.mac, 7, 100);
    let start = Instant::now();
    tx.send(&f).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Some(f.clone()));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(2), "{took:?}");

    relay.set_plans(Plan { corrupt: 1.0, ..Plan::NONE }, Plan::NONE);
    tx.send(&f).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((0..f.len()).filter(|&k| got[k] != f[k]).count(), 1, "one byte flipped");
    assert_eq!(got[..14], f[..14], "the Ethernet header is kept");
}

#[test]
fn relay_stops_and_cleans_up_on_drop() {
    if !netns_available("relay_stops_and_cleans_up_on_drop") {
        return;
    }
    let relay = Relay::new("tkrdrop", 1500, Plan::NONE, Plan::NONE).unwrap();
    let names = [relay.initiator.name(), relay.middle.name(), relay.target.name()].map(str::to_owned);
    let start = Instant::now();
    drop(relay);
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    let listed = aoe_testkit::netns::list().unwrap();
    assert!(names.iter().all(|n| !listed.contains(n)), "{names:?} in {listed:?}");
}
