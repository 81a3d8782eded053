//! Importing into a store in a bucket (`gmat import -o s3://bucket/prefix`): the same steps as
//! on disk ([`super::import`]), with objects for files.
//!
//! * The import holds the prefix's lock object ([`crate::store::s3::lock`]) for the whole run
//!   and deletes the manifest first: until the new manifest lands, last, the store is visibly
//!   incomplete and readers refuse it.
//! * Each tensor file is uploaded while it is encoded ([`crate::store::s3::upload`]): memory
//!   stays flat, and an object exists under its name only once complete.
//! * An interrupted import resumes when run again: objects whose header describes exactly the
//!   tensor to store (name, type, shape, encoding and the source's content hash) are kept. An
//!   object cannot be torn, so the header vouches for the bytes.
//! * With `--base` in a bucket, a tensor the base already holds is a `base_ref`: the fine-tune
//!   reads the base's object and stores nothing (objects cannot be hard-linked); other tensors
//!   of the same name and shape are XOR deltas, as on disk.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::import::{
    delta_pays, gguf_metadata_file, header, manifest_of, BaseIndex, ImportOptions,
};
use super::progress;
use crate::config::import_config::ImportDecision;
use crate::source::HfModel;
use crate::store::location::S3Location;
use crate::store::s3::{self, fetch::RemoteBytes, upload::Upload, Bucket};
use crate::store::tensor_file;
use crate::store::{
    tensor_name, BaseStore, BaseTensor, Encoding, Holding, Location, Manifest, Store, TensorEntry,
    TensorFile, GGUF_METADATA, GGUF_METADATA_HASH, MANIFEST, TENSOR_DIR,
};

/// Imports `model` into the store at `loc` (`s3://bucket/.../model.gmat`).
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &HfModel,
    source_path: &Path,
    decisions: &[ImportDecision],
    summary: serde_json::Map<String, serde_json::Value>,
    loc: &S3Location,
    options: &ImportOptions,
    quiet: bool,
) -> Result<Manifest> {
    if !matches!(options.encoding, Encoding::Raw | Encoding::Zstd) {
        bail!(
            "import writes raw or zstd tensors, not {}",
            options.encoding
        );
    }
    let url = Location::S3(loc.clone()).to_string();
    let bucket = s3::bucket(&loc.bucket)?;
    let base_info = match options.base {
        Some(b) => Some(base_info(b, loc)?),
        None => None,
    };
    let lock = s3::lock::acquire(bucket.clone(), &loc.key, &url)?;
    let manifest_key = loc.object(MANIFEST);
    let old_side_files = bucket
        .get(&manifest_key)?
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .and_then(|t| Manifest::parse(&t).ok())
        .map(|m| m.side_files)
        .unwrap_or_default();
    // Until the new manifest lands, the store is visibly incomplete.
    bucket.delete(&manifest_key)?;
    // What an earlier run left: tensor objects and their sizes.
    let tensor_prefix = loc.object(TENSOR_DIR);
    let existing: HashMap<String, u64> = bucket
        .list(&tensor_prefix)?
        .into_iter()
        .map(|m| (m.location.to_string(), m.size))
        .collect();
    let sources: Vec<_> = model
        .tensors()
        .zip(decisions)
        .filter(|(_, d)| d.include)
        .collect();
    let total: u64 = sources
        .iter()
        .map(|(r, _)| r.tensor.range.len() as u64)
        .sum();
    let index = options.base.map(BaseIndex::new);
    let bar = progress::bytes_bar(total, "upload", quiet);
    let entries: Vec<TensorEntry> = sources
        .par_iter()
        .map(|(r, d)| {
            let bytes = r.file.data(r.tensor);
            let entry = TensorEntry {
                name: r.tensor.name.clone(),
                uuid: d.uuid,
                dtype: r.tensor.dtype,
                shape: r.tensor.shape.clone(),
                encoding: options.encoding,
                raw_bytes: bytes.len() as u64,
                stored_bytes: 0,
                hash: r.file.hash(r.tensor),
                base: None,
            };
            let key = loc.object(&tensor_name(&d.uuid));
            let start = r.tensor.range.start;
            let release = |w: Range<usize>| r.file.release(start + w.start..start + w.end);
            let target = Target {
                bucket: &bucket,
                size: existing.get(&key).copied(),
                key,
            };
            let entry = store_tensor(entry, bytes, &target, options, index.as_ref(), &release)
                .with_context(|| format!("tensor {}", r.tensor.name))?;
            bar.inc(bytes.len() as u64);
            Ok(entry)
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let mut side_files = Vec::new();
    let mut summary = summary;
    if let Some(kv) = &model.gguf_metadata {
        let (bytes, hash) = gguf_metadata_file(kv);
        bucket.put(&loc.object(GGUF_METADATA), bytes)?;
        summary.insert(GGUF_METADATA_HASH.into(), hash.into());
        side_files.push(GGUF_METADATA.to_string());
    }
    for rel in &model.side_files {
        let src = model.dir.join(rel);
        let bytes = crate::fsio::read_limited(&src, crate::fsio::SMALL_FILE_LIMIT)?;
        bucket
            .put(&loc.object(rel), bytes)
            .with_context(|| format!("cannot copy {}", src.display()))?;
        side_files.push(rel.clone());
    }
    let manifest = manifest_of(
        model,
        source_path,
        decisions,
        summary,
        side_files,
        entries,
        base_info,
    );
    // Last: the manifest, and only if the lock is still this import's.
    lock.check(&url)?;
    bucket.put(&manifest_key, serde_json::to_vec_pretty(&manifest)?)?;
    remove_leftovers(&bucket, loc, &manifest, existing.keys(), &old_side_files);
    lock.release()?;
    Ok(manifest)
}

/// Where one tensor goes, and the size of the object an earlier run left there.
struct Target<'a> {
    bucket: &'a Arc<Bucket>,
    key: String,
    size: Option<u64>,
}

impl Target<'_> {
    fn upload(&self) -> Upload {
        Upload::new(self.bucket.clone(), self.key.clone())
    }
}

