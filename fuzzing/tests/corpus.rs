//! Replays every input of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`
//! through its target's body: what a fuzzer kept, and every crash it found (fixed), is
//! checked on stable Rust by the ordinary suite, without fuzzing. Fails naming the file.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        files.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file()),
        );
    }
    files.sort();
    files
}

fn replay(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    for file in files {
        let data = std::fs::read(&file).expect("read");
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{} fails its target", file.display());
    }
}

#[test]
fn envelope_corpus() {
    replay("envelope", passerelle_fuzzing::envelope);
}

#[test]
fn insi_corpus() {
    replay("insi", passerelle_fuzzing::insi);
}

#[test]
fn c14n_corpus() {
    replay("c14n", passerelle_fuzzing::c14n);
}

#[test]
fn config_corpus() {
    replay("config", passerelle_fuzzing::config);
}
