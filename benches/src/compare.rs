//! The `compare` tool: vblade and aoe-target side by side, driven by the same [`Client`].
//!
//! For each MTU and each target it builds two private network namespaces joined by a veth
//! pair ([`aoe_testkit::netns::Link`]), exports the same backing file on tmpfs from the
//! target namespace, and measures from the initiator namespace. Both targets run through the
//! MTU block and the measurements alternate between them case by case (which one goes first
//! alternates too), so that drift on a noisy machine hits both alike; ratios are taken
//! pair by pair. The link ceiling ([`crate::ceiling`]) is measured on the same links in the
//! same run.
//!
//! aoe-target runs as its binary (`cargo build --release -p aoe-cli`) when one is given or
//! found next to this tool, else in this process: a thread inside the target namespace
//! running [`Server`] over an [`AfPacket`].
//!
//! Beside the raw client, aoe-initiator's [`Device`] reads and writes aoe-target's disk
//! sequentially ([`crate::initiator`]) from the same initiator namespace, its window capped
//! at the raw client's [`INITIATOR_QD`]; each of its samples is taken right before or after
//! the raw client's sample of the same case against aoe-target, so the two pair up like the
//! targets do.
//!
//! Variants ([`Variant`], `--variant LABEL=FLAGS`) are aoe-target binaries started with more
//! flags (or another build of it): each runs on a veth pair of its own beside the two
//! targets, and takes its samples in the same alternation, so that it is compared with
//! plain aoe-target sample by sample.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aoe_initiator::{Device, DeviceOptions, TargetInfo};
use aoe_proto::SECTOR_SIZE;
use aoe_target::backend::{FileBackend, FileOptions};
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::Server;
use aoe_testkit::data::TempImage;
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::find_program;
use aoe_testkit::process::Guarded;
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::Transport;

use crate::ceiling::{self, Ceiling};
use crate::client::{Client, Op, Workload};
use crate::cpu;
use crate::initiator;
use crate::report::{InitiatorSample, Report, Sample};

/// Shelf and slot both targets export.
const SHELF: u16 = 1;
const SLOT: u8 = 0;
/// Seed of the backing file's content and of the random LBAs.
const SEED: u64 = 0xA0E;
/// Reads before each target's measurements, not counted.
const WARMUP: Duration = Duration::from_millis(300);
/// The raw client's queue depth that aoe-initiator's Device is set beside; the Device's
/// window is capped at as many frames.
pub const INITIATOR_QD: usize = 16;
/// Silence after which the Device gives up on the target (the raw client's stall timeout).
const INITIATOR_DEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run; built from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Backing file size in MiB.
    pub size_mib: u64,
    /// Repetitions of every measurement.
    pub reps: usize,
    /// Length of one measurement.
    pub seconds: f64,
    /// Link MTUs.
    pub mtus: Vec<u32>,
    /// Buffer count passed to both targets (`-b`).
    pub buffer_count: u16,
    /// The vblade program.
    pub vblade: String,
    /// The aoe-target binary; `None` runs it in process.
    pub target_bin: Option<PathBuf>,
    /// Whether aoe-target receives through a ring shared with the kernel (its default) or
    /// with `recvmmsg` (`--no-rx-ring`).
    pub target_rx_ring: bool,
    /// Retransmit timeout of the client.
    pub retransmit: Duration,
    /// Bytes per `read_at` / `write_at` call of aoe-initiator's Device, measured beside the
    /// raw client against aoe-target; `None` skips it.
    pub initiator_chunk: Option<usize>,
    /// aoe-target variants measured beside plain aoe-target, in the order given.
    pub variants: Vec<Variant>,
}

/// An aoe-target variant: the aoe-target binary (or another one, `bin`) started with more
/// flags, measured beside plain aoe-target. Parsed from `LABEL=FLAGS` (see [`FromStr`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Variant {
    /// Its name in the table.
    pub label: String,
    /// Flags passed before plain aoe-target's.
    pub flags: Vec<String>,
    /// Another aoe-target binary to run instead of [`Options::target_bin`] (an older build).
    pub bin: Option<PathBuf>,
}

