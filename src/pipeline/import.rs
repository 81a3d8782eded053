//! Streams every source tensor into the store: hash, encode, write under a temporary name,
//! rename. Tensors are read straight from the memory-mapped source and encoded in bounded
//! chunks, so memory stays flat; tensors already present with the right header are kept, so an
//! interrupted import resumes.
//!
//! With a base store (`--base`), a tensor whose content the base already holds is shared: its
//! file is hard-linked from the base when the filesystem allows it, and otherwise recorded as a
//! reference to the base's tensor. A tensor with the same name, dtype and shape as a base tensor
//! but other content is stored as the XOR with it (`xor_zstd`) when that codes smaller.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::import_tensor::{store_all, TensorDest};
use super::progress;
use crate::config::import_config::ImportDecision;
use crate::fsio;
use crate::source::HfModel;
use crate::store::codec::{self, Planes, CHUNK_BYTES};
use crate::store::commit::{BackgroundCommit, Commit};
use crate::store::manifest::{BaseStore, SourceInfo, FORMAT_VERSION};
use crate::store::tensor_file::{self, ByteSource};
use crate::store::{
    BaseTensor, Encoding, Holding, Manifest, Store, TensorEntry, TensorFile, TensorHeader,
    GGUF_METADATA, GGUF_METADATA_HASH, MANIFEST, TENSOR_DIR,
};

/// How tensors are stored.
#[derive(Clone, Copy)]
pub struct ImportOptions<'a> {
    /// `raw` or `zstd`: the encoding of tensors that are not shared with or deltas of a base.
    pub encoding: Encoding,
    /// The base store of a fine-tune.
    pub base: Option<&'a Store>,
}

impl Default for ImportOptions<'_> {
    fn default() -> Self {
        ImportOptions {
            encoding: Encoding::Zstd,
            base: None,
        }
    }
}

