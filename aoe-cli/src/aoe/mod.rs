//! The `aoe` command-line tool: find AoE disks, read and write them, manage their config
//! string, MAC mask and reservations, benchmark them, serve them to NBD clients, and a
//! self-contained demo.
//!
//! The binary only calls [`main`]. Each subcommand lives in the module named after it; they
//! share the interface choice (`iface`) and the human formats (`format`), and talk to
//! disks through [`Device`] alone.
//!
//! Errors are one line on stderr, `aoe: <what went wrong>`, with exit status 1; a command
//! line that does not parse is one line too, with exit status 2.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aoe_proto::MacAddr;
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use aoe_initiator::{Device, DeviceOptions, Error};
use tracing_subscriber::filter::LevelFilter;

mod args;
mod bench;
mod config;
mod demo;
mod discover;
mod format;
mod identify;
mod iface;
mod mask;
mod nbd;
mod progress;
mod reserve;
mod rng;
mod sys;
mod transfer;

pub use args::DiskName;
use args::{parse_duration, parse_size};

use crate::common::{init_logging, parse_args, parse_mac, EXIT_USAGE};

const LONG_ABOUT: &str = "\
Talk to ATA over Ethernet (AoE) disks from user space: find them, read and write them, manage \
their config string, MAC mask and reservations, and measure them.

Disks are named e<shelf>.<slot> as the Linux aoe driver names them (shelf 0 to 65534, slot 0 \
to 254). The tool talks raw Ethernet (EtherType 0x88A2), so it needs root or CAP_NET_RAW. By \
default it uses every interface that is up, carries Ethernet and is not a loopback; -i IFACE \
(repeatable) names the interfaces instead. Several interfaces that reach the same disk are \
used together (multipath).

Sizes and offsets are bytes; K, M, G and T suffixes are powers of 1024 (64K = 65536). \
Throughput is in decimal megabytes per second (1 MB/s = 1,000,000 bytes/s).";

const AFTER_HELP: &str = "\
Examples:
  aoe discover                       every disk on every Ethernet interface
  aoe -i eth1 read e1.0 disk.img     copy disk e1.0 to a file, via eth1 only
  aoe write --verify e1.0 disk.img   copy a file to e1.0 and check it
  sudo aoe demo                      a target and an initiator in two private namespaces
  aoe nbd --unix /tmp/e1.0.sock e1.0 serve e1.0 to NBD clients (qemu, nbdcopy, nbdfuse)

Exit status: 0 success, 1 failure (one line on stderr: aoe: ...), 2 bad command line.
`aoe <command> --help` describes each command, with its units and an example.";

/// The `aoe` command line.
#[derive(Debug, Parser)]
#[command(
    name = "aoe",
    version,
    about = "ATA over Ethernet (AoE) initiator: find, read, write, manage and measure AoE disks",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    max_term_width = 100,
    propagate_version = true
)]
pub(crate) struct Cli {
    /// Network interface to use, e.g. eth1; repeat for several (multipath)
    /// [default: every interface that is up, Ethernet and not loopback]
    #[arg(short = 'i', long = "iface", value_name = "IFACE", global = true, action = ArgAction::Append)]
    pub(crate) ifaces: Vec<String>,

    /// How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or
    /// milliseconds (500ms)
    #[arg(long, value_name = "SECONDS", global = true, default_value = "1", value_parser = parse_duration)]
    pub(crate) timeout: Duration,

    /// Silence after which a target that stopped answering is given up (seconds or ms)
    #[arg(long, value_name = "SECONDS", global = true, default_value = "10", value_parser = parse_duration)]
    pub(crate) dead_timeout: Duration,

