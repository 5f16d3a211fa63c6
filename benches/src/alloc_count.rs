//! A global allocator that counts the allocations of each thread.
//!
//! Install it in a binary, bench or test crate and wrap the code under test in [`count`]:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: aoe_benches::alloc_count::CountingAlloc = aoe_benches::alloc_count::CountingAlloc;
//!
//! let (_, allocations) = aoe_benches::alloc_count::count(|| do_the_thing());
//! assert_eq!(allocations, 0);
//! ```
//!
//! Counts are per thread, so other threads (a test harness running tests in parallel) do not
//! disturb a measurement. Without the allocator installed, [`count`] always reports 0, so
//! callers that assert on it should first check [`installed`].
// The allocator entry points are unsafe by definition; each block says why it is sound.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // A const-initialised Cell has no destructor and needs no lazy initialisation, so it is
    // safe to touch from inside the allocator.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting `alloc`, `alloc_zeroed` and `realloc` calls per thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

fn bump() {
    // During thread teardown the slot may be gone; such allocations are not counted.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// thread-local Cell that never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s size contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations made by the calling thread so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Runs `f` and returns its result with the number of allocations the calling thread made
/// meanwhile.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = allocations();
    let r = f();
    (r, allocations() - before)
}

/// True when [`CountingAlloc`] is the global allocator (a boxed value registers).
pub fn installed() -> bool {
    let (b, n) = count(|| Box::new(std::hint::black_box(7u64)));
    drop(b);
    n > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_threads_allocations_only() {
        assert!(installed(), "the lib's test build installs CountingAlloc");
        let (v, n) = count(|| {
            let mut v: Vec<u64> = Vec::with_capacity(1);
            v.extend([1, 2, 3]);
            v
        });
        assert!(n >= 2, "{n}");
        assert_eq!(v.len(), 3);
        let (_, none) = count(|| std::hint::black_box(1 + 1));
        assert_eq!(none, 0);
        // Another thread's allocations do not count here.
        let other = std::thread::spawn(|| count(|| vec![0u8; 64]).1);
        let (_, here) = count(|| std::thread::sleep(std::time::Duration::from_millis(20)));
        assert!(other.join().unwrap() >= 1);
        assert_eq!(here, 0);
    }
}