/// Imports `model` into the store folder `root` (`.../model.gmat`).
pub fn run(
    model: &HfModel,
    source_path: &Path,
    decisions: &[ImportDecision],
    summary: serde_json::Map<String, serde_json::Value>,
    root: &Path,
    options: &ImportOptions,
    quiet: bool,
) -> Result<Manifest> {
    if !matches!(options.encoding, Encoding::Raw | Encoding::Zstd) {
        bail!(
            "import writes raw or zstd tensors, not {}",
            options.encoding
        );
    }
    if let Ok(m) = std::fs::symlink_metadata(root) {
        if !m.is_dir() {
            bail!(
                "{} exists and is not a folder; the store is written there",
                root.display()
            );
        }
    }
    std::fs::create_dir_all(root.join(TENSOR_DIR))
        .with_context(|| format!("cannot create {}", root.display()))?;
    let base_info = match options.base {
        Some(base) => Some(base_info(base, root)?),
        None => None,
    };
    // One writer at a time, for the whole run; then what a crashed run left is ours to clean.
    let _lock = fsio::lock_store_exclusive(root)?;
    fsio::remove_stale_temps(root, None);
    fsio::remove_stale_temps(&root.join(TENSOR_DIR), None);
    for m in model
        .side_files
        .iter()
        .filter_map(|f| f.split_once('/').map(|(d, _)| d))
    {
        fsio::remove_stale_temps(&root.join(m), None);
    }
    // The side files of what the store held before, to remove those the new model lacks.
    let manifest_path = root.join(MANIFEST);
    let old_side_files = Manifest::load(&manifest_path)
        .map(|m| m.side_files)
        .unwrap_or_default();
    // Until the new manifest lands, the store is visibly incomplete.
    if std::fs::symlink_metadata(&manifest_path).is_ok() {
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
    let index = options.base.map(BaseIndex::new);
    let bar = progress::bytes_bar(total, "import", quiet);
    // Files are made durable and renamed on another thread while the next tensors encode; all
    // of them before the manifest is written.
    let commit = BackgroundCommit::start();
    let entries = store_all(&sources, options, index.as_ref(), &bar, |d| DiskDest {
        path: Store::tensor_path(root, &d.uuid),
        commit: &commit,
    })?;
    commit.finish()?;
    bar.finish_and_clear();
    let mut side_files = Vec::new();
    let mut summary = summary;
    if let Some(kv) = &model.gguf_metadata {
        let (bytes, hash) = gguf_metadata_file(kv);
        fsio::write_atomic(&root.join(GGUF_METADATA), &bytes)?;
        summary.insert(GGUF_METADATA_HASH.into(), hash.into());
        side_files.push(GGUF_METADATA.to_string());
    }
    for rel in &model.side_files {
        let src = model.dir.join(rel);
        let dst = root.join(rel);
        let folder = dst.parent().unwrap_or(root);
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        copy_side_file(&src, &dst)?;
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
    fsio::write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    sync_dir(root);
    remove_leftovers(root, &manifest, &old_side_files);
    Ok(manifest)
}

/// The manifest of an import: where the model came from, its summary, side files and tensors.
pub(super) fn manifest_of(
    model: &HfModel,
    source_path: &Path,
    decisions: &[ImportDecision],
    summary: serde_json::Map<String, serde_json::Value>,
    side_files: Vec<String>,
    entries: Vec<TensorEntry>,
    base: Option<BaseStore>,
) -> Manifest {
    Manifest {
        format: "gmat".into(),
        format_version: FORMAT_VERSION,
        gmat_version: env!("CARGO_PKG_VERSION").into(),
        source: SourceInfo {
            format: model.format().into(),
            path: source_path.display().to_string(),
            files: model
                .files
                .iter()
                .filter_map(|f| f.path.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect(),
            excluded: model
                .tensors()
                .zip(decisions)
                .filter(|(_, d)| !d.include)
                .map(|(r, _)| r.tensor.name.clone())
                .collect(),
        },
        model: summary,
        side_files,
        tensors: entries,
        base,
    }
}

/// The GGUF's key/value pairs as a GGUF file of no tensors (every value keeps its type), and its
/// content hash for the manifest.
pub(super) fn gguf_metadata_file(kv: &[(String, crate::gguf::Value)]) -> (Vec<u8>, String) {
    let bytes = crate::gguf::GgufHeader {
        metadata: kv.to_vec(),
        tensors: Vec::new(),
    }
    .to_bytes();
    let hash = crate::content_hash::format(blake3::hash(&bytes));
    (bytes, hash)
}

/// Copies a side file (small: read with a limit) to `dst` through a temporary file.
fn copy_side_file(src: &Path, dst: &Path) -> Result<()> {
    let bytes = fsio::read_limited(src, fsio::SMALL_FILE_LIMIT)?;
    fsio::write_atomic(dst, &bytes).with_context(|| format!("cannot copy {}", src.display()))
}

/// Makes renames into `dir` durable (best effort: not every file system supports it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// After a new manifest is in place: removes tensor files no entry uses (a different model
/// imported over the store, a tensor now shared with the base) and side files of the previous
/// model that this one does not have. Only `<uuid>.gmat` names are touched in `tensors/`;
/// anything else there is left for `gmat verify` to report.
fn remove_leftovers(root: &Path, manifest: &Manifest, old_side_files: &[String]) {
    let used: std::collections::HashSet<String> = manifest
        .tensors
        .iter()
        .filter(|t| t.holding() != Holding::Referenced)
        .map(|t| format!("{}.gmat", t.uuid))
        .collect();
    if let Ok(rd) = std::fs::read_dir(root.join(TENSOR_DIR)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_tensor_name = name
                .strip_suffix(".gmat")
                .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok());
            // `.partial`: the fixed temporary names of earlier gmat versions.
            if (is_tensor_name && !used.contains(&name)) || name.ends_with(".gmat.partial") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".partial") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    for f in old_side_files {
        if !manifest.side_files.contains(f) {
            let _ = std::fs::remove_file(root.join(f));
            if let Some((dir, _)) = f.split_once('/') {
                let _ = std::fs::remove_dir(root.join(dir));
            }
        }
    }
}

/// The base's tensors by content hash and by name.
pub(super) struct BaseIndex<'a> {
    pub(super) store: &'a Store,
    by_hash: HashMap<&'a str, Vec<&'a TensorEntry>>,
    pub(super) by_name: HashMap<&'a str, &'a TensorEntry>,
}

impl<'a> BaseIndex<'a> {
    pub(super) fn new(store: &'a Store) -> Self {
        let mut by_hash: HashMap<&str, Vec<&TensorEntry>> = HashMap::new();
        let mut by_name = HashMap::new();
        for t in &store.manifest.tensors {
            by_hash.entry(t.hash.as_str()).or_default().push(t);
            by_name.insert(t.name.as_str(), t);
        }
        BaseIndex {
            store,
            by_hash,
            by_name,
        }
    }

    /// A base tensor with this content, preferably of the same name.
    pub(super) fn same_content(&self, e: &TensorEntry) -> Option<&'a TensorEntry> {
        let list = self.by_hash.get(e.hash.as_str())?;
        list.iter()
            .find(|b| b.name == e.name)
            .or_else(|| list.first())
            .copied()
    }

    /// [`Self::same_content`], once the base's file is read back whole: a corrupt base file
    /// would otherwise become this store's tensor.
    pub(super) fn verified_same_content(&self, e: &TensorEntry) -> Result<Option<&'a TensorEntry>> {
        let Some(b) = self.same_content(e) else {
            return Ok(None);
        };
        self.store
            .reader(b)
            .and_then(|r| r.finish())
            .with_context(|| {
                format!(
                    "the base store {} is corrupt (check it with `gmat verify`; re-import it, or import without --base)",
                    self.store.location
                )
            })?;
        Ok(Some(b))
    }
}