impl FromStr for Variant {
    type Err = String;

    /// `LABEL=FLAGS`: LABEL is one word (not `vblade` or `aoe-target`), FLAGS are split at
    /// whitespace, and a word `bin=PATH` among them names the binary to run instead.
    fn from_str(text: &str) -> Result<Variant, String> {
        let fail = |why: &str| Err(format!("variant {text:?}: {why}"));
        let Some((label, flags)) = text.split_once('=') else {
            return fail("expected LABEL=FLAGS, e.g. qdisc-bypass=--qdisc-bypass");
        };
        if label.is_empty() || label.chars().any(char::is_whitespace) {
            return fail("the label must be one word");
        }
        if [Target::Vblade.name(), Target::AoeTarget.name()].contains(&label) {
            return fail("the label names a target already measured");
        }
        let (mut words, mut bin) = (Vec::new(), None);
        for word in flags.split_whitespace() {
            match word.strip_prefix("bin=") {
                Some("") => return fail("bin= names no program"),
                Some(_) if bin.is_some() => return fail("bin= is given twice"),
                Some(path) => bin = Some(PathBuf::from(path)),
                None => words.push(word.to_owned()),
            }
        }
        if words.is_empty() && bin.is_none() {
            return fail("no flags and no bin=: that is plain aoe-target");
        }
        Ok(Variant { label: label.to_owned(), flags: words, bin })
    }
}

/// Why `variants` cannot be run with aoe-target binary `target_bin` (`None`: in process), in
/// one line; `None` when they can.
pub fn variants_problem(variants: &[Variant], target_bin: Option<&Path>) -> Option<String> {
    for (i, v) in variants.iter().enumerate() {
        if variants[..i].iter().any(|w| w.label == v.label) {
            return Some(format!("variant {} is given twice", v.label));
        }
        if v.bin.is_none() && target_bin.is_none() {
            return Some(format!("variant {} needs the aoe-target binary (not --in-process)", v.label));
        }
    }
    None
}

/// Which target a measurement was of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Target {
    /// Debian's vblade.
    Vblade,
    /// This project's aoe-target.
    AoeTarget,
    /// aoe-target as [`Options::variants`] at this index has it run.
    Variant(usize),
}

impl Target {
    /// Its name in the output.
    pub fn name(self) -> &'static str {
        match self {
            Target::Vblade => "vblade",
            Target::AoeTarget | Target::Variant(_) => "aoe-target",
        }
    }

    /// Its name in the output, a variant's label for a variant.
    pub fn label(self, options: &Options) -> &str {
        match self {
            Target::Variant(i) => options.variants.get(i).map_or("variant", |v| &v.label),
            _ => self.name(),
        }
    }
}

/// One kind of measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Case {
    /// Short name, e.g. `seq read`.
    pub name: &'static str,
    /// Read or write.
    pub op: Op,
    /// Random 4 KiB instead of sequential.
    pub random: bool,
    /// Sectors per request.
    pub sectors: u8,
    /// Queue depth asked for.
    pub queue_depth: usize,
    /// Link MTU.
    pub mtu: u32,
}

/// The measurements made at `mtu`: sequential read and write at QD 1 and 16 with full
/// frames, and, where a frame holds 4 KiB (MTU 9000), random 4 KiB reads at QD 1 and 32.
pub fn cases(mtu: u32) -> Vec<Case> {
    let full = aoe_proto::max_sectors(mtu as usize);
    let mut v = Vec::new();
    for (name, op) in [("seq read", Op::Read), ("seq write", Op::Write)] {
        for qd in [1, 16] {
            v.push(Case { name, op, random: false, sectors: full, queue_depth: qd, mtu });
        }
    }
    if full >= 8 {
        for qd in [1, 32] {
            v.push(Case {
                name: "rand read 4K",
                op: Op::Read,
                random: true,
                sectors: 8,
                queue_depth: qd,
                mtu,
            });
        }
    }
    v
}

