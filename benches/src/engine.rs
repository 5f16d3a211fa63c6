//! The target engine alone: [`Export::handle`] over a [`MemoryBackend`], fed prepared
//! request frames. No transport, no threads: what one request costs the engine itself.
//!
//! ```
//! use aoe_benches::client::Op;
//! use aoe_benches::engine::EngineRig;
//!
//! let mut rig = EngineRig::new(Op::Read, 17, 64);
//! let answer_len = rig.handle_next();
//! assert_eq!(answer_len, 36 + 17 * 512);
//! ```

use aoe_proto::{AtaRepr, BodyRepr, FrameRepr, HeaderRepr, MacAddr, SECTOR_SIZE};
use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig, Port};

use crate::client::Op;

/// MTU the rig's port has: 17 sectors per frame.
pub const MTU: usize = 9000;
const TARGET: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const INITIATOR: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
/// Size of the memory disk: 64 MiB.
pub const DISK_BYTES: usize = 64 << 20;

/// An export on a memory disk with a ring of request frames to feed it.
pub struct EngineRig {
    export: Export<MemoryBackend>,
    port: Port,
    requests: Vec<Vec<u8>>,
    next: usize,
    out: Vec<u8>,
}

impl EngineRig {
    /// `frames` distinct requests (consecutive LBAs) of `op` with `sectors` sectors each.
    pub fn new(op: Op, sectors: u8, frames: usize) -> Self {
        let export = Export::new(ExportConfig::new(1, 0), MemoryBackend::new(DISK_BYTES));
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
        EngineRig { export, port, requests, next: 0, out: vec![0u8; 14 + MTU] }
    }

    /// Hands the next request of the ring to the engine; returns the answer's length.
    ///
    /// # Panics
    /// If the engine does not answer, or answers with an error.
    pub fn handle_next(&mut self) -> usize {
        let request = &self.requests[self.next];
        self.next = (self.next + 1) % self.requests.len();
        let len = self.export.handle(&self.port, request, &mut self.out).expect("an answer");
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
        for op in [Op::Read, Op::Write] {
            let mut rig = EngineRig::new(op, 17, 64);
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
    }
}
