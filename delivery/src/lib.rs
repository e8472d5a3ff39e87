//! The delivery core: the rules that decide what is kept, re-sent, queued and acknowledged, as
//! plain state machines.
//!
//! Sans-IO in the way `proto` and quinn-proto are: no sockets, no tasks, no clocks, no locks.
//! Time is an argument (the caller's `u64` of milliseconds or its own instant type), and every
//! method hands back what the caller must do (wake the consumer, wake a waiting producer, log a
//! peer's bad acknowledgement, re-send these events). The IO code around each type keeps its
//! lock, its `Notify` and its task; the rule lives here, where it is unit tested seq by seq and
//! property tested over random operation sequences (`tests/properties.rs`), and fuzzed
//! (`fuzz/fuzz_targets/delivery.rs`, replayed on stable by `tests/fuzz_corpus.rs`).
//!
//! | type | rule | wired into | the IO wrapper keeps |
//! |---|---|---|---|
//! | [`RetentionLog`] | number events, keep them until a cumulative ack, hand back the rest when the link dies | `WorkerLink` in `gateway/src/router.rs` (was `Retained` and the bodies of `ack`, `seal`, `take_retained`) | the `Mutex`, the `acked` watch, the `gone`/`draining` flags, the mpsc permit |
//! | [`AckWatermark`] | the highest seq with every seq below it handled or settled | `Acks` in `business-worker/src/acks.rs` (was `AckState`) | the `Mutex`, the `moved` Notify, the `send_acks` task |
//! | [`BoundedQueue`] | FIFO bounded in items and bytes that refuses instead of waiting | `SendQueue` (`gateway/src/send_queue.rs`), the `pending` queue of `ClientSlot` (`business-worker/src/client_task.rs`), `Redelivery` (`gateway/src/binding.rs`) | the `Mutex`, the `Notify`s, the atomics read without the lock |
//! | [`ReplayBuffer`] | per client, the messages written to it, replayable after a reconnect (issue 25) | not yet (the recovery work) | the per-client lock, the gateway-wide caps and gauges |
//! | [`Deadlines`] | when each held (disconnected) client expires | not yet (the recovery work) | the timer task that sleeps until [`Deadlines::next_deadline`] |
//!
//! Each module's documentation says how its wrapper drives it.

pub mod ack_watermark;
pub mod bounded_queue;
pub mod deadlines;
pub mod replay_buffer;
pub mod retention_log;
pub mod weight;

pub use ack_watermark::{AckWatermark, ArrivalError, Marked, Skipped};
pub use bounded_queue::{BoundedQueue, Drained, KEEP_CAPACITY, Limits, Popped, Pushed, Refusal, Refused};
pub use deadlines::Deadlines;
pub use replay_buffer::{Recorded, Replay, ReplayBuffer, ReplayCaps, ReplayError, Trimmed};
pub use retention_log::{AckAhead, Acked, HandedBack, RetentionLog, Sealed};
pub use weight::{Len, Weigher, Weightless};
