//! The session's public vocabulary: configuration, requests and replies, events, counters.

use std::time::Duration;

use aoe_proto::{
    AtaCommand, AtaError, AtaFlags, AtaStatus, ConfigCommand, Directive, Identify, MacAddr, MaskCommand,
    ReserveCommand,
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
/// (TIMERTICK), and RFC 6298 asks for a 1 s floor on the Internet. A lost frame seldom
/// waits for it: answers to later frames, or a tail probe after two round trips, find it
/// first (see the [session docs](super#loss)); the RTO is for silence.
pub const DEFAULT_RTO_MIN: Duration = Duration::from_millis(50);
/// Default upper bound of the RTO and of its back-off: 2 s, as the Linux driver's MAXTIMER.
pub const DEFAULT_RTO_MAX: Duration = Duration::from_secs(2);
/// Default number of consecutive timeouts that take a path down.
pub const DEFAULT_PATH_DOWN_AFTER: u32 = 3;
/// Default time a path stays down before it is tried again (the Linux driver's
/// HARD_SCORN_SECS is 10 s too).
pub const DEFAULT_PATH_RETRY: Duration = Duration::from_secs(10);

/// One way to reach the target: from a local link to one of the target's MACs.
///
/// Across this crate a *link* is one of the caller's transports (a local interface), named
/// by its index in the slice the caller drives; a *path* is a link plus a target MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    /// The index of the link (transport) the path leaves on.
    pub link: usize,
    /// The local MAC on that interface: the source of requests, the destination of answers.
    pub local: MacAddr,
    /// The target's MAC on this path.
    pub target: MacAddr,
}

/// How a session talks to its target. Build with [`SessionConfig::new`], adjust fields, then
/// [`Session::new`](super::Session::new) validates it.
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

    pub(super) fn validate(&self) -> Result<(), Error> {
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

/// A frame [`Session::poll_transmit`](super::Session::poll_transmit) wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Its length in the buffer.
    pub len: usize,
    /// The path it goes out on (index into [`SessionConfig::paths`]).
    pub path: usize,
    /// That path's link ([`Path::link`]).
    pub link: usize,
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
    /// Frames sent again (after a timeout, or found lost early).
    pub retransmitted: u64,
    /// Frame timeouts.
    pub timeouts: u64,
    /// Frames found lost before their timer ran out, because frames sent after them were
    /// answered (see the [session docs](super#loss)).
    pub lost_early: u64,
    /// Frames sent again as tail probes (see the [session docs](super#loss)).
    pub probes: u64,
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
/// field that differed (see the [session docs](super#matching-an-answer-to-its-request)).
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

    pub(super) fn count(&mut self, m: Mismatch) {
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
pub(super) enum Mismatch {
    Mac,
    Command,
    Flags,
    Lba,
    Length,
}
