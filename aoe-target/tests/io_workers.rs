//! A server with I/O threads (`Server::set_io_threads`) over the in-memory link: requests
//! behind one the backend is slow with are answered meanwhile, a retransmitted write waits
//! for the copy in progress, a lone request on a quick backend is done by the serving thread,
//! and every answer matches what the server answers by itself.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aoe_proto::ata::AtaStatus;
use aoe_proto::{
    AtaCommand, AtaRepr, Body, BodyRepr, ConfigCommand, ConfigRepr, Frame, FrameRepr, HeaderRepr, MacAddr,
};
use aoe_target::backend::{Backend, MemoryBackend};
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::{Server, SharedExport};
use aoe_transport::memory::{self, MemoryPort};
use aoe_transport::{FrameBatch, Transport};

const T: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const I: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
/// Writes one request frame into a slot.
type Emit<'a> = Box<dyn FnOnce(&mut [u8]) -> usize + 'a>;
/// The initiator's end of a link, the flag that stops the server, and the server's thread,
/// which hands the export back.
type Serving<B> = (MemoryPort, Arc<AtomicBool>, std::thread::JoinHandle<SharedExport<B>>);

/// Longest a gated I/O waits for the gate, so that a test that fails does not hang.
const GATE_LIMIT: Duration = Duration::from_secs(5);

/// Memory whose first I/O at one offset waits until the gate opens (or `GATE_LIMIT` passes).
struct Gated {
    inner: MemoryBackend,
    offset: u64,
    open: Mutex<bool>,
    opened: Condvar,
    /// Set once an I/O came to the gate; later ones pass.
    waiting: AtomicBool,
}

impl Gated {
    fn new(len: usize, offset: u64) -> Self {
        Gated {
            inner: MemoryBackend::new(len),
            offset,
            open: Mutex::new(false),
            opened: Condvar::new(),
            waiting: AtomicBool::new(false),
        }
    }

    fn pass(&self, offset: u64) {
        if offset != self.offset || self.waiting.swap(true, Ordering::SeqCst) {
            return;
        }
        let open = self.open.lock().unwrap();
        let _open = self.opened.wait_timeout_while(open, GATE_LIMIT, |open| !*open).unwrap();
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Backend for Gated {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.pass(offset);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.pass(offset);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

fn ata(tag: u32, header: AtaRepr, data: &[u8]) -> impl FnOnce(&mut [u8]) -> usize + '_ {
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

fn config(tag: u32) -> impl FnOnce(&mut [u8]) -> usize {
    move |buf| {
        FrameRepr {
            dst: T,
            src: I,
            header: HeaderRepr::request(1, 0, tag),
            body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
        }
        .emit_padded(buf)
        .unwrap()
    }
}

/// A server on one end of a fresh link, serving `backend` as e1.0 with `threads` I/O threads
/// until the returned flag is set; the other end.
fn serve<B: Backend + 'static>(backend: B, threads: usize) -> Serving<B> {
    let (target, host) = memory::pair(9000, T, I);
    let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), backend)));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut server = Server::new(target, vec![Arc::clone(&export)]);
            server.set_io_threads(threads).unwrap();
            server.run(&stop).unwrap();
            drop(server);
            export
        }
    });
    (host, stop, thread)
}

/// Every answer (tag, ATA status, data) that arrives within `wait` of the last one.
fn answers(host: &mut MemoryPort, want: usize, wait: Duration) -> Vec<(u32, u8, Vec<u8>)> {
    let mut inbox = FrameBatch::new(64, 9014);
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || host.recv_batch(&mut inbox, Some(left)).unwrap() == 0 {
            break;
        }
        for f in inbox.iter() {
            let f = Frame::parse(f).unwrap();
            let (status, data) = match f.body {
                Body::Ata { header, data } => (header.cmd_status, data.to_vec()),
                _ => (0, Vec::new()),
            };
            got.push((f.header.tag(), status, data));
        }
    }
    got
}

fn send(host: &mut MemoryPort, frames: Vec<Emit<'_>>) {
    let mut out = FrameBatch::new(frames.len(), 9014);
    for f in frames {
        assert!(out.push_with(f));
    }
    assert_eq!(host.send_batch(&out).unwrap(), out.len());
}

