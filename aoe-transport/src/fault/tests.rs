//! The fault injector over the in-memory link.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_proto::ethernet::ETHERTYPE_AOE;

use super::*;
use crate::memory::{self, MemoryPort};

const MTU: usize = 1500;

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

/// An AoE frame of `len` bytes from 1 to 2 carrying `id` after the header and a filler.
fn frame(id: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    f[..6].copy_from_slice(&mac(2).0);
    f[6..12].copy_from_slice(&mac(1).0);
    f[12..14].copy_from_slice(&ETHERTYPE_AOE.to_be_bytes());
    f[14..18].copy_from_slice(&id.to_be_bytes());
    f
}

fn id_of(f: &[u8]) -> u32 {
    u32::from_be_bytes(f[14..18].try_into().unwrap())
}

fn batch_of(ids: std::ops::Range<u32>) -> FrameBatch {
    let mut b = FrameBatch::new(ids.len(), 14 + MTU);
    for id in ids {
        assert!(b.push(&frame(id, 60)));
    }
    b
}

/// Everything `port` can receive now.
fn drain(port: &mut impl Transport) -> Vec<Vec<u8>> {
    let mut b = FrameBatch::new(16, 14 + MTU);
    let mut out = Vec::new();
    while port.recv_batch(&mut b, Some(Duration::ZERO)).unwrap() > 0 {
        out.extend(b.iter().map(<[u8]>::to_vec));
    }
    out
}

fn ids(frames: &[Vec<u8>]) -> Vec<u32> {
    frames.iter().map(|f| id_of(f)).collect()
}

fn link(send: Plan, recv: Plan) -> (FaultInjector<MemoryPort>, MemoryPort) {
    let (a, b) = memory::pair(MTU, mac(1), mac(2));
    (FaultInjector::new(a, send, recv), b)
}

/// Sends `n` numbered frames a -> b through a send plan, 100 a batch; what b got, and the
/// counters.
fn run_send(plan: Plan, n: u32) -> (Vec<u32>, FaultStats) {
    let (mut a, mut b) = link(plan, Plan::NONE);
    let mut got = Vec::new();
    for start in (0..n).step_by(100) {
        a.send_batch(&batch_of(start..(start + 100).min(n))).unwrap();
        got.extend(ids(&drain(&mut b)));
    }
    // Let a reordered frame still held go.
    a.send_faults().set_plan(Plan::NONE);
    a.send_faults().lock().release_idle(Instant::now(), &mut |f| {
        got.push(id_of(f));
        true
    });
    (got, a.send_faults().stats())
}

#[test]
fn perfect_plan_passes_everything_in_order() {
    let (mut a, mut b) = link(Plan::NONE, Plan::NONE);
    a.send_batch(&batch_of(0..50)).unwrap();
    let got = drain(&mut b);
    assert_eq!(ids(&got), (0..50).collect::<Vec<_>>());
    assert_eq!(got[7], frame(7, 60), "byte for byte");
    let s = a.send_faults().stats();
    assert_eq!((s.offered, s.passed), (50, 50));
}

#[test]
fn drop_rate_is_about_right_and_reproducible() {
    let plan = Plan { drop: 0.1, seed: 42, ..Plan::NONE };
    let (got, stats) = run_send(plan, 10_000);
    assert!((900..=1_100).contains(&stats.dropped), "{stats:?}");
    assert_eq!(got.len() as u64 + stats.dropped, 10_000);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "drop alone keeps order");
    assert_eq!(run_send(plan, 10_000).0, got, "same seed, same losses");
    assert_ne!(run_send(Plan { seed: 43, ..plan }, 10_000).0, got, "another seed, other losses");
}

#[test]
fn receive_side_drops_too() {
    let (a, mut b) = memory::pair(MTU, mac(1), mac(2));
    let mut b_faulty = FaultInjector::new(a, Plan::NONE, Plan { drop: 0.3, seed: 5, ..Plan::NONE });
    let mut got = 0;
    for start in (0..5_000).step_by(100) {
        b.send_batch(&{
            let mut f = batch_of(start..start + 100);
            for i in 0..f.len() {
                let slot = f.get_mut(i).unwrap();
                slot[..6].copy_from_slice(&mac(1).0);
                slot[6..12].copy_from_slice(&mac(2).0);
            }
            f
        })
        .unwrap();
        got += drain(&mut b_faulty).len();
    }
    let stats = b_faulty.recv_faults().stats();
    assert!((1_350..=1_650).contains(&stats.dropped), "{stats:?}");
    assert_eq!(got as u64 + stats.dropped, 5_000);
    assert_eq!(b_faulty.send_faults().stats(), FaultStats::default());
}

