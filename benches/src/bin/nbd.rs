//! `nbd`: `aoe nbd` against `aoe read` / `aoe write` on the same disk in the same run.
//!
//! aoe-target serves a file on /dev/shm in one private network namespace (veth, MTU 9000);
//! in the other, `aoe read e1.0 /dev/null` and `aoe write e1.0 FILE` measure the initiator
//! alone (their own summary line: the transfer, without discovery), and `nbdcopy` copies the
//! same bytes through `aoe nbd --unix` (wall time of the whole nbdcopy run). The two are
//! interleaved rep by rep; the table shows medians and the ratio. Needs root and nbdcopy;
//! skips otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aoe_benches::stats::Summary;
use aoe_testkit::data::{TempImage, MIB};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::find_program;
use aoe_testkit::process::{wait_until, Guarded};
use clap::Parser;

/// Benchmark `aoe nbd` (through nbdcopy) against `aoe read` and `aoe write` of the same disk.
#[derive(Debug, Parser)]
#[command(name = "nbd", version)]
struct Args {
    /// Disk size in MiB (a file on /dev/shm); every measurement moves all of it.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Directory holding the aoe and aoe-target binaries [default: this program's].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Measure reads only (writes overwrite the disk, a scratch file anyway).
    #[arg(long)]
    no_write: bool,
}

const LIMIT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(reason) = skip_reason() {
        println!("nbd: skipped: {reason}");
        return ExitCode::SUCCESS;
    }
    if args.reps == 0 || args.size == 0 {
        eprintln!("nbd: --reps and --size must be positive");
        return ExitCode::from(2);
    }
    let dir = args.bin_dir.clone().or_else(|| Some(std::env::current_exe().ok()?.parent()?.to_path_buf()));
    let Some(dir) = dir.filter(|d| d.join("aoe").exists() && d.join("aoe-target").exists()) else {
        eprintln!("nbd: no aoe and aoe-target binaries found; build them (cargo build --release -p aoe-cli) or pass --bin-dir");
        return ExitCode::from(2);
    };
    match run(&args, &dir) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nbd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and raw sockets)");
    }
    if find_program("ip").is_none() {
        return Some("needs `ip` (iproute2) on PATH");
    }
    if find_program("nbdcopy").is_none() {
        return Some("needs nbdcopy on PATH (apt-get install libnbd-bin)");
    }
    None
}

type Result<T> = std::result::Result<T, String>;

fn run(args: &Args, dir: &Path) -> Result<String> {
    let bytes = args.size * MIB;
    let aoe = dir.join("aoe").to_string_lossy().into_owned();
    let aoe_target = dir.join("aoe-target").to_string_lossy().into_owned();
    let image = TempImage::new(bytes, 0xBE7C).map_err(|e| e.to_string())?;
    let source = TempImage::new(bytes, 0x50C3).map_err(|e| e.to_string())?;
    let link = Link::new("aoenbdb", 9000).map_err(|e| e.to_string())?;
    let mut cmd = link.target.command(&aoe_target);
    cmd.args(["1", "0", link.target_if()]).arg(image.path()).env_remove("RUST_LOG");
    let target = Guarded::spawn(cmd).map_err(|e| e.to_string())?;
    let ready = format!("e1.0 on {} (", link.target_if());
    if !wait_until(Duration::from_secs(10), || target.stderr().contains(&ready)) {
        return Err(format!("aoe-target did not start: {}", target.stderr()));
    }
    let socket = std::env::temp_dir().join(format!("aoe-nbd-bench-{}.sock", std::process::id()));
    let mut cmd = link.initiator.command(&aoe);
    cmd.args(["nbd", "--unix"]).arg(&socket).arg("e1.0").env_remove("RUST_LOG");
    let nbd = Guarded::spawn(cmd).map_err(|e| e.to_string())?;
    let uri = format!("nbd+unix:///e1.0?socket={}", socket.display());
    if !wait_until(Duration::from_secs(20), || nbd.stdout().contains("serving e1.0")) {
        return Err(format!("aoe nbd did not start: {}", nbd.stderr()));
    }
    let src = source.path().to_string_lossy().into_owned();
    let mut samples: [Vec<f64>; 4] = Default::default();
    for rep in 0..args.reps {
        samples[0].push(aoe_mb_s(&link, &aoe, &["read", "e1.0", "/dev/null"])?);
        samples[1].push(nbdcopy_mb_s(&[&uri, "null:"], bytes)?);
        if !args.no_write {
            samples[2].push(aoe_mb_s(&link, &aoe, &["write", "e1.0", &src])?);
            samples[3].push(nbdcopy_mb_s(&["--flush", &src, &uri], bytes)?);
        }
        eprintln!("nbd: rep {} of {} done", rep + 1, args.reps);
    }
    drop(nbd);
    drop(target);
    let _ = std::fs::remove_file(&socket);

    let mut out = format!(
        "nbd: {} MiB disk on /dev/shm served by aoe-target, veth MTU 9000, {} reps \
         (MB/s: median, min..max; ratio: nbdcopy / aoe)\n",
        args.size, args.reps
    );
    out += &format!(
        "{:<10} {:>24} {:>28} {:>8} {:>14}\n",
        "direction", "aoe read/write", "nbdcopy via aoe nbd", "ratio", "per-rep ratio"
    );
    let rows: &[(&str, usize)] = if !args.no_write { &[("read", 0), ("write", 2)] } else { &[("read", 0)] };
    for &(name, i) in rows {
        let (Some(a), Some(n)) = (Summary::of(&samples[i]), Summary::of(&samples[i + 1])) else { continue };
        // The two runs of one rep are neighbours in time: their ratio is less exposed to the
        // load of a shared machine than the ratio of the medians.
        let ratios: Vec<f64> = samples[i].iter().zip(&samples[i + 1]).map(|(a, n)| 100.0 * n / a).collect();
        let per_rep = Summary::of(&ratios).map_or(f64::NAN, |r| r.median);
        out += &format!(
            "{:<10} {:>24} {:>28} {:>7.0}% {:>13.0}%\n",
            name,
            format!("{:.0} ({:.0}..{:.0})", a.median, a.min, a.max),
            format!("{:.0} ({:.0}..{:.0})", n.median, n.min, n.max),
            100.0 * n.median / a.median,
            per_rep
        );
    }
    Ok(out)
}

/// Runs `aoe ARGS` in the initiator namespace and reads the MB/s of its summary line.
fn aoe_mb_s(link: &Link, aoe: &str, args: &[&str]) -> Result<f64> {
    let out = link.initiator.run(aoe, args, LIMIT).map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("aoe {}: {}", args.join(" "), err.trim()));
    }
    let line =
        err.lines().rev().find(|l| l.ends_with(" MB/s")).ok_or_else(|| format!("no summary in {err:?}"))?;
    let value = line.trim_end_matches(" MB/s").rsplit(' ').next().unwrap_or_default();
    value.parse().map_err(|_| format!("cannot read MB/s in {line:?}"))
}

/// Runs `nbdcopy ARGS` and returns `bytes` over its wall time, in MB/s.
fn nbdcopy_mb_s(args: &[&str], bytes: usize) -> Result<f64> {
    let start = Instant::now();
    let out =
        std::process::Command::new("nbdcopy").args(args).output().map_err(|e| format!("nbdcopy: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("nbdcopy {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(bytes as f64 / secs / 1e6)
}
