//! `scale`: how the cost of serving grows with the number of initiators and of exports, and
//! at the far end of a 16 TiB disk; aoe-target beside vblade wherever vblade can do it (one
//! vblade process per export). Over a veth pair between two private network namespaces,
//! images on tmpfs; the `aoe` and `aoe-target` programs next to this one. Needs root and
//! vblade.
//!
//! ```sh
//! cargo build --release -p aoe-cli -p aoe-benches
//! sudo target/release/scale --reps 3
//! ```
//!
//! For each case: aggregate MB/s, the target's CPU seconds per GiB moved, and its resident
//! memory (all its processes together, for vblade). Every byte the `aoe read` processes read
//! is compared with the image as it comes through their standard output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use aoe_benches::stats::Summary;
use aoe_testkit::data::TempImage;
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::find_program;
use aoe_testkit::process::{vblade, wait_until, Guarded};
use clap::Parser;

/// Scaling with initiators and exports, aoe-target beside vblade.
#[derive(Debug, Parser)]
#[command(name = "scale", version)]
struct Args {
    /// Repetitions of each case.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// MiB read by all initiators together in the initiator cases.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Link MTU.
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
    /// Export counts of the export cases.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 256])]
    exports: Vec<usize>,
    /// Initiator counts of the initiator cases.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8])]
    initiators: Vec<usize>,
    /// Skip vblade.
    #[arg(long)]
    no_vblade: bool,
}

/// The program `name` next to this one.
fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    find_program(exe.parent()?.join(name).to_str()?)
}

/// Which target serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    AoeTarget,
    Vblade,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::AoeTarget => "aoe-target",
            Which::Vblade => "vblade",
        }
    }
}

/// The address of export `i` of many: 250 slots per shelf, from e1.0.
fn address(i: usize) -> (u16, u8) {
    (1 + (i / 250) as u16, (i % 250) as u8)
}

/// aoe-target's configuration serving `images` on `iface`, export `i` at [`address`]`(i)`.
fn aoe_target_config(iface: &str, images: &[&Path]) -> String {
    let mut config = String::new();
    for (i, image) in images.iter().enumerate() {
        let (shelf, slot) = address(i);
        config += &format!(
            "[[export]]\nshelf = {shelf}\nslot = {slot}\ninterfaces = [{iface:?}]\nfile = {image:?}\n\n"
        );
    }
    config
}

/// Running target processes serving e1.0, e1.1, ... from `images`.
struct Served {
    processes: Vec<Guarded>,
}

impl Served {
    fn start(
        which: Which,
        link: &Link,
        target_bin: &Path,
        images: &[&Path],
        scratch: &Path,
    ) -> Result<Served, String> {
        let iface = link.target_if();
        let processes = match which {
            Which::Vblade => images
                .iter()
                .enumerate()
                .map(|(i, image)| {
                    let (shelf, slot) = address(i);
                    vblade(&link.target, shelf, slot, iface, image)
                })
                .collect(),
            Which::AoeTarget => {
                let config = aoe_target_config(iface, images);
                let path = scratch.join("scale-exports.toml");
                std::fs::write(&path, config).map_err(|e| e.to_string())?;
                let mut cmd = link.target.command(target_bin.to_str().unwrap());
                cmd.args(["--config", path.to_str().unwrap()]);
                let target = Guarded::spawn(cmd).map_err(|e| e.to_string())?;
                let (shelf, slot) = address(images.len() - 1);
                let last = format!("e{shelf}.{slot} on ");
                if !wait_until(Duration::from_secs(20), || target.stderr().contains(&last)) {
                    return Err(format!("aoe-target did not start: {}", target.stderr()));
                }
                vec![target]
            }
        };
        Ok(Served { processes })
    }

    /// CPU time of every process, every thread, to the nanosecond (`schedstat`: 256 vblade
    /// processes each busy for a few milliseconds would round to nothing in clock ticks).
    fn cpu(&self) -> Duration {
        let ns: u64 = self
            .processes
            .iter()
            .flat_map(|p| {
                std::fs::read_dir(format!("/proc/{}/task", p.pid())).into_iter().flatten().flatten()
            })
            .filter_map(|task| {
                let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
                text.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum();
        Duration::from_nanos(ns)
    }

    /// Resident memory of all the processes in KiB: in all, and the anonymous part (heap and
    /// stacks; the rest is mostly the image pages aoe-target maps to answer from).
    fn rss_kib(&self) -> (u64, u64) {
        let field = |pid: u32, name: &str| -> Option<u64> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix(" kB")?.trim().parse().ok())
        };
        let sum = |name: &str| self.processes.iter().filter_map(|p| field(p.pid(), name)).sum();
        (sum("VmRSS:"), sum("RssAnon:"))
    }
}