    /// Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[arg(short = 'v', long, global = true, action = ArgAction::Count)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Find AoE disks and show what they say about themselves
    #[command(
        long_about = "Broadcast a query config on each interface, collect the answers for --timeout, then \
IDENTIFY each disk. Prints one line per disk: its name, every path to it (local interface → the \
disk's MAC), capacity (binary units and 512-byte sectors), sectors per frame, buffer count \
(requests it queues), firmware version, LBA48 support, model, serial and config string.",
        after_help = "Examples:\n  aoe discover\n  aoe discover eth1 eth2 --timeout 3\n  aoe discover --json | jq '.[].name'"
    )]
    Discover(DiscoverArgs),
    /// Show a disk's IDENTIFY DEVICE data
    #[command(after_help = "Examples:\n  aoe identify e1.0\n  aoe identify --raw e1.0")]
    Identify(IdentifyArgs),
    /// Read, set or test a disk's config string
    #[command(
        long_about = "Read, set or test a disk's config string (at most 1024 bytes). `set` succeeds only \
when the disk has no string yet (or the same one); `force` always replaces it; `test` and `prefix` \
succeed (exit 0) when the disk's string equals, or starts with, STRING, and fail (exit 1) when the \
disk stays silent within --timeout, which is how a disk says no.",
        after_help = "Examples:\n  aoe config e1.0\n  aoe config e1.0 set 'host=db1'\n  aoe config e1.0 prefix host="
    )]
    Config(ConfigArgs),
    /// List or edit a disk's MAC mask list (which initiators it answers)
    #[command(
        long_about = "List or edit a disk's MAC mask list. While the list is not empty, the disk ignores \
every initiator not on it, so adding a MAC other than your own locks you out unless you add yours too.",
        after_help = "Examples:\n  aoe mask e1.0\n  aoe mask e1.0 add 00:11:22:aa:bb:cc 001122aabbcd\n  aoe mask e1.0 del 00:11:22:aa:bb:cc"
    )]
    Mask(MaskArgs),
    /// List, set or release a disk's reservation (which initiators may use it)
    #[command(
        long_about = "List, set or release a disk's reserve list. While it is not empty, reads and \
writes from other initiators fail with 'target is reserved'. `set` fails when others hold the \
reservation; `force` takes it anyway; `set` with no MAC (or `release`) releases it.",
        after_help = "Examples:\n  aoe reserve e1.0\n  aoe reserve e1.0 set 00:11:22:aa:bb:cc\n  aoe reserve e1.0 release"
    )]
    Reserve(ReserveArgs),
    /// Copy bytes of a disk to a file or stdout
    #[command(
        long_about = "Copy --length bytes of the disk from byte --offset on (default: the whole disk) to \
FILE, or to stdout when FILE is -. With a terminal on stderr a progress bar shows the throughput; \
otherwise one summary line (bytes, seconds, MB/s) is printed on stderr at the end.",
        after_help = "Examples:\n  aoe read e1.0 disk.img\n  aoe read --offset 1M --length 4K e1.0 - | xxd | head"
    )]
    Read(ReadArgs),
    /// Copy a file or stdin to a disk
    #[command(
        long_about = "Copy FILE (or stdin when FILE is -) to the disk from byte --offset on, then flush \
the disk's cache (FLUSH CACHE EXT). Writes the whole input, or --length bytes of it; input that \
would run past the end of the disk is refused. Offsets and lengths need not be multiples of 512: \
partial sectors are read, patched and written back. --verify reads every chunk back right after \
writing it and stops at the first difference.",
        after_help = "Examples:\n  aoe write e1.0 disk.img\n  aoe write --verify --offset 64K e1.0 boot.bin\n  head -c 1M /dev/urandom | aoe write e1.0 -"
    )]
    Write(WriteArgs),
    /// Measure sequential throughput and random-read IOPS
    #[command(
        long_about = "Measure a disk: sequential read (and, with --write, sequential write) of the first \
--size bytes in MB/s, then random 4 KiB reads over the whole disk at queue depth 1 and 32 in \
operations per second. Without --write nothing is written. A disk queues at most its buffer count \
of requests, so the depth-32 test keeps at most that many in flight.",
        after_help = "Examples:\n  aoe bench e1.0\n  aoe bench --size 1G --write e1.0     (destroys the first GiB of e1.0)"
    )]
    Bench(BenchArgs),
    /// Run a target and an initiator in two private network namespaces (needs root)
    #[command(
        long_about = "Show the whole stack on one machine, touching none of its networks: build two \
private network namespaces joined by a veth pair at MTU 9000, serve a 256 MiB in-memory disk as \
e1.0 from an in-process target in one, and in the other discover it, write 64 MiB of random \
data, flush, read it back and verify it, printing the throughput. Everything is removed at the \
end, also on Ctrl-C. Needs root (network namespaces and raw sockets).",
        after_help = "Examples:\n  sudo aoe demo\n  sudo aoe demo --bench"
    )]
    Demo(DemoArgs),
    /// Serve a disk to NBD clients (qemu, nbdcopy, nbdfuse, nbd-client)
    #[command(
        long_about = "Serve the disk as a Network Block Device (NBD) export, in the foreground, until \
SIGINT or SIGTERM (then the disk's cache is flushed). Listens on a Unix socket (--unix PATH) or on \
TCP, by default 127.0.0.1:10809, the NBD port on loopback only: NBD has no authentication and no \
encryption, so anyone who can connect can read and write the whole disk. Use --tcp with another \
address only on a network you trust. Up to 64 clients may connect at once, each with many requests \
in flight; flushes become FLUSH CACHE EXT on the disk; a target that stops answering fails the \
requests after --dead-timeout with EIO. The export is named after the disk (e1.0) unless --name \
says otherwise; a client asking for the default export (the empty name) gets it too. Once the \
disk answers and the socket listens, prints one line on stdout: `serving DISK as URI`.",
        after_help = "Examples:\n  aoe nbd --unix /run/e1.0.sock e1.0 &\n  nbdinfo 'nbd+unix:///e1.0?socket=/run/e1.0.sock'\n  \
qemu-img convert -O qcow2 'nbd+unix:///e1.0?socket=/run/e1.0.sock' e1.0.qcow2\n  aoe nbd --read-only e1.0     (nbd://127.0.0.1:10809/e1.0)"
    )]
    Nbd(NbdArgs),
}

