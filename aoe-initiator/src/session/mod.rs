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
//! # Loss
//!
//! A frame is lost when its timer runs out, or earlier, on evidence (RACK, RFC 8985): a read
//! or write frame sent after it was answered, and the time it was sent plus the round trip
//! of that answer plus a reordering allowance has passed (a quarter of the smoothed round
//! trip, at least 1 ms: targets answer out of order, switches and relays hold frames back).
//! Such a frame is sent again at once, without waiting for its timer. Answers that may belong
//! to an earlier transmission of a frame sent more than once (quicker than any round trip
//! seen) are no such evidence; duplicate answers are no evidence at all.
//!
//! The last frames of a burst have no later frames to show them lost. When nothing has been
//! sent or answered for two smoothed round trips (at least 2 ms) while frames are
//! outstanding, the latest-sent read or write frame is sent again once, as a probe (RACK's
//! tail loss probe): its answer shows what else was lost, so a lost tail costs a few round
//! trips, not an RTO. A probe is not a loss; the next one waits for an answer first.
//!
//! Loss among answers that keep coming is taken for what it is on a LAN, damage to single
//! frames, not overload: it neither shrinks the window nor backs the timer off. Overload
//! shows otherwise: a timer that runs out with nothing at all answered since its frame was
//! sent (a *silent* timeout), or more than three quarters of a window lost at once.
//!
//! # Window
//!
//! At most `window` frames are outstanding, and `window` never exceeds the target's buffer
//! count. It starts at the buffer count; every full window of answers grows it by one frame.
//! It is halved (at least 1) at most once per loss episode (the frames outstanding when the
//! episode's first loss was found): at a silent timeout, or once more than three quarters
//! of the episode's window is lost. Isolated losses keep it.
//!
//! # Retransmission timeout
//!
//! Round-trip samples come from read and write frames that were sent once (Karn: an answer to
//! a retransmitted frame is ambiguous). The estimate follows RFC 6298: a smoothed mean and
//! mean deviation, RTO = SRTT + 4 × RTTVAR, clamped to `rto_min..=rto_max`. A frame's timer
//! doubles at each of its silent timeouts (and at each timeout after its sixth, answers or
//! not), capped at `rto_max`; after a silent timeout, new frames too wait twice as long per
//! such episode until one is answered at its first sending. Other commands (FLUSH,
//! IDENTIFY, config) are not sampled, because their service time says nothing about the
//! network.
//!
//! # Overlapping writes
//!
//! A write frame sent more than once may land on the target more than once, the later copy
//! after the answer that completed it. So that such a copy never lands over newer data, the
//! sectors of a write frame that was sent more than once are held for one RTO (at least
//! 100 ms) after its last transmission: until then no frame of another write to any of them is sent, and no flush
//! (a flush answered means no older write can land after it). Reads are not held, and writes
//! submitted together still run in any order (see [`Session::submit`]).
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
//! the one that timed out. A path whose frames are lost `path_down_after` times in a row,
//! with nothing answered on it for an RTO, while another path is up, is marked down for
//! `path_retry`, then tried again; an answer on it brings it back at once. When the paths
//! still up lose that many frames in a row too, the paths marked down are tried again at
//! once: the one believed good may be the one that broke. With every path down, all are
//! used anyway.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use aoe_proto::ata::{LBA28_LIMIT, LBA48_LIMIT};
use aoe_proto::{AoeHeader, AtaCommand, Command, MacAddr, Received};

use crate::Error;

mod codec;
mod rtt;
mod tags;
mod types;
mod window;

use codec::{answer, emit, matches_request};
use rtt::RttEstimator;
use tags::{Lookup, Tags, MAX_SLOTS};
use types::Mismatch;
pub use types::*;
use window::Window;

/// The protocol engine for one target. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    paths: Vec<PathState>,
    /// Next path for a new frame.
    rr: usize,
    tags: Tags,
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
    window: Window,
    rtt: RttEstimator,
    /// While frames are outstanding: the last answer, or when they started being outstanding.
    silent_since: Option<Instant>,
    stats: SessionStats,
    /// Transmissions in the order they went out: sequence number and slot. Entries whose
    /// slot has since been answered or sent again are skipped.
    sent_order: VecDeque<(u64, u16)>,
    /// The latest-sent read or write frame answered so far.
    rack: Option<Rack>,
    /// When the earliest frame sent before [`rack`](Self::rack) counts as lost, if it is
    /// still unanswered then.
    reorder_deadline: Option<Instant>,
    /// Sectors of write frames sent more than once, held while another copy may still land
    /// (see the [module docs](self#overlapping-writes)).
    held: Vec<Held>,
    /// The latest frame sent or answer accepted.
    last_activity: Option<Instant>,
    /// A tail probe may be sent: set by a new frame or an answer, cleared by a probe.
    probe_armed: bool,
}

