//! Shared pieces of the fuzz targets in `fuzz_targets/`.
//!
//! Besides "never panic", every target checks that decoding does not allocate memory in
//! proportion to a length field it has not validated yet: [`with_allocation_limit`] runs the
//! decoder under a global allocator that refuses any single allocation larger than
//! [`BASE_ALLOWANCE`] + [`PER_INPUT_BYTE`] × input length. A refused allocation aborts the
//! process ("memory allocation of N bytes failed"), which libFuzzer records as a crash with the
//! input that caused it. A decoder that trusts a length prefix (say `Vec::with_capacity(n)` for
//! a claimed count of a million items in a 20-byte frame) fails this check; one that
//! allocates only for what the input really contains passes it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Allocation always allowed, whatever the input length (room for small fixed buffers).
pub const BASE_ALLOWANCE: usize = 64 * 1024;
/// Allowed bytes of one allocation per input byte: covers growth by doubling of buffers and
/// vectors whose elements are larger than the bytes that encode them.
pub const PER_INPUT_BYTE: usize = 32;

/// Largest single allocation currently allowed (`usize::MAX` outside [`with_allocation_limit`]).
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The system allocator, refusing allocations over [`LIMIT`].
struct Limited;

// SAFETY: every call is forwarded unchanged to `System`, or answered with a null pointer,
// which `GlobalAlloc` allows for any failed allocation.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > LIMIT.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// Restores the unlimited state when the guarded closure returns or unwinds.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        LIMIT.store(usize::MAX, Ordering::Relaxed);
    }
}

/// Runs `f` (the decoding of an input of `input_len` bytes) with the allocation limit on.
pub fn with_allocation_limit<R>(input_len: usize, f: impl FnOnce() -> R) -> R {
    let limit = BASE_ALLOWANCE.saturating_add(input_len.saturating_mul(PER_INPUT_BYTE));
    LIMIT.store(limit, Ordering::Relaxed);
    let _reset = Reset;
    f()
}