#[test]
fn duplicates_follow_their_original() {
    let plan = Plan { duplicate: 0.05, seed: 3, ..Plan::NONE };
    let (got, stats) = run_send(plan, 10_000);
    assert!((400..=600).contains(&stats.duplicated), "{stats:?}");
    assert_eq!(got.len() as u64, 10_000 + stats.duplicated);
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique, (0..10_000).collect::<Vec<_>>(), "copies are adjacent, order kept");
}

#[test]
fn reordering_really_reorders_and_loses_nothing() {
    let plan =
        Plan { reorder: 0.1, reorder_gap: 3, reorder_hold: Duration::from_secs(60), seed: 9, ..Plan::NONE };
    let (got, stats) = run_send(plan, 10_000);
    assert!(stats.reordered > 500, "{stats:?}");
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10_000).collect::<Vec<_>>(), "every frame once");
    let late = got.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(late as u64 >= stats.reordered - 1, "{late} inversions for {stats:?}");
    // A held frame goes out right after `reorder_gap` later ones.
    for (pos, &id) in got.iter().enumerate() {
        assert!(pos.abs_diff(id as usize) <= 3, "frame {id} at {pos}");
    }
    let first = got.windows(2).position(|w| w[0] > w[1]).unwrap();
    let held = got[first + 1];
    assert_eq!(&got[first - 2..first + 2], &[held + 1, held + 2, held + 3, held][..], "three passed it");
}

#[test]
fn a_reordered_frame_on_a_quiet_link_goes_after_its_hold() {
    let clock = ManualClock::new();
    let (a, mut b) = memory::pair(MTU, mac(1), mac(2));
    let plan = Plan { reorder: 1.0, reorder_hold: Duration::from_millis(5), ..Plan::NONE };
    let mut a = FaultInjector::with_clock(a, plan, Plan::NONE, Arc::new(clock.clone()));
    a.send_batch(&batch_of(0..1)).unwrap();
    assert!(drain(&mut b).is_empty(), "held");
    assert_eq!(a.next_release(), Some(clock.now() + Duration::from_millis(5)));
    assert_eq!(a.release_due().unwrap(), 0, "not yet");
    clock.advance(Duration::from_millis(5));
    assert_eq!(a.release_due().unwrap(), 1);
    assert_eq!(ids(&drain(&mut b)), vec![0]);
}

#[test]
fn delay_holds_frames_for_the_clock() {
    let clock = ManualClock::new();
    let (a, mut b) = memory::pair(MTU, mac(1), mac(2));
    let plan = Plan { delay: Duration::from_millis(10), ..Plan::NONE };
    let mut a = FaultInjector::with_clock(a, plan, Plan::NONE, Arc::new(clock.clone()));
    a.send_batch(&batch_of(0..3)).unwrap();
    clock.advance(Duration::from_millis(4));
    a.send_batch(&batch_of(3..5)).unwrap();
    assert!(drain(&mut b).is_empty());
    assert_eq!(a.send_faults().held(), 5);
    clock.advance(Duration::from_millis(6));
    assert_eq!(a.release_due().unwrap(), 3);
    assert_eq!(ids(&drain(&mut b)), vec![0, 1, 2]);
    clock.advance(Duration::from_millis(4));
    // Any call into the injector lets due frames go: here a receive.
    let mut inbox = FrameBatch::new(4, 14 + MTU);
    assert_eq!(a.recv_batch(&mut inbox, Some(Duration::ZERO)).unwrap(), 0);
    assert_eq!(ids(&drain(&mut b)), vec![3, 4]);
    assert_eq!(a.send_faults().stats().delayed, 5);
    assert_eq!(a.next_release(), None);
}