/// The cases at `mtu` that aoe-initiator's Device is measured in too: sequential read and
/// write at [`INITIATOR_QD`].
pub fn initiator_cases(mtu: u32) -> Vec<Case> {
    cases(mtu).into_iter().filter(is_initiator_case).collect()
}

fn is_initiator_case(case: &Case) -> bool {
    !case.random && case.queue_depth == INITIATOR_QD
}

/// Why the tool cannot run here, in one line; `None` when it can.
pub fn skip_reason(vblade: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("compare: skipped: needs root (network namespaces and raw sockets)".into());
    }
    if find_program("ip").is_none() {
        return Some("compare: skipped: needs `ip` (iproute2) on PATH".into());
    }
    if find_program(vblade).is_none() {
        return Some(format!("compare: skipped: needs {vblade} on PATH (apt-get install vblade)"));
    }
    None
}

/// On SIGINT or SIGTERM: stop every process in this run's namespaces, delete the namespaces
/// and the backing file, then exit with 128 + the signal. The measurement threads are left
/// to die with the process; what they made is found by name (this process's id is in every
/// namespace and file name), so nothing outlives an interrupted run.
pub fn clean_up_on_signal() -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("compare-signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("compare: interrupted; cleaning up");
            let pid = std::process::id();
            aoe_testkit::netns::remove_all_made_by(pid);
            aoe_testkit::data::remove_images_made_by(pid);
            std::process::exit(128 + signal);
        }
    })?;
    Ok(())
}

/// The aoe-target binary next to the running executable (`target/release/aoe-target` when
/// run with `cargo run --release`), if there is one.
pub fn default_target_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("aoe-target");
    find_program(candidate.to_str()?)
}

/// A running target and where to read its CPU time.
pub enum Running {
    /// A target program (vblade or the aoe-target binary), killed on drop.
    Process(Guarded),
    /// aoe-target's server on a thread of this process, stopped on drop.
    Thread {
        /// Tells the server loop to return.
        stop: Arc<AtomicBool>,
        /// The thread.
        join: Option<JoinHandle<io::Result<()>>>,
        /// Its kernel thread id.
        tid: i32,
    },
}

impl Running {
    /// Starts `target` on the target end of `link`, exporting `file` as shelf 1 slot 0.
    pub fn start(link: &Link, target: Target, options: &Options, file: &Path) -> io::Result<Running> {
        match (target, &options.target_bin) {
            (Target::Vblade, _) => start_process(link, &options.vblade, &[], options.buffer_count, file),
            (Target::AoeTarget, Some(bin)) => {
                let flags: &[&str] = if options.target_rx_ring { &[] } else { &["--no-rx-ring"] };
                start_process(link, &bin.to_string_lossy(), flags, options.buffer_count, file)
            }
            (Target::AoeTarget, None) => start_in_process(link, options, file),
            (Target::Variant(i), _) => {
                let variant = &options.variants[i];
                let bin = variant.bin.as_ref().or(options.target_bin.as_ref()).ok_or_else(|| {
                    io::Error::other(format!("variant {} needs the aoe-target binary", variant.label))
                })?;
                let mut flags: Vec<&str> = variant.flags.iter().map(String::as_str).collect();
                if !options.target_rx_ring {
                    flags.push("--no-rx-ring");
                }
                start_process(link, &bin.to_string_lossy(), &flags, options.buffer_count, file)
            }
        }
    }

    /// The process id (a program) or thread id (in process) whose CPU time is counted.
    pub fn id(&self) -> i64 {
        match self {
            Running::Process(g) => i64::from(g.pid()),
            Running::Thread { tid, .. } => i64::from(*tid),
        }
    }

