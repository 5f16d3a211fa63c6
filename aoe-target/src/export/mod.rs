//! The sans-IO target engine: one exported disk answering request frames.
//!
//! One entry point, [`Export::handle`], shaped like rustls's unbuffered API: it takes one
//! received frame, parsed once by whoever received it ([`Received`]), writes at most one
//! answer into a caller's buffer and says what became of the frame ([`Outcome`]):
//!
//! - [`Outcome::Ignored`]: no answer, and why ([`Ignored`]);
//! - [`Outcome::Answered`]: the answer is complete, this many bytes of the buffer;
//! - [`Outcome::NeedsIo`]: the answer's headers are in the buffer and it waits for sector I/O
//!   ([`SectorIo`]), which the caller completes here and now, from a mapping of the backend,
//!   or on another thread.
//!
//! The export owns the protocol state (config string, MAC mask, reservations) and never
//! touches a socket, a clock or, itself, the backend's sectors: reads, writes and flushes are
//! all left to the caller. [`Outcome::complete`] is the short way to do them inline.
//!
//! ```
//! use aoe_proto::{AtaRepr, BodyRepr, FrameRepr, HeaderRepr, MacAddr};
//! use aoe_target::backend::MemoryBackend;
//! use aoe_target::export::{Export, ExportConfig, Outcome, Port, Received, SectorOp};
//!
//! let mut export = Export::new(ExportConfig::new(1, 0), MemoryBackend::new(1 << 20));
//! let port = Port::new(MacAddr([2, 0, 0, 0, 0, 1]), 9000);
//! let mut request = [0u8; 64];
//! let len = FrameRepr {
//!     dst: port.mac,
//!     src: MacAddr([2, 0, 0, 0, 0, 2]),
//!     header: HeaderRepr::request(1, 0, 42),
//!     body: BodyRepr::Ata { header: AtaRepr::read(8, 2, true), data: &[] },
//! }
//! .emit_padded(&mut request)?;
//!
//! let received = Received::parse(&request[..len])?;
//! let mut answer = [0u8; 9014];
//! let Outcome::NeedsIo(io) = export.handle(&port, &received, &mut answer)? else { unreachable!() };
//! assert_eq!((io.op(), io.offset(), io.len()), (SectorOp::Read, 8 * 512, 1024));
//! let n = io.complete(export.backend(), &mut answer)?;
//! assert_eq!(n, 36 + 1024);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod access;
mod ata;
mod config;
mod io;
mod mask;
mod reserve;
mod stats;

use std::sync::Arc;

use aoe_proto::ata::{AtaCommand, AtaStatus};
use aoe_proto::frame::{Body, BodyRepr, FrameRepr};
use aoe_proto::header::{ErrorCode, Flags, HeaderRepr};
use aoe_proto::identify::{Identify, IDENTIFY_LEN};
use aoe_proto::sizing::PAYLOAD_OFFSET;
use aoe_proto::{ConfigCommand, EmitError, MacAddr, MaskCommand, ParseError, ReserveCommand, SECTOR_SIZE};

use crate::backend::Backend;
use crate::ordering::IoOrder;

pub use access::{Access, AccessRule, AccessRules};
pub use aoe_proto::Received;
pub use io::{ata_error_for, SectorIo, SectorOp};
pub use stats::{
    Command, ExportSnapshot, ExportStats, IgnoreReason, ServerSnapshot, ServerStats, LATENCY_BUCKETS,
};

/// Firmware version reported in query-config answers.
pub const FIRMWARE_VERSION: u16 = 0x4100;
/// Most entries the MAC mask list and the reserve list hold. An answer lists them all, and
/// 128 entries still fit one frame at MTU 1500.
pub const MAX_LIST_ENTRIES: usize = 128;
/// Default buffer count (requests the target queues), as vblade's.
pub const DEFAULT_BUFFER_COUNT: u16 = 16;

/// What an export is: its address and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Shelf (major), below 0xFFFF.
    pub shelf: u16,
    /// Slot (minor), below 0xFF.
    pub slot: u8,
    /// Buffer count advertised to initiators.
    pub buffer_count: u16,
    /// Refuse writes.
    pub read_only: bool,
    /// Initial MAC mask: when non-empty, only these initiators are answered.
    pub mask: Vec<MacAddr>,
    /// Who may do what, beyond the mask ([`AccessRules`]).
    pub access: AccessRules,
    /// Model string in IDENTIFY data.
    pub model: String,
    /// Serial string in IDENTIFY data.
    pub serial: String,
}

