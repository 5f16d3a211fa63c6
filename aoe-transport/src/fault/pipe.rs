//! [`Pipe`]: one direction of a faulty link, and the arena of frames it holds back.

use std::time::{Duration, Instant};

use super::{FaultStats, Heal, Plan};
use crate::rng::SplitMix64;

/// One frame in the hold arena.
#[derive(Debug, Clone, Copy)]
struct Held {
    slot: usize,
    len: usize,
    /// Goes out at or after this time.
    due: Instant,
    /// For a reordered frame: how many more frames are to go out before it.
    gap: Option<u32>,
}

/// A bounded arena of frames held back, allocated on first use.
#[derive(Debug)]
struct Hold {
    arena: Vec<u8>,
    frame_capacity: usize,
    limit: usize,
    free: Vec<usize>,
    /// In the order they were held.
    frames: Vec<Held>,
}

impl Hold {
    fn new(frame_capacity: usize, limit: usize) -> Self {
        Hold { arena: Vec::new(), frame_capacity, limit, free: Vec::new(), frames: Vec::new() }
    }

    /// Copies `frame` into a free slot; false when none is left (or it does not fit).
    fn put(&mut self, frame: &[u8], due: Instant, gap: Option<u32>) -> bool {
        if frame.len() > self.frame_capacity {
            return false;
        }
        if self.arena.is_empty() && self.limit > 0 {
            // The one allocation: every slot at once, so holding never allocates again.
            self.arena = vec![0; self.limit * self.frame_capacity];
            self.free = (0..self.limit).rev().collect();
            self.frames = Vec::with_capacity(self.limit);
        }
        let Some(slot) = self.free.pop() else { return false };
        let at = slot * self.frame_capacity;
        self.arena[at..at + frame.len()].copy_from_slice(frame);
        self.frames.push(Held { slot, len: frame.len(), due, gap });
        true
    }

    /// Counts `n` frames gone out past the reordered frame held, if any.
    fn passed(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        for gap in self.frames.iter_mut().filter_map(|h| h.gap.as_mut()) {
            *gap = gap.saturating_sub(n);
        }
    }

    /// Hands the frames for which `due` holds to `emit`, in the order they were held, until
    /// `emit` has no room (then sets `blocked`); returns how many went out.
    fn release(
        &mut self,
        blocked: &mut bool,
        emit: &mut impl FnMut(&[u8]) -> bool,
        due: impl Fn(&Held) -> bool,
    ) -> usize {
        let Hold { arena, frame_capacity, free, frames, .. } = self;
        let mut went = 0;
        frames.retain(|h| {
            if *blocked || !due(h) {
                return true;
            }
            let at = h.slot * *frame_capacity;
            if !emit(&arena[at..at + h.len]) {
                *blocked = true;
                return true;
            }
            free.push(h.slot);
            went += 1;
            false
        });
        went
    }
}

/// A partition in force.
#[derive(Debug, Clone, Copy)]
struct Partition {
    until: Option<Instant>,
    frames_left: Option<u64>,
}

/// One direction of a faulty link, without I/O: frames go in with the time
/// ([`offer`](Self::offer)), and every frame that leaves is handed to an `emit` callback,
/// in order.
///
/// `emit` returns false when it has no room (a full batch): the pipe then keeps that frame,
/// and every later one of the same call, to hand out first at the next
/// [`release`](Self::release). A caller calls `release` at or after
/// [`next_release`](Self::next_release) to let held frames go; it also lets go of frames
/// whose turn came by count (reordered frames that later frames have passed).
#[derive(Debug)]
pub struct Pipe {
    plan: Plan,
    rng: SplitMix64,
    hold: Hold,
    /// Room for a corrupted copy of one frame.
    scratch: Vec<u8>,
    partition: Option<Partition>,
    stats: FaultStats,
    /// `emit` refused a frame since the last `release`: keep the rest in order.
    blocked: bool,
}

