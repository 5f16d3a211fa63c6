//! The shared device over the in-memory hub, with the real target engine answering from a
//! thread.

use std::time::{Duration, Instant};

use aoe_transport::memory::MemoryHub;

use super::*;
use crate::testing::{mac, shared, Lab, Rng, TestTarget};
use crate::DeviceOptions;

fn options() -> DeviceOptions {
    let mut opts = DeviceOptions::default();
    opts.discover.timeout = Duration::from_secs(2);
    opts.discover.settle = Some(Duration::from_millis(50));
    opts.rto_initial = Duration::from_millis(20);
    opts.rto_min = Duration::from_millis(2);
    opts
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng(seed).fill(&mut v);
    v
}

#[test]
fn many_threads_read_and_write_at_once() {
    let hub = MemoryHub::new(9000);
    let mut t = TestTarget::new(mac(0x80), 1, 0, 8192);
    t.max_sectors = 17;
    t.set_buffer_count(32);
    let target = shared(t);
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(0x80)));
    let dev = Device::open(vec![Box::new(hub.port(mac(1)))], 1, 0, &options()).unwrap();
    let disk = SharedDevice::new(dev).unwrap();
    assert_eq!(disk.size_bytes(), 8192 * 512);

    // Eight threads, each its own 512 KiB region: aligned writes, then unaligned ones, then
    // reads of both kinds.
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let disk = disk.clone();
            std::thread::spawn(move || {
                let base = i * (512 << 10);
                let data = random(256 << 10, i);
                disk.write_at(&data, base).unwrap();
                let odd = random(5000, 100 + i);
                disk.write_at(&odd, base + (300 << 10) + 7).unwrap();
                let mut back = vec![0u8; data.len()];
                disk.read_at(&mut back, base).unwrap();
                assert!(back == data, "thread {i}: aligned data");
                let mut back = vec![0u8; odd.len()];
                disk.read_at(&mut back, base + (300 << 10) + 7).unwrap();
                assert!(back == odd, "thread {i}: unaligned data");
                disk.flush().unwrap();
                (base, data, odd)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let t = target.lock().unwrap().disk();
    for (base, data, odd) in results {
        let base = base as usize;
        assert!(t[base..base + data.len()] == data[..]);
        let at = base + (300 << 10) + 7;
        assert!(t[at..at + odd.len()] == odd[..]);
    }
    drop(t);
    let stats = disk.stats();
    assert!(stats.sent > 8 * (256 << 10) / 8704, "{stats:?}");
}

#[test]
fn submitted_requests_fly_together() {
    let hub = MemoryHub::new(1500);
    let mut t = TestTarget::new(mac(0x80), 1, 0, 1024);
    t.set_buffer_count(16);
    let target = shared(t);
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(0x80)));
    let disk =
        SharedDevice::new(Device::open(vec![Box::new(hub.port(mac(1)))], 1, 0, &options()).unwrap()).unwrap();
    let pending: Vec<Pending> = (0..64u64)
        .map(|k| disk.submit(Io::Write { offset: k * 4096, buf: random(4096, k) }).unwrap())
        .collect();
    for (k, p) in pending.into_iter().enumerate() {
        let done = p.wait();
        assert!(done.result.is_ok(), "{done:?}");
        assert_eq!(done.buf, random(4096, k as u64));
    }
    assert!(matches!(disk.submit(Io::Read { offset: 100, buf: vec![0; 512] }), Err(Error::Invalid(_))));
    assert!(matches!(
        disk.submit(Io::Read { offset: 1024 * 512, buf: vec![0; 512] }),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(disk.read_at(&mut [0; 2], 1024 * 512 - 1), Err(Error::OutOfRange { .. })));
}

