//! The `attach` tool: a disk through `aoe attach --loop` (FUSE file, loop device, O_DIRECT)
//! beside `aoe bench` (the initiator alone) on the same aoe-target in the same run.
//!
//! One aoe-target serves a file on tmpfs over a veth pair at MTU 9000. Each repetition runs
//! `aoe bench --write` against it, then attaches the disk (once per attach variant) and drives
//! the loop device with O_DIRECT from this process: sequential reads and writes (+ fsync) of
//! 8 MiB calls, and 4 KiB random reads from 1 and 32 threads. The table gives medians, their
//! spread and each variant's ratio to `aoe bench`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_testkit::netns::Link;
use aoe_testkit::process::{wait_until, Guarded};

use crate::stats::Summary;

/// Bytes per sequential call, as `aoe bench` reads and writes.
const CHUNK: usize = 8 << 20;
/// Bytes of a random read.
const BLOCK: usize = 4096;

/// What is measured, in table order.
pub const CASES: [&str; 4] =
    ["seq read (MB/s)", "seq write + fsync (MB/s)", "rand read 4K QD1 (IOPS)", "rand read 4K QD32 (IOPS)"];

/// How the run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `aoe` program.
    pub aoe: PathBuf,
    /// The `aoe-target` program.
    pub aoe_target: PathBuf,
    /// Disk size in bytes (the image on tmpfs).
    pub size: u64,
    /// Bytes of the sequential tests.
    pub seq_bytes: u64,
    /// Seconds of each random-read test.
    pub seconds: f64,
    /// Repetitions.
    pub reps: usize,
    /// The target's buffer count (frames it queues).
    pub buffer_count: u16,
    /// `aoe attach` flag sets to measure, each one column (empty: the defaults).
    pub variants: Vec<Vec<String>>,
}

/// `figures[column][case]`: column 0 is `aoe bench`, then one per attach variant.
pub type Figures = Vec<Vec<Vec<f64>>>;

/// Runs everything; returns the figures.
pub fn run(opts: &Options) -> io::Result<Figures> {
    let link = Link::new("aoebatt", 9000)?;
    let image = aoe_testkit::data::TempImage::zeroed(opts.size as usize)?;
    let mut target = {
        let mut cmd = link.target.command(opts.aoe_target.to_str().unwrap_or("aoe-target"));
        cmd.args(["-b", &opts.buffer_count.to_string(), "1", "0", link.target_if()]).arg(image.path());
        Guarded::spawn(cmd)?
    };
    if !wait_until(Duration::from_secs(10), || target.stderr().contains("e1.0 on ")) {
        return Err(io::Error::other(format!("aoe-target did not start: {}", target.stderr())));
    }
    let mut figures = vec![vec![Vec::new(); CASES.len()]; 1 + opts.variants.len()];
    let mount = std::env::temp_dir().join(format!("aoe-bench-attach-{}", std::process::id()));
    std::fs::create_dir_all(&mount)?;
    let runtime = mount.with_extension("run");
    for rep in 0..opts.reps {
        let raw = raw_bench(opts, &link)?;
        report(rep, opts.reps, "aoe bench", &raw);
        push(&mut figures[0], &raw);
        for (v, flags) in opts.variants.iter().enumerate() {
            let attach = Attached::start(opts, &link, flags, &mount, &runtime)?;
            let result = drive(&attach.device, opts);
            drop(attach);
            let got = result?;
            report(rep, opts.reps, &variant_name(flags), &got);
            push(&mut figures[1 + v], &got);
        }
        if target.try_wait()?.is_some() {
            return Err(io::Error::other(format!("aoe-target exited: {}", target.stderr())));
        }
    }
    let _ = std::fs::remove_dir(&mount);
    let _ = std::fs::remove_dir_all(&runtime);
    target.terminate()?;
    Ok(figures)
}

/// A column's name.
pub fn variant_name(flags: &[String]) -> String {
    if flags.is_empty() {
        "aoe attach --loop".into()
    } else {
        format!("aoe attach --loop {}", flags.join(" "))
    }
}

fn push(column: &mut [Vec<f64>], got: &[f64; 4]) {
    for (c, x) in got.iter().enumerate() {
        column[c].push(*x);
    }
}

fn report(rep: usize, reps: usize, what: &str, got: &[f64; 4]) {
    eprintln!(
        "attach: rep {}/{reps} {what:<40} seq read {:.0} MB/s, seq write {:.0} MB/s, QD1 {:.0} IOPS, QD32 {:.0} IOPS",
        rep + 1,
        got[0],
        got[1],
        got[2],
        got[3]
    );
}

