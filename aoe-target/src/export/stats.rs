//! What an export has done: counters kept with atomics, so that a reader (a metrics scrape,
//! a status command) never takes the export's lock ([`ExportStats`], read as an
//! [`ExportSnapshot`]); and the same for one interface's server ([`ServerStats`]).
//!
//! The engine counts requests, errors answered and frames ignored as it handles them
//! ([`Export::handle`](super::Export::handle)); whoever does the sector I/O counts bytes,
//! in-flight I/O and latency with [`ExportStats::run_io`] (or [`ExportStats::mapped_read`]
//! for a read answered from a mapping).
//!
//! ```
//! use aoe_target::export::{Command, ExportStats};
//!
//! let stats = ExportStats::new(1, 0);
//! stats.count_request(Command::Read);
//! let snapshot = stats.snapshot();
//! assert_eq!(snapshot.requests[Command::Read as usize], 1);
//! assert_eq!(snapshot.name, "e1.0");
//! ```

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use aoe_proto::ata::AtaStatus;
use aoe_proto::{AtaFrame, EmitError};

use super::{SectorIo, SectorOp};
use crate::backend::{Backend, MappedFile};

/// What a request asked for, as counted in [`ExportSnapshot::requests`] (indexed by
/// `command as usize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// READ SECTORS (EXT).
    Read = 0,
    /// WRITE SECTORS (EXT).
    Write,
    /// IDENTIFY DEVICE.
    Identify,
    /// FLUSH CACHE (EXT).
    Flush,
    /// Any other ATA command (SMART, CHECK POWER MODE, SET FEATURES, unknown ones).
    OtherAta,
    /// Query config (AoE command 1).
    Config,
    /// MAC mask list (AoE command 2).
    Mask,
    /// Reserve/release (AoE command 3).
    Reserve,
    /// An AoE command the protocol does not define.
    Other,
}

impl Command {
    /// Every command, in index order.
    pub const ALL: [Command; 9] = [
        Command::Read,
        Command::Write,
        Command::Identify,
        Command::Flush,
        Command::OtherAta,
        Command::Config,
        Command::Mask,
        Command::Reserve,
        Command::Other,
    ];

    /// A short lower-case name: `read`, `write`, `identify`, `flush`, `other_ata`, `config`,
    /// `mask`, `reserve`, `other`.
    pub fn name(self) -> &'static str {
        ["read", "write", "identify", "flush", "other_ata", "config", "mask", "reserve", "other"]
            [self as usize]
    }
}

/// Why a frame addressed to the export was not served, as counted in
/// [`ExportSnapshot::ignored`] (indexed by `reason as usize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// The initiator is outside a non-empty MAC mask list: no answer.
    Mask = 0,
    /// The access rules deny the initiator: no answer.
    Denied,
    /// Another initiator holds the reservation, or a read-only initiator asked for a change:
    /// answered with the "target reserved" AoE error.
    Reserved,
    /// The body does not parse: answered with an AoE error.
    Malformed,
}

impl IgnoreReason {
    /// Every reason, in index order.
    pub const ALL: [IgnoreReason; 4] =
        [IgnoreReason::Mask, IgnoreReason::Denied, IgnoreReason::Reserved, IgnoreReason::Malformed];

    /// `mask`, `denied`, `reserved` or `malformed`.
    pub fn name(self) -> &'static str {
        ["mask", "denied", "reserved", "malformed"][self as usize]
    }
}

/// Upper bounds of the I/O latency histogram's buckets, in seconds; a last bucket takes the
/// rest (+Inf).
pub const LATENCY_BUCKETS: [f64; 16] = [
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0,
];

const OPS: usize = 3;

fn op_index(op: SectorOp) -> usize {
    match op {
        SectorOp::Read => 0,
        SectorOp::Write => 1,
        SectorOp::Flush => 2,
    }
}