impl Pipe {
    /// A pipe for frames of up to `frame_capacity` bytes, doing what `plan` says.
    pub fn new(plan: Plan, frame_capacity: usize) -> Self {
        let plan = plan.clamped();
        Pipe {
            plan,
            rng: SplitMix64(plan.seed),
            hold: Hold::new(frame_capacity, plan.hold_limit),
            scratch: Vec::new(),
            partition: None,
            stats: FaultStats::default(),
            blocked: false,
        }
    }

    /// The plan in force (clamped).
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// Replaces the plan and reseeds the decisions from `plan.seed`. Frames held stay held
    /// until they are due; a partition stays in force. A new `hold_limit` applies once
    /// nothing is held.
    pub fn set_plan(&mut self, plan: Plan) {
        let plan = plan.clamped();
        self.plan = plan;
        self.rng = SplitMix64(plan.seed);
        if self.hold.frames.is_empty() && self.hold.limit != plan.hold_limit {
            self.hold = Hold::new(self.hold.frame_capacity, plan.hold_limit);
        }
    }

    /// Loses every frame from now on until the partition heals as `heal` says (a partition
    /// already in force is replaced). Frames already held still go out.
    pub fn partition(&mut self, now: Instant, heal: Heal) {
        self.partition = Some(match heal {
            Heal::Manually => Partition { until: None, frames_left: None },
            Heal::After(d) => Partition { until: now.checked_add(d), frames_left: None },
            Heal::AfterFrames(n) => Partition { until: None, frames_left: Some(n) },
        });
        if heal == Heal::AfterFrames(0) {
            self.partition = None;
        }
    }

    /// Ends a partition now.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    /// True while a partition is in force.
    pub fn is_partitioned(&mut self, now: Instant) -> bool {
        if let Some(Partition { until: Some(until), .. }) = self.partition {
            if now >= until {
                self.partition = None;
            }
        }
        self.partition.is_some()
    }

    /// The counters so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    /// Frames held now.
    pub fn held(&self) -> usize {
        self.hold.frames.len()
    }

    /// When the next held frame is due to go out by time; `None` when nothing is held.
    pub fn next_release(&self) -> Option<Instant> {
        self.hold.frames.iter().map(|h| h.due).min()
    }

    /// Passes one frame through the plan at time `now`; what leaves now goes to `emit`: this
    /// frame (or its copies) unless it is lost or held, and held frames it let go of. A frame
    /// longer than `frame_capacity` cannot be held: where it would be, it is lost as
    /// overflowed.
    pub fn offer(&mut self, now: Instant, frame: &[u8], emit: &mut impl FnMut(&[u8]) -> bool) {
        self.stats.offered += 1;
        if self.is_partitioned(now) {
            self.stats.partitioned += 1;
            if let Some(Partition { frames_left: Some(left), .. }) = &mut self.partition {
                *left -= 1;
                if *left == 0 {
                    self.partition = None;
                }
            }
            return;
        }
        let plan = self.plan;
        if plan.drop > 0.0 && self.rng.chance(plan.drop) {
            self.stats.dropped += 1;
            return;
        }
        if plan.corrupt > 0.0 && self.rng.chance(plan.corrupt) && frame.len() > plan.corrupt_from {
            // The copy leaves `self` for the call, so that `place` may borrow `self`.
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            scratch.extend_from_slice(frame);
            let span = (frame.len() - plan.corrupt_from) as u64;
            let at = plan.corrupt_from + self.rng.below(span) as usize;
            scratch[at] ^= 1 + self.rng.below(255) as u8;
            self.stats.corrupted += 1;
            self.place(now, &scratch, emit);
            self.scratch = scratch;
        } else {
            self.place(now, frame, emit);
        }
        self.sweep(now, false, emit);
    }

