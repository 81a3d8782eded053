//! Test access to the reference kit (unit and integration tests; not part of gmat's API): small
//! HF models with llama.cpp's converter output, at `../shared/reference/models` beside the clone
//! (or `$GMAT_REFERENCE_MODELS`). A user's clone has no kit: tests that need it then skip with a
//! message naming it, and their core checks run on the fixtures in `testdata/`.

use std::path::PathBuf;

/// The kit folder, or `None` (after printing why `test` is skipped) when it is not there.
pub fn kit(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("GMAT_REFERENCE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/reference/models"
            ))
        });
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped {test}: needs the reference kit at {} (shared/reference/models beside the \
             clone, or set GMAT_REFERENCE_MODELS)",
            p.display()
        );
        None
    }
}