pub(super) fn header(
    e: &TensorEntry,
    encoding: Encoding,
    base: Option<BaseTensor>,
) -> TensorHeader {
    TensorHeader {
        name: e.name.clone(),
        dtype: e.dtype,
        shape: e.shape.clone(),
        encoding,
        raw_bytes: e.raw_bytes,
        hash: e.hash.clone(),
        chunk_bytes: encoding.is_chunked().then_some(CHUNK_BYTES as u64),
        base,
    }
}

/// A tensor's file in a store folder: written under a temporary name and committed (fsync,
/// rename) by `commit`; shared with a base in a folder by a hard link.
struct DiskDest<'a> {
    path: PathBuf,
    commit: &'a dyn Commit,
}

impl TensorDest for DiskDest<'_> {
    fn existing(&self) -> Option<TensorFile> {
        TensorFile::open(&self.path).ok()
    }

    /// A file on disk can be torn or changed: it is kept only if it decodes to `hash`.
    fn keeps<'s>(
        &self,
        file: &TensorFile,
        hash: &str,
        base: Option<&dyn Fn() -> Result<crate::store::TensorReader<'s>>>,
    ) -> Result<bool> {
        Ok(match base {
            Some(open) => verify_delta(file, open()?, hash).is_ok(),
            None => file.verify(hash).is_ok(),
        })
    }

    /// A hard link to the base's own file, when it holds the same name, dtype and shape (the
    /// header inside the file names them).
    fn link_base(
        &self,
        e: &TensorEntry,
        b: &TensorEntry,
        index: &BaseIndex,
    ) -> Result<Option<(Encoding, u64)>> {
        let linkable = index.store.location.local().is_some()
            && matches!(b.holding(), Holding::Own | Holding::Linked)
            && b.name == e.name
            && b.dtype == e.dtype
            && b.shape == e.shape;
        if !linkable {
            return Ok(None);
        }
        let from = Store::tensor_path(&index.store.root, &b.uuid);
        if !from.is_file() {
            bail!(
                "the base store {} has no file for its tensor {} ({}); check it with `gmat verify`",
                index.store.location,
                b.name,
                from.display()
            );
        }
        // A failed link (another file system) falls back to a reference.
        Ok(hard_link(&from, &self.path)
            .ok()
            .map(|size| (b.encoding, size)))
    }

    fn discard_existing(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    fn write_chunked(
        &self,
        h: &TensorHeader,
        bytes: &[u8],
        base: Option<&mut dyn crate::store::tensor_file::ByteSource>,
        release: &(dyn Fn(Range<usize>) + Sync),
    ) -> Result<u64> {
        tensor_file::write_chunked(&self.path, h, bytes, base, release, self.commit)
    }

    fn write_raw(
        &self,
        h: &TensorHeader,
        bytes: &[u8],
        release: &(dyn Fn(Range<usize>) + Sync),
    ) -> Result<u64> {
        tensor_file::write_raw_releasing(&self.path, h, bytes, release, self.commit)
    }
}