    /// Duplicates, delays or reorders one frame that survived loss and corruption.
    fn place(&mut self, now: Instant, frame: &[u8], emit: &mut impl FnMut(&[u8]) -> bool) {
        let plan = self.plan;
        let copies = if plan.duplicate > 0.0 && self.rng.chance(plan.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let delayed = !plan.delay.is_zero() || !plan.jitter.is_zero();
        for copy in 0..copies {
            if delayed {
                let jitter = plan.jitter.as_nanos().min(u128::from(u64::MAX)) as u64;
                let extra = Duration::from_nanos(if jitter == 0 { 0 } else { self.rng.below(jitter) });
                let due = now.checked_add(plan.delay + extra).unwrap_or(now);
                if self.hold.put(frame, due, None) {
                    self.stats.delayed += 1;
                } else {
                    self.stats.overflowed += 1;
                }
                continue;
            }
            // The original (the last copy) may be held behind later frames, one at a time.
            let last = copy + 1 == copies;
            let reorderable = last && plan.reorder > 0.0 && !self.hold.frames.iter().any(|h| h.gap.is_some());
            if reorderable && self.rng.chance(plan.reorder) {
                let due = now.checked_add(plan.reorder_hold).unwrap_or(now);
                if self.hold.put(frame, due, Some(plan.reorder_gap)) {
                    self.stats.reordered += 1;
                    continue;
                }
            }
            self.out(now, frame, emit);
        }
    }

    /// Hands out a frame that is not held; keeps it when `emit` has no room.
    fn out(&mut self, now: Instant, frame: &[u8], emit: &mut impl FnMut(&[u8]) -> bool) {
        if !self.blocked && emit(frame) {
            self.stats.passed += 1;
            self.hold.passed(1);
            return;
        }
        self.blocked = true;
        // Due at once: it goes out first at the next release.
        if !self.hold.put(frame, now, None) {
            self.stats.overflowed += 1;
        }
    }

    /// Lets go of every held frame that is due at `now`, by time or because enough later
    /// frames passed it, in the order they were held (so frames `emit` had no room for go
    /// first). Returns how many went out.
    pub fn release(&mut self, now: Instant, emit: &mut impl FnMut(&[u8]) -> bool) -> usize {
        self.blocked = false;
        self.sweep(now, false, emit)
    }

    /// As [`release`](Self::release), and lets go of the reordered frame too, whatever its
    /// count: for a receiver that found its link otherwise idle, so that reordering on a
    /// quiet link delays a frame without stranding it. Returns how many went out.
    pub fn release_idle(&mut self, now: Instant, emit: &mut impl FnMut(&[u8]) -> bool) -> usize {
        self.blocked = false;
        self.sweep(now, true, emit)
    }

    /// Loses every frame held (a pulled cable); returns how many.
    pub fn discard_held(&mut self) -> usize {
        let n = self.hold.frames.len();
        let Hold { free, frames, .. } = &mut self.hold;
        free.extend(frames.drain(..).map(|h| h.slot));
        self.blocked = false;
        n
    }

    /// Hands out the held frames that are due, until none is or `emit` has no room.
    fn sweep(&mut self, now: Instant, idle: bool, emit: &mut impl FnMut(&[u8]) -> bool) -> usize {
        let mut total = 0;
        while !self.blocked {
            let went = self.hold.release(&mut self.blocked, emit, |h| {
                h.due <= now || h.gap.is_some_and(|gap| gap == 0 || idle)
            });
            if went == 0 {
                break;
            }
            total += went;
            self.hold.passed(went);
        }
        self.stats.passed += total as u64;
        total
    }
}

impl Pipe {
    /// Counts `n` frames as passed straight through, when the pipe would pass them untouched
    /// (perfect plan, no partition, nothing held): the caller may then send them itself,
    /// without a copy. False, counting nothing, otherwise.
    pub(super) fn pass_through(&mut self, now: Instant, n: usize) -> bool {
        if !self.plan.is_perfect() || self.is_partitioned(now) || !self.hold.frames.is_empty() {
            return false;
        }
        self.stats.offered += n as u64;
        self.stats.passed += n as u64;
        true
    }
}