/// While the backend is busy with a read, the reads and the query behind it are answered.
#[test]
fn requests_behind_a_slow_read_are_answered_meanwhile() {
    let gated = Arc::new(Gated::new(1 << 20, 0));
    let (mut host, stop, thread) = serve(Arc::clone(&gated), 4);
    let mut frames: Vec<Emit<'_>> = vec![Box::new(ata(1, AtaRepr::read(0, 8, true), &[]))];
    for tag in 2..10u32 {
        frames.push(Box::new(ata(tag, AtaRepr::read(u64::from(tag) * 64, 8, true), &[])));
    }
    frames.push(Box::new(config(10)));
    send(&mut host, frames);
    // Reads that went to the worker at the gate wait there too.
    let early = answers(&mut host, 9, Duration::from_secs(1));
    let tags: Vec<u32> = early.iter().map(|a| a.0).collect();
    assert!(tags.contains(&10), "the query is answered meanwhile: {tags:?}");
    assert!(tags.len() >= 6 && !tags.contains(&1), "most reads are answered meanwhile: {tags:?}");
    assert!(gated.waiting.load(Ordering::SeqCst), "the slow read is at the gate");
    gated.open();
    let rest = answers(&mut host, 10 - early.len(), Duration::from_secs(3));
    assert_eq!(rest.len(), 10 - early.len());
    let slow = rest.iter().find(|a| a.0 == 1).expect("the slow read is answered once done");
    assert_eq!((slow.1, slow.2.len()), (AtaStatus::DRDY.bits(), 8 * 512));
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}

/// A write sent again while the first copy is still being written waits for it: an answer
/// to the second copy would let the initiator write those sectors anew, and the late first
/// copy would then overwrite the newer data.
#[test]
fn a_retransmitted_write_waits_for_the_copy_in_progress() {
    let gated = Arc::new(Gated::new(1 << 20, 8 * 512));
    let (mut host, stop, thread) = serve(Arc::clone(&gated), 8);
    let old = vec![0x0Au8; 4 * 512];
    send(&mut host, vec![Box::new(ata(1, AtaRepr::write(8, 4, true), &old))]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gated.waiting.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The same write again, and other writes that go to every worker.
    let mut frames: Vec<Emit<'_>> = vec![Box::new(ata(1, AtaRepr::write(8, 4, true), &old))];
    for tag in 2..40u32 {
        frames.push(Box::new(ata(tag, AtaRepr::write(u64::from(tag) * 64, 4, true), &old)));
    }
    send(&mut host, frames);
    // Those that went to the worker at the gate wait there too.
    let others = answers(&mut host, 38, Duration::from_secs(1));
    assert!(others.len() >= 20, "most other writes are answered meanwhile: {}", others.len());
    assert!(others.iter().all(|a| a.0 != 1), "no answer to either copy while the first is at the gate");
    gated.open();
    let rest = answers(&mut host, 40 - others.len(), Duration::from_secs(3));
    assert_eq!(rest.len(), 40 - others.len());
    assert_eq!(rest.iter().filter(|a| a.0 == 1).count(), 2, "both copies answered once written");
    // The initiator, answered, writes the sectors anew; they keep the new data.
    let new = vec![0x0Bu8; 4 * 512];
    send(&mut host, vec![Box::new(ata(50, AtaRepr::write(8, 4, true), &new))]);
    assert_eq!(answers(&mut host, 1, Duration::from_secs(3)).len(), 1);
    send(&mut host, vec![Box::new(ata(51, AtaRepr::read(8, 4, true), &[]))]);
    let read = answers(&mut host, 1, Duration::from_secs(3));
    assert!(read[0].2 == new);
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}

/// A mixed burst answered by I/O threads gets the answers the server gives by itself, and
/// leaves the same bytes behind.
#[test]
fn io_threads_answer_as_the_server_does_by_itself() {
    let run = |threads: usize| {
        let image: Vec<u8> = (0..2048u32).flat_map(|i| [i as u8; 512]).collect();
        let (mut host, stop, thread) = serve(MemoryBackend::from_vec(image), threads);
        let data: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i ^ 0x5A; 17 * 512]).collect();
        let mut frames: Vec<Emit<'_>> = Vec::new();
        for i in 0..32u32 {
            let lba = u64::from(i) * 40;
            frames.push(Box::new(ata(i * 4, AtaRepr::write(lba, 17, true), &data[i as usize])));
            frames.push(Box::new(ata(i * 4 + 1, AtaRepr::read(lba + 20, 17, true), &[])));
            // Past the end: refused by the engine, not by a worker.
            frames.push(Box::new(ata(
                i * 4 + 2,
                AtaRepr::read(2048 - 8 + u64::from(i % 2) * 8, 17, true),
                &[],
            )));
            frames.push(Box::new(ata(i * 4 + 3, AtaRepr::command(AtaCommand::FlushCacheExt, 0), &[])));
        }
        send(&mut host, frames);
        let mut got = answers(&mut host, 128, Duration::from_secs(5));
        got.sort_by_key(|a| a.0);
        stop.store(true, Ordering::Relaxed);
        let export = thread.join().unwrap();
        let bytes = export.lock().unwrap().backend().snapshot();
        (got, bytes)
    };
    let (alone, alone_bytes) = run(0);
    let (threaded, threaded_bytes) = run(3);
    assert_eq!(alone.len(), 128);
    assert!(alone == threaded, "the same answers");
    assert!(alone_bytes == threaded_bytes, "the same bytes written");
}