/// Uploads one tensor (or references the base's) and fills in how it is stored.
fn store_tensor(
    mut e: TensorEntry,
    bytes: &[u8],
    target: &Target,
    options: &ImportOptions,
    index: Option<&BaseIndex>,
    release: &(dyn Fn(Range<usize>) + Sync),
) -> Result<TensorEntry> {
    let existing = target.size.and_then(|n| {
        TensorFile::open_remote(RemoteBytes::new(
            target.bucket.clone(),
            target.key.clone(),
            n,
        ))
        .ok()
    });
    if let Some(index) = index {
        if let Some(b) = index.verified_same_content(&e)? {
            e.base = Some(BaseTensor {
                uuid: b.uuid,
                hash: b.hash.clone(),
            });
            e.encoding = Encoding::BaseRef;
            e.stored_bytes = 0;
            return Ok(e);
        }
        if let Some(&b) = index.by_name.get(e.name.as_str()) {
            if b.dtype == e.dtype && b.shape == e.shape && e.raw_bytes > 0 {
                let link = BaseTensor {
                    uuid: b.uuid,
                    hash: b.hash.clone(),
                };
                let xh = header(&e, Encoding::XorZstd, Some(link.clone()));
                if let Some(f) = existing.as_ref().filter(|f| f.header == xh) {
                    e.encoding = Encoding::XorZstd;
                    e.base = Some(link);
                    e.stored_bytes = f.file_bytes();
                    return Ok(e);
                }
                let mut reader = index.store.reader(b).with_context(|| {
                    format!("base tensor {} of {}", b.name, index.store.location)
                })?;
                if delta_pays(bytes, &mut reader, e.dtype, options.encoding)? {
                    e.stored_bytes = tensor_file::upload_chunked(
                        target.upload(),
                        &xh,
                        bytes,
                        Some(&mut reader),
                        release,
                    )?;
                    reader.finish().with_context(|| {
                        format!(
                            "the base store {} is corrupt; the delta written against it is unusable",
                            index.store.location
                        )
                    })?;
                    e.encoding = Encoding::XorZstd;
                    e.base = Some(link);
                    return Ok(e);
                }
            }
        }
    }
    let h = header(&e, options.encoding, None);
    if let Some(f) = existing.as_ref().filter(|f| f.header == h) {
        e.stored_bytes = f.file_bytes();
        return Ok(e);
    }
    drop(existing);
    e.stored_bytes = match options.encoding {
        Encoding::Raw => tensor_file::upload_raw(target.upload(), &h, bytes, release)?,
        _ => tensor_file::upload_chunked(target.upload(), &h, bytes, None, release)?,
    };
    Ok(e)
}

/// After the manifest is in place: deletes tensor objects no entry uses (another model imported
/// over the prefix, a tensor now shared with the base) and the previous model's side files that
/// this one lacks. Failures are left for a later import (or `gmat verify` reports them).
fn remove_leftovers<'a>(
    bucket: &Bucket,
    loc: &S3Location,
    manifest: &Manifest,
    existing: impl Iterator<Item = &'a String>,
    old_side_files: &[String],
) {
    let used: HashSet<String> = manifest
        .tensors
        .iter()
        .filter(|t| t.holding() != Holding::Referenced)
        .map(|t| loc.object(&tensor_name(&t.uuid)))
        .collect();
    for key in existing {
        let is_tensor = key
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".gmat"))
            .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok());
        if is_tensor && !used.contains(key) {
            let _ = bucket.delete(key);
        }
    }
    for f in old_side_files {
        if !manifest.side_files.contains(f) {
            let _ = bucket.delete(&loc.object(f));
        }
    }
}

/// The manifest's record of a base in a bucket: relative to the fine-tune in the same bucket,
/// its URL in another.
fn base_info(base: &Store, loc: &S3Location) -> Result<BaseStore> {
    let Location::S3(b) = &base.location else {
        bail!(
            "--base {}: a store in a bucket cannot depend on a local base store (other machines could not read it); import the base into the bucket first",
            base.location
        );
    };
    if b == loc {
        bail!(
            "the fine-tune cannot be written into its own base store {}; choose another -o",
            base.location
        );
    }
    super::import::note_chain(base);
    Ok(BaseStore {
        path: loc.relative(b),
        model_hash: base.manifest.model_hash(),
    })
}
