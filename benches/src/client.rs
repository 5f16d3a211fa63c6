//! A minimal raw AoE initiator for measurements.
//!
//! [`Client`] finds one target with a broadcast query config, learns its capacity with
//! IDENTIFY, and then drives a [`Workload`]: it keeps `queue_depth` ATA requests outstanding,
//! refilling each slot as its answer arrives, and counts bytes. It is deliberately simple
//! (fixed retransmit timeout, no window control) so that the same client can be pointed at
//! any target and the difference in the numbers is the target's.
//!
//! Tags are `generation << 16 | slot` (15-bit generation): an answer is accepted only for the request a slot
//! has outstanding now, so late duplicates and answers to retransmitted requests are counted
//! once.
//!
//! ```
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use aoe_benches::client::{Client, Op, Workload};
//! use aoe_target::backend::MemoryBackend;
//! use aoe_target::export::{Export, ExportConfig};
//! use aoe_target::server::Server;
//! use aoe_transport::{memory, MacAddr};
//!
//! let (target_port, client_port) = memory::pair(9000, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
//! let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), MemoryBackend::new(1 << 20))));
//! let stop = Arc::new(AtomicBool::new(false));
//! let server = std::thread::spawn({
//!     let stop = stop.clone();
//!     move || Server::new(target_port, vec![export]).run(&stop)
//! });
//!
//! let mut client = Client::connect(client_port, 1, 0, Duration::from_secs(5))?;
//! assert_eq!(client.target().max_sectors, 17);
//! let work = Workload::sequential(Op::Read, 17, 4, Duration::from_secs(5)).max_bytes(1 << 20);
//! let stats = client.run(&work)?;
//! assert!(stats.bytes >= 1 << 20);
//!
//! stop.store(true, Ordering::Relaxed);
//! server.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::time::{Duration, Instant};

use aoe_proto::ata::{AtaCommand, AtaStatus};
use aoe_proto::identify::Identify;
use aoe_proto::sizing::ATA_DATA_OFFSET;
use aoe_proto::{
    AtaRepr, Body, BodyRepr, ConfigCommand, ConfigRepr, Flags, Frame, FrameRepr, HeaderRepr, MacAddr,
    SECTOR_SIZE, SHELF_BROADCAST, SLOT_BROADCAST,
};
use aoe_transport::rng::SplitMix64;
use aoe_transport::{FrameBatch, Transport};

/// How often discovery and IDENTIFY repeat an unanswered request.
const CONTROL_RETRY: Duration = Duration::from_millis(100);
/// Frames received per call.
const RECV_BATCH: usize = 64;
/// How long one receive of answers waits. Always the same, so that the transport can make
/// it the socket's receive timeout (one system call per receive, no poll).
const RECEIVE_WAIT: Duration = Duration::from_millis(20);
/// Most batches [`Client::discard_pending`] receives: 256 × 64 frames, more than a socket
/// buffer of a few MiB holds.
const DISCARD_BATCHES: usize = 256;
/// Tags of control requests (query config, IDENTIFY) have this bit set; slots never reach it.
const CONTROL_TAG: u32 = 0x8000_0000;
/// Slot generations are 15 bits, so that a slot's tag never has [`CONTROL_TAG`] set.
const GENERATION_MASK: u16 = 0x7FFF;

/// What discovery and IDENTIFY told about the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetInfo {
    /// The MAC the target answered from.
    pub mac: MacAddr,
    /// Its shelf.
    pub shelf: u16,
    /// Its slot.
    pub slot: u8,
    /// Requests it says it can queue.
    pub buffer_count: u16,
    /// Most sectors per ATA request it accepts (bounded by our MTU as well).
    pub max_sectors: u8,
    /// Its firmware version.
    pub firmware: u16,
    /// Capacity in sectors, from IDENTIFY.
    pub sectors: u64,
}

/// Reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Op {
    /// READ SECTORS EXT.
    Read,
    /// WRITE SECTORS EXT.
    Write,
}

