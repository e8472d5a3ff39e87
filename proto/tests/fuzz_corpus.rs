//! Replays every fuzz corpus and crash input of the proto targets (`fuzz/corpus/<target>/`,
//! `fuzz/artifacts/<target>/`) through the fuzz targets' own checks, on stable, as part of
//! `cargo test --workspace`. The checks are the very file the fuzzer runs (included below), so a
//! fixed crash stays fixed and the corpus keeps exercising what the fuzzer found.
//!
//! Fails if a corpus directory is missing or empty (so it can never pass by testing nothing), or
//! if `fuzz/corpus/` holds a directory no replay test knows.

#[allow(dead_code)]
#[path = "../../fuzz/src/proto_targets.rs"]
mod proto_targets;
#[allow(dead_code)]
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use replay::fuzz_dir;

/// Corpus directories replayed by other packages' tests (their checks need those packages).
const REPLAYED_ELSEWHERE: [(&str, &str); 4] = [
    ("client_framing", "gateway/tests/fuzz_corpus.rs"),
    ("delivery", "delivery/tests/fuzz_corpus.rs"),
    ("pusher", "pusher-protocol/tests/fuzz_corpus.rs"),
    ("gatewayworker", "gatewayworker-protocol/tests/fuzz_corpus.rs"),
];

#[test]
fn every_corpus_and_crash_input_passes_the_fuzz_checks() {
    replay::replay_all(&proto_targets::TARGETS, proto_targets::run);
}

#[test]
fn every_crash_input_directory_belongs_to_a_target() {
    let known =
        |name: &str| proto_targets::TARGETS.contains(&name) || REPLAYED_ELSEWHERE.iter().any(|(t, _)| *t == name);
    for kind in ["corpus", "artifacts"] {
        let dir = fuzz_dir().join(kind);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_eq!(kind, "artifacts", "fuzz/{kind} is missing");
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(known(&name), "fuzz/{kind}/{name} is replayed by no test: add its target to a replay test");
        }
    }
}

#[test]
fn the_seeds_pass_the_fuzz_checks() {
    // The generated seeds, whether or not they are on disk: they are valid messages and a genuine
    // handshake transcript, so they also reach the checks' success paths.
    let mut failures = Vec::new();
    for (target, name, data) in proto_targets::seeds() {
        if std::panic::catch_unwind(|| proto_targets::run(target, &data)).is_err() {
            failures.push(format!("{target}/{name}"));
        }
    }
    assert!(failures.is_empty(), "seeds fail: {failures:?}");
}
