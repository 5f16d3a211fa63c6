//! Test helpers shared by the unit tests of this crate: a tiny AoE target answering from a
//! `Vec<u8>`, buffers for sessions, and a deterministic PRNG.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use aoe_proto::identify::IDENTIFY_LEN;
use aoe_proto::{
    AtaCommand, AtaError, AtaRepr, AtaStatus, Body, BodyRepr, ConfigCommand, ConfigRepr, Directive,
    DirectiveCommand, Flags, Frame, FrameRepr, Identify, MacAddr, MaskCommand, MaskError, MaskRepr,
    ReserveCommand, ReserveRepr, SECTOR_SIZE,
};

use aoe_transport::memory::MemoryPort;
use aoe_transport::{FrameBatch, Transport};

use crate::session::{IoBuffers, OpId};

/// A MAC in the locally administered range, numbered.
pub fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

/// A minimal AoE target: reads and writes on `disk`, IDENTIFY, FLUSH, config, mask and
/// reserve. Not a conformance reference, just enough to drive an initiator.
#[derive(Debug, Clone)]
pub struct FakeTarget {
    pub mac: MacAddr,
    pub shelf: u16,
    pub slot: u8,
    pub disk: Vec<u8>,
    pub buffer_count: u16,
    pub sector_count: u8,
    pub config: Vec<u8>,
    pub mask: Vec<MacAddr>,
    pub reserve: Vec<MacAddr>,
    pub lba48: bool,
    /// Write frames applied.
    pub writes: u64,
    /// Requests answered.
    pub answered: u64,
}

impl FakeTarget {
    pub fn new(mac: MacAddr, shelf: u16, slot: u8, sectors: usize) -> Self {
        FakeTarget {
            mac,
            shelf,
            slot,
            disk: vec![0; sectors * SECTOR_SIZE],
            buffer_count: 16,
            sector_count: 2,
            config: Vec::new(),
            mask: Vec::new(),
            reserve: Vec::new(),
            lba48: true,
            writes: 0,
            answered: 0,
        }
    }

    pub fn sectors(&self) -> u64 {
        (self.disk.len() / SECTOR_SIZE) as u64
    }

