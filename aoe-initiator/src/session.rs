//! The sans-IO protocol engine for one target: tags, window, round-trip estimate,
//! retransmission deadlines, multipath.
//!
//! A [`Session`] never touches a socket or the clock. The code around it (see
//! [`crate::device`]) feeds it what happened and asks it what to do:
//!
//! - [`Session::submit`] queues a [`Request`] and returns its [`OpId`];
//! - [`Session::poll_transmit`] writes the next frame to send (a new one or a retransmit)
//!   into a caller's buffer and says which path it goes out on;
//! - [`Session::handle_frame`] takes a received frame;
//! - [`Session::poll_timeout`] says when [`Session::handle_timeout`] must be called next;
//! - [`Session::poll_event`] hands out completions and path / target state changes.
//!
//! Time is always an argument (`now`), so tests drive a session frame by frame with a fake
//! clock.
//!
//! # Data without copies
//!
//! Reads and writes do not move their data through the session. A read or write names a
//! range of sectors; the session splits it into frames lazily, as the window opens, and asks
//! the caller's [`IoBuffers`] for the bytes of each frame: [`IoBuffers::load`] copies write
//! data straight into the outgoing frame, [`IoBuffers::store`] copies read data straight out
//! of the answer. The caller keeps the buffer of an op alive until its completion event, and
//! nothing is allocated per frame.
//!
//! # Tags
//!
//! A tag is 32 bits, echoed untouched by the target:
//!
//! ```text
//!  31              16 15               0
//! +------------------+------------------+
//! |    generation    |    frame slot    |
//! +------------------+------------------+
//! ```
//!
//! The session has one frame slot per target buffer (the window cap, at most 65535). A slot
//! takes its next 16-bit generation each time it is given a new frame; a retransmission of
//! the frame keeps the tag. On the wire the tag is XORed with the session's random
//! [`SessionConfig::tag_salt`]: every AF_PACKET socket on an interface sees every answer
//! that reaches it, and two initiators on one host (two `aoe` processes, an `aoe attach`
//! beside the kernel driver) would otherwise number their frames alike. The first answer to any transmission of the frame in a slot
//! completes it, whichever transmission it answers: a target slower than the retransmission
//! timer still gets its answers taken. Answers whose generation is not the slot's current one
//! belong to an earlier frame of the slot and are *stale*; answers that find the slot's
//! current frame already answered (the target answered two transmissions) are *duplicates*;
//! both are ignored. A stale answer would have to survive 65536 further frames through the
//! same slot to be mistaken for a fresh one.
//!
//! # Matching an answer to its request
//!
//! A tag is only a first filter: another initiator's answer can carry one of ours by chance.
//! An answer completes a frame only when everything the target echoes matches the request
//! (see [`Mismatches`]): it comes from the path's target MAC to its local MAC, names our
//! shelf.slot with the response flag, answers the same command; for reads and writes the
//! ATA flags (write, LBA48) are echoed, the LBA lies between the request's first sector and
//! the sector after its last (targets echo it; a disk's registers would have advanced), and
//! the data length is what the request expects: n × 512 bytes for a read of n sectors, no
//! sectors for a write, 512 bytes for IDENTIFY. The sector count register is not checked:
//! vblade answers a complete transfer with 0. Anything else is counted and ignored.
//!
//! # Window
//!
//! At most `window` frames are outstanding, and `window` never exceeds the target's buffer
//! count. It starts at the buffer count; a timeout halves it (at least 1), once per flight of
//! frames, so that a burst of losses from the same flight counts once; every full window of
//! answers grows it by one frame (additive increase, multiplicative decrease).
//!
//! # Retransmission timeout
//!
//! Round-trip samples come from read and write frames that were sent once (Karn: an answer to
//! a retransmitted frame is ambiguous). The estimate follows RFC 6298: a smoothed mean and
//! mean deviation, RTO = SRTT + 4 × RTTVAR, clamped to `rto_min..=rto_max`. A frame's n-th
//! retransmission waits RTO × 2ⁿ, capped at `rto_max`; after a flight loses frames, new
//! frames too wait twice as long per such flight until one is answered at its first sending. Other commands (FLUSH, IDENTIFY,
//! config) are not sampled, because their service time says nothing about the network.
//!
//! # Dead target
//!
//! When frames have been outstanding and nothing at all has been answered for
//! `dead_timeout`, every op fails with [`Error::TargetDead`] and [`Event::TargetDead`] is
//! reported. A later [`Session::submit`] tries again. Stale and duplicate answers from the
//! target count as signs of life: they carry nothing we take, but the target sent them.
//!
//! # Multipath
//!
//! A session has one or more [`Path`]s (a local interface and MAC, a target MAC). New frames
//! go round-robin over the paths that are up; a retransmission goes to the next path up after
//! the one that timed out. A path whose frames time out `path_down_after` times in a row,
//! while another path is up, is marked down for `path_retry`, then tried again; an answer on
//! it brings it back at once. With every path down, all are used anyway.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use aoe_proto::ata::{LBA28_LIMIT, LBA48_LIMIT};
use aoe_proto::identify::IDENTIFY_LEN;
use aoe_proto::sizing::ATA_DATA_OFFSET;
use aoe_proto::{
    AtaCommand, AtaError, AtaFlags, AtaRepr, AtaStatus, Body, BodyRepr, Command, ConfigCommand, ConfigRepr,
    Directive, DirectiveCommand, Flags, Frame, FrameRepr, HeaderRepr, Identify, MacAddr, MaskCommand,
    MaskError, MaskRepr, ReserveCommand, ReserveRepr, SECTOR_SIZE,
};

use crate::Error;

