//! The GMAT store: `model.gmat/` holding `metadata.json`, verbatim side files and one file per
//! tensor under `tensors/<uuid>.gmat`.

pub mod hash;
pub mod manifest;
pub mod tensor_file;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use manifest::{Manifest, TensorEntry};
pub use tensor_file::{Encoding, TensorFile, TensorHeader};

/// The manifest's file name.
pub const MANIFEST: &str = "metadata.json";
/// The folder of tensor files.
pub const TENSOR_DIR: &str = "tensors";

/// An opened store.
pub struct Store {
    pub root: PathBuf,
    pub manifest: Manifest,
}

impl Store {
    /// Opens `path` (a `model.gmat` folder, or a folder containing one).
    pub fn open(path: &Path) -> Result<Store> {
        let root = if path.join(MANIFEST).is_file() {
            path.to_path_buf()
        } else if path.join("model.gmat").join(MANIFEST).is_file() {
            path.join("model.gmat")
        } else {
            bail!(
                "{} is not a gmat store (no {MANIFEST}); create one with `gmat import --model <hf folder> -o <dir>`",
                path.display()
            );
        };
        let manifest = Manifest::load(&root.join(MANIFEST))?;
        Ok(Store { root, manifest })
    }

    /// Path of a tensor file.
    pub fn tensor_path(root: &Path, uuid: &uuid::Uuid) -> PathBuf {
        root.join(TENSOR_DIR).join(format!("{uuid}.gmat"))
    }

    /// Opens a tensor and checks that its file describes the manifest entry. The content hash
    /// is checked separately ([`TensorFile::verify`]) because it reads every byte.
    pub fn open_tensor(&self, entry: &TensorEntry) -> Result<TensorFile> {
        let f = TensorFile::open(&Self::tensor_path(&self.root, &entry.uuid))
            .with_context(|| format!("tensor {} (uuid {})", entry.name, entry.uuid))?;
        let h = &f.header;
        if h.name != entry.name
            || h.dtype != entry.dtype
            || h.shape != entry.shape
            || h.hash != entry.hash
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

    /// The model's config.json.
    pub fn config(&self) -> Result<serde_json::Value> {
        let p = self
            .side_file("config.json")
            .with_context(|| format!("{} has no config.json", self.root.display()))?;
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
    }
}
