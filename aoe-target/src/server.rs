//! The loop at the edge: transport → engine → transport, in batches.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aoe_proto::{AtaFrame, EmitError};
use aoe_transport::{FrameBatch, Transport};

use crate::backend::{Backend, Tail};
use crate::export::{Export, Outcome, Port, Received, SectorIo, SectorOp, ServerStats};
use crate::workers::{IoWorkers, Job};

/// Frames received or sent per system call.
pub const BATCH_FRAMES: usize = 64;
/// How often [`Server::run`] looks at its stop flag when the link is idle.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long [`Server::run`] keeps checking for frames without sleeping after the last ones
/// came (busy-polling), unless told otherwise ([`Server::set_busy_poll`]).
///
/// An initiator that waits for each answer before its next request (queue depth 1) sends
/// that request a round trip after the answer left, some 10–30 µs later. A server asleep by
/// then pays a wake-up on every request; one still polling answers at once. A link quiet for
/// longer than this puts the server to sleep, so an idle target uses no CPU. While it polls
/// the server yields the CPU to any other thread that can run: on a machine with two cores,
/// a server that spun through its poll took CPU time from the initiator and the kernel work it
/// was waiting for (0.67 of the write MB/s at MTU 1500 in `compare`).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);

/// An export shared by the servers of every interface it is offered on.
pub type SharedExport<B> = Arc<Mutex<Export<B>>>;

/// Serves a set of exports on one transport (one interface).
pub struct Server<T, B> {
    transport: T,
    exports: Vec<Routed<B>>,
    port: Port,
    rx: FrameBatch,
    tx: Answers,
    busy_poll: Duration,
    /// Threads that do sector I/O, when the server does not do it itself.
    workers: Option<IoWorkers<B>>,
    /// Frames received and sent, readable from other threads.
    stats: Arc<ServerStats>,
    /// Most sectors per frame the buffers were sized for: the MTU at the start.
    buffer_sectors: u8,
    /// When the interface's MTU was last looked at.
    mtu_checked: Instant,
    /// Writes answered and not done yet, done together.
    run: Run,
}

/// How often [`Server::run`] looks whether the interface's MTU changed.
const MTU_CHECK: Duration = Duration::from_secs(1);

/// An export and its address, which does not change: frames are routed to the exports they
/// address without taking each export's lock.
struct Routed<B> {
    shelf: u16,
    slot: u8,
    export: SharedExport<B>,
}

/// The exports of `exports` that `request` addresses.
fn addressed<'e, B>(
    exports: &'e [Routed<B>],
    request: &Received<'_>,
) -> impl Iterator<Item = &'e SharedExport<B>> {
    let header = *request.header();
    exports.iter().filter(move |r| header.addresses(r.shelf, r.slot)).map(|r| &r.export)
}

/// Answers waiting to be sent: frames, and for each the sectors it takes from a mapped
/// backend, if any.
struct Answers {
    frames: FrameBatch,
    tails: Vec<Option<Tail>>,
    /// How many of `tails` are `Some`.
    tailed: usize,
}

impl Answers {
    fn new(frame_capacity: usize) -> Self {
        Answers {
            frames: FrameBatch::new(BATCH_FRAMES, frame_capacity),
            tails: Vec::with_capacity(BATCH_FRAMES),
            tailed: 0,
        }
    }

    /// True when some answer still has to read its sectors from a mapping.
    fn has_tails(&self) -> bool {
        self.tailed > 0
    }

    /// Adds the answer `answer` writes (a length of 0: none), with the tail it sets; when
    /// every slot is taken, sends the answers held first.
    fn push<T: Transport>(
        &mut self,
        transport: &mut T,
        stats: &ServerStats,
        answer: impl FnOnce(&mut [u8], &mut Option<Tail>) -> usize,
    ) -> io::Result<()> {
        if self.frames.is_full() {
            self.send(transport, stats)?;
        }
        let mut tail = None;
        let before = self.frames.len();
        self.frames.push_with(|slot| answer(slot, &mut tail));
        if self.frames.len() > before {
            self.tailed += usize::from(tail.is_some());
            self.tails.push(tail);
        }
        Ok(())
    }

