//! Reading and replaying the fuzz corpora on stable: the file handling shared by the replay tests
//! `proto/tests/fuzz_corpus.rs` and `gateway/tests/fuzz_corpus.rs`, which include this file with
//! `#[path]` like the checks themselves. Not a module of `gw-fuzz`; needs nothing but std.

use std::panic::RefUnwindSafe;
use std::path::{Path, PathBuf};

/// `fuzz/`, seen from the package compiling this file (one level below the repository root).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

/// The files of `dir`, sorted; an empty list if it does not exist.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

/// Replays every corpus and crash input of each of `targets` (`fuzz/corpus/<target>/`, then
/// `fuzz/artifacts/<target>/`) through `run(target, input)`, the checks the fuzzer runs. Panics
/// listing every input that failed, or if a corpus is missing or empty, so a replay can never pass
/// by testing nothing.
pub fn replay_all(targets: &[&str], run: impl Fn(&str, &[u8]) -> Option<usize> + RefUnwindSafe) {
    let mut failures = Vec::new();
    let mut total = 0;
    for &target in targets {
        let mut inputs = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            !inputs.is_empty(),
            "fuzz/corpus/{target} is missing or empty: the replay would test nothing (run `cargo run --example seeds` in fuzz/)"
        );
        inputs.extend(files(&fuzz_dir().join("artifacts").join(target)));
        for path in &inputs {
            let data = std::fs::read(path).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| run(target, &data).expect("known target")) {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {msg}", path.display()));
            }
        }
        total += inputs.len();
    }
    assert!(failures.is_empty(), "{} of {total} fuzz inputs fail:\n{}", failures.len(), failures.join("\n"));
}