/// Which LBAs the requests address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Back to back from the start of the span, wrapping at its end.
    Sequential,
    /// Uniformly random, aligned to the request size, from a seeded generator.
    Random {
        /// Generator seed: the same seed gives the same LBAs.
        seed: u64,
    },
}

/// One measurement: what to send, how much in flight, and when to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Read or write.
    pub op: Op,
    /// LBA order.
    pub pattern: Pattern,
    /// Sectors per request (1..=255, at most the target's limit).
    pub sectors: u8,
    /// Requests kept outstanding (capped at the target's buffer count by [`Client::run`]).
    pub queue_depth: usize,
    /// Stop issuing new requests after this long.
    pub duration: Duration,
    /// Stop issuing new requests once this many bytes were issued.
    pub max_bytes: Option<u64>,
    /// First sector of the region addressed.
    pub start_lba: u64,
    /// Sectors in the region; `None` runs to the end of the disk.
    pub span: Option<u64>,
    /// Resend a request unanswered for this long (same tag).
    pub retransmit_after: Duration,
    /// After issuing stops, wait this long at most for the answers still outstanding.
    pub drain_timeout: Duration,
    /// Fail with `TimedOut` when no answer at all arrives for this long.
    pub stall_timeout: Duration,
}

impl Workload {
    /// Sequential reads or writes of `sectors` per request at `queue_depth`, for `duration`.
    pub fn sequential(op: Op, sectors: u8, queue_depth: usize, duration: Duration) -> Self {
        Workload {
            op,
            pattern: Pattern::Sequential,
            sectors,
            queue_depth,
            duration,
            max_bytes: None,
            start_lba: 0,
            span: None,
            retransmit_after: Duration::from_millis(50),
            drain_timeout: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(5),
        }
    }

    /// Random reads of `sectors` per request, aligned to `sectors`, at `queue_depth`.
    pub fn random_read(sectors: u8, queue_depth: usize, duration: Duration, seed: u64) -> Self {
        Workload {
            pattern: Pattern::Random { seed },
            ..Self::sequential(Op::Read, sectors, queue_depth, duration)
        }
    }

    /// Also stop after `bytes` were issued.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Confine the requests to sectors `start .. start + len`.
    pub fn region(mut self, start: u64, len: u64) -> Self {
        self.start_lba = start;
        self.span = Some(len);
        self
    }

    /// Use another retransmit timeout.
    pub fn retransmit_after(mut self, after: Duration) -> Self {
        self.retransmit_after = after;
        self
    }
}

/// What a run achieved.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct RunStats {
    /// Requests answered successfully.
    pub requests: u64,
    /// Sector bytes moved by them.
    pub bytes: u64,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Sum over answered requests of the time from first send to answer.
    pub latency_total: Duration,
    /// Requests sent again after `retransmit_after`.
    pub retransmits: u64,
    /// Answers with an AoE or ATA error, or with the wrong amount of data.
    pub errors: u64,
    /// Requests still unanswered when the drain timeout ran out.
    pub lost: u64,
    /// Queue depth actually used.
    pub queue_depth: usize,
}

impl RunStats {
    /// Decimal megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Answered requests per second.
    pub fn iops(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Mean time from sending a request to its answer, in microseconds.
    pub fn mean_latency_us(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.latency_total.as_secs_f64() * 1e6 / self.requests as f64
    }
}

/// One slot of the window: the request it has outstanding.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    generation: u16,
    busy: bool,
    lba: u64,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
}

impl Slot {
    fn tag(&self, index: usize) -> u32 {
        (u32::from(self.generation) << 16) | index as u32
    }
}

/// Produces the LBA of each next request.
#[derive(Debug)]
struct Addresses {
    pattern: Pattern,
    start: u64,
    /// Requests that fit the span.
    units: u64,
    sectors: u64,
    next: u64,
    rng: SplitMix64,
}

