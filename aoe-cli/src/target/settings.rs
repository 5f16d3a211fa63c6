//! What the `aoe-target` program serves: exports read from the command line or a TOML file,
//! validated once before anything is opened.
//!
//! A configuration file lists one `[[export]]` table per exported disk:
//!
//! ```
//! use aoe_cli::target::settings::Settings;
//!
//! let settings = Settings::from_toml(
//!     r#"
//!     [[export]]
//!     shelf = 1
//!     slot = 0
//!     interfaces = ["eth1", "eth2"]
//!     file = "/srv/disk0.img"
//!     offset = 0          # sectors skipped at the start of the file
//!     length = 2048       # sectors exported (default: the rest of the file)
//!     mask = ["00:11:22:33:44:55"]
//!     "#,
//!     "exports.toml",
//! )?;
//! let export = &settings.exports[0];
//! assert_eq!((export.shelf, export.slot, export.buffer_count), (1, 0, 16));
//! assert_eq!(export.interfaces, ["eth1", "eth2"]);
//! # Ok::<(), aoe_cli::target::settings::SettingsError>(())
//! ```
//!
//! [`Settings::from_toml`] and [`Settings::validate`] need no I/O. What needs the system (the
//! file's size, the interfaces' state) is checked by [`super::service::Service::open`], which
//! reports its findings with the same [`SettingsError`].

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aoe_proto::{MacAddr, SHELF_BROADCAST, SLOT_BROADCAST};
use serde::{Deserialize, Deserializer};

use aoe_target::export::{Access, AccessRule, AccessRules, DEFAULT_BUFFER_COUNT, MAX_LIST_ENTRIES};
use aoe_target::server::DEFAULT_BUSY_POLL;

/// Every export one process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The exports, in the order they were given.
    pub exports: Vec<ExportSettings>,
    /// Where they came from: a configuration file, or `None` for the command line.
    pub source: Option<PathBuf>,
    /// How long each interface's server keeps polling after frames came before it sleeps
    /// ([`Server::set_busy_poll`](aoe_target::server::Server::set_busy_poll)).
    pub busy_poll: Duration,
    /// Receive through a ring shared with the kernel rather than with `recvmmsg`
    /// ([`AfPacketOptions::rx_ring`](aoe_transport::afpacket::AfPacketOptions::rx_ring)).
    pub rx_ring: bool,
    /// Send past the kernel's queueing discipline
    /// ([`AfPacketOptions::qdisc_bypass`](aoe_transport::afpacket::AfPacketOptions::qdisc_bypass)).
    pub qdisc_bypass: bool,
    /// Send through a ring shared with the kernel rather than with `sendmmsg`
    /// ([`AfPacketOptions::tx_ring`](aoe_transport::afpacket::AfPacketOptions::tx_ring)).
    pub tx_ring: bool,
    /// How long the kernel busy-polls the device when a receive finds no frame
    /// ([`AfPacketOptions::kernel_busy_poll`](aoe_transport::afpacket::AfPacketOptions::kernel_busy_poll));
    /// `None` (`kernel_busy_poll_us = 0`, the default) leaves the kernel's setting alone. At
    /// most [`MAX_KERNEL_BUSY_POLL`].
    pub kernel_busy_poll: Option<Duration>,
    /// Send the answers of each interface's serving thread through an AF_XDP socket
    /// ([`XdpSender`](aoe_transport::afxdp::XdpSender)), where the interface can have one,
    /// rather than with `sendmmsg`.
    pub af_xdp: bool,
    /// Threads per interface that do sector I/O
    /// ([`Server::set_io_threads`](aoe_target::server::Server::set_io_threads)); `None` chooses
    /// ([`Settings::io_threads_for`]).
    pub io_threads: Option<usize>,
    /// Where host names in access rules are looked up (`ethers` in the file).
    pub ethers: PathBuf,
    /// Where each export's config string, mask and reserve list are kept across restarts
    /// (`state_dir` in the file); `None` keeps them in memory only, as vblade does.
    pub state_dir: Option<PathBuf>,
    /// Where Prometheus metrics are served over HTTP (`metrics = "ADDR:PORT"` in the file,
    /// `--metrics`); `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// The control socket's path (`control` in the file, `--control`); `None` uses
    /// [`Settings::control_path`]'s default.
    pub control: Option<PathBuf>,
}

/// The folder control sockets go in unless the configuration says otherwise.
pub const CONTROL_DIR: &str = "/run/aoe-target";

/// Where host names are looked up unless the configuration says otherwise.
pub const DEFAULT_ETHERS: &str = "/etc/ethers";

/// Longest configuration file read: 4 MiB holds tens of thousands of exports.
pub const MAX_CONFIG_FILE: u64 = 4 << 20;

/// Longest kernel busy-poll ([`Settings::kernel_busy_poll`]), in microseconds: a second.
pub const MAX_KERNEL_BUSY_POLL: u64 = 1_000_000;

