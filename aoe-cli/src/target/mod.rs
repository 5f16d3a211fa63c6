//! The `aoe-target` program: vblade's arguments, or `--config` for many exports, turned
//! into [`settings::Settings`] and served by a [`service::Service`].
//!
//! ```
//! use aoe_cli::target::Cli;
//! use clap::Parser;
//!
//! let cli = Cli::try_parse_from(["aoe-target", "-r", "-o", "8", "1", "0", "eth1", "/srv/disk.img"])?;
//! let settings = cli.settings()?;
//! let export = &settings.exports[0];
//! assert_eq!((export.name(), export.offset, export.read_only), ("e1.0".to_string(), 8, true));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use aoe_proto::MacAddr;
use clap::{ArgAction, Parser};

use aoe_target::export::DEFAULT_BUFFER_COUNT;
use tracing_subscriber::filter::LevelFilter;

use crate::common::{init_logging, parse_args, parse_mac};
use service::Service;
use settings::{ExportSettings, Settings, SettingsError, MAX_IO_THREADS, MAX_KERNEL_BUSY_POLL};

pub mod control;
pub mod ctl;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod state;

const LONG_ABOUT: &str = "\
Serve files or block devices as ATA over Ethernet (AoE) disks, compatible with vblade.

Given SHELF SLOT NETIF FILE, aoe-target serves one disk, addressed as eSHELF.SLOT, on one \
network interface, and takes vblade's options. Given --config, it serves every export listed \
in a TOML file, each on one or more interfaces, from one process.

It speaks AoE protocol revision 11: query config, issue ATA (read, write, identify, flush, \
check power mode, set features, SMART status), MAC mask list and reserve/release. At start-up \
it broadcasts a query-config answer per export on each of its interfaces, so initiators that \
are already running find it.

It needs root or CAP_NET_RAW for its raw Ethernet sockets. All settings are checked before \
anything is served; a problem is reported as one line on stderr, \"aoe-target: <what is \
wrong>\", and the exit status is non-zero. SIGINT or SIGTERM stops it: it answers the frames \
in hand, flushes every file and exits with status 0.

With --config, SIGHUP (or `aoe-target ctl reload`) re-reads the file: exports added are \
announced and served, removed ones are flushed once their I/O is done, changed ones are \
applied without disturbing the others; a file with an error is refused with one log line and \
the running configuration kept. Under systemd (Type=notify) it reports READY, RELOADING and \
STOPPING.

`aoe-target ctl status | stats [--json] | reload | monitor [SECS]` asks a running target \
through its control socket (see `aoe-target ctl --help`); --metrics serves Prometheus \
metrics.";

/// Where a usage error points.
const HELP: &str = "aoe-target --help";

const AFTER_HELP: &str = "See `aoe-target --help` for units, the configuration file and examples.";

const AFTER_LONG_HELP: &str = "\
Examples:
  Export /srv/disk0.img as e1.0 on eth1, as `vblade 1 0 eth1 /srv/disk0.img` would:
      aoe-target 1 0 eth1 /srv/disk0.img

  Export 1 GiB of /dev/sdb starting 1 MiB in, read-only, to two initiators only:
      aoe-target -r -o 2048 -l 2097152 -m 00:11:22:33:44:55,001122334466 2 1 eth1 /dev/sdb

  Export what an NBD server serves (nbdkit, qemu-nbd) as e1.1:
      aoe-target 1 1 eth1 'nbd+unix:///?socket=/run/nbdkit.sock'

  Serve every export of a configuration file, logging more:
      aoe-target -v --config /etc/aoe-target/exports.toml

  Serve metrics, look at the counters, change the file and reload it:
      aoe-target --metrics 127.0.0.1:9172 --config /etc/aoe-target/exports.toml &
      curl -s http://127.0.0.1:9172/metrics | grep aoe_target_read_bytes_total
      aoe-target ctl status
      kill -HUP $(pidof aoe-target)        # or: aoe-target ctl reload