    /// Sends every answer and forgets them. Answers the link does not take are lost as on
    /// the wire (the initiator retransmits): a congested link or a vanished peer must not
    /// stop the target. Only the interface going down is reported, so that the caller can
    /// wait for it to come back.
    fn send<T: Transport>(&mut self, transport: &mut T, stats: &ServerStats) -> io::Result<()> {
        if self.frames.is_empty() {
            return Ok(());
        }
        // The tails as the byte slices the transport takes, on the stack: no allocation.
        let mut tails: [&[u8]; BATCH_FRAMES] = [&[]; BATCH_FRAMES];
        for (slice, tail) in tails.iter_mut().zip(&self.tails) {
            *slice = tail.as_ref().map_or(&[], Tail::bytes);
        }
        let result = transport.send_with_tails(&self.frames, &tails[..self.tails.len().min(BATCH_FRAMES)]);
        let queued = self.frames.len();
        self.frames.clear();
        self.tails.clear();
        self.tailed = 0;
        match &result {
            Ok(sent) => stats.count_sent(*sent, queued.saturating_sub(*sent)),
            Err(_) => stats.count_sent(0, queued),
        }
        match result {
            Ok(sent) if sent < queued => {
                tracing::debug!(link = transport.name(), lost = queued - sent, "answers not sent");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NetworkDown => Err(e),
            Err(e) => {
                tracing::debug!(link = transport.name(), lost = queued, "answers not sent: {e}");
                Ok(())
            }
        }
    }
}

/// Writes to adjacent sectors of one export that came one after another in a received
/// batch, answered (their answers, status DRDY, wait in [`Answers`]) and not done yet: they
/// are done with one [`Backend::write_vectored_at`] ([`write_run`]) before anything else
/// touches that export's sectors and before any answer is sent, so that they are done as if
/// each had been on its own. Their sectors stay in the received batch meanwhile; the slices
/// pointing at them live beside the loop that reads that batch.
struct Run {
    /// Index in [`Server::exports`] of the export written.
    export: usize,
    /// Where the next write must start to join the run: the end of the last one.
    end: u64,
    /// Each write's offset and the index of its answer in [`Answers::frames`], in order.
    writes: Vec<RunWrite>,
}

#[derive(Debug, Clone, Copy)]
struct RunWrite {
    offset: u64,
    answer: usize,
}

impl Run {
    fn new() -> Self {
        // A run never holds more writes than a received batch has frames.
        Run { export: 0, end: 0, writes: Vec::with_capacity(BATCH_FRAMES) }
    }

    /// True when a write to export `export` at byte `offset` continues the run.
    fn extended_by(&self, export: usize, offset: u64) -> bool {
        !self.writes.is_empty()
            && self.export == export
            && self.end == offset
            && self.writes.len() < BATCH_FRAMES
    }
}

/// Does the writes of `run`, whose sectors are `sectors` (one slice per write, in order),
/// with one vectored write, and empties it. Their answers say done already; when the
/// vectored write fails, each write is done again on its own and its answer says how that
/// went, so that only a write that fails alone is answered with an error.
fn write_run<B: Backend>(run: &mut Run, sectors: &[&[u8]], exports: &[Routed<B>], tx: &mut Answers) {
    if run.writes.is_empty() {
        return;
    }
    let sectors = &sectors[..run.writes.len()];
    let routed = &exports[run.export];
    let export = lock(&routed.export);
    let (backend, stats) = (export.backend(), export.stats());
    // A lone write goes as it always has: run_io counts and logs it.
    let done = sectors.len() > 1
        && match stats.run_writes(sectors, backend, run.writes[0].offset) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(
                    "e{}.{}: {} adjacent writes together failed ({e}); doing each alone",
                    routed.shelf,
                    routed.slot,
                    sectors.len()
                );
                false
            }
        };
    if !done {
        for (write, data) in run.writes.iter().zip(sectors) {
            let io = SectorIo::write(write.offset, data);
            match tx.frames.get_mut(write.answer) {
                // The answer's length stays what it was: a write's answer carries no sectors.
                Some(answer) => drop(stats.run_io(&io, backend, answer, false)),
                // Not reached: a run is done before any answer is sent.
                None => drop(backend.write_at(data, write.offset)),
            }
        }
    }
    run.writes.clear();
}

/// `export` with its address, read once.
fn routed<B: Backend>(export: SharedExport<B>) -> Routed<B> {
    let (shelf, slot) = {
        let config = lock(&export);
        (config.config().shelf, config.config().slot)
    };
    Routed { shelf, slot, export }
}

fn lock<B>(export: &SharedExport<B>) -> MutexGuard<'_, Export<B>> {
    // An export's state stays consistent across a panic in another thread's I/O call.
    export.lock().unwrap_or_else(|e| e.into_inner())
}