/// Most I/O threads per interface.
pub const MAX_IO_THREADS: usize = 256;
/// I/O threads per interface chosen for exports of block devices and `O_DIRECT` files.
pub const DEFAULT_IO_THREADS: usize = 16;

/// One exported disk: its address, where its sectors live and who may reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSettings {
    /// Shelf (AoE major address), 0 to 65534.
    pub shelf: u16,
    /// Slot (AoE minor address), 0 to 254.
    pub slot: u8,
    /// Network interfaces it is offered on (at least one).
    pub interfaces: Vec<String>,
    /// The regular file or block device holding the sectors, or an NBD export named by a URI:
    /// `nbd://HOST[:PORT]/EXPORT` or `nbd+unix:///EXPORT?socket=PATH`.
    pub file: PathBuf,
    /// Refuse writes (vblade `-r`).
    #[serde(default)]
    pub read_only: bool,
    /// Open the file with `O_DIRECT` (vblade `-d`).
    #[serde(default)]
    pub direct: bool,
    /// Open the file with `O_SYNC` (vblade `-s`).
    #[serde(default)]
    pub sync: bool,
    /// Sectors of 512 bytes at the start of the file that are not exported (vblade `-o`).
    #[serde(default)]
    pub offset: u64,
    /// Sectors exported; `None` exports the rest of the file after `offset` (vblade `-l`).
    #[serde(default)]
    pub length: Option<u64>,
    /// Requests the target queues, advertised to initiators (vblade `-b`), at least 1.
    #[serde(default = "default_buffer_count")]
    pub buffer_count: u16,
    /// Initial MAC mask: when non-empty only these initiators are answered (vblade `-m`).
    #[serde(default, deserialize_with = "mac_list")]
    pub mask: Vec<MacAddr>,
    /// Access rules, first match wins: `"allow MAC"`, `"read-only NAME"`, `"deny *"`...
    /// ([`RuleSetting`]).
    #[serde(default, deserialize_with = "rule_list")]
    pub rules: Vec<RuleSetting>,
}

/// One access rule as written in the configuration: `ACCESS WHO`, where ACCESS is `allow`,
/// `read-only` or `deny` and WHO a MAC address, a host name from the ethers file
/// (`/etc/ethers`) or `*` (every initiator no earlier rule names; only as the last rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSetting {
    /// What the initiators it names may do.
    pub access: Access,
    /// Whom it names.
    pub who: Initiator,
}

/// Whom an access rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initiator {
    /// One MAC address.
    Mac(MacAddr),
    /// A host name, looked up in the ethers file when the export is opened.
    Name(String),
    /// Every initiator no earlier rule names.
    Everyone,
}

impl std::str::FromStr for RuleSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("rule {text:?} {why}: write ACCESS WHO, ACCESS one of allow, read-only, deny and WHO a MAC address, a name from the ethers file or *")
        };
        let mut words = text.split_whitespace();
        let (Some(access), Some(who), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("is not two words"));
        };
        let access = match access {
            "allow" => Access::Allow,
            "read-only" => Access::ReadOnly,
            "deny" => Access::Deny,
            _ => return Err(bad(&format!("has an unknown access {access:?}"))),
        };
        let who = if who == "*" {
            Initiator::Everyone
        } else if let Ok(mac) = who.parse::<MacAddr>() {
            Initiator::Mac(mac)
        } else if who.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            Initiator::Name(who.to_owned())
        } else {
            return Err(bad(&format!("names {who:?}, which is neither a MAC address nor a host name")));
        };
        Ok(RuleSetting { access, who })
    }
}

impl fmt::Display for RuleSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = match self.access {
            Access::Allow => "allow",
            Access::ReadOnly => "read-only",
            Access::Deny => "deny",
        };
        match &self.who {
            Initiator::Mac(mac) => write!(f, "{access} {mac}"),
            Initiator::Name(name) => write!(f, "{access} {name}"),
            Initiator::Everyone => write!(f, "{access} *"),
        }
    }
}

fn rule_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RuleSetting>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts.iter().map(|t| t.parse().map_err(serde::de::Error::custom)).collect()
}

/// Resolves `rules` into the engine's [`AccessRules`], host names through `ethers` (the
/// text of an ethers file: `MAC NAME` per line, `#` comments). Errors name the rule.
pub fn resolve_rules(rules: &[RuleSetting], ethers: Option<&str>) -> Result<AccessRules, Problem> {
    let mut resolved = AccessRules::ALLOW_ALL;
    for rule in rules {
        let initiator = match &rule.who {
            Initiator::Everyone => {
                resolved.default = rule.access;
                continue;
            }
            Initiator::Mac(mac) => *mac,
            Initiator::Name(name) => ethers
                .and_then(|text| ethers_lookup(text, name))
                .ok_or_else(|| Problem::UnknownInitiator { rule: rule.to_string(), name: name.clone() })?,
        };
        resolved.rules.push(AccessRule { initiator, access: rule.access });
    }
    Ok(resolved)
}