Configuration file:
  One [[export]] table per disk. Unknown keys are errors. Offsets and lengths are in
  sectors of 512 bytes, as with -o and -l. An export offered on several interfaces is one
  disk: its config string, mask and reservations are shared.

      busy_poll_us = 50                 # --busy-poll (optional, before the first table)
      rx_ring = true                    # false: as --no-rx-ring (optional, idem)
      qdisc_bypass = false              # true: as --qdisc-bypass (optional, idem)
      tx_ring = false                   # true: as --tx-ring (optional, idem)
      kernel_busy_poll_us = 0           # --kernel-busy-poll (optional, idem)
      af_xdp = false                    # true: as --af-xdp (optional, idem)
      io_threads = 16                   # --io-threads (optional, idem)
      metrics = \"127.0.0.1:9172\"        # --metrics (optional, idem)
      control = \"/run/aoe-target/exports.sock\"  # --control (optional, idem)

      [[export]]
      shelf = 1                         # 0 to 65534 (required)
      slot = 0                          # 0 to 254 (required)
      interfaces = [\"eth1\", \"eth2\"]     # at least one (required)
      file = \"/srv/disk0.img\"           # file, block device or NBD URI (required)
      read_only = false                 # -r
      direct = false                    # -d, O_DIRECT
      sync = false                      # -s, O_SYNC
      offset = 0                        # -o, sectors skipped
      length = 2048                     # -l, sectors exported (default: the rest)
      buffer_count = 16                 # -b
      mask = [\"00:11:22:33:44:55\"]      # -m (default: answer every initiator)

Logging:
  Logs go to stderr: one line per export and interface at start-up, e.g.
  \"e1.0 on eth1 (52:54:00:12:34:56): 2048 sectors, 17 sectors/frame, bufcnt 16, file
  /srv/disk0.img (read-write)\", and errors. -v adds debug messages, -vv trace messages;
  RUST_LOG (e.g. RUST_LOG=debug) overrides both. A failing disk (EIO, ENOSPC, ...) is
  logged at WARN once per run of failures, with the export, byte offset, length and error;
  every failure is counted (aoe_target_backend_errors_total).

Exit status:
  0  stopped by SIGINT or SIGTERM, or --check found the settings fine (SIGHUP reloads)
  1  a setting is wrong (missing file, unknown or down interface, ...) or serving failed
  2  the command line does not parse

A second SIGINT or SIGTERM while stopping exits at once with status 1.";

/// The `aoe-target` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "aoe-target",
    version,
    about = "Export a file or block device as an ATA over Ethernet (AoE) disk (vblade-compatible)",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP,
    override_usage = "aoe-target [OPTIONS] SHELF SLOT NETIF FILE\n       aoe-target [-v] [--check] --config FILE\n       aoe-target ctl [--socket PATH] status|stats|reload|monitor",
    max_term_width = 100
)]
pub struct Cli {
    /// Buffer count advertised to initiators: how many requests each may keep outstanding
    /// (1 to 65535)
    #[arg(
        short = 'b',
        long,
        value_name = "BUFCNT",
        default_value_t = DEFAULT_BUFFER_COUNT,
        value_parser = clap::value_parser!(u16).range(1..),
        help_heading = "Export options (vblade's)"
    )]
    pub buffer_count: u16,

    /// Sectors of 512 bytes at the start of FILE that are not exported: sector 0 of the disk
    /// is sector SECTORS of FILE
    #[arg(
        short = 'o',
        long,
        value_name = "SECTORS",
        default_value_t = 0,
        help_heading = "Export options (vblade's)"
    )]
    pub offset: u64,

    /// Sectors of 512 bytes exported from the offset on [default: the rest of FILE]
    #[arg(short = 'l', long, value_name = "SECTORS", help_heading = "Export options (vblade's)")]
    pub length: Option<u64>,

    /// Open FILE with O_DIRECT, bypassing the page cache
    #[arg(short = 'd', long, help_heading = "Export options (vblade's)")]
    pub direct: bool,

    /// Open FILE with O_SYNC: a write is on stable storage before it is answered
    #[arg(short = 's', long, help_heading = "Export options (vblade's)")]
    pub sync: bool,

    /// Export read-only: FILE is opened read-only and writes are refused (ATA ERR, ABRT)
    #[arg(short = 'r', long, help_heading = "Export options (vblade's)")]
    pub read_only: bool,

    /// Answer only these initiators (the initial MAC mask list), comma-separated; each as
    /// 00:11:22:aa:bb:cc, 00-11-22-aa-bb-cc or 001122aabbcc, any case. Initiators may edit
    /// the list later (AoE command 2) [default: answer every initiator]
    #[arg(
        short = 'm',
        long,
        value_name = "MAC[,MAC...]",
        value_delimiter = ',',
        value_parser = parse_mac,
        help_heading = "Export options (vblade's)"
    )]
    pub mask: Vec<MacAddr>,

    /// Serve the exports listed in the TOML file FILE instead of SHELF SLOT NETIF FILE (see
    /// "Configuration file" below)
    #[arg(
        short = 'c',
        long,
        value_name = "FILE",
        conflicts_with_all = ["shelf", "buffer_count", "offset", "length", "direct", "sync", "read_only", "mask"]
    )]
    pub config: Option<PathBuf>,

    /// Microseconds each interface keeps polling for frames after the last ones came before
    /// it sleeps: answers a queue-depth-1 initiator without a wake-up per request, at the
    /// cost of a busy CPU while requests keep coming; 0 sleeps at once. Overrides the
    /// configuration file's busy_poll_us [default: 50]
    #[arg(long, value_name = "MICROSECONDS")]
    pub busy_poll: Option<u64>,

    /// Receive frames with recvmmsg rather than through a ring shared with the kernel
    /// (PACKET_RX_RING), which takes frames that keep coming without a system call. Overrides
    /// the configuration file's rx_ring
    #[arg(long)]
    pub no_rx_ring: bool,

    /// Send frames straight to the interface's driver, past the kernel's queueing discipline
    /// (PACKET_QDISC_BYPASS): less work per frame sent, but no traffic shaping, and a frame
    /// the device cannot take at once is dropped rather than queued. Overrides the
    /// configuration file's qdisc_bypass [default: off]
    #[arg(long)]
    pub qdisc_bypass: bool,

    /// Send frames through a ring shared with the kernel (PACKET_TX_RING) on a send-only
    /// socket of its own, one per sending thread, rather than with sendmmsg: each frame is
    /// copied into the ring and one system call sends the batch. Where the kernel refuses the
    /// ring, frames are sent with sendmmsg, with a warning. With --af-xdp the receiving
    /// thread's answers go through the AF_XDP socket where there is one. Overrides the
    /// configuration file's tx_ring [default: off]
    #[arg(long)]
    pub tx_ring: bool,

    /// Microseconds the kernel busy-polls the interface's receive queue when a receive finds
    /// no frame, rather than sleeping until the interrupt (SO_BUSY_POLL, with
    /// SO_PREFER_BUSY_POLL and a budget of 64 where the kernel has them): lower latency for a
    /// NIC whose driver uses NAPI, for CPU time spent spinning in the kernel; 0 leaves the
    /// kernel's setting alone; at most 1000000. Overrides the configuration file's
    /// kernel_busy_poll_us [default: 0]
    #[arg(long, value_name = "MICROSECONDS", value_parser = clap::value_parser!(u64).range(0..=MAX_KERNEL_BUSY_POLL))]
    pub kernel_busy_poll: Option<u64>,

    /// Send the answers of each interface's receiving thread through an AF_XDP socket (copy
    /// mode, on the interface's queue 0) rather than with sendmmsg: fewer kernel cycles per
    /// frame. For MTUs up to 4000; an interface with a larger MTU, one whose queue another
    /// AF_XDP socket holds, or a kernel without AF_XDP is served with sendmmsg, with a
    /// warning. Overrides the configuration file's af_xdp [default: off]
    #[arg(long)]
    pub af_xdp: bool,

    /// Threads per interface that do the disk's reads, writes and flushes, so that requests
    /// are not held up behind one the disk is busy with; 0 does them in the thread that
    /// receives, fastest for files the page cache holds. Overrides the configuration file's
    /// io_threads [default: 16 for a block device, an NBD export or with -d, else 0]
    #[arg(long, value_name = "THREADS", value_parser = clap::value_parser!(u16).range(0..=MAX_IO_THREADS as i64))]
    pub io_threads: Option<u16>,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, e.g. 127.0.0.1:9172. Overrides
    /// the configuration file's metrics [default: none]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,

    /// The control socket `aoe-target ctl` talks to. Overrides the configuration file's
    /// control [default: with --config, /run/aoe-target/NAME.sock, NAME the configuration
    /// file's name without .toml; else none]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Check the settings (files, offsets, lengths, interfaces; an NBD server is connected to
    /// and its size shown) and exit without serving
    #[arg(long)]
    pub check: bool,

    /// Log more: -v debug, -vv trace (RUST_LOG overrides)
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Shelf, the AoE major address of the disk: 0 to 65534
    #[arg(value_name = "SHELF", required_unless_present = "config")]
    pub shelf: Option<u16>,

    /// Slot, the AoE minor address of the disk: 0 to 254
    #[arg(value_name = "SLOT", required_unless_present = "config")]
    pub slot: Option<u8>,

    /// Network interface to serve on, e.g. eth1; it must be up. A frame carries
    /// floor((MTU - 22) / 512) sectors: 2 at MTU 1500, 17 at MTU 9000
    #[arg(value_name = "NETIF", required_unless_present = "config")]
    pub netif: Option<String>,

    /// Regular file or block device holding the disk's sectors, or an NBD export:
    /// nbd://HOST/EXPORT, nbd://HOST:PORT/EXPORT (port 10809 by default) or nbd+unix:///EXPORT?socket=PATH. The
    /// NBD server decides the size and whether the disk is read-only; it is reconnected when
    /// it drops the connection
    #[arg(value_name = "FILE", required_unless_present = "config")]
    pub file: Option<PathBuf>,
}