/// The length of the answer to `request` in `slot` (0: none), the sector I/O done here: a
/// read of a mapped backend leaves its sectors in the mapping, as `tail`; a write is left
/// to do, as `write` (its answer, complete, says done).
fn answer_here<'r, B: Backend>(
    export: &mut Export<B>,
    port: &Port,
    request: &Received<'r>,
    slot: &mut [u8],
    tail: &mut Option<Tail>,
    write: &mut Option<SectorIo<'r>>,
) -> usize {
    let outcome = export.handle(port, request, slot).and_then(|outcome| match outcome {
        Outcome::NeedsIo(io) if io.op() == SectorOp::Write && io.data().is_some() => {
            let len = AtaFrame::new_checked(slot)?.finish(0)?;
            *write = Some(io);
            Ok(len)
        }
        Outcome::NeedsIo(io) => match io.tail(export.backend()) {
            Some(mapped) => {
                export.stats().mapped_read(mapped.bytes().len());
                *tail = Some(mapped);
                Ok(AtaFrame::HEADER_LEN)
            }
            None => export.stats().run_io(&io, export.backend(), slot, false),
        },
        Outcome::Answered(len) => Ok(len),
        Outcome::Ignored(_) => Ok(0),
    });
    outcome.unwrap_or_else(not_answered)
}

/// Logs an answer that could not be written; there is none (the initiator asks again).
fn not_answered(e: EmitError) -> usize {
    tracing::debug!("request not answered: {e}");
    0
}

impl<T: Transport, B: Backend> Server<T, B> {
    /// A server for `exports` on `transport`; answers advertise the transport's MTU.
    pub fn new(transport: T, exports: Vec<SharedExport<B>>) -> Self {
        let port = Port::new(transport.mac(), transport.mtu());
        let frame_capacity = 14 + transport.mtu();
        let exports = exports.into_iter().map(routed).collect();
        Server {
            transport,
            exports,
            port,
            rx: FrameBatch::new(BATCH_FRAMES, frame_capacity),
            tx: Answers::new(frame_capacity),
            busy_poll: DEFAULT_BUSY_POLL,
            workers: None,
            stats: Arc::default(),
            buffer_sectors: port.max_sectors,
            mtu_checked: Instant::now(),
            run: Run::new(),
        }
    }

    /// Its counters: frames received, sent and not sent, readable from any thread.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// The exports it serves, in the order frames are offered to them.
    pub fn exports(&self) -> impl Iterator<Item = &SharedExport<B>> {
        self.exports.iter().map(|r| &r.export)
    }

    /// Serves `exports` from the next frame on, in place of those it served. I/O already
    /// handed to the I/O threads for an export no longer served still completes and is
    /// answered.
    pub fn set_exports(&mut self, exports: Vec<SharedExport<B>>) {
        self.exports = exports.into_iter().map(routed).collect();
    }

    /// Looks again at the size of every export's store ([`Backend::refresh_len`]), so that
    /// a file truncated under an export is answered at its new size (what no longer exists
    /// is IDNF, and IDENTIFY reports the new capacity) rather than from a mapping of pages
    /// that are gone. [`run`](Self::run) does this every second.
    pub fn check_sizes(&mut self) {
        for routed in &self.exports {
            let mut export = lock(&routed.export);
            if let Err(e) = export.backend().refresh_len() {
                tracing::debug!("e{}.{}: looking up the store's size: {e}", routed.shelf, routed.slot);
            }
            export.follow_backend_size();
        }
    }

    /// Looks up the interface's MTU again ([`Transport::refresh_mtu`]); when it changed, the
    /// sectors per frame follow (up to what the buffers were sized for at the start: a larger
    /// MTU needs a restart to be used), are logged, and every export is announced again so
    /// that initiators learn them. Requests for more sectors than the MTU now carries are
    /// refused with ATA ABRT, not answered with frames the link would drop. Returns the
    /// sectors per frame now.
    pub fn check_mtu(&mut self) -> io::Result<u8> {
        self.mtu_checked = Instant::now();
        let mtu = self.transport.refresh_mtu()?;
        let sectors = aoe_proto::max_sectors(mtu).min(self.buffer_sectors);
        if sectors != self.port.max_sectors {
            tracing::warn!(
                link = self.transport.name(),
                "MTU is now {mtu}: {sectors} sectors per frame (was {}); announcing it",
                self.port.max_sectors
            );
            if aoe_proto::max_sectors(mtu) > self.buffer_sectors {
                tracing::warn!(
                    link = self.transport.name(),
                    "restart to use more than {sectors} sectors per frame"
                );
            }
            self.port.max_sectors = sectors;
            self.announce()?;
        }
        Ok(sectors)
    }

    /// Has `threads` threads do the exports' sector I/O (reads, writes, flushes), each
    /// sending its answers on a handle of its own ([`Transport::sender`]), so that a slow
    /// backend does not hold up the requests behind the one it is busy with; 0 (the
    /// default) does the I/O in the serving thread, which is fastest when the sectors are
    /// in memory (the page cache, tmpfs). Fails when the transport cannot make a sender or a
    /// thread cannot start; the server then does the I/O itself.
    pub fn set_io_threads(&mut self, threads: usize) -> io::Result<()>
    where
        B: 'static,
    {
        // Threads already running finish what they have first.
        self.workers = None;
        if threads > 0 {
            let frame_capacity = 14 + self.transport.mtu();
            let stats = Arc::clone(&self.stats);
            self.workers = Some(IoWorkers::start(threads, &self.transport, frame_capacity, stats)?);
        }
        Ok(())
    }

