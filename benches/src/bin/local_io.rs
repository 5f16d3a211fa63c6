//! `local_io`: how fast `aoe read` and `aoe write` move a disk to and from a file on tmpfs,
//! beside the same commands to /dev/null and from /dev/zero in the same run: what the local
//! side costs. The `aoe` and `aoe-target` programs next to this one serve and copy a tmpfs
//! image over a veth pair between two private network namespaces. Needs root.
//!
//! ```sh
//! cargo build --release -p aoe-cli -p aoe-benches
//! sudo target/release/local_io --size 512 --reps 5
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aoe_benches::stats::Summary;
use aoe_testkit::data::TempImage;
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::find_program;
use aoe_testkit::process::{wait_until, Guarded};
use clap::Parser;

/// Measure `aoe read`/`aoe write` to and from a tmpfs file against /dev/null and /dev/zero.
#[derive(Debug, Parser)]
#[command(name = "local_io", version)]
struct Args {
    /// Disk size in MiB (a file on /dev/shm), copied whole each time.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Repetitions of each copy (alternating, so that drift hits all alike).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Link MTU.
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
}

/// The program `name` next to this one.
fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    find_program(exe.parent()?.join(name).to_str()?)
}

/// Runs `aoe ARGS` in the initiator namespace; the throughput its summary line reports
/// (the copy alone, without start-up and discovery), in MB/s.
fn timed(link: &Link, aoe: &Path, args: &[&str]) -> Result<f64, String> {
    let mut all = vec!["-i", link.initiator_if()];
    all.extend_from_slice(args);
    let out = link
        .initiator
        .run(aoe.to_str().unwrap(), &all, Duration::from_secs(600))
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("aoe {}: {}", args.join(" "), stderr.trim()));
    }
    // "read 536870912 bytes (512 MiB) from e1.0 in 0.45 s: 1190.3 MB/s"
    stderr
        .lines()
        .find_map(|l| l.strip_suffix(" MB/s")?.rsplit(' ').next()?.parse().ok())
        .ok_or_else(|| format!("aoe {}: no MB/s in {stderr:?}", args.join(" ")))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local_io: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let (Some(aoe), Some(target_bin)) = (sibling("aoe"), sibling("aoe-target")) else {
        return Err(
            "needs the aoe and aoe-target programs next to this one: cargo build --release -p aoe-cli".into(),
        );
    };
    let bytes = args.size << 20;
    let link =
        Link::new("aoelocal", args.mtu).map_err(|e| format!("network namespaces (needs root): {e}"))?;
    let image = TempImage::zeroed(bytes).map_err(|e| e.to_string())?;
    let mut cmd = link.target.command(target_bin.to_str().unwrap());
    cmd.args(["1", "0", link.target_if(), image.path().to_str().unwrap()]);
    let target = Guarded::spawn(cmd).map_err(|e| e.to_string())?;
    if !wait_until(Duration::from_secs(10), || target.stderr().contains("e1.0 on ")) {
        return Err(format!("aoe-target did not start: {}", target.stderr()));
    }
    let file = Path::new("/dev/shm").join(format!("aoe-local-io-{}.img", std::process::id()));
    let file_arg = file.to_str().unwrap().to_owned();
    let len = bytes.to_string();
    // The file to write from: the disk's bytes, made by a first read.
    timed(&link, &aoe, &["read", "e1.0", &file_arg])?;

    let cases: [(&str, Vec<&str>); 4] = [
        ("read to /dev/null", vec!["read", "e1.0", "/dev/null"]),
        ("read to a tmpfs file", vec!["read", "e1.0", &file_arg]),
        ("write from /dev/zero", vec!["write", "--length", &len, "e1.0", "/dev/zero"]),
        ("write from a tmpfs file", vec!["write", "e1.0", &file_arg]),
    ];
    let mut samples = vec![Vec::new(); cases.len()];
    for _ in 0..args.reps {
        for (i, (_, argv)) in cases.iter().enumerate() {
            samples[i].push(timed(&link, &aoe, argv)?);
        }
    }
    let _ = std::fs::remove_file(&file);
    let summary: Vec<Summary> = samples.iter().map(|s| Summary::of(s).expect("samples")).collect();
    println!("aoe read/write of a {} MiB disk (aoe-target, tmpfs image, veth MTU {}), {} reps, MB/s median (min-max)", args.size, args.mtu, args.reps);
    println!("{:<26} {:>22} {:>10}", "case", "MB/s", "ratio");
    for (i, (name, _)) in cases.iter().enumerate() {
        let s = summary[i];
        let reference = summary[i - i % 2].median;
        let ratio = if i % 2 == 1 { format!("{:.2}", s.median / reference) } else { "-".into() };
        println!("{:<26} {:>10.0} ({:.0}-{:.0}) {:>10}", name, s.median, s.min, s.max, ratio);
    }
    Ok(())
}
