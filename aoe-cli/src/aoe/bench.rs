//! `aoe bench`: sequential throughput and random-read IOPS of a disk, as a table.

use std::time::{Duration, Instant};

use aoe_initiator::{Device, Error, Io};

use super::format::{self, Table};
use super::rng;
use super::{iface, BenchArgs, Cli, DiskName, Failure};

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
        rng::from_time().fill(&mut buf);
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
    let mut rng = rng::from_time();
    for depth in DEPTHS {
        let run = random_reads(&mut dev, depth, RANDOM_SECTORS, info.sectors, plan.seconds, &mut rng)
            .map_err(on)?;
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
    mut io: impl FnMut(u64, usize) -> Result<(), aoe_initiator::Error>,
) -> Result<Duration, aoe_initiator::Error> {
    let start = Instant::now();
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(chunk as u64) as usize;
        io(done, n)?;
        done += n as u64;
    }
    Ok(start.elapsed())
}

/// What [`random_reads`] measured.
struct RandomRun {
    /// Reads completed.
    ops: u64,
    /// From the first submission to the last completion.
    elapsed: Duration,
    /// Sum of the reads' times from submission to completion.
    latency: Duration,
}

impl RandomRun {
    /// Reads per second.
    fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Mean time from submission to completion.
    fn mean_latency(&self) -> Duration {
        self.latency.checked_div(self.ops.max(1) as u32).unwrap_or_default()
    }
}

/// Reads `block_sectors` sectors at random block-aligned places of the first
/// `span_sectors` sectors, keeping `depth` reads submitted, for `duration`; then waits for
/// the reads in flight. The session still caps frames in flight at the target's buffer
/// count. The buffers go round: a completed read's buffer carries the next one.
fn random_reads(
    dev: &mut Device,
    depth: usize,
    block_sectors: u64,
    span_sectors: u64,
    duration: Duration,
    rng: &mut rng::Rng,
) -> Result<RandomRun, Error> {
    let blocks = span_sectors / block_sectors.max(1);
    if blocks == 0 || depth == 0 {
        return Err(Error::Invalid("the disk is smaller than one block of the random-read test"));
    }
    let block = block_sectors * aoe_proto::SECTOR_SIZE as u64;
    let mut submitted = std::collections::HashMap::with_capacity(depth);
    let mut submit = |dev: &mut Device, buf: Vec<u8>, submitted: &mut std::collections::HashMap<_, _>| {
        let offset = rng.below(blocks) * block;
        let id = dev.submit(Io::Read { offset, buf })?;
        submitted.insert(id, Instant::now());
        Ok::<(), Error>(())
    };
    let start = Instant::now();
    let deadline = start + duration;
    for _ in 0..depth {
        submit(dev, vec![0; block as usize], &mut submitted)?;
    }
    let mut run = RandomRun { ops: 0, elapsed: Duration::ZERO, latency: Duration::ZERO };
    while !submitted.is_empty() {
        let Some(done) = dev.poll(None)? else {
            return Err(Error::BadAnswer("the device went idle before every read completed"));
        };
        done.result?;
        let now = Instant::now();
        if let Some(at) = submitted.remove(&done.id) {
            run.latency += now.saturating_duration_since(at);
            run.ops += 1;
        }
        if now < deadline {
            submit(dev, done.buf, &mut submitted)?;
        }
    }
    run.elapsed = start.elapsed();
    Ok(run)
}
