//! The target engine alone: 17-sector reads and writes through `Export::handle` over a
//! memory backend, and reads answered with tails of a mapped file (`SectorIo::tail`), in
//! requests per second, and the allocations each request costs.

use aoe_benches::alloc_count::{self, CountingAlloc};
use aoe_benches::client::Op;
use aoe_benches::engine::EngineRig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Prints the allocations per request on each path (0 is the goal; the unit test in
/// `aoe_benches::engine` asserts it).
fn report_allocations() {
    let rigs = [("read", EngineRig::new(Op::Read, 17, 64)), ("write", EngineRig::new(Op::Write, 17, 64))];
    let mapped = EngineRig::mapped(Op::Read, 17, 64).expect("a mapped file in the temporary directory");
    for (name, mut rig) in rigs.into_iter().chain([("read_mapped", mapped)]) {
        for _ in 0..128 {
            rig.handle_next();
        }
        let requests = 10_000u64;
        let (_, n) = alloc_count::count(|| {
            for _ in 0..requests {
                std::hint::black_box(rig.handle_next());
            }
        });
        println!("engine/{name}_17_sectors: {} allocations per request", n as f64 / requests as f64);
    }
}

fn engine(c: &mut Criterion) {
    report_allocations();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    for (name, op) in [("read_17_sectors", Op::Read), ("write_17_sectors", Op::Write)] {
        let mut rig = EngineRig::new(op, 17, 64);
        group.bench_function(name, |b| b.iter(|| std::hint::black_box(rig.handle_next())));
    }
    let mut rig = EngineRig::mapped(Op::Read, 17, 64).expect("a mapped file in the temporary directory");
    group.bench_function("read_17_sectors_mapped", |b| b.iter(|| std::hint::black_box(rig.handle_next())));
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