    /// Answers `request` into `out`; `None` means silence.
    pub fn answer(&mut self, request: &[u8], out: &mut [u8]) -> Option<usize> {
        let frame = Frame::parse(request).ok()?;
        if frame.header.is_response() || !frame.header.addresses(self.shelf, self.slot) {
            return None;
        }
        if !self.mask.is_empty() && !self.mask.contains(&frame.ethernet.src) {
            return None;
        }
        self.answered += 1;
        let (shelf, slot, mac) = (self.shelf, self.slot, self.mac);
        let respond =
            |body, out: &mut [u8]| FrameRepr::response(&frame, mac, shelf, slot, body).emit_padded(out);
        match frame.body {
            Body::Ata { header, data } => {
                let req = AtaRepr::parse(header);
                let ok = |sector_count| AtaRepr {
                    err_feature: 0,
                    cmd_status: AtaStatus::DRDY.bits(),
                    sector_count,
                    ..req
                };
                let fail = |error: AtaError| AtaRepr {
                    err_feature: error.bits(),
                    cmd_status: (AtaStatus::DRDY | AtaStatus::ERR).bits(),
                    ..req
                };
                let lba = header.lba();
                let n = u64::from(header.sector_count);
                let in_range = lba + n <= self.sectors();
                let start = lba as usize * SECTOR_SIZE;
                let len = n as usize * SECTOR_SIZE;
                let ata = |header, data| BodyRepr::Ata { header, data };
                match header.command() {
                    AtaCommand::ReadSectors | AtaCommand::ReadSectorsExt => {
                        if n == 0 || n > u64::from(self.sector_count) {
                            respond(ata(fail(AtaError::ABRT), &[]), out).ok()
                        } else if !in_range {
                            respond(ata(fail(AtaError::IDNF), &[]), out).ok()
                        } else {
                            respond(ata(ok(req.sector_count), &self.disk[start..start + len]), out).ok()
                        }
                    }
                    AtaCommand::WriteSectors | AtaCommand::WriteSectorsExt => {
                        if !self.reserve.is_empty() && !self.reserve.contains(&frame.ethernet.src) {
                            let mut r = FrameRepr::response(&frame, mac, shelf, slot, ata(req, &[]));
                            r.header.flags |= Flags::ERROR;
                            r.header.error = 6;
                            r.emit_padded(out).ok()
                        } else if n == 0 || n > u64::from(self.sector_count) {
                            respond(ata(fail(AtaError::ABRT), &[]), out).ok()
                        } else if !in_range {
                            respond(ata(fail(AtaError::IDNF), &[]), out).ok()
                        } else {
                            self.disk[start..start + len].copy_from_slice(data);
                            self.writes += 1;
                            respond(ata(ok(req.sector_count), &[]), out).ok()
                        }
                    }
                    AtaCommand::IdentifyDevice => {
                        let mut id = Identify::new("fake target", "FAKE0001", "1.0", self.sectors());
                        id.lba48 = self.lba48;
                        let mut buf = [0u8; IDENTIFY_LEN];
                        id.emit(&mut buf);
                        respond(ata(ok(1), &buf), out).ok()
                    }
                    AtaCommand::FlushCache | AtaCommand::FlushCacheExt => respond(ata(ok(0), &[]), out).ok(),
                    _ => respond(ata(fail(AtaError::ABRT), &[]), out).ok(),
                }
            }
            Body::Config { header, string } => {
                let mut error = 0;
                match header.command() {
                    ConfigCommand::Read => {}
                    ConfigCommand::TestExact if string != self.config.as_slice() => return None,
                    ConfigCommand::TestPrefix if !self.config.starts_with(string) => return None,
                    ConfigCommand::Set if !self.config.is_empty() && self.config != string => error = 4,
                    ConfigCommand::Set | ConfigCommand::ForceSet => self.config = string.to_vec(),
                    _ => {}
                }
                let body = BodyRepr::Config(ConfigRepr {
                    buffer_count: self.buffer_count,
                    firmware: 0x4019,
                    sector_count: self.sector_count,
                    aoe_version: 1,
                    command: header.command(),
                    string: &self.config,
                });
                let mut r = FrameRepr::response(&frame, mac, shelf, slot, body);
                if error != 0 {
                    r.header.flags |= Flags::ERROR;
                    r.header.error = error;
                }
                r.emit_padded(out).ok()
            }
            Body::Mask { header, directives } => {
                if header.command() == MaskCommand::Edit {
                    for d in directives {
                        match d.command() {
                            DirectiveCommand::Add if !self.mask.contains(&d.mac) => self.mask.push(d.mac),
                            DirectiveCommand::Delete => self.mask.retain(|m| *m != d.mac),
                            _ => {}
                        }
                    }
                }
                let list: Vec<Directive> =
                    self.mask.iter().map(|&m| Directive::new(DirectiveCommand::Add, m)).collect();
                let body = BodyRepr::Mask(MaskRepr {
                    command: header.command(),
                    error: MaskError::None,
                    directives: &list,
                });
                respond(body, out).ok()
            }
            Body::Reserve { header, macs } => {
                let src = frame.ethernet.src;
                let refused = header.command() == ReserveCommand::Set
                    && !self.reserve.is_empty()
                    && !self.reserve.contains(&src);
                if refused {
                    let body =
                        BodyRepr::Reserve(ReserveRepr { command: header.command(), macs: &self.reserve });
                    let mut r = FrameRepr::response(&frame, mac, shelf, slot, body);
                    r.header.flags |= Flags::ERROR;
                    r.header.error = 6;
                    return r.emit_padded(out).ok();
                }
                if header.command() != ReserveCommand::Read {
                    self.reserve = macs.to_vec();
                }
                let body = BodyRepr::Reserve(ReserveRepr { command: header.command(), macs: &self.reserve });
                respond(body, out).ok()
            }
            Body::Other { .. } => {
                let body = BodyRepr::Raw { command: frame.header.command, payload: &[] };
                let mut r = FrameRepr::response(&frame, mac, shelf, slot, body);
                r.header.flags |= Flags::ERROR;
                r.header.error = 1;
                r.emit_padded(out).ok()
            }
        }
    }
}

/// A fake target shared by the threads serving its ports (one per MAC).
pub type Shared = Arc<Mutex<FakeTarget>>;

pub fn shared(target: FakeTarget) -> Shared {
    Arc::new(Mutex::new(target))
}

/// Threads serving fake targets on memory ports; stopped and joined when dropped.
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