impl ExportConfig {
    /// An export at `shelf.slot` with default options.
    pub fn new(shelf: u16, slot: u8) -> Self {
        ExportConfig {
            shelf,
            slot,
            buffer_count: DEFAULT_BUFFER_COUNT,
            read_only: false,
            mask: Vec::new(),
            access: AccessRules::ALLOW_ALL,
            model: "Rust AoE target".to_string(),
            serial: format!("e{shelf}.{slot}"),
        }
    }
}

/// The local interface a frame came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// The interface's MAC: the source of answers.
    pub mac: MacAddr,
    /// Most sectors per ATA frame at this interface's MTU.
    pub max_sectors: u8,
}

impl Port {
    /// A port with the sector limit derived from `mtu`.
    pub fn new(mac: MacAddr, mtu: usize) -> Self {
        Port { mac, max_sectors: aoe_proto::max_sectors(mtu) }
    }
}

/// What [`Export::handle`] made of a frame.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'r> {
    /// No answer is due, for this reason.
    Ignored(Ignored),
    /// The answer is complete: this many bytes at the start of the `out` buffer.
    Answered(usize),
    /// The answer's headers are in the `out` buffer (a write's sectors still in the
    /// request); it is finished by this sector I/O.
    NeedsIo(SectorIo<'r>),
}

impl Outcome<'_> {
    /// The answer's length, with any sector I/O it waits for done here and now on `backend`
    /// (the export's: [`Export::backend`]) into `answer` (the buffer
    /// [`Export::handle`] wrote to); `None` when the frame is ignored.
    pub fn complete<B: Backend + ?Sized>(
        self,
        backend: &B,
        answer: &mut [u8],
    ) -> Result<Option<usize>, EmitError> {
        match self {
            Outcome::Ignored(_) => Ok(None),
            Outcome::Answered(len) => Ok(Some(len)),
            Outcome::NeedsIo(io) => io.complete(backend, answer).map(Some),
        }
    }
}

/// Why a frame gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// A response (R set): another target's answer.
    Response,
    /// Addressed to another shelf or slot.
    NotAddressed,
    /// From an initiator outside the export's non-empty MAC mask.
    Masked,
    /// From an initiator the export's access rules deny ([`Access::Deny`]).
    Denied,
    /// From a broadcast or multicast source address, which no initiator has: an answer
    /// would go to every host on the segment.
    MulticastSource,
    /// A config-string test (exact or prefix) that does not match: the protocol says to
    /// stay silent.
    ConfigMismatch,
}

/// One exported disk: configuration, protocol state and backend.
#[derive(Debug)]
pub struct Export<B> {
    config: ExportConfig,
    /// Shared with whoever completes I/O on another thread.
    backend: Arc<B>,
    /// The order I/O on other threads runs in.
    io_order: Arc<IoOrder>,
    sectors: u64,
    identify: [u8; IDENTIFY_LEN],
    config_string: Vec<u8>,
    mask: Vec<MacAddr>,
    reserve: Vec<MacAddr>,
    /// Counts changes to the config string, mask and reserve list.
    state_version: u64,
    /// What it has done, readable without its lock.
    stats: Arc<ExportStats>,
}

/// What initiators change over the wire and a restart should keep: the config string, the
/// MAC mask list and the reserve list ([`Export::state`], [`Export::restore`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportState {
    /// The config string, at most 1024 bytes.
    pub config_string: Vec<u8>,
    /// The MAC mask list, at most [`MAX_LIST_ENTRIES`].
    pub mask: Vec<MacAddr>,
    /// The reserve list, at most [`MAX_LIST_ENTRIES`].
    pub reserve: Vec<MacAddr>,
}

/// Why [`Export::restore`] refused a state: it holds more than the protocol carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The config string is longer than 1024 bytes.
    #[error("the config string has {0} bytes, more than the 1024 an answer carries")]
    ConfigStringTooLong(usize),
    /// A list has more entries than [`MAX_LIST_ENTRIES`].
    #[error("the {list} list has {len} entries, more than {MAX_LIST_ENTRIES}")]
    ListTooLong {
        /// `mask` or `reserve`.
        list: &'static str,
        /// Entries given.
        len: usize,
    },
}

