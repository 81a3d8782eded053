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

use super::import::{gguf_metadata_file, manifest_of, BaseIndex, ImportOptions};
use super::import_tensor::{store_all, TensorDest};
use super::progress;
use crate::config::import_config::ImportDecision;
use crate::source::HfModel;
use crate::store::location::S3Location;
use crate::store::s3::{self, fetch::RemoteBytes, upload::Upload, Bucket};
use crate::store::tensor_file;
use crate::store::{
    tensor_name, BaseStore, Encoding, Holding, Location, Manifest, Store, TensorEntry, TensorFile,
    TensorHeader, GGUF_METADATA, GGUF_METADATA_HASH, MANIFEST, TENSOR_DIR,
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
    let entries = store_all(&sources, options, index.as_ref(), &bar, |d| {
        let key = loc.object(&tensor_name(&d.uuid));
        Target {
            bucket: &bucket,
            size: existing.get(&key).copied(),
            key,
        }
    })?;
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

impl TensorDest for Target<'_> {
    fn existing(&self) -> Option<TensorFile> {
        let n = self.size?;
        TensorFile::open_remote(RemoteBytes::new(self.bucket.clone(), self.key.clone(), n)).ok()
    }

    /// An object appears only once its upload completed, so it cannot be torn: a header that
    /// names this tensor's content hash vouches for its bytes.
    fn keeps<'s>(
        &self,
        _file: &TensorFile,
        _hash: &str,
        _base: Option<&dyn Fn() -> Result<crate::store::TensorReader<'s>>>,
    ) -> Result<bool> {
        Ok(true)
    }

    /// Objects cannot be hard-linked: a tensor the base holds is a reference to it.
    fn link_base(
        &self,
        _e: &TensorEntry,
        _b: &TensorEntry,
        _index: &BaseIndex,
    ) -> Result<Option<(Encoding, u64)>> {
        Ok(None)
    }

    /// Left for [`remove_leftovers`], after the manifest no longer names it.
    fn discard_existing(&self) {}

    fn write_chunked(
        &self,
        h: &TensorHeader,
        bytes: &[u8],
        base: Option<&mut dyn crate::store::tensor_file::ByteSource>,
        release: &(dyn Fn(Range<usize>) + Sync),
    ) -> Result<u64> {
        tensor_file::upload_chunked(self.upload(), h, bytes, base, release)
    }

    fn write_raw(
        &self,
        h: &TensorHeader,
        bytes: &[u8],
        release: &(dyn Fn(Range<usize>) + Sync),
    ) -> Result<u64> {
        tensor_file::upload_raw(self.upload(), h, bytes, release)
    }
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