/// One export's counters. Shared ([`Export::stats`](super::Export::stats)) with every
/// thread that serves or reads them; all updates are relaxed atomics.
#[derive(Debug)]
pub struct ExportStats {
    name: String,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    requests: [AtomicU64; Command::ALL.len()],
    ata_errors: AtomicU64,
    aoe_errors: AtomicU64,
    ignored: [AtomicU64; IgnoreReason::ALL.len()],
    backend_errors: [AtomicU64; OPS],
    /// Whether the last I/O of each op failed: a failure after a success is logged, the
    /// ones after it are only counted.
    failing: [AtomicBool; OPS],
    in_flight: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
}

/// The counters of an export at one moment ([`ExportStats::snapshot`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExportSnapshot {
    /// `e{shelf}.{slot}`.
    pub name: String,
    /// Bytes read from the backend and sent.
    pub read_bytes: u64,
    /// Bytes written to the backend.
    pub written_bytes: u64,
    /// Requests served, by [`Command`] (`command as usize`).
    pub requests: [u64; Command::ALL.len()],
    /// ATA answers with ERR set (refused commands and failed I/O).
    pub ata_errors: u64,
    /// AoE answers with the error flag set.
    pub aoe_errors: u64,
    /// Frames not served, by [`IgnoreReason`] (`reason as usize`).
    pub ignored: [u64; IgnoreReason::ALL.len()],
    /// Backend I/O that failed: reads, writes, flushes.
    pub backend_errors: [u64; OPS],
    /// Sector I/O started and not finished.
    pub in_flight: u64,
    /// I/O latency: the count in each bucket of [`LATENCY_BUCKETS`] (not cumulative), the
    /// last one for longer I/O.
    pub latency: [u64; LATENCY_BUCKETS.len() + 1],
    /// The sum of all I/O latencies.
    pub latency_sum: Duration,
}

impl ExportSnapshot {
    /// I/O requests served: reads, writes and flushes.
    pub fn io_requests(&self) -> u64 {
        [Command::Read, Command::Write, Command::Flush].iter().map(|&c| self.requests[c as usize]).sum()
    }
    /// Every request served.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }
    /// I/O whose latency was measured.
    pub fn latency_count(&self) -> u64 {
        self.latency.iter().sum()
    }
    /// Backend failures of any op.
    pub fn total_backend_errors(&self) -> u64 {
        self.backend_errors.iter().sum()
    }
}

/// Takes I/O out of flight when dropped, however it ends, a panicking backend included.
struct Landed<'s>(&'s AtomicU64, u64);

impl Drop for Landed<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Relaxed);
    }
}

/// A backend that remembers the last error it returned, with the bytes it was asked for.
struct Observed<'b, B: ?Sized> {
    inner: &'b B,
    error: std::sync::Mutex<Option<io::Error>>,
}

impl<B: Backend + ?Sized> Observed<'_, B> {
    fn keep<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            let copy = match e.raw_os_error() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::new(e.kind(), e.to_string()),
            };
            *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(copy);
        }
        result
    }
}

impl<B: Backend + ?Sized> Backend for Observed<'_, B> {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.keep(self.inner.read_at(buf, offset))
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.keep(self.inner.write_at(buf, offset))
    }
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.keep(self.inner.write_vectored_at(bufs, offset))
    }
    fn flush(&self) -> io::Result<()> {
        self.keep(self.inner.flush())
    }
    fn mapping(&self) -> Option<(&std::sync::Arc<MappedFile>, u64)> {
        self.inner.mapping()
    }
}

impl ExportStats {
    /// Zeroed counters for export `e{shelf}.{slot}`.
    pub fn new(shelf: u16, slot: u8) -> Self {
        ExportStats {
            name: format!("e{shelf}.{slot}"),
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            requests: Default::default(),
            ata_errors: AtomicU64::new(0),
            aoe_errors: AtomicU64::new(0),
            ignored: Default::default(),
            backend_errors: Default::default(),
            failing: Default::default(),
            in_flight: AtomicU64::new(0),
            latency: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
        }
    }