impl<B: Backend> Export<B> {
    /// An export of `backend` (whole sectors; a trailing partial sector is not exported).
    pub fn new(config: ExportConfig, backend: B) -> Self {
        let sectors = backend.len() / SECTOR_SIZE as u64;
        let mut identify = [0u8; IDENTIFY_LEN];
        Identify::new(&config.model, &config.serial, env!("CARGO_PKG_VERSION"), sectors).emit(&mut identify);
        let mask = config.mask.clone();
        let (backend, io_order) = (Arc::new(backend), Arc::default());
        let stats = Arc::new(ExportStats::new(config.shelf, config.slot));
        Export {
            config,
            backend,
            io_order,
            sectors,
            identify,
            config_string: Vec::new(),
            mask,
            reserve: Vec::new(),
            state_version: 0,
            stats,
        }
    }

    /// Its counters, shared: read them ([`ExportStats::snapshot`]) without the export's lock.
    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// Counts into `stats` from now on (the counters of an export this one replaces, say).
    pub fn set_stats(&mut self, stats: Arc<ExportStats>) {
        self.stats = stats;
    }

    /// Applies a changed configuration of the same address: read-only, buffer count, access
    /// rules, model and serial take effect for the next frame; a changed configured mask
    /// replaces the mask list (an unchanged one leaves what initiators set). The config
    /// string and reserve list are kept.
    ///
    /// # Panics
    ///
    /// If `config` is for another shelf or slot.
    pub fn reconfigure(&mut self, config: ExportConfig) {
        assert_eq!((config.shelf, config.slot), (self.config.shelf, self.config.slot), "another export");
        if config.mask != self.config.mask {
            self.mask = config.mask.clone();
            self.state_changed();
        }
        Identify::new(&config.model, &config.serial, env!("CARGO_PKG_VERSION"), self.sectors)
            .emit(&mut self.identify);
        self.config = config;
    }

    /// The config string, mask and reserve list as they are now.
    pub fn state(&self) -> ExportState {
        ExportState {
            config_string: self.config_string.clone(),
            mask: self.mask.clone(),
            reserve: self.reserve.clone(),
        }
    }

    /// Sets the config string, mask and reserve list, e.g. to what they were before a
    /// restart. Refuses, changing nothing, what the protocol could not carry.
    pub fn restore(&mut self, state: ExportState) -> Result<(), StateError> {
        if state.config_string.len() > aoe_proto::config::MAX_STRING_LEN {
            return Err(StateError::ConfigStringTooLong(state.config_string.len()));
        }
        for (list, len) in [("mask", state.mask.len()), ("reserve", state.reserve.len())] {
            if len > MAX_LIST_ENTRIES {
                return Err(StateError::ListTooLong { list, len });
            }
        }
        self.config_string = state.config_string;
        self.mask = state.mask;
        self.reserve = state.reserve;
        self.state_changed();
        Ok(())
    }

    /// A number that changes whenever the config string, mask or reserve list does: whoever
    /// keeps them elsewhere compares it with the one it saw last.
    pub fn state_version(&self) -> u64 {
        self.state_version
    }

    fn state_changed(&mut self) {
        self.state_version = self.state_version.wrapping_add(1);
    }

    /// The configuration.
    pub fn config(&self) -> &ExportConfig {
        &self.config
    }
    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// The backend, for a thread that completes this export's I/O ([`SectorIo::detach`]).
    pub fn shared_backend(&self) -> &Arc<B> {
        &self.backend
    }
    /// The order this export's I/O on other threads runs in: whoever takes a [`SectorIo`]
    /// elsewhere enters it there before letting go of the export, and runs it in its turn.
    pub fn io_order(&self) -> &Arc<IoOrder> {
        &self.io_order
    }
    /// Exported capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Follows the backend's size: when it has shrunk (a file truncated under the export),
    /// the capacity, and the IDENTIFY data that reports it, shrink with it, so that what no
    /// longer exists is answered IDNF. Cheap (the backend's cached size): called for every
    /// ATA request. Returns the capacity in sectors.
    pub fn follow_backend_size(&mut self) -> u64 {
        let sectors = self.backend.len() / SECTOR_SIZE as u64;
        if sectors != self.sectors {
            tracing::warn!(
                "e{}.{}: the store now holds {sectors} sectors, not {}: answering that size",
                self.config.shelf,
                self.config.slot,
                self.sectors
            );
            self.sectors = sectors;
            let id =
                Identify::new(&self.config.model, &self.config.serial, env!("CARGO_PKG_VERSION"), sectors);
            id.emit(&mut self.identify);
        }
        sectors
    }
    /// The current config string.
    pub fn config_string(&self) -> &[u8] {
        &self.config_string
    }
    /// The current MAC mask list.
    pub fn mask(&self) -> &[MacAddr] {
        &self.mask
    }
    /// The current reserve list.
    pub fn reservations(&self) -> &[MacAddr] {
        &self.reserve
    }

