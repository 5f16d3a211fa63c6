//! `disk`: vblade and aoe-target exporting a file on a real disk with O_DIRECT, so that every
//! request waits on the device; aoe-target with and without I/O threads. Needs root and
//! vblade; skips otherwise.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use aoe_benches::{compare, disk};
use clap::Parser;

/// Benchmark targets that wait on a disk: random 4 KiB reads and sequential writes against a
/// file opened with O_DIRECT by vblade -d, aoe-target -d --io-threads 0 and aoe-target -d.
#[derive(Debug, Parser)]
#[command(name = "disk", version)]
struct Args {
    /// Directory for the backing file: on a disk (not tmpfs, which has no device to wait on).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Backing file size in MiB.
    #[arg(long, default_value_t = 512)]
    size: u64,
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// The vblade program.
    #[arg(long, default_value = "vblade")]
    vblade: String,
    /// The aoe-target binary (default: aoe-target next to this program).
    #[arg(long)]
    target_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(reason) = compare::skip_reason(&args.vblade) {
        println!("{}", reason.replacen("compare", "disk", 1));
        return ExitCode::SUCCESS;
    }
    if args.reps == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 || args.size == 0 {
        eprintln!("disk: --reps, --seconds and --size must be positive");
        return ExitCode::from(2);
    }
    let Some(target_bin) = args.target_bin.or_else(compare::default_target_bin) else {
        eprintln!(
            "disk: no aoe-target binary next to this program; build it (cargo build --release -p aoe-cli) or pass --target-bin"
        );
        return ExitCode::from(2);
    };
    let file = args.dir.join(format!("aoe-disk-bench-{}.img", std::process::id()));
    let result = write_file(&file, args.size).and_then(|()| {
        let variants = disk::variants(&args.vblade, &target_bin.to_string_lossy());
        let figures = disk::run(&variants, &file, args.reps, args.seconds)?;
        Ok(disk::table(&variants, &figures))
    });
    let _ = std::fs::remove_file(&file);
    match result {
        Ok(table) => {
            println!(
                "disk: {} MiB file in {}, O_DIRECT, MTU 9000, {} reps of {} s",
                args.size,
                args.dir.display(),
                args.reps,
                args.seconds
            );
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("disk: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `mib` MiB of non-zero bytes to `path` and syncs them, so that reads go to the
/// device rather than to holes.
fn write_file(path: &std::path::Path, mib: u64) -> std::io::Result<()> {
    eprintln!("disk: writing a {mib} MiB backing file {}", path.display());
    let mut f = std::fs::File::create(path)?;
    let mut chunk: Vec<u8> =
        (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 1).collect();
    for i in 0..mib {
        chunk[0] = i as u8;
        f.write_all(&chunk)?;
    }
    f.sync_all()
}
