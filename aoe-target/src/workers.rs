//! Threads that do sector I/O apart from the loop that receives requests, so that a disk busy
//! with one request does not hold up the requests behind it.
//!
//! The server hands each read, write or flush its export leaves to it ([`Outcome::NeedsIo`]),
//! detached from the request ([`SectorIo::detach`]), to [`IoWorkers::submit`], with its
//! place in the export's [`IoOrder`]; a worker waits for its turn, does the I/O, finishes
//! the answer and sends it on a handle of its own
//! ([`Transport::sender`]). Requests that start at the same sector go to the same worker, in
//! the order they came, so that one sent again queues behind the copy still in progress
//! rather than holding up another worker.
//!
//! [`Outcome::NeedsIo`]: crate::export::Outcome::NeedsIo
//! [`IoOrder`]: crate::ordering::IoOrder

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use aoe_proto::{AtaFrame, EmitError};
use aoe_transport::{FrameBatch, Transport};

use crate::backend::Backend;
use crate::export::{ExportStats, SectorIo, SectorOp, ServerStats};
use crate::ordering::Ticket;

/// Answers a worker sends per system call, at most.
const SEND_BATCH: usize = 16;
/// Jobs waiting for one worker, at most; past that, the server waits.
const QUEUE_PER_WORKER: usize = 64;
/// Backend I/O quicker than this, on average, is done by the serving thread itself when a
/// request comes alone and no other is in progress ([`IoWorkers::better_done_here`]): that
/// holds later requests up for about this long at most, and spares the wake-up of a worker
/// (tens of microseconds on a virtual machine), which a request at queue depth 1 would pay
/// every time. Solid-state disks answer within it; spinning disks do not.
pub const QUICK_IO: Duration = Duration::from_micros(200);

/// A request waiting for sector I/O: the I/O, its place in its export's order, the backend
/// it is for, and the buffer holding the answer's headers (and a write's sectors).
pub struct Job<B> {
    /// What to do, detached from its request ([`SectorIo::detach`]).
    pub io: SectorIo<'static>,
    /// When it may run.
    pub ticket: Ticket,
    /// On what.
    pub backend: Arc<B>,
    /// The answer as [`Export::handle`](crate::export::Export::handle) wrote it and
    /// [`SectorIo::detach`] completed it, in a buffer from [`IoWorkers::buffer`].
    pub answer: Box<[u8]>,
    /// The export's counters, which count it in flight already
    /// ([`ExportStats::io_queued`]).
    pub stats: Arc<ExportStats>,
}

/// A fixed set of I/O threads, each with its own sending handle on the link, and the answer
/// buffers they pass back and forth with the server.
pub struct IoWorkers<B> {
    queues: Vec<SyncSender<Job<B>>>,
    threads: Vec<JoinHandle<()>>,
    /// Buffers workers gave back.
    returned: Receiver<Box<[u8]>>,
    /// Buffers ready for use.
    spare: Vec<Box<[u8]>>,
    /// Buffers that exist, in use or not.
    buffers: usize,
    max_buffers: usize,
    frame_capacity: usize,
    /// Where the next flush goes.
    next_flush: usize,
    /// Jobs submitted whose I/O is not done yet.
    in_flight: Arc<AtomicUsize>,
    /// How long backend I/O has taken of late.
    io_time: Arc<IoTime>,
}

/// A moving average of how long backend I/O takes, kept by every thread that does some.
#[derive(Debug, Default)]
pub struct IoTime {
    /// Nanoseconds; 0 until the first I/O.
    average_ns: AtomicU64,
}

impl IoTime {
    /// Adds one I/O that took `took` (weight 1/8).
    pub fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        // Racing updates may lose a sample; the average only steers a choice.
        let old = self.average_ns.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.average_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// The average so far; `None` before the first I/O.
    pub fn average(&self) -> Option<Duration> {
        match self.average_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }
}

impl<B> std::fmt::Debug for IoWorkers<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoWorkers")
            .field("threads", &self.threads.len())
            .field("buffers", &self.buffers)
            .finish()
    }
}