    /// CPU time the target has used so far.
    pub fn cpu(&self) -> io::Result<Duration> {
        match self {
            Running::Process(g) => cpu::process(g.pid()),
            Running::Thread { tid, .. } => cpu::thread(*tid),
        }
    }

    /// Ok while it is serving; for a process that exited, an error with its status.
    pub fn check_alive(&mut self) -> io::Result<()> {
        match self {
            Running::Process(g) => match g.try_wait()? {
                None => Ok(()),
                Some(status) => Err(io::Error::other(format!(
                    "target process exited ({status}); stderr: {}",
                    g.stderr().trim()
                ))),
            },
            Running::Thread { join, .. } => match join.as_ref().map(JoinHandle::is_finished) {
                Some(false) => Ok(()),
                _ => Err(io::Error::other("in-process target thread ended")),
            },
        }
    }

    /// Stops it: SIGTERM (then SIGKILL) for a program, the stop flag for a thread.
    pub fn stop(mut self) -> io::Result<()> {
        match &mut self {
            Running::Process(g) => g.terminate().map(drop),
            Running::Thread { stop, join, .. } => {
                stop.store(true, Ordering::Relaxed);
                match join.take().map(JoinHandle::join) {
                    Some(Ok(r)) => r,
                    Some(Err(_)) => Err(io::Error::other("in-process target thread panicked")),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Thread { stop, join, .. } = self {
            stop.store(true, Ordering::Relaxed);
            if let Some(j) = join.take() {
                let _ = j.join();
            }
        }
    }
}

/// Starts `program` (vblade, or the aoe-target binary) with `flags` on the target end of
/// `link`, exporting `file` as shelf 1 slot 0 with buffer count `buffer_count`.
pub fn start_process(
    link: &Link,
    program: &str,
    flags: &[&str],
    buffer_count: u16,
    file: &Path,
) -> io::Result<Running> {
    let mut cmd = link.target.command(program);
    cmd.args(flags).args([
        "-b",
        &buffer_count.to_string(),
        &SHELF.to_string(),
        &SLOT.to_string(),
        link.target_if(),
    ]);
    cmd.arg(file);
    let g = Guarded::spawn(cmd)?;
    Ok(Running::Process(g))
}

fn start_in_process(link: &Link, options: &Options, file: &Path) -> io::Result<Running> {
    let (buffer_count, rx_ring) = (options.buffer_count, options.target_rx_ring);
    let ifname = link.target_if().to_owned();
    let file = file.to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = mpsc::channel();
    let join = link.target.spawn_thread({
        let stop = stop.clone();
        move || -> io::Result<()> {
            let socket = AfPacketOptions { rx_ring, ..AfPacketOptions::default() };
            let transport = AfPacket::open(&ifname, socket).map_err(io::Error::other)?;
            let backend = FileBackend::open(&file, FileOptions::default())?;
            let config = ExportConfig { buffer_count, ..ExportConfig::new(SHELF, SLOT) };
            let export = Arc::new(Mutex::new(Export::new(config, backend)));
            let mut server = Server::new(transport, vec![export]);
            let _ = tid_tx.send(cpu::current_tid());
            server.announce()?;
            server.run(&stop)
        }
    });
    match tid_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(tid) => Ok(Running::Thread { stop, join: Some(join), tid }),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            match join.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(io::Error::other("in-process target did not start")),
            }
        }
    }
}

/// How aoe-target is run, for the header.
pub fn describe_mode(options: &Options) -> String {
    let receive = if options.target_rx_ring { "receive ring" } else { "recvmmsg, --no-rx-ring" };
    match &options.target_bin {
        Some(p) => format!("binary {} ({receive})", p.display()),
        None => format!(
            "in-process (aoe_target::server::Server over AfPacket, {receive}, FileBackend, one thread)"
        ),
    }
}

/// How a variant is run, for the header: its binary and flags.
pub fn describe_variant(variant: &Variant, options: &Options) -> String {
    let bin = variant.bin.as_ref().or(options.target_bin.as_ref());
    let bin = bin.map_or("aoe-target".into(), |p| p.display().to_string());
    let rx_ring = if options.target_rx_ring { "" } else { " --no-rx-ring" };
    format!("{bin} {}{rx_ring}", variant.flags.join(" "))
}