/// The MAC of `name` in the text of an ethers file.
fn ethers_lookup(text: &str, name: &str) -> Option<MacAddr> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .find(|&(_, host)| host == name)
        .and_then(|(mac, _)| mac.parse().ok())
}

fn default_buffer_count() -> u16 {
    DEFAULT_BUFFER_COUNT
}

/// [`Settings::kernel_busy_poll`] for `us` microseconds: none for 0.
pub fn kernel_busy_poll(us: u64) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(us))
}

fn mac_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MacAddr>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| {
            t.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid MAC address {t:?}: expected six hex bytes like 00:11:22:aa:bb:cc or 001122aabbcc"
                ))
            })
        })
        .collect()
}

/// The top level of a configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Microseconds; see [`Settings::busy_poll`].
    busy_poll_us: Option<u64>,
    /// See [`Settings::rx_ring`].
    rx_ring: Option<bool>,
    /// See [`Settings::qdisc_bypass`].
    qdisc_bypass: Option<bool>,
    /// See [`Settings::tx_ring`].
    tx_ring: Option<bool>,
    /// Microseconds, 0 for none; see [`Settings::kernel_busy_poll`].
    kernel_busy_poll_us: Option<u64>,
    /// See [`Settings::af_xdp`].
    af_xdp: Option<bool>,
    /// See [`Settings::io_threads`].
    io_threads: Option<usize>,
    /// See [`Settings::ethers`].
    ethers: Option<PathBuf>,
    /// See [`Settings::state_dir`].
    state_dir: Option<PathBuf>,
    /// See [`Settings::metrics`].
    metrics: Option<SocketAddr>,
    /// See [`Settings::control`].
    control: Option<PathBuf>,
    #[serde(default)]
    export: Vec<ExportSettings>,
}

