//! The GMAT store: `model.gmat/` holding `metadata.json`, verbatim side files and one file per
//! tensor under `tensors/<uuid>.gmat`.

pub mod codec;
pub mod commit;
pub use crate::content_hash as hash;
pub mod manifest;
pub mod reader;
pub mod tensor_file;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

pub use manifest::{BaseStore, Holding, Manifest, TensorEntry};
pub use reader::TensorReader;
pub use tensor_file::{BaseTensor, Encoding, TensorFile, TensorHeader};

/// The manifest's file name.
pub const MANIFEST: &str = "metadata.json";
/// The folder of tensor files.
pub const TENSOR_DIR: &str = "tensors";
/// The side file of a store imported from a GGUF: the GGUF's key/value pairs, written as a
/// GGUF file of no tensors (so every value keeps its type and order).
pub const GGUF_METADATA: &str = "gguf_metadata.gguf";
/// The manifest's `model` key holding the content hash of [`GGUF_METADATA`].
pub const GGUF_METADATA_HASH: &str = "gguf_metadata_hash";

/// How many stores a chain of `--base` references may cross (guards against cycles).
const MAX_BASE_DEPTH: usize = 8;

/// An opened store.
pub struct Store {
    pub root: PathBuf,
    pub manifest: Manifest,
    /// The base store, opened on first use.
    base: OnceLock<Box<Store>>,
    depth: usize,
    /// The resolved roots of the fine-tunes that led here, and this store's own (last): a base
    /// that is one of them is a cycle.
    chain: Vec<PathBuf>,
    /// A shared lock on the store while it is open: an import cannot rewrite it underneath.
    _lock: Option<crate::fsio::Lock>,
}