/// Memory that notes which thread does each read, and takes `delay` over each.
struct Noting {
    inner: MemoryBackend,
    threads: Mutex<Vec<String>>,
    delay: Mutex<Duration>,
}

impl Backend for Noting {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        self.threads.lock().unwrap().push(name);
        std::thread::sleep(*self.delay.lock().unwrap());
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// At queue depth 1 on a quick backend the serving thread does the I/O itself, sparing the
/// wake-up of a worker; a slow I/O sends the next ones back to the workers.
#[test]
fn a_lone_request_on_a_quick_backend_is_done_by_the_serving_thread() {
    let noting = Arc::new(Noting {
        inner: MemoryBackend::new(1 << 20),
        threads: Mutex::new(Vec::new()),
        delay: Mutex::new(Duration::ZERO),
    });
    let (target, mut host) = memory::pair(9000, T, I);
    let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), Arc::clone(&noting))));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name("serving".into())
        .spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut server = Server::new(target, vec![export]);
                server.set_io_threads(2).unwrap();
                server.run(&stop).unwrap();
            }
        })
        .unwrap();
    let mut read_alone = |tag: u32| {
        send(&mut host, vec![Box::new(ata(tag, AtaRepr::read(u64::from(tag), 1, true), &[]))]);
        assert_eq!(answers(&mut host, 1, Duration::from_secs(3)).len(), 1);
        noting.threads.lock().unwrap().last().cloned().unwrap()
    };
    assert!(read_alone(1).starts_with("aoe-io-"), "a worker, while I/O time is unknown");
    for tag in 2..10 {
        assert_eq!(read_alone(tag), "serving", "quick I/O, nothing else in progress");
    }
    *noting.delay.lock().unwrap() = Duration::from_millis(5);
    assert_eq!(read_alone(10), "serving");
    assert!(read_alone(11).starts_with("aoe-io-"), "I/O is slow now");
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}

/// The same write sent again through another interface (as the Linux driver does with a
/// target it finds slow) waits for the copy still being written through the first: once
/// answered, the initiator may write those sectors anew, and the old copy must not land on
/// top.
#[test]
fn a_write_sent_again_through_another_interface_waits_for_the_first_copy() {
    let gated = Arc::new(Gated::new(1 << 20, 8 * 512));
    let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), Arc::clone(&gated))));
    let stop = Arc::new(AtomicBool::new(false));
    let mut hosts = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (target, host) = memory::pair(9000, T, I);
        hosts.push(host);
        let (export, stop) = (Arc::clone(&export), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut server = Server::new(target, vec![export]);
            server.set_io_threads(4).unwrap();
            server.run(&stop).unwrap();
        }));
    }
    let old = vec![0x0Au8; 4 * 512];
    send(&mut hosts[0], vec![Box::new(ata(1, AtaRepr::write(8, 4, true), &old))]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gated.waiting.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    send(&mut hosts[1], vec![Box::new(ata(1, AtaRepr::write(8, 4, true), &old))]);
    assert!(answers(&mut hosts[1], 1, Duration::from_millis(300)).is_empty(), "the copy waits its turn");
    gated.open();
    assert_eq!(answers(&mut hosts[0], 1, Duration::from_secs(3)).len(), 1);
    assert_eq!(answers(&mut hosts[1], 1, Duration::from_secs(3)).len(), 1);
    let new = vec![0x0Bu8; 4 * 512];
    send(&mut hosts[1], vec![Box::new(ata(2, AtaRepr::write(8, 4, true), &new))]);
    assert_eq!(answers(&mut hosts[1], 1, Duration::from_secs(3)).len(), 1);
    send(&mut hosts[0], vec![Box::new(ata(3, AtaRepr::read(8, 4, true), &[]))]);
    let read = answers(&mut hosts[0], 1, Duration::from_secs(3));
    assert!(read[0].2 == new, "the newer write stays");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}