#[test]
fn a_dead_target_fails_every_caller_and_the_handle_still_drops() {
    let hub = MemoryHub::new(1500);
    let target = shared(TestTarget::new(mac(0x80), 1, 0, 64));
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(0x80)));
    let mut opts = options();
    opts.dead_timeout = Duration::from_millis(300);
    let disk =
        SharedDevice::new(Device::open(vec![Box::new(hub.port(mac(1)))], 1, 0, &opts).unwrap()).unwrap();
    drop(lab);
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let disk = disk.clone();
            std::thread::spawn(move || disk.read_at(&mut [0u8; 1024], i * 1024))
        })
        .collect();
    for t in threads {
        assert!(matches!(t.join().unwrap(), Err(Error::TargetDead { .. })));
    }
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    drop(disk);
}

/// An aligned write of a sector racing an unaligned write that patches a few bytes of the
/// same sector: whichever order they land in, the aligned write's bytes outside the patch
/// must survive. The read-modify-write of the unaligned write must not write back the
/// sector as it was before the aligned write.
#[test]
fn an_aligned_write_racing_a_partial_write_of_its_sector_is_not_undone() {
    let hub = MemoryHub::new(9000);
    let target = shared(TestTarget::new(mac(0x80), 1, 0, 64));
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(0x80)));
    let disk =
        SharedDevice::new(Device::open(vec![Box::new(hub.port(mac(1)))], 1, 0, &options()).unwrap()).unwrap();
    let mut lost = 0;
    let rounds = 400;
    for round in 0..rounds {
        disk.write_at(&[0u8; 512], 0).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let a = {
            let (disk, barrier) = (disk.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                disk.write_at(&[1u8; 10], 10).unwrap();
            })
        };
        let b = {
            let (disk, barrier) = (disk.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                if round % 2 == 0 {
                    std::thread::yield_now();
                }
                disk.write_at(&[2u8; 512], 0).unwrap();
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        let mut back = [0u8; 512];
        disk.read_at(&mut back, 0).unwrap();
        // Valid: all 2 (patch first), or 2 with 10..20 = 1 (aligned first).
        let outside_ok = back[..10].iter().chain(&back[20..]).all(|&b| b == 2);
        if !outside_ok {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "{lost} of {rounds} rounds lost the aligned write (sector rolled back)");
}

/// Sixteen threads, odd sizes and offsets, their own ranges, over a link that duplicates and
/// reorders frames both ways: every byte right in the end.
#[test]
fn sixteen_threads_odd_sizes_over_duplicating_reordering_link() {
    use aoe_transport::fault::{FaultInjector, Plan};
    let hub = MemoryHub::new(1500);
    let mut t = TestTarget::new(mac(0x80), 1, 0, 16384);
    t.set_buffer_count(64);
    let target = shared(t);
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(0x80)));
    let plan = |seed| Plan {
        duplicate: 0.2,
        reorder: 0.2,
        reorder_gap: 3,
        reorder_hold: Duration::from_millis(30),
        drop: 0.02,
        seed,
        ..Plan::NONE
    };
    let port = FaultInjector::new(hub.port(mac(1)), plan(1), plan(2));
    let mut opts = options();
    opts.dead_timeout = Duration::from_secs(20);
    let disk = SharedDevice::new(Device::open(vec![Box::new(port)], 1, 0, &opts).unwrap()).unwrap();
    let start = Instant::now();
    let threads: Vec<_> = (0..16u64)
        .map(|i| {
            let disk = disk.clone();
            std::thread::spawn(move || {
                let base = i * (512 << 10) + 3 + i * 11;
                let mut expect = vec![0u8; 400 << 10];
                for k in 0..20u64 {
                    let len = 1 + ((k * 7919 + i * 104729) % (20 << 10)) as usize;
                    let off = ((k * 31337 + i) % ((400 << 10) - len as u64)) as usize;
                    let data = random(len, i * 1000 + k);
                    disk.write_at(&data, base + off as u64).unwrap();
                    expect[off..off + len].copy_from_slice(&data);
                    if k % 5 == 0 {
                        disk.flush().unwrap();
                    }
                }
                let mut back = vec![0u8; expect.len()];
                disk.read_at(&mut back, base).unwrap();
                (base, expect, back)
            })
        })
        .collect();
    for t in threads {
        let (base, expect, back) = t.join().unwrap();
        let d = target.lock().unwrap().disk();
        let b = base as usize;
        // Bytes written by the thread are right on disk and read back right.
        for (j, (&e, &g)) in expect.iter().zip(&back).enumerate() {
            if e != 0 {
                assert_eq!(g, e, "read back at {}", b + j);
                assert_eq!(d[b + j], e, "on disk at {}", b + j);
            }
        }
    }
    assert!(start.elapsed() < Duration::from_secs(120));
    let stats = disk.stats();
    eprintln!("{stats:?}");
}

