//! `metadata.json`: the manifest of a GMAT store.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::hash;
use super::tensor_file::Encoding;
use crate::source::Dtype;

/// The manifest format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Where the store came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// `safetensors`.
    pub format: String,
    /// The model path given to import.
    pub path: String,
    /// Weight files read, in order.
    pub files: Vec<String>,
}

/// One stored tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    /// Name in the source model (HF name).
    pub name: String,
    pub uuid: Uuid,
    pub dtype: Dtype,
    /// Shape as the source gives it (outermost first).
    pub shape: Vec<u64>,
    pub encoding: Encoding,
    /// Decoded size in bytes.
    pub raw_bytes: u64,
    /// Size of the tensor file on disk.
    pub stored_bytes: u64,
    /// Content hash of the decoded bytes.
    pub hash: String,
}

/// The whole manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `gmat`.
    pub format: String,
    pub format_version: u32,
    /// The gmat version that wrote the store.
    pub gmat_version: String,
    pub source: SourceInfo,
    /// Model summary from config.json (the import config's `metadata`).
    pub model: serde_json::Map<String, serde_json::Value>,
    /// Files copied verbatim from the source folder (config.json, tokenizer files).
    pub side_files: Vec<String>,
    /// Tensors in source order.
    pub tensors: Vec<TensorEntry>,
}

impl Manifest {
    /// Reads and validates `metadata.json`.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid gmat manifest", path.display()))?;
        m.validate()
            .with_context(|| format!("{} is not a valid gmat manifest", path.display()))?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        if self.format != "gmat" {
            bail!("format is {:?}, expected \"gmat\"", self.format);
        }
        if self.format_version != FORMAT_VERSION {
            bail!(
                "format_version {} is not supported (this gmat reads {FORMAT_VERSION})",
                self.format_version
            );
        }
        let mut uuids = HashSet::new();
        let mut names = HashSet::new();
        for t in &self.tensors {
            if !uuids.insert(t.uuid) {
                bail!("uuid {} is used by more than one tensor", t.uuid);
            }
            if !names.insert(t.name.as_str()) {
                bail!("tensor {} is listed twice", t.name);
            }
            hash::validate(&t.hash).with_context(|| format!("tensor {}", t.name))?;
        }
        for f in &self.side_files {
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                bail!("side file {f:?} must be a plain file name");
            }
        }
        Ok(())
    }

    /// The tensor with this source name.
    pub fn by_name(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Content hash of the whole model: BLAKE3 over every tensor's name and content hash, in
    /// order. Identical weights give identical model hashes whatever the storage encoding.
    pub fn model_hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        for t in &self.tensors {
            h.update(t.name.as_bytes());
            h.update(&[0]);
            h.update(t.hash.as_bytes());
            h.update(&[0]);
        }
        format!("{}{}", hash::PREFIX, h.finalize().to_hex())
    }
}
