//! Fuzz targets for the internal protocol, the gateway's client framings, PHP GatewayWorker's
//! wire format and the delivery core.
//!
//! The checks live in plain modules ([`proto_targets`], [`gateway_targets`],
//! [`gatewayworker_targets`], [`delivery_targets`]) that the stable replay tests
//! (`proto/tests/fuzz_corpus.rs`, `gateway/tests/fuzz_corpus.rs`,
//! `gatewayworker-protocol/tests/fuzz_corpus.rs`, `delivery/tests/fuzz_corpus.rs`) compile too;
//! the `fuzz_targets/*.rs` binaries only add libFuzzer and the allocation check of [`heap`].

pub mod delivery_targets;
pub mod gateway_targets;
pub mod gatewayworker_targets;
pub mod proto_targets;
pub mod pusher_targets;

/// A counting allocator: the fuzz targets measure the peak heap one input makes the code hold.
pub mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CURRENT: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// The system allocator, counted.
    #[derive(Debug)]
    pub struct Counting;

    // SAFETY: forwards to `System` unchanged; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                // Old and new block exist at once during a move; count the larger as the peak.
                grew(new_size);
                CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            }
            p
        }
    }

    fn grew(n: usize) {
        let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }

    /// Runs `f` and fails if the heap it held at once went over `budget(f's result)` bytes.
    pub fn within_budget(f: impl FnOnce() -> usize) {
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let budget = f();
        let used = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        assert!(used <= budget, "held {used} bytes of heap at once; the budget for this input is {budget}");
    }
}
