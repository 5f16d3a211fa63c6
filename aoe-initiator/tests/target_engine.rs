//! The initiator against the real target engine (`aoe-target`), over the in-memory hub: a
//! server thread per target port, the initiator's `Device` and discovery in the test thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aoe_initiator::{device::Device, discover::TargetInfo};
use aoe_initiator::{discover, DeviceOptions, DiscoverOptions, Error};
use aoe_proto::MacAddr;
use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::{Server, SharedExport};
use aoe_transport::memory::{Impairments, MemoryHub, MemoryPort};
use aoe_transport::Transport;

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

const INITIATOR: u8 = 0x01;
const TARGET: u8 = 0x80;

/// Server threads, stopped and joined when dropped.
#[derive(Default)]
struct Targets {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Targets {
    fn serve(&mut self, exports: Vec<SharedExport<MemoryBackend>>, port: MemoryPort) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut server = Server::new(port, exports);
            server.run(&stop).expect("target server failed");
        }));
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("target server panicked");
        }
    }
}

fn export(shelf: u16, slot: u8, bytes: usize) -> SharedExport<MemoryBackend> {
    Arc::new(Mutex::new(Export::new(ExportConfig::new(shelf, slot), MemoryBackend::new(bytes))))
}

fn contents(export: &SharedExport<MemoryBackend>) -> Vec<u8> {
    export.lock().unwrap().backend().snapshot()
}

fn options() -> DeviceOptions {
    let mut opts = DeviceOptions::default();
    opts.discover.settle = Some(Duration::from_millis(50));
    opts.rto_initial = Duration::from_millis(20);
    opts.rto_min = Duration::from_millis(2);
    opts.rto_max = Duration::from_millis(100);
    opts
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    aoe_testkit::data::pattern(seed, len)
}

#[test]
fn device_reads_and_writes_the_export() {
    for mtu in [1500, 9000] {
        let hub = MemoryHub::new(mtu);
        let disk = export(1, 0, 1 << 20);
        let mut targets = Targets::default();
        targets.serve(vec![disk.clone()], hub.port(mac(TARGET)));
        let mut dev = Device::open(vec![Box::new(hub.port(mac(INITIATOR)))], 1, 0, &options()).unwrap();
        assert_eq!(dev.size_bytes(), 1 << 20);
        assert_eq!(dev.info().model, "Rust AoE target");
        assert_eq!(dev.session().config().max_sectors, aoe_proto::max_sectors(mtu));

        let mut model = vec![0u8; 1 << 20];
        for (k, &(offset, len)) in
            [(0, 4096), (777, 5000), (65_536, 300_000), ((1 << 20) - 10, 10), (513, 1)].iter().enumerate()
        {
            let data = pattern(len, k as u64 + 1);
            dev.write_at(&data, offset as u64).unwrap();
            model[offset..offset + len].copy_from_slice(&data);
            let mut back = vec![0u8; len];
            dev.read_at(&mut back, offset as u64).unwrap();
            assert!(back == data, "read back {offset}+{len} at MTU {mtu}");
        }
        dev.flush().unwrap();
        assert!(contents(&disk) == model, "export differs from the model at MTU {mtu}");

        let mut beyond = [0u8; 2];
        assert!(matches!(dev.read_at(&mut beyond, (1 << 20) - 1), Err(Error::OutOfRange { .. })));
    }
}

#[test]
fn discover_finds_exports_through_every_interface() {
    let (hub_a, hub_b) = (MemoryHub::new(9000), MemoryHub::new(1500));
    let (e10, e11, e20) = (export(1, 0, 1 << 20), export(1, 1, 64 * 512), export(2, 0, 4096));
    let mut targets = Targets::default();
    // Shelf 1 is on both segments; shelf 2 only on b.
    targets.serve(vec![e10.clone(), e11.clone()], hub_a.port(mac(TARGET)));
    targets.serve(vec![e10, e11], hub_b.port(mac(TARGET + 1)));
    targets.serve(vec![e20], hub_b.port(mac(TARGET + 2)));

    let mut links: Vec<Box<dyn Transport>> =
        vec![Box::new(hub_a.port(mac(INITIATOR))), Box::new(hub_b.port(mac(INITIATOR + 1)))];
    let opts = DiscoverOptions { timeout: Duration::from_millis(300), ..DiscoverOptions::default() };
    let found = discover(&mut links, &opts).unwrap();
    let summary: Vec<(String, u64, usize)> =
        found.iter().map(|t| (t.name(), t.sectors, t.paths.len())).collect();
    assert_eq!(
        summary,
        vec![("e1.0".to_owned(), 2048, 2), ("e1.1".to_owned(), 64, 2), ("e2.0".to_owned(), 8, 1)]
    );
    let e10: &TargetInfo = &found[0];
    assert_eq!(e10.serial, "e1.0");
    assert_eq!(e10.buffer_count, aoe_target::export::DEFAULT_BUFFER_COUNT);
    assert_eq!(e10.sector_count, 2, "the smallest any path reported");

    // A device built from the discovery result, without asking again.
    let info = found[1].clone();
    let mut dev = Device::with_target(links, info, &options()).unwrap();
    let data = pattern(64 * 512, 9);
    dev.write_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    dev.read_at(&mut back, 0).unwrap();
    assert!(back == data);
}