impl Addresses {
    fn new(work: &Workload, disk_sectors: u64) -> io::Result<Self> {
        let sectors = u64::from(work.sectors);
        let span = work.span.unwrap_or(disk_sectors.saturating_sub(work.start_lba));
        let end = work.start_lba.checked_add(span).filter(|&e| e <= disk_sectors);
        let units = span / sectors.max(1);
        if end.is_none() || units == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "region {} + {span} sectors does not hold one {sectors}-sector request on a \
                     {disk_sectors}-sector disk",
                    work.start_lba
                ),
            ));
        }
        let seed = match work.pattern {
            Pattern::Random { seed } => seed,
            Pattern::Sequential => 0,
        };
        Ok(Addresses {
            pattern: work.pattern,
            start: work.start_lba,
            units,
            sectors,
            next: 0,
            rng: SplitMix64(seed),
        })
    }

    fn next_lba(&mut self) -> u64 {
        let unit = match self.pattern {
            Pattern::Sequential => {
                let u = self.next;
                self.next = (self.next + 1) % self.units;
                u
            }
            Pattern::Random { .. } => self.rng.next_u64() % self.units,
        };
        self.start + unit * self.sectors
    }
}

/// The content written to sector `lba`: its LBA in the first 8 bytes (little-endian), then a
/// fixed filler. Tests check writes landed where they were addressed by reading the stamp back.
pub fn sector_stamp(lba: u64) -> [u8; 8] {
    lba.to_le_bytes()
}

/// A raw AoE initiator bound to one target.
pub struct Client<T> {
    transport: T,
    target: TargetInfo,
    rx: FrameBatch,
    tx: FrameBatch,
    control_tag: u32,
    /// Sector data for writes: filler that each request stamps with its LBAs.
    write_data: Vec<u8>,
}

impl<T: Transport> Client<T> {
    /// Finds target `shelf.slot` (0xFFFF / 0xFF for any) with a broadcast query config,
    /// then reads its capacity with IDENTIFY. Gives up with `TimedOut` after `timeout`.
    pub fn connect(transport: T, shelf: u16, slot: u8, timeout: Duration) -> io::Result<Self> {
        let frame_capacity = 14 + transport.mtu();
        let mut client = Client {
            rx: FrameBatch::new(RECV_BATCH, frame_capacity),
            tx: FrameBatch::new(1, frame_capacity),
            transport,
            target: TargetInfo {
                mac: MacAddr::BROADCAST,
                shelf,
                slot,
                buffer_count: 0,
                max_sectors: 0,
                firmware: 0,
                sectors: 0,
            },
            control_tag: 0,
            write_data: (0..255 * SECTOR_SIZE).map(|i| (i % 251) as u8).collect(),
        };
        let deadline = Instant::now() + timeout;
        client.discover(shelf, slot, deadline)?;
        client.identify(deadline)?;
        Ok(client)
    }

    /// What the target told us.
    pub fn target(&self) -> &TargetInfo {
        &self.target
    }

    /// Throws away every frame already waiting on the transport; returns how many.
    ///
    /// Each run starts its slots at the same generation, so a late answer to an earlier run,
    /// or an answer to another initiator on the same interface with the same tag layout
    /// (aoe-initiator's), would otherwise be taken for the answer to a new request.
    /// Gives up after a receive buffer's worth of batches, should frames keep coming.
    pub fn discard_pending(&mut self) -> io::Result<usize> {
        let mut discarded = 0;
        for _ in 0..DISCARD_BATCHES {
            match self.transport.recv_batch(&mut self.rx, Some(Duration::ZERO))? {
                0 => break,
                n => discarded += n,
            }
        }
        Ok(discarded)
    }

    /// The transport, for its counters or to reuse it.
    pub fn into_transport(self) -> T {
        self.transport
    }

    fn next_control_tag(&mut self) -> u32 {
        self.control_tag = self.control_tag.wrapping_add(1);
        CONTROL_TAG | (self.control_tag & !CONTROL_TAG)
    }

