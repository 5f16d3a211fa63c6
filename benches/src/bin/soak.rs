//! `soak`: random reads and writes from several initiator processes at once, each on a MAC
//! address of its own, plus one process reading the whole disk over and over, against an
//! `aoe-target` process, for a bounded time; every byte checked against a model of what it
//! must be. Prints each process's operations and mismatches and the target's memory (RSS)
//! at the start and the end. Exits non-zero on any mismatch or error. Needs root.
//!
//! ```sh
//! cargo build --release -p aoe-cli -p aoe-benches
//! sudo target/release/soak --seconds 600
//! ```
//!
//! Each writer owns a quarter (a share) of the disk and keeps the version of every 4 KiB
//! block it wrote there: a read must return exactly that version. Every sector written
//! carries its own number, its version and a checksum, so the whole-disk reader, which
//! cannot know which version it races with, checks that each sector is one that was
//! written to that place (or still zero). Sectors, not blocks: a target writes each sector
//! whole, but a block's sectors may travel in two frames and a read fall between them.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use aoe_initiator::{Device, DeviceOptions};
use aoe_testkit::data::TempImage;
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::find_program;
use aoe_testkit::process::{wait_until, Guarded};
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::rng::SplitMix64;
use clap::Parser;

/// Bytes per block of the model.
const BLOCK: usize = 4096;
/// Marks a block written by the soak.
const MAGIC: u64 = 0x736f_616b_2d61_6f65;

/// Random reads and writes from several initiator processes against aoe-target, checked.
#[derive(Debug, Parser)]
#[command(name = "soak", version)]
struct Args {
    /// How long the initiators run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Disk size in MiB (a file on /dev/shm).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Writer processes, each on its own MAC address and its own share of the disk.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Link MTU.
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
    /// Run as one initiator (internal): writer N, or the whole-disk reader when N = writers.
    #[arg(long, hide = true)]
    worker: Option<usize>,
    /// The interface the worker uses (internal).
    #[arg(long, hide = true)]
    iface: Option<String>,
}

/// What one initiator did.
#[derive(Debug, Default)]
struct Tally {
    reads: u64,
    writes: u64,
    bytes: u64,
    mismatches: u64,
}

/// Bytes per sector: what a target writes whole, and what the reader checks one by one (a
/// block of several sectors may travel in two frames, and a write land between them).
const SECTOR: usize = 512;

/// The content of block `block` at `version` (version 0: never written, all zeros): each
/// sector carries the marker, its own number, the version and a checksum of the rest.
fn block_bytes(block: u64, version: u64, out: &mut [u8]) {
    for (i, sector) in out.chunks_mut(SECTOR).enumerate() {
        sector_bytes(block * (BLOCK / SECTOR) as u64 + i as u64, version, sector);
    }
}

fn sector_bytes(sector: u64, version: u64, out: &mut [u8]) {
    if version == 0 {
        out.fill(0);
        return;
    }
    let mut rng = SplitMix64::new(sector.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version);
    rng.fill(&mut out[32..]);
    let sum = checksum(&out[32..]);
    out[..8].copy_from_slice(&MAGIC.to_le_bytes());
    out[8..16].copy_from_slice(&sector.to_le_bytes());
    out[16..24].copy_from_slice(&version.to_le_bytes());
    out[24..32].copy_from_slice(&sum.to_le_bytes());
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// True when `bytes` is sector `sector` as some write left it, or zeros.
fn consistent(sector: u64, bytes: &[u8]) -> bool {
    if bytes.iter().all(|&b| b == 0) {
        return true;
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    let mut expect = [0u8; SECTOR];
    sector_bytes(sector, word(2), &mut expect);
    word(0) == MAGIC && word(1) == sector && expect == bytes
}

fn worker(args: &Args, index: usize, iface: &str) -> Result<Tally, String> {
    let port = AfPacket::open(iface, AfPacketOptions::default()).map_err(|e| e.to_string())?;
    let options = DeviceOptions { dead_timeout: Duration::from_secs(10), ..DeviceOptions::default() };
    let mut dev = Device::open(vec![Box::new(port)], 1, 0, &options).map_err(|e| e.to_string())?;
    let blocks = dev.size_bytes() / BLOCK as u64;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 32 * BLOCK];
    let mut expect = vec![0u8; 32 * BLOCK];
    if index == args.writers {
        // The whole-disk reader.
        let mut at = 0u64;
        while Instant::now() < deadline {
            let n = 32.min(blocks - at) as usize;
            dev.read_at(&mut buf[..n * BLOCK], at * BLOCK as u64).map_err(|e| e.to_string())?;
            let first_sector = at * (BLOCK / SECTOR) as u64;
            for (i, b) in buf[..n * BLOCK].chunks(SECTOR).enumerate() {
                if !consistent(first_sector + i as u64, b) {
                    tally.mismatches += 1;
                    eprintln!("reader: sector {} is no sector any write left", first_sector + i as u64);
                }
            }
            tally.reads += 1;
            tally.bytes += (n * BLOCK) as u64;
            at = (at + n as u64) % blocks;
        }
        return Ok(tally);
    }
    let share = blocks / args.writers as u64;
    let first = share * index as u64;
    let mut versions = vec![0u64; share as usize];
    let mut rng = SplitMix64::new(0x50a4 + index as u64);
    while Instant::now() < deadline {
        let n = 1 + rng.below(32.min(share)) as usize;
        let start = rng.below(share - n as u64 + 1) as usize;
        let bytes = n * BLOCK;
        let offset = (first + start as u64) * BLOCK as u64;
        if rng.chance(0.5) {
            for i in 0..n {
                versions[start + i] += 1;
                block_bytes(
                    first + (start + i) as u64,
                    versions[start + i],
                    &mut buf[i * BLOCK..(i + 1) * BLOCK],
                );
            }
            dev.write_at(&buf[..bytes], offset).map_err(|e| e.to_string())?;
            tally.writes += 1;
        } else {
            dev.read_at(&mut buf[..bytes], offset).map_err(|e| e.to_string())?;
            for i in 0..n {
                let block = first + (start + i) as u64;
                block_bytes(block, versions[start + i], &mut expect[i * BLOCK..(i + 1) * BLOCK]);
                if buf[i * BLOCK..(i + 1) * BLOCK] != expect[i * BLOCK..(i + 1) * BLOCK] {
                    tally.mismatches += 1;
                    eprintln!("writer {index}: block {block} is not version {}", versions[start + i]);
                }
            }
            tally.reads += 1;
        }
        tally.bytes += bytes as u64;
    }
    dev.flush().map_err(|e| e.to_string())?;
    Ok(tally)
}

/// The program `name` next to this one.
fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    find_program(exe.parent()?.join(name).to_str()?)
}