/// One target being measured: it, the client bound to it, and what it advertised.
struct Bench {
    target: Target,
    running: Running,
    client: Client<AfPacket>,
    buffer_count: u16,
}

impl Bench {
    /// Starts `target` on `link` and connects a client to it from the initiator end.
    fn start(link: &Link, target: Target, options: &Options, file: &Path) -> io::Result<Bench> {
        let mut running = Running::start(link, target, options, file)?;
        let transport = link
            .initiator
            .enter(|| AfPacket::open(link.initiator_if(), AfPacketOptions::default()))
            .map_err(io::Error::other)?;
        let mut client = match Client::connect(transport, SHELF, SLOT, Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => {
                let why = running.check_alive().err().map(|e| format!(" ({e})")).unwrap_or_default();
                return Err(io::Error::new(e.kind(), format!("{}: {e}{why}", target.label(options))));
            }
        };
        let info = *client.target();
        let warmup = Workload::sequential(Op::Read, info.max_sectors, 16, WARMUP);
        client.run(&warmup.retransmit_after(options.retransmit))?;
        Ok(Bench { target, running, client, buffer_count: info.buffer_count })
    }

    /// Runs one case and reads the CPU time the target and the client used meanwhile.
    fn measure(&mut self, case: Case, rep: usize, options: &Options) -> io::Result<Sample> {
        let duration = Duration::from_secs_f64(options.seconds);
        let work = if case.random {
            Workload::random_read(case.sectors, case.queue_depth, duration, SEED + rep as u64)
        } else {
            Workload::sequential(case.op, case.sectors, case.queue_depth, duration)
        }
        .retransmit_after(options.retransmit);
        self.client.discard_pending()?;
        let client_tid = cpu::current_tid();
        let target_before = self.running.cpu()?;
        let client_before = cpu::thread(client_tid)?;
        let stats = self.client.run(&work).map_err(|e| {
            let why = self.running.check_alive().err().map(|e| format!(" ({e})")).unwrap_or_default();
            let what = format!("{} {} QD{}", self.target.label(options), case.name, case.queue_depth);
            io::Error::new(e.kind(), format!("{what}: {e}{why}"))
        })?;
        let target_cpu = self.running.cpu()?.saturating_sub(target_before).as_secs_f64();
        let client_cpu = cpu::thread(client_tid)?.saturating_sub(client_before).as_secs_f64();
        self.running.check_alive()?;
        Ok(Sample {
            target: self.target,
            case,
            rep,
            buffer_count: self.buffer_count,
            stats,
            target_cpu_s: target_cpu,
            client_cpu_s: client_cpu,
        })
    }
}

/// aoe-initiator's Device against aoe-target, from the initiator end of aoe-target's link.
///
/// The target is found once (query config, IDENTIFY); each measurement then opens a new
/// socket and a Device for that target without asking again, and closes both afterwards. A
/// socket left open would collect a copy of every answer to the raw client meanwhile, which
/// the next Device call would have to read through, and could take for its own: both
/// initiators lay out their tags the same way.
struct InitiatorBench {
    info: TargetInfo,
    options: DeviceOptions,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
}

impl InitiatorBench {
    /// Finds aoe-target on `link`; calls will be of `chunk` bytes (fewer on a smaller disk).
    fn start(link: &Link, chunk: usize) -> io::Result<InitiatorBench> {
        let options = DeviceOptions {
            max_window: Some(INITIATOR_QD as u16),
            dead_timeout: INITIATOR_DEAD_TIMEOUT,
            ..DeviceOptions::default()
        };
        let dev = Device::open(initiator_links(link)?, SHELF, SLOT, &options)
            .map_err(|e| io::Error::other(format!("aoe-initiator Device: {e}")))?;
        let size = usize::try_from(dev.size_bytes()).unwrap_or(usize::MAX);
        let chunk = (chunk.min(size) / SECTOR_SIZE).max(1) * SECTOR_SIZE;
        Ok(InitiatorBench {
            info: dev.info().clone(),
            options,
            read_buf: vec![0; chunk],
            write_buf: (0..chunk).map(|i| (i % 251) as u8).collect(),
        })
    }

