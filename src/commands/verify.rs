//! `gmat verify`: decodes every tensor of a store (resolving deltas and references through the
//! base store) and checks its content hash; stops at the first mismatch.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::pipeline::progress::{self, human_bytes};
use crate::store::{Holding, Location, Store};

/// The names of files (objects) in `tensors/` that no manifest entry uses.
fn orphans(store: &Store) -> Result<Vec<String>> {
    let used: HashSet<String> = store
        .manifest
        .tensors
        .iter()
        .filter(|t| t.holding() != Holding::Referenced)
        .map(|t| format!("{}.gmat", t.uuid))
        .collect();
    let names: Vec<String> = match &store.location {
        Location::Local(_) => std::fs::read_dir(store.root.join(crate::store::TENSOR_DIR))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Location::S3(loc) => crate::store::s3::bucket(&loc.bucket)?
            .list(&loc.object(crate::store::TENSOR_DIR))?
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect(),
    };
    let mut out: Vec<String> = names.into_iter().filter(|n| !used.contains(n)).collect();
    out.sort();
    Ok(out)
}

/// What comparing the manifest's tensor list with the source model found.
enum SourceCheck {
    /// Every source tensor is in the store or was left out by the import config.
    Complete,
    /// The source cannot be compared (not found, unreadable, or not the model imported): why.
    NotCompared(String),
}

/// Compares the manifest's tensor list with the source model it was imported from (the path
/// recorded at import, relative paths from the current folder). Source tensors that are neither
/// in the store nor excluded by the import config are an error: the manifest is incomplete.
fn against_source(store: &Store) -> Result<SourceCheck> {
    let src = Path::new(&store.manifest.source.path);
    if std::fs::metadata(src).is_err() {
        return Ok(SourceCheck::NotCompared(format!(
            "the source model {} was not found",
            src.display()
        )));
    }
    let model = match crate::source::HfModel::open(src) {
        Ok(m) => m,
        Err(e) => {
            return Ok(SourceCheck::NotCompared(format!(
                "the source model {} cannot be read ({e:#})",
                src.display()
            )))
        }
    };
    let source: std::collections::HashMap<&str, _> = model
        .tensors()
        .map(|r| (r.tensor.name.as_str(), (r.tensor.dtype, &r.tensor.shape)))
        .collect();
    // The store's tensors must all be the source's, with the same dtype and shape; otherwise
    // the folder holds another model (or a changed one) and says nothing about this store.
    for t in &store.manifest.tensors {
        if source.get(t.name.as_str()) != Some(&(t.dtype, &t.shape)) {
            return Ok(SourceCheck::NotCompared(format!(
                "the model now at {} is not the one imported (tensor {} differs or is missing)",
                src.display(),
                t.name
            )));
        }
    }
    let have: HashSet<&str> = store
        .manifest
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .chain(store.manifest.source.excluded.iter().map(String::as_str))
        .collect();
    let mut missing: Vec<&str> = source
        .keys()
        .copied()
        .filter(|n| !have.contains(n))
        .collect();
    if missing.is_empty() {
        return Ok(SourceCheck::Complete);
    }
    missing.sort_unstable();
    let shown: Vec<String> = missing
        .iter()
        .take(5)
        .map(|n| crate::escape::controls(n).into_owned())
        .collect();
    bail!(
        "{} is incomplete: {} tensor(s) of the source model {} are neither in the store nor excluded by the import config ({}{}); import the model again",
        store.location.child(crate::store::MANIFEST),
        missing.len(),
        src.display(),
        shown.join(", "),
        if missing.len() > 5 { ", ..." } else { "" }
    )
}

/// Runs the command. An error (exit code 1) names the first tensor that fails.
pub fn run(path: &Path, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let store = Store::open(path)?;
    if store.manifest.tensors.is_empty() {
        bail!(
            "{} lists no tensors: the store is empty; import the model again",
            store.location.child(crate::store::MANIFEST)
        );
    }
    let total = store.manifest.raw_bytes();
    let bar = progress::bytes_bar(total, "verify", quiet);
    for t in &store.manifest.tensors {
        bar.set_message(crate::escape::controls(&t.name).into_owned());
        store.reader(t).and_then(|r| r.finish()).with_context(|| {
            format!(
                "verify failed at tensor {} (uuid {}) of {}",
                t.name, t.uuid, store.location
            )
        })?;
        bar.inc(t.raw_bytes);
    }
    bar.finish_and_clear();
    let orphans = orphans(&store)?;
    if !orphans.is_empty() {
        let shown: Vec<String> = orphans
            .iter()
            .take(5)
            .map(|n| crate::escape::controls(n).into_owned())
            .collect();
        bail!(
            "every tensor of {} matches its content hash, but {} file(s) in {}/ are not in the manifest (orphans: {}{}); a later import over the store removes them, or delete them",
            store.location,
            orphans.len(),
            crate::store::TENSOR_DIR,
            shown.join(", "),
            if orphans.len() > 5 { ", ..." } else { "" }
        );
    }
    if let SourceCheck::NotCompared(why) = against_source(&store)? {
        if !quiet {
            eprintln!("note: {why}: the store's tensor list was not checked against it");
        }
    }
    if !quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "verified {} tensors ({}) of {} in {:.2}s ({:.0} MB/s): every content hash matches",
            store.manifest.tensors.len(),
            human_bytes(total),
            store.location,
            secs,
            total as f64 / 1e6 / secs.max(1e-9)
        );
    }
    Ok(())
}