#[test]
fn survives_loss_duplication_and_reordering() {
    let hub = MemoryHub::new(1500);
    let disk = export(3, 7, 512 * 1024);
    let mut targets = Targets::default();
    targets.serve(vec![disk.clone()], hub.port(mac(TARGET)));
    let mut dev = Device::open(vec![Box::new(hub.port(mac(INITIATOR)))], 3, 7, &options()).unwrap();
    hub.set_impairments(Impairments { drop: 0.1, duplicate: 0.1, reorder: 0.1, seed: 0x5eed });

    // Writes to disjoint 4 KiB blocks (no two share a sector, so a stale retransmission
    // delayed by reordering can never overwrite a newer write: AoE cannot prevent that).
    let mut model = vec![0u8; 512 * 1024];
    for k in 0..128usize {
        let offset = k * 4096 + (k % 7) * 50;
        let data = pattern(3000 + k, k as u64);
        dev.write_at(&data, offset as u64).unwrap();
        model[offset..offset + data.len()].copy_from_slice(&data);
    }
    let mut back = vec![0u8; model.len()];
    dev.read_at(&mut back, 0).unwrap();
    hub.set_impairments(Impairments::NONE);
    assert!(back == model);
    assert!(contents(&disk) == model);
    let stats = hub.stats();
    assert!(stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0, "{stats:?}");
    let s = dev.stats();
    assert!(s.retransmitted > 0 && s.duplicates + s.stale > 0, "{s:?}");
}

#[test]
fn config_mask_and_reserve_against_the_engine() {
    let hub = MemoryHub::new(1500);
    let disk = export(1, 2, 8192);
    let mut targets = Targets::default();
    targets.serve(vec![disk.clone()], hub.port(mac(TARGET)));
    let mut dev = Device::open(vec![Box::new(hub.port(mac(INITIATOR)))], 1, 2, &options()).unwrap();

    assert_eq!(dev.config_set(b"owned", false).unwrap().string, b"owned");
    assert!(matches!(dev.config_set(b"mine", false), Err(Error::Aoe { code: 4 })));
    assert_eq!(dev.config_read().unwrap().string, b"owned");
    assert_eq!(disk.lock().unwrap().config_string(), b"owned");

    let me = mac(INITIATOR);
    assert_eq!(dev.mask_edit(&[me], &[]).unwrap(), vec![me]);
    assert_eq!(dev.mask_read().unwrap(), vec![me]);
    assert_eq!(dev.mask_edit(&[], &[me]).unwrap(), vec![]);

    assert_eq!(dev.reserve_set(&[mac(0x42)], false).unwrap(), vec![mac(0x42)]);
    assert!(matches!(dev.write_at(&[7; 512], 0), Err(Error::Aoe { code: 6 })));
    assert_eq!(dev.identify().unwrap().sectors, 16, "IDENTIFY is allowed while reserved");
    assert!(matches!(dev.reserve_set(&[me], false), Err(Error::Aoe { code: 6 })));
    assert_eq!(dev.reserve_set(&[], true).unwrap(), vec![]);
    dev.write_at(&[7; 512], 0).unwrap();
    assert_eq!(&contents(&disk)[..512], &[7; 512][..]);
}

#[test]
fn multipath_keeps_going_when_a_path_breaks() {
    let (hub_a, hub_b) = (MemoryHub::new(1500), MemoryHub::new(1500));
    let disk = export(1, 0, 1 << 20);
    let mut targets = Targets::default();
    let target_a = hub_a.port(mac(TARGET));
    let cable_a = target_a.clone();
    targets.serve(vec![disk.clone()], target_a);
    targets.serve(vec![disk.clone()], hub_b.port(mac(TARGET + 1)));
    let links: Vec<Box<dyn Transport>> =
        vec![Box::new(hub_a.port(mac(INITIATOR))), Box::new(hub_b.port(mac(INITIATOR + 1)))];
    let mut dev = Device::open(links, 1, 0, &options()).unwrap();
    assert_eq!(dev.info().paths.len(), 2);

    let data = pattern(256 * 1024, 3);
    dev.write_at(&data, 0).unwrap();
    cable_a.set_down(true);
    let mut back = vec![0u8; data.len()];
    dev.read_at(&mut back, 0).unwrap();
    assert!(back == data);
    dev.write_at(&data[..4096], 1 << 19).unwrap();
    assert!(!dev.session().path_is_up(0, Instant::now()));
    assert_eq!(&contents(&disk)[1 << 19..(1 << 19) + 4096], &data[..4096]);
}

#[test]
fn no_such_disk_and_dead_target() {
    let hub = MemoryHub::new(1500);
    let disk = export(1, 0, 8192);
    let mut targets = Targets::default();
    targets.serve(vec![disk], hub.port(mac(TARGET)));
    let mut opts = options();
    opts.discover.timeout = Duration::from_millis(100);
    let err = Device::open(vec![Box::new(hub.port(mac(INITIATOR)))], 5, 5, &opts).unwrap_err();
    assert!(matches!(err, Error::NoSuchDisk { shelf: 5, slot: 5, .. }), "{err}");

    opts.dead_timeout = Duration::from_millis(300);
    let mut dev = Device::open(vec![Box::new(hub.port(mac(INITIATOR + 1)))], 1, 0, &opts).unwrap();
    drop(targets);
    let mut buf = [0u8; 512];
    let err = dev.read_at(&mut buf, 0).unwrap_err();
    assert!(matches!(err, Error::TargetDead { .. }), "{err}");
    assert!(err.to_string().starts_with("target went silent"));
}