    /// Runs one sequential case with a fresh Device and reads the CPU time of this thread
    /// (which drives the Device) and of the target meanwhile.
    fn measure(
        &mut self,
        link: &Link,
        target: &mut Running,
        case: Case,
        rep: usize,
        options: &Options,
    ) -> io::Result<InitiatorSample> {
        let what = || format!("aoe-initiator Device {} QD{}", case.name, case.queue_depth);
        let mut dev = Device::with_target(initiator_links(link)?, self.info.clone(), &self.options)
            .map_err(|e| io::Error::other(format!("{}: {e}", what())))?;
        let window = dev.session().config().buffer_count;
        let buf = match case.op {
            Op::Read => &mut self.read_buf,
            Op::Write => &mut self.write_buf,
        };
        let duration = Duration::from_secs_f64(options.seconds);
        let tid = cpu::current_tid();
        let target_before = target.cpu()?;
        let before = cpu::thread(tid)?;
        let run = initiator::sequential(&mut dev, case.op, buf, duration).map_err(|e| {
            let why = target.check_alive().err().map(|e| format!(" ({e})")).unwrap_or_default();
            io::Error::new(e.kind(), format!("{}: {e}{why}", what()))
        })?;
        let initiator_cpu = cpu::thread(tid)?.saturating_sub(before).as_secs_f64();
        let target_cpu = target.cpu()?.saturating_sub(target_before).as_secs_f64();
        target.check_alive()?;
        let stats = dev.stats();
        Ok(InitiatorSample {
            case,
            rep,
            chunk: buf.len(),
            window,
            run,
            initiator_cpu_s: initiator_cpu,
            target_cpu_s: target_cpu,
            frames: stats.sent,
            retransmits: stats.retransmitted,
            timeouts: stats.timeouts,
        })
    }
}

/// A socket on the initiator end of `link`, as the Device takes it: with a receive ring, as
/// the `aoe` tool opens it.
fn initiator_links(link: &Link) -> io::Result<Vec<Box<dyn Transport>>> {
    let opts = AfPacketOptions { rx_ring: true, ..AfPacketOptions::default() };
    let transport =
        link.initiator.enter(|| AfPacket::open(link.initiator_if(), opts)).map_err(io::Error::other)?;
    Ok(vec![Box::new(transport)])
}

/// Who takes the next sample of a case.
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// The raw client, against the target of this [`Bench`] (index).
    Raw(usize),
    /// aoe-initiator's Device, against aoe-target.
    Device,
}