impl ExportSettings {
    /// An export of `file` at `shelf.slot` on `interface` with vblade's defaults.
    pub fn new(shelf: u16, slot: u8, interface: &str, file: impl Into<PathBuf>) -> Self {
        ExportSettings {
            shelf,
            slot,
            interfaces: vec![interface.to_owned()],
            file: file.into(),
            read_only: false,
            direct: false,
            sync: false,
            offset: 0,
            length: None,
            buffer_count: DEFAULT_BUFFER_COUNT,
            mask: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// The AoE name of the export, `e{shelf}.{slot}`.
    pub fn name(&self) -> String {
        format!("e{}.{}", self.shelf, self.slot)
    }
}

impl Settings {
    /// Settings for one export given on the command line.
    pub fn single(export: ExportSettings) -> Self {
        Settings {
            exports: vec![export],
            source: None,
            busy_poll: DEFAULT_BUSY_POLL,
            rx_ring: true,
            qdisc_bypass: false,
            tx_ring: false,
            kernel_busy_poll: None,
            af_xdp: false,
            io_threads: None,
            ethers: PathBuf::from(DEFAULT_ETHERS),
            state_dir: None,
            metrics: None,
            control: None,
        }
    }

    /// Where the control socket is: as configured, else for a configuration file
    /// `/run/aoe-target/NAME.sock`, NAME the file's name without `.toml` (`exports` for
    /// `/etc/aoe-target/exports.toml`); `None` for the command line without `--control`
    /// (vblade's form has no control socket unless asked).
    pub fn control_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.control {
            return Some(path.clone());
        }
        let stem = self.source.as_ref()?.file_stem()?.to_string_lossy().into_owned();
        Some(Path::new(CONTROL_DIR).join(format!("{stem}.sock")))
    }

    /// The I/O threads for an interface that serves exports `exports` (indices into
    /// [`exports`](Self::exports)), of which `block_devices` are block devices or NBD exports:
    /// as set, else [`DEFAULT_IO_THREADS`] when one of them is one of those or opened with
    /// `O_DIRECT` (reads and writes that wait on a disk or a network), else none (files whose sectors the page cache
    /// holds are served fastest by the serving thread itself).
    pub fn io_threads_for(&self, exports: &[usize], block_devices: usize) -> usize {
        match self.io_threads {
            Some(threads) => threads,
            None if block_devices > 0 || exports.iter().any(|&i| self.exports[i].direct) => {
                DEFAULT_IO_THREADS
            }
            None => 0,
        }
    }

    /// Parses a configuration file's text; `name` is used in error messages. Unknown keys are
    /// errors. The result is validated ([`validate`](Self::validate)).
    pub fn from_toml(text: &str, name: impl Into<PathBuf>) -> Result<Self, SettingsError> {
        let name = name.into();
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |span| line_column(text, span.start));
            let context = e
                .span()
                .and_then(|span| text.lines().nth(line.saturating_sub(1)).filter(|_| span.start < text.len()))
                .map(|l| l.trim().to_owned())
                .unwrap_or_default();
            SettingsError::Syntax {
                file: name.clone(),
                line,
                column,
                message: e.message().trim().replace('\n', "; "),
                context,
            }
        })?;
        let busy_poll = file.busy_poll_us.map_or(DEFAULT_BUSY_POLL, Duration::from_micros);
        let rx_ring = file.rx_ring.unwrap_or(true);
        let settings = Settings {
            exports: file.export,
            source: Some(name),
            busy_poll,
            rx_ring,
            qdisc_bypass: file.qdisc_bypass.unwrap_or(false),
            tx_ring: file.tx_ring.unwrap_or(false),
            kernel_busy_poll: file.kernel_busy_poll_us.and_then(kernel_busy_poll),
            af_xdp: file.af_xdp.unwrap_or(false),
            io_threads: file.io_threads,
            ethers: file.ethers.unwrap_or_else(|| PathBuf::from(DEFAULT_ETHERS)),
            state_dir: file.state_dir,
            metrics: file.metrics,
            control: file.control,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Reads and parses a configuration file (see [`from_toml`](Self::from_toml)). A file
    /// longer than [`MAX_CONFIG_FILE`] (say, `/dev/zero`) is refused, not read on forever.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        use std::io::Read;
        let fail = |source| SettingsError::ReadConfig { file: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(fail)?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_FILE + 1).read_to_end(&mut bytes).map_err(fail)?;
        if bytes.len() as u64 > MAX_CONFIG_FILE {
            let why = format!("longer than {MAX_CONFIG_FILE} bytes, which no list of exports needs");
            return Err(fail(std::io::Error::new(std::io::ErrorKind::InvalidData, why)));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| fail(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))?;
        Self::from_toml(&text, path)
    }

    /// Checks what can be checked without I/O: addresses, duplicates, counts.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.exports.is_empty() {
            return Err(self.error(None, Problem::NoExports));
        }
        if let Some(threads) = self.io_threads.filter(|&t| t > MAX_IO_THREADS) {
            return Err(self.error(None, Problem::TooManyIoThreads(threads)));
        }
        let us = self.kernel_busy_poll.map_or(0, |t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX));
        if us > MAX_KERNEL_BUSY_POLL {
            return Err(self.error(None, Problem::KernelBusyPollTooLong(us)));
        }
        let mut seen: HashMap<(u16, u8), usize> = HashMap::new();
        for (index, export) in self.exports.iter().enumerate() {
            let fail = |problem| Err(self.error(Some(index), problem));
            if export.shelf == SHELF_BROADCAST {
                return fail(Problem::BroadcastShelf);
            }
            if export.slot == SLOT_BROADCAST {
                return fail(Problem::BroadcastSlot);
            }
            if let Some(&first) = seen.get(&(export.shelf, export.slot)) {
                return fail(Problem::Duplicate { name: export.name(), first });
            }
            seen.insert((export.shelf, export.slot), index);
            if export.interfaces.is_empty() {
                return fail(Problem::NoInterfaces);
            }
            for (i, name) in export.interfaces.iter().enumerate() {
                if name.is_empty() {
                    return fail(Problem::EmptyInterfaceName);
                }
                if export.interfaces[..i].contains(name) {
                    return fail(Problem::RepeatedInterface(name.clone()));
                }
            }
            if export.buffer_count == 0 {
                return fail(Problem::ZeroBufferCount);
            }
            if export.length == Some(0) {
                return fail(Problem::ZeroLength);
            }
            if export.file.as_os_str().is_empty() {
                return fail(Problem::NoFile);
            }
            if let Some(address) = super::service::nbd_address(&export.file) {
                if let Err(e) = address {
                    return fail(Problem::NbdUri(e));
                }
                if export.direct || export.sync {
                    return fail(Problem::NbdFileOption);
                }
            }
            if export.mask.len() > MAX_LIST_ENTRIES {
                return fail(Problem::MaskTooLong(export.mask.len()));
            }
            if let Some(mac) = export.mask.iter().find(|m| m.is_multicast()) {
                return fail(Problem::GroupAddress { setting: "mask", mac: *mac });
            }
            let rule_macs = export.rules.iter().filter_map(|r| match r.who {
                Initiator::Mac(mac) => Some(mac),
                _ => None,
            });
            if let Some(mac) = rule_macs.into_iter().find(MacAddr::is_multicast) {
                return fail(Problem::GroupAddress { setting: "rules", mac });
            }
            if let Some(at) = export.rules.iter().position(|r| r.who == Initiator::Everyone) {
                if at + 1 < export.rules.len() {
                    return fail(Problem::RuleAfterEveryone(export.rules[at + 1].to_string()));
                }
            }
        }
        Ok(())
    }

    /// An error about export `index` (or the whole settings), placed for the user.
    pub fn error(&self, index: Option<usize>, problem: Problem) -> SettingsError {
        let export = index.and_then(|i| self.exports.get(i));
        SettingsError::Invalid {
            place: Place {
                file: self.source.clone(),
                index: index.filter(|_| self.source.is_some()),
                name: export.map(ExportSettings::name),
            },
            problem,
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// Where a problem is: the file, the export's index in it and its AoE name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The configuration file, `None` for the command line.
    pub file: Option<PathBuf>,
    /// The export's position in the file (0-based), when the problem concerns one.
    pub index: Option<usize>,
    /// The export's AoE name, `e{shelf}.{slot}`.
    pub name: Option<String>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.index, &self.name) {
            (Some(file), Some(i), Some(name)) => write!(f, "{}: export[{i}] ({name}): ", file.display()),
            (Some(file), _, _) => write!(f, "{}: ", file.display()),
            (None, _, Some(name)) => write!(f, "{name}: "),
            (None, _, None) => Ok(()),
        }
    }
}