impl Store {
    /// Opens `path` (a `model.gmat` folder, or a folder containing one).
    pub fn open(path: &Path) -> Result<Store> {
        let root = if path.join(MANIFEST).is_file() {
            path.to_path_buf()
        } else if path.join("model.gmat").join(MANIFEST).is_file() {
            path.join("model.gmat")
        } else {
            // An import removes the manifest first and writes it last.
            for r in [path.to_path_buf(), path.join("model.gmat")] {
                if crate::fsio::store_being_written(&r) {
                    bail!(
                        "{} is being written by another gmat import; wait for it to finish",
                        r.display()
                    );
                }
            }
            bail!(
                "{} is not a gmat store (no {MANIFEST}); create one with `gmat import --model <hf folder> -o <dir>`",
                path.display()
            );
        };
        let lock = crate::fsio::lock_store_shared(&root)?;
        let manifest = Manifest::load(&root.join(MANIFEST))?;
        Ok(Store {
            _lock: lock,
            chain: vec![std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone())],
            root,
            manifest,
            base: OnceLock::new(),
            depth: 0,
        })
    }

    /// Where the manifest says the base store is, if it names one.
    pub fn base_path(&self) -> Option<PathBuf> {
        let b = self.manifest.base.as_ref()?;
        Some(self.root.join(&b.path))
    }

    /// The base store this fine-tune depends on (opened once, then cached).
    pub fn base(&self) -> Result<&Store> {
        if let Some(b) = self.base.get() {
            return Ok(b);
        }
        let (Some(info), Some(path)) = (&self.manifest.base, self.base_path()) else {
            bail!("{} has no base store", self.root.display());
        };
        let fail = |why: String| {
            anyhow::anyhow!(
                "{} is a fine-tune stored against the base store {} (model hash {}), {why}; \
                 restore that base, or re-import the fine-tune without --base",
                self.root.display(),
                path.display(),
                info.model_hash
            )
        };
        let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if let Some(at) = self.chain.iter().position(|p| *p == target) {
            let mut cycle: Vec<String> = self.chain[at..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            cycle.push(target.display().to_string());
            return Err(fail(format!(
                "but that leads back to a store already in the chain ({}): a store cannot be its own base",
                cycle.join(" -> ")
            )));
        }
        if self.depth + 1 > MAX_BASE_DEPTH {
            return Err(fail(format!(
                "but the chain of base stores is longer than {MAX_BASE_DEPTH} (a cycle?)"
            )));
        }
        let mut base =
            Store::open(&path).map_err(|e| fail(format!("which cannot be opened: {e:#}")))?;
        base.depth = self.depth + 1;
        let mut chain = self.chain.clone();
        chain.push(base.chain.pop().unwrap_or(target));
        base.chain = chain;
        let _ = self.base.set(Box::new(base));
        self.base.get().map(|b| &**b).context("base store")
    }

    /// The base store's entry for `link` (a tensor this store shares or is a delta of), checked
    /// to still hold the content this store was made against.
    pub fn base_entry(&self, entry: &TensorEntry) -> Result<(&Store, &TensorEntry)> {
        let link = entry
            .base
            .as_ref()
            .with_context(|| format!("tensor {} has no base tensor", entry.name))?;
        let base = self.base()?;
        let changed = |why: String| {
            anyhow::anyhow!(
                "base store {} has changed since {} was imported against it: {why}; restore the \
                 base it was made from (model hash {}), or re-import the fine-tune",
                base.root.display(),
                self.root.display(),
                self.manifest
                    .base
                    .as_ref()
                    .map(|b| b.model_hash.as_str())
                    .unwrap_or("?")
            )
        };
        let Some(b) = base.manifest.tensors.iter().find(|t| t.uuid == link.uuid) else {
            return Err(changed(format!(
                "it no longer has tensor {} (the base of {})",
                link.uuid, entry.name
            )));
        };
        if b.hash != link.hash {
            return Err(changed(format!(
                "its tensor {} now has content hash {}, not {}",
                b.name, b.hash, link.hash
            )));
        }
        Ok((base, b))
    }

    /// A reader of the decoded bytes of `entry`, whatever its encoding; deltas and references
    /// are resolved through the base store. The content hash is checked by
    /// [`TensorReader::finish`].
    pub fn reader(&self, entry: &TensorEntry) -> Result<TensorReader<'_>> {
        TensorReader::open(self, entry, true)
    }

    /// Path of a tensor file.
    pub fn tensor_path(root: &Path, uuid: &uuid::Uuid) -> PathBuf {
        root.join(TENSOR_DIR).join(format!("{uuid}.gmat"))
    }

    /// Opens a tensor's own file and checks that it describes the manifest entry. The content
    /// hash is checked separately ([`TensorFile::verify`], [`TensorReader::finish`]) because it
    /// reads every byte. `base_ref` tensors have no file: read them with [`Store::reader`].
    pub fn open_tensor(&self, entry: &TensorEntry) -> Result<TensorFile> {
        if entry.encoding == Encoding::BaseRef {
            bail!(
                "tensor {} (uuid {}) has no file of its own: it is read from the base store",
                entry.name,
                entry.uuid
            );
        }
        let f = TensorFile::open(&Self::tensor_path(&self.root, &entry.uuid))
            .with_context(|| format!("tensor {} (uuid {})", entry.name, entry.uuid))?;
        let h = &f.header;
        let own_base = match entry.holding() {
            Holding::Delta => entry.base.as_ref(),
            _ => None,
        };
        if h.name != entry.name
            || h.dtype != entry.dtype
            || h.shape != entry.shape
            || h.hash != entry.hash
            || h.encoding != entry.encoding
            || h.base.as_ref() != own_base
        {
            bail!(
                "tensor file for {} (uuid {}) describes {} {} {:?}, not what {MANIFEST} records",
                entry.name,
                entry.uuid,
                h.name,
                h.dtype,
                h.shape
            );
        }
        Ok(f)
    }

    /// Path of a side file (config.json, tokenizer files) if the store has it.
    pub fn side_file(&self, name: &str) -> Option<PathBuf> {
        self.manifest
            .side_files
            .iter()
            .any(|f| f == name)
            .then(|| self.root.join(name))
            .filter(|p| p.is_file())
    }

    /// Whether the store was imported from a GGUF file.
    pub fn is_gguf(&self) -> bool {
        self.manifest.source.format == "gguf"
    }

    /// The key/value pairs of the GGUF the store was imported from, checked against the
    /// content hash the manifest recorded for them.
    pub fn gguf_metadata(&self) -> Result<Vec<(String, crate::gguf::Value)>> {
        let p = self.side_file(GGUF_METADATA).with_context(|| {
            format!(
                "{} was imported from a GGUF but has no {GGUF_METADATA}; import the GGUF again",
                self.root.display()
            )
        })?;
        let bytes = crate::fsio::read_limited(&p, crate::fsio::SMALL_FILE_LIMIT)?;
        let want = self
            .manifest
            .model
            .get(GGUF_METADATA_HASH)
            .and_then(|v| v.as_str());
        let have = crate::content_hash::format(blake3::hash(&bytes));
        if want != Some(have.as_str()) {
            bail!(
                "{} does not match the content hash {MANIFEST} records for it ({}); the store \
                 is damaged: import the GGUF again",
                p.display(),
                want.unwrap_or("none")
            );
        }
        let (_, kv, tensors, ..) = crate::gguf::reader::parse(&bytes)
            .with_context(|| format!("{} is not a valid GGUF header", p.display()))?;
        if !tensors.is_empty() {
            bail!("{} lists tensors; it holds metadata only", p.display());
        }
        Ok(kv)
    }

    /// The model's config.json.
    pub fn config(&self) -> Result<serde_json::Value> {
        let p = self
            .side_file("config.json")
            .with_context(|| format!("{} has no config.json", self.root.display()))?;
        let text = crate::fsio::read_small_text(&p)?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
    }
}
