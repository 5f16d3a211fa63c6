//! `compare`: vblade and aoe-target side by side over veth pairs in private network
//! namespaces, driven by the same raw AoE client; and aoe-initiator's Device beside that
//! client against aoe-target. Needs root and vblade; skips otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aoe_benches::compare::{self, Options, Variant};
use clap::Parser;

/// Benchmark aoe-target against vblade: sequential MB/s, random 4 KiB IOPS, latency and
/// target CPU per GiB, with the link ceiling for reference; and aoe-initiator's Device
/// against the raw client: sequential MB/s and initiator CPU per GiB.
#[derive(Debug, Parser)]
#[command(name = "compare", version)]
struct Args {
    /// Backing file size in MiB (on /dev/shm).
    #[arg(long, default_value_t = 512)]
    size: u64,
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Link MTUs to measure at.
    #[arg(long, value_delimiter = ',', default_values_t = [1500, 9000])]
    mtu: Vec<u32>,
    /// Buffer count passed to both targets with -b (and the most requests kept in flight).
    #[arg(long, default_value_t = 64)]
    bufcnt: u16,
    /// The aoe-target binary (default: aoe-target next to this program, if present).
    #[arg(long, conflicts_with = "in_process")]
    target_bin: Option<PathBuf>,
    /// Run aoe-target in this process even when its binary exists.
    #[arg(long)]
    in_process: bool,
    /// The vblade program.
    #[arg(long, default_value = "vblade")]
    vblade: String,
    /// Client retransmit timeout in milliseconds.
    #[arg(long, default_value_t = 50)]
    retransmit_ms: u64,
    /// KiB per read_at / write_at call of aoe-initiator's Device.
    #[arg(long, value_name = "KIB", default_value_t = 8192)]
    initiator_chunk: usize,
    /// Run aoe-target with --no-rx-ring: receiving with recvmmsg, not through a ring.
    #[arg(long)]
    no_rx_ring: bool,
    /// Also measure aoe-target started with FLAGS (split at whitespace) beside plain
    /// aoe-target, labelled LABEL, e.g. `busy-poll=--kernel-busy-poll 50`; a word bin=PATH in
    /// FLAGS runs that aoe-target binary instead (an older build). Repeatable.
    #[arg(long, value_name = "LABEL=FLAGS")]
    variant: Vec<Variant>,
    /// Do not measure aoe-initiator's Device.
    #[arg(long)]
    no_initiator: bool,
    /// Also write the report, every sample included, as JSON to this file (`-`: print it to
    /// stdout instead of the table).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(reason) = compare::skip_reason(&args.vblade) {
        println!("{reason}");
        return ExitCode::SUCCESS;
    }
    if args.reps == 0
        || !args.seconds.is_finite()
        || args.seconds <= 0.0
        || args.size == 0
        || args.mtu.is_empty()
        || args.bufcnt == 0
        || args.initiator_chunk == 0
    {
        eprintln!(
            "compare: --reps, --seconds, --size, --mtu, --bufcnt and --initiator-chunk must be positive"
        );
        return ExitCode::from(2);
    }
    let target_bin = match (args.in_process, args.target_bin) {
        (true, _) => None,
        (false, Some(p)) => Some(p),
        (false, None) => compare::default_target_bin(),
    };
    if let Some(problem) = compare::variants_problem(&args.variant, target_bin.as_deref()) {
        eprintln!("compare: {problem}");
        return ExitCode::from(2);
    }
    let options = Options {
        size_mib: args.size,
        reps: args.reps,
        seconds: args.seconds,
        mtus: args.mtu,
        buffer_count: args.bufcnt,
        vblade: args.vblade,
        target_bin,
        target_rx_ring: !args.no_rx_ring,
        retransmit: Duration::from_millis(args.retransmit_ms),
        initiator_chunk: (!args.no_initiator).then_some(args.initiator_chunk << 10),
        variants: args.variant,
    };
    if let Err(e) = compare::clean_up_on_signal() {
        eprintln!("compare: cannot handle SIGINT and SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("compare: aoe-target runs {}", compare::describe_mode(&options));
    for v in &options.variants {
        eprintln!("compare: variant {} runs {}", v.label, compare::describe_variant(v, &options));
    }
    let report = match compare::run(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("compare: {e}");
            return ExitCode::FAILURE;
        }
    };
    let to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if !to_stdout {
        print!("{}", report.render());
    }
    if let Some(path) = &args.json {
        let json = match serde_json::to_string_pretty(&report) {
            Ok(json) => json,
            Err(e) => {
                eprintln!("compare: {e}");
                return ExitCode::FAILURE;
            }
        };
        if to_stdout {
            println!("{json}");
        } else if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("compare: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