    /// Sends the single frame `repr` every [`CONTROL_RETRY`] until `accept` takes an answer
    /// with its tag, or `deadline` passes.
    fn control<R>(
        &mut self,
        repr: impl Fn(u32) -> FrameRepr<'static>,
        deadline: Instant,
        what: &str,
        mut accept: impl FnMut(&Frame<'_>, &[u8]) -> Option<R>,
    ) -> io::Result<R> {
        loop {
            let tag = self.next_control_tag();
            let frame = repr(tag);
            self.tx.clear();
            self.tx.push_with(|buf| frame.emit_padded(buf).unwrap_or(0));
            self.transport.send_batch(&self.tx)?;
            let retry = Instant::now() + CONTROL_RETRY;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer to {what} on {}", self.transport.name()),
                    ));
                }
                if now >= retry {
                    break;
                }
                let wait = retry.min(deadline) - now;
                if self.transport.recv_batch(&mut self.rx, Some(wait))? == 0 {
                    continue;
                }
                for raw in self.rx.iter() {
                    let Ok(f) = Frame::parse(raw) else { continue };
                    if f.header.is_response() && f.header.tag() == tag {
                        if let Some(r) = accept(&f, raw) {
                            return Ok(r);
                        }
                    }
                }
            }
        }
    }

    fn discover(&mut self, shelf: u16, slot: u8, deadline: Instant) -> io::Result<()> {
        let src = self.transport.mac();
        let local_max = aoe_proto::max_sectors(self.transport.mtu());
        let want = |s: u16, want: u16, broadcast: u16| want == broadcast || s == want;
        let info = self.control(
            |tag| FrameRepr {
                dst: MacAddr::BROADCAST,
                src,
                header: HeaderRepr::request(shelf, slot, tag),
                body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
            },
            deadline,
            "a broadcast query config",
            |f, _| {
                let Body::Config { header, .. } = f.body else { return None };
                let (s, t) = (f.header.shelf(), f.header.slot());
                if f.header.flags().contains(Flags::ERROR)
                    || !want(s, shelf, SHELF_BROADCAST)
                    || !want(u16::from(t), u16::from(slot), u16::from(SLOT_BROADCAST))
                {
                    return None;
                }
                Some(TargetInfo {
                    mac: f.ethernet.src,
                    shelf: s,
                    slot: t,
                    buffer_count: header.buffer_count.get(),
                    max_sectors: header.sector_count.min(local_max),
                    firmware: header.firmware.get(),
                    sectors: 0,
                })
            },
        )?;
        self.target = info;
        Ok(())
    }

    fn identify(&mut self, deadline: Instant) -> io::Result<()> {
        let (src, t) = (self.transport.mac(), self.target);
        let sectors = self.control(
            |tag| FrameRepr {
                dst: t.mac,
                src,
                header: HeaderRepr::request(t.shelf, t.slot, tag),
                body: BodyRepr::Ata { header: AtaRepr::command(AtaCommand::IdentifyDevice, 1), data: &[] },
            },
            deadline,
            "IDENTIFY DEVICE",
            |f, raw| {
                if !matches!(f.body, Body::Ata { .. }) || f.header.flags().contains(Flags::ERROR) {
                    return None;
                }
                // Not the parsed data: vblade answers IDENTIFY with a sector count of 0, which
                // leaves the parsed body without data, but the 512 bytes are there.
                let data = raw.get(ATA_DATA_OFFSET..)?;
                match Identify::parse(data) {
                    Ok(id) => Some(id.sectors),
                    // Take the LBA48 words (100-103) even when the integrity byte is off.
                    Err(_) if data.len() >= 208 => Some((0..4).fold(0u64, |acc, k| {
                        let w = u16::from_le_bytes([data[200 + 2 * k], data[201 + 2 * k]]);
                        acc | u64::from(w) << (16 * k)
                    })),
                    Err(_) => None,
                }
            },
        )?;
        self.target.sectors = sectors;
        Ok(())
    }

    /// Runs `work` against the target and returns what it achieved.
    ///
    /// The queue depth is capped at the target's buffer count (a target drops what it cannot
    /// queue) and at 65 535. Errors: `InvalidInput` when the request size or region does not
    /// fit the target, `TimedOut` when the target stops answering for `stall_timeout`.
    pub fn run(&mut self, work: &Workload) -> io::Result<RunStats> {
        let sectors = work.sectors;
        if sectors == 0 || sectors > self.target.max_sectors {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{sectors} sectors per request; the target takes 1 to {}", self.target.max_sectors),
            ));
        }
        let mut addresses = Addresses::new(work, self.target.sectors)?;
        let qd = work.queue_depth.clamp(1, usize::from(self.target.buffer_count.max(1)).min(0xFFFF));
        let request_bytes = u64::from(sectors) * SECTOR_SIZE as u64;
        if self.tx.capacity() < qd {
            self.tx = FrameBatch::new(qd, self.tx.frame_capacity());
        }
        let mut slots = vec![Slot::default(); qd];
        let mut stats = RunStats { queue_depth: qd, ..RunStats::default() };

        let start = Instant::now();
        let stop_issuing = start + work.duration;
        let mut issued_bytes = 0u64;
        let mut issuing = true;
        let mut drain_deadline = None;
        let mut last_progress = start;
        let mut last_answer = start;
        let mut next_retransmit_scan = start + work.retransmit_after;
        let mut in_flight = 0usize;

        self.tx.clear();
        for (i, slot) in slots.iter_mut().enumerate() {
            if work.max_bytes.is_some_and(|m| issued_bytes >= m) {
                break;
            }
            let lba = addresses.next_lba();
            *slot = Slot { generation: 1, busy: true, lba, first_sent: Some(start), last_sent: Some(start) };
            self.push_request(work.op, slot.tag(i), lba, sectors);
            issued_bytes += request_bytes;
            in_flight += 1;
        }
        self.transport.send_batch(&self.tx)?;

        while in_flight > 0 {
            let now = Instant::now();
            if issuing && (now >= stop_issuing || work.max_bytes.is_some_and(|m| issued_bytes >= m)) {
                issuing = false;
            }
            if !issuing {
                let d = *drain_deadline.get_or_insert(now + work.drain_timeout);
                if now >= d {
                    break;
                }
            }
            if now.duration_since(last_progress) >= work.stall_timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "target {} on {} stopped answering ({in_flight} requests outstanding)",
                        self.target.mac,
                        self.transport.name()
                    ),
                ));
            }
            // Retransmit scans (below) run on time while answers come; when none do, this
            // wait delays one by at most RECEIVE_WAIT.
            self.transport.recv_batch(&mut self.rx, Some(RECEIVE_WAIT))?;
            let now = Instant::now();
            self.tx.clear();
            for i in 0..self.rx.len() {
                let Some(raw) = self.rx.get(i) else { break };
                let Some((index, ok)) = check_answer(raw, &self.target, &slots, work.op, sectors) else {
                    continue;
                };
                let slot = &mut slots[index];
                let first_sent = slot.first_sent.unwrap_or(now);
                slot.busy = false;
                in_flight -= 1;
                last_progress = now;
                last_answer = now;
                if ok {
                    stats.requests += 1;
                    stats.bytes += request_bytes;
                    stats.latency_total += now.duration_since(first_sent);
                } else {
                    stats.errors += 1;
                }
                if issuing && work.max_bytes.is_none_or(|m| issued_bytes < m) {
                    let lba = addresses.next_lba();
                    slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
                    slot.busy = true;
                    slot.lba = lba;
                    slot.first_sent = Some(now);
                    slot.last_sent = Some(now);
                    let tag = slot.tag(index);
                    in_flight += 1;
                    issued_bytes += request_bytes;
                    self.push_request(work.op, tag, lba, sectors);
                }
            }
            if now >= next_retransmit_scan {
                for (index, slot) in slots.iter_mut().enumerate() {
                    let overdue =
                        slot.last_sent.is_some_and(|t| now.duration_since(t) >= work.retransmit_after);
                    if slot.busy && overdue && !self.tx.is_full() {
                        slot.last_sent = Some(now);
                        stats.retransmits += 1;
                        let tag = slot.tag(index);
                        self.push_request(work.op, tag, slot.lba, sectors);
                    }
                }
                next_retransmit_scan = now + work.retransmit_after / 4;
            }
            if !self.tx.is_empty() {
                self.transport.send_batch(&self.tx)?;
            }
        }
        stats.lost = in_flight as u64;
        stats.elapsed = last_answer.duration_since(start);
        Ok(stats)
    }

    fn push_request(&mut self, op: Op, tag: u32, lba: u64, sectors: u8) {
        let mac = self.transport.mac();
        push_request(&mut self.tx, &self.write_data, &self.target, mac, op, tag, lba, sectors);
    }
}