/// Checks that a delta file from an earlier run decodes, against `base`, to bytes with the
/// content hash `expected`.
fn verify_delta(
    f: &TensorFile,
    mut base: crate::store::TensorReader,
    expected: &str,
) -> Result<()> {
    let mut h = blake3::Hasher::new();
    let mut buf = Vec::new();
    let n = f.chunk_count();
    let mut c0 = 0;
    while c0 < n {
        let c1 = (c0 + tensor_file::BATCH_CHUNKS).min(n);
        let (s, e) = f.chunk_span(c0, c1);
        buf.resize(e - s, 0);
        f.decode_chunks(c0, c1, Some(base.window(s, e)?), &mut buf)?;
        h.update(&buf);
        c0 = c1;
    }
    if crate::content_hash::format(h.finalize()) != expected {
        bail!("the delta does not decode to the recorded content");
    }
    base.finish()
}

/// Whether the XOR with the base codes smaller than the tensor alone, judged on one chunk from
/// the middle of the tensor.
pub(super) fn delta_pays(
    bytes: &[u8],
    base: &mut dyn ByteSource,
    dtype: crate::source::Dtype,
    encoding: Encoding,
) -> Result<bool> {
    let n = bytes.len().div_ceil(CHUNK_BYTES);
    let s = (n / 2) * CHUNK_BYTES;
    let e = (s + CHUNK_BYTES).min(bytes.len());
    let planes = Planes::for_dtype(dtype);
    let xor = codec::encode_chunk(&bytes[s..e], Some(base.range(s, e)?), planes)?.len();
    let alone = match encoding {
        Encoding::Raw => e - s,
        _ => codec::encode_chunk(&bytes[s..e], None, planes)?.len(),
    };
    Ok(xor < alone)
}

/// Makes `to` a hard link of `from` (atomically, via a temporary name). Returns the file's size.
fn hard_link(from: &Path, to: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let src = std::fs::metadata(from)?;
    if let Ok(dst) = std::fs::metadata(to) {
        if dst.ino() == src.ino() && dst.dev() == src.dev() {
            return Ok(src.len());
        }
    }
    // A fresh name each time: link() never follows or replaces what is there.
    let tmp = fsio::temp_path(to);
    std::fs::hard_link(from, &tmp)?;
    std::fs::rename(&tmp, to).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(src.len())
}

/// The manifest's record of the base: its path relative to the new store, and its model hash.
fn base_info(base: &Store, root: &Path) -> Result<BaseStore> {
    if !matches!(base.location, crate::store::Location::Local(_)) {
        // A base in a bucket is named by its URL.
        note_chain(base);
        return Ok(BaseStore {
            path: base.location.to_string(),
            model_hash: base.manifest.model_hash(),
        });
    }
    let canon = |p: &Path| {
        std::fs::canonicalize(p).with_context(|| format!("cannot resolve {}", p.display()))
    };
    let (b, r) = (canon(&base.root)?, canon(root)?);
    if b == r {
        bail!(
            "the fine-tune cannot be written into its own base store {}; choose another -o",
            base.root.display()
        );
    }
    note_chain(base);
    Ok(BaseStore {
        path: relative_path(&r, &b).display().to_string(),
        model_hash: base.manifest.model_hash(),
    })
}

/// A chain of fine-tunes works, but each link is one more store that must stay in place.
pub(super) fn note_chain(base: &Store) {
    if base.manifest.base.is_some() {
        eprintln!(
            "note: the base store {} is itself a fine-tune of another store; both must be kept",
            base.location
        );
    }
}

/// `to` as a path relative to the folder `from` (both absolute and canonical).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c.as_os_str());
    }
    if p.as_os_str().is_empty() {
        p.push(".");
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(
            r("/a/ft/model.gmat", "/a/base/model.gmat"),
            Path::new("../../base/model.gmat")
        );
        assert_eq!(r("/a/b", "/a/b/c"), Path::new("c"));
        assert_eq!(r("/x", "/y/z"), Path::new("../y/z"));
    }
}