/// Default silence after which a target is declared dead (the Linux driver's default too).
pub const DEFAULT_DEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Default RTO before the first sample: the Linux driver's initial RTT average (250 ms).
pub const DEFAULT_RTO_INITIAL: Duration = Duration::from_millis(250);
/// Default lower bound of the RTO.
///
/// A LAN round trip is 50–200 µs, but a target's service time is not: a disk seek takes
/// 5–10 ms, and on a busy host the target (or this initiator) waits for a CPU for more than
/// 10 ms now and then (seen on a shared 2-core benchmark host: every such pause fired a
/// 10 ms floor, sent the whole flight again and halved the window). A floor of 50 ms keeps a
/// fast-looking estimate from firing spurious retransmissions at such pauses; a frame that
/// is really lost waits 50 ms. The Linux driver looks at its timers only every 100 ms
/// (TIMERTICK), and RFC 6298 asks for a 1 s floor on the Internet.
pub const DEFAULT_RTO_MIN: Duration = Duration::from_millis(50);
/// Default upper bound of the RTO and of its back-off: 2 s, as the Linux driver's MAXTIMER.
pub const DEFAULT_RTO_MAX: Duration = Duration::from_secs(2);
/// Default number of consecutive timeouts that take a path down.
pub const DEFAULT_PATH_DOWN_AFTER: u32 = 3;
/// Default time a path stays down before it is tried again (the Linux driver's
/// HARD_SCORN_SECS is 10 s too).
pub const DEFAULT_PATH_RETRY: Duration = Duration::from_secs(10);

const TAG_SLOT_BITS: u32 = 16;
const MAX_SLOTS: usize = 1 << TAG_SLOT_BITS;

/// One way to reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    /// The caller's index of the local interface (transport) the path leaves on.
    pub iface: usize,
    /// The local MAC on that interface: the source of requests, the destination of answers.
    pub local: MacAddr,
    /// The target's MAC on this path.
    pub target: MacAddr,
}

/// How a session talks to its target. Build with [`SessionConfig::new`], adjust fields, then
/// [`Session::new`] validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The target's shelf (major), not 0xFFFF.
    pub shelf: u16,
    /// The target's slot (minor), not 0xFF.
    pub slot: u8,
    /// The paths to the target, at least one.
    pub paths: Vec<Path>,
    /// The target's buffer count: the most frames ever outstanding (0 is taken as 1).
    pub buffer_count: u16,
    /// The most sectors one frame carries: the target's sector count, bounded by the MTU of
    /// every path ([`aoe_proto::max_sectors`]). At least 1.
    pub max_sectors: u8,
    /// Send LBA48 ("extended") reads and writes; otherwise LBAs stop at 2²⁸.
    pub lba48: bool,
    /// The command a [`Request::Flush`] sends: FLUSH CACHE EXT where the target offers it
    /// (IDENTIFY word 83), FLUSH CACHE otherwise (vblade offers only that one).
    pub flush_command: AtaCommand,
    /// RTO before the first round-trip sample.
    pub rto_initial: Duration,
    /// Lower bound of the RTO.
    pub rto_min: Duration,
    /// Upper bound of the RTO and of its exponential back-off.
    pub rto_max: Duration,
    /// Silence after which the target is declared dead.
    pub dead_timeout: Duration,
    /// Consecutive timeouts on a path that take it down (while another path is up).
    pub path_down_after: u32,
    /// How long a path stays down before it is tried again.
    pub path_retry: Duration,
    /// XORed into every tag on the wire, so that initiators sharing an interface (several
    /// processes, or sessions of one) draw different tags. [`SessionConfig::new`] picks it at
    /// random; tests may set it.
    pub tag_salt: u32,
}

impl SessionConfig {
    /// A configuration with the defaults: buffer count 16 (vblade's), 2 sectors per frame
    /// (MTU 1500), LBA48, and the `DEFAULT_*` timers of this module.
    pub fn new(shelf: u16, slot: u8, paths: Vec<Path>) -> Self {
        SessionConfig {
            shelf,
            slot,
            paths,
            buffer_count: 16,
            max_sectors: 2,
            lba48: true,
            flush_command: AtaCommand::FlushCacheExt,
            rto_initial: DEFAULT_RTO_INITIAL,
            rto_min: DEFAULT_RTO_MIN,
            rto_max: DEFAULT_RTO_MAX,
            dead_timeout: DEFAULT_DEAD_TIMEOUT,
            path_down_after: DEFAULT_PATH_DOWN_AFTER,
            path_retry: DEFAULT_PATH_RETRY,
            tag_salt: random_salt(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.shelf == aoe_proto::SHELF_BROADCAST || self.slot == aoe_proto::SLOT_BROADCAST {
            return Err(Error::Invalid("a session needs a target's own shelf.slot, not a broadcast address"));
        }
        if self.paths.is_empty() {
            return Err(Error::Invalid("a session needs at least one path to the target"));
        }
        if self.max_sectors == 0 {
            return Err(Error::Invalid("max_sectors must be at least 1"));
        }
        if self.rto_min > self.rto_max || self.rto_min.is_zero() {
            return Err(Error::Invalid("rto_min must be positive and at most rto_max"));
        }
        if self.path_down_after == 0 {
            return Err(Error::Invalid("path_down_after must be at least 1"));
        }
        Ok(())
    }
}

/// 32 random bits for [`SessionConfig::tag_salt`]: std's `RandomState` is seeded from the
/// operating system's random source once per thread and gives every new instance other keys,
/// so each call differs, within a process and across processes.
fn random_salt() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let x = h.finish();
    (x ^ (x >> 32)) as u32
}

/// Identifies a submitted op in events and [`IoBuffers`] calls. Never reused by a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Work for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read `sectors` sectors from `lba`; the data goes to [`IoBuffers::store`].
    Read {
        /// First sector.
        lba: u64,
        /// Number of sectors (any number: the session splits it into frames).
        sectors: u64,
    },
    /// Write `sectors` sectors at `lba`; the data comes from [`IoBuffers::load`].
    Write {
        /// First sector.
        lba: u64,
        /// Number of sectors.
        sectors: u64,
    },
    /// FLUSH CACHE (EXT with LBA48). Sent only after every op submitted before it completed.
    Flush,
    /// IDENTIFY DEVICE; answered with [`Reply::Identify`].
    Identify,
    /// Any ATA command, sent as given; answered with [`Reply::Ata`] even when the status has
    /// ERR set.
    Ata(AtaRequest),
    /// Query config; answered with [`Reply::Config`]. A test command the target's string
    /// does not match is never answered (the protocol says so): the op ends in
    /// [`Error::TargetDead`].
    Config(ConfigRequest),
    /// MAC mask list; answered with [`Reply::Mask`].
    Mask(MaskRequest),
    /// Reserve/release; answered with [`Reply::Reserve`].
    Reserve(ReserveRequest),
}