/// Appends one read or write request to `tx`.
#[allow(clippy::too_many_arguments)]
fn push_request(
    tx: &mut FrameBatch,
    write_data: &[u8],
    target: &TargetInfo,
    src: MacAddr,
    op: Op,
    tag: u32,
    lba: u64,
    sectors: u8,
) {
    let len = usize::from(sectors) * SECTOR_SIZE;
    let (header, data) = match op {
        Op::Read => (AtaRepr::read(lba, sectors, true), &[][..]),
        Op::Write => (AtaRepr::write(lba, sectors, true), &write_data[..len]),
    };
    let repr = FrameRepr {
        dst: target.mac,
        src,
        header: HeaderRepr::request(target.shelf, target.slot, tag),
        body: BodyRepr::Ata { header, data },
    };
    tx.push_with(|buf| {
        let Ok(n) = repr.emit_padded(buf) else { return 0 };
        if op == Op::Write {
            let base = ATA_DATA_OFFSET;
            for s in 0..usize::from(sectors) {
                let at = base + s * SECTOR_SIZE;
                buf[at..at + 8].copy_from_slice(&sector_stamp(lba + s as u64));
            }
        }
        n
    });
}

/// Matches an answer to the slot waiting for it. Returns the slot index and whether the
/// request succeeded; `None` for anything that is not the answer a busy slot expects.
fn check_answer(
    raw: &[u8],
    target: &TargetInfo,
    slots: &[Slot],
    op: Op,
    sectors: u8,
) -> Option<(usize, bool)> {
    let f = Frame::parse(raw).ok()?;
    if !f.header.is_response() || f.ethernet.src != target.mac {
        return None;
    }
    let tag = f.header.tag();
    if tag & CONTROL_TAG != 0 {
        return None;
    }
    let index = (tag & 0xFFFF) as usize;
    let slot = slots.get(index)?;
    if !slot.busy || slot.tag(index) != tag {
        return None;
    }
    if f.header.flags().contains(Flags::ERROR) {
        return Some((index, false));
    }
    let Body::Ata { header, .. } = f.body else {
        return Some((index, false));
    };
    // The frame length, not the parsed data, tells whether the sectors came: vblade answers
    // reads with the sector count register run down to 0, as an ATA device leaves it.
    let ok = !header.status().contains(AtaStatus::ERR)
        && (op == Op::Write || raw.len() >= ATA_DATA_OFFSET + usize::from(sectors) * SECTOR_SIZE);
    Some((index, ok))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    use aoe_target::backend::MemoryBackend;
    use aoe_target::export::{Export, ExportConfig};
    use aoe_target::server::{Server, SharedExport};
    use aoe_transport::memory::{Impairments, MemoryHub, MemoryPort};

    use super::*;

    const T: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const I: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const DISK: usize = 4 << 20;

    struct Rig {
        export: SharedExport<MemoryBackend>,
        stop: Arc<AtomicBool>,
        server: Option<JoinHandle<io::Result<()>>>,
        client_port: Option<MemoryPort>,
    }

    impl Rig {
        fn new(mtu: usize, buffer_count: u16, impairments: Impairments) -> Rig {
            Rig::with_config(mtu, ExportConfig { buffer_count, ..ExportConfig::new(1, 0) }, impairments)
        }

        fn with_config(mtu: usize, config: ExportConfig, impairments: Impairments) -> Rig {
            let hub = MemoryHub::with_impairments(mtu, impairments);
            let (target_port, client_port) = (hub.port(T), hub.port(I));
            let export = Arc::new(Mutex::new(Export::new(config, MemoryBackend::new(DISK))));
            let stop = Arc::new(AtomicBool::new(false));
            let server = std::thread::spawn({
                let (stop, export) = (stop.clone(), export.clone());
                move || Server::new(target_port, vec![export]).run(&stop)
            });
            Rig { export, stop, server: Some(server), client_port: Some(client_port) }
        }

        fn client(&mut self) -> Client<MemoryPort> {
            let port = self.client_port.take().unwrap();
            Client::connect(port, 1, 0, Duration::from_secs(5)).unwrap()
        }

        fn disk(&self) -> Vec<u8> {
            self.export.lock().unwrap().backend().snapshot()
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(s) = self.server.take() {
                s.join().unwrap().unwrap();
            }
        }
    }

    fn assert_stamped(disk: &[u8], lbas: std::ops::Range<u64>) {
        for lba in lbas {
            let at = lba as usize * SECTOR_SIZE;
            assert_eq!(disk[at..at + 8], sector_stamp(lba), "sector {lba}");
        }
    }

    #[test]
    fn discovers_buffer_count_sector_limit_and_capacity() {
        for (mtu, sectors) in [(1500, 2), (9000, 17)] {
            let mut rig = Rig::new(mtu, 24, Impairments::NONE);
            let c = rig.client();
            let t = *c.target();
            assert_eq!((t.mac, t.shelf, t.slot), (T, 1, 0));
            assert_eq!((t.buffer_count, t.max_sectors), (24, sectors));
            assert_eq!(t.sectors, (DISK / SECTOR_SIZE) as u64);
        }
    }

    #[test]
    fn connect_times_out_without_a_target() {
        let (_silent, port) = aoe_transport::memory::pair(9000, T, I);
        let started = Instant::now();
        let err = Client::connect(port, 1, 0, Duration::from_millis(300)).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn sequential_read_moves_exactly_the_bytes_asked() {
        let mut rig = Rig::new(9000, 16, Impairments::NONE);
        let mut c = rig.client();
        let work = Workload::sequential(Op::Read, 17, 16, Duration::from_secs(10)).max_bytes(2 << 20);
        let s = c.run(&work).unwrap();
        let per = 17 * SECTOR_SIZE as u64;
        assert_eq!(s.bytes, (2u64 << 20).div_ceil(per) * per);
        assert_eq!(s.requests * per, s.bytes);
        assert_eq!((s.errors, s.lost, s.retransmits, s.queue_depth), (0, 0, 0, 16));
        assert!(s.mb_per_s() > 0.0 && s.mean_latency_us() > 0.0);
    }

    #[test]
    fn queue_depth_is_capped_at_the_buffer_count() {
        let mut rig = Rig::new(9000, 8, Impairments::NONE);
        let mut c = rig.client();
        let s = c.run(&Workload::random_read(8, 32, Duration::from_secs(10), 1).max_bytes(1 << 20)).unwrap();
        assert_eq!((s.queue_depth, s.errors, s.lost), (8, 0, 0));
        assert_eq!(s.bytes, 1 << 20);
    }

    #[test]
    fn sequential_writes_land_where_addressed_and_wrap() {
        let mut rig = Rig::new(1500, 16, Impairments::NONE);
        let mut c = rig.client();
        // 100 sectors, written in 2-sector requests; 150 requests wrap once around the region.
        let work = Workload::sequential(Op::Write, 2, 16, Duration::from_secs(10))
            .region(1000, 100)
            .max_bytes(150 * 1024);
        let s = c.run(&work).unwrap();
        assert_eq!((s.requests, s.errors, s.lost), (150, 0, 0));
        let disk = rig.disk();
        assert_stamped(&disk, 1000..1100);
        assert!(disk[..1000 * SECTOR_SIZE].iter().all(|&b| b == 0), "nothing before the region");
        assert!(disk[1100 * SECTOR_SIZE..].iter().all(|&b| b == 0), "nothing after it");
    }

    #[test]
    fn random_reads_are_aligned_and_deterministic() {
        let work = Workload::random_read(8, 1, Duration::ZERO, 42).region(64, 800);
        let lbas = |w: &Workload| {
            let mut a = Addresses::new(w, 10_000).unwrap();
            (0..1000).map(|_| a.next_lba()).collect::<Vec<_>>()
        };
        let first = lbas(&work);
        assert_eq!(first, lbas(&work));
        assert!(first.iter().all(|&l| (64..864).contains(&l) && (l - 64) % 8 == 0));
        assert!(first.iter().collect::<std::collections::HashSet<_>>().len() == 100, "every unit hit");
        let too_big = Workload::random_read(8, 1, Duration::ZERO, 1).region(9_996, 8);
        assert_eq!(Addresses::new(&too_big, 10_000).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn oversized_requests_are_refused_before_sending() {
        let mut rig = Rig::new(1500, 16, Impairments::NONE);
        let mut c = rig.client();
        let err = c.run(&Workload::sequential(Op::Read, 3, 1, Duration::from_secs(1))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn lossy_link_is_survived_by_retransmission() {
        let imp = Impairments { drop: 0.05, duplicate: 0.05, reorder: 0.05, seed: 9 };
        let mut rig = Rig::new(9000, 16, imp);
        let mut c = rig.client();
        let work = Workload::sequential(Op::Write, 17, 16, Duration::from_secs(20))
            .region(0, 17 * 200)
            .max_bytes(200 * 17 * 512)
            .retransmit_after(Duration::from_millis(10));
        let s = c.run(&work).unwrap();
        assert_eq!((s.requests, s.errors, s.lost), (200, 0, 0), "{s:?}");
        assert!(s.retransmits > 0, "{s:?}");
        assert_stamped(&rig.disk(), 0..17 * 200);
        let read = Workload::sequential(Op::Read, 17, 16, Duration::from_secs(20))
            .max_bytes(100 * 17 * 512)
            .retransmit_after(Duration::from_millis(10));
        let s = c.run(&read).unwrap();
        assert_eq!((s.requests, s.errors, s.lost), (100, 0, 0), "{s:?}");
    }

    #[test]
    fn pending_frames_are_discarded_before_a_run() {
        let mut rig = Rig::new(9000, 16, Impairments::NONE);
        let hub = rig.client_port.as_ref().unwrap().hub().clone();
        let mut c = rig.client();
        assert_eq!(c.discard_pending().unwrap(), 0);
        // Another station's frames to us: more than one receive batch of them.
        let mut other = hub.port(MacAddr([2, 0, 0, 0, 0, 3]));
        let mut frames = FrameBatch::new(100, 64);
        for _ in 0..100 {
            frames.push_with(|buf| {
                buf[..60].fill(0);
                buf[..6].copy_from_slice(&I.0);
                buf[12..14].copy_from_slice(&0x88A2u16.to_be_bytes());
                60
            });
        }
        assert_eq!(other.send_batch(&frames).unwrap(), 100);
        assert_eq!(c.discard_pending().unwrap(), 100);
        assert_eq!(c.discard_pending().unwrap(), 0);
        let s =
            c.run(&Workload::sequential(Op::Read, 17, 4, Duration::from_secs(5)).max_bytes(1 << 16)).unwrap();
        assert_eq!((s.errors, s.lost), (0, 0));
    }

    #[test]
    fn ata_errors_are_counted_not_fatal() {
        // A read-only export answers writes with ERR + ABRT.
        let config = ExportConfig { read_only: true, ..ExportConfig::new(1, 0) };
        let mut rig = Rig::with_config(9000, config, Impairments::NONE);
        let mut c = rig.client();
        let work = Workload::sequential(Op::Write, 8, 4, Duration::from_secs(5)).max_bytes(64 << 10);
        let s = c.run(&work).unwrap();
        assert_eq!((s.requests, s.errors, s.lost, s.bytes), (0, 16, 0, 0));
    }
}
