//! The test binary's allocator: the system's, counting the bytes each thread holds, so a test
//! can show that an engine driven on its own thread by a flood holds no more memory at the end
//! than after the first few thousand frames (DESIGN §10: a flood costs CPU, never memory).
//!
//! Per thread, so tests running in parallel do not disturb each other's figures. Memory freed
//! on another thread than the one that allocated it would skew both; the floods measured here
//! allocate and free on the test's own thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: usable from inside the allocator, at any
    // point of a thread's life, without allocating.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn add(n: i64) {
    let _ = LIVE.try_with(|c| c.set(c.get() + n));
}

// SAFETY: every call is forwarded to `System` unchanged; only a thread-local counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            add(l.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            add(l.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        add(-(l.size() as i64));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            add(new as i64 - l.size() as i64);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes allocated and not yet freed by the calling thread since it started.
pub fn live_bytes() -> i64 {
    LIVE.with(Cell::get)
}
