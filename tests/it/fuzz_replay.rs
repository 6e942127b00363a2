//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`, which keeps the inputs that
//! made the fuzzer fail once they were fixed) through the harnesses the fuzz targets run
//! (`force_returns_dev::fuzzing`), so that what the fuzzer found stays found without nightly.

use std::path::PathBuf;

use force_returns_dev::fuzzing;

use crate::common::manifest_dir;

/// Runs `harness` on every file of the target's corpus, naming the file that fails.
fn replay(target: &str, harness: fn(&[u8])) {
    let dir = manifest_dir().join("fuzz").join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    for file in &files {
        let bytes = std::fs::read(file).expect("a corpus file reads");
        assert!(
            std::panic::catch_unwind(|| harness(&bytes)).is_ok(),
            "{target} fails on {}",
            file.display()
        );
    }
}

#[test]
fn the_csv_decoder_corpus_holds() {
    replay("csv_decoder", fuzzing::csv_decoder);
}

#[test]
fn the_validator_corpus_holds() {
    replay("validator", fuzzing::validator);
}

#[test]
fn the_keys_corpus_holds() {
    replay("keys", fuzzing::keys);
}

#[test]
fn the_state_files_corpus_holds() {
    replay("state_files", fuzzing::state_files);
}
