//! `gmat verify`: decodes every tensor of a store (resolving deltas and references through the
//! base store) and checks its content hash; stops at the first mismatch.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::pipeline::progress::{self, human_bytes};
use crate::store::{Holding, Store};

/// The names of files in `tensors/` that no manifest entry uses.
fn orphans(store: &Store) -> Vec<String> {
    let used: std::collections::HashSet<String> = store
        .manifest
        .tensors
        .iter()
        .filter(|t| t.holding() != Holding::Referenced)
        .map(|t| format!("{}.gmat", t.uuid))
        .collect();
    let mut out: Vec<String> = std::fs::read_dir(store.root.join(crate::store::TENSOR_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !used.contains(n))
        .collect();
    out.sort();
    out
}

/// Runs the command. An error (exit code 1) names the first tensor that fails.
pub fn run(path: &Path, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let store = Store::open(path)?;
    if store.manifest.tensors.is_empty() {
        bail!(
            "{} lists no tensors: the store is empty; import the model again",
            store.root.join(crate::store::MANIFEST).display()
        );
    }
    let total = store.manifest.raw_bytes();
    let bar = progress::bytes_bar(total, "verify", quiet);
    for t in &store.manifest.tensors {
        bar.set_message(crate::escape::controls(&t.name).into_owned());
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
    let orphans = orphans(&store);
    if !orphans.is_empty() {
        let shown: Vec<String> = orphans
            .iter()
            .take(5)
            .map(|n| crate::escape::controls(n).into_owned())
            .collect();
        bail!(
            "every tensor of {} matches its content hash, but {} file(s) in {}/ are not in the manifest (orphans: {}{}); a later import over the store removes them, or delete them",
            store.root.display(),
            orphans.len(),
            crate::store::TENSOR_DIR,
            shown.join(", "),
            if orphans.len() > 5 { ", ..." } else { "" }
        );
    }
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
