//! The order in which an export's deferred I/O may run ([`IoOrder`]).
//!
//! I/O threads do an export's reads, writes and flushes in any order, as a disk with a queue
//! does, except that two that overlap, one of them a write, run in the order their requests
//! came, whichever interface and thread they came through. That matters when an initiator
//! sends a request again, perhaps through another interface (the Linux driver moves the
//! requests of a target it finds slow to another of its addresses): the copy answered first
//! lets it write those sectors anew, and the other copy, were it still waiting, must not
//! land on top of the newer data.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::export::{SectorIo, SectorOp};

/// The I/O of one export that has come and is not done, in the order it came.
#[derive(Debug, Default)]
pub struct IoOrder {
    pending: Mutex<Pending>,
    /// Signalled whenever an I/O is done.
    done: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    next: u64,
    entries: VecDeque<Entry>,
}

/// The bytes `[start, end)` of one I/O, the `seq`-th to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    start: u64,
    end: u64,
    write: bool,
}

impl Entry {
    /// True when the two must run in the order they came.
    fn conflicts(&self, other: &Entry) -> bool {
        (self.write || other.write) && self.start < other.end && other.start < self.end
    }
}

/// An I/O's place in its export's [`IoOrder`]; leaves it when dropped (the I/O is done).
#[derive(Debug)]
pub struct Ticket {
    order: Arc<IoOrder>,
    entry: Entry,
}

impl IoOrder {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The list stays consistent across a panic elsewhere.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `io` last in the order. Call it in the order requests come: under the export's
    /// lock, before the lock is let go.
    pub fn enter(self: &Arc<Self>, io: &SectorIo<'_>) -> Ticket {
        let mut pending = self.lock();
        let seq = pending.next;
        pending.next += 1;
        // A flush covers the writes already answered, which are done: it waits for nothing
        // and holds nothing up.
        let (start, end) = match io.op() {
            SectorOp::Flush => (0, 0),
            SectorOp::Read | SectorOp::Write => (io.offset(), io.offset().saturating_add(io.len() as u64)),
        };
        let entry = Entry { seq, start, end, write: io.op() == SectorOp::Write };
        pending.entries.push_back(entry);
        Ticket { order: Arc::clone(self), entry }
    }

    /// How many I/Os have come and are not done.
    pub fn pending(&self) -> usize {
        self.lock().entries.len()
    }
}

impl Ticket {
    /// True when no I/O that came before this one and must run before it is still pending.
    pub fn may_run(&self) -> bool {
        may_run(&self.order.lock(), &self.entry)
    }

    /// Waits until this I/O may run ([`may_run`](Self::may_run)).
    pub fn wait_turn(&self) {
        let mut pending = self.order.lock();
        while !may_run(&pending, &self.entry) {
            pending = self.order.done.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn may_run(pending: &Pending, me: &Entry) -> bool {
    pending.entries.iter().take_while(|e| e.seq < me.seq).all(|e| !e.conflicts(me))
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut pending = self.order.lock();
        if let Some(at) = pending.entries.iter().position(|e| e.seq == self.entry.seq) {
            pending.entries.remove(at);
        }
        drop(pending);
        self.order.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(op: SectorOp, sector: u64, sectors: usize) -> SectorIo<'static> {
        match op {
            SectorOp::Read => SectorIo::read(sector * 512, sectors * 512),
            SectorOp::Write => SectorIo::detached_write(sector * 512, sectors * 512),
            SectorOp::Flush => SectorIo::flush(),
        }
    }

    #[test]
    fn overlapping_io_with_a_write_waits_for_what_came_first() {
        let order = Arc::new(IoOrder::default());
        let w1 = order.enter(&io(SectorOp::Write, 8, 4));
        let r_other = order.enter(&io(SectorOp::Read, 12, 4));
        let r_same = order.enter(&io(SectorOp::Read, 10, 1));
        let flush = order.enter(&io(SectorOp::Flush, 0, 0));
        let w2 = order.enter(&io(SectorOp::Write, 11, 2));
        let r_late = order.enter(&io(SectorOp::Read, 0, 8));
        assert!(w1.may_run());
        assert!(r_other.may_run(), "sectors 12-15 do not overlap 8-11");
        assert!(!r_same.may_run(), "a read of sector 10 waits for the write before it");
        assert!(flush.may_run(), "a flush waits for nothing");
        assert!(!w2.may_run(), "a write waits for the overlapping write and read before it");
        assert!(r_late.may_run(), "reads of sectors 0-7 overlap nothing");
        assert_eq!(order.pending(), 6);
        drop(w1);
        assert!(r_same.may_run());
        assert!(!w2.may_run(), "still behind the reads of sectors 10 and 12");
        drop(r_same);
        drop(r_other);
        assert!(w2.may_run());
        drop((flush, w2, r_late));
        assert_eq!(order.pending(), 0);
    }

    #[test]
    fn a_waiting_io_runs_once_the_one_before_is_done() {
        let order = Arc::new(IoOrder::default());
        let first = order.enter(&io(SectorOp::Write, 0, 17));
        let second = order.enter(&io(SectorOp::Write, 0, 17));
        let waiter = std::thread::spawn(move || {
            second.wait_turn();
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!waiter.is_finished());
        drop(first);
        waiter.join().unwrap();
    }
}