/// What is wrong with an export. Each message names the setting (the key in the file; the
/// command line options are documented with the same names).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file has no `[[export]]`.
    #[error("no [[export]] table: nothing to serve")]
    NoExports,
    /// Shelf 0xFFFF addresses every shelf.
    #[error("shelf 65535 is the broadcast shelf; use 0 to 65534")]
    BroadcastShelf,
    /// Slot 0xFF addresses every slot.
    #[error("slot 255 is the broadcast slot; use 0 to 254")]
    BroadcastSlot,
    /// Two exports have the same address.
    #[error("shelf and slot: {name} is already exported by export[{first}]")]
    Duplicate {
        /// `e{shelf}.{slot}`.
        name: String,
        /// The index of the export that has it first.
        first: usize,
    },
    /// `interfaces` is empty.
    #[error("interfaces is empty: name at least one network interface")]
    NoInterfaces,
    /// An empty interface name.
    #[error("interfaces: an interface name is empty")]
    EmptyInterfaceName,
    /// The same interface twice.
    #[error("interfaces lists {0} twice")]
    RepeatedInterface(String),
    /// `io_threads` above [`MAX_IO_THREADS`].
    #[error("io_threads = {0} is more than {MAX_IO_THREADS}")]
    TooManyIoThreads(usize),
    /// `kernel_busy_poll_us` above [`MAX_KERNEL_BUSY_POLL`].
    #[error("kernel_busy_poll_us = {0} is more than {MAX_KERNEL_BUSY_POLL} (a second)")]
    KernelBusyPollTooLong(u64),
    /// `buffer_count = 0`.
    #[error("buffer_count must be at least 1")]
    ZeroBufferCount,
    /// `length = 0`.
    #[error("length must be at least 1 sector")]
    ZeroLength,
    /// `file = ""`.
    #[error("file is empty: name a regular file or block device")]
    NoFile,
    /// More mask entries than an answer lists.
    #[error("mask has {0} entries; the protocol's list holds at most {MAX_LIST_ENTRIES}")]
    MaskTooLong(usize),
    /// A broadcast or multicast address where an initiator's belongs.
    #[error("{setting}: {mac} is a group (broadcast or multicast) address, which no initiator has")]
    GroupAddress {
        /// `mask` or `rules`.
        setting: &'static str,
        /// The address.
        mac: MacAddr,
    },
    /// Two exports write the same sectors of one file.
    #[error("file {path} is also exported by export[{first}] ({other}) over the same sectors; two disks writing one file corrupt each other (make both read_only, or give them disjoint offset and length)")]
    SameFileTwice {
        /// The path.
        path: PathBuf,
        /// The other export's index.
        first: usize,
        /// Its name.
        other: String,
    },
    /// A loopback interface.
    #[error("interfaces: {0} is a loopback interface, which reaches no other host")]
    Loopback(String),
    /// A rule after the one for `*`, which it could never match.
    #[error("rules: {0:?} comes after the rule for *, which covers every initiator: put * last")]
    RuleAfterEveryone(String),
    /// A rule names a host the ethers file does not list.
    #[error("rules: {rule:?}: no host {name:?} in the ethers file")]
    UnknownInitiator {
        /// The rule.
        rule: String,
        /// The name.
        name: String,
    },
    /// The state directory cannot be created or used.
    #[error("state_dir {path}: {source}")]
    StateDir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A state file cannot be read or used.
    #[error("{0}")]
    State(String),
    /// The ethers file cannot be read.
    #[error("rules name hosts, but the ethers file {path} cannot be read: {source}")]
    Ethers {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file cannot be opened.
    #[error("file {path}: {source}")]
    File {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `file` is a URI but not an NBD one this target can use.
    #[error("file {0}")]
    NbdUri(aoe_target::backend::nbd::UriError),
    /// `direct` or `sync` with an NBD export.
    #[error("direct and sync are for files: an NBD export's server decides how it writes")]
    NbdFileOption,
    /// The NBD server cannot be reached or refuses the export (the message names it).
    #[error("{source}")]
    Nbd {
        /// The URI.
        uri: String,
        /// Why.
        source: std::io::Error,
    },
    /// A directory, socket, ...
    #[error("file {0} is not a regular file or block device")]
    NotAFile(PathBuf),
    /// `offset` is past the end of the file.
    #[error("offset of {offset} sectors is beyond the end of {path} ({sectors} sectors)")]
    OffsetBeyondEnd {
        /// The path.
        path: PathBuf,
        /// Requested offset, in sectors.
        offset: u64,
        /// Whole sectors in the file.
        sectors: u64,
    },
    /// `offset + length` is past the end of the file.
    #[error("offset {offset} + length {length} sectors runs past the end of {path} ({sectors} sectors)")]
    LengthBeyondEnd {
        /// The path.
        path: PathBuf,
        /// Requested offset, in sectors.
        offset: u64,
        /// Requested length, in sectors.
        length: u64,
        /// Whole sectors in the file.
        sectors: u64,
    },
    /// Nothing left to export.
    #[error("nothing to export: {path} has {sectors} whole sectors and offset is {offset}")]
    Empty {
        /// The path.
        path: PathBuf,
        /// Requested offset, in sectors.
        offset: u64,
        /// Whole sectors in the file.
        sectors: u64,
    },
    /// The interface is unknown, down, not Ethernet, or the raw socket cannot be opened.
    #[error("interfaces: {0}")]
    Interface(#[from] aoe_transport::afpacket::OpenError),
    /// The I/O threads (or their sockets) cannot be started.
    #[error("starting {threads} I/O threads: {source}")]
    IoThreads {
        /// How many were asked for.
        threads: usize,
        /// Why.
        source: std::io::Error,
    },
}

/// Why the settings cannot be used. The message is one line that says where and what.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The configuration file cannot be read.
    #[error("cannot read configuration file {}: {source}", file.display())]
    ReadConfig {
        /// The path.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has unknown or mistyped keys.
    #[error("{}:{line}:{column}: {message}{}", file.display(), in_context(context))]
    Syntax {
        /// The path (or name) of the file.
        file: PathBuf,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// 1-based column, 0 when unknown.
        column: usize,
        /// What the TOML parser said (names the key).
        message: String,
        /// The offending line, trimmed.
        context: String,
    },
    /// A setting has a value that cannot be served.
    #[error("{place}{problem}")]
    Invalid {
        /// Where.
        place: Place,
        /// What.
        problem: Problem,
    },
}

fn in_context(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" (in `{context}`)")
    }
}