impl Cli {
    /// The validated settings: the configuration file's, or the one export the arguments
    /// describe. Needs no I/O for the latter.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        let mut settings = self.exports()?;
        if let Some(us) = self.busy_poll {
            settings.busy_poll = Duration::from_micros(us);
        }
        if self.no_rx_ring {
            settings.rx_ring = false;
        }
        if self.qdisc_bypass {
            settings.qdisc_bypass = true;
        }
        if self.tx_ring {
            settings.tx_ring = true;
        }
        if self.af_xdp {
            settings.af_xdp = true;
        }
        if let Some(us) = self.kernel_busy_poll {
            settings.kernel_busy_poll = settings::kernel_busy_poll(us);
        }
        if let Some(threads) = self.io_threads {
            settings.io_threads = Some(usize::from(threads));
        }
        if let Some(addr) = self.metrics {
            settings.metrics = Some(addr);
        }
        if let Some(path) = &self.control {
            settings.control = Some(path.clone());
        }
        Ok(settings)
    }

    fn exports(&self) -> Result<Settings, SettingsError> {
        if let Some(path) = &self.config {
            return Settings::load(path);
        }
        let (Some(shelf), Some(slot), Some(netif), Some(file)) =
            (self.shelf, self.slot, self.netif.as_deref(), self.file.as_ref())
        else {
            unreachable!("clap requires SHELF SLOT NETIF FILE without --config");
        };
        let export = ExportSettings {
            read_only: self.read_only,
            direct: self.direct,
            sync: self.sync,
            offset: self.offset,
            length: self.length,
            buffer_count: self.buffer_count,
            mask: self.mask.clone(),
            ..ExportSettings::new(shelf, slot, netif, file.clone())
        };
        let settings = Settings::single(export);
        settings.validate()?;
        Ok(settings)
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("aoe-target: {message}");
    ExitCode::FAILURE
}

