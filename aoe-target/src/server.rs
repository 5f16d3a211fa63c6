//! The loop at the edge: transport → engine → transport, in batches.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aoe_proto::{AtaFrame, EmitError};
use aoe_transport::{FrameBatch, Transport};

use crate::backend::{Backend, Tail};
use crate::export::{Export, Outcome, Port, Received, ServerStats};
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
/// longer than this puts the server to sleep, so an idle target uses no CPU.
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
/// read of a mapped backend leaves its sectors in the mapping, as `tail`.
fn answer_here<B: Backend>(
    export: &mut Export<B>,
    port: &Port,
    request: &Received<'_>,
    slot: &mut [u8],
    tail: &mut Option<Tail>,
) -> usize {
    let outcome = export.handle(port, request, slot).and_then(|outcome| match outcome {
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
        for frame in self.rx.iter() {
            // Parsed once, for every export it addresses.
            let Ok(request) = Received::parse(frame) else {
                self.stats.count_malformed();
                continue;
            };
            // Read answers not sent yet take their sectors as they are when sent: send them
            // before a write can change those sectors.
            if self.tx.has_tails() && request.writes_sectors() {
                self.tx.send(&mut self.transport, &self.stats)?;
            }
            for export in addressed(&self.exports, &request) {
                let mut export = lock(export);
                self.tx.push(&mut self.transport, &self.stats, |slot, tail| {
                    answer_here(&mut export, &self.port, &request, slot, tail)
                })?;
            }
        }
        Ok(())
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
                std::hint::spin_loop();
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