/// A raw ATA command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtaRequest {
    /// AoE ATA flags (W for a command carrying data, E for LBA48).
    pub flags: AtaFlags,
    /// Feature register.
    pub feature: u8,
    /// Sector count register.
    pub sector_count: u8,
    /// Command register.
    pub command: u8,
    /// The six LBA bytes as a number.
    pub lba: u64,
    /// Data sent after the header (with the W flag).
    pub data: Vec<u8>,
}

/// A query-config request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRequest {
    /// CCmd.
    pub command: ConfigCommand,
    /// The string to test or set (at most 1024 bytes); ignored by a read.
    pub string: Vec<u8>,
}

/// A MAC mask request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRequest {
    /// MCmd.
    pub command: MaskCommand,
    /// Directives of an edit (at most 255).
    pub directives: Vec<Directive>,
}

/// A reserve/release request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    /// RCmd.
    pub command: ReserveCommand,
    /// The MACs to reserve for (at most 255); empty releases.
    pub macs: Vec<MacAddr>,
}

/// What a completed op brings back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A read, write or flush succeeded (read data went to [`IoBuffers::store`]).
    Done,
    /// IDENTIFY DEVICE data.
    Identify(Identify),
    /// The answer to a raw ATA command.
    Ata(AtaReply),
    /// The answer to a query config.
    Config(ConfigReply),
    /// The target's MAC mask list after the request.
    Mask(Vec<MacAddr>),
    /// The target's reserve list after the request.
    Reserve(Vec<MacAddr>),
}

/// The answer to a raw ATA command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtaReply {
    /// Status register.
    pub status: AtaStatus,
    /// Error register.
    pub error: AtaError,
    /// Sector count register.
    pub sector_count: u8,
    /// The six LBA bytes.
    pub lba: u64,
    /// Data after the header: at most 512 bytes times the larger of the request's and the
    /// answer's sector count (targets such as vblade answer a completed transfer with a
    /// sector count of 0).
    pub data: Vec<u8>,
}

/// The answer to a query config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReply {
    /// Requests the target can queue.
    pub buffer_count: u16,
    /// Firmware version.
    pub firmware: u16,
    /// Most sectors per ATA request.
    pub sector_count: u8,
    /// AoE version.
    pub aoe_version: u8,
    /// CCmd echoed.
    pub command: ConfigCommand,
    /// The target's config string.
    pub string: Vec<u8>,
}

/// Something the caller should know.
#[derive(Debug)]
pub enum Event {
    /// An op finished, well or not. Its buffer is no longer used.
    Complete {
        /// The op.
        op: OpId,
        /// What it brought back.
        result: Result<Reply, Error>,
    },
    /// A path timed out too often and is avoided for a while.
    PathDown {
        /// Index into [`SessionConfig::paths`].
        path: usize,
    },
    /// A path that was down answered again.
    PathUp {
        /// Index into [`SessionConfig::paths`].
        path: usize,
    },
    /// The target said nothing for `dead_timeout`; every op failed with
    /// [`Error::TargetDead`].
    TargetDead,
}

/// A frame [`Session::poll_transmit`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Its length in the buffer.
    pub len: usize,
    /// The path it goes out on (index into [`SessionConfig::paths`]).
    pub path: usize,
    /// That path's interface index ([`Path::iface`]).
    pub iface: usize,
}

/// The caller's memory that reads land in and writes come from, addressed by op and byte
/// offset within the op (sector × 512 from the op's first sector).
///
/// The session calls [`load`](Self::load) each time it (re)sends a write frame, and
/// [`store`](Self::store) at most once per sector of a read, with data that passed every
/// check. Both are called only for ops still in progress.
pub trait IoBuffers {
    /// Fills `out` with bytes `offset..offset + out.len()` of write `op`.
    fn load(&mut self, op: OpId, offset: usize, out: &mut [u8]);
    /// Keeps `data` as bytes `offset..offset + data.len()` of read `op`.
    fn store(&mut self, op: OpId, offset: usize, data: &[u8]);
}

/// [`IoBuffers`] for sessions that only send commands without sector data: loads zeros,
/// drops stores.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoData;

impl IoBuffers for NoData {
    fn load(&mut self, _: OpId, _: usize, out: &mut [u8]) {
        out.fill(0);
    }
    fn store(&mut self, _: OpId, _: usize, _: &[u8]) {}
}

/// Counters since the session was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Frames sent for the first time.
    pub sent: u64,
    /// Frames sent again after a timeout.
    pub retransmitted: u64,
    /// Frame timeouts.
    pub timeouts: u64,
    /// Answers accepted.
    pub answers: u64,
    /// Answers to a frame already answered (another transmission of it was answered first).
    pub duplicates: u64,
    /// Answers carrying the tag of an earlier frame of the slot, or of no slot.
    pub stale: u64,
    /// Frames that are not answers from this target: requests, or another shelf.slot.
    pub foreign: u64,
    /// Answers that carry the tag of an outstanding frame but do not match its request, by
    /// reason. They may belong to another initiator on the same host.
    pub mismatched: Mismatches,
    /// Frames that do not parse.
    pub malformed: u64,
}

/// Answers with an outstanding frame's tag that did not match its request, by the first
/// field that differed (see the [module docs](self#matching-an-answer-to-its-request)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mismatches {
    /// From another MAC than the path's target, or to another MAC than its local one.
    pub mac: u64,
    /// Another AoE command (query config for an ATA request, ...).
    pub command: u64,
    /// ATA flags: the write or LBA48 flag differs from the request's.
    pub flags: u64,
    /// An LBA outside the request's range.
    pub lba: u64,
    /// Data of another length than the request expects.
    pub length: u64,
}

impl Mismatches {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.mac + self.command + self.flags + self.lba + self.length
    }

    fn count(&mut self, m: Mismatch) {
        *match m {
            Mismatch::Mac => &mut self.mac,
            Mismatch::Command => &mut self.command,
            Mismatch::Flags => &mut self.flags,
            Mismatch::Lba => &mut self.lba,
            Mismatch::Length => &mut self.length,
        } += 1;
    }
}

/// Why an answer does not match the request whose tag it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mismatch {
    Mac,
    Command,
    Flags,
    Lba,
    Length,
}

