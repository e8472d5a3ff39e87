//! Property tests of the delivery core: proptest generates random operation sequences for each
//! state machine (sends, acks, refusals, drains, closes, link losses, reconnects and replays,
//! timer firings) and the checks of the fuzz target (`fuzz/src/delivery_targets.rs`, included
//! below) compare every step with a plain model: nothing lost, no duplicate outside a declared
//! redelivery, FIFO and order, limits never exceeded, byte accounting exact, the watermark only
//! moving forward, a replay exact or an explicit gap.
//!
//! Plain strategies over vectors of operations rather than proptest-state-machine: every
//! operation is valid in every state (bad input is part of what is tested), so there are no
//! preconditions for a state-machine runner to respect, and the same checks serve the fuzzer.
//! The case counts keep the whole file to a few seconds on two cores.

#[allow(dead_code)]
#[path = "../../fuzz/src/delivery_targets.rs"]
mod targets;

use proptest::prelude::*;
use targets::{
    DeadlinesCase, DeadlinesOp, LogCase, LogOp, QueueCase, QueueOp, ReplayCase, ReplayOp, WatermarkCase, WatermarkOp,
};

/// Operations per case: long enough to fill, drain and refill small limits several times.
const OPS: std::ops::Range<usize> = 0..200;

/// A count or seq near the action, or the far edge.
fn number(near: u64) -> impl Strategy<Value = u64> {
    prop_oneof![20 => 0..near, 1 => Just(u64::MAX)]
}

fn queue_case() -> impl Strategy<Value = QueueCase> {
    let op = prop_oneof![
        30 => (0usize..40).prop_map(QueueOp::Push),
        20 => Just(QueueOp::Pop),
        8 => prop::collection::vec(0usize..20, 0..5).prop_map(QueueOp::Append),
        3 => Just(QueueOp::Drain),
        3 => Just(QueueOp::ReleaseIdle),
        1 => Just(QueueOp::Close),
    ];
    // Bursts of light pushes popped one by one, as a client's queue sees them: they grow the
    // queue past what it keeps when it runs empty.
    let burst = (10usize..40, 0usize..10).prop_map(|(n, extra)| {
        let mut ops: Vec<QueueOp> = (0..n).map(|i| QueueOp::Push(i % 3)).collect();
        ops.extend((0..n + extra).map(|_| QueueOp::Pop));
        ops
    });
    let segment = prop_oneof![10 => op.prop_map(|op| vec![op]), 1 => burst];
    (prop::option::of(1usize..=8), prop::option::of(0usize..64), prop::collection::vec(segment, OPS))
        .prop_map(|(items, bytes, segments)| QueueCase { items, bytes, ops: segments.concat() })
}

fn log_case() -> impl Strategy<Value = LogCase> {
    let op = prop_oneof![
        12 => Just(LogOp::Push),
        8 => number(60).prop_map(LogOp::Ack),
        1 => Just(LogOp::Seal),
        1 => Just(LogOp::TakeAll),
    ];
    prop::collection::vec(op, OPS).prop_map(|ops| LogCase { ops })
}

fn watermark_case() -> impl Strategy<Value = WatermarkCase> {
    let op = prop_oneof![
        12 => number(60).prop_map(WatermarkOp::Handled),
        3 => (number(60), 0u64..10).prop_map(|(lo, len)| WatermarkOp::Settle(lo, lo.saturating_add(len))),
        2 => (0u64..5).prop_map(|far| WatermarkOp::Settle(far, u64::MAX - far)),
        4 => number(80).prop_map(WatermarkOp::Arrived),
        5 => Just(WatermarkOp::Take),
    ];
    prop::collection::vec(op, OPS).prop_map(|ops| WatermarkCase { ops })
}

fn replay_case() -> impl Strategy<Value = ReplayCase> {
    let op = prop_oneof![
        10 => (0usize..30).prop_map(ReplayOp::Record),
        3 => number(80).prop_map(ReplayOp::Ack),
        4 => number(80).prop_map(ReplayOp::Replay),
    ];
    (prop::option::of(0usize..10), prop::option::of(0usize..64), prop::collection::vec(op, OPS))
        .prop_map(|(messages, bytes, ops)| ReplayCase { messages, bytes, ops })
}

fn deadlines_case() -> impl Strategy<Value = DeadlinesCase> {
    let op = prop_oneof![
        6 => (0u8..16, number(300)).prop_map(|(k, at)| DeadlinesOp::Insert(k, at)),
        2 => (0u8..16).prop_map(DeadlinesOp::Remove),
        3 => number(300).prop_map(DeadlinesOp::Expired),
    ];
    prop::collection::vec(op, OPS).prop_map(|ops| DeadlinesCase { ops })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bounded_queue_loses_nothing_keeps_order_and_limits(case in queue_case()) {
        targets::check_queue(&case);
    }

    #[test]
    fn retention_log_hands_back_exactly_the_unacknowledged(case in log_case()) {
        targets::check_log(&case);
    }

    #[test]
    fn ack_watermark_is_cumulative_and_only_moves_forward(case in watermark_case()) {
        targets::check_watermark(&case);
    }

    #[test]
    fn replay_buffer_replays_exactly_or_reports_why_not(case in replay_case()) {
        targets::check_replay(&case);
    }

    #[test]
    fn deadlines_expire_in_order(case in deadlines_case()) {
        targets::check_deadlines(&case);
    }

    #[test]
    fn the_fuzz_decoder_takes_any_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        targets::delivery(&data);
    }
}
