//! Replays every fuzz corpus and crash input of the gateway's client-framing target
//! (`fuzz/corpus/client_framing/`, `fuzz/artifacts/client_framing/`) through the fuzz target's own
//! checks, on stable, as part of `cargo test --workspace`. The checks are the very file the fuzzer
//! runs (included below). Fails if the corpus directory is missing or empty.

use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "../../fuzz/src/gateway_targets.rs"]
mod gateway_targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn every_corpus_and_crash_input_passes_the_fuzz_checks() {
    let mut failures = Vec::new();
    let mut total = 0;
    for target in gateway_targets::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "fuzz/corpus/{target} is missing or empty: the replay would test nothing");
        let artifacts = files(&fuzz_dir().join("artifacts").join(target));
        for path in corpus.iter().chain(&artifacts) {
            let data = std::fs::read(path).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| gateway_targets::run(target, &data).expect("known target"))
            {
                failures.push(format!("{}: {}", path.display(), panic_text(panic)));
            }
            total += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {total} fuzz inputs fail:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_seeds_pass_the_fuzz_checks() {
    for (target, name, data) in gateway_targets::seeds() {
        let outcome = std::panic::catch_unwind(|| gateway_targets::run(target, &data).expect("known target"));
        assert!(outcome.is_ok(), "seed {target}/{name} fails");
    }
}
