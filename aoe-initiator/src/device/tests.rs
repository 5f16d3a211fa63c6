//! Device tests over the in-memory hub, with the real target engine answering from threads.

use std::collections::HashMap;
use std::time::Instant;

use aoe_transport::memory::{Impairments, MemoryHub};

use super::*;
use crate::testing::{mac, shared, Lab, Rng, Shared, TestTarget};

const INITIATOR: u8 = 0x01;
const TARGET: u8 = 0x80;

fn quick() -> DeviceOptions {
    let mut opts = DeviceOptions::default();
    opts.discover.timeout = Duration::from_secs(2);
    opts.discover.settle = Some(Duration::from_millis(50));
    opts.rto_initial = Duration::from_millis(20);
    opts.rto_min = Duration::from_millis(2);
    opts.rto_max = Duration::from_millis(100);
    opts
}

/// A hub with one fake target (e1.0 of `sectors` sectors) served on it.
fn setup(mtu: usize, sectors: usize, sector_count: u8) -> (MemoryHub, Shared, Lab) {
    let hub = MemoryHub::new(mtu);
    let mut t = TestTarget::new(mac(TARGET), 1, 0, sectors);
    t.max_sectors = sector_count;
    let target = shared(t);
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(TARGET)));
    (hub, target, lab)
}

fn open(hub: &MemoryHub, opts: &DeviceOptions) -> Device {
    Device::open(vec![Box::new(hub.port(mac(INITIATOR)))], 1, 0, opts).unwrap()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng(seed).fill(&mut v);
    v
}

#[test]
fn open_learns_the_target() {
    let (hub, _target, _lab) = setup(9000, 1000, 17);
    let dev = open(&hub, &quick());
    let info = dev.info();
    assert_eq!((info.shelf, info.slot, info.sectors, info.lba48), (1, 0, 1000, true));
    assert_eq!((info.buffer_count, info.sector_count), (16, 17));
    assert_eq!(info.model, "Rust AoE target");
    assert_eq!(info.paths.len(), 1);
    assert_eq!(info.paths[0].mac, mac(TARGET));
    assert_eq!(dev.size_bytes(), 1000 * 512);
    assert_eq!(dev.session().config().max_sectors, 17);
}

#[test]
fn frames_are_bounded_by_the_local_mtu() {
    // The target takes 17 sectors, but the link carries 2.
    let (hub, _target, _lab) = setup(1500, 64, 17);
    let dev = open(&hub, &quick());
    assert_eq!(dev.session().config().max_sectors, 2);
}

#[test]
fn reads_and_writes_at_any_offset_and_length() {
    let (hub, target, _lab) = setup(1500, 64, 2);
    let mut dev = open(&hub, &quick());
    let size = dev.size_bytes() as usize;
    let mut model = vec![0u8; size];
    let cases: &[(usize, usize)] = &[
        (0, 512),      // one aligned sector
        (1024, 4096),  // aligned, several frames
        (700, 10),     // inside one sector
        (510, 4),      // across one boundary
        (3000, 2000),  // head, middle, tail
        (5120, 1),     // one byte at a sector start
        (6143, 1),     // the last byte of a sector
        (8000, 0),     // nothing
        (0, size),     // the whole disk
        (size - 3, 3), // the very end
        (100, 300),    // head only, not reaching the sector end
    ];
    for (k, &(offset, len)) in cases.iter().enumerate() {
        let data = random(len, k as u64 + 1);
        dev.write_at(&data, offset as u64).unwrap();
        model[offset..offset + len].copy_from_slice(&data);
        let mut back = vec![0u8; len];
        dev.read_at(&mut back, offset as u64).unwrap();
        assert_eq!(back, data, "read back {offset}+{len}");
    }
    let mut all = vec![0u8; size];
    dev.read_at(&mut all, 0).unwrap();
    assert!(all == model, "device contents differ from the model");
    assert!(target.lock().unwrap().disk() == model, "target disk differs from the model");
}

#[test]
fn out_of_range_is_refused_without_sending() {
    let (hub, _target, _lab) = setup(1500, 8, 2);
    let mut dev = open(&hub, &quick());
    let sent = dev.stats().sent;
    let mut buf = [0u8; 2];
    assert!(matches!(dev.read_at(&mut buf, 8 * 512 - 1), Err(Error::OutOfRange { lba: 7, sectors: 2 })));
    assert!(matches!(dev.write_at(&buf, u64::MAX), Err(Error::OutOfRange { .. })));
    assert_eq!(dev.stats().sent, sent);
    // The end itself is fine.
    dev.read_at(&mut buf, 8 * 512 - 2).unwrap();
    dev.read_at(&mut [], 8 * 512).unwrap();
}

