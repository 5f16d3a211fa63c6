//! Durability: a FLUSH CACHE answer leaves the target only after the backend's sync has
//! returned, and a write answered before a flush came is in the backend before that sync
//! starts; with the I/O done by the serving thread and by I/O threads. A backend records
//! every call in one log with the host, which logs each answer as it arrives.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aoe_proto::ata::AtaStatus;
use aoe_proto::{AtaCommand, AtaRepr, Body, BodyRepr, Frame, FrameRepr, HeaderRepr, MacAddr};
use aoe_target::backend::{Backend, MemoryBackend};
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::Server;
use aoe_transport::memory;
use aoe_transport::{FrameBatch, Transport};

const T: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const I: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
/// How long the recording backend's sync takes: long enough that an answer sent before it
/// returned would arrive first.
const SYNC_TIME: Duration = Duration::from_millis(150);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Wrote(u64),
    SyncStarted,
    SyncReturned,
    Answered(u32),
}

/// Memory whose calls are logged; its sync is slow.
struct Recording {
    inner: MemoryBackend,
    log: Arc<Mutex<Vec<Event>>>,
}

impl Backend for Recording {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)?;
        self.log.lock().unwrap().push(Event::Wrote(offset / 512));
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.log.lock().unwrap().push(Event::SyncStarted);
        std::thread::sleep(SYNC_TIME);
        self.log.lock().unwrap().push(Event::SyncReturned);
        Ok(())
    }
}

fn request(tag: u32, header: AtaRepr, data: &[u8]) -> impl FnOnce(&mut [u8]) -> usize + '_ {
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

/// Writes at LBA 0..8 (tags 1 to 8), waits for their answers, then a flush (tag 100); the log.
fn writes_then_flush(threads: usize) -> Vec<Event> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let backend = Recording { inner: MemoryBackend::new(1 << 20), log: Arc::clone(&log) };
    let (target, mut host) = memory::pair(9000, T, I);
    let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), backend)));
    let stop = Arc::new(AtomicBool::new(false));
    let server = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut server = Server::new(target, vec![export]);
            server.set_io_threads(threads).unwrap();
            server.run(&stop).unwrap();
        }
    });

    let mut inbox = FrameBatch::new(64, 9014);
    let mut wait_for = |host: &mut memory::MemoryPort, tags: &[u32]| {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while seen.len() < tags.len() && Instant::now() < deadline {
            if host.recv_batch(&mut inbox, Some(Duration::from_millis(50))).unwrap() == 0 {
                continue;
            }
            for f in inbox.iter() {
                let f = Frame::parse(f).unwrap();
                let Body::Ata { header, .. } = f.body else { continue };
                assert_eq!(header.cmd_status, AtaStatus::DRDY.bits(), "tag {}", f.header.tag());
                log.lock().unwrap().push(Event::Answered(f.header.tag()));
                seen.push(f.header.tag());
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, tags, "every answer came");
    };

    let data = [0x5Au8; 512];
    let mut out = FrameBatch::new(8, 9014);
    for lba in 0..8u32 {
        out.push_with(request(lba + 1, AtaRepr::write(u64::from(lba), 1, true), &data));
    }
    host.send_batch(&out).unwrap();
    wait_for(&mut host, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let mut out = FrameBatch::new(1, 9014);
    out.push_with(request(100, AtaRepr::command(AtaCommand::FlushCacheExt, 0), &[]));
    host.send_batch(&out).unwrap();
    wait_for(&mut host, &[100]);

    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let log = log.lock().unwrap().clone();
    log
}

fn check(log: &[Event]) {
    let at = |e: &Event| log.iter().position(|x| x == e).unwrap_or_else(|| panic!("{e:?} not in {log:?}"));
    let (started, returned, answered) =
        (at(&Event::SyncStarted), at(&Event::SyncReturned), at(&Event::Answered(100)));
    assert!(returned < answered, "the flush was answered before the sync returned: {log:?}");
    for lba in 0..8 {
        assert!(
            at(&Event::Wrote(lba)) < started,
            "a write answered before the flush came was not in the backend before the sync: {log:?}"
        );
        assert!(
            at(&Event::Wrote(lba)) < at(&Event::Answered(lba as u32 + 1)),
            "a write was answered before it was done: {log:?}"
        );
    }
}

#[test]
fn a_flush_is_answered_after_the_sync_returned_by_the_serving_thread() {
    check(&writes_then_flush(0));
}

#[test]
fn a_flush_is_answered_after_the_sync_returned_by_io_threads() {
    check(&writes_then_flush(4));
}
