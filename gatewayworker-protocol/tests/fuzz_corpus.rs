//! Replays the `gatewayworker` fuzz corpus and crash inputs (`fuzz/corpus/gatewayworker/`,
//! `fuzz/artifacts/gatewayworker/`) through the fuzz target's own checks, on stable, as part of
//! `cargo test --workspace`; fails if the corpus is missing or empty.

#[allow(dead_code)]
#[path = "../../fuzz/src/gatewayworker_targets.rs"]
mod gatewayworker_targets;
#[allow(dead_code)]
#[path = "../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn every_corpus_and_crash_input_passes_the_fuzz_checks() {
    replay::replay_all(&gatewayworker_targets::TARGETS, gatewayworker_targets::run);
}

#[test]
fn the_seeds_pass_the_fuzz_checks() {
    for (target, name, data) in gatewayworker_targets::seeds() {
        assert!(std::panic::catch_unwind(|| gatewayworker_targets::run(target, &data)).is_ok(), "{target}/{name}");
    }
}
