//! A counting global allocator for tests that measure what a server holds per client.
//!
//! Only allocations made on threads that called [`count_this_thread`] are counted (a gateway's
//! runtime threads, through `on_thread_start`), so clients, workers and the test itself, running
//! in the same process on other threads, do not blur the figure. A block is counted where it is
//! allocated and where it is freed: memory that crosses between counted and uncounted threads
//! skews the totals, so measure differences across many clients on a server whose data crosses
//! only sockets.
//!
//! Besides the bytes asked for, it counts what glibc's malloc would take for them (a chunk of
//! the size plus an 8-byte header, rounded up to 16, at least 32 bytes): closer to resident
//! memory, which allocator overhead is part of.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

static BYTES: AtomicIsize = AtomicIsize::new(0);
static CHUNKS: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

/// Sizes below this are counted one by one in [`LIVE_BY_SIZE`]; the others in its last slot.
const SIZE_SLOTS: usize = 4096;
/// Live blocks by size, for [`blocks_by_size`].
static LIVE_BY_SIZE: [AtomicIsize; SIZE_SLOTS + 1] = [const { AtomicIsize::new(0) }; SIZE_SLOTS + 1];

/// The live blocks of the counted threads by size: `(size, count)` for every size with blocks,
/// sizes of 4,096 bytes and more together as 4,096. Subtract two readings to see what grew.
pub fn blocks_by_size() -> Vec<(usize, isize)> {
    LIVE_BY_SIZE.iter().enumerate().map(|(size, n)| (size, n.load(Ordering::SeqCst))).filter(|&(_, n)| n != 0).collect()
}

/// What grew between two readings of [`blocks_by_size`]: `(size, blocks)` per size.
pub fn growth(before: &[(usize, isize)], after: &[(usize, isize)]) -> Vec<(usize, isize)> {
    let mut all: std::collections::BTreeMap<usize, isize> = after.iter().copied().collect();
    for &(size, n) in before {
        *all.entry(size).or_default() -= n;
    }
    all.into_iter().filter(|&(_, n)| n != 0).collect()
}

/// The system allocator, counting the allocations of the threads that asked to be counted.
/// Install with `#[global_allocator] static A: gw_heap_count::Counting = gw_heap_count::Counting;`.
#[derive(Debug)]
pub struct Counting;

/// What the counted threads hold at one moment (allocated minus freed there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Bytes asked for.
    pub bytes: isize,
    /// Bytes glibc's malloc would use for them, headers and rounding included.
    pub chunk_bytes: isize,
    /// Blocks.
    pub blocks: isize,
}

impl Heap {
    /// What the counted threads hold now.
    pub fn now() -> Self {
        Self {
            bytes: BYTES.load(Ordering::SeqCst),
            chunk_bytes: CHUNKS.load(Ordering::SeqCst),
            blocks: BLOCKS.load(Ordering::SeqCst),
        }
    }

    /// The growth from `before` to `self`, per one of `n` things.
    pub fn per(self, before: Heap, n: usize) -> PerItem {
        let n = n.max(1) as f64;
        PerItem {
            bytes: (self.bytes - before.bytes) as f64 / n,
            chunk_bytes: (self.chunk_bytes - before.chunk_bytes) as f64 / n,
            blocks: (self.blocks - before.blocks) as f64 / n,
        }
    }
}

/// Heap growth per item (client), as a mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerItem {
    /// Bytes asked for.
    pub bytes: f64,
    /// Bytes glibc's malloc would use.
    pub chunk_bytes: f64,
    /// Blocks.
    pub blocks: f64,
}

impl std::fmt::Display for PerItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} B asked, {:.0} B in malloc chunks, {:.1} blocks", self.bytes, self.chunk_bytes, self.blocks)
    }
}

/// Counts the allocations of the calling thread from now on.
pub fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

/// What glibc's malloc takes for `size` bytes (64-bit): header, rounding to 16, a 32-byte minimum.
pub fn chunk_size(size: usize) -> usize {
    (size + 8).div_ceil(16).max(2) * 16
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn add(size: usize, sign: isize) {
    BYTES.fetch_add(sign * size as isize, Ordering::Relaxed);
    CHUNKS.fetch_add(sign * chunk_size(size) as isize, Ordering::Relaxed);
    BLOCKS.fetch_add(sign, Ordering::Relaxed);
    LIVE_BY_SIZE[size.min(SIZE_SLOTS)].fetch_add(sign, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the rest only counts, in atomics and a
// constant-initialised thread local (which allocates nothing).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            add(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && counted() {
            add(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            add(layout.size(), -1);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && counted() {
            add(layout.size(), -1);
            add(new_size, 1);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::chunk_size;

    #[test]
    fn chunks_are_glibc_s() {
        assert_eq!(chunk_size(1), 32);
        assert_eq!(chunk_size(24), 32);
        assert_eq!(chunk_size(25), 48);
        assert_eq!(chunk_size(1024), 1040);
    }
}