/// `aoe nbd`.
#[derive(Debug, Args)]
pub(crate) struct NbdArgs {
    /// The disk, e<shelf>.<slot>, e.g. e1.0
    #[arg(value_name = "DISK", value_parser = DiskName::from_str_clap)]
    pub(crate) disk: DiskName,
    /// Listen on this Unix socket (created; removed on exit)
    #[arg(long, value_name = "PATH", conflicts_with = "tcp")]
    pub(crate) unix: Option<PathBuf>,
    /// Listen on this TCP address and port [default: 127.0.0.1:10809, loopback only: NBD has
    /// no authentication]
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) tcp: Option<SocketAddr>,
    /// Refuse writes (EPERM) and tell clients the export is read-only
    #[arg(long)]
    pub(crate) read_only: bool,
    /// The export's name [default: the disk's name, e.g. e1.0]
    #[arg(long, value_name = "EXPORT")]
    pub(crate) name: Option<String>,
}

/// `aoe discover`.
#[derive(Debug, Args)]
pub(crate) struct DiscoverArgs {
    /// Interfaces to search (as -i) [default: every interface that is up, Ethernet and not
    /// loopback]
    #[arg(value_name = "IFACE")]
    pub(crate) ifaces: Vec<String>,
    /// Print a JSON array instead of a table (sizes in bytes and sectors, MACs as strings)
    #[arg(long)]
    pub(crate) json: bool,
}