/// Runs the whole comparison. Progress goes to stderr; the result is returned.
///
/// Per MTU, each target gets its own veth pair and both run for the whole MTU block, so
/// that the measurements can alternate case by case: the two samples of a pair are taken
/// seconds apart, and drift on a busy machine hits both alike. The link ceiling is measured
/// on aoe-target's pair before the targets start (a running target would read the
/// ceiling's frames too). aoe-initiator's Device, when measured, takes its samples right
/// after or before the raw client's against aoe-target: vblade, aoe-target, Device in one
/// case, the other way round in the next.
pub fn run(options: &Options) -> io::Result<Report> {
    let started = Instant::now();
    let duration = Duration::from_secs_f64(options.seconds);
    let size = usize::try_from(options.size_mib << 20).map_err(io::Error::other)?;
    let vblade = find_program(&options.vblade)
        .ok_or_else(|| io::Error::other(format!("{} not found", options.vblade)))?;
    let options = Options { vblade: vblade.to_string_lossy().into_owned(), ..options.clone() };
    eprintln!("compare: writing a {} MiB backing file on tmpfs", options.size_mib);
    let image = TempImage::new(size, SEED)?;

    let mut samples = Vec::new();
    let mut initiator_samples = Vec::new();
    let mut ceilings: Vec<Ceiling> = Vec::new();
    for &mtu in &options.mtus {
        let vblade_link = Link::new("aoecmp", mtu)?;
        let target_link = Link::new("aoecmp", mtu)?;
        for rep in 0..options.reps {
            // Target to initiator: the direction read data flows.
            let l = &target_link;
            let c = ceiling::best(&l.target, l.target_if(), &l.initiator, l.initiator_if(), duration)?;
            eprintln!(
                "compare: MTU {mtu} rep {}/{}: link ceiling {:.0} frames/s of {} bytes = {:.1} MB/s of \
                 sectors (window {:?})",
                rep + 1,
                options.reps,
                c.frames_per_s(),
                c.frame_len,
                c.sector_mb_per_s(),
                c.window,
            );
            ceilings.push(c);
        }
        let variant_links =
            (0..options.variants.len()).map(|_| Link::new("aoecmp", mtu)).collect::<io::Result<Vec<_>>>()?;
        let mut benches = vec![
            Bench::start(&vblade_link, Target::Vblade, &options, image.path())?,
            Bench::start(&target_link, Target::AoeTarget, &options, image.path())?,
        ];
        for (i, link) in variant_links.iter().enumerate() {
            benches.push(Bench::start(link, Target::Variant(i), &options, image.path())?);
        }
        let mut device = match options.initiator_chunk {
            Some(chunk) => Some(InitiatorBench::start(&target_link, chunk)?),
            None => None,
        };
        for rep in 0..options.reps {
            for (i, case) in cases(mtu).into_iter().enumerate() {
                let mut order = vec![Turn::Raw(0), Turn::Raw(1)];
                if device.is_some() && is_initiator_case(&case) {
                    order.push(Turn::Device);
                }
                // After the Device, which stays next to aoe-target's sample either way round.
                order.extend((2..benches.len()).map(Turn::Raw));
                if (rep + i) % 2 == 1 {
                    order.reverse();
                }
                for turn in order {
                    match turn {
                        Turn::Raw(b) => {
                            let sample = benches[b].measure(case, rep, &options)?;
                            progress(&sample, &options);
                            samples.push(sample);
                        }
                        Turn::Device => {
                            let Some(device) = device.as_mut() else { continue };
                            let target = &mut benches[1].running;
                            let sample = device.measure(&target_link, target, case, rep, &options)?;
                            initiator_progress(&sample, &options);
                            initiator_samples.push(sample);
                        }
                    }
                }
            }
        }
        for bench in benches {
            if let Err(e) = bench.running.stop() {
                eprintln!("compare: {} did not stop cleanly: {e}", bench.target.label(&options));
            }
        }
    }
    Ok(Report::new(
        &options,
        describe_mode(&options),
        &options.vblade,
        samples,
        initiator_samples,
        ceilings,
        started.elapsed(),
    ))
}

fn progress(s: &Sample, options: &Options) {
    let trouble = if s.stats.retransmits + s.stats.lost + s.stats.errors > 0 {
        format!("  retx {} lost {} errors {}", s.stats.retransmits, s.stats.lost, s.stats.errors)
    } else {
        String::new()
    };
    eprintln!(
        "compare: MTU {} rep {}/{} {:<10} {:<12} QD{:<2} {:>7.1} MB/s {:>6.0} IOPS {:>7.1} us  cpu {:.2} s \
         (client {:.2} s){trouble}",
        s.case.mtu,
        s.rep + 1,
        options.reps,
        s.target.label(options),
        s.case.name,
        s.stats.queue_depth,
        s.stats.mb_per_s(),
        s.stats.iops(),
        s.stats.mean_latency_us(),
        s.target_cpu_s,
        s.client_cpu_s,
    );
}

