//! `lossy`: write-then-read throughput of the `aoe` tool through aoe-testkit's
//! fault-injecting relay, at several loss rates, against aoe-target and vblade, as a ratio
//! to the lossless rate through the same relay in the same run. Needs root; skips
//! otherwise (vblade's rows are left out when it is not installed).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use aoe_benches::stats::Summary;
use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::Netns;
use aoe_testkit::process::{vblade, wait_until, Guarded};
use aoe_testkit::relay::Relay;
use aoe_transport::fault::Plan;
use clap::Parser;

/// Time `aoe write` then `aoe read` of the same bytes through a relay that drops,
/// duplicates and reorders frames both ways; every byte read back is compared.
#[derive(Debug, Parser)]
#[command(name = "lossy", version)]
struct Args {
    /// MiB written, then read back, per run.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Runs per row (the table shows the median).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Link MTU.
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
    /// Longest one write or read may take before the run counts as timed out.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    limit: u64,
    /// The aoe program (default: `aoe` next to this program).
    #[arg(long)]
    aoe: Option<PathBuf>,
    /// The aoe-target program (default: `aoe-target` next to this program).
    #[arg(long)]
    aoe_target: Option<PathBuf>,
    /// Leave vblade out.
    #[arg(long)]
    no_vblade: bool,
    /// Only these scenarios (names as in the table: lossless, 1%, 5%-mix, 10%, 20%).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// One way's plan for a scenario, before seeding.
fn scenarios() -> Vec<(&'static str, Plan)> {
    let drop = |p: f64| Plan { drop: p, ..Plan::NONE };
    vec![
        ("lossless", Plan::NONE),
        ("1%", drop(0.01)),
        ("5%-mix", Plan { drop: 0.05, duplicate: 0.02, reorder: 0.05, ..Plan::NONE }),
        ("10%", drop(0.10)),
        ("20%", drop(0.20)),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    AoeTarget,
    Vblade,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::AoeTarget => "aoe-target",
            Peer::Vblade => "vblade",
        }
    }
}

fn beside_me(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let p = me.parent()?.join(name);
    p.is_file().then_some(p)
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn serve(peer: Peer, aoe_target: &Path, ns: &Netns, ifname: &str, image: &Path) -> Guarded {
    match peer {
        Peer::Vblade => vblade(ns, 1, 0, ifname, image),
        Peer::AoeTarget => {
            let mut cmd = ns.command(aoe_target.to_str().expect("UTF-8 path"));
            cmd.args(["1", "0", ifname]).arg(image).env_remove("RUST_LOG");
            let target = Guarded::spawn(cmd).expect("starting aoe-target");
            let ready = format!("e1.0 on {ifname} (");
            assert!(
                wait_until(Duration::from_secs(10), || target.stderr().contains(&ready)),
                "aoe-target did not start: {:?}",
                target.stderr()
            );
            target
        }
    }
}

/// Runs `aoe ARGS` in `ns`; `Err` with what it said when it fails or outlives `limit`.
fn aoe(ns: &Netns, program: &Path, args: &[&str], limit: Duration) -> Result<(), String> {
    let mut cmd = ns.command(program.to_str().expect("UTF-8 path"));
    cmd.args(args).env_remove("RUST_LOG");
    let mut child = Guarded::spawn(cmd).map_err(|e| e.to_string())?;
    match child.wait_timeout(limit).map_err(|e| e.to_string())? {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("aoe {}: {s}: {}", args.join(" "), child.stderr().trim())),
        None => Err(format!("timed out after {} s", limit.as_secs())),
    }
}