impl SettingsError {
    /// The problem with a setting, if that is what this is.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            SettingsError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
[[export]]
shelf = 1
slot = 0
interfaces = ["eth1"]
file = "/srv/disk0.img"
"#;

    fn parse(text: &str) -> Result<Settings, String> {
        Settings::from_toml(text, "exports.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_vblade_s() {
        let s = parse(ONE).unwrap();
        let e = &s.exports[0];
        assert_eq!(e, &ExportSettings::new(1, 0, "eth1", "/srv/disk0.img"));
        assert_eq!(e.name(), "e1.0");
        assert_eq!(s.source.as_deref(), Some(Path::new("exports.toml")));
        assert_eq!(s.busy_poll, DEFAULT_BUSY_POLL);
        assert!(s.rx_ring);
        assert!(!s.qdisc_bypass);
        assert!(!s.tx_ring);
        assert_eq!(s.kernel_busy_poll, None);
        assert!(!s.af_xdp);
        assert_eq!(s.io_threads, None);
    }

    #[test]
    fn kernel_busy_poll_of_zero_is_none() {
        let s = parse(&format!("kernel_busy_poll_us = 0\nqdisc_bypass = false\n{ONE}")).unwrap();
        assert_eq!((s.kernel_busy_poll, s.qdisc_bypass), (None, false));
        let s = parse(&format!("kernel_busy_poll_us = 1000000\n{ONE}")).unwrap();
        assert_eq!(s.kernel_busy_poll, Some(Duration::from_secs(1)));
    }

    #[test]
    fn io_threads_are_chosen_for_disks_unless_set() {
        let mut s = parse(&format!("{ONE}{}", ONE.replace("slot = 0", "slot = 1"))).unwrap();
        assert_eq!(s.io_threads_for(&[0, 1], 0), 0, "files the page cache holds");
        assert_eq!(s.io_threads_for(&[0, 1], 1), DEFAULT_IO_THREADS, "a block device");
        s.exports[1].direct = true;
        assert_eq!(s.io_threads_for(&[0], 0), 0);
        assert_eq!(s.io_threads_for(&[0, 1], 0), DEFAULT_IO_THREADS, "O_DIRECT");
        s.io_threads = Some(0);
        assert_eq!(s.io_threads_for(&[0, 1], 1), 0, "as set");
        s.io_threads = Some(3);
        assert_eq!(s.io_threads_for(&[0], 0), 3, "as set");
    }

    #[test]
    fn every_key() {
        let s = parse(
            r#"
busy_poll_us = 0
rx_ring = false
qdisc_bypass = true
tx_ring = true
kernel_busy_poll_us = 50
af_xdp = true
io_threads = 4
ethers = "/srv/ethers"
state_dir = "/var/lib/aoe-target"
metrics = "127.0.0.1:9172"
control = "/run/aoe-target/x.sock"

[[export]]
shelf = 7
slot = 3
interfaces = ["eth1", "eth2"]
file = "/dev/sdb"
read_only = true
direct = true
sync = true
offset = 8
length = 2048
buffer_count = 64
mask = ["00:11:22:33:44:55", "AABBCCDDEEFF"]
rules = ["read-only 00:11:22:33:44:56", "allow db1", "deny *"]

[[export]]
shelf = 7
slot = 4
interfaces = ["eth2"]
file = "/srv/b.img"
"#,
        )
        .unwrap();
        let e = &s.exports[0];
        assert!(e.read_only && e.direct && e.sync);
        assert_eq!((e.offset, e.length, e.buffer_count), (8, Some(2048), 64));
        assert_eq!(
            e.mask,
            ["00:11:22:33:44:55".parse().unwrap(), MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])]
        );
        assert_eq!(s.exports[1].name(), "e7.4");
        assert_eq!(s.busy_poll, Duration::ZERO);
        assert!(!s.rx_ring);
        assert!(s.qdisc_bypass);
        assert!(s.tx_ring);
        assert_eq!(s.kernel_busy_poll, Some(Duration::from_micros(50)));
        assert!(s.af_xdp);
        assert_eq!(s.io_threads, Some(4));
        assert_eq!(s.ethers, Path::new("/srv/ethers"));
        assert_eq!(s.state_dir.as_deref(), Some(Path::new("/var/lib/aoe-target")));
        assert_eq!(s.metrics, Some("127.0.0.1:9172".parse().unwrap()));
        assert_eq!(s.control_path().as_deref(), Some(Path::new("/run/aoe-target/x.sock")));
        let rules: Vec<String> = e.rules.iter().map(ToString::to_string).collect();
        assert_eq!(rules, ["read-only 00:11:22:33:44:56", "allow db1", "deny *"]);
        assert!(s.exports[1].rules.is_empty());
    }

    #[test]
    fn control_socket_defaults() {
        let file = "[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"eth1\"]\nfile = \"/x\"\n";
        let s = Settings::from_toml(file, "/etc/aoe-target/exports.toml").unwrap();
        assert_eq!(s.control_path().as_deref(), Some(Path::new("/run/aoe-target/exports.sock")));
        let mut single = Settings::single(ExportSettings::new(3, 2, "eth1", "/x"));
        assert_eq!(single.control_path(), None, "vblade's form has none unless asked");
        single.control = Some("/tmp/c.sock".into());
        assert_eq!(single.control_path().as_deref(), Some(Path::new("/tmp/c.sock")));
        let bad = Settings::from_toml(&format!("metrics = \"localhost\"\n{file}"), "m.toml").unwrap_err();
        assert!(bad.to_string().starts_with("m.toml:1:11: invalid socket address"), "{bad}");
    }

    #[test]
    fn rules_parse_validate_and_resolve() {
        let export = |rules: &str| {
            parse(&format!(
                "[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"eth1\"]\nfile = \"/x\"\nrules = {rules}\n"
            ))
        };
        for (rules, why) in [
            (r#"["permit 00:11:22:33:44:55"]"#, "unknown access \"permit\""),
            (r#"["allow"]"#, "is not two words"),
            (r#"["allow a b"]"#, "is not two words"),
            (r#"["deny 00:11:22:33:44:5g/1"]"#, "neither a MAC address nor a host name"),
        ] {
            let err = export(rules).unwrap_err();
            assert!(err.contains(why) && err.starts_with("exports.toml:6:"), "{rules}: {err}");
        }
        let err = export(r#"["deny *", "allow db1"]"#).unwrap_err();
        assert!(err.contains("\"allow db1\" comes after the rule for *"), "{err}");

        let s = export(r#"["read-only db2", "allow 02:00:00:00:00:01", "deny *"]"#).unwrap();
        let ethers = "# comment\n02:00:00:00:00:0b db2 # the second host\n02:00:00:00:00:0c\n";
        let resolved = resolve_rules(&s.exports[0].rules, Some(ethers)).unwrap();
        assert_eq!(resolved.default, Access::Deny);
        assert_eq!(resolved.access(MacAddr([2, 0, 0, 0, 0, 0xb])), Access::ReadOnly);
        assert_eq!(resolved.access(MacAddr([2, 0, 0, 0, 0, 1])), Access::Allow);
        assert_eq!(resolved.access(MacAddr([2, 0, 0, 0, 0, 0xc])), Access::Deny);
        let err = resolve_rules(&s.exports[0].rules, Some("02:00:00:00:00:0b db3\n")).unwrap_err();
        assert_eq!(err.to_string(), "rules: \"read-only db2\": no host \"db2\" in the ethers file");
    }

    #[test]
    fn toml_errors_name_the_key_and_line() {
        let err = parse(&format!("{ONE}colour = \"blue\"\n")).unwrap_err();
        assert!(err.starts_with("exports.toml:7:1: unknown field `colour`"), "{err}");
        assert!(err.contains("(in `colour = \"blue\"`)"), "{err}");
        let err = parse(&ONE.replace("slot = 0", "slot = \"zero\"")).unwrap_err();
        assert!(err.starts_with("exports.toml:4:8: invalid type"), "{err}");
        assert!(err.contains("slot = \"zero\""), "{err}");
        let err = parse(&ONE.replace("slot = 0", "slot = 300")).unwrap_err();
        assert!(err.contains("slot = 300"), "{err}");
        let err = parse(&ONE.replace("file = \"/srv/disk0.img\"\n", "")).unwrap_err();
        assert!(err.contains("missing field `file`"), "{err}");
        let err = parse(&format!("{ONE}mask = [\"00:11:22\"]\n")).unwrap_err();
        assert!(err.contains("invalid MAC address \"00:11:22\""), "{err}");
        let err = parse(&format!("kernel_busy_poll_us = -1\n{ONE}")).unwrap_err();
        assert!(err.starts_with("exports.toml:1:23: invalid value"), "{err}");
        let err = parse(&format!("af_xdp = 1\n{ONE}")).unwrap_err();
        assert!(err.starts_with("exports.toml:1:10: invalid type"), "{err}");
        let err = parse(&format!("qdisc_bypass = \"yes\"\n{ONE}")).unwrap_err();
        assert!(err.starts_with("exports.toml:1:16: invalid type"), "{err}");
        let err = parse(&format!("tx_ring = 1\n{ONE}")).unwrap_err();
        assert!(err.starts_with("exports.toml:1:11: invalid type"), "{err}");
        let err = parse("[[export]\n").unwrap_err();
        assert!(err.starts_with("exports.toml:1:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn validation_names_the_setting() {
        let cases = [
            (ONE.replace("shelf = 1", "shelf = 65535"), "export[0] (e65535.0): shelf 65535 is the broadcast"),
            (ONE.replace("slot = 0", "slot = 255"), "slot 255 is the broadcast slot"),
            (ONE.replace("[\"eth1\"]", "[]"), "interfaces is empty"),
            (ONE.replace("[\"eth1\"]", "[\"eth1\", \"eth1\"]"), "interfaces lists eth1 twice"),
            (format!("{ONE}buffer_count = 0\n"), "buffer_count must be at least 1"),
            (format!("{ONE}length = 0\n"), "length must be at least 1 sector"),
            (
                format!("{ONE}{ONE}"),
                "export[1] (e1.0): shelf and slot: e1.0 is already exported by export[0]",
            ),
            (String::new(), "exports.toml: no [[export]] table"),
            (format!("io_threads = 257\n{ONE}"), "exports.toml: io_threads = 257 is more than 256"),
            (
                format!("kernel_busy_poll_us = 1000001\n{ONE}"),
                "exports.toml: kernel_busy_poll_us = 1000001 is more than 1000000 (a second)",
            ),
            (ONE.replace("/srv/disk0.img", "nbd+unix:///d"), "file nbd+unix:///d: no socket"),
            (ONE.replace("/srv/disk0.img", "nbds://h/d"), "not supported"),
            (
                format!("{}direct = true\n", ONE.replace("/srv/disk0.img", "nbd://h/d")),
                "direct and sync are for files",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn command_line_errors_have_no_file() {
        let mut e = ExportSettings::new(1, 255, "eth0", "x");
        let s = Settings::single(e.clone());
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "e1.255: slot 255 is the broadcast slot; use 0 to 254"
        );
        e.slot = 1;
        assert!(Settings::single(e).validate().is_ok());
    }

    #[test]
    fn the_shipped_example_parses() {
        let s = Settings::from_toml(include_str!("../../../dist/exports.toml"), "exports.toml").unwrap();
        let names: Vec<String> = s.exports.iter().map(ExportSettings::name).collect();
        assert_eq!(names, ["e1.0", "e1.1", "e1.2"]);
        assert_eq!(s.exports[2].rules.len(), 3);
        assert_eq!(s.exports[1].offset, 2048);
    }

    #[test]
    fn line_columns() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