/// `aoe identify`.
#[derive(Debug, Args)]
pub(crate) struct IdentifyArgs {
    /// The disk, e<shelf>.<slot>, e.g. e1.0
    #[arg(value_name = "DISK", value_parser = DiskName::from_str_clap)]
    pub(crate) disk: DiskName,
    /// Print the fields as a JSON object
    #[arg(long, conflicts_with = "raw")]
    pub(crate) json: bool,
    /// Print the 512 bytes of IDENTIFY data as hex (256 little-endian words)
    #[arg(long)]
    pub(crate) raw: bool,
}

/// What `aoe config` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ConfigAction {
    /// Print the config string and the disk's buffer count, firmware and sectors per frame
    Read,
    /// Set the string if the disk has none (or the same)
    Set,
    /// Set the string, replacing any
    Force,
    /// Succeed if the disk's string equals STRING
    Test,
    /// Succeed if the disk's string starts with STRING
    Prefix,
}

/// `aoe config`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The disk, e<shelf>.<slot>, e.g. e1.0
    #[arg(value_name = "DISK", value_parser = DiskName::from_str_clap)]
    pub(crate) disk: DiskName,
    /// What to do
    #[arg(value_enum, value_name = "ACTION", default_value_t = ConfigAction::Read)]
    pub(crate) action: ConfigAction,
    /// The config string for set, force, test and prefix: up to 1024 bytes
    #[arg(value_name = "STRING")]
    pub(crate) string: Option<String>,
}

/// What `aoe mask` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MaskAction {
    /// Print the mask list
    List,
    /// Add the MACs to the list
    Add,
    /// Delete the MACs from the list
    Del,
}

/// `aoe mask`.
#[derive(Debug, Args)]
pub(crate) struct MaskArgs {
    /// The disk, e<shelf>.<slot>, e.g. e1.0
    #[arg(value_name = "DISK", value_parser = DiskName::from_str_clap)]
    pub(crate) disk: DiskName,
    /// What to do
    #[arg(value_enum, value_name = "ACTION", default_value_t = MaskAction::List)]
    pub(crate) action: MaskAction,
    /// MAC addresses (00:11:22:aa:bb:cc, 00-11-22-aa-bb-cc or 001122aabbcc), up to 255
    #[arg(value_name = "MAC", value_parser = parse_mac)]
    pub(crate) macs: Vec<MacAddr>,
}

/// What `aoe reserve` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReserveAction {
    /// Print the reserve list
    List,
    /// Reserve the disk for the MACs (none: release it), unless others hold it
    Set,
    /// Reserve the disk for the MACs (none: release it), whoever holds it
    Force,
    /// Release the disk (the same as set with no MAC)
    Release,
}

/// `aoe reserve`.
#[derive(Debug, Args)]
pub(crate) struct ReserveArgs {
    /// The disk, e<shelf>.<slot>, e.g. e1.0
    #[arg(value_name = "DISK", value_parser = DiskName::from_str_clap)]
    pub(crate) disk: DiskName,
    /// What to do
    #[arg(value_enum, value_name = "ACTION", default_value_t = ReserveAction::List)]
    pub(crate) action: ReserveAction,
    /// MAC addresses (00:11:22:aa:bb:cc, 00-11-22-aa-bb-cc or 001122aabbcc), up to 255
    #[arg(value_name = "MAC", value_parser = parse_mac)]
    pub(crate) macs: Vec<MacAddr>,
}

/// `aoe read`.
#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The disk, e<shelf>.<slot>, e.g. e1.0
    #[arg(value_name = "DISK", value_parser = DiskName::from_str_clap)]
    pub(crate) disk: DiskName,
    /// Where the bytes go; - is stdout
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// First byte of the disk to read (K, M, G, T suffixes: powers of 1024)
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_size)]
    pub(crate) offset: u64,
    /// Bytes to read [default: up to the end of the disk]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub(crate) length: Option<u64>,
}

