//! Replays every input of `fuzz/corpus/<target>/`, `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` through its target's body: what a fuzzer kept, and every crash it found (fixed), is
//! checked on stable Rust by the ordinary suite, without fuzzing. Fails naming the file.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for folder in ["corpus", "seeds", "regressions"] {
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

#[test]
fn dmp_corpus() {
    replay("dmp", passerelle_fuzzing::dmp);
}

#[test]
fn vihf_corpus() {
    replay("vihf", passerelle_fuzzing::vihf);
}

#[test]
fn vihf_headers_corpus() {
    replay("vihf_headers", passerelle_fuzzing::vihf_headers);
}

/// The hand-written seeds of the signing targets (`fuzz/seeds/<target>/`, kept apart
/// from the corpora a minimisation rewrites) go the whole way, to the signatures and
/// their checks: a seed refused early would leave the fuzzer mutating inputs that never
/// reach what the target is for.
#[test]
fn signing_seeds_reach_the_signatures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (target, body) in [
        (
            "dmp",
            passerelle_fuzzing::dmp_body as fn(&[u8]) -> Result<(), String>,
        ),
        ("vihf", passerelle_fuzzing::vihf_body),
        ("vihf_headers", passerelle_fuzzing::vihf_headers_body),
    ] {
        let seeds: Vec<PathBuf> = std::fs::read_dir(root.join(target))
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            seeds.len() >= 4,
            "fuzz/seeds/{target}: {} seeds",
            seeds.len()
        );
        for seed in seeds {
            let data = std::fs::read(&seed).expect("read");
            if let Err(refusal) = body(&data) {
                panic!("{} is refused: {refusal}", seed.display());
            }
        }
    }
}
