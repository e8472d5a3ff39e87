//! Replays every fuzz corpus and crash input of the gateway's client-framing target
//! (`fuzz/corpus/client_framing/`, `fuzz/artifacts/client_framing/`) through the fuzz target's own
//! checks, on stable, as part of `cargo test --workspace`. The checks are the very file the fuzzer
//! runs (included below). Fails if the corpus directory is missing or empty.

#[allow(dead_code)]
#[path = "../../fuzz/src/gateway_targets.rs"]
mod gateway_targets;
#[allow(dead_code)]
#[path = "../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn every_corpus_and_crash_input_passes_the_fuzz_checks() {
    replay::replay_all(&gateway_targets::TARGETS, gateway_targets::run);
}

#[test]
fn the_seeds_pass_the_fuzz_checks() {
    for (target, name, data) in gateway_targets::seeds() {
        let outcome = std::panic::catch_unwind(|| gateway_targets::run(target, &data).expect("known target"));
        assert!(outcome.is_ok(), "seed {target}/{name} fails");
    }
}