fn initiator_progress(s: &InitiatorSample, options: &Options) {
    let trouble = if s.retransmits + s.timeouts > 0 {
        format!("  retx {} timeouts {}", s.retransmits, s.timeouts)
    } else {
        String::new()
    };
    eprintln!(
        "compare: MTU {} rep {}/{} {:<10} {:<12} QD{:<2} {:>7.1} MB/s {:>6} calls of {} KiB  cpu {:.2} s \
         (initiator {:.2} s){trouble}",
        s.case.mtu,
        s.rep + 1,
        options.reps,
        "Device",
        s.case.name,
        s.window,
        s.run.mb_per_s(),
        s.run.calls,
        s.chunk >> 10,
        s.target_cpu_s,
        s.initiator_cpu_s,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_reads_only_where_4k_fits_a_frame() {
        let at1500 = cases(1500);
        assert_eq!(at1500.len(), 4);
        assert!(at1500.iter().all(|c| !c.random && c.sectors == 2));
        let at9000 = cases(9000);
        assert_eq!(at9000.len(), 6);
        let random: Vec<_> = at9000.iter().filter(|c| c.random).map(|c| (c.sectors, c.queue_depth)).collect();
        assert_eq!(random, vec![(8, 1), (8, 32)]);
        assert!(at9000.iter().filter(|c| !c.random).all(|c| c.sectors == 17));
    }

    #[test]
    fn variants_are_label_equals_flags() {
        let v: Variant = "busy-poll=--kernel-busy-poll 50  --qdisc-bypass".parse().unwrap();
        assert_eq!(v.label, "busy-poll");
        assert_eq!(v.flags, ["--kernel-busy-poll", "50", "--qdisc-bypass"]);
        assert_eq!(v.bin, None);
        let v: Variant = "old=bin=/tmp/aoe-target.old --busy-poll=0".parse().unwrap();
        assert_eq!((v.label.as_str(), v.flags.as_slice()), ("old", &["--busy-poll=0".to_string()][..]));
        assert_eq!(v.bin.as_deref(), Some(Path::new("/tmp/aoe-target.old")));
        let v: Variant = "old=bin=/tmp/a".parse().unwrap();
        assert!(v.flags.is_empty() && v.bin.is_some());
        for (bad, why) in [
            ("--qdisc-bypass", "expected LABEL=FLAGS"),
            ("=--qdisc-bypass", "one word"),
            ("a b=--qdisc-bypass", "one word"),
            ("aoe-target=--qdisc-bypass", "already measured"),
            ("x=", "plain aoe-target"),
            ("x=  ", "plain aoe-target"),
            ("x=bin=", "names no program"),
            ("x=bin=/a bin=/b", "twice"),
        ] {
            let err = bad.parse::<Variant>().unwrap_err();
            assert!(err.contains(why) && err.starts_with("variant ") && !err.contains('\n'), "{bad}: {err}");
        }
        let twice: Vec<Variant> = ["a=--x", "a=--y"].iter().map(|t| t.parse().unwrap()).collect();
        let bin = Path::new("/bin/aoe-target");
        assert_eq!(variants_problem(&twice, Some(bin)).unwrap(), "variant a is given twice");
        assert!(variants_problem(&twice[..1], Some(bin)).is_none());
        assert!(variants_problem(&twice[..1], None).unwrap().contains("needs the aoe-target binary"));
        let old: Variant = "old=bin=/tmp/a".parse().unwrap();
        assert!(variants_problem(&[old], None).is_none(), "bin= needs no other binary");
    }

    #[test]
    fn the_device_is_measured_in_the_sequential_qd16_cases() {
        for mtu in [1500, 9000] {
            let v: Vec<_> = initiator_cases(mtu).iter().map(|c| (c.name, c.op, c.queue_depth)).collect();
            assert_eq!(v, vec![("seq read", Op::Read, 16), ("seq write", Op::Write, 16)]);
        }
    }
}