/// The whole program: parse the process's arguments, check the settings, serve until
/// SIGINT or SIGTERM.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // `ctl` comes before vblade's positional arguments, whose SHELF it would otherwise be.
    if argv.get(1).is_some_and(|a| a == "ctl") {
        return ctl::main(&argv[1..]);
    }
    match parse_args("aoe-target", &argv, HELP) {
        Ok(cli) => run(&cli),
        Err(code) => code,
    }
}

/// Runs a parsed command line (see [`main`]).
pub fn run(cli: &Cli) -> ExitCode {
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(e) => return fail(e),
    };
    if cli.check {
        return match Service::check(&settings) {
            Ok(exports) => {
                for (export, sectors) in exports {
                    println!(
                        "{}: {sectors} sectors of {} on {}",
                        export.name(),
                        export.file.display(),
                        export.interfaces.join(", ")
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    init_logging(match cli.verbose {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    });
    // Registered before anything is opened: a signal during start-up then stops the service
    // as soon as it starts. A second signal while the first is handled exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let registered = signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)));
        if let Err(e) = registered {
            return fail(format_args!("cannot handle signal {signal}: {e}"));
        }
    }
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload)) {
        return fail(format_args!("cannot handle SIGHUP: {e}"));
    }
    let service = match Service::open(&settings) {
        Ok(service) => service,
        Err(e) => return fail(e),
    };
    let load = || cli.settings();
    match service.run(service::Controls { stop: &stop, reload: &reload, load: &load }) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("aoe-target").chain(args.iter().copied()))
            .map_err(|e| crate::common::one_line(&e, HELP))
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn vblade_arguments() {
        let cli = parse(&[
            "-b",
            "32",
            "-o",
            "8",
            "-l",
            "16",
            "-d",
            "-s",
            "-r",
            "-m",
            "001122aabbcc,00:11:22:33:44:55",
            "7",
            "3",
            "eth1",
            "/dev/sdb",
        ])
        .unwrap();
        let s = cli.settings().unwrap();
        let e = &s.exports[0];
        assert_eq!((e.shelf, e.slot, e.interfaces.as_slice()), (7, 3, &["eth1".to_string()][..]));
        assert_eq!((e.buffer_count, e.offset, e.length), (32, 8, Some(16)));
        assert!(e.direct && e.sync && e.read_only);
        assert_eq!(e.mask.len(), 2);
        assert_eq!(s.source, None);
        // defaults
        let s = parse(&["1", "0", "eth1", "f"]).unwrap().settings().unwrap();
        assert_eq!(s.exports[0], ExportSettings::new(1, 0, "eth1", "f"));
        assert_eq!(s.busy_poll, aoe_target::server::DEFAULT_BUSY_POLL);
        assert!(s.rx_ring);
    }

    #[test]
    fn busy_poll_applies_to_a_configuration_file_too() {
        let path = std::env::temp_dir().join(format!("aoe-cli-busy-poll-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "busy_poll_us = 200\n[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"eth1\"]\nfile = \"f\"\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let from_file = parse(&["--config", config]).unwrap().settings().unwrap();
        assert_eq!(from_file.busy_poll, Duration::from_micros(200));
        let overridden = parse(&["--busy-poll", "0", "--config", config]).unwrap().settings().unwrap();
        assert_eq!(overridden.busy_poll, Duration::ZERO);
        let single = parse(&["--busy-poll", "7", "1", "0", "eth1", "f"]).unwrap().settings().unwrap();
        assert_eq!(single.busy_poll, Duration::from_micros(7));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn kernel_socket_variants_override_the_configuration_file() {
        let path = std::env::temp_dir().join(format!("aoe-cli-variants-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "kernel_busy_poll_us = 20\n[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"eth1\"]\nfile = \"f\"\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let from_file = parse(&["--config", config]).unwrap().settings().unwrap();
        assert_eq!(
            (from_file.qdisc_bypass, from_file.kernel_busy_poll),
            (false, Some(Duration::from_micros(20)))
        );
        let overridden = parse(&["--qdisc-bypass", "--kernel-busy-poll", "0", "--config", config]).unwrap();
        let overridden = overridden.settings().unwrap();
        assert_eq!((overridden.qdisc_bypass, overridden.kernel_busy_poll), (true, None));
        let single = parse(&["--qdisc-bypass", "--kernel-busy-poll", "50", "1", "0", "eth1", "f"]).unwrap();
        let single = single.settings().unwrap();
        assert_eq!((single.qdisc_bypass, single.kernel_busy_poll), (true, Some(Duration::from_micros(50))));
        let plain = parse(&["1", "0", "eth1", "f"]).unwrap().settings().unwrap();
        assert_eq!((plain.qdisc_bypass, plain.kernel_busy_poll, plain.af_xdp), (false, None, false));
        assert!(parse(&["--af-xdp", "--config", config]).unwrap().settings().unwrap().af_xdp);
        assert!(parse(&["--af-xdp", "1", "0", "eth1", "f"]).unwrap().settings().unwrap().af_xdp);
        assert!(!plain.tx_ring && !from_file.tx_ring);
        assert!(parse(&["--tx-ring", "--config", config]).unwrap().settings().unwrap().tx_ring);
        assert!(parse(&["--tx-ring", "1", "0", "eth1", "f"]).unwrap().settings().unwrap().tx_ring);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn io_threads_override_the_configuration_file() {
        let path = std::env::temp_dir().join(format!("aoe-cli-io-threads-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "io_threads = 5\n[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"eth1\"]\nfile = \"f\"\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        assert_eq!(parse(&["--config", config]).unwrap().settings().unwrap().io_threads, Some(5));
        let overridden = parse(&["--io-threads", "0", "--config", config]).unwrap().settings().unwrap();
        assert_eq!(overridden.io_threads, Some(0));
        let single = parse(&["--io-threads", "256", "1", "0", "eth1", "f"]).unwrap().settings().unwrap();
        assert_eq!(single.io_threads, Some(256));
        assert_eq!(parse(&["1", "0", "eth1", "f"]).unwrap().settings().unwrap().io_threads, None);
        let err = parse(&["--io-threads", "257", "1", "0", "eth1", "f"]).unwrap_err();
        assert!(err.contains("257 is not in 0..=256"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn no_rx_ring_overrides_the_configuration_file() {
        let path = std::env::temp_dir().join(format!("aoe-cli-rx-ring-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "rx_ring = true\n[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"eth1\"]\nfile = \"f\"\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        assert!(parse(&["--config", config]).unwrap().settings().unwrap().rx_ring);
        assert!(!parse(&["--no-rx-ring", "--config", config]).unwrap().settings().unwrap().rx_ring);
        assert!(!parse(&["--no-rx-ring", "1", "0", "eth1", "f"]).unwrap().settings().unwrap().rx_ring);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn errors_are_one_line() {
        for (args, want) in [
            (&[][..], "the following required arguments were not provided: <SHELF> <SLOT> <NETIF> <FILE>"),
            (&["1", "256", "eth0", "f"], "invalid value '256' for '[SLOT]': 256 is not in 0..=255"),
            (&["-m", "00:11", "1", "0", "eth0", "f"], "\"00:11\" is not a MAC address"),
            (&["-b", "0", "1", "0", "eth0", "f"], "invalid value '0' for '--buffer-count <BUFCNT>'"),
            (
                &["--kernel-busy-poll", "1000001", "1", "0", "eth0", "f"],
                "invalid value '1000001' for '--kernel-busy-poll <MICROSECONDS>': 1000001 is not in 0..=1000000",
            ),
            (&["--kernel-busy-poll", "x", "1", "0", "eth0", "f"], "invalid value 'x' for '--kernel-busy-poll"),
            (&["-x", "1", "0", "eth0", "f"], "unexpected argument '-x'"),
            (&["--config", "c.toml", "1", "0", "eth0", "f"], "cannot be used with"),
            (&["--config", "c.toml", "-r"], "cannot be used with"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n') && err.ends_with("(see aoe-target --help)"), "{err:?}");
        }
        let err = parse(&["1", "255", "eth0", "f"]).unwrap().settings().unwrap_err().to_string();
        assert_eq!(err, "e1.255: slot 255 is the broadcast slot; use 0 to 254");
    }
}