/// Resident memory of process `pid` in KiB: all of it, and the anonymous part (its heap and
/// stacks; the rest is the disk image's pages it maps, which grow as they are touched).
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix(" kB")?.trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let (Some(index), Some(iface)) = (args.worker, &args.iface) {
        return match worker(&args, index, iface) {
            Ok(t) => {
                println!("{} {} {} {}", t.reads, t.writes, t.bytes, t.mismatches);
                if t.mismatches == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("worker {index}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let Some(target_bin) = sibling("aoe-target") else {
        return Err("needs the aoe-target program next to this one: cargo build -p aoe-cli".into());
    };
    if args.writers == 0 || args.size < args.writers {
        return Err("give at least one writer and a MiB of disk per writer".into());
    }
    let link = Link::new("aoesoak", args.mtu).map_err(|e| format!("network namespaces (needs root): {e}"))?;
    let image = TempImage::zeroed(args.size << 20).map_err(|e| e.to_string())?;
    let mut cmd = link.target.command(target_bin.to_str().unwrap());
    cmd.args(["-b", "64", "1", "0", link.target_if(), image.path().to_str().unwrap()]);
    let target = Guarded::spawn(cmd).map_err(|e| e.to_string())?;
    if !wait_until(Duration::from_secs(10), || target.stderr().contains("e1.0 on ")) {
        return Err(format!("aoe-target did not start: {}", target.stderr()));
    }
    // One macvlan per initiator on the initiator's end of the link: one segment, a MAC each.
    let mut ifaces = Vec::new();
    for k in 0..=args.writers {
        let name = format!("soak{k}");
        let mac = format!("02:00:5e:50:00:{k:02x}");
        let add = [
            "link",
            "add",
            "link",
            link.initiator_if(),
            "name",
            &name,
            "address",
            &mac,
            "type",
            "macvlan",
            "mode",
            "bridge",
        ];
        for ip in [&add[..], &["link", "set", &name, "up"]] {
            let out = link.initiator.run("ip", ip, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("ip {}: {}", ip.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        ifaces.push(name);
    }
    let rss_start = rss_kib(target.pid());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut workers = Vec::new();
    for (k, iface) in ifaces.iter().enumerate() {
        let mut cmd: Command = link.initiator.command(exe.to_str().unwrap());
        cmd.args(["--seconds", &args.seconds.to_string(), "--writers", &args.writers.to_string()]);
        cmd.args(["--worker", &k.to_string(), "--iface", iface]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        workers.push(cmd.spawn().map_err(|e| e.to_string())?);
    }
    println!(
        "soak: {} writers and 1 whole-disk reader on their own MACs, {} s, {} MiB disk, aoe-target at MTU {}",
        args.writers, args.seconds, args.size, args.mtu
    );
    println!(
        "{:<10} {:>10} {:>10} {:>12} {:>8} {:>11}",
        "initiator", "reads", "writes", "MB", "MB/s", "mismatches"
    );
    let mut clean = true;
    for (k, child) in workers.into_iter().enumerate() {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let name = if k == args.writers { "reader".to_string() } else { format!("writer {k}") };
        let numbers: Vec<u64> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|w| w.parse().ok()).collect();
        if let [reads, writes, bytes, mismatches] = numbers[..] {
            println!(
                "{name:<10} {reads:>10} {writes:>10} {:>12.1} {:>8.1} {mismatches:>11}",
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / args.seconds as f64
            );
            clean &= mismatches == 0 && out.status.success();
        } else {
            println!("{name:<10} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            clean = false;
        }
        if !out.stderr.is_empty() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let rss_end = rss_kib(target.pid());
    let show = |r: Option<(u64, u64)>| {
        r.map_or("?".to_string(), |(all, anon)| {
            format!("{:.1} MiB ({:.1} MiB anonymous)", all as f64 / 1024.0, anon as f64 / 1024.0)
        })
    };
    println!("aoe-target RSS: {} at the start, {} at the end", show(rss_start), show(rss_end));
    println!("{}", if clean { "soak: no mismatches" } else { "soak: FAILED" });
    Ok(clean)
}
