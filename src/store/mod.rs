//! The GMAT store: `model.gmat/` holding `metadata.json`, verbatim side files and one file per
//! tensor under `tensors/<uuid>.gmat`.

pub mod buffer_pool;
pub mod codec;
pub mod commit;
pub use crate::content_hash as hash;
pub mod location;
pub mod manifest;
pub mod reader;
pub mod s3;
pub mod tensor_file;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

pub use location::Location;
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

/// The name of a tensor's file in the store: `tensors/<uuid>.gmat`.
pub fn tensor_name(uuid: &uuid::Uuid) -> String {
    format!("{TENSOR_DIR}/{uuid}.gmat")
}

/// How many stores a chain of `--base` references may cross (guards against cycles).
const MAX_BASE_DEPTH: usize = 8;

/// An opened store.
pub struct Store {
    /// The store's folder. For a store in a bucket: a local folder holding copies of its side
    /// files (config.json, tokenizer files), which the exporters read as files.
    pub root: PathBuf,
    /// Where the store is (its folder, or its bucket prefix): what messages name.
    pub location: Location,
    pub manifest: Manifest,
    /// The base store, opened on first use.
    base: OnceLock<Box<Store>>,
    depth: usize,
    /// The resolved locations of the fine-tunes that led here, and this store's own (last): a
    /// base that is one of them is a cycle.
    chain: Vec<String>,
    /// A shared lock on the store while it is open: an import cannot rewrite it underneath.
    _lock: Option<crate::fsio::Lock>,
    /// The side files' folder of a store in a bucket, removed when the store is dropped.
    _side_files: Option<tempfile::TempDir>,
}

impl Store {
    /// Opens `path`: a `model.gmat` folder, or a folder containing one; or the same in a
    /// bucket (`s3://bucket/prefix`).
    pub fn open(path: &Path) -> Result<Store> {
        match Location::parse(path)? {
            Location::Local(_) => Self::open_local(path),
            Location::S3(loc) => Self::open_s3(&loc),
        }
    }

    fn open_local(path: &Path) -> Result<Store> {
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
            _side_files: None,
            chain: vec![std::fs::canonicalize(&root)
                .unwrap_or_else(|_| root.clone())
                .display()
                .to_string()],
            location: Location::Local(root.clone()),
            root,
            manifest,
            base: OnceLock::new(),
            depth: 0,
        })
    }

    /// Opens a store in a bucket: its manifest, and copies of its side files in a temporary
    /// folder. A store whose import is running (its lock is live), or was interrupted (no
    /// manifest), is refused with what to do.
    fn open_s3(loc: &location::S3Location) -> Result<Store> {
        let bucket = s3::bucket(&loc.bucket)?;
        let candidates = [loc.clone(), loc.join("model.gmat")?];
        for cand in &candidates {
            let url = Location::S3(cand.clone()).to_string();
            let lock = s3::lock::find(&bucket, &cand.key)?;
            let Some(text) = bucket.get(&cand.object(MANIFEST))? else {
                if let Some(f) = lock {
                    if f.live {
                        bail!("{url} is being written by another gmat import ({}); wait for it to finish", f.who());
                    }
                    bail!(
                        "{url} holds an unfinished import (interrupted: {}); run the same `gmat import` again to resume it, or `gmat remove {url}` to delete it",
                        f.who()
                    );
                }
                continue;
            };
            if let Some(f) = lock.filter(|f| f.live) {
                bail!(
                    "{url} is being written by another gmat import ({}); wait for it to finish",
                    f.who()
                );
            }
            let text = String::from_utf8(text.to_vec())
                .with_context(|| format!("{url}/{MANIFEST} is not UTF-8 text"))?;
            let manifest = Manifest::parse(&text)
                .with_context(|| format!("{url}/{MANIFEST} is not a valid gmat manifest"))?;
            let dir = tempfile::Builder::new()
                .prefix("gmat-s3-")
                .tempdir()
                .context("cannot create a temporary folder for the store's side files")?;
            for f in &manifest.side_files {
                let Some(bytes) = bucket.get(&cand.object(f))? else {
                    continue;
                };
                let dst = dir.path().join(f);
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                std::fs::write(&dst, &bytes)
                    .with_context(|| format!("cannot write {}", dst.display()))?;
            }
            return Ok(Store {
                root: dir.path().to_path_buf(),
                location: Location::S3(cand.clone()),
                manifest,
                base: OnceLock::new(),
                depth: 0,
                chain: vec![url],
                _lock: None,
                _side_files: Some(dir),
            });
        }
        bail!(
            "{} is not a gmat store (no {MANIFEST}); create one with `gmat import --model <hf folder> -o {}`",
            Location::S3(loc.clone()),
            Location::S3(loc.clone())
        )
    }

    /// Where the manifest says the base store is, if it names one: an `s3://` URL, or a path
    /// relative to this store.
    pub fn base_location(&self) -> Result<Option<Location>> {
        let Some(b) = self.manifest.base.as_ref() else {
            return Ok(None);
        };
        if Location::is_remote(Path::new(&b.path)) {
            return Location::parse(Path::new(&b.path)).map(Some);
        }
        Ok(Some(match &self.location {
            Location::Local(root) => Location::Local(root.join(&b.path)),
            Location::S3(s) => {
                Location::S3(s.join(&b.path).with_context(|| {
                    format!("the base store path {} of {}", b.path, self.location)
                })?)
            }
        }))
    }

    /// Where the base store is, as a path to open (`s3://` URLs included).
    pub fn base_path(&self) -> Option<PathBuf> {
        match self.base_location() {
            Ok(Some(Location::Local(p))) => Some(p),
            Ok(Some(l)) => Some(PathBuf::from(l.to_string())),
            _ => None,
        }
    }

    /// The base store this fine-tune depends on (opened once, then cached).
    pub fn base(&self) -> Result<&Store> {
        if let Some(b) = self.base.get() {
            return Ok(b);
        }
        let (Some(info), Some(loc)) = (&self.manifest.base, self.base_location()?) else {
            bail!("{} has no base store", self.location);
        };
        let fail = |why: String| {
            anyhow::anyhow!(
                "{} is a fine-tune stored against the base store {} (model hash {}), {why}; \
                 restore that base, or re-import the fine-tune without --base",
                self.location,
                loc,
                info.model_hash
            )
        };
        let target = match &loc {
            Location::Local(p) => std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
            l => l.to_string(),
        };
        if let Some(at) = self.chain.iter().position(|p| *p == target) {
            let mut cycle: Vec<String> = self.chain[at..].to_vec();
            cycle.push(target);
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
        let path = match &loc {
            Location::Local(p) => p.clone(),
            l => PathBuf::from(l.to_string()),
        };
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
                base.location,
                self.location,
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
        root.join(tensor_name(uuid))
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
        let f = match &self.location {
            Location::Local(_) => TensorFile::open(&Self::tensor_path(&self.root, &entry.uuid)),
            Location::S3(loc) => s3::object(loc, &tensor_name(&entry.uuid)).and_then(|(b, key)| {
                TensorFile::open_remote(s3::fetch::RemoteBytes::new(b, key, entry.stored_bytes))
            }),
        }
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
                self.location
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
            .with_context(|| format!("{} has no config.json", self.location))?;
        let text = crate::fsio::read_small_text(&p)?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
    }
}