    /// How long [`run`](Self::run) polls the link without sleeping after frames came
    /// ([`DEFAULT_BUSY_POLL`]); zero sleeps as soon as no frame is waiting.
    pub fn set_busy_poll(&mut self, busy_poll: Duration) {
        self.busy_poll = busy_poll;
    }

    /// The port answers are sent from.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Broadcasts every export's query-config answer, as a target does when it starts.
    pub fn announce(&mut self) -> io::Result<()> {
        self.announce_if(|_| true)
    }

    /// Broadcasts the query-config answer of each export it serves for which `which` is
    /// true, as a target does when it starts serving one.
    pub fn announce_if(&mut self, mut which: impl FnMut(&SharedExport<B>) -> bool) -> io::Result<()> {
        for routed in &self.exports {
            if !which(&routed.export) {
                continue;
            }
            let export = lock(&routed.export);
            self.tx.push(&mut self.transport, &self.stats, |slot, _| {
                export.announce(&self.port, slot).unwrap_or_else(not_answered)
            })?;
        }
        self.tx.send(&mut self.transport, &self.stats)
    }

    /// Receives one batch (waiting at most `timeout`), answers it and sends the answers.
    /// Returns the number of frames received.
    pub fn poll(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let received = self.transport.recv_batch(&mut self.rx, timeout)?;
        self.stats.count_received(received);
        let answered = self.answer_received();
        // Requests a receive ring lent go back to it now, not at the next receive.
        self.rx.clear();
        answered?;
        self.tx.send(&mut self.transport, &self.stats)?;
        Ok(received)
    }

    /// Answers the frames in `rx`, sending answers whenever a batch of them is full; hands
    /// sector I/O to the I/O threads when there are some.
    fn answer_received(&mut self) -> io::Result<()> {
        if self.workers.is_some() {
            return self.answer_received_with_workers();
        }
        let Server { transport, exports, port, rx, tx, stats, run, .. } = self;
        // The sectors of the writes in `run`, in the received batch: on the stack, no
        // allocation.
        let mut sectors: [&[u8]; BATCH_FRAMES] = [&[]; BATCH_FRAMES];
        let mut answer = || -> io::Result<()> {
            for frame in rx.iter() {
                // Parsed once, for every export it addresses.
                let Ok(request) = Received::parse(frame) else {
                    stats.count_malformed();
                    continue;
                };
                let writes = request.writes_sectors();
                // Read answers not sent yet take their sectors as they are when sent: send
                // them before a write can change those sectors.
                if tx.has_tails() && writes {
                    write_run(run, &sectors, exports, tx);
                    tx.send(transport, stats)?;
                }
                let header = *request.header();
                for (index, routed) in exports.iter().enumerate() {
                    if !header.addresses(routed.shelf, routed.slot) {
                        continue;
                    }
                    // Whatever else comes for the run's export sees its writes done; so do
                    // the answers sent when the batch of them is full.
                    if (run.export == index && !writes) || tx.frames.is_full() {
                        write_run(run, &sectors, exports, tx);
                    }
                    let mut write = None;
                    let mut export = lock(&routed.export);
                    tx.push(transport, stats, |slot, tail| {
                        answer_here(&mut export, port, &request, slot, tail, &mut write)
                    })?;
                    drop(export);
                    let Some(io) = write else { continue };
                    if !run.extended_by(index, io.offset()) {
                        write_run(run, &sectors, exports, tx);
                        run.export = index;
                    }
                    sectors[run.writes.len()] = io.data().unwrap_or_default();
                    run.writes.push(RunWrite { offset: io.offset(), answer: tx.frames.len() - 1 });
                    run.end = io.offset() + io.len() as u64;
                }
            }
            Ok(())
        };
        let answered = answer();
        // Before the answers are sent, whatever stopped the loop.
        write_run(run, &sectors, exports, tx);
        answered
    }