    /// Writes the unsolicited query-config answer a target broadcasts when it starts into
    /// `out` and returns its length.
    pub fn announce(&self, port: &Port, out: &mut [u8]) -> Result<usize, EmitError> {
        let repr = FrameRepr {
            dst: MacAddr::BROADCAST,
            src: port.mac,
            header: HeaderRepr {
                flags: Flags::RESPONSE,
                error: 0,
                shelf: self.config.shelf,
                slot: self.config.slot,
                tag: 0,
            },
            body: BodyRepr::Config(self.config_answer(port, ConfigCommand::Read)),
        };
        repr.emit_padded(out)
    }

    /// Handles one received frame: writes the answer, if one is due, to `out` and says what
    /// is left to do ([`Outcome`]). `out` should hold a full frame for the port's MTU
    /// (14 + MTU bytes); the only error is an `out` too short for the answer.
    ///
    /// Frames that are not for this export (responses, other addresses, initiators outside a
    /// non-empty mask) are [`Outcome::Ignored`]. Reads, writes and flushes that pass every
    /// check are [`Outcome::NeedsIo`]: such I/O may complete in any order, as it would on a
    /// disk with a queue, except as [`io_order`](Self::io_order) says when it is done on
    /// other threads. Every other frame is answered at once.
    pub fn handle<'r>(
        &mut self,
        port: &Port,
        request: &Received<'r>,
        out: &mut [u8],
    ) -> Result<Outcome<'r>, EmitError> {
        let outcome = self.handle_uncounted(port, request, out)?;
        self.count(request, &outcome, out);
        Ok(outcome)
    }

    /// Counts what became of `request`: a request served by command, an error answered,
    /// a frame ignored by reason.
    fn count(&self, request: &Received<'_>, outcome: &Outcome<'_>, out: &mut [u8]) {
        let stats = &self.stats;
        let len = match *outcome {
            Outcome::Ignored(Ignored::Masked) => return stats.count_ignored(IgnoreReason::Mask),
            Outcome::Ignored(Ignored::Denied) => return stats.count_ignored(IgnoreReason::Denied),
            Outcome::Ignored(_) => return,
            Outcome::NeedsIo(_) => None,
            Outcome::Answered(len) => Some(len),
        };
        let command = match request.body() {
            Ok(Body::Ata { header, .. }) => match header.command() {
                AtaCommand::ReadSectors | AtaCommand::ReadSectorsExt => Command::Read,
                AtaCommand::WriteSectors | AtaCommand::WriteSectorsExt => Command::Write,
                AtaCommand::IdentifyDevice => Command::Identify,
                AtaCommand::FlushCache | AtaCommand::FlushCacheExt => Command::Flush,
                _ => Command::OtherAta,
            },
            Ok(Body::Config { .. }) => Command::Config,
            Ok(Body::Mask { .. }) => Command::Mask,
            Ok(Body::Reserve { .. }) => Command::Reserve,
            Ok(Body::Other { .. }) => Command::Other,
            Err(_) => {
                stats.count_ignored(IgnoreReason::Malformed);
                stats.count_aoe_error();
                return;
            }
        };
        stats.count_request(command);
        let Some(len) = len else { return };
        let Ok(answer) = Received::parse(&out[..len]) else { return };
        if answer.header().flags().contains(Flags::ERROR) {
            stats.count_aoe_error();
            if answer.header().error_code() == Some(ErrorCode::TargetReserved) {
                stats.count_ignored(IgnoreReason::Reserved);
            }
        } else if let Ok(Body::Ata { header, .. }) = answer.body() {
            if header.status().contains(AtaStatus::ERR) {
                stats.count_ata_error();
            }
        }
    }

    fn handle_uncounted<'r>(
        &mut self,
        port: &Port,
        request: &Received<'r>,
        out: &mut [u8],
    ) -> Result<Outcome<'r>, EmitError> {
        let header = request.header();
        if header.is_response() {
            return Ok(Outcome::Ignored(Ignored::Response));
        }
        if !header.addresses(self.config.shelf, self.config.slot) {
            return Ok(Outcome::Ignored(Ignored::NotAddressed));
        }
        if request.ethernet().src.is_multicast() {
            return Ok(Outcome::Ignored(Ignored::MulticastSource));
        }
        if !self.mask.is_empty() && !self.mask.contains(&request.ethernet().src) {
            return Ok(Outcome::Ignored(Ignored::Masked));
        }
        let access = self.config.access.access(request.ethernet().src);
        if access == Access::Deny {
            return Ok(Outcome::Ignored(Ignored::Denied));
        }
        let changes = access == Access::Allow;
        let body = match request.body() {
            Ok(body) => body,
            Err(ParseError::Version { .. }) => {
                return self.refuse(port, request, ErrorCode::UnsupportedVersion, out)
            }
            Err(_) => return self.refuse(port, request, ErrorCode::BadArgument, out),
        };
        match body {
            Body::Ata { header: ata, data } => self.ata(port, request, ata, data, changes, out),
            Body::Config { header: cfg, string } if changes || !changes_state(cfg.command()) => {
                self.query_config(port, request, cfg, string, out)
            }
            Body::Mask { header: m, directives } if changes || m.command() == MaskCommand::Read => {
                self.mask_list(port, request, m.command(), directives, out)
            }
            Body::Reserve { header: r, macs } if changes || r.command() == ReserveCommand::Read => {
                self.reserve_release(port, request, r.command(), macs, out)
            }
            // A read-only initiator asking to change the config string or a list.
            Body::Config { .. } | Body::Mask { .. } | Body::Reserve { .. } => {
                self.refuse(port, request, ErrorCode::TargetReserved, out)
            }
            Body::Other { .. } => self.refuse(port, request, ErrorCode::UnrecognizedCommand, out),
        }
    }

    /// The common header of an answer to `request`: R, the export's address, the tag kept.
    fn answer_header(&self, request: &Received<'_>) -> HeaderRepr {
        HeaderRepr {
            flags: Flags::RESPONSE,
            error: 0,
            shelf: self.config.shelf,
            slot: self.config.slot,
            tag: request.header().tag(),
        }
    }

    /// An answer to `request` with `body`, from `port`.
    fn answer<'b>(&self, port: &Port, request: &Received<'_>, body: BodyRepr<'b>) -> FrameRepr<'b> {
        FrameRepr { dst: request.ethernet().src, src: port.mac, header: self.answer_header(request), body }
    }

    /// Emits the answer to `request` with `body`.
    fn respond(
        &self,
        port: &Port,
        request: &Received<'_>,
        body: BodyRepr<'_>,
        out: &mut [u8],
    ) -> Result<Outcome<'static>, EmitError> {
        self.answer(port, request, body).emit_padded(out).map(Outcome::Answered)
    }

    /// An error answer: the request's command and payload echoed (as much as `out` holds)
    /// with E and the code.
    fn refuse(
        &self,
        port: &Port,
        request: &Received<'_>,
        code: ErrorCode,
        out: &mut [u8],
    ) -> Result<Outcome<'static>, EmitError> {
        let payload = request.payload();
        let payload = payload.get(..out.len().saturating_sub(PAYLOAD_OFFSET)).unwrap_or(payload);
        let command = request.header().command;
        let mut repr = self.answer(port, request, BodyRepr::Raw { command, payload });
        repr.header.flags |= Flags::ERROR;
        repr.header.error = code.into();
        repr.emit_padded(out).map(Outcome::Answered)
    }
}

/// Whether a query config command changes the config string.
fn changes_state(command: ConfigCommand) -> bool {
    matches!(command, ConfigCommand::Set | ConfigCommand::ForceSet)
}
