//! Fault injection over any [`Transport`]: loss, duplication, reordering, delay, corruption
//! and partitions that heal, seeded and reproducible (smoltcp's `FaultInjector` idea).
//!
//! Three layers, each usable alone:
//!
//! - [`Plan`]: what to do to the frames of one direction (probabilities, a delay, a seed);
//! - [`Pipe`]: one direction of a faulty link, sans-IO: a frame goes in with the time, the
//!   frames that leave now come out through a callback, held frames leave when
//!   [`Pipe::release`] is called at or after [`Pipe::next_release`]. The in-memory hub
//!   ([`memory`](crate::memory)) impairs its ports with one;
//! - [`FaultInjector`]: a [`Transport`] wrapping another, with a pipe for what it sends and
//!   one for what it receives, each reachable from other threads through a [`Faults`] handle
//!   (change the plan, start a partition, heal it, read the counters).
//!
//! Time comes from a [`Clock`]: [`SystemClock`] for real links, [`ManualClock`] for tests that
//! step time by hand. Decisions come from a [`SplitMix64`](crate::rng::SplitMix64) seeded by [`Plan::seed`]: the same
//! plan and the same sequence of frames give the same faults.
//!
//! Nothing is allocated per frame: frames held back (reordered, delayed, or waiting for room
//! in a full receive batch) live in an arena of [`Plan::hold_limit`] slots allocated the first
//! time a frame is held; a frame that finds the arena full is dropped and counted in
//! [`FaultStats::overflowed`], as a full router queue would.
//!
//! ```
//! use std::time::Duration;
//! use aoe_transport::fault::{FaultInjector, Heal, Plan};
//! use aoe_transport::{memory, FrameBatch, MacAddr, Transport};
//!
//! let (a_mac, b_mac) = (MacAddr([2, 0, 0, 0, 0, 0xa]), MacAddr([2, 0, 0, 0, 0, 0xb]));
//! let (a, mut b) = memory::pair(1500, a_mac, b_mac);
//! // A loses a fifth of what it sends; what it receives is untouched.
//! let mut a = FaultInjector::new(a, Plan { drop: 0.2, seed: 7, ..Plan::NONE }, Plan::NONE);
//! let sent = a.send_faults();
//!
//! let mut out = FrameBatch::new(100, 14 + 1500);
//! for _ in 0..100 {
//!     out.push_with(|slot| {
//!         slot[..6].copy_from_slice(&b_mac.0);
//!         slot[6..12].copy_from_slice(&a_mac.0);
//!         slot[12..14].copy_from_slice(&0x88A2u16.to_be_bytes());
//!         60
//!     });
//! }
//! a.send_batch(&out)?;
//! let mut inbox = FrameBatch::new(100, 14 + 1500);
//! let got = b.recv_batch(&mut inbox, Some(Duration::ZERO))?;
//! assert_eq!(got as u64 + sent.stats().dropped, 100);
//!
//! // Cut the link until told otherwise, then heal it.
//! sent.partition(Heal::Manually);
//! a.send_batch(&out)?;
//! assert_eq!(b.recv_batch(&mut inbox, Some(Duration::ZERO))?, 0);
//! sent.heal();
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aoe_proto::ethernet::{MacAddr, HEADER_LEN};

use crate::{AnswerFilter, FrameBatch, Transport};

mod pipe;
#[cfg(test)]
mod tests;

pub use pipe::Pipe;

/// Slots of the hold arena unless a plan says otherwise.
pub const DEFAULT_HOLD_LIMIT: usize = 256;

