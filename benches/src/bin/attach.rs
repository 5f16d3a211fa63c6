//! `attach`: `aoe attach --loop` (FUSE file, loop device, O_DIRECT) beside `aoe bench` on the
//! same aoe-target in the same run. Needs root, /dev/fuse and loop devices; skips otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use aoe_benches::attach::{self, Options};
use clap::Parser;

/// Sequential MB/s and 4 KiB random-read IOPS at QD 1 and 32 through `aoe attach --loop`
/// with O_DIRECT, beside `aoe bench` (the initiator alone) on the same aoe-target.
#[derive(Debug, Parser)]
#[command(name = "attach", version)]
struct Args {
    /// Disk size in MiB (a file on tmpfs).
    #[arg(long, default_value_t = 512)]
    size: u64,
    /// MiB of the sequential tests.
    #[arg(long, default_value_t = 256)]
    seq: u64,
    /// Seconds of each random-read test.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// The target's buffer count.
    #[arg(long, default_value_t = 16)]
    buffer_count: u16,
    /// Also measure the disk file opened with FOPEN_DIRECT_IO (no page cache in the kernel).
    #[arg(long)]
    fuse_direct_io: bool,
    /// Also measure with this many FUSE threads (repeatable).
    #[arg(long, value_name = "N")]
    threads: Vec<usize>,
    /// The directory of the aoe and aoe-target binaries (default: this program's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("attach: skipped: needs root (network namespaces, raw sockets, FUSE, loop devices)");
        return ExitCode::SUCCESS;
    }
    for dev in ["/dev/fuse", "/dev/loop-control"] {
        if !std::path::Path::new(dev).exists() {
            println!("attach: skipped: needs {dev}");
            return ExitCode::SUCCESS;
        }
    }
    let dir = args.bin_dir.clone().or_else(|| std::env::current_exe().ok()?.parent().map(PathBuf::from));
    let Some(dir) = dir.filter(|d| d.join("aoe").exists() && d.join("aoe-target").exists()) else {
        eprintln!("attach: no aoe and aoe-target binaries next to this program; build them (cargo build --release -p aoe-cli) or pass --bin-dir");
        return ExitCode::from(2);
    };
    if args.reps == 0 || args.size == 0 || args.seq == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        eprintln!("attach: --reps, --size, --seq and --seconds must be positive");
        return ExitCode::from(2);
    }
    let mut variants = vec![Vec::new()];
    if args.fuse_direct_io {
        variants.push(vec!["--direct-io".to_owned()]);
    }
    for n in &args.threads {
        variants.push(vec!["--threads".to_owned(), n.to_string()]);
    }
    let opts = Options {
        aoe: dir.join("aoe"),
        aoe_target: dir.join("aoe-target"),
        size: args.size << 20,
        seq_bytes: args.seq << 20,
        seconds: args.seconds,
        reps: args.reps,
        buffer_count: args.buffer_count,
        variants,
    };
    match attach::run(&opts) {
        Ok(figures) => {
            print!("{}", attach::table(&opts, &figures));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("attach: {e}");
            ExitCode::FAILURE
        }
    }
}