#[test]
fn a_waiting_receive_wakes_to_send_a_delayed_frame_and_to_deliver_one() {
    // Real time: a's frame to b is delayed 30 ms on the way out, b's answer 30 ms on the way
    // into a; a blocks in one receive meanwhile.
    let (a, b) = memory::pair(MTU, mac(1), mac(2));
    let delay = Plan { delay: Duration::from_millis(30), ..Plan::NONE };
    let mut a = FaultInjector::new(a, delay, delay);
    let echo = std::thread::spawn(move || {
        let mut b = b;
        let mut inbox = FrameBatch::new(4, 14 + MTU);
        assert_eq!(b.recv_batch(&mut inbox, Some(Duration::from_secs(5))).unwrap(), 1);
        let f = inbox.get_mut(0).unwrap();
        f.copy_within(6..12, 0);
        f[6..12].copy_from_slice(&mac(2).0);
        b.send_batch(&inbox).unwrap();
    });
    let start = Instant::now();
    a.send_batch(&batch_of(0..1)).unwrap();
    let mut inbox = FrameBatch::new(4, 14 + MTU);
    assert_eq!(a.recv_batch(&mut inbox, Some(Duration::from_secs(5))).unwrap(), 1);
    let took = start.elapsed();
    echo.join().unwrap();
    assert!(took >= Duration::from_millis(60), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn jitter_reorders_within_its_span() {
    let clock = ManualClock::new();
    let (a, mut b) = memory::pair(MTU, mac(1), mac(2));
    let plan = Plan { jitter: Duration::from_millis(10), seed: 4, ..Plan::NONE };
    let mut a = FaultInjector::with_clock(a, plan, Plan::NONE, Arc::new(clock.clone()));
    let mut got = Vec::new();
    for start in (0..200).step_by(10) {
        a.send_batch(&batch_of(start..start + 10)).unwrap();
        clock.advance(Duration::from_millis(1));
        a.release_due().unwrap();
        got.extend(ids(&drain(&mut b)));
    }
    clock.advance(Duration::from_millis(10));
    a.release_due().unwrap();
    got.extend(ids(&drain(&mut b)));
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..200).collect::<Vec<_>>());
    assert_ne!(got, sorted, "jitter moved frames");
    for (pos, &id) in got.iter().enumerate() {
        // 10 frames a millisecond, at most 10 ms late.
        assert!(pos.abs_diff(id as usize) <= 110, "frame {id} at {pos}");
    }
}

#[test]
fn corruption_flips_exactly_one_byte_past_the_ethernet_header() {
    let plan = Plan { corrupt: 1.0, seed: 8, ..Plan::NONE };
    let (mut a, mut b) = link(plan, Plan::NONE);
    let mut spots = std::collections::HashSet::new();
    for id in 0..200 {
        let mut out = FrameBatch::new(1, 14 + MTU);
        out.push(&frame(id, 1000));
        a.send_batch(&out).unwrap();
        let got = drain(&mut b);
        assert_eq!(got.len(), 1);
        let want = frame(id, 1000);
        let diff: Vec<usize> = (0..1000).filter(|&i| got[0][i] != want[i]).collect();
        assert_eq!(diff.len(), 1, "frame {id}: bytes {diff:?} differ");
        assert!(diff[0] >= 14, "frame {id}: byte {} is in the Ethernet header", diff[0]);
        spots.insert(diff[0]);
    }
    assert!(spots.len() > 100, "the byte is chosen at random: {}", spots.len());
    assert_eq!(a.send_faults().stats().corrupted, 200);
    // Frames no longer than `corrupt_from` pass untouched.
    a.send_faults().set_plan(Plan { corrupt: 1.0, corrupt_from: 60, ..Plan::NONE });
    a.send_batch(&batch_of(0..1)).unwrap();
    assert_eq!(drain(&mut b), vec![frame(0, 60)]);
}

#[test]
fn partition_by_frames_heals_itself() {
    let (mut a, mut b) = link(Plan::NONE, Plan::NONE);
    let faults = a.send_faults();
    faults.partition(Heal::AfterFrames(30));
    assert!(faults.is_partitioned());
    a.send_batch(&batch_of(0..50)).unwrap();
    assert_eq!(ids(&drain(&mut b)), (30..50).collect::<Vec<_>>());
    assert!(!faults.is_partitioned());
    assert_eq!(faults.stats().partitioned, 30);
}

#[test]
fn partition_by_time_heals_on_the_clock_and_by_hand() {
    let clock = ManualClock::new();
    let (a, mut b) = memory::pair(MTU, mac(1), mac(2));
    let mut a = FaultInjector::with_clock(a, Plan::NONE, Plan::NONE, Arc::new(clock.clone()));
    let faults = a.send_faults();
    faults.partition(Heal::After(Duration::from_millis(100)));
    a.send_batch(&batch_of(0..5)).unwrap();
    clock.advance(Duration::from_millis(99));
    a.send_batch(&batch_of(5..10)).unwrap();
    assert!(drain(&mut b).is_empty());
    clock.advance(Duration::from_millis(1));
    a.send_batch(&batch_of(10..12)).unwrap();
    assert_eq!(ids(&drain(&mut b)), vec![10, 11]);

    faults.partition(Heal::Manually);
    clock.advance(Duration::from_secs(3600));
    a.send_batch(&batch_of(12..14)).unwrap();
    assert!(drain(&mut b).is_empty());
    faults.heal();
    a.send_batch(&batch_of(14..15)).unwrap();
    assert_eq!(ids(&drain(&mut b)), vec![14]);
    assert_eq!(faults.stats().partitioned, 12);
}