/// The protocol engine for one target. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    paths: Vec<PathState>,
    /// Next path for a new frame.
    rr: usize,
    slots: Vec<Slot>,
    free_slots: Vec<u16>,
    /// Slots whose frame timed out, oldest first. Entries whose frame was answered or sent
    /// again meanwhile are skipped when popped.
    retransmit: VecDeque<u16>,
    in_flight: usize,
    ops: Vec<Option<OpState>>,
    free_ops: Vec<u32>,
    /// Ops with sectors not yet put in a frame, in submission order.
    pending: VecDeque<u32>,
    next_op: u64,
    events: VecDeque<Event>,
    window: usize,
    /// Answers counted towards the next window increase.
    credit: usize,
    /// Transmission sequence number of the latest frame sent.
    send_seq: u64,
    /// Timeouts of frames sent at or before this sequence number do not shrink the window
    /// again: it was already halved for their flight.
    recover_seq: u64,
    rtt: RttEstimator,
    /// While frames are outstanding: the last answer, or when they started being outstanding.
    silent_since: Option<Instant>,
    stats: SessionStats,
}

#[derive(Debug)]
struct PathState {
    path: Path,
    timeouts: u32,
    down_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u16,
    frame: Option<InFlight>,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    op: u32,
    /// Sectors from the op's first sector (reads and writes).
    offset: u64,
    sectors: u8,
    path: usize,
    sent: Instant,
    /// `None` while queued for retransmission.
    deadline: Option<Instant>,
    retries: u32,
    seq: u64,
    /// The frame went out with LBA48 addressing (reads and writes).
    extended: bool,
}

#[derive(Debug)]
struct OpState {
    id: OpId,
    kind: OpKind,
    /// Sectors (reads, writes) or 1 (single-frame commands).
    total: u64,
    framed: u64,
    in_flight: u32,
    result: Option<Result<Reply, Error>>,
}

#[derive(Debug)]
enum OpKind {
    Read { lba: u64 },
    Write { lba: u64 },
    Flush,
    Identify,
    Ata(AtaRequest),
    Config(ConfigRequest),
    Mask(MaskRequest),
    Reserve(ReserveRequest),
}

impl OpKind {
    fn command(&self) -> Command {
        match self {
            OpKind::Config(_) => Command::QueryConfig,
            OpKind::Mask(_) => Command::MacMask,
            OpKind::Reserve(_) => Command::Reserve,
            _ => Command::Ata,
        }
    }
}

#[derive(Debug)]
struct RttEstimator {
    /// Smoothed round-trip time and mean deviation in nanoseconds: integers, because a
    /// sample is taken per answer and `Duration` arithmetic normalises at every step.
    srtt: Option<u64>,
    rttvar: u64,
    rto: Duration,
    min: Duration,
    max: Duration,
    /// Karn's back-off kept for new frames: doublings since the last clean sample.
    shift: u32,
}

/// Most doublings kept for new frames after losses (`rto_max` caps the wait anyway).
const MAX_KEPT_BACKOFF: u32 = 6;

impl RttEstimator {
    fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator { srtt: None, rttvar: 0, rto: initial.clamp(min, max), min, max, shift: 0 }
    }

    /// A flight lost frames: until a frame is answered without having been sent again, new
    /// frames wait twice as long (Karn's algorithm, second half). Without this, a target that
    /// slows down past the RTO would have every frame sent twice and, the samples of
    /// retransmitted frames being ambiguous, the estimate would never learn its new pace.
    fn timed_out(&mut self) {
        self.shift = (self.shift + 1).min(MAX_KEPT_BACKOFF);
    }

    /// RFC 6298 section 2, with K = 4 and the clock granularity left to `min`.
    fn sample(&mut self, r: Duration) {
        let r = u64::try_from(r.as_nanos()).unwrap_or(u64::MAX);
        let srtt = match self.srtt {
            None => {
                self.rttvar = r / 2;
                r
            }
            Some(s) => {
                self.rttvar = self.rttvar.saturating_mul(3).saturating_add(s.abs_diff(r)) / 4;
                s.saturating_mul(7).saturating_add(r) / 8
            }
        };
        self.srtt = Some(srtt);
        let rto = srtt.saturating_add(self.rttvar.saturating_mul(4));
        self.rto = Duration::from_nanos(rto).clamp(self.min, self.max);
        self.shift = 0;
    }

    fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_nanos)
    }

    /// The wait before the `retries`-th retransmission of a frame is declared lost: the
    /// frame's own back-off, or the back-off kept from lost flights if that is longer.
    fn backoff(&self, retries: u32) -> Duration {
        self.rto.saturating_mul(1u32 << retries.max(self.shift).min(20)).min(self.max)
    }
}

