//! What the fuzz targets share: an allocator that refuses any single
//! allocation above a bound, so that a parser sizing a buffer by a length
//! the input claims (rather than by the bytes it has) fails the run, not
//! only one that runs out of memory. The refused allocation ends the
//! process through Rust's `handle_alloc_error` ("memory allocation of N
//! bytes failed"), which libFuzzer reports as a crash with its input.
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: lb_fuzz::Bounded = lb_fuzz::Bounded::mib(1);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, refusing allocations larger than its bound.
pub struct Bounded {
    limit: usize,
}

impl Bounded {
    /// At most `mib` MiB in one allocation.
    pub const fn mib(mib: usize) -> Self {
        Self { limit: mib << 20 }
    }
}

// SAFETY: every call goes to the system allocator unchanged, or fails as
// an allocator may (a null pointer).
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > self.limit {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > self.limit {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > self.limit {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