    /// As [`answer_received`](Self::answer_received), with I/O threads: each read, write
    /// and flush goes to them, except a lone request they would only be slower with
    /// ([`IoWorkers::better_done_here`]).
    fn answer_received_with_workers(&mut self) -> io::Result<()> {
        let Some(workers) = self.workers.as_mut() else { return Ok(()) };
        let lone = self.rx.len() == 1;
        for frame in self.rx.iter() {
            let Ok(request) = Received::parse(frame) else {
                self.stats.count_malformed();
                continue;
            };
            for export in addressed(&self.exports, &request) {
                let mut answer = workers.buffer();
                let mut export = lock(export);
                let len = match export.handle(&self.port, &request, &mut answer) {
                    Ok(Outcome::NeedsIo(io)) => match io.detach(&mut answer) {
                        Ok(io) => {
                            // Its turn is taken while the export is held: in the order
                            // requests come, through every interface.
                            let ticket = export.io_order().enter(&io);
                            let backend = Arc::clone(export.shared_backend());
                            let stats = Arc::clone(export.stats());
                            drop(export);
                            stats.io_queued();
                            let job = Job { io, ticket, backend, answer, stats };
                            if !(lone && workers.better_done_here()) {
                                workers.submit(job);
                                continue;
                            }
                            // A lone request, with no other in progress, on a quick backend.
                            let len;
                            (len, answer) = workers.complete(job);
                            len
                        }
                        Err(e) => Some(not_answered(e)),
                    },
                    Ok(Outcome::Answered(len)) => Some(len),
                    Ok(Outcome::Ignored(_)) => None,
                    Err(e) => Some(not_answered(e)),
                };
                if let Some(len) = len.filter(|&len| len > 0) {
                    self.tx.push(&mut self.transport, &self.stats, |slot, _| {
                        slot[..len].copy_from_slice(&answer[..len]);
                        len
                    })?;
                }
                workers.give_back(answer);
            }
        }
        Ok(())
    }

