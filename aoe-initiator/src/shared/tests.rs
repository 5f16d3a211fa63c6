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
