//! Replays the `pusher` fuzz corpus and crash inputs (`fuzz/corpus/pusher/`,
//! `fuzz/artifacts/pusher/`) through the fuzz target's own checks, on stable, as part of
//! `cargo test --workspace`; fails if the corpus is missing or empty.

#[allow(dead_code)]
#[path = "../../fuzz/src/pusher_targets.rs"]
mod pusher_targets;
#[allow(dead_code)]
#[path = "../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn every_corpus_and_crash_input_passes_the_fuzz_checks() {
    replay::replay_all(&pusher_targets::TARGETS, pusher_targets::run);
}

#[test]
fn the_seeds_pass_the_fuzz_checks() {
    for (target, name, data) in pusher_targets::seeds() {
        assert!(std::panic::catch_unwind(|| pusher_targets::run(target, &data)).is_ok(), "{target}/{name}");
    }
}