    /// The export's name, `e{shelf}.{slot}`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts one request served.
    pub fn count_request(&self, command: Command) {
        self.requests[command as usize].fetch_add(1, Relaxed);
    }
    /// Counts one frame not served.
    pub fn count_ignored(&self, reason: IgnoreReason) {
        self.ignored[reason as usize].fetch_add(1, Relaxed);
    }
    /// Counts one ATA answer with ERR set.
    pub fn count_ata_error(&self) {
        self.ata_errors.fetch_add(1, Relaxed);
    }
    /// Counts one AoE answer with the error flag set.
    pub fn count_aoe_error(&self) {
        self.aoe_errors.fetch_add(1, Relaxed);
    }

    /// Counts a read answered from a mapping of the backend ([`SectorIo::tail`]): its bytes.
    pub fn mapped_read(&self, len: usize) {
        self.read_bytes.fetch_add(len as u64, Relaxed);
    }

    /// Sector I/O started and not finished yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Counts I/O handed to another thread: in flight until [`run_io`](Self::run_io) is
    /// called with `queued` set.
    pub fn io_queued(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// Counts I/O [`io_queued`](Self::io_queued) that will not run after all.
    pub fn io_unqueued(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Does `io` on `backend` into `answer` as [`SectorIo::complete`] does, and counts it:
    /// in flight while it runs, its latency, its bytes when it succeeds; a failure of the
    /// backend is counted by op and as an ATA error, and logged at WARN with the export,
    /// byte offset, length and error, once per run of failures of that op (the next failure
    /// after a success is logged again). `queued`: the I/O was counted by
    /// [`io_queued`](Self::io_queued) already.
    pub fn run_io<B: Backend + ?Sized>(
        &self,
        io: &SectorIo<'_>,
        backend: &B,
        answer: &mut [u8],
        queued: bool,
    ) -> Result<usize, EmitError> {
        if !queued {
            self.in_flight.fetch_add(1, Relaxed);
        }
        let landed = Landed(&self.in_flight, 1);
        let observed = Observed { inner: backend, error: std::sync::Mutex::new(None) };
        let start = Instant::now();
        let result = io.complete(&observed, answer);
        self.record_latency(start.elapsed(), 1);
        drop(landed);
        let op = op_index(io.op());
        match observed.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(error) => {
                self.backend_errors[op].fetch_add(1, Relaxed);
                if !self.failing[op].swap(true, Relaxed) {
                    // io::Error shows the errno: "No space left on device (os error 28)".
                    let what = match io.op() {
                        SectorOp::Read => format!("read of {} bytes at byte {}", io.len(), io.offset()),
                        SectorOp::Write => format!("write of {} bytes at byte {}", io.len(), io.offset()),
                        SectorOp::Flush => "flush".to_owned(),
                    };
                    tracing::warn!(
                        "{}: backend {what} failed: {error}; further failures are counted, not \
                         logged, until one succeeds",
                        self.name
                    );
                }
            }
            None if result.is_ok() => {
                if self.failing[op].swap(false, Relaxed) {
                    tracing::info!("{}: backend I/O succeeds again", self.name);
                }
                match io.op() {
                    SectorOp::Read => self.read_bytes.fetch_add(io.len() as u64, Relaxed),
                    SectorOp::Write => self.written_bytes.fetch_add(io.len() as u64, Relaxed),
                    SectorOp::Flush => 0,
                };
            }
            None => {}
        }
        if let Ok(len) = result {
            let failed = AtaFrame::new_checked(&mut answer[..len])
                .is_ok_and(|frame| frame.ata().status().contains(AtaStatus::ERR));
            if failed {
                self.count_ata_error();
            }
        }
        result
    }

    /// Writes `bufs`, the sectors of that many write requests one after another, from byte
    /// `offset` of `backend` with one [`Backend::write_vectored_at`], and when it succeeds
    /// counts them as [`run_io`](Self::run_io) counts that many writes: their bytes, and the
    /// call's latency as each one's. A failure is not counted: the caller then does each
    /// write again on its own with `run_io`, which counts how each one ends.
    pub fn run_writes<B: Backend + ?Sized>(
        &self,
        bufs: &[&[u8]],
        backend: &B,
        offset: u64,
    ) -> io::Result<()> {
        let writes = bufs.len() as u64;
        self.in_flight.fetch_add(writes, Relaxed);
        let landed = Landed(&self.in_flight, writes);
        let start = Instant::now();
        let result = backend.write_vectored_at(bufs, offset);
        let took = start.elapsed();
        drop(landed);
        if result.is_ok() {
            self.record_latency(took, writes);
            let op = op_index(SectorOp::Write);
            if self.failing[op].swap(false, Relaxed) {
                tracing::info!("{}: backend I/O succeeds again", self.name);
            }
            let bytes: usize = bufs.iter().map(|buf| buf.len()).sum();
            self.written_bytes.fetch_add(bytes as u64, Relaxed);
        }
        result
    }

    /// Counts `count` I/Os that took `took` each.
    fn record_latency(&self, took: Duration, count: u64) {
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(count, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns.fetch_add(nanos.saturating_mul(count), Relaxed);
    }

    /// The counters as they are now (each read on its own: a snapshot taken while I/O runs
    /// may be one request off between counters).
    pub fn snapshot(&self) -> ExportSnapshot {
        let load = |a: &AtomicU64| a.load(Relaxed);
        ExportSnapshot {
            name: self.name.clone(),
            read_bytes: load(&self.read_bytes),
            written_bytes: load(&self.written_bytes),
            requests: self.requests.each_ref().map(load),
            ata_errors: load(&self.ata_errors),
            aoe_errors: load(&self.aoe_errors),
            ignored: self.ignored.each_ref().map(load),
            backend_errors: self.backend_errors.each_ref().map(load),
            in_flight: load(&self.in_flight),
            latency: self.latency.each_ref().map(load),
            latency_sum: Duration::from_nanos(load(&self.latency_sum_ns)),
        }
    }
}

/// One interface's counters ([`Server::stats`](crate::server::Server::stats)).
#[derive(Debug, Default)]
pub struct ServerStats {
    received: AtomicU64,
    sent: AtomicU64,
    send_failures: AtomicU64,
    malformed: AtomicU64,
}

/// The counters of a server at one moment ([`ServerStats::snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerSnapshot {
    /// Frames received.
    pub received: u64,
    /// Frames sent (answers and announcements).
    pub sent: u64,
    /// Frames the link did not take.
    pub send_failures: u64,
    /// Frames received too short for an AoE header, for no export.
    pub malformed: u64,
}

impl ServerStats {
    /// Counts frames received.
    pub fn count_received(&self, frames: usize) {
        self.received.fetch_add(frames as u64, Relaxed);
    }
    /// Counts frames sent and frames the link did not take.
    pub fn count_sent(&self, sent: usize, failed: usize) {
        self.sent.fetch_add(sent as u64, Relaxed);
        self.send_failures.fetch_add(failed as u64, Relaxed);
    }
    /// Counts a frame that does not parse.
    pub fn count_malformed(&self) {
        self.malformed.fetch_add(1, Relaxed);
    }
    /// The counters as they are now.
    pub fn snapshot(&self) -> ServerSnapshot {
        ServerSnapshot {
            received: self.received.load(Relaxed),
            sent: self.sent.load(Relaxed),
            send_failures: self.send_failures.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use aoe_proto::{AtaRepr, BodyRepr, FrameRepr, HeaderRepr, MacAddr};

    /// A backend whose chosen byte range fails.
    struct Failing {
        inner: MemoryBackend,
        from: u64,
        to: u64,
    }

    impl Backend for Failing {
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            if offset < self.to && offset + buf.len() as u64 > self.from {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            if offset < self.to && offset + buf.len() as u64 > self.from {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.inner.write_at(buf, offset)
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn read_answer(lba: u64, count: u8) -> Vec<u8> {
        // The headers of a read's answer, as the engine writes them.
        let mut buf = vec![0u8; 9014];
        let len = FrameRepr {
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            header: HeaderRepr::request(1, 0, 1),
            body: BodyRepr::Ata { header: AtaRepr::read(lba, count, true), data: &[] },
        }
        .emit_padded(&mut buf)
        .unwrap();
        assert!(len >= AtaFrame::HEADER_LEN);
        buf
    }

    #[test]
    fn io_counts_bytes_latency_and_failures() {
        let stats = ExportStats::new(3, 1);
        let backend = Failing { inner: MemoryBackend::new(1 << 20), from: 4096, to: 8192 };
        let mut answer = read_answer(0, 2);
        stats.run_io(&SectorIo::read(0, 1024), &backend, &mut answer, false).unwrap();
        let s = stats.snapshot();
        assert_eq!((s.read_bytes, s.in_flight, s.latency_count(), s.ata_errors), (1024, 0, 1, 0));
        // Three failing reads: counted each, an ATA error each.
        for lba in [8, 9, 10] {
            let mut answer = read_answer(lba, 1);
            stats.run_io(&SectorIo::read(lba * 512, 512), &backend, &mut answer, false).unwrap();
        }
        let s = stats.snapshot();
        assert_eq!((s.read_bytes, s.backend_errors, s.ata_errors), (1024, [3, 0, 0], 3));
        assert_eq!(s.latency_count(), 4);
        // Queued I/O is in flight until it runs.
        stats.io_queued();
        assert_eq!(stats.in_flight(), 1);
        let mut answer = read_answer(100, 1);
        stats.run_io(&SectorIo::read(100 * 512, 512), &backend, &mut answer, true).unwrap();
        assert_eq!(stats.in_flight(), 0);
        assert_eq!(stats.snapshot().read_bytes, 1536);
        stats.mapped_read(512);
        assert_eq!(stats.snapshot().read_bytes, 2048);
    }

    #[test]
    fn a_failure_is_logged_once_per_run() {
        let stats = ExportStats::new(1, 0);
        let backend = Failing { inner: MemoryBackend::new(1 << 20), from: 0, to: 512 };
        let mut answer = read_answer(0, 1);
        assert!(!stats.failing[0].load(Relaxed));
        stats.run_io(&SectorIo::read(0, 512), &backend, &mut answer, false).unwrap();
        assert!(stats.failing[0].load(Relaxed), "the first failure starts a run");
        stats.run_io(&SectorIo::read(512, 512), &backend, &mut answer, false).unwrap();
        assert!(!stats.failing[0].load(Relaxed), "a success ends it");
    }

    #[test]
    fn latency_buckets() {
        let stats = ExportStats::new(1, 0);
        stats.record_latency(Duration::from_micros(5), 1);
        stats.record_latency(Duration::from_micros(10), 1);
        stats.record_latency(Duration::from_millis(3), 1);
        stats.record_latency(Duration::from_secs(5), 1);
        let s = stats.snapshot();
        assert_eq!(s.latency[0], 2, "10 µs is in the first bucket (le)");
        assert_eq!(s.latency[8], 1, "3 ms is at most 5 ms");
        assert_eq!(s.latency[LATENCY_BUCKETS.len()], 1, "longer than the last bound");
        assert_eq!(s.latency_sum, Duration::from_micros(5 + 10 + 3000 + 5_000_000));
    }

    #[test]
    fn names() {
        assert_eq!(Command::ALL.map(Command::name)[4], "other_ata");
        for (i, c) in Command::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, r) in IgnoreReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