impl<B: Backend + 'static> IoWorkers<B> {
    /// Starts `count` workers (at least one), each sending on a handle `link` makes
    /// ([`Transport::sender`]) and counting what it sends in `sent`; answers are up to
    /// `frame_capacity` bytes. Fails when a handle or a thread cannot be made.
    pub fn start(
        count: usize,
        link: &dyn Transport,
        frame_capacity: usize,
        sent: Arc<ServerStats>,
    ) -> io::Result<Self> {
        let count = count.max(1);
        let (give_back, returned) = mpsc::channel();
        let mut workers = IoWorkers {
            queues: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
            returned,
            spare: Vec::new(),
            buffers: 0,
            max_buffers: count * QUEUE_PER_WORKER + SEND_BATCH,
            frame_capacity,
            next_flush: 0,
            in_flight: Arc::new(AtomicUsize::new(0)),
            io_time: Arc::new(IoTime::default()),
        };
        for i in 0..count {
            let sender = link.sender()?;
            let (queue, jobs) = mpsc::sync_channel(QUEUE_PER_WORKER);
            let give_back: Sender<Box<[u8]>> = give_back.clone();
            let in_flight = Arc::clone(&workers.in_flight);
            let io_time = Arc::clone(&workers.io_time);
            let sent = Arc::clone(&sent);
            let name = format!("aoe-io-{}-{i}", link.name());
            let thread = thread::Builder::new()
                .name(name)
                .spawn(move || work(jobs, sender, give_back, &in_flight, &io_time, &sent, frame_capacity))?;
            // Pushed together, so that dropping the workers (on an error too) stops every
            // thread started so far.
            workers.queues.push(queue);
            workers.threads.push(thread);
        }
        Ok(workers)
    }
}

impl<B> IoWorkers<B> {
    /// A buffer for one answer (`frame_capacity` bytes): a spare one, else a new one while
    /// fewer than the limit exist, else the next one a worker gives back.
    pub fn buffer(&mut self) -> Box<[u8]> {
        if let Some(buf) = self.spare.pop() {
            return buf;
        }
        self.spare.extend(self.returned.try_iter());
        if let Some(buf) = self.spare.pop() {
            return buf;
        }
        if self.buffers < self.max_buffers {
            self.buffers += 1;
            return vec![0; self.frame_capacity].into_boxed_slice();
        }
        // Every buffer is with a worker, so one comes back (unless every worker ended).
        match self.returned.recv() {
            Ok(buf) => buf,
            Err(_) => vec![0; self.frame_capacity].into_boxed_slice(),
        }
    }

    /// True when a request that came alone is answered sooner by the serving thread than
    /// by a worker: no job is waiting or in progress, and backend I/O has been [`QUICK_IO`]
    /// of late. The serving thread then does it with [`complete`](Self::complete).
    pub fn better_done_here(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.io_time.average().is_some_and(|t| t < QUICK_IO)
    }

    /// Does `job` in this thread, as a worker would, in its turn; returns its answer's
    /// length ([`SectorIo::complete`]; `None` when it failed and goes unanswered) and buffer.
    pub fn complete(&self, mut job: Job<B>) -> (Option<usize>, Box<[u8]>)
    where
        B: Backend,
    {
        job.ticket.wait_turn();
        let len =
            timed(&self.io_time, || job.stats.run_io(&job.io, job.backend.as_ref(), &mut job.answer, true)).0;
        (len, job.answer)
    }

    /// Takes back a buffer [`buffer`](Self::buffer) gave and [`submit`](Self::submit) did not.
    pub fn give_back(&mut self, buffer: Box<[u8]>) {
        self.spare.push(buffer);
    }

    /// Has a worker do `job` in its turn and send its answer. Waits while that worker has a
    /// full queue.
    pub fn submit(&mut self, job: Job<B>) {
        let worker = match job.io.op() {
            SectorOp::Flush => {
                self.next_flush = (self.next_flush + 1) % self.queues.len();
                self.next_flush
            }
            SectorOp::Read | SectorOp::Write => worker_for(job.io.offset(), self.queues.len()),
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(job)) = self.queues[worker].send(job) {
            // Only a worker that ended takes no more jobs, and workers catch panics: this is
            // unreachable, but the request then goes unanswered rather than stop the target.
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            job.stats.io_unqueued();
            self.give_back(job.answer);
        }
    }
}

