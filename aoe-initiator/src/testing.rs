//! Test helpers shared by the unit tests of this crate: the real target engine answering
//! from memory, buffers for sessions, and a deterministic PRNG.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use aoe_proto::{
    BodyRepr, ConfigCommand, ConfigRepr, FrameRepr, HeaderRepr, MacAddr, Received, ReserveCommand,
    ReserveRepr, SECTOR_SIZE,
};
use aoe_target::backend::{Backend, MemoryBackend};
use aoe_target::export::{Export, ExportConfig, Port};

use aoe_transport::memory::MemoryPort;
use aoe_transport::{FrameBatch, Transport};

use crate::session::{IoBuffers, OpId};

/// A MAC in the locally administered range, numbered.
pub fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

/// The real target engine (`aoe_target::export::Export` over a memory backend), answering
/// one frame at a time: what the tests of this crate talk to, so that they test against the
/// target people run and not a second, hand-written one.
pub struct TestTarget {
    /// The MAC answers come from.
    pub mac: MacAddr,
    /// Most sectors per frame the target takes and announces (its port's MTU limit).
    pub max_sectors: u8,
    /// Write frames it took.
    pub writes: u64,
    export: Export<Arc<MemoryBackend>>,
    backend: Arc<MemoryBackend>,
}

impl std::fmt::Debug for TestTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestTarget").field("mac", &self.mac).field("config", self.export.config()).finish()
    }
}

impl TestTarget {
    /// e`shelf`.`slot` of `sectors` zeroed sectors: buffer count 16, 2 sectors per frame.
    pub fn new(mac: MacAddr, shelf: u16, slot: u8, sectors: usize) -> Self {
        let backend = Arc::new(MemoryBackend::new(sectors * SECTOR_SIZE));
        let export = Export::new(ExportConfig::new(shelf, slot), Arc::clone(&backend));
        TestTarget { mac, max_sectors: 2, writes: 0, export, backend }
    }

    /// The buffer count it announces (set before it answers anything: the export is made
    /// anew).
    pub fn set_buffer_count(&mut self, count: u16) {
        let mut config = self.export.config().clone();
        config.buffer_count = count;
        self.export = Export::new(config, Arc::clone(&self.backend));
    }

    /// A copy of the disk.
    pub fn disk(&self) -> Vec<u8> {
        self.backend.snapshot()
    }

    /// Writes `data` to the disk at byte `offset`, behind the initiator's back.
    pub fn write_disk(&self, offset: usize, data: &[u8]) {
        self.backend.write_at(data, offset as u64).expect("inside the disk");
    }

    /// Sets the config string, as an initiator would (force set).
    pub fn set_config(&mut self, string: &[u8]) {
        let body = BodyRepr::Config(ConfigRepr::request(ConfigCommand::ForceSet, string));
        self.request(body);
    }

    /// Reserves the target for `macs` (none: releases it), as an initiator would (force set).
    pub fn reserve(&mut self, macs: &[MacAddr]) {
        self.request(BodyRepr::Reserve(ReserveRepr { command: ReserveCommand::ForceSet, macs }));
    }

    /// Has the export handle a request from an initiator its mask lets in, and drops the
    /// answer.
    fn request(&mut self, body: BodyRepr<'_>) {
        let from = self.export.mask().first().copied().unwrap_or(mac(0xEE));
        let config = self.export.config();
        let header = HeaderRepr::request(config.shelf, config.slot, 0);
        let mut frame = vec![0u8; 9014];
        let len = FrameRepr { dst: self.mac, src: from, header, body }.emit_padded(&mut frame).unwrap();
        let mut out = vec![0u8; 9014];
        assert!(self.answer(&frame[..len], &mut out).is_some(), "the export answers its own setup");
    }

    /// Answers `request` into `out`; `None` means silence.
    pub fn answer(&mut self, request: &[u8], out: &mut [u8]) -> Option<usize> {
        let received = Received::parse(request).ok()?;
        let port = Port { mac: self.mac, max_sectors: self.max_sectors };
        let outcome = self.export.handle(&port, &received, out).ok()?;
        let len = outcome.complete(&*self.backend, out).ok()??;
        if received.writes_sectors() {
            self.writes += 1;
        }
        Some(len)
    }
}

/// A target shared by the threads serving its ports (one per MAC).
pub type Shared = Arc<Mutex<TestTarget>>;

pub fn shared(target: TestTarget) -> Shared {
    Arc::new(Mutex::new(target))
}

/// Threads serving test targets on memory ports; stopped and joined when dropped.
#[derive(Debug, Default)]
pub struct Lab {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Lab {
    /// Answers every frame arriving on `port` with `target`, from the port's MAC.
    pub fn serve(&mut self, target: &Shared, mut port: MemoryPort) {
        let target = target.clone();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let cap = 14 + port.mtu();
            let mut inbox = FrameBatch::new(64, cap);
            let mut out = FrameBatch::new(64, cap);
            let mac = port.mac();
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = port.recv_batch(&mut inbox, Some(Duration::from_millis(5))) else { break };
                if n == 0 {
                    continue;
                }
                out.clear();
                {
                    let mut t = target.lock().unwrap_or_else(PoisonError::into_inner);
                    t.mac = mac;
                    for frame in inbox.iter() {
                        out.push_with(|slot| t.answer(frame, slot).unwrap_or(0));
                    }
                }
                if !out.is_empty() && port.send_batch(&out).is_err() {
                    break;
                }
            }
        }));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// [`IoBuffers`] backed by one `Vec<u8>` per op.
#[derive(Debug, Default)]
pub struct MapBuffers {
    pub bufs: HashMap<OpId, Vec<u8>>,
    /// Store calls per op and byte offset, to catch data delivered twice.
    pub stores: HashMap<(OpId, usize), u32>,
}

impl IoBuffers for MapBuffers {
    fn load(&mut self, op: OpId, offset: usize, out: &mut [u8]) {
        let buf = self.bufs.get(&op).expect("load for an op without a buffer");
        out.copy_from_slice(&buf[offset..offset + out.len()]);
    }

    fn store(&mut self, op: OpId, offset: usize, data: &[u8]) {
        *self.stores.entry((op, offset)).or_default() += 1;
        let buf = self.bufs.get_mut(&op).expect("store for an op without a buffer");
        buf[offset..offset + data.len()].copy_from_slice(data);
    }
}

/// splitmix64: a tiny deterministic PRNG for workloads and link impairments (`Rng(seed)`).
pub use aoe_transport::rng::SplitMix64 as Rng;