/// One measurement: bytes moved in `secs`, target CPU used.
struct Sample {
    mbps: f64,
    cpu_per_gib: f64,
}

/// What one `aoe read` job reads: the arguments, and the part of the image its output must
/// equal (offset and length).
struct ReadJob {
    args: Vec<String>,
    offset: u64,
    len: u64,
}

/// Runs `aoe read ... -` commands at once in the initiator namespace and waits for all; each
/// one's output is compared, byte for byte as it comes, with the part of `image` it read.
fn reads_at_once(link: &Link, aoe: &Path, image: &Path, jobs: &[ReadJob]) -> Result<f64, String> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let started = Instant::now();
    let mut children: Vec<Child> = jobs
        .iter()
        .map(|job| {
            let mut cmd: Command = link.initiator.command(aoe.to_str().unwrap());
            cmd.args(["-i", link.initiator_if()])
                .args(&job.args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let checkers: Vec<_> = children
        .iter_mut()
        .zip(jobs)
        .map(|(child, job)| {
            let mut out = child.stdout.take().expect("piped stdout");
            let (image, offset, len) = (image.to_owned(), job.offset, job.len);
            std::thread::spawn(move || -> Result<(), String> {
                let file = std::fs::File::open(&image).map_err(|e| e.to_string())?;
                let (mut got, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
                let mut at = 0u64;
                loop {
                    let n = out.read(&mut got).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    if at + n as u64 > len {
                        return Err(format!("read more than {len} bytes at {offset}"));
                    }
                    file.read_exact_at(&mut want[..n], offset + at).map_err(|e| e.to_string())?;
                    if got[..n] != want[..n] {
                        return Err(format!("wrong bytes read near byte {}", offset + at));
                    }
                    at += n as u64;
                }
                if at != len {
                    return Err(format!("read {at} bytes at {offset}, not {len}"));
                }
                Ok(())
            })
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("aoe read: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    for checker in checkers {
        checker.join().map_err(|_| "a checker panicked".to_string())??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `aoe read` of `len` bytes at `offset` of e1.0 to its standard output.
fn read_job(offset: u64, len: u64) -> ReadJob {
    let args = ["read", "--offset", &offset.to_string(), "--length", &len.to_string(), "e1.0", "-"];
    ReadJob { args: args.map(String::from).to_vec(), offset, len }
}

fn measure(served: &Served, bytes: u64, run: impl FnOnce() -> Result<f64, String>) -> Result<Sample, String> {
    let cpu_before = served.cpu();
    let secs = run()?;
    let cpu = served.cpu().saturating_sub(cpu_before).as_secs_f64();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    Ok(Sample { mbps: bytes as f64 / secs / 1e6, cpu_per_gib: cpu / gib })
}

fn row(case: &str, which: Which, samples: &[Sample], (rss, anon): (u64, u64)) {
    let mbps = Summary::of(&samples.iter().map(|s| s.mbps).collect::<Vec<_>>()).unwrap();
    let cpu = Summary::of(&samples.iter().map(|s| s.cpu_per_gib).collect::<Vec<_>>()).unwrap();
    println!(
        "{case:<34} {:<10} {:>8.0} ({:>4.0}-{:<4.0}) {:>8.2} {:>8.1} ({:.1})",
        which.name(),
        mbps.median,
        mbps.min,
        mbps.max,
        cpu.median,
        rss as f64 / 1024.0,
        anon as f64 / 1024.0
    );
}

/// Discovers the `n` exports on `iface` and reads each whole (`each` bytes), one after
/// another, through aoe-initiator's Device; the seconds the reads took.
fn read_every_export(iface: &str, n: usize, each: usize) -> Result<f64, String> {
    use aoe_initiator::{discover, Device, DeviceOptions, DiscoverOptions};
    use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
    use aoe_transport::Transport;
    let open = || -> Result<Vec<Box<dyn Transport>>, String> {
        Ok(vec![Box::new(AfPacket::open(iface, AfPacketOptions::default()).map_err(|e| e.to_string())?)])
    };
    let found = discover(&mut open()?, &DiscoverOptions::default()).map_err(|e| e.to_string())?;
    if found.len() != n {
        return Err(format!("found {} exports, not {n}", found.len()));
    }
    let mut buf = vec![0u8; each];
    let started = Instant::now();
    for info in found {
        let mut dev =
            Device::with_target(open()?, info, &DeviceOptions::default()).map_err(|e| e.to_string())?;
        dev.read_at(&mut buf, 0).map_err(|e| e.to_string())?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
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
    let whiches: Vec<Which> = if args.no_vblade || find_program("vblade").is_none() {
        vec![Which::AoeTarget]
    } else {
        vec![Which::AoeTarget, Which::Vblade]
    };
    let scratch = std::env::temp_dir();
    let link =
        Link::new("aoescale", args.mtu).map_err(|e| format!("network namespaces (needs root): {e}"))?;
    println!(
        "scale: veth MTU {}, tmpfs images, {} reps; MB/s median (min-max), target CPU s/GiB, target RSS MiB (anonymous)",
        args.mtu, args.reps
    );
    println!("{:<34} {:<10} {:>21} {:>8} {:>16}", "case", "target", "MB/s", "CPU/GiB", "RSS MiB (anon)");

    // Initiators reading disjoint parts of one export.
    let bytes = (args.size as u64) << 20;
    let image = TempImage::new(args.size << 20, 0x5CA1E).map_err(|e| e.to_string())?;
    for &which in &whiches {
        let served = Served::start(which, &link, &target_bin, &[image.path()], &scratch)?;
        for &k in &args.initiators {
            let part = bytes / k as u64 / 512 * 512;
            let jobs: Vec<ReadJob> = (0..k as u64).map(|i| read_job(i * part, part)).collect();
            let samples = (0..args.reps)
                .map(|_| {
                    measure(&served, part * k as u64, || reads_at_once(&link, &aoe, image.path(), &jobs))
                })
                .collect::<Result<Vec<_>, _>>()?;
            row(&format!("{k} initiators, disjoint parts of 1"), which, &samples, served.rss_kib());
        }
    }
    drop(image);

    // One initiator reading every one of n exports, one after another.
    for &n in &args.exports {
        let each = ((args.size << 20) / n).max(1 << 20) / 512 * 512;
        let images: Vec<TempImage> =
            (0..n).map(|_| TempImage::zeroed(each)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let paths: Vec<&Path> = images.iter().map(TempImage::path).collect();
        for &which in &whiches {
            let served = Served::start(which, &link, &target_bin, &paths, &scratch)?;
            let rss_idle = served.rss_kib();
            // One initiator (this process) finds every export once, then reads each whole.
            let iface = link.initiator_if().to_owned();
            let samples = (0..args.reps)
                .map(|_| {
                    measure(&served, (each * n) as u64, || {
                        link.initiator.enter(|| read_every_export(&iface, n, each))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            row(&format!("{n} exports of {} MiB, all read", each >> 20), which, &samples, rss_idle);
        }
    }

    // The last 256 MiB of a 16 TiB sparse export (LBA48 addresses above 2^32 sectors).
    let huge = TempImage::zeroed(0).map_err(|e| e.to_string())?;
    let tib16 = 16u64 << 40;
    std::fs::OpenOptions::new()
        .write(true)
        .open(huge.path())
        .and_then(|f| f.set_len(tib16))
        .map_err(|e| e.to_string())?;
    let tail = 256u64 << 20;
    for &which in &whiches {
        let served = Served::start(which, &link, &target_bin, &[huge.path()], &scratch)?;
        let job = [read_job(tib16 - tail, tail)];
        let samples = (0..args.reps)
            .map(|_| measure(&served, tail, || reads_at_once(&link, &aoe, huge.path(), &job)))
            .collect::<Result<Vec<_>, _>>()?;
        row("16 TiB sparse, last 256 MiB", which, &samples, served.rss_kib());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_exports_avoid_the_broadcast_slot_and_match_their_addresses() {
        let image = Path::new("/tmp/x.img");
        let images = vec![image; 256];
        let config = aoe_target_config("veth0", &images);
        let exports: Vec<&str> = config.split("[[export]]").skip(1).collect();
        assert_eq!(exports.len(), 256);
        for (i, export) in exports.iter().enumerate() {
            let (shelf, slot) = address(i);
            assert!(slot < 255, "export {i} at the broadcast slot");
            assert!(export.contains(&format!("shelf = {shelf}\nslot = {slot}\n")), "{export}");
        }
        assert_eq!(address(255), (2, 5));
    }
}