/// What to do to the frames of one direction.
///
/// Each frame is judged in this order: a partition ([`Pipe::partition`]) loses it; else it is
/// lost with probability `drop`; else one byte of it is flipped with probability `corrupt`;
/// else a second copy goes out with probability `duplicate` (straight after it, judged for
/// delay like it); then it waits `delay` plus a uniform part of `jitter` (a jitter larger than
/// the gap between frames reorders them), or, when there is no delay, it is held back with
/// probability `reorder` until `reorder_gap` later frames have gone out or `reorder_hold` has
/// passed. Probabilities are clamped to `0.0..=1.0` (NaN counts as 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Probability that a frame is lost.
    pub drop: f64,
    /// Probability that a frame (not lost) goes out twice.
    pub duplicate: f64,
    /// Probability that a frame (not lost, not delayed) is held back behind later ones.
    pub reorder: f64,
    /// Later frames that go out before a reordered one (at least 1).
    pub reorder_gap: u32,
    /// Longest a reordered frame waits for later frames (a quiet link lets it go then).
    pub reorder_hold: Duration,
    /// Time every frame is held before it goes out.
    pub delay: Duration,
    /// Up to this much more delay, uniform, per frame.
    pub jitter: Duration,
    /// Probability that one byte of a frame is flipped (XORed with a non-zero value).
    pub corrupt: f64,
    /// First byte corruption may touch: 14, the default, keeps the Ethernet header intact so
    /// that the frame still reaches its receiver as an AoE frame. Frames no longer than this
    /// are never corrupted.
    pub corrupt_from: usize,
    /// Slots for frames held back; see the [module docs](self).
    pub hold_limit: usize,
    /// Seed of the decisions.
    pub seed: u64,
}

impl Plan {
    /// A perfect direction: every frame goes out at once, untouched.
    pub const NONE: Plan = Plan {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        reorder_gap: 1,
        reorder_hold: Duration::from_millis(1),
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        corrupt: 0.0,
        corrupt_from: HEADER_LEN,
        hold_limit: DEFAULT_HOLD_LIMIT,
        seed: 0,
    };

    /// True when the plan touches no frame (a partition may still).
    pub fn is_perfect(&self) -> bool {
        let p = self.clamped();
        p.drop == 0.0
            && p.duplicate == 0.0
            && p.reorder == 0.0
            && p.corrupt == 0.0
            && p.delay.is_zero()
            && p.jitter.is_zero()
    }

    pub(crate) fn clamped(mut self) -> Plan {
        for p in [&mut self.drop, &mut self.duplicate, &mut self.reorder, &mut self.corrupt] {
            // NaN would survive `clamp`; treat it as "never".
            *p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        }
        self.reorder_gap = self.reorder_gap.max(1);
        self
    }
}

impl Default for Plan {
    fn default() -> Self {
        Plan::NONE
    }
}

/// When a partition ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heal {
    /// When [`Pipe::heal`] (or [`Faults::heal`]) is called.
    Manually,
    /// After this long.
    After(Duration),
    /// Once this many frames have been lost to it.
    AfterFrames(u64),
}

/// What a [`Pipe`] did, since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultStats {
    /// Frames that came in.
    pub offered: u64,
    /// Frames that went out, duplicates included.
    pub passed: u64,
    /// Frames lost to [`Plan::drop`].
    pub dropped: u64,
    /// Frames lost to a partition.
    pub partitioned: u64,
    /// Extra copies made by [`Plan::duplicate`].
    pub duplicated: u64,
    /// Frames held back by [`Plan::reorder`].
    pub reordered: u64,
    /// Frames held for [`Plan::delay`] or [`Plan::jitter`].
    pub delayed: u64,
    /// Frames with a byte flipped by [`Plan::corrupt`].
    pub corrupted: u64,
    /// Frames lost because every hold slot was taken.
    pub overflowed: u64,
}

/// Where the time comes from.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Instant;
}

/// [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock standing at the real time of the call.
    pub fn new() -> Self {
        ManualClock { now: Arc::new(Mutex::new(Instant::now())) }
    }

    /// Moves the clock `by` forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One direction of a [`FaultInjector`] (or of anything built on a [`Pipe`]), shared: every
/// clone sees and changes the same plan, partition and counters, from any thread.
#[derive(Clone)]
pub struct Faults {
    pipe: Arc<Mutex<Pipe>>,
    clock: Arc<dyn Clock>,
}

impl Faults {
    /// A direction for frames of up to `frame_capacity` bytes doing what `plan` says, on
    /// `clock`'s time.
    pub fn new(plan: Plan, frame_capacity: usize, clock: Arc<dyn Clock>) -> Self {
        Faults { pipe: Arc::new(Mutex::new(Pipe::new(plan, frame_capacity))), clock }
    }

    /// The plan in force.
    pub fn plan(&self) -> Plan {
        self.lock().plan()
    }

    /// Replaces the plan ([`Pipe::set_plan`]): the decisions start again from its seed.
    pub fn set_plan(&self, plan: Plan) {
        self.lock().set_plan(plan);
    }

