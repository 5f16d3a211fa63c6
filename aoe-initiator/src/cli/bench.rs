//! `aoe bench`: sequential throughput and random-read IOPS of a disk, as a table.

use std::time::{Duration, Instant};

use super::direct::Direct;
use super::format::{self, Table};
use super::rng::Rng;
use super::{iface, BenchArgs, Cli, DiskName, Failure};
use crate::Device;

/// Default bytes of the sequential tests.
const DEFAULT_SIZE: u64 = 256 << 20;
/// Bytes per call in the sequential tests.
const CHUNK: usize = 8 << 20;
/// Sectors of one random read (4 KiB).
const RANDOM_SECTORS: u64 = 8;
/// The queue depths of the random-read tests.
const DEPTHS: [usize; 2] = [1, 32];

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Bytes of the sequential tests; `None` for the default.
    pub(crate) size: Option<u64>,
    /// Measure sequential writes too (overwrites the first `size` bytes).
    pub(crate) write: bool,
    /// How long each random-read test runs.
    pub(crate) seconds: Duration,
}

pub(crate) fn run(cli: &Cli, args: &BenchArgs) -> Result<(), Failure> {
    let names = iface::choose(&cli.ifaces)?;
    let plan = Plan { size: args.size, write: args.write, seconds: args.seconds };
    bench(cli, &names, args.disk, plan)
}

/// Measures `disk` through the interfaces `names` and prints the table.
pub(crate) fn bench(cli: &Cli, names: &[String], disk: DiskName, plan: Plan) -> Result<(), Failure> {
    let on = |e| Failure::disk(disk, e);
    let mut dev =
        Device::open(iface::open(names)?, disk.shelf, disk.slot, &cli.device_options()).map_err(on)?;
    let info = dev.info().clone();
    let size = plan.size.unwrap_or(DEFAULT_SIZE).min(dev.size_bytes());
    println!(
        "{disk}: {} via {}; {} sectors/frame, buffer count {}",
        format::bytes(info.size_bytes()),
        super::discover::paths(&info),
        info.sector_count.min(dev.session().config().max_sectors),
        info.buffer_count
    );
    let mut table = Table::new(&["TEST", "AMOUNT", "TIME", "RESULT"]).right(1).right(2);
    let mut buf = vec![0u8; CHUNK.min(size as usize).max(1)];

    let elapsed = sequential(size, buf.len(), |off, n| dev.read_at(&mut buf[..n], off)).map_err(on)?;
    table.row(vec![
        "sequential read".into(),
        format::bytes(size),
        format::secs(elapsed),
        format::mb_per_s(size, elapsed),
    ]);
    if plan.write {
        Rng::from_time().fill(&mut buf);
        let start = Instant::now();
        sequential(size, buf.len(), |off, n| dev.write_at(&buf[..n], off)).map_err(on)?;
        dev.flush().map_err(on)?;
        let elapsed = start.elapsed();
        table.row(vec![
            "sequential write + flush".into(),
            format::bytes(size),
            format::secs(elapsed),
            format::mb_per_s(size, elapsed),
        ]);
    } else {
        table.row(vec![
            "sequential write".into(),
            "-".into(),
            "-".into(),
            format!("skipped: --write runs it (overwrites the first {})", format::bytes(size)),
        ]);
    }
    let (window, max_sectors) = (dev.session().config().buffer_count, dev.session().config().max_sectors);
    drop(dev);

    let mut direct = Direct::with_target(iface::open(names)?, &info, cli.dead_timeout).map_err(on)?;
    let mut rng = Rng::from_time();
    for depth in DEPTHS {
        let run =
            direct.random_reads(depth, RANDOM_SECTORS, info.sectors, plan.seconds, &mut rng).map_err(on)?;
        table.row(vec![
            format!("random read 4 KiB, QD {depth}"),
            format!("{} reads", run.ops),
            format::secs(run.elapsed),
            format!("{:.0} IOPS, {} µs mean latency", run.iops(), run.mean_latency().as_micros()),
        ]);
    }
    print!("{}", table.render());
    let frames_per_read = RANDOM_SECTORS.div_ceil(u64::from(max_sectors.max(1)));
    if (DEPTHS[1] as u64) * frames_per_read > u64::from(window) {
        println!(
            "note: {disk} queues at most {window} frames, so the QD {} test had at most {window} in flight",
            DEPTHS[1]
        );
    }
    Ok(())
}

/// Calls `io(offset, len)` over `0..size` in pieces of at most `chunk` bytes; returns the
/// time it took.
fn sequential(
    size: u64,
    chunk: usize,
    mut io: impl FnMut(u64, usize) -> Result<(), crate::Error>,
) -> Result<Duration, crate::Error> {
    let start = Instant::now();
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(chunk as u64) as usize;
        io(done, n)?;
        done += n as u64;
    }
    Ok(start.elapsed())
}