#[test]
fn pipelines_up_to_the_window() {
    let (hub, _target, _lab) = setup(1500, 2048, 2);
    let mut opts = quick();
    opts.max_window = Some(8);
    let mut dev = open(&hub, &opts);
    assert_eq!(dev.session().window(), 8);
    let data = random(1 << 20, 42);
    dev.write_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    dev.read_at(&mut back, 0).unwrap();
    assert!(back == data);
    // IDENTIFY went out on a session of each path before the device's own session began.
    assert_eq!(dev.stats().sent, 2 * (1 << 20) / 1024, "two frames per KiB");
}

#[test]
fn survives_a_lossy_link() {
    let (hub, target, _lab) = setup(1500, 256, 2);
    let mut dev = open(&hub, &quick());
    hub.set_impairments(Impairments { drop: 0.1, duplicate: 0.05, reorder: 0.05, seed: 11 });
    // Chunks in 4-sector blocks that share no sector: a stale retransmission from the link's
    // reordering can never overwrite a later write.
    let mut model = target.lock().unwrap().disk();
    for k in 0..64usize {
        let data = random(1500, k as u64);
        let offset = k * 2048 + 100;
        dev.write_at(&data, offset as u64).unwrap();
        model[offset..offset + data.len()].copy_from_slice(&data);
    }
    let mut all = vec![0u8; model.len()];
    dev.read_at(&mut all, 0).unwrap();
    hub.set_impairments(Impairments::NONE);
    assert!(all == model);
    assert!(hub.stats().dropped > 0, "the link lost frames");
    assert!(dev.stats().retransmitted > 0);
}

#[test]
fn commands() {
    let (hub, target, _lab) = setup(1500, 64, 2);
    let mut dev = open(&hub, &quick());
    assert_eq!(dev.identify().unwrap().sectors, 64);
    dev.flush().unwrap();
    assert_eq!(dev.config_read().unwrap().string, b"");
    assert_eq!(dev.config_set(b"rack 4", false).unwrap().string, b"rack 4");
    assert!(matches!(dev.config_set(b"other", false), Err(Error::Aoe { code: 4 })));
    assert_eq!(dev.config_set(b"other", true).unwrap().string, b"other");

    let me = mac(INITIATOR);
    assert_eq!(dev.mask_edit(&[me, mac(0x42)], &[]).unwrap(), vec![me, mac(0x42)]);
    assert_eq!(dev.mask_edit(&[], &[mac(0x42)]).unwrap(), vec![me]);
    assert_eq!(dev.mask_read().unwrap(), vec![me]);

    assert_eq!(dev.reserve_set(&[me], false).unwrap(), vec![me]);
    assert_eq!(dev.reserve_read().unwrap(), vec![me]);
    target.lock().unwrap().reserve(&[mac(0x42)]);
    assert!(matches!(dev.reserve_set(&[me], false), Err(Error::Aoe { code: 6 })));
    assert!(matches!(dev.write_at(&[1; 512], 0), Err(Error::Aoe { code: 6 })));
    assert_eq!(dev.reserve_set(&[], true).unwrap(), vec![]);
    dev.write_at(&[1; 512], 0).unwrap();

    let reply = dev
        .ata(AtaRequest {
            flags: aoe_proto::AtaFlags::empty(),
            feature: 0,
            sector_count: 1,
            command: aoe_proto::AtaCommand::IdentifyDevice.into(),
            lba: 0,
            data: Vec::new(),
        })
        .unwrap();
    assert_eq!(reply.data.len(), 512);
}

