//! Replays the delivery fuzz target's corpus and crash inputs (`fuzz/delivery-corpus/`,
//! `fuzz/artifacts/delivery/`) through the fuzz target's own checks, on stable, as part of
//! `cargo test --workspace`. The checks are the very file the fuzzer runs (included below).
//!
//! The corpus is not in `fuzz/corpus/delivery/` (where `replay::replay_all` looks) because
//! `proto/tests/fuzz_corpus.rs` refuses any directory there that its own list of replay tests
//! does not name; see `fuzz/README.md`.

#[allow(dead_code)]
#[path = "../../fuzz/src/delivery_targets.rs"]
mod delivery_targets;
#[allow(dead_code)]
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use replay::{files, fuzz_dir};

#[test]
fn every_corpus_and_crash_input_passes_the_fuzz_checks() {
    let corpus = files(&fuzz_dir().join("corpus").join("delivery"));
    assert!(!corpus.is_empty(), "fuzz/corpus/delivery is missing or empty: the replay would test nothing");
    let inputs: Vec<_> = corpus.into_iter().chain(files(&fuzz_dir().join("artifacts").join("delivery"))).collect();
    let mut failures = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| delivery_targets::delivery(&data)).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(failures.is_empty(), "{} of {} fuzz inputs fail: {failures:?}", failures.len(), inputs.len());
}

#[test]
fn the_seeds_pass_the_fuzz_checks() {
    for (target, name, data) in delivery_targets::seeds() {
        let outcome = std::panic::catch_unwind(|| delivery_targets::run(target, &data).expect("known target"));
        assert!(outcome.is_ok(), "seed {target}/{name} fails");
    }
}

#[test]
fn each_seed_decodes_to_the_case_it_was_written_from() {
    use delivery_targets::{DeadlinesCase, LogCase, QueueCase, ReplayCase, SeedCases, WatermarkCase};
    let c = SeedCases::new();
    assert_eq!(QueueCase::decode(&c.queue.encode()), c.queue);
    assert_eq!(LogCase::decode(&c.log.encode()), c.log);
    assert_eq!(WatermarkCase::decode(&c.watermark.encode()), c.watermark);
    assert_eq!(ReplayCase::decode(&c.replay.encode()), c.replay);
    assert_eq!(DeadlinesCase::decode(&c.deadlines.encode()), c.deadlines);
}