    /// Loses every frame from now until the partition heals as `heal` says.
    pub fn partition(&self, heal: Heal) {
        let now = self.clock.now();
        self.lock().partition(now, heal);
    }

    /// Ends a partition now.
    pub fn heal(&self) {
        self.lock().heal();
    }

    /// True while a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        let now = self.clock.now();
        self.lock().is_partitioned(now)
    }

    /// The counters so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats()
    }

    /// Frames held back now.
    pub fn held(&self) -> usize {
        self.lock().held()
    }

    /// When the next held frame is due; `None` when nothing is held.
    pub fn next_release(&self) -> Option<Instant> {
        self.lock().next_release()
    }

    /// The time on this direction's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The pipe itself, locked, to drive it frame by frame.
    pub fn lock(&self) -> MutexGuard<'_, Pipe> {
        // A panicking thread must not take the link down with it.
        self.pipe.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl core::fmt::Debug for Faults {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let pipe = self.lock();
        f.debug_struct("Faults").field("plan", &pipe.plan()).field("stats", &pipe.stats()).finish()
    }
}

/// Staging batches hold this many frames before they go to the inner transport.
const STAGING: usize = 64;

/// A [`Transport`] that sends and receives through another with faults injected: what it
/// sends goes through one [`Plan`], what it receives through another.
///
/// Frames held back on the way out (delay, reordering) are sent by the next call into the
/// injector that finds them due: a send, a receive (which wakes when they are due, however
/// long its timeout) or [`release_due`](Self::release_due); an event loop that waits on
/// something else asks [`next_release`](Self::next_release) when to call. Frames held back on
/// the way in are handed out by a receive at or after their time; a receive that finds the
/// inner transport idle lets a reordered frame go at once. The injector's
/// [`readiness_fd`](Transport::readiness_fd) is the inner transport's, which does not poll
/// readable for frames the injector holds: wake at `next_release` too.
///
/// Every batch counts as sent in full, lost frames included (they were lost on the wire).
/// With a perfect plan, no partition and nothing held, a batch goes to the inner transport
/// as it is, tails and all, without a copy.
///
/// [`sender`](Transport::sender) gives a handle on the inner transport's sender sharing this
/// injector's [`Faults`]: the same plans, holds and counters.
pub struct FaultInjector<T> {
    inner: T,
    send: Faults,
    recv: Faults,
    /// Frames on their way to the inner transport.
    tx: FrameBatch,
    /// Frames as the inner transport received them.
    rx: FrameBatch,
    /// A frame joined with its tail, to go through the send pipe.
    joined: Vec<u8>,
}

impl<T: Transport> FaultInjector<T> {
    /// Wraps `inner`: what it sends follows `send`, what it receives follows `recv`, on the
    /// system clock.
    pub fn new(inner: T, send: Plan, recv: Plan) -> Self {
        Self::with_clock(inner, send, recv, Arc::new(SystemClock))
    }

    /// As [`new`](Self::new), on `clock`'s time (a [`ManualClock`] in tests). With a clock
    /// that does not follow the real one, give receives a timeout: waits are real time.
    pub fn with_clock(inner: T, send: Plan, recv: Plan, clock: Arc<dyn Clock>) -> Self {
        let frame = HEADER_LEN + inner.mtu();
        FaultInjector {
            send: Faults::new(send, frame, Arc::clone(&clock)),
            recv: Faults::new(recv, frame, clock),
            tx: FrameBatch::new(STAGING, frame),
            rx: FrameBatch::new(0, 0),
            joined: Vec::with_capacity(frame),
            inner,
        }
    }

    /// The faults of what this transport sends.
    pub fn send_faults(&self) -> Faults {
        self.send.clone()
    }