#[test]
fn no_such_disk_names_the_interfaces() {
    let (hub, _target, _lab) = setup(1500, 8, 2);
    let mut opts = quick();
    opts.discover.timeout = Duration::from_millis(100);
    let links: Vec<Box<dyn Transport>> = vec![Box::new(hub.port(mac(INITIATOR))), Box::new(hub.port(mac(2)))];
    let err = Device::open(links, 9, 9, &opts).unwrap_err();
    assert!(matches!(&err, Error::NoSuchDisk { shelf: 9, slot: 9, .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("no such disk: e9.9 not found on mem"), "{text}");
    assert!(text.contains(", mem"), "{text}");
}

#[test]
fn a_silent_target_is_declared_dead() {
    let (hub, target, lab) = setup(1500, 8, 2);
    let mut opts = quick();
    opts.dead_timeout = Duration::from_millis(300);
    let mut dev = open(&hub, &opts);
    drop(lab);
    let mut buf = [0u8; 1024];
    assert!(matches!(dev.read_at(&mut buf, 0), Err(Error::TargetDead { .. })));
    // Back again: the next call works.
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(TARGET)));
    dev.read_at(&mut buf, 0).unwrap();
}

#[test]
fn two_paths_fail_over_when_one_breaks() {
    // Two separate segments, one target with a port on each.
    let (hub_a, hub_b) = (MemoryHub::new(1500), MemoryHub::new(1500));
    let target = shared(TestTarget::new(mac(TARGET), 1, 0, 256));
    let mut lab = Lab::default();
    let target_a = hub_a.port(mac(TARGET));
    let target_a_handle = target_a.clone();
    lab.serve(&target, target_a);
    lab.serve(&target, hub_b.port(mac(TARGET + 1)));
    let links: Vec<Box<dyn Transport>> =
        vec![Box::new(hub_a.port(mac(INITIATOR))), Box::new(hub_b.port(mac(INITIATOR + 1)))];
    let mut dev = Device::open(links, 1, 0, &quick()).unwrap();
    let paths: Vec<(usize, MacAddr)> = dev.info().paths.iter().map(|p| (p.link, p.mac)).collect();
    assert_eq!(paths, vec![(0, mac(TARGET)), (1, mac(TARGET + 1))]);

    let data = random(128 * 1024, 5);
    dev.write_at(&data, 0).unwrap();
    assert!(hub_a.stats().delivered > 0 && hub_b.stats().delivered > 0, "both paths carried frames");

    target_a_handle.set_down(true);
    let mut back = vec![0u8; data.len()];
    dev.read_at(&mut back, 0).unwrap();
    assert!(back == data);
    assert!(!dev.session().path_is_up(0, Instant::now()), "the broken path is marked down");
    assert!(dev.session().path_is_up(1, Instant::now()));
    // Still works, on the remaining path only.
    dev.read_at(&mut back, 0).unwrap();
    assert!(back == data);
}

#[test]
fn submitted_io_completes_through_poll_with_its_buffer() {
    let (hub, target, _lab) = setup(1500, 256, 2);
    let mut dev = open(&hub, &quick());
    let mut written = HashMap::new();
    for k in 0..8u64 {
        let data = random(4096, 100 + k);
        let id = dev.submit(Io::Write { offset: k * 8192, buf: data.clone() }).unwrap();
        written.insert(id, (k, data));
    }
    let flush = dev.submit(Io::Flush).unwrap();
    assert_eq!(dev.pending(), 9);
    let mut finished = Vec::new();
    while dev.pending() > 0 {
        let done = dev.poll(Some(Instant::now() + Duration::from_secs(10))).unwrap().expect("a completion");
        assert!(done.result.is_ok(), "{done:?}");
        finished.push(done.id);
        if let Some((_, data)) = written.get(&done.id) {
            assert_eq!(&done.buf, data, "the buffer comes back");
        }
    }
    assert_eq!(finished.last(), Some(&flush), "the flush waits for the writes before it");
    assert_eq!(dev.poll(None).unwrap().map(|d| d.id), None, "nothing pending");
    for (k, data) in written.values() {
        let at = (*k * 8192) as usize;
        assert_eq!(&target.lock().unwrap().disk()[at..at + 4096], &data[..]);
    }

    // Reads, many in flight; a blocking call in between keeps their completions.
    let ids: Vec<(OpId, u64)> = (0..8u64)
        .map(|k| (dev.submit(Io::Read { offset: k * 8192, buf: vec![0; 4096] }).unwrap(), k))
        .collect();
    let mut sector = [0u8; 512];
    dev.read_at(&mut sector, 0).unwrap();
    let mut got = HashMap::new();
    while dev.pending() > 0 {
        let done = dev.poll(None).unwrap().expect("a completion");
        got.insert(done.id, done.buf);
    }
    for (id, k) in ids {
        let (_, data) = written.values().find(|(kk, _)| *kk == k).unwrap();
        assert_eq!(&got[&id], data, "read {k}");
    }

    // Off sector boundaries or beyond the end: refused without queueing.
    assert!(matches!(dev.submit(Io::Read { offset: 1, buf: vec![0; 512] }), Err(Error::Invalid(_))));
    assert!(matches!(dev.submit(Io::Write { offset: 0, buf: vec![0; 100] }), Err(Error::Invalid(_))));
    let end = dev.size_bytes();
    assert!(matches!(dev.submit(Io::Read { offset: end, buf: vec![0; 512] }), Err(Error::OutOfRange { .. })));
    assert_eq!(dev.pending(), 0);
}