/// Least time the sectors of a write frame sent more than once are held after its last
/// transmission (see the [module docs](self#overlapping-writes)): longer than any copy of a
/// frame is delayed on a LAN, even when the RTO is shorter (a clamped `rto_max`, a frame
/// held in a queue longer than the round trips measured).
const LATE_COPY_HOLD: Duration = Duration::from_millis(100);

/// Least wait before a tail probe (see the [module docs](self#loss)).
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(2);

/// The latest-sent frame answered (RACK's reference point).
#[derive(Debug, Clone, Copy)]
struct Rack {
    seq: u64,
    rtt: Duration,
}

/// Sectors `start..end` that no other write may touch before `until`.
#[derive(Debug, Clone, Copy)]
struct Held {
    start: u64,
    end: u64,
    until: Instant,
}

/// Timeouts of a frame, answers or not, before its timer doubles at each further one: lost
/// six times in a row while other frames are answered is no longer random loss (at a fifth
/// of the frames lost each way, about one frame in 450 is).
const TIMEOUTS_BEFORE_BACKOFF: u32 = 6;

#[derive(Debug)]
struct PathState {
    path: Path,
    /// Frames lost on it since its last answer.
    timeouts: u32,
    down_until: Option<Instant>,
    /// When an answer last came back on it.
    answered: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Times its timer was doubled.
    doublings: u32,
    seq: u64,
    /// Answers the session had accepted when the frame was last sent: none more by its
    /// timeout makes the timeout silent.
    answers_before: u64,
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

impl Session {
    /// A session to the target `cfg` describes.
    ///
    /// ```
    /// use aoe_initiator::session::{Path, Session, SessionConfig};
    /// use aoe_proto::MacAddr;
    ///
    /// let path = Path { link: 0, local: MacAddr([2, 0, 0, 0, 0, 1]), target: MacAddr([2, 0, 0, 0, 0, 2]) };
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
        let slots = usize::from(cfg.buffer_count).min(MAX_SLOTS);
        let paths = cfg
            .paths
            .iter()
            .map(|&path| PathState { path, timeouts: 0, down_until: None, answered: None })
            .collect();
        Ok(Session {
            paths,
            rr: 0,
            tags: Tags::new(slots, cfg.tag_salt),
            retransmit: VecDeque::with_capacity(slots),
            in_flight: 0,
            ops: Vec::new(),
            free_ops: Vec::new(),
            pending: VecDeque::new(),
            next_op: 0,
            events: VecDeque::new(),
            window: Window::new(slots),
            rtt: RttEstimator::new(cfg.rto_initial, cfg.rto_min, cfg.rto_max),
            silent_since: None,
            stats: SessionStats::default(),
            sent_order: VecDeque::with_capacity(2 * slots),
            rack: None,
            reorder_deadline: None,
            held: Vec::new(),
            last_activity: None,
            probe_armed: false,
            cfg,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// What a transport may keep of the frames it receives for this session alone
    /// ([`Transport::filter_answers`](aoe_transport::Transport::filter_answers)): answers
    /// from its shelf.slot whose tags name one of its frame slots. Everything the session
    /// takes passes it.
    pub fn answer_filter(&self) -> aoe_transport::AnswerFilter {
        aoe_transport::AnswerFilter {
            shelf: self.cfg.shelf,
            slot: self.cfg.slot,
            tag_salt: self.cfg.tag_salt,
            frame_slots: self.tags.len() as u16,
        }
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
        self.window.size()
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
    /// disk: wait for one before submitting the other when the order matters. A write
    /// submitted after an overlapping one completed is never overtaken by a late copy of it
    /// (see the [module docs](self#overlapping-writes)).
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
        self.tags.free_all();
        self.retransmit.clear();
        self.pending.clear();
        self.sent_order.clear();
        self.reorder_deadline = None;
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

    /// The link the frame [`poll_transmit`](Self::poll_transmit) would write next goes out
    /// on, or `None` when it would write nothing. Lets a caller with one send batch per link
    /// pick the batch before the frame is written.
    pub fn next_transmit(&self, now: Instant) -> Option<usize> {
        let path = if let Some(slot) = self.retransmit.iter().find_map(|&s| self.queued(s)) {
            self.retransmit_path(slot.path, now)
        } else if self.can_send_new() && self.next_eligible(now).is_some() {
            self.new_path(now)
        } else {
            return None;
        };
        Some(self.paths[path].path.link)
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
        if !self.held.is_empty() {
            self.held.retain(|h| h.until > now);
        }
        while let Some(slot) = self.retransmit.pop_front() {
            let Some(frame) = self.queued(slot) else { continue };
            let path = self.retransmit_path(frame.path, now);
            if let Some(t) = self.send(now, slot, path, buf, data) {
                self.stats.retransmitted += 1;
                return Some(t);
            }
        }
        while self.can_send_new() {
            let pos = self.next_eligible(now)?;
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
            let path = self.new_path(now);
            let slot = self.tags.claim(InFlight {
                op: op_index,
                offset,
                sectors,
                path,
                sent: now,
                deadline: None,
                retries: 0,
                doublings: 0,
                seq: 0,
                answers_before: 0,
                extended: self.cfg.lba48,
            })?;
            self.in_flight += 1;
            self.silent_since.get_or_insert(now);
            self.probe_armed = true;
            self.rr = path + 1;
            if let Some(t) = self.send(now, slot, path, buf, data) {
                self.stats.sent += 1;
                return Some(t);
            }
        }
        None
    }

    /// Whether `frame` names this session's target: a frame for another shelf.slot can be
    /// routed elsewhere without being offered (see [`crate::endpoint`]).
    pub fn is_for(&self, header: &AoeHeader) -> bool {
        header.shelf() == self.cfg.shelf && header.slot() == self.cfg.slot
    }

    /// Parses a received frame and takes it as [`handle_answer`](Self::handle_answer) does.
    /// For callers with one session; an [`Endpoint`](crate::endpoint::Endpoint) parses each
    /// frame once for many.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8], data: &mut dyn IoBuffers) -> bool {
        match Received::parse(frame) {
            Ok(received) => self.handle_answer(now, &received, data),
            Err(_) => {
                self.stats.malformed += 1;
                false
            }
        }
    }

    /// Takes a received frame, parsed once by the caller. Returns true when it was accepted
    /// as the answer to an outstanding frame; anything else (duplicates, stale tags, other
    /// targets, requests, answers that do not match their request) is counted in
    /// [`stats`](Self::stats) and ignored.
    pub fn handle_answer(&mut self, now: Instant, received: &Received<'_>, data: &mut dyn IoBuffers) -> bool {
        let Some(f) = received.frame() else {
            self.stats.malformed += 1;
            return false;
        };
        let f = &f;
        let h = f.header;
        if !h.is_response() || !self.is_for(h) {
            self.stats.foreign += 1;
            return false;
        }
        let (index, fl) = match self.tags.lookup(h.tag()) {
            Lookup::Current(index, frame) => (index, frame),
            late => {
                if late == Lookup::Answered {
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
            }
        };
        let Some(op) = self.ops.get(fl.op as usize).and_then(Option::as_ref) else {
            self.stats.stale += 1;
            return false;
        };
        // The answer may be to an earlier transmission of the frame, sent on another path:
        // the path it came back on is the one that works.
        let carried = received.after_ata_header();
        let via = self.answer_path(fl.path, f.ethernet.src, f.ethernet.dst);
        let checked =
            via.ok_or(Mismatch::Mac).and_then(|via| matches_request(f, carried, &fl, op).map(|()| via));
        let via = match checked {
            Ok(via) => via,
            Err(m) => {
                self.stats.mismatched.count(m);
                return false;
            }
        };

        // Accepted: the slot is free again, the target is alive, the path works.
        self.stats.answers += 1;
        self.tags.release(index as u16);
        self.in_flight -= 1;
        self.silent_since = (self.in_flight > 0).then_some(now);
        let p = &mut self.paths[via];
        p.timeouts = 0;
        p.answered = Some(now);
        if p.down_until.take().is_some() {
            self.events.push_back(Event::PathUp { path: via });
        }
        // Karn: an answer to a frame sent more than once may answer any of its transmissions,
        // so it says nothing about the round-trip time.
        let rtt = now.saturating_duration_since(fl.sent);
        if matches!(op.kind, OpKind::Read { .. } | OpKind::Write { .. }) {
            if fl.retries == 0 {
                self.rtt.sample(rtt);
            }
            // An answer quicker than any round trip seen answers an earlier transmission: it
            // says nothing about what was sent before the latest one.
            let latest = fl.retries == 0 || self.rtt.min_rtt().is_some_and(|m| rtt >= m);
            if latest && self.rack.is_none_or(|r| fl.seq > r.seq) {
                self.rack = Some(Rack { seq: fl.seq, rtt });
            }
        }
        if let (OpKind::Write { lba }, true) = (&op.kind, fl.retries > 0) {
            let start = lba + fl.offset;
            let until = fl.sent + self.rtt.rto.max(LATE_COPY_HOLD);
            self.held.push(Held { start, end: start + u64::from(fl.sectors), until });
        }
        self.window.answered();
        self.last_activity = Some(now);
        self.probe_armed = true;

        let outcome = answer(f, carried, fl, op, &self.cfg, data);
        self.finish_frame(fl.op, outcome);
        self.detect_lost(now);
        true
    }

    /// Queues for retransmission the read and write frames that the latest-sent answered
    /// frame shows lost (see the [module docs](self#loss)), and sets
    /// [`reorder_deadline`](Self::reorder_deadline) for the next one that may be.
    fn detect_lost(&mut self, now: Instant) {
        self.reorder_deadline = None;
        let Some(rack) = self.rack else { return };
        let allowance = self.rtt.reorder_window();
        while let Some(&(seq, slot)) = self.sent_order.front() {
            if seq >= rack.seq {
                break;
            }
            let index = usize::from(slot);
            let frame = self.tags.slots[index].frame.filter(|f| f.seq == seq && f.deadline.is_some());
            let Some(frame) = frame else {
                self.sent_order.pop_front();
                continue;
            };
            let data = self.ops[frame.op as usize]
                .as_ref()
                .is_some_and(|op| matches!(op.kind, OpKind::Read { .. } | OpKind::Write { .. }));
            if !data {
                // Flushes and commands take their own time: only their timer says they are lost.
                self.sent_order.pop_front();
                continue;
            }
            // Frames went out in this order, so the first one not yet due is the earliest.
            let lost_at = frame.sent + rack.rtt + allowance;
            if now < lost_at {
                self.reorder_deadline = Some(lost_at);
                break;
            }
            self.sent_order.pop_front();
            if let Some(f) = self.tags.slots[index].frame.as_mut() {
                f.deadline = None;
                f.retries += 1;
            }
            self.retransmit.push_back(slot);
            self.stats.lost_early += 1;
            self.window.lost(seq, false);
            self.path_timed_out(frame.path, now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next: the earliest
    /// retransmission deadline or the moment the target would be declared dead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let frames = self.tags.slots.iter().filter_map(|s| s.frame.and_then(|f| f.deadline));
        let dead = self.silent_since.map(|t| t + self.cfg.dead_timeout);
        // Held sectors matter only to writes waiting for them.
        let held = self.held.iter().map(|h| h.until).min().filter(|_| !self.pending.is_empty());
        frames.chain(dead).chain(self.reorder_deadline).chain(held).chain(self.probe_deadline()).min()
    }

    /// When a tail probe is due, if one may be sent.
    fn probe_deadline(&self) -> Option<Instant> {
        if !self.probe_armed || self.in_flight == 0 {
            return None;
        }
        let pto = self.rtt.srtt()?.saturating_mul(2).max(MIN_PROBE_TIMEOUT).min(self.rtt.rto);
        Some(self.last_activity? + pto)
    }

    /// Sends the latest-sent outstanding read or write frame again, as a tail probe.
    fn probe(&mut self) {
        self.probe_armed = false;
        let ops = &self.ops;
        let newest = (0..self.tags.len())
            .filter_map(|i| self.tags.slots[i].frame.map(|f| (i, f)))
            .filter(|(_, f)| f.deadline.is_some())
            .filter(|(_, f)| {
                ops[f.op as usize]
                    .as_ref()
                    .is_some_and(|op| matches!(op.kind, OpKind::Read { .. } | OpKind::Write { .. }))
            })
            .max_by_key(|(_, f)| f.seq);
        let Some((index, _)) = newest else { return };
        if let Some(f) = self.tags.slots[index].frame.as_mut() {
            f.deadline = None;
            f.retries += 1;
        }
        self.retransmit.push_back(index as u16);
        self.stats.probes += 1;
    }

    /// Acts on the deadlines passed at `now`: frames that timed out or are shown lost by
    /// later answers are queued for retransmission (a silent timeout shrinking the window and
    /// backing the timer off, maybe taking their path down), and a target silent for
    /// `dead_timeout` is declared dead.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.silent_since.is_some_and(|t| now >= t + self.cfg.dead_timeout) {
            self.die();
            return;
        }
        self.held.retain(|h| h.until > now);
        if self.reorder_deadline.is_some_and(|d| now >= d) {
            self.detect_lost(now);
        }
        for index in 0..self.tags.len() {
            let Some(frame) = self.tags.slots[index].frame.as_mut() else { continue };
            if frame.deadline.is_none_or(|d| now < d) {
                continue;
            }
            frame.deadline = None;
            frame.retries += 1;
            let silent = self.stats.answers == frame.answers_before;
            if silent || frame.retries > TIMEOUTS_BEFORE_BACKOFF {
                frame.doublings += 1;
            }
            let (path, seq) = (frame.path, frame.seq);
            self.retransmit.push_back(index as u16);
            self.stats.timeouts += 1;
            if self.window.lost(seq, silent).back_off {
                self.rtt.timed_out();
            }
            self.path_timed_out(path, now);
        }
        if self.probe_deadline().is_some_and(|d| now >= d) {
            self.probe();
        }
    }

    /// A frame sent on `path` was lost (its timer ran out, or later answers show it).
    ///
    /// A path that answered within the last RTO is not taken down: frames shown lost by
    /// answers on another path may only be late (a target's thread for that path held up
    /// for a few milliseconds). And when no other path is up, the ones marked down are tried
    /// again: otherwise a path marked down while the other broke would leave every frame on
    /// the broken one until `path_retry`, and the target declared dead meanwhile.
    fn path_timed_out(&mut self, path: usize, now: Instant) {
        let others_up = (0..self.paths.len()).any(|p| p != path && self.paths[p].usable(now));
        let rto = self.rtt.rto;
        let p = &mut self.paths[path];
        p.timeouts = p.timeouts.saturating_add(1);
        if p.timeouts < self.cfg.path_down_after || !p.usable(now) {
            return;
        }
        if !others_up {
            for (i, other) in self.paths.iter_mut().enumerate() {
                if i != path && other.down_until.take().is_some() {
                    other.timeouts = 0;
                    tracing::debug!(path = i, "the paths up fail too: trying a path marked down again");
                }
            }
            return;
        }
        let answered_lately = p.answered.is_some_and(|t| now.saturating_duration_since(t) < rto);
        if !answered_lately {
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
        self.tags.slots[usize::from(slot)].frame.filter(|f| f.deadline.is_none() && f.seq != 0)
    }

    fn can_send_new(&self) -> bool {
        self.in_flight < self.window.size() && self.tags.has_free()
    }

    /// Position in `pending` of the first op that may be framed now: anything but a flush
    /// that still waits for older ops or held sectors, or a write whose next frame touches
    /// held sectors.
    fn next_eligible(&self, now: Instant) -> Option<usize> {
        let held =
            |start: u64, end: u64| self.held.iter().any(|h| h.until > now && h.start < end && start < h.end);
        self.pending.iter().position(|&i| match self.ops[i as usize].as_ref() {
            Some(op) if matches!(op.kind, OpKind::Flush) => {
                self.ops.iter().flatten().all(|other| other.id >= op.id) && !held(0, u64::MAX)
            }
            Some(OpState { kind: OpKind::Write { lba }, framed, total, .. }) => {
                let start = lba + framed;
                !held(start, start + (total - framed).min(u64::from(self.cfg.max_sectors)))
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
        let mut frame = self.tags.slots[index].frame?;
        let tag = self.tags.tag(slot);
        let op = self.ops[frame.op as usize].as_ref()?;
        let p = self.paths[path].path;
        match emit(&self.cfg, p, tag, op, &frame, buf, data) {
            Ok(len) => {
                frame.path = path;
                frame.sent = now;
                frame.seq = self.window.sent();
                frame.answers_before = self.stats.answers;
                self.last_activity = Some(now);
                frame.deadline = Some(now + self.rtt.backoff(frame.doublings));
                self.tags.slots[index].frame = Some(frame);
                self.sent_order.push_back((frame.seq, slot));
                if self.sent_order.len() > 4 * self.tags.len() + 64 {
                    // A frame outstanding for long keeps everything sent after it queued:
                    // drop the entries of frames answered or sent again since.
                    let slots = &self.tags.slots;
                    self.sent_order.retain(|&(seq, s)| {
                        slots[usize::from(s)].frame.is_some_and(|f| f.seq == seq && f.deadline.is_some())
                    });
                }
                Some(Transmit { len, path, link: p.link })
            }
            Err(e) => {
                self.tags.release(slot);
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

#[cfg(test)]
mod tests;