impl Session {
    /// A session to the target `cfg` describes.
    ///
    /// ```
    /// use aoe_initiator::session::{Path, Session, SessionConfig};
    /// use aoe_proto::MacAddr;
    ///
    /// let path = Path { iface: 0, local: MacAddr([2, 0, 0, 0, 0, 1]), target: MacAddr([2, 0, 0, 0, 0, 2]) };
    /// let mut cfg = SessionConfig::new(1, 0, vec![path]);
    /// cfg.buffer_count = 64;
    /// cfg.max_sectors = 17; // MTU 9000
    /// let session = Session::new(cfg)?;
    /// assert_eq!(session.window(), 64);
    /// # Ok::<(), aoe_initiator::Error>(())
    /// ```
    pub fn new(mut cfg: SessionConfig) -> Result<Self, Error> {
        cfg.validate()?;
        cfg.buffer_count = cfg.buffer_count.max(1);
        let slots = usize::from(cfg.buffer_count).min(MAX_SLOTS - 1);
        let paths = cfg.paths.iter().map(|&path| PathState { path, timeouts: 0, down_until: None }).collect();
        Ok(Session {
            paths,
            rr: 0,
            slots: (0..slots).map(|_| Slot::default()).collect(),
            // Popped from the end: slot 0 first.
            free_slots: (0..slots).rev().map(|s| s as u16).collect(),
            retransmit: VecDeque::with_capacity(slots),
            in_flight: 0,
            ops: Vec::new(),
            free_ops: Vec::new(),
            pending: VecDeque::new(),
            next_op: 0,
            events: VecDeque::new(),
            window: slots,
            credit: 0,
            send_seq: 0,
            recover_seq: 0,
            rtt: RttEstimator::new(cfg.rto_initial, cfg.rto_min, cfg.rto_max),
            silent_since: None,
            stats: SessionStats::default(),
            cfg,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Switches LBA48 addressing on or off for reads and writes framed from now on (set it
    /// from IDENTIFY data).
    pub fn set_lba48(&mut self, lba48: bool) {
        self.cfg.lba48 = lba48;
    }

    /// Sets the command flushes send (from IDENTIFY: see [`SessionConfig::flush_command`]).
    pub fn set_flush_command(&mut self, command: AtaCommand) {
        self.cfg.flush_command = command;
    }

    /// The current window: how many frames may be outstanding (1..=buffer count).
    pub fn window(&self) -> usize {
        self.window
    }

    /// Frames outstanding now, including those waiting to be sent again.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The current retransmission timeout (before back-off).
    pub fn rto(&self) -> Duration {
        self.rtt.rto
    }

    /// The smoothed round-trip time, once a frame was answered.
    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// True unless path `path` is marked down at `now`.
    pub fn path_is_up(&self, path: usize, now: Instant) -> bool {
        self.paths.get(path).is_some_and(|p| p.usable(now))
    }

    /// True while ops are submitted and not yet completed.
    pub fn is_busy(&self) -> bool {
        self.ops.iter().any(Option::is_some)
    }

    /// Queues `request`; its completion comes as [`Event::Complete`] with the returned id.
    ///
    /// A request that can never be sent (a range beyond the addressing mode, a config string
    /// over 1024 bytes, ...) completes at once with an error; an empty read or write at once
    /// with [`Reply::Done`]. Ops on overlapping sectors may run in any order, as on any
    /// disk: wait for one before submitting the other when the order matters.
    pub fn submit(&mut self, request: Request) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        let (kind, total) = match request {
            Request::Read { lba, sectors } => (OpKind::Read { lba }, sectors),
            Request::Write { lba, sectors } => (OpKind::Write { lba }, sectors),
            Request::Flush => (OpKind::Flush, 1),
            Request::Identify => (OpKind::Identify, 1),
            Request::Ata(a) => (OpKind::Ata(a), 1),
            Request::Config(c) => (OpKind::Config(c), 1),
            Request::Mask(m) => (OpKind::Mask(m), 1),
            Request::Reserve(r) => (OpKind::Reserve(r), 1),
        };
        if let Err(e) = self.check(&kind, total) {
            self.events.push_back(Event::Complete { op: id, result: Err(e) });
            return id;
        }
        if total == 0 {
            self.events.push_back(Event::Complete { op: id, result: Ok(Reply::Done) });
            return id;
        }
        let op = OpState { id, kind, total, framed: 0, in_flight: 0, result: None };
        let index = match self.free_ops.pop() {
            Some(i) => {
                self.ops[i as usize] = Some(op);
                i
            }
            None => {
                self.ops.push(Some(op));
                (self.ops.len() - 1) as u32
            }
        };
        self.pending.push_back(index);
        id
    }

    fn check(&self, kind: &OpKind, total: u64) -> Result<(), Error> {
        match kind {
            OpKind::Read { lba } | OpKind::Write { lba } => {
                let limit = if self.cfg.lba48 { LBA48_LIMIT } else { LBA28_LIMIT };
                match lba.checked_add(total) {
                    Some(end) if end <= limit => Ok(()),
                    _ => Err(Error::OutOfRange { lba: *lba, sectors: total }),
                }
            }
            OpKind::Config(c) if c.string.len() > aoe_proto::config::MAX_STRING_LEN => {
                Err(Error::Invalid("config string longer than 1024 bytes"))
            }
            OpKind::Mask(m) if m.directives.len() > 255 => {
                Err(Error::Invalid("more than 255 mask directives"))
            }
            OpKind::Reserve(r) if r.macs.len() > 255 => Err(Error::Invalid("more than 255 reserve MACs")),
            _ => Ok(()),
        }
    }

    /// Forgets every op without completing it: nothing more is sent for them, their
    /// answers are ignored, no event reports them, their buffers are never used again.
    /// For a caller whose buffers go away early (a transport error, a cancelled call).
    pub fn abandon_all(&mut self) {
        for slot in &mut self.slots {
            slot.frame = None;
        }
        self.free_slots.clear();
        self.free_slots.extend((0..self.slots.len()).rev().map(|s| s as u16));
        self.retransmit.clear();
        self.pending.clear();
        self.in_flight = 0;
        self.silent_since = None;
        for (index, op) in self.ops.iter_mut().enumerate() {
            if op.take().is_some() {
                self.free_ops.push(index as u32);
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The interface the frame [`poll_transmit`](Self::poll_transmit) would write next goes
    /// out on, or `None` when it would write nothing. Lets a caller with one send batch per
    /// interface pick the batch before the frame is written.
    pub fn next_transmit(&self, now: Instant) -> Option<usize> {
        let path = if let Some(slot) = self.retransmit.iter().find_map(|&s| self.queued(s)) {
            self.retransmit_path(slot.path, now)
        } else if self.can_send_new() && self.next_eligible().is_some() {
            self.new_path(now)
        } else {
            return None;
        };
        Some(self.paths[path].path.iface)
    }

    /// Writes the next frame to send into `buf`: a retransmission if one is due, else the next
    /// piece of a submitted op if the window allows. `None` when there is nothing to send.
    ///
    /// `buf` should hold the largest frame the session sends: 14 + 22 + 512 × `max_sectors`
    /// bytes for reads and writes, more for long config strings or lists. A request that does
    /// not fit fails with [`Error::Invalid`] instead of being sent.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        data: &mut dyn IoBuffers,
    ) -> Option<Transmit> {
        while let Some(slot) = self.retransmit.pop_front() {
            let Some(frame) = self.queued(slot) else { continue };
            let path = self.retransmit_path(frame.path, now);
            if let Some(t) = self.send(now, slot, path, buf, data) {
                self.stats.retransmitted += 1;
                return Some(t);
            }
        }
        while self.can_send_new() {
            let pos = self.next_eligible()?;
            let op_index = self.pending[pos];
            let op = self.ops[op_index as usize].as_mut()?;
            let (offset, sectors) = match op.kind {
                OpKind::Read { .. } | OpKind::Write { .. } => {
                    let n = (op.total - op.framed).min(u64::from(self.cfg.max_sectors));
                    (op.framed, n as u8)
                }
                _ => (0, 0),
            };
            op.framed += if sectors == 0 { 1 } else { u64::from(sectors) };
            op.in_flight += 1;
            if op.framed == op.total {
                self.pending.remove(pos);
            }
            let slot = self.free_slots.pop()?;
            self.in_flight += 1;
            self.silent_since.get_or_insert(now);
            let path = self.new_path(now);
            self.rr = path + 1;
            // A new frame in the slot: answers to the slot's earlier frames become stale.
            let s = &mut self.slots[usize::from(slot)];
            s.generation = s.generation.wrapping_add(1);
            s.frame = Some(InFlight {
                op: op_index,
                offset,
                sectors,
                path,
                sent: now,
                deadline: None,
                retries: 0,
                seq: 0,
                extended: self.cfg.lba48,
            });
            if let Some(t) = self.send(now, slot, path, buf, data) {
                self.stats.sent += 1;
                return Some(t);
            }
        }
        None
    }

    /// Takes a received frame. Returns true when it was accepted as the answer to an
    /// outstanding frame; anything else (duplicates, stale tags, other targets, requests,
    /// garbage) is counted in [`stats`](Self::stats) and ignored.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8], data: &mut dyn IoBuffers) -> bool {
        let Ok(f) = Frame::parse(frame) else {
            self.stats.malformed += 1;
            return false;
        };
        let h = f.header;
        if !h.is_response() || h.shelf() != self.cfg.shelf || h.slot() != self.cfg.slot {
            self.stats.foreign += 1;
            return false;
        }
        let tag = h.tag() ^ self.cfg.tag_salt;
        let index = (tag & 0xFFFF) as usize;
        let generation = (tag >> TAG_SLOT_BITS) as u16;
        let Some(slot) = self.slots.get(index) else {
            self.stats.stale += 1;
            return false;
        };
        let current = slot.generation == generation;
        let Some(fl) = slot.frame.filter(|_| current) else {
            if current {
                self.stats.duplicates += 1;
            } else {
                self.stats.stale += 1;
            }
            // Nothing in it is taken, but the target sent it: it is alive, maybe only slower
            // than our timer.
            let from_target = self.paths.iter().any(|p| p.path.target == f.ethernet.src);
            if from_target && self.silent_since.is_some() {
                self.silent_since = Some(now);
            }
            return false;
        };
        let Some(op) = self.ops.get(fl.op as usize).and_then(Option::as_ref) else {
            self.stats.stale += 1;
            return false;
        };
        // The answer may be to an earlier transmission of the frame, sent on another path:
        // the path it came back on is the one that works.
        let via = self.answer_path(fl.path, f.ethernet.src, f.ethernet.dst);
        let checked = via.ok_or(Mismatch::Mac).and_then(|via| {
            let carried = frame.get(ATA_DATA_OFFSET..).unwrap_or_default();
            matches_request(&f, carried, &fl, op).map(|()| via)
        });
        let via = match checked {
            Ok(via) => via,
            Err(m) => {
                self.stats.mismatched.count(m);
                return false;
            }
        };

        // Accepted: the slot is free again, the target is alive, the path works.
        self.stats.answers += 1;
        self.slots[index].frame = None;
        self.free_slots.push(index as u16);
        self.in_flight -= 1;
        self.silent_since = (self.in_flight > 0).then_some(now);
        let p = &mut self.paths[via];
        p.timeouts = 0;
        if p.down_until.take().is_some() {
            self.events.push_back(Event::PathUp { path: via });
        }
        // Karn: an answer to a frame sent more than once may answer any of its transmissions,
        // so it says nothing about the round-trip time.
        if fl.retries == 0 && matches!(op.kind, OpKind::Read { .. } | OpKind::Write { .. }) {
            self.rtt.sample(now.saturating_duration_since(fl.sent));
        }
        self.credit += 1;
        if self.credit >= self.window {
            self.credit = 0;
            self.window = (self.window + 1).min(self.slots.len());
        }

        let carried = frame.get(ATA_DATA_OFFSET..).unwrap_or_default();
        let outcome = answer(&f, carried, fl, op, &self.cfg, data);
        self.finish_frame(fl.op, outcome);
        true
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next: the earliest
    /// retransmission deadline or the moment the target would be declared dead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let frames = self.slots.iter().filter_map(|s| s.frame.and_then(|f| f.deadline));
        let dead = self.silent_since.map(|t| t + self.cfg.dead_timeout);
        frames.chain(dead).min()
    }

    /// Acts on the deadlines passed at `now`: frames that timed out are queued for
    /// retransmission (shrinking the window, maybe taking their path down), and a target
    /// silent for `dead_timeout` is declared dead.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.silent_since.is_some_and(|t| now >= t + self.cfg.dead_timeout) {
            self.die();
            return;
        }
        for index in 0..self.slots.len() {
            let Some(frame) = self.slots[index].frame.as_mut() else { continue };
            if frame.deadline.is_none_or(|d| now < d) {
                continue;
            }
            frame.deadline = None;
            frame.retries += 1;
            let (path, seq) = (frame.path, frame.seq);
            self.retransmit.push_back(index as u16);
            self.stats.timeouts += 1;
            if seq > self.recover_seq {
                self.window = (self.window / 2).max(1);
                self.credit = 0;
                self.recover_seq = self.send_seq;
                self.rtt.timed_out();
            }
            self.path_timed_out(path, now);
        }
    }

    fn path_timed_out(&mut self, path: usize, now: Instant) {
        let others_up = (0..self.paths.len()).any(|p| p != path && self.paths[p].usable(now));
        let p = &mut self.paths[path];
        p.timeouts = p.timeouts.saturating_add(1);
        if p.timeouts >= self.cfg.path_down_after && others_up && p.usable(now) {
            p.down_until = Some(now + self.cfg.path_retry);
            self.events.push_back(Event::PathDown { path });
        }
    }

    fn die(&mut self) {
        let after = self.cfg.dead_timeout;
        tracing::warn!(shelf = self.cfg.shelf, slot = self.cfg.slot, ?after, "target declared dead");
        self.events.push_back(Event::TargetDead);
        for op in self.ops.iter().flatten() {
            self.events.push_back(Event::Complete { op: op.id, result: Err(Error::TargetDead { after }) });
        }
        self.abandon_all();
    }

    /// The frame in `slot` if it is waiting for retransmission.
    fn queued(&self, slot: u16) -> Option<InFlight> {
        self.slots[usize::from(slot)].frame.filter(|f| f.deadline.is_none() && f.seq != 0)
    }

    fn can_send_new(&self) -> bool {
        self.in_flight < self.window && !self.free_slots.is_empty()
    }

    /// Position in `pending` of the first op that may be framed now: anything but a flush
    /// that still waits for older ops.
    fn next_eligible(&self) -> Option<usize> {
        self.pending.iter().position(|&i| match self.ops[i as usize].as_ref() {
            Some(op) if matches!(op.kind, OpKind::Flush) => {
                self.ops.iter().flatten().all(|other| other.id >= op.id)
            }
            Some(_) => true,
            None => false,
        })
    }

    /// The path an answer from `src` to `dst` came back on: `last`, the path of the frame's
    /// latest transmission, if it matches, else any path of the session that does.
    fn answer_path(&self, last: usize, src: MacAddr, dst: MacAddr) -> Option<usize> {
        let matches = |i: usize| {
            let p = self.paths[i].path;
            p.target == src && p.local == dst
        };
        std::iter::once(last).chain(0..self.paths.len()).find(|&i| matches(i))
    }

    fn new_path(&self, now: Instant) -> usize {
        let n = self.paths.len();
        (0..n).map(|k| (self.rr + k) % n).find(|&p| self.paths[p].usable(now)).unwrap_or(self.rr % n)
    }

    fn retransmit_path(&self, last: usize, now: Instant) -> usize {
        let n = self.paths.len();
        (1..=n).map(|k| (last + k) % n).find(|&p| self.paths[p].usable(now)).unwrap_or(last)
    }

    /// (Re)sends the frame in `slot` on `path`, tagged with the slot's current generation. On
    /// failure to fit the buffer, fails its op and frees the slot.
    fn send(
        &mut self,
        now: Instant,
        slot: u16,
        path: usize,
        buf: &mut [u8],
        data: &mut dyn IoBuffers,
    ) -> Option<Transmit> {
        let index = usize::from(slot);
        let s = &self.slots[index];
        let mut frame = s.frame?;
        let tag = (u32::from(s.generation) << TAG_SLOT_BITS | u32::from(slot)) ^ self.cfg.tag_salt;
        let op = self.ops[frame.op as usize].as_ref()?;
        let p = self.paths[path].path;
        match emit(&self.cfg, p, tag, op, &frame, buf, data) {
            Ok(len) => {
                self.send_seq += 1;
                frame.path = path;
                frame.sent = now;
                frame.seq = self.send_seq;
                frame.deadline = Some(now + self.rtt.backoff(frame.retries));
                self.slots[index].frame = Some(frame);
                Some(Transmit { len, path, iface: p.iface })
            }
            Err(e) => {
                self.slots[index].frame = None;
                self.free_slots.push(slot);
                self.in_flight -= 1;
                if self.in_flight == 0 {
                    self.silent_since = None;
                }
                self.finish_frame(frame.op, Err(e));
                None
            }
        }
    }

    /// Records the outcome of one frame of op `index` and completes the op when nothing of
    /// it is left outstanding.
    fn finish_frame(&mut self, index: u32, outcome: Result<Option<Reply>, Error>) {
        let Some(op) = self.ops[index as usize].as_mut() else { return };
        op.in_flight -= 1;
        match outcome {
            Ok(Some(reply)) => op.result = Some(Ok(reply)),
            Ok(None) => {}
            Err(e) => {
                if !matches!(op.result, Some(Err(_))) {
                    op.result = Some(Err(e));
                }
                // Nothing more of a failed op is sent.
                if op.framed < op.total {
                    op.framed = op.total;
                    self.pending.retain(|&i| i != index);
                }
            }
        }
        if op.in_flight == 0 && op.framed == op.total {
            if let Some(op) = self.ops[index as usize].take() {
                self.free_ops.push(index);
                let result = op.result.unwrap_or(Ok(Reply::Done));
                self.events.push_back(Event::Complete { op: op.id, result });
            }
        }
    }
}

impl PathState {
    fn usable(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }
}

/// Writes the request for `frame` of `op` into `buf`.
fn emit(
    cfg: &SessionConfig,
    path: Path,
    tag: u32,
    op: &OpState,
    frame: &InFlight,
    buf: &mut [u8],
    data: &mut dyn IoBuffers,
) -> Result<usize, Error> {
    let header = HeaderRepr::request(cfg.shelf, cfg.slot, tag);
    let ata = |a: AtaRepr| BodyRepr::Ata { header: a, data: &[] };
    let body = match &op.kind {
        OpKind::Read { lba } => ata(AtaRepr::read(lba + frame.offset, frame.sectors, frame.extended)),
        OpKind::Write { lba } => ata(AtaRepr::write(lba + frame.offset, frame.sectors, frame.extended)),
        OpKind::Flush => ata(AtaRepr::command(cfg.flush_command, 0)),
        OpKind::Identify => ata(AtaRepr::command(AtaCommand::IdentifyDevice, 1)),
        OpKind::Ata(a) => BodyRepr::Ata {
            header: AtaRepr {
                flags: a.flags,
                err_feature: a.feature,
                sector_count: a.sector_count,
                cmd_status: a.command,
                lba: a.lba,
            },
            data: &a.data,
        },
        OpKind::Config(c) => BodyRepr::Config(ConfigRepr::request(c.command, &c.string)),
        OpKind::Mask(m) => {
            BodyRepr::Mask(MaskRepr { command: m.command, error: MaskError::None, directives: &m.directives })
        }
        OpKind::Reserve(r) => BodyRepr::Reserve(ReserveRepr { command: r.command, macs: &r.macs }),
    };
    let repr = FrameRepr { dst: path.target, src: path.local, header, body };
    if let OpKind::Write { .. } = op.kind {
        let bytes = usize::from(frame.sectors) * SECTOR_SIZE;
        let out = buf.get_mut(ATA_DATA_OFFSET..ATA_DATA_OFFSET + bytes).ok_or(too_small(()))?;
        data.load(op.id, frame.offset as usize * SECTOR_SIZE, out);
        repr.emit(buf).map_err(too_small)?;
        return Ok(ATA_DATA_OFFSET + bytes);
    }
    repr.emit_padded(buf).map_err(too_small)
}

/// Whether the answer `f` (with `carried`, the bytes after its ATA header) fits the request
/// of `frame` of `op` in everything a target echoes; the tag, shelf.slot, response flag and
/// MACs were checked before. See the [module docs](self#matching-an-answer-to-its-request).
fn matches_request(f: &Frame<'_>, carried: &[u8], frame: &InFlight, op: &OpState) -> Result<(), Mismatch> {
    if f.header.command() != op.kind.command() {
        return Err(Mismatch::Command);
    }
    let Body::Ata { header, .. } = f.body else { return Ok(()) };
    let failed = f.header.flags().contains(Flags::ERROR) || header.status().contains(AtaStatus::ERR);
    let sectors = usize::from(frame.sectors);
    let (lba, write) = match op.kind {
        OpKind::Read { lba } => (lba + frame.offset, false),
        OpKind::Write { lba } => (lba + frame.offset, true),
        OpKind::Identify => {
            let flags_ok = !header.flags().contains(AtaFlags::WRITE);
            return match (flags_ok, failed || carried.len() >= IDENTIFY_LEN) {
                (false, _) => Err(Mismatch::Flags),
                (_, false) => Err(Mismatch::Length),
                _ => Ok(()),
            };
        }
        _ => return Ok(()),
    };
    let flags = header.flags();
    if flags.contains(AtaFlags::WRITE) != write || flags.contains(AtaFlags::EXTENDED) != frame.extended {
        return Err(Mismatch::Flags);
    }
    // Echoed as sent, or advanced past the transfer as a disk's registers would be.
    let echoed = if frame.extended { header.lba48() } else { u64::from(header.lba28()) };
    if !(lba..=lba + sectors as u64).contains(&echoed) {
        return Err(Mismatch::Lba);
    }
    let length_ok = match (failed, write) {
        // An error answer carries no data, and some targets do not pad it (vblade: 36 bytes).
        (true, _) => carried.len() < SECTOR_SIZE,
        // Headers and Ethernet padding only, never sectors.
        (false, true) => carried.len() < SECTOR_SIZE,
        (false, false) => carried.len() == sectors * SECTOR_SIZE,
    };
    if !length_ok {
        return Err(Mismatch::Length);
    }
    Ok(())
}

fn too_small<E>(_: E) -> Error {
    Error::Invalid("request does not fit the transmit buffer")
}

/// The ATA command byte sent for `kind` in `frame` (the answer carries the status in its
/// place).
fn sent_command(kind: &OpKind, frame: &InFlight, cfg: &SessionConfig) -> u8 {
    let cmd = match (kind, frame.extended) {
        (OpKind::Read { .. }, true) => AtaCommand::ReadSectorsExt,
        (OpKind::Read { .. }, false) => AtaCommand::ReadSectors,
        (OpKind::Write { .. }, true) => AtaCommand::WriteSectorsExt,
        (OpKind::Write { .. }, false) => AtaCommand::WriteSectors,
        (OpKind::Flush, _) => cfg.flush_command,
        (OpKind::Ata(a), _) => AtaCommand::Other(a.command),
        _ => AtaCommand::IdentifyDevice,
    };
    cmd.into()
}

/// What the answer `f` to `frame` of `op` means: `Ok(None)` for a piece of a read or write
/// done, `Ok(Some(reply))` for a whole single-frame command, or an error.
///
/// `carried` is everything after the ATA header of an ATA answer. Its data is taken from
/// there, for as many sectors as the request asked: the sector count register of an answer
/// is the register after the command, which vblade (like a disk) leaves at 0 after a
/// complete transfer, so the data length the codec derives from it can be empty.
fn answer(
    f: &Frame<'_>,
    carried: &[u8],
    frame: InFlight,
    op: &OpState,
    cfg: &SessionConfig,
    data: &mut dyn IoBuffers,
) -> Result<Option<Reply>, Error> {
    if f.header.flags().contains(Flags::ERROR) {
        return Err(Error::Aoe { code: f.header.error });
    }
    match (&op.kind, f.body) {
        (OpKind::Ata(a), Body::Ata { header, .. }) => {
            // Up to the sectors either the request or the answer names: not the padding of
            // a short answer.
            let sectors = a.sector_count.max(header.sector_count);
            let bytes = carried.get(..usize::from(sectors) * SECTOR_SIZE).unwrap_or(carried);
            Ok(Some(Reply::Ata(AtaReply {
                status: header.status(),
                error: header.error(),
                sector_count: header.sector_count,
                lba: header.lba48(),
                data: bytes.to_vec(),
            })))
        }
        (kind, Body::Ata { header, .. }) => {
            let bytes = carried;
            let status = header.status();
            // BSY: the registers are not valid yet, so the command did not complete.
            if status.intersects(AtaStatus::ERR | AtaStatus::DF | AtaStatus::BSY) {
                let (lba, sectors) = match kind {
                    OpKind::Read { lba } | OpKind::Write { lba } => {
                        (lba + frame.offset, u64::from(frame.sectors))
                    }
                    _ => (0, 0),
                };
                let command = sent_command(kind, &frame, cfg);
                return Err(Error::from_ata(command, status, header.error(), lba, sectors));
            }
            match kind {
                OpKind::Read { .. } => {
                    let expected = usize::from(frame.sectors) * SECTOR_SIZE;
                    let got = bytes.get(..expected).ok_or(Error::ShortRead { expected, got: bytes.len() })?;
                    if op.result.is_none() {
                        data.store(op.id, frame.offset as usize * SECTOR_SIZE, got);
                    }
                    Ok(None)
                }
                OpKind::Identify => Identify::parse(bytes)
                    .map(|id| Some(Reply::Identify(id)))
                    .map_err(|_| Error::BadAnswer("IDENTIFY data is short or fails its checksum")),
                _ => Ok(None),
            }
        }
        (OpKind::Config(_), Body::Config { header, string }) => Ok(Some(Reply::Config(ConfigReply {
            buffer_count: header.buffer_count.get(),
            firmware: header.firmware.get(),
            sector_count: header.sector_count,
            aoe_version: header.aoe_version(),
            command: header.command(),
            string: string.to_vec(),
        }))),
        (OpKind::Mask(_), Body::Mask { header, directives }) => match header.error() {
            MaskError::None => Ok(Some(Reply::Mask(
                directives.iter().filter(|d| d.command() == DirectiveCommand::Add).map(|d| d.mac).collect(),
            ))),
            e => Err(Error::Mask(e)),
        },
        (OpKind::Reserve(_), Body::Reserve { macs, .. }) => Ok(Some(Reply::Reserve(macs.to_vec()))),
        _ => Err(Error::BadAnswer("answer body does not match the request")),
    }
}

#[cfg(test)]
mod tests;
