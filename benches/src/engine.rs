//! The target engine alone: [`Export::handle`] over a [`MemoryBackend`] with the sector I/O
//! done inline, or over a mapped file whose read answers leave their sectors in the mapping
//! ([`SectorIo::tail`](aoe_target::export::SectorIo::tail), [`EngineRig::mapped`]), fed prepared request frames, each parsed
//! once ([`Received::parse`]) as the server does. No transport, no threads: what one request
//! costs the engine itself.
//!
//! ```
//! use aoe_benches::client::Op;
//! use aoe_benches::engine::EngineRig;
//!
//! let mut rig = EngineRig::new(Op::Read, 17, 64);
//! let answer_len = rig.handle_next();
//! assert_eq!(answer_len, 36 + 17 * 512);
//! ```

use std::io;

use aoe_proto::{AtaFrame, AtaRepr, BodyRepr, FrameRepr, HeaderRepr, MacAddr, SECTOR_SIZE};
use aoe_target::backend::{Backend, FileBackend, FileOptions, MemoryBackend, Tail};
use aoe_target::export::{Export, ExportConfig, Outcome, Port, Received};
use aoe_testkit::data::TempImage;

use crate::client::Op;

/// MTU the rig's port has: 17 sectors per frame.
pub const MTU: usize = 9000;
const TARGET: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const INITIATOR: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
/// Size of the memory disk: 64 MiB.
pub const DISK_BYTES: usize = 64 << 20;

/// An export on a memory disk (or a mapped file) with a ring of request frames to feed it.
pub struct EngineRig {
    export: Export<Box<dyn Backend>>,
    port: Port,
    requests: Vec<Vec<u8>>,
    next: usize,
    out: Vec<u8>,
    /// The disk is a mapped file: reads are answered with tails.
    mapped: bool,
    /// Where the last read answer left its sectors.
    tail: Option<Tail>,
    /// Keeps the file of a mapped disk until the rig goes.
    _image: Option<TempImage>,
}

impl EngineRig {
    /// `frames` distinct requests (consecutive LBAs) of `op` with `sectors` sectors each.
    pub fn new(op: Op, sectors: u8, frames: usize) -> Self {
        Self::with_backend(Box::new(MemoryBackend::new(DISK_BYTES)), op, sectors, frames)
    }

    /// As [`new`](Self::new), on a file of [`DISK_BYTES`] in the temporary directory that
    /// the engine maps: read answers leave their sectors in the mapping
    /// ([`SectorIo::tail`](aoe_target::export::SectorIo::tail)), as the server sends them.
    pub fn mapped(op: Op, sectors: u8, frames: usize) -> io::Result<Self> {
        let image = TempImage::zeroed(DISK_BYTES)?;
        let file = FileBackend::open(image.path(), FileOptions::default())?;
        if file.mapping().is_none() {
            return Err(io::Error::other("the file could not be mapped"));
        }
        let mut rig = Self::with_backend(Box::new(file), op, sectors, frames);
        rig.mapped = true;
        rig._image = Some(image);
        Ok(rig)
    }

    fn with_backend(backend: Box<dyn Backend>, op: Op, sectors: u8, frames: usize) -> Self {
        let export = Export::new(ExportConfig::new(1, 0), backend);
        let port = Port::new(TARGET, MTU);
        let data = vec![0x5Au8; usize::from(sectors) * SECTOR_SIZE];
        let requests = (0..frames.max(1))
            .map(|i| {
                let lba = (i as u64 * u64::from(sectors)) % (DISK_BYTES / SECTOR_SIZE) as u64;
                let (header, data) = match op {
                    Op::Read => (AtaRepr::read(lba, sectors, true), &[][..]),
                    Op::Write => (AtaRepr::write(lba, sectors, true), &data[..]),
                };
                let repr = FrameRepr {
                    dst: TARGET,
                    src: INITIATOR,
                    header: HeaderRepr::request(1, 0, i as u32),
                    body: BodyRepr::Ata { header, data },
                };
                let mut buf = vec![0u8; 14 + MTU];
                let len = repr.emit_padded(&mut buf).expect("request fits the MTU");
                buf.truncate(len);
                buf
            })
            .collect();
        EngineRig {
            export,
            port,
            requests,
            next: 0,
            out: vec![0u8; 14 + MTU],
            mapped: false,
            tail: None,
            _image: None,
        }
    }

    /// Hands the next request of the ring to the engine; returns the answer's length (its
    /// tail included).
    ///
    /// # Panics
    /// If the engine does not answer, or answers with an error.
    pub fn handle_next(&mut self) -> usize {
        let request = &self.requests[self.next];
        self.next = (self.next + 1) % self.requests.len();
        let request = Received::parse(request).expect("an AoE frame");
        let outcome = self.export.handle(&self.port, &request, &mut self.out).expect("room for the answer");
        let backend = self.export.backend();
        self.tail = match outcome {
            Outcome::NeedsIo(io) if self.mapped => io.tail(backend),
            _ => None,
        };
        let len = match (&self.tail, outcome) {
            (Some(tail), _) => AtaFrame::HEADER_LEN + tail.len(),
            (None, outcome) => {
                outcome.complete(backend, &mut self.out).expect("room for the answer").expect("an answer")
            }
        };
        // Status byte 27: DRDY without ERR.
        assert_eq!(self.out[27] & 0x41, 0x40, "ATA error in the answer");
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_count;

    #[test]
    fn engine_allocates_nothing_per_request() {
        assert!(alloc_count::installed());
        let rigs = [Op::Read, Op::Write].map(|op| (op, EngineRig::new(op, 17, 64)));
        let mapped = (Op::Read, EngineRig::mapped(Op::Read, 17, 64).unwrap());
        for (op, mut rig) in rigs.into_iter().chain([mapped]) {
            // Warm up: first touches may grow lazily allocated state.
            for _ in 0..128 {
                rig.handle_next();
            }
            let requests = 10_000;
            let (_, allocations) = alloc_count::count(|| {
                for _ in 0..requests {
                    std::hint::black_box(rig.handle_next());
                }
            });
            let per_request = allocations as f64 / requests as f64;
            eprintln!("{op:?} 17 sectors: {per_request} allocations per request");
            assert_eq!(allocations, 0, "{op:?}: {allocations} allocations in {requests} requests");
        }
    }

    #[test]
    fn answers_carry_the_sectors() {
        let mut rig = EngineRig::new(Op::Read, 17, 4);
        assert_eq!(rig.handle_next(), 36 + 17 * 512);
        let mut rig = EngineRig::new(Op::Write, 17, 4);
        assert_eq!(rig.handle_next(), 60, "a write answer is headers only, padded");
        let mut rig = EngineRig::mapped(Op::Read, 17, 4).unwrap();
        assert_eq!(rig.handle_next(), 36 + 17 * 512, "headers, then the sectors as a tail");
        assert!(rig.tail.is_some());
    }
}
