//! Which byte ranges writes are in progress on, so that a read-modify-write of partial
//! sectors never undoes another write: [`WriteSpans`].
//!
//! A write of whole sectors may run beside any other write (whichever lands last wins, as on
//! a disk). A write of partial sectors reads its edge sectors, patches them and writes them
//! back: a whole-sector write landing on those sectors between the read and the write-back
//! would be undone. So a patch waits until no write overlaps its span and holds the span
//! alone until its write-back is done; a whole-sector write waits while a patch holds a span
//! it overlaps.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Writes in progress, by byte range; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct WriteSpans {
    spans: Mutex<Vec<Span>>,
    /// Signalled whenever a span ends.
    ended: Condvar,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    id: u64,
    start: u64,
    end: u64,
    /// A read-modify-write, which holds its span alone.
    patch: bool,
}

/// A span held; [`WriteSpans::end`] lets it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanId(u64);

impl WriteSpans {
    fn lock(&self) -> MutexGuard<'_, Vec<Span>> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self, start: u64, end: u64, patch: bool) -> SpanId {
        let overlaps = |s: &Span| s.start < end && start < s.end && (patch || s.patch);
        let mut spans = self.lock();
        while spans.iter().any(overlaps) {
            spans = self.ended.wait(spans).unwrap_or_else(PoisonError::into_inner);
        }
        let id = spans.iter().map(|s| s.id + 1).max().unwrap_or(0);
        spans.push(Span { id, start, end, patch });
        SpanId(id)
    }

    /// A whole-sector write of `[start, end)`: waits while a patch overlaps it.
    pub(crate) fn begin_write(&self, start: u64, end: u64) -> SpanId {
        self.begin(start, end, false)
    }

    /// A read-modify-write of `[start, end)`: waits until no write overlaps it, then holds it
    /// alone.
    pub(crate) fn begin_patch(&self, start: u64, end: u64) -> SpanId {
        self.begin(start, end, true)
    }

    /// The write is done (or failed): its span is free.
    pub(crate) fn end(&self, id: SpanId) {
        self.lock().retain(|s| s.id != id.0);
        self.ended.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn writes_share_a_patch_waits_for_them_and_holds_its_span_alone() {
        let spans = Arc::new(WriteSpans::default());
        let a = spans.begin_write(0, 4096);
        let b = spans.begin_write(1024, 2048);
        let patching = std::thread::spawn({
            let spans = Arc::clone(&spans);
            move || {
                let p = spans.begin_patch(512, 1024);
                std::thread::sleep(Duration::from_millis(50));
                spans.end(p);
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(spans.lock().len(), 2, "the patch waits for the write it overlaps");
        spans.end(a);
        while !spans.lock().iter().any(|s| s.patch) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Now the patch holds 512..1024: a write over it waits, one beside it does not.
        let beside = spans.begin_write(8192, 9216);
        let over = spans.begin_write(0, 1024);
        assert!(spans.lock().iter().all(|s| !s.patch), "the write over the patch came after it ended");
        patching.join().unwrap();
        for id in [b, beside, over] {
            spans.end(id);
        }
        assert!(spans.lock().is_empty());
    }
}