/// `aoe write`.
#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// The disk, e<shelf>.<slot>, e.g. e1.0
    #[arg(value_name = "DISK", value_parser = DiskName::from_str_clap)]
    pub(crate) disk: DiskName,
    /// Where the bytes come from; - is stdin
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// First byte of the disk to write (K, M, G, T suffixes: powers of 1024)
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_size)]
    pub(crate) offset: u64,
    /// Bytes to write [default: all of FILE]; FILE must hold at least that many
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub(crate) length: Option<u64>,
    /// Read every chunk back after writing it and compare; exit 1 at the first difference
    #[arg(long)]
    pub(crate) verify: bool,
}

/// `aoe bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The disk, e<shelf>.<slot>, e.g. e1.0
    #[arg(value_name = "DISK", value_parser = DiskName::from_str_clap)]
    pub(crate) disk: DiskName,
    /// Bytes of the sequential tests, from the start of the disk (K, M, G, T suffixes)
    /// [default: 256M, or the disk's size if smaller]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub(crate) size: Option<u64>,
    /// Also measure sequential writes: overwrites the first --size bytes of the disk
    #[arg(long)]
    pub(crate) write: bool,
    /// How long each random-read test runs (seconds or ms)
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_duration)]
    pub(crate) seconds: Duration,
}

/// `aoe demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Also benchmark the in-memory disk (aoe bench --write) before cleaning up
    #[arg(long)]
    pub(crate) bench: bool,
}

impl DiskName {
    fn from_str_clap(text: &str) -> Result<DiskName, String> {
        text.parse()
    }
}

/// Why a command failed: one line for stderr and the exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    code: u8,
    /// Printed after `aoe: ` (all but a few messages that name the tool themselves).
    prefixed: bool,
}

