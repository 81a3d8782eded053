//! `gmat verify`: decodes every tensor of a store (resolving deltas and references through the
//! base store) and checks its content hash; stops at the first mismatch.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::pipeline::progress::{self, human_bytes};
use crate::store::Store;

/// Runs the command. An error (exit code 1) names the first tensor that fails.
pub fn run(path: &Path, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let store = Store::open(path)?;
    let total = store.manifest.raw_bytes();
    let bar = progress::bytes_bar(total, "verify", quiet);
    for t in &store.manifest.tensors {
        bar.set_message(t.name.clone());
        store.reader(t).and_then(|r| r.finish()).with_context(|| {
            format!(
                "verify failed at tensor {} (uuid {}) of {}",
                t.name,
                t.uuid,
                store.root.display()
            )
        })?;
        bar.inc(t.raw_bytes);
    }
    bar.finish_and_clear();
    if !quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "verified {} tensors ({}) of {} in {:.2}s ({:.0} MB/s): every content hash matches",
            store.manifest.tensors.len(),
            human_bytes(total),
            store.root.display(),
            secs,
            total as f64 / 1e6 / secs.max(1e-9)
        );
    }
    Ok(())
}
