//! The serving loop over the in-memory link, on a file in the temporary directory: a batch
//! of 64 writes of 17 sectors each, to adjacent sectors (one vectored write for the batch)
//! and to every other 17-sector block (no two adjacent: one write each), in batches per
//! second. The ratio of the two is what coalescing adjacent writes saves.

use std::time::Duration;

use aoe_proto::{AtaRepr, BodyRepr, FrameRepr, HeaderRepr, MacAddr, SECTOR_SIZE};
use aoe_target::backend::{FileBackend, FileOptions};
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::{Server, BATCH_FRAMES};
use aoe_testkit::data::TempImage;
use aoe_transport::memory::{self, MemoryPort};
use aoe_transport::{FrameBatch, Transport};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const TARGET: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const HOST: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SECTORS: u8 = 17;
const DISK: usize = 64 << 20;

/// A server on a file, the host port that talks to it, and a batch of write requests.
struct Rig {
    server: Server<MemoryPort, FileBackend>,
    host: MemoryPort,
    requests: FrameBatch,
    answers: FrameBatch,
    _image: TempImage,
}

impl Rig {
    /// Writes of [`SECTORS`] sectors, `stride` blocks of them apart (1: adjacent).
    fn new(stride: u64) -> Rig {
        let image = TempImage::zeroed(DISK).expect("a file in the temporary directory");
        let backend = FileBackend::open(image.path(), FileOptions::default()).expect("opening it");
        let export =
            std::sync::Arc::new(std::sync::Mutex::new(Export::new(ExportConfig::new(1, 0), backend)));
        let (port, host) = memory::pair(9000, TARGET, HOST);
        let server = Server::new(port, vec![export]);
        let data = vec![0x5Au8; usize::from(SECTORS) * SECTOR_SIZE];
        let mut requests = FrameBatch::new(BATCH_FRAMES, 9014);
        for i in 0..BATCH_FRAMES as u64 {
            let lba = i * stride * u64::from(SECTORS);
            requests.push_with(|buf| {
                FrameRepr {
                    dst: TARGET,
                    src: HOST,
                    header: HeaderRepr::request(1, 0, i as u32),
                    body: BodyRepr::Ata { header: AtaRepr::write(lba, SECTORS, true), data: &data },
                }
                .emit_padded(buf)
                .expect("a write fits the frame")
            });
        }
        Rig { server, host, requests, answers: FrameBatch::new(BATCH_FRAMES, 9014), _image: image }
    }

    /// One batch in, its answers out.
    fn exchange(&mut self) {
        self.host.send_batch(&self.requests).expect("sending");
        let mut served = 0;
        while served < BATCH_FRAMES {
            served += self.server.poll(Some(Duration::from_secs(1))).expect("serving");
        }
        let mut answered = 0;
        while answered < BATCH_FRAMES {
            answered +=
                self.host.recv_batch(&mut self.answers, Some(Duration::from_secs(1))).expect("answers");
        }
    }
}

fn server(c: &mut Criterion) {
    let mut group = c.benchmark_group("server");
    group.throughput(Throughput::Elements(BATCH_FRAMES as u64));
    for (name, stride) in [("adjacent_writes_64x17", 1), ("scattered_writes_64x17", 2)] {
        let mut rig = Rig::new(stride);
        group.bench_function(name, |b| b.iter(|| rig.exchange()));
    }
    group.finish();
}

criterion_group!(benches, server);
criterion_main!(benches);