/// One write then read of `size` bytes; the seconds it took.
fn one_run(
    relay: &Relay,
    aoe_bin: &Path,
    size: usize,
    seed: u64,
    image: &TempImage,
    limit: Duration,
) -> Result<f64, String> {
    let input = TempImage::new(size, seed).map_err(|e| e.to_string())?;
    let output = TempImage::zeroed(0).map_err(|e| e.to_string())?;
    let (inp, out) = (input.path().to_str().unwrap(), output.path().to_str().unwrap());
    let start = Instant::now();
    aoe(&relay.initiator, aoe_bin, &["write", "e1.0", inp], limit)?;
    aoe(&relay.initiator, aoe_bin, &["read", "--length", &size.to_string(), "e1.0", out], limit)?;
    let took = start.elapsed().as_secs_f64();
    let want = pattern(seed, size);
    if output.read_all() != want || image.read_at(0, size).map_err(|e| e.to_string())? != want {
        return Err("data read back differs from what was written".into());
    }
    Ok(took)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !have("ip") {
        println!("lossy: skipped: needs root and `ip` (network namespaces and raw sockets)");
        return ExitCode::SUCCESS;
    }
    if args.size == 0 || args.reps == 0 || args.limit == 0 {
        eprintln!("lossy: --size, --reps and --limit must be positive");
        return ExitCode::from(2);
    }
    let (Some(aoe_bin), Some(target_bin)) = (
        args.aoe.clone().or_else(|| beside_me("aoe")),
        args.aoe_target.clone().or_else(|| beside_me("aoe-target")),
    ) else {
        eprintln!("lossy: build the aoe and aoe-target programs first (cargo build --release -p aoe-cli), or name them with --aoe / --aoe-target");
        return ExitCode::from(2);
    };
    let mut peers = vec![Peer::AoeTarget];
    if !args.no_vblade && have("vblade") {
        peers.push(Peer::Vblade);
    }
    let size = args.size * MIB;
    let limit = Duration::from_secs(args.limit);
    let wanted: Vec<_> = scenarios()
        .into_iter()
        .filter(|(name, _)| {
            args.only.is_empty() || *name == "lossless" || args.only.iter().any(|o| o == name)
        })
        .collect();

    println!(
        "lossy: {} MiB `aoe write` then `aoe read` ({}), MTU {}, median of {} runs, both ways through the relay",
        args.size,
        aoe_bin.display(),
        args.mtu,
        args.reps
    );
    println!("{:<11} {:<34} {:>9} {:>9} {:>9}", "target", "faults each way", "seconds", "MB/s", "ratio");
    let mut failed = false;
    for peer in peers {
        let image = TempImage::zeroed(size).expect("backing file");
        let relay =
            Relay::new(&format!("lossy{}", peer as u8), args.mtu, Plan::NONE, Plan::NONE).expect("relay");
        let _server = serve(peer, &target_bin, &relay.target, relay.target_if(), image.path());
        let mut lossless = None;
        for (i, (name, plan)) in wanted.iter().enumerate() {
            let mut secs = Vec::new();
            let mut error = None;
            for rep in 0..args.reps {
                let seed = 1000 * i as u64 + rep as u64 + 1;
                relay.set_plans(Plan { seed, ..*plan }, Plan { seed: seed + 500, ..*plan });
                match one_run(&relay, &aoe_bin, size, seed, &image, limit) {
                    Ok(s) => {
                        eprintln!("{} {name} run {rep}: {s:.2} s", peer.name());
                        secs.push(s);
                    }
                    Err(e) => {
                        eprintln!("{} {name} run {rep}: {e}", peer.name());
                        error = Some(e);
                        break;
                    }
                }
            }
            let describe = describe(plan);
            match (Summary::of(&secs), error) {
                (Some(s), None) => {
                    let rate = 2.0 * size as f64 / s.median / 1e6;
                    if *name == "lossless" {
                        lossless = Some(rate);
                    }
                    let ratio = lossless.map_or("-".to_string(), |l| format!("{:.2}", rate / l));
                    println!(
                        "{:<11} {:<34} {:>9.2} {:>9.1} {:>9}",
                        peer.name(),
                        describe,
                        s.median,
                        rate,
                        ratio
                    );
                }
                (_, e) => {
                    failed |= !e.as_deref().is_some_and(|e| e.starts_with("timed out"));
                    let what = e.unwrap_or_default();
                    println!(
                        "{:<11} {:<34} {:>9} {:>9} {:>9}  ({what})",
                        peer.name(),
                        describe,
                        "-",
                        "-",
                        "-"
                    );
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn describe(p: &Plan) -> String {
    let mut parts = Vec::new();
    for (what, x) in [("drop", p.drop), ("dup", p.duplicate), ("reorder", p.reorder)] {
        if x > 0.0 {
            parts.push(format!("{}% {what}", x * 100.0));
        }
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" + ")
    }
}