impl<B> Drop for IoWorkers<B> {
    /// Lets every worker finish the jobs it has, then joins it.
    fn drop(&mut self) {
        self.queues.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A worker: does each job's I/O in its turn and sends its answer, until the server drops
/// its queue. Answers to quick I/O that find more jobs queued wait for those, to go out
/// together in one call; after slow I/O they go at once, so that no answer waits on another
/// request's disk time.
fn work<B: Backend>(
    jobs: Receiver<Job<B>>,
    mut link: Box<dyn Transport>,
    give_back: Sender<Box<[u8]>>,
    in_flight: &AtomicUsize,
    io_time: &IoTime,
    sent: &ServerStats,
    frame_capacity: usize,
) {
    let mut answers = FrameBatch::new(SEND_BATCH, frame_capacity);
    while let Ok(first) = jobs.recv() {
        let mut next = Some(first);
        let mut done = 0;
        while let Some(Job { io, ticket, backend, mut answer, stats }) = next.take() {
            ticket.wait_turn();
            let mut took = Duration::ZERO;
            match io.op() {
                // Read straight into the frame that is sent, after a copy of the headers.
                SectorOp::Read => {
                    answers.push_with(|slot| {
                        let len;
                        (len, took) = timed(io_time, || {
                            let headers = AtaFrame::new_checked(&mut answer)?;
                            AtaFrame::new_checked(&mut *slot)?.copy_headers_from(&headers);
                            stats.run_io(&io, backend.as_ref(), slot, true)
                        });
                        len.unwrap_or(0)
                    });
                }
                SectorOp::Write | SectorOp::Flush => {
                    let len;
                    (len, took) = timed(io_time, || stats.run_io(&io, backend.as_ref(), &mut answer, true));
                    if let Some(len) = len {
                        answers.push(&answer[..len]);
                    }
                }
            }
            // Done: overlapping I/O that came later may run.
            drop(ticket);
            let _ = give_back.send(answer);
            done += 1;
            if took < QUICK_IO && !answers.is_full() {
                next = jobs.try_recv().ok();
            }
        }
        // Their I/O is done: the serving thread may do the next itself.
        in_flight.fetch_sub(done, Ordering::AcqRel);
        match link.send_batch(&answers) {
            Ok(n) => sent.count_sent(n, answers.len().saturating_sub(n)),
            Err(e) => {
                sent.count_sent(0, answers.len());
                tracing::debug!(link = link.name(), lost = answers.len(), "answers not sent: {e}");
            }
        }
        answers.clear();
    }
}

/// Runs `f`, adding the time it took to `io_time`; returns its answer length and the time.
/// A backend that panics fails the I/O (no answer; the initiator asks again) rather than the
/// worker, which goes on with the next job; so does an answer buffer too short for it.
fn timed(io_time: &IoTime, f: impl FnOnce() -> Result<usize, EmitError>) -> (Option<usize>, Duration) {
    let start = Instant::now();
    let len = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(len)) => Some(len),
        Ok(Err(e)) => {
            tracing::debug!("answer not sent: {e}");
            None
        }
        Err(_) => {
            tracing::error!("backend I/O panicked; the request goes unanswered");
            None
        }
    };
    let took = start.elapsed();
    io_time.record(took);
    (len, took)
}

/// The worker for I/O at byte `offset`: the same for the same offset, spread evenly over
/// sequential requests.
fn worker_for(offset: u64, workers: usize) -> usize {
    let sector = offset / aoe_proto::SECTOR_SIZE as u64;
    let mixed = sector.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (mixed % workers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_time_is_a_moving_average() {
        let t = IoTime::default();
        assert_eq!(t.average(), None);
        t.record(Duration::from_micros(800));
        assert_eq!(t.average(), Some(Duration::from_micros(800)));
        for _ in 0..100 {
            t.record(Duration::from_micros(40));
        }
        let settled = t.average().unwrap();
        assert!(settled > Duration::from_micros(39) && settled < Duration::from_micros(42), "{settled:?}");
        t.record(Duration::from_millis(10));
        assert!(t.average().unwrap() > QUICK_IO, "one slow I/O is enough to stop doing them here");
    }

    #[test]
    fn the_same_offset_goes_to_the_same_worker_and_sequential_ones_spread() {
        for workers in 1..=16 {
            for offset in [0u64, 512, 8704, 1 << 40] {
                assert_eq!(worker_for(offset, workers), worker_for(offset, workers));
                assert!(worker_for(offset, workers) < workers);
            }
        }
        let mut used = [0usize; 8];
        for i in 0..800u64 {
            used[worker_for(i * 17 * 512, 8)] += 1;
        }
        assert!(used.iter().all(|&n| (50..=150).contains(&n)), "sequential requests spread: {used:?}");
    }
}