/// `aoe bench --write` in the initiator's namespace, its four figures parsed from its table.
fn raw_bench(opts: &Options, link: &Link) -> io::Result<[f64; 4]> {
    let aoe = opts.aoe.to_str().unwrap_or("aoe");
    let (size, secs) = (opts.seq_bytes.to_string(), format!("{}", opts.seconds));
    let args = ["-i", link.initiator_if(), "bench", "--write", "--size", &size, "--seconds", &secs, "e1.0"];
    let out = link.initiator.run(aoe, &args, Duration::from_secs(300))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(io::Error::other(format!("aoe bench failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let figure = |row: &str, unit: &str| -> io::Result<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(row))
            .ok_or_else(|| io::Error::other(format!("no {row:?} in {text}")))?;
        let at = line.find(unit).ok_or_else(|| io::Error::other(format!("no {unit} in {line:?}")))?;
        let number = line[..at].split_whitespace().last().unwrap_or("");
        number.parse().map_err(|_| io::Error::other(format!("bad figure in {line:?}")))
    };
    Ok([
        figure("sequential read", " MB/s")?,
        figure("sequential write + flush", " MB/s")?,
        figure("random read 4 KiB, QD 1 ", " IOPS")?,
        figure("random read 4 KiB, QD 32", " IOPS")?,
    ])
}

/// A running `aoe attach --loop`, detached (SIGTERM) on drop.
struct Attached {
    process: Guarded,
    device: PathBuf,
}

impl Attached {
    fn start(
        opts: &Options,
        link: &Link,
        flags: &[String],
        mount: &Path,
        runtime: &Path,
    ) -> io::Result<Attached> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", link.initiator.name()))
            .arg(&opts.aoe)
            .args(["-i", link.initiator_if(), "attach", "--loop"])
            .args(flags)
            .arg("e1.0")
            .arg(mount)
            .env("AOE_RUNTIME_DIR", runtime);
        let mut process = Guarded::spawn(cmd)?;
        let ready =
            |p: &mut Guarded| p.stdout().contains("e1.0: /dev/") || matches!(p.try_wait(), Ok(Some(_)));
        wait_until(Duration::from_secs(30), || ready(&mut process));
        let out = process.stdout();
        let device =
            out.lines().find_map(|l| l.strip_prefix("e1.0: ")).map(PathBuf::from).ok_or_else(|| {
                io::Error::other(format!("aoe attach did not get ready: {out} {}", process.stderr()))
            })?;
        Ok(Attached { process, device })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.process.terminate();
    }
}

/// A buffer aligned for O_DIRECT.
struct Aligned {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let bytes = vec![0x5a; len + 4096];
        let start = bytes.as_ptr().align_offset(4096);
        Aligned { bytes, start, len }
    }

    fn get(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

fn open_direct(device: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(write).custom_flags(libc::O_DIRECT).open(device)
}

/// The four figures through `device`.
fn drive(device: &Path, opts: &Options) -> io::Result<[f64; 4]> {
    let file = open_direct(device, true)?;
    let size = file.metadata()?.len().max(opts.size);
    let seq = opts.seq_bytes.min(size) / CHUNK as u64 * CHUNK as u64;
    let mut buf = Aligned::new(CHUNK);
    let start = Instant::now();
    for off in (0..seq).step_by(CHUNK) {
        file.read_exact_at(buf.get(), off)?;
    }
    let read = seq as f64 / start.elapsed().as_secs_f64() / 1e6;
    let start = Instant::now();
    for off in (0..seq).step_by(CHUNK) {
        file.write_all_at(buf.get(), off)?;
    }
    file.sync_all()?;
    let write = seq as f64 / start.elapsed().as_secs_f64() / 1e6;
    let span = opts.size / BLOCK as u64;
    let qd1 = random_reads(device, 1, span, opts.seconds)?;
    let qd32 = random_reads(device, 32, span, opts.seconds)?;
    Ok([read, write, qd1, qd32])
}

/// 4 KiB O_DIRECT reads at random block offsets of the first `blocks` blocks from
/// `threads` threads for `seconds`; reads per second.
fn random_reads(device: &Path, threads: usize, blocks: u64, seconds: f64) -> io::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, done, device) = (Arc::clone(&stop), Arc::clone(&done), device.to_path_buf());
            std::thread::spawn(move || -> io::Result<()> {
                let file = open_direct(&device, false)?;
                let mut buf = Aligned::new(BLOCK);
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    file.read_exact_at(buf.get(), (x % blocks) * BLOCK as u64)?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| io::Error::other("a reader panicked"))??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// The table: a legend, then one row per case with each column's median (min–max) and
/// each attach column's median over `aoe bench`'s.
pub fn table(opts: &Options, figures: &Figures) -> String {
    let mut names = vec!["aoe bench (initiator alone)".to_owned()];
    names.extend(opts.variants.iter().map(|v| variant_name(v)));
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        out.push_str(&format!("#{i}: {n}\n"));
    }
    out.push_str(&format!("{:<26}", "case"));
    for i in 0..names.len() {
        out.push_str(&format!(" | {:>22}", format!("#{i}")));
    }
    for i in 1..names.len() {
        out.push_str(&format!(" | {:>6}", format!("#{i}/#0")));
    }
    out.push('\n');
    for (c, case) in CASES.iter().enumerate() {
        out.push_str(&format!("{case:<26}"));
        let s: Vec<Option<Summary>> = figures.iter().map(|f| Summary::of(&f[c])).collect();
        for x in &s {
            let cell = x.map_or("-".into(), |x| format!("{:.0} ({:.0}–{:.0})", x.median, x.min, x.max));
            out.push_str(&format!(" | {cell:>22}"));
        }
        let raw = s[0].map_or(f64::NAN, |x| x.median);
        for x in &s[1..] {
            out.push_str(&format!(" | {:>6.2}", x.map_or(f64::NAN, |x| x.median) / raw));
        }
        out.push('\n');
    }
    out
}
