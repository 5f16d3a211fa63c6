//! The `disk` tool: targets that wait on a disk. vblade and aoe-target export the same file
//! on a real disk with `O_DIRECT` (`-d`), so that every read and write goes to the device;
//! aoe-target once doing the I/O in its receiving thread (`--io-threads 0`) and once with I/O
//! threads (its default for `-d`). The same raw [`Client`] drives each in turn over a veth
//! pair at MTU 9000; the table gives medians with their spread and the ratio to vblade.

use std::io;
use std::path::Path;
use std::time::Duration;

use aoe_testkit::netns::Link;
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};

use crate::client::{Client, Op, Workload};
use crate::compare::{start_process, Running};
use crate::stats::Summary;

const MTU: u32 = 9000;
const SEED: u64 = 0xD15C;

/// One target set-up: a name, its program and its flags.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Its name in the table.
    pub name: String,
    /// The program.
    pub program: String,
    /// Flags before the shelf and slot.
    pub flags: Vec<String>,
}

/// One measurement: a workload shape.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Its name in the table.
    pub name: &'static str,
    /// Read or write.
    pub op: Op,
    /// Random 4 KiB rather than sequential full frames.
    pub random: bool,
    /// Requests kept in flight.
    pub queue_depth: usize,
}

/// Random 4 KiB reads at QD 1 and 32, sequential full-frame writes at QD 16.
pub const CASES: [Case; 3] = [
    Case { name: "rand read 4K QD1 (IOPS)", op: Op::Read, random: true, queue_depth: 1 },
    Case { name: "rand read 4K QD32 (IOPS)", op: Op::Read, random: true, queue_depth: 32 },
    Case { name: "seq write QD16 (MB/s)", op: Op::Write, random: false, queue_depth: 16 },
];

/// vblade -d; aoe-target -d --io-threads 0; aoe-target -d (I/O threads by default).
pub fn variants(vblade: &str, aoe_target: &str) -> Vec<Variant> {
    let v = |name: &str, program: &str, flags: &[&str]| Variant {
        name: name.to_owned(),
        program: program.to_owned(),
        flags: flags.iter().map(|f| (*f).to_owned()).collect(),
    };
    vec![
        v("vblade -d", vblade, &["-d"]),
        v("aoe-target -d --io-threads 0", aoe_target, &["-d", "--io-threads", "0"]),
        v("aoe-target -d", aoe_target, &["-d"]),
    ]
}

/// The figure a case reports: IOPS for random reads, MB/s otherwise.
fn figure(case: &Case, stats: &crate::client::RunStats) -> f64 {
    if case.random {
        stats.iops()
    } else {
        stats.mb_per_s()
    }
}

/// Runs every variant through every case `reps` times, variants in turn within each case and
/// repetition (the order rotating), and returns `figures[variant][case]`.
pub fn run(variants: &[Variant], file: &Path, reps: usize, seconds: f64) -> io::Result<Vec<Vec<Vec<f64>>>> {
    let duration = Duration::from_secs_f64(seconds);
    let links = variants.iter().map(|_| Link::new("aoedsk", MTU)).collect::<io::Result<Vec<_>>>()?;
    let mut running = Vec::new();
    let mut clients = Vec::new();
    for (variant, link) in variants.iter().zip(&links) {
        let flags: Vec<&str> = variant.flags.iter().map(String::as_str).collect();
        running.push(start_process(link, &variant.program, &flags, 64, file)?);
        let transport = link
            .initiator
            .enter(|| AfPacket::open(link.initiator_if(), AfPacketOptions::default()))
            .map_err(io::Error::other)?;
        let client = Client::connect(transport, 1, 0, Duration::from_secs(5))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", variant.name)))?;
        clients.push(client);
    }
    let mut figures = vec![vec![Vec::new(); CASES.len()]; variants.len()];
    for rep in 0..reps {
        for (c, case) in CASES.iter().enumerate() {
            for turn in 0..variants.len() {
                let v = (turn + rep + c) % variants.len();
                let client = &mut clients[v];
                let sectors = client.target().max_sectors;
                let work = match case.random {
                    true => Workload::random_read(8, case.queue_depth, duration, SEED + rep as u64),
                    false => Workload::sequential(case.op, sectors, case.queue_depth, duration),
                }
                .retransmit_after(Duration::from_millis(200));
                client.discard_pending()?;
                let stats = client.run(&work)?;
                running[v].check_alive()?;
                let x = figure(case, &stats);
                eprintln!(
                    "disk: rep {}/{reps} {:<30} {:<26} {x:>10.0} ({} retransmits, {} errors)",
                    rep + 1,
                    variants[v].name,
                    case.name,
                    stats.retransmits,
                    stats.errors
                );
                figures[v][c].push(x);
            }
        }
    }
    for r in running {
        Running::stop(r)?;
    }
    Ok(figures)
}

/// The table: a legend numbering the variants, then one row per case with each variant's
/// median (min–max) and each later variant's median over the first's.
pub fn table(variants: &[Variant], figures: &[Vec<Vec<f64>>]) -> String {
    let mut out = String::new();
    for (i, v) in variants.iter().enumerate() {
        out.push_str(&format!("#{i}: {}\n", v.name));
    }
    out.push_str(&format!("{:<26}", "case"));
    for i in 0..variants.len() {
        out.push_str(&format!(" | {:>22}", format!("#{i}")));
    }
    for i in 1..variants.len() {
        out.push_str(&format!(" | {:>6}", format!("#{i}/#0")));
    }
    out.push('\n');
    for (c, case) in CASES.iter().enumerate() {
        out.push_str(&format!("{:<26}", case.name));
        let summaries: Vec<Option<Summary>> = figures.iter().map(|f| Summary::of(&f[c])).collect();
        for s in &summaries {
            let cell = s.map_or("-".into(), |s| format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max));
            out.push_str(&format!(" | {cell:>22}"));
        }
        let first = summaries[0].map_or(f64::NAN, |s| s.median);
        for s in &summaries[1..] {
            out.push_str(&format!(" | {:>6.2}", s.map_or(f64::NAN, |s| s.median) / first));
        }
        out.push('\n');
    }
    out
}
