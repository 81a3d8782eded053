//! Streams every source tensor into the store: hash, write under a temporary name, rename.
//! Tensors are written straight from the memory-mapped source, so memory stays flat; tensors
//! already present with the right content hash are kept, so an interrupted import resumes.

use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::progress;
use crate::config::import_config::ImportDecision;
use crate::source::HfModel;
use crate::store::manifest::{SourceInfo, FORMAT_VERSION};
use crate::store::{
    tensor_file, Encoding, Manifest, Store, TensorEntry, TensorFile, TensorHeader, MANIFEST,
    TENSOR_DIR,
};

/// Imports `model` into the store folder `root` (`.../model.gmat`).
pub fn run(
    model: &HfModel,
    source_path: &Path,
    decisions: &[ImportDecision],
    summary: serde_json::Map<String, serde_json::Value>,
    root: &Path,
    quiet: bool,
) -> Result<Manifest> {
    std::fs::create_dir_all(root.join(TENSOR_DIR))
        .with_context(|| format!("cannot create {}", root.display()))?;
    // Until the new manifest lands, the store is visibly incomplete.
    let manifest_path = root.join(MANIFEST);
    if manifest_path.exists() {
        std::fs::remove_file(&manifest_path)
            .with_context(|| format!("cannot replace {}", manifest_path.display()))?;
    }
    let sources: Vec<_> = model
        .tensors()
        .zip(decisions)
        .filter(|(_, d)| d.include)
        .collect();
    let total: u64 = sources
        .iter()
        .map(|(r, _)| r.tensor.range.len() as u64)
        .sum();
    let bar = progress::bytes_bar(total, "import", quiet);
    let entries: Vec<TensorEntry> = sources
        .par_iter()
        .map(|(r, d)| {
            let bytes = r.file.data(r.tensor);
            let h = r.file.hash(r.tensor);
            let path = Store::tensor_path(root, &d.uuid);
            let header = TensorHeader {
                name: r.tensor.name.clone(),
                dtype: r.tensor.dtype,
                shape: r.tensor.shape.clone(),
                encoding: Encoding::Raw,
                raw_bytes: bytes.len() as u64,
                hash: h.clone(),
            };
            let existing = TensorFile::open(&path).ok().filter(|f| f.header == header);
            let stored_bytes = match existing {
                Some(_) => std::fs::metadata(&path)?.len(),
                None => {
                    let base = r.tensor.range.start;
                    tensor_file::write_raw_releasing(&path, &header, bytes, |w| {
                        r.file.release(base + w.start..base + w.end)
                    })
                    .with_context(|| format!("tensor {}", r.tensor.name))?
                }
            };
            bar.inc(bytes.len() as u64);
            Ok(TensorEntry {
                name: r.tensor.name.clone(),
                uuid: d.uuid,
                dtype: r.tensor.dtype,
                shape: r.tensor.shape.clone(),
                encoding: Encoding::Raw,
                raw_bytes: bytes.len() as u64,
                stored_bytes,
                hash: h,
            })
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let mut side_files = Vec::new();
    for p in &model.side_files {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .context("side file name is not UTF-8")?
            .to_string();
        let tmp = root.join(format!(".{name}.partial"));
        std::fs::copy(p, &tmp).with_context(|| format!("cannot copy {}", p.display()))?;
        std::fs::rename(&tmp, root.join(&name))?;
        side_files.push(name);
    }
    let manifest = Manifest {
        format: "gmat".into(),
        format_version: FORMAT_VERSION,
        gmat_version: env!("CARGO_PKG_VERSION").into(),
        source: SourceInfo {
            format: "safetensors".into(),
            path: source_path.display().to_string(),
            files: model
                .files
                .iter()
                .filter_map(|f| f.path.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect(),
        },
        model: summary,
        side_files,
        tensors: entries,
    };
    let tmp = root.join(".metadata.json.partial");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &manifest_path)?;
    Ok(manifest)
}
