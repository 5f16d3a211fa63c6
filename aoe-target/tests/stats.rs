//! The counters a server keeps while it serves over the in-memory link, with sector I/O done
//! inline and on I/O threads: bytes, requests by command, ignored frames, and a backend that
//! fails a chosen range (each failure an ATA error and a backend error of its op).

use std::io;
use std::time::Duration;

use aoe_proto::ata::AtaStatus;
use aoe_proto::{AtaRepr, Body, BodyRepr, Frame, FrameRepr, HeaderRepr, MacAddr};
use aoe_target::backend::{Backend, MemoryBackend};
use aoe_target::export::{Command, Export, ExportConfig, IgnoreReason};
use aoe_target::server::Server;
use aoe_transport::memory::{self, MemoryPort};
use aoe_transport::{FrameBatch, Transport};

const T: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const I: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);

/// Memory whose bytes in `from..to` fail to read (EIO) and to write (ENOSPC).
struct FailingRange {
    inner: MemoryBackend,
    from: u64,
    to: u64,
}

impl FailingRange {
    fn hits(&self, offset: u64, len: usize) -> bool {
        offset < self.to && offset + len as u64 > self.from
    }
}

impl Backend for FailingRange {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.hits(offset, buf.len()) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.hits(offset, buf.len()) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

fn send(host: &mut MemoryPort, frames: &[(MacAddr, u32, AtaRepr, Vec<u8>)]) {
    let mut out = FrameBatch::new(64, 9014);
    for (src, tag, header, data) in frames {
        out.push_with(|buf| {
            FrameRepr {
                dst: T,
                src: *src,
                header: HeaderRepr::request(1, 0, *tag),
                body: BodyRepr::Ata { header: *header, data },
            }
            .emit_padded(buf)
            .unwrap()
        });
    }
    host.send_batch(&out).unwrap();
}

/// Every answer's tag and whether its ATA status has ERR, in the order received.
fn answers(host: &mut MemoryPort, want: usize) -> Vec<(u32, bool)> {
    let mut inbox = FrameBatch::new(64, 9014);
    let mut got = Vec::new();
    for _ in 0..100 {
        if got.len() >= want {
            break;
        }
        host.recv_batch(&mut inbox, Some(Duration::from_millis(50))).unwrap();
        for f in inbox.iter() {
            let f = Frame::parse(f).unwrap();
            let Body::Ata { header, .. } = f.body else { panic!("not ATA") };
            got.push((f.header.tag(), header.status().contains(AtaStatus::ERR)));
        }
    }
    got
}

fn counts_with(io_threads: usize) {
    let backend = FailingRange { inner: MemoryBackend::new(1 << 20), from: 64 << 10, to: 128 << 10 };
    let mut config = ExportConfig::new(1, 0);
    config.mask = vec![I];
    let export = Export::new(config, backend);
    let stats = std::sync::Arc::clone(export.stats());
    let shared = std::sync::Arc::new(std::sync::Mutex::new(export));
    let (port, mut host) = memory::pair(9000, T, I);
    let mut server = Server::new(port, vec![shared]);
    server.set_io_threads(io_threads).unwrap();
    let failing_lba = (64 << 10) / 512;
    send(
        &mut host,
        &[
            (I, 1, AtaRepr::read(0, 8, true), vec![]),
            (I, 2, AtaRepr::write(16, 2, true), vec![7; 1024]),
            (I, 3, AtaRepr::read(failing_lba, 2, true), vec![]),
            (I, 4, AtaRepr::write(failing_lba + 4, 1, true), vec![7; 512]),
            (OTHER, 5, AtaRepr::read(0, 1, true), vec![]),
        ],
    );
    assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap(), 5);
    let mut got = answers(&mut host, 4);
    got.sort();
    assert_eq!(got, [(1, false), (2, false), (3, true), (4, true)], "the failed I/O is answered with ERR");
    let s = stats.snapshot();
    assert_eq!(s.requests[Command::Read as usize], 2);
    assert_eq!(s.requests[Command::Write as usize], 2);
    assert_eq!((s.read_bytes, s.written_bytes), (8 * 512, 1024), "failed I/O moves no bytes");
    assert_eq!(s.backend_errors, [1, 1, 0], "one failed read, one failed write");
    assert_eq!(s.ata_errors, 2);
    assert_eq!(s.ignored[IgnoreReason::Mask as usize], 1, "the initiator outside the mask");
    assert_eq!((s.in_flight, s.latency_count()), (0, 4));
    // I/O threads count what they sent just after sending it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stats().snapshot().sent < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let served = server.stats().snapshot();
    assert_eq!((served.received, served.sent, served.send_failures), (5, 4, 0));
}

#[test]
fn counts_inline_io() {
    counts_with(0);
}

#[test]
fn counts_io_on_threads() {
    counts_with(2);
}