impl Failure {
    /// A failure with exit status 1.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure { message: message.into(), code: 1, prefixed: true }
    }

    /// A command line that makes no sense (exit status 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure { message: message.into(), code: EXIT_USAGE, prefixed: true }
    }

    /// Printed as it is, without the `aoe: ` prefix.
    pub(crate) fn unprefixed(self) -> Self {
        Failure { prefixed: false, ..self }
    }

    /// An initiator error talking to `disk`, named unless the message names it already.
    pub(crate) fn disk(disk: DiskName, error: Error) -> Self {
        match error {
            // They name the disk themselves.
            Error::NoSuchDisk { .. } | Error::Conflict { .. } => Failure::new(error.to_string()),
            e => Failure::new(format!("{disk}: {e}")),
        }
    }

    /// An I/O error while doing `what`.
    pub(crate) fn io(what: impl fmt::Display, error: std::io::Error) -> Self {
        Failure::new(format!("{what}: {error}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Cli {
    /// How devices are opened: discovery waits `--timeout`, a silent target is given up
    /// after `--dead-timeout`.
    pub(crate) fn device_options(&self) -> DeviceOptions {
        let mut opts = DeviceOptions::default();
        opts.discover.timeout = self.timeout;
        opts.discover.identify_timeout = self.dead_timeout;
        opts.dead_timeout = self.dead_timeout;
        opts
    }

    /// Finds `disk` on the chosen interfaces and IDENTIFYs it.
    pub(crate) fn open_device(&self, disk: DiskName) -> Result<Device, Failure> {
        let names = iface::choose(&self.ifaces)?;
        let links = iface::open(&names)?;
        Device::open(links, disk.shelf, disk.slot, &self.device_options()).map_err(|e| Failure::disk(disk, e))
    }
}

/// The `aoe` command line as clap describes it: what its man pages and shell completions
/// are generated from.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The whole program: parse the process's arguments, run the command, report.
pub fn main() -> ExitCode {
    sys::default_sigpipe();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli: Cli = match parse_args("aoe", &argv, &help_for(&argv)) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // Failures are reported once, as the `aoe:` line; the library's warnings about them
    // would say the same thing again.
    init_logging(match cli.verbose {
        0 => LevelFilter::ERROR,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    });
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let prefix = if failure.prefixed { "aoe: " } else { "" };
            eprintln!("{prefix}{failure}");
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Discover(a) => discover::run(cli, a),
        Command::Identify(a) => identify::run(cli, a),
        Command::Config(a) => config::run(cli, a),
        Command::Mask(a) => mask::run(cli, a),
        Command::Reserve(a) => reserve::run(cli, a),
        Command::Read(a) => transfer::read(cli, a),
        Command::Write(a) => transfer::write(cli, a),
        Command::Bench(a) => bench::run(cli, a),
        Command::Demo(a) => demo::run(cli, a),
        Command::Nbd(a) => nbd::run(cli, a),
    }
}

/// The help to point at after a usage error: `aoe SUBCOMMAND --help` for the first argument
/// that names a subcommand, else `aoe --help`.
fn help_for(argv: &[OsString]) -> String {
    let cmd = Cli::command();
    let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
    match argv.iter().skip(1).filter_map(|a| a.to_str()).find(|a| names.contains(a)) {
        Some(s) => format!("aoe {s} --help"),
        None => "aoe --help".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let argv: Vec<OsString> =
            std::iter::once("aoe").chain(args.iter().copied()).map(Into::into).collect();
        Cli::try_parse_from(&argv).map_err(|e| crate::common::one_line(&e, &help_for(&argv)))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_parse() {
        let cli = parse(&["-i", "eth1", "-i", "eth2", "read", "--offset", "1M", "e1.0", "-"]).unwrap();
        assert_eq!(cli.ifaces, ["eth1", "eth2"]);
        let Command::Read(r) = cli.command else { panic!() };
        assert_eq!((r.disk, r.offset, r.length), (DiskName { shelf: 1, slot: 0 }, 1 << 20, None));
        let cli = parse(&["config", "e2.3", "set", "host=a", "--timeout", "500ms"]).unwrap();
        assert_eq!(cli.timeout, Duration::from_millis(500));
        let Command::Config(c) = cli.command else { panic!() };
        assert_eq!((c.action, c.string.as_deref()), (ConfigAction::Set, Some("host=a")));
        let Command::Mask(m) = parse(&["mask", "e1.0"]).unwrap().command else { panic!() };
        assert_eq!((m.action, m.macs.len()), (MaskAction::List, 0));
        let Command::Reserve(r) = parse(&["reserve", "e1.0", "set"]).unwrap().command else { panic!() };
        assert_eq!((r.action, r.macs.len()), (ReserveAction::Set, 0));
        let Command::Discover(d) = parse(&["discover", "eth1", "--json"]).unwrap().command else { panic!() };
        assert!(d.json && d.ifaces == ["eth1"]);
        let Command::Nbd(n) = parse(&["nbd", "--unix", "/run/s", "--read-only", "e1.0"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!(
            (n.unix.as_deref(), n.tcp, n.read_only, n.name),
            (Some(std::path::Path::new("/run/s")), None, true, None)
        );
        let Command::Nbd(n) = parse(&["nbd", "--tcp", "[::1]:10809", "--name", "x", "e1.0"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!((n.tcp, n.name.as_deref()), (Some("[::1]:10809".parse().unwrap()), Some("x")));
    }

    #[test]
    fn usage_errors_are_one_line() {
        for (args, want, help) in [
            (&["read", "x1.0", "f"][..], "is not a disk name", "aoe read --help"),
            (&["identify", "e1.255"][..], "slot 255 is the broadcast slot", "aoe identify --help"),
            (&["mask", "e1.0", "add", "00:11"][..], "\"00:11\" is not a MAC address", "aoe mask --help"),
            (&["read", "--length", "3X", "e1.0", "f"][..], "unknown suffix \"X\"", "aoe read --help"),
            (&["frobnicate"][..], "unrecognized subcommand", "aoe --help"),
            (&["--timeout", "never", "discover"][..], "is not a duration", "aoe discover --help"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n') && err.ends_with(&format!("(see {help})")), "{err:?}");
        }
    }
}