#[test]
fn a_dead_target_fails_submitted_io() {
    let (hub, _target, lab) = setup(1500, 64, 2);
    let mut opts = quick();
    opts.dead_timeout = Duration::from_millis(200);
    let mut dev = open(&hub, &opts);
    drop(lab);
    let id = dev.submit(Io::Read { offset: 0, buf: vec![0; 1024] }).unwrap();
    let done = dev.poll(Some(Instant::now() + Duration::from_secs(10))).unwrap().expect("a completion");
    assert_eq!(done.id, id);
    assert!(matches!(done.result, Err(Error::TargetDead { .. })), "{:?}", done.result);
    assert_eq!(done.buf.len(), 1024);
}

/// A link that applies the answer filter it is given, as a kernel socket filter would, and
/// counts what it drops.
struct Filtering {
    inner: aoe_transport::memory::MemoryPort,
    filter: Option<aoe_transport::AnswerFilter>,
    dropped: Arc<std::sync::atomic::AtomicUsize>,
}

impl Transport for Filtering {
    fn recv_batch(
        &mut self,
        batch: &mut aoe_transport::FrameBatch,
        timeout: Option<Duration>,
    ) -> std::io::Result<usize> {
        let mut got = aoe_transport::FrameBatch::new(batch.capacity(), batch.frame_capacity());
        self.inner.recv_batch(&mut got, timeout)?;
        batch.clear();
        for frame in got.iter() {
            match self.filter {
                Some(f) if !f.passes(frame) => {
                    self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                _ => assert!(batch.push(frame)),
            }
        }
        Ok(batch.len())
    }

    fn send_batch(&mut self, batch: &aoe_transport::FrameBatch) -> std::io::Result<usize> {
        self.inner.send_batch(batch)
    }

    fn mac(&self) -> MacAddr {
        self.inner.mac()
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn filter_answers(&mut self, filter: &aoe_transport::AnswerFilter) -> std::io::Result<bool> {
        self.filter = Some(*filter);
        Ok(true)
    }
}

/// A device sets its session's answer filter on its links, and everything it asks for
/// passes it: reads, writes, a flush and the config, mask and reserve commands, on a lossy,
/// duplicating link, end up with nothing dropped by the filter.
#[test]
fn the_answer_filter_passes_everything_the_device_asks_for() {
    let hub = MemoryHub::new(1500);
    let target = shared(TestTarget::new(mac(TARGET), 1, 0, 256));
    let mut lab = Lab::default();
    lab.serve(&target, hub.port(mac(TARGET)));
    hub.set_impairments(Impairments { drop: 0.05, duplicate: 0.05, reorder: 0.1, seed: 5 });
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let link = Filtering { inner: hub.port(mac(INITIATOR)), filter: None, dropped: Arc::clone(&dropped) };
    let mut dev = Device::open(vec![Box::new(link)], 1, 0, &quick()).unwrap();
    let filter = dev.session().answer_filter();
    assert_eq!((filter.shelf, filter.slot), (1, 0));
    assert_eq!(filter.tag_salt, dev.session().config().tag_salt);
    assert_eq!(usize::from(filter.frame_slots), usize::from(dev.info().buffer_count));

    let data = random(64 * 1024, 7);
    dev.write_at(&data, 3000).unwrap();
    let mut back = vec![0u8; data.len()];
    dev.read_at(&mut back, 3000).unwrap();
    assert_eq!(back, data);
    dev.flush().unwrap();
    dev.config_set(b"filtered", false).unwrap();
    assert_eq!(dev.config_read().unwrap().string, b"filtered");
    dev.mask_read().unwrap();
    dev.reserve_read().unwrap();
    assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0, "the filter dropped an answer");
}