    /// Serves until `stop` is set, then returns. For the [busy-poll](Self::set_busy_poll) time after
    /// frames came it polls without waiting; after that it sleeps until frames come.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut last_frames: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if self.mtu_checked.elapsed() >= MTU_CHECK {
                if let Err(e) = self.check_mtu() {
                    tracing::debug!(link = self.transport.name(), "looking up the MTU: {e}");
                }
                self.check_sizes();
            }
            let spinning = last_frames.is_some_and(|t| t.elapsed() < self.busy_poll);
            let wait = if spinning { Duration::ZERO } else { IDLE_POLL };
            if self.poll(Some(wait))? > 0 {
                last_frames = Some(Instant::now());
            } else if spinning {
                // Polling, not computing: a thread that can run (the initiator on this host,
                // the kernel's network work) runs first, and when none can this returns at
                // once. On a machine with few cores a spinning server otherwise takes CPU
                // time from the work it waits for.
                std::thread::yield_now();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::export::ExportConfig;
    use aoe_proto::ata::{AtaError, AtaStatus};
    use aoe_proto::{
        AtaRepr, Body, BodyRepr, ConfigCommand, ConfigRepr, Frame, FrameRepr, HeaderRepr, MacAddr,
    };
    use aoe_transport::memory;

    const T: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const I: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn export(shelf: u16, slot: u8) -> SharedExport<MemoryBackend> {
        Arc::new(Mutex::new(Export::new(ExportConfig::new(shelf, slot), MemoryBackend::new(1 << 20))))
    }

    #[test]
    fn answers_a_batch_and_broadcasts_reach_every_export() {
        let (target_port, mut host) = memory::pair(9000, T, I);
        let mut server = Server::new(target_port, vec![export(1, 0), export(1, 1)]);
        let mut out = FrameBatch::new(BATCH_FRAMES, 9014);
        out.push_with(|buf| {
            FrameRepr {
                dst: MacAddr::BROADCAST,
                src: I,
                header: HeaderRepr::request(0xFFFF, 0xFF, 1),
                body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
            }
            .emit_padded(buf)
            .unwrap()
        });
        for tag in 0..40u32 {
            out.push_with(|buf| {
                FrameRepr {
                    dst: T,
                    src: I,
                    header: HeaderRepr::request(1, 1, 100 + tag),
                    body: BodyRepr::Ata { header: AtaRepr::read(u64::from(tag), 17, true), data: &[] },
                }
                .emit_padded(buf)
                .unwrap()
            });
        }
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap(), 41);
        // Requests are let go once answered, so that a receive ring has their slots back.
        assert!(server.rx.is_empty());
        let mut inbox = FrameBatch::new(BATCH_FRAMES, 9014);
        let mut tags = Vec::new();
        while host.recv_batch(&mut inbox, Some(Duration::from_millis(50))).unwrap() > 0 {
            for f in inbox.iter() {
                let f = Frame::parse(f).unwrap();
                if let Body::Ata { data, .. } = f.body {
                    assert_eq!(data.len(), 17 * 512);
                }
                tags.push(f.header.tag());
            }
        }
        let mut expect: Vec<u32> = vec![1, 1];
        expect.extend(100..140);
        assert_eq!(tags, expect, "two config answers, then every read in order");
        let served = server.stats().snapshot();
        assert_eq!((served.received, served.sent, served.send_failures), (41, 42, 0));
        let stats: Vec<_> = server.exports().map(|e| lock(e).stats().snapshot()).collect();
        use crate::export::Command;
        assert_eq!(stats[0].requests[Command::Config as usize], 1);
        assert_eq!(stats[0].read_bytes, 0);
        assert_eq!(stats[1].requests[Command::Read as usize], 40);
        assert_eq!(stats[1].read_bytes, 40 * 17 * 512);
        assert_eq!((stats[1].latency_count(), stats[1].in_flight), (40, 0));
    }

    fn ata_request(tag: u32, header: AtaRepr, data: &[u8]) -> impl FnOnce(&mut [u8]) -> usize + '_ {
        move |buf| {
            FrameRepr {
                dst: T,
                src: I,
                header: HeaderRepr::request(1, 0, tag),
                body: BodyRepr::Ata { header, data },
            }
            .emit_padded(buf)
            .unwrap()
        }
    }

    /// Answers of a mapped export carry their sectors, and a read handled before a write to
    /// the same sectors in the same batch shows them as they were before the write (the
    /// read's answer takes its sectors from the mapping when sent, so it goes out first).
    #[test]
    fn mapped_read_answers_show_the_data_as_of_their_request() {
        use crate::backend::{FileBackend, FileOptions};
        let image = aoe_testkit::data::TempImage::zeroed(64 * 1024).unwrap();
        std::fs::write(image.path(), vec![0x11u8; 64 * 1024]).unwrap();
        let file = FileBackend::open(image.path(), FileOptions::default()).unwrap();
        assert!(file.mapping().is_some());
        let export =
            Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), Box::new(file) as Box<dyn Backend>)));
        let (target_port, mut host) = memory::pair(9000, T, I);
        let mut server = Server::new(target_port, vec![export]);
        let mut out = FrameBatch::new(BATCH_FRAMES, 9014);
        let new = vec![0x22u8; 4 * 512];
        out.push_with(ata_request(1, AtaRepr::read(8, 4, true), &[]));
        out.push_with(ata_request(2, AtaRepr::write(8, 4, true), &new));
        out.push_with(ata_request(3, AtaRepr::read(8, 4, true), &[]));
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap(), 3);
        let mut inbox = FrameBatch::new(BATCH_FRAMES, 9014);
        let mut answers = Vec::new();
        while host.recv_batch(&mut inbox, Some(Duration::from_millis(50))).unwrap() > 0 {
            for f in inbox.iter() {
                let f = Frame::parse(f).unwrap();
                let Body::Ata { data, .. } = f.body else { panic!("not ATA") };
                answers.push((f.header.tag(), data.to_vec()));
            }
        }
        let tags: Vec<u32> = answers.iter().map(|a| a.0).collect();
        assert_eq!(tags, [1, 2, 3]);
        assert!(answers[0].1 == [0x11; 4 * 512], "the first read shows the old sectors");
        assert!(answers[2].1 == new, "the second read shows the written sectors");
    }

    /// What a [`Recording`] backend was asked to do: (offset, length) of reads and writes, the
    /// lengths of the buffers of vectored writes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Read(u64, usize),
        Write(u64, usize),
        Vectored(u64, Vec<usize>),
    }

    /// A memory backend that records what it is asked, and fails (EIO) every write that
    /// touches the bytes `fail`, writing nothing of it.
    struct Recording {
        inner: MemoryBackend,
        calls: Mutex<Vec<Call>>,
        fail: std::ops::Range<u64>,
    }

    impl Recording {
        fn new(fail: std::ops::Range<u64>) -> Self {
            Recording { inner: MemoryBackend::new(1 << 20), calls: Mutex::default(), fail }
        }
        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
        fn fails(&self, offset: u64, len: usize) -> bool {
            offset < self.fail.end && offset + len as u64 > self.fail.start
        }
    }

    impl Backend for Recording {
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.calls.lock().unwrap().push(Call::Read(offset, buf.len()));
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.calls.lock().unwrap().push(Call::Write(offset, buf.len()));
            match self.fails(offset, buf.len()) {
                true => Err(io::Error::from_raw_os_error(libc::EIO)),
                false => self.inner.write_at(buf, offset),
            }
        }
        /// As a disk would: the buffers before the failing one are written.
        fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
            self.calls.lock().unwrap().push(Call::Vectored(offset, bufs.iter().map(|b| b.len()).collect()));
            let mut at = offset;
            for buf in bufs {
                if self.fails(at, buf.len()) {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                self.inner.write_at(buf, at)?;
                at += buf.len() as u64;
            }
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An answer as the initiator sees it: tag, ATA status and error, sectors.
    type Answer = (u32, AtaStatus, AtaError, Vec<u8>);

    /// Sends `requests` as one batch to `server`, has it answer them, and returns the answers.
    fn exchange<B: Backend>(
        server: &mut Server<memory::MemoryPort, B>,
        host: &mut memory::MemoryPort,
        requests: &[(u32, u8, AtaRepr, Vec<u8>)],
    ) -> Vec<Answer> {
        let mut out = FrameBatch::new(BATCH_FRAMES, 9014);
        for (tag, slot, header, data) in requests {
            out.push_with(|buf| {
                FrameRepr {
                    dst: T,
                    src: I,
                    header: HeaderRepr::request(1, *slot, *tag),
                    body: BodyRepr::Ata { header: *header, data },
                }
                .emit_padded(buf)
                .unwrap()
            });
        }
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap(), requests.len());
        let mut inbox = FrameBatch::new(BATCH_FRAMES, 9014);
        let mut answers = Vec::new();
        while host.recv_batch(&mut inbox, Some(Duration::from_millis(50))).unwrap() > 0 {
            for f in inbox.iter() {
                let f = Frame::parse(f).unwrap();
                let Body::Ata { header, data } = f.body else { panic!("not ATA") };
                answers.push((f.header.tag(), header.status(), header.error(), data.to_vec()));
            }
        }
        answers
    }

    fn recording_export(fail: std::ops::Range<u64>, slot: u8) -> SharedExport<Recording> {
        Arc::new(Mutex::new(Export::new(ExportConfig::new(1, slot), Recording::new(fail))))
    }

    /// `count` sectors of a pattern that tells writes apart.
    fn sectors(tag: u32, count: u8) -> Vec<u8> {
        (0..usize::from(count) * 512).map(|i| (i as u32 / 7 + tag * 31) as u8).collect()
    }

    #[test]
    fn adjacent_writes_in_a_batch_are_one_vectored_write() {
        let (target_port, mut host) = memory::pair(9000, T, I);
        let (a, b) = (recording_export(0..0, 0), recording_export(0..0, 1));
        let mut server = Server::new(target_port, vec![Arc::clone(&a), Arc::clone(&b)]);
        let write = |tag, lba, count| (tag, 0, AtaRepr::write(lba, count, true), sectors(tag, count));
        let requests = [
            write(1, 0, 4),
            write(2, 4, 4),
            // Another export's read does not touch the run.
            (3, 1, AtaRepr::read(0, 2, true), vec![]),
            write(4, 8, 17),
            write(5, 25, 1),
            // A gap: a run of its own.
            write(6, 100, 2),
            write(7, 102, 2),
            // A duplicate (retransmitted): written again, after the first copy.
            write(7, 102, 2),
            // Sectors just written, and one past them.
            (8, 0, AtaRepr::read(10, 17, true), vec![]),
            write(9, 40, 1),
        ];
        let answers = exchange(&mut server, &mut host, &requests);
        let tags: Vec<u32> = answers.iter().map(|a| a.0).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5, 6, 7, 7, 8, 9], "every request answered, in order");
        for (tag, status, error, _) in &answers {
            assert_eq!((*status, *error), (AtaStatus::DRDY, AtaError::empty()), "tag {tag}");
        }
        let calls = lock(&a).backend().calls();
        assert_eq!(
            calls,
            [
                Call::Vectored(0, vec![2048, 2048, 17 * 512, 512]),
                Call::Vectored(100 * 512, vec![1024, 1024]),
                Call::Write(102 * 512, 1024),
                Call::Read(10 * 512, 17 * 512),
                Call::Write(40 * 512, 512),
            ]
        );
        assert_eq!(lock(&b).backend().calls(), [Call::Read(0, 1024)]);
        let mut expect = [sectors(1, 4), sectors(2, 4), sectors(4, 17), sectors(5, 1)].concat();
        expect.truncate(26 * 512);
        expect.extend_from_slice(&[0; 512]);
        assert!(answers[8].3 == expect[10 * 512..], "the read sees the writes before it");
        let data = lock(&a).backend().inner.snapshot();
        assert!(data[100 * 512..104 * 512] == [sectors(6, 2), sectors(7, 2)].concat()[..]);
        assert!(data[40 * 512..41 * 512] == sectors(9, 1)[..]);
        let stats = lock(&a).stats().snapshot();
        use crate::export::Command;
        assert_eq!(stats.requests[Command::Write as usize], 8);
        assert_eq!(stats.written_bytes, (4 + 4 + 17 + 1 + 2 + 2 + 2 + 1) * 512);
        assert_eq!((stats.latency_count(), stats.in_flight, stats.ata_errors), (9, 0, 0));
    }

    #[test]
    fn a_failing_write_in_a_run_fails_alone() {
        let (target_port, mut host) = memory::pair(9000, T, I);
        // Sector 17 fails: the third write.
        let a = recording_export(17 * 512..18 * 512, 0);
        let mut server = Server::new(target_port, vec![Arc::clone(&a)]);
        let requests: Vec<_> =
            (0..5u32).map(|i| (i, 0, AtaRepr::write(u64::from(i) * 8, 8, true), sectors(i, 8))).collect();
        let answers = exchange(&mut server, &mut host, &requests);
        let registers: Vec<_> = answers.iter().map(|a| (a.0, a.1, a.2)).collect();
        let ok = (AtaStatus::DRDY, AtaError::empty());
        let failed = (AtaStatus::DRDY | AtaStatus::ERR, AtaError::UNC);
        let expect: Vec<_> =
            (0..5u32).map(|i| if i == 2 { (i, failed.0, failed.1) } else { (i, ok.0, ok.1) }).collect();
        assert_eq!(registers, expect, "only the failing write says so");
        let calls = lock(&a).backend().calls();
        assert_eq!(calls[0], Call::Vectored(0, vec![4096; 5]), "tried together first");
        assert_eq!(calls[1..], (0..5).map(|i| Call::Write(i * 4096, 4096)).collect::<Vec<_>>()[..]);
        let data = lock(&a).backend().inner.snapshot();
        for i in [0u32, 1, 3, 4] {
            let at = i as usize * 4096;
            assert!(data[at..at + 4096] == sectors(i, 8)[..], "write {i} landed");
        }
        let stats = lock(&a).stats().snapshot();
        assert_eq!((stats.written_bytes, stats.backend_errors, stats.ata_errors), (4 * 4096, [0, 1, 0], 1));
        assert_eq!((stats.latency_count(), stats.in_flight), (5, 0));
    }

    /// A broadcast query answered by two exports leaves one answer too many for one batch:
    /// the answers are sent before the last write, and the run before them is done first,
    /// so that the failing write's answer, among those, says it failed.
    #[test]
    fn a_run_is_done_before_a_full_batch_of_answers_is_sent() {
        let (target_port, mut host) = memory::pair(9000, T, I);
        let (a, b) = (recording_export(40 * 512..41 * 512, 0), recording_export(0..0, 1));
        let mut server = Server::new(target_port, vec![Arc::clone(&a), b]);
        let mut out = FrameBatch::new(BATCH_FRAMES, 9014);
        out.push_with(|buf| {
            FrameRepr {
                dst: MacAddr::BROADCAST,
                src: I,
                header: HeaderRepr::request(1, 0xFF, 1000),
                body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
            }
            .emit_padded(buf)
            .unwrap()
        });
        for lba in 0..63u32 {
            out.push_with(ata_request(lba, AtaRepr::write(u64::from(lba), 1, true), &sectors(lba, 1)));
        }
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap(), 64);
        let mut inbox = FrameBatch::new(BATCH_FRAMES, 9014);
        let mut failed = Vec::new();
        let mut answered = 0;
        while host.recv_batch(&mut inbox, Some(Duration::from_millis(50))).unwrap() > 0 {
            for f in inbox.iter() {
                let f = Frame::parse(f).unwrap();
                answered += 1;
                if let Body::Ata { header, .. } = f.body {
                    if header.status().contains(AtaStatus::ERR) {
                        failed.push(f.header.tag());
                    }
                }
            }
        }
        assert_eq!((answered, failed), (65, vec![40]));
        let calls = lock(&a).backend().calls();
        assert_eq!(calls[0], Call::Vectored(0, vec![512; 62]), "the run up to the full batch");
        assert_eq!(calls.last(), Some(&Call::Write(62 * 512, 512)), "the last write, alone");
    }

    /// A link whose sends fail as a congested or vanished peer makes them fail.
    struct SendFails(memory::MemoryPort, io::ErrorKind);

    impl Transport for SendFails {
        fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
            self.0.recv_batch(batch, timeout)
        }
        fn send_batch(&mut self, _: &FrameBatch) -> io::Result<usize> {
            Err(io::Error::from(self.1))
        }
        fn mac(&self) -> MacAddr {
            self.0.mac()
        }
        fn mtu(&self) -> usize {
            self.0.mtu()
        }
        fn name(&self) -> &str {
            self.0.name()
        }
    }

    /// Regression: a failed send of answers stopped the server (and so the target).
    #[test]
    fn answers_the_link_refuses_are_lost_not_fatal() {
        let (target_port, mut host) = memory::pair(1500, T, I);
        let mut server = Server::new(SendFails(target_port, io::ErrorKind::OutOfMemory), vec![export(1, 0)]);
        let mut out = FrameBatch::new(1, 1514);
        out.push_with(|buf| {
            FrameRepr {
                dst: T,
                src: I,
                header: HeaderRepr::request(1, 0, 1),
                body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
            }
            .emit_padded(buf)
            .unwrap()
        });
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap(), 1);
        // An interface that went down is still reported, for the caller to wait on.
        server.transport.1 = io::ErrorKind::NetworkDown;
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap_err().kind(), io::ErrorKind::NetworkDown);
    }
}