#[test]
fn a_full_receive_batch_keeps_the_rest_for_the_next_receive() {
    let (a, mut b) = memory::pair(MTU, mac(1), mac(2));
    let mut b_faulty = FaultInjector::new(a, Plan::NONE, Plan { duplicate: 1.0, ..Plan::NONE });
    let mut sent = batch_of(0..4);
    for i in 0..4 {
        let f = sent.get_mut(i).unwrap();
        f[..6].copy_from_slice(&mac(1).0);
    }
    b.send_batch(&sent).unwrap();
    let mut inbox = FrameBatch::new(4, 14 + MTU);
    let mut got = Vec::new();
    while b_faulty.recv_batch(&mut inbox, Some(Duration::ZERO)).unwrap() > 0 {
        assert!(inbox.len() <= 4);
        got.extend(inbox.iter().map(id_of));
    }
    assert_eq!(got, vec![0, 0, 1, 1, 2, 2, 3, 3]);
}

#[test]
fn a_full_hold_drops_and_counts() {
    let clock = ManualClock::new();
    let (a, mut b) = memory::pair(MTU, mac(1), mac(2));
    let plan = Plan { delay: Duration::from_millis(1), hold_limit: 8, ..Plan::NONE };
    let mut a = FaultInjector::with_clock(a, plan, Plan::NONE, Arc::new(clock.clone()));
    a.send_batch(&batch_of(0..20)).unwrap();
    clock.advance(Duration::from_millis(1));
    a.release_due().unwrap();
    assert_eq!(ids(&drain(&mut b)), (0..8).collect::<Vec<_>>());
    let s = a.send_faults().stats();
    assert_eq!((s.delayed, s.overflowed, s.passed), (8, 12, 8));
}

#[test]
fn tails_are_joined_when_faults_apply_and_passed_on_when_not() {
    let (mut a, mut b) = link(Plan::NONE, Plan::NONE);
    let sector = [0xabu8; 512];
    let mut out = FrameBatch::new(1, 14 + MTU);
    out.push(&frame(1, 36));
    let tails: [&[u8]; 1] = [&sector];
    a.send_with_tails(&out, &tails).unwrap();
    a.send_faults().set_plan(Plan { corrupt_from: 9999, corrupt: 1.0, ..Plan::NONE });
    a.send_with_tails(&out, &tails).unwrap();
    let got = drain(&mut b);
    assert_eq!(got.len(), 2);
    for f in &got {
        assert_eq!(f.len(), 36 + 512);
        assert_eq!(f[..36], frame(1, 36)[..]);
        assert!(f[36..].iter().all(|&x| x == 0xab));
    }
}

#[test]
fn a_sender_shares_the_faults() {
    let (a, mut b) = link(Plan { drop: 1.0, ..Plan::NONE }, Plan::NONE);
    let mut sender = a.sender().unwrap();
    sender.send_batch(&batch_of(0..10)).unwrap();
    assert!(drain(&mut b).is_empty());
    assert_eq!(a.send_faults().stats().dropped, 10);
    a.send_faults().set_plan(Plan::NONE);
    sender.send_batch(&batch_of(10..12)).unwrap();
    assert_eq!(ids(&drain(&mut b)), vec![10, 11]);
}

#[test]
fn pipes_are_reproducible_frame_by_frame() {
    let plan = Plan {
        drop: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        corrupt: 0.05,
        jitter: Duration::from_micros(50),
        seed: 77,
        ..Plan::NONE
    };
    let run = || {
        let mut pipe = Pipe::new(plan, 14 + MTU);
        let start = Instant::now();
        let mut out = Vec::new();
        for id in 0..2_000u32 {
            let now = start + Duration::from_micros(u64::from(id) * 10);
            let mut emit = |f: &[u8]| {
                out.push(f.to_vec());
                true
            };
            pipe.release(now, &mut emit);
            pipe.offer(now, &frame(id, 80), &mut emit);
        }
        (out, pipe.stats())
    };
    let (first, stats) = run();
    assert_eq!(run(), (first, stats));
    for n in [stats.dropped, stats.duplicated, stats.corrupted] {
        assert!((50..=150).contains(&n), "{stats:?}");
    }
}