    /// The faults of what this transport receives.
    pub fn recv_faults(&self) -> Faults {
        self.recv.clone()
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutable.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The wrapped transport; frames held are lost.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Sends the frames held on the way out whose time has come; returns how many.
    pub fn release_due(&mut self) -> io::Result<usize> {
        let now = self.send.clock.now();
        let mut pipe = self.send.lock();
        let mut total = 0;
        loop {
            self.tx.clear();
            let tx = &mut self.tx;
            let n = pipe.release(now, &mut |f| tx.push(f));
            if n == 0 {
                return Ok(total);
            }
            total += n;
            self.inner.send_batch(&self.tx)?;
        }
    }

    /// When the next held frame, either way, is due; `None` when nothing is held.
    pub fn next_release(&self) -> Option<Instant> {
        match (self.send.next_release(), self.recv.next_release()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Puts each frame (`frame` or, with a tail, `frame` and the tail joined) through the send
    /// pipe and sends what comes out, `STAGING` frames at a time.
    fn send_through(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        let now = self.send.clock.now();
        let mut pipe = self.send.lock();
        self.tx.clear();
        {
            let tx = &mut self.tx;
            pipe.release(now, &mut |f| tx.push(f));
        }
        for (i, frame) in batch.iter().enumerate() {
            if self.tx.is_full() {
                self.inner.send_batch(&self.tx)?;
                self.tx.clear();
                let tx = &mut self.tx;
                pipe.release(now, &mut |f| tx.push(f));
            }
            let frame = match tails.get(i).copied().filter(|t| !t.is_empty()) {
                Some(tail) => {
                    self.joined.clear();
                    self.joined.extend_from_slice(frame);
                    self.joined.extend_from_slice(tail);
                    &self.joined[..]
                }
                None => frame,
            };
            let tx = &mut self.tx;
            pipe.offer(now, frame, &mut |f| tx.push(f));
        }
        drop(pipe);
        if !self.tx.is_empty() {
            self.inner.send_batch(&self.tx)?;
        }
        // Frames that found the staging batch full.
        self.release_due()?;
        Ok(batch.len())
    }
}

impl<T: Transport> Transport for FaultInjector<T> {
    fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        if batch.capacity() == 0 {
            return Ok(0);
        }
        if self.rx.capacity() != batch.capacity() || self.rx.frame_capacity() != batch.frame_capacity() {
            self.rx = FrameBatch::new(batch.capacity(), batch.frame_capacity());
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let cap = batch.frame_capacity();
        // A frame the batch cannot hold is skipped, as transports do; only a full batch is
        // "no room".
        let push = |batch: &mut FrameBatch, f: &[u8]| f.len() > cap || batch.push(f);
        loop {
            self.release_due()?;
            let now = self.recv.clock.now();
            self.recv.lock().release(now, &mut |f| push(batch, f));
            let wait = if batch.is_empty() {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                match self.next_release().map(|at| at.saturating_duration_since(now)) {
                    Some(until) => Some(left.map_or(until, |left| left.min(until))),
                    None => left,
                }
            } else {
                Some(Duration::ZERO)
            };
            let n = self.inner.recv_batch(&mut self.rx, wait)?;
            let now = self.recv.clock.now();
            {
                let mut pipe = self.recv.lock();
                for frame in self.rx.iter() {
                    pipe.offer(now, frame, &mut |f| push(batch, f));
                }
                if n == 0 {
                    pipe.release_idle(now, &mut |f| push(batch, f));
                }
            }
            self.rx.clear();
            if !batch.is_empty() {
                return Ok(batch.len());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
        }
    }

    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize> {
        self.send_with_tails(batch, &[])
    }

    fn send_with_tails(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        let now = self.send.clock.now();
        if self.send.lock().pass_through(now, batch.len()) {
            return self.inner.send_with_tails(batch, tails);
        }
        self.send_through(batch, tails)
    }

    fn mac(&self) -> MacAddr {
        self.inner.mac()
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn refresh_mtu(&mut self) -> io::Result<usize> {
        self.inner.refresh_mtu()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.readiness_fd()
    }

    /// The inner transport's filter: faults are injected into what passes it.
    fn filter_answers(&mut self, filter: &AnswerFilter) -> io::Result<bool> {
        self.inner.filter_answers(filter)
    }

    fn sender(&self) -> io::Result<Box<dyn Transport>> {
        let inner = self.inner.sender()?;
        let frame = HEADER_LEN + inner.mtu();
        Ok(Box::new(FaultInjector {
            inner,
            send: self.send.clone(),
            recv: self.recv.clone(),
            tx: FrameBatch::new(STAGING, frame),
            rx: FrameBatch::new(0, 0),
            joined: Vec::with_capacity(frame),
        }))
    }
}

impl<T: Transport + core::fmt::Debug> core::fmt::Debug for FaultInjector<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("inner", &self.inner)
            .field("send", &self.send)
            .field("recv", &self.recv)
            .finish()
    }
}
