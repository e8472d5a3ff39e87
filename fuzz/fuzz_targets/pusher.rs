#![no_main]

#[global_allocator]
static HEAP: gw_fuzz::heap::Counting = gw_fuzz::heap::Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gw_fuzz::heap::within_budget(|| gw_fuzz::pusher_targets::pusher(data));
});
