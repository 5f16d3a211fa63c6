//! The session's fast path does not allocate: once warmed up, submitting reads and writes,
//! emitting their frames and taking their answers performs no heap allocation at all.
//!
//! A counting global allocator sees every allocation of the thread while counting is on; the
//! target engine's work is done with counting off.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aoe_initiator::session::{Event, IoBuffers, OpId, Path, Reply, Request, Session, SessionConfig};
use aoe_proto::MacAddr;
use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig, Port, Received};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> T {
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    out
}

const OPS_IN_FLIGHT: usize = 4;
const SECTORS: u64 = 64;

/// One preallocated region per op in flight, chosen by op id.
struct Regions {
    write: Vec<u8>,
    read: Vec<Vec<u8>>,
}

impl IoBuffers for Regions {
    fn load(&mut self, _op: OpId, offset: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.write[offset..offset + out.len()]);
    }
    fn store(&mut self, op: OpId, offset: usize, data: &[u8]) {
        let buf = &mut self.read[op.0 as usize % OPS_IN_FLIGHT];
        buf[offset..offset + data.len()].copy_from_slice(data);
    }
}

#[test]
fn warmed_up_session_does_not_allocate() {
    let (host, target) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let mut export = Export::new(ExportConfig::new(1, 0), MemoryBackend::new(1 << 20));
    let port = Port::new(target, 9000);
    let mut cfg = SessionConfig::new(1, 0, vec![Path { link: 0, local: host, target }]);
    cfg.buffer_count = 16;
    cfg.max_sectors = 17;
    let mut session = Session::new(cfg).unwrap();
    let len = SECTORS as usize * 512;
    let mut regions = Regions {
        write: (0..len).map(|i| (i * 7) as u8).collect(),
        read: vec![vec![0u8; len]; OPS_IN_FLIGHT],
    };
    let mut frame = vec![0u8; 9014];
    let mut answer = vec![0u8; 9014];
    let now = Instant::now();

    let mut run = |ops: usize, session: &mut Session, regions: &mut Regions| -> usize {
        let mut submitted = 0;
        let mut completed = 0;
        let mut in_flight = 0;
        let mut t = now;
        while completed < ops {
            t += Duration::from_micros(10);
            counted(|| {
                while in_flight < OPS_IN_FLIGHT && submitted < ops {
                    let lba = ((submitted as u64 / 2) % 16) * SECTORS;
                    let req = if submitted % 2 == 0 {
                        Request::Write { lba, sectors: SECTORS }
                    } else {
                        Request::Read { lba, sectors: SECTORS }
                    };
                    session.submit(req);
                    submitted += 1;
                    in_flight += 1;
                }
            });
            while let Some(tx) = counted(|| session.poll_transmit(t, &mut frame, regions)) {
                let request = Received::parse(&frame[..tx.len]).unwrap();
                let outcome = export.handle(&port, &request, &mut answer).unwrap();
                let n = outcome.complete(export.backend(), &mut answer).unwrap().expect("an answer");
                counted(|| {
                    assert!(session.handle_frame(t, &answer[..n], regions));
                    while let Some(e) = session.poll_event() {
                        match e {
                            Event::Complete { result: Ok(Reply::Done), .. } => {
                                completed += 1;
                                in_flight -= 1;
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                });
            }
        }
        completed
    };

    assert_eq!(run(200, &mut session, &mut regions), 200);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(run(2000, &mut session, &mut regions), 2000);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(allocations, 0, "2000 ops of 64 sectors ({} frames) allocated", 2000 * 4);
    assert_eq!(regions.read[1], regions.write, "reads see the writes");
    assert!(session.stats().sent >= 2200 * 4);
}