/// Handles dropped while requests are in flight to a target that went away: the last drop
/// returns (after the dead timeout), every pending completes, no thread is left behind.
#[test]
fn drop_with_requests_in_flight_to_silent_target() {
    let hub = MemoryHub::new(1500);
    let target = shared(TestTarget::new(mac(0x80), 1, 0, 4096));
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(0x80)));
    let mut opts = options();
    opts.dead_timeout = Duration::from_millis(500);
    let disk =
        SharedDevice::new(Device::open(vec![Box::new(hub.port(mac(1)))], 1, 0, &opts).unwrap()).unwrap();
    let threads_before = std::fs::read_dir("/proc/self/task").unwrap().count();
    drop(lab);
    let mut pend = Vec::new();
    for i in 0..200u64 {
        pend.push(
            disk.submit(Io::Read { offset: (i % 4000) * 512, buf: vec![0; 512 * ((i % 8) + 1) as usize] }),
        );
        pend.push(disk.submit(Io::Write { offset: (i % 4000) * 512, buf: vec![7; 512] }));
        if i % 50 == 0 {
            pend.push(disk.submit(Io::Flush));
        }
    }
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(disk);
        tx.send(()).unwrap();
    });
    assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok(), "drop hung");
    eprintln!("drop took {:?}", start.elapsed());
    for p in pend {
        let d = p.unwrap().wait_timeout(Duration::from_secs(1)).expect("pending never completed");
        assert!(d.result.is_err());
    }
    std::thread::sleep(Duration::from_millis(100));
    let threads_after = std::fs::read_dir("/proc/self/task").unwrap().count();
    eprintln!("threads before {threads_before} after {threads_after}");
}

/// Writes to one sector in sequence, each waited for, over a link whose delay jitters more
/// than the RTO: a retransmission answered first lets the next write go, and the original
/// frame of the earlier write lands after it. The last write must win.
#[test]
fn a_late_original_of_a_retransmitted_write_does_not_undo_a_later_write() {
    use aoe_transport::fault::{FaultInjector, Plan};
    let hub = MemoryHub::new(1500);
    let target = shared(TestTarget::new(mac(0x80), 1, 0, 64));
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(0x80)));
    let send = Plan { jitter: Duration::from_millis(60), seed: 7, ..Plan::NONE };
    let port = FaultInjector::new(hub.port(mac(1)), send, Plan::NONE);
    let mut opts = options();
    opts.rto_initial = Duration::from_millis(5);
    opts.rto_min = Duration::from_millis(2);
    opts.rto_max = Duration::from_millis(10);
    opts.dead_timeout = Duration::from_secs(10);
    let disk = SharedDevice::new(Device::open(vec![Box::new(port)], 1, 0, &opts).unwrap()).unwrap();
    let mut wrong = 0;
    for round in 0..100u8 {
        disk.write_at(&[round; 512], 0).unwrap();
        disk.write_at(&[round.wrapping_add(100); 512], 0).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let d = target.lock().unwrap().disk();
        if d[0] != round.wrapping_add(100) {
            wrong += 1;
        }
    }
    eprintln!("{:?}", disk.stats());
    assert_eq!(wrong, 0, "{wrong} of 100 rounds: the disk holds the earlier write");
}
