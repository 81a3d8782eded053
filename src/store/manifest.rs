//! `metadata.json`: the manifest of a GMAT store.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::hash;
use super::tensor_file::{BaseTensor, Encoding};
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
    /// Source tensors the import config left out (`include: false`): `gmat verify` then knows
    /// which of the source's tensors the store lacks on purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
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
    /// Size of the tensor file on disk (0 for `base_ref`: no file of its own).
    pub stored_bytes: u64,
    /// Content hash of the decoded bytes.
    pub hash: String,
    /// The base store's tensor this one depends on or shares: the base of an `xor_zstd` delta,
    /// the content of a `base_ref`, or, with `raw`/`zstd`, the base file this file is a hard
    /// link of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseTensor>,
}

/// How a tensor's bytes are held, relative to a base store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// A file of this store alone.
    Own,
    /// A hard link to the base store's file (shared on disk).
    Linked,
    /// No file: read from the base store.
    Referenced,
    /// A file holding the XOR with the base store's tensor.
    Delta,
}

impl TensorEntry {
    fn validate(&self) -> Result<()> {
        hash::validate(&self.hash)?;
        if self.dtype.bytes_for(&self.shape) != Some(self.raw_bytes) {
            bail!(
                "raw_bytes {} does not match shape {:?} of {}",
                self.raw_bytes,
                self.shape,
                self.dtype
            );
        }
        match (self.encoding, &self.base) {
            (Encoding::XorZstd | Encoding::BaseRef, None) => {
                bail!("encoding {} needs a base tensor", self.encoding)
            }
            (Encoding::XorZstd, Some(b)) => hash::validate(&b.hash).context("base hash")?,
            (_, Some(b)) if b.hash != self.hash => bail!(
                "encoding {} shares base tensor {} but the hashes differ",
                self.encoding,
                b.uuid
            ),
            (Encoding::BaseRef, Some(_)) if self.stored_bytes != 0 => {
                bail!("a base_ref tensor stores no bytes")
            }
            _ => {}
        }
        Ok(())
    }

    /// How the tensor is held.
    pub fn holding(&self) -> Holding {
        match (self.encoding, &self.base) {
            (Encoding::BaseRef, _) => Holding::Referenced,
            (Encoding::XorZstd, _) => Holding::Delta,
            (_, Some(_)) => Holding::Linked,
            (_, None) => Holding::Own,
        }
    }

    /// Whether this tensor needs the base store to be decoded.
    pub fn needs_base(&self) -> bool {
        matches!(self.holding(), Holding::Referenced | Holding::Delta)
    }
}

/// The store a fine-tune was imported against (`gmat import --base`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseStore {
    /// Path of the base store, relative to this store's folder (or absolute).
    pub path: String,
    /// The base's model hash at import time ([`Manifest::model_hash`]).
    pub model_hash: String,
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
    /// The base store of a fine-tune imported with `--base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseStore>,
}

impl Manifest {
    /// Reads and validates `metadata.json`.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = crate::fsio::read_small_text(path)?;
        Manifest::parse(&text)
            .with_context(|| format!("{} is not a valid gmat manifest", path.display()))
    }

    /// Parses and validates the text of a `metadata.json`.
    pub fn parse(text: &str) -> Result<Manifest> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        if !v.is_object() {
            bail!("the manifest is not a JSON object");
        }
        let m: Manifest = serde_json::from_value(v)?;
        m.validate()?;
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
            t.validate().with_context(|| format!("tensor {}", t.name))?;
            if t.needs_base() && self.base.is_none() {
                bail!(
                    "tensor {} is stored as {} but the manifest names no base store",
                    t.name,
                    t.encoding
                );
            }
        }
        if let Some(b) = &self.base {
            hash::validate(&b.model_hash).context("base model hash")?;
            if b.path.is_empty() {
                bail!("the base store path is empty");
            }
        }
        for f in &self.side_files {
            // a file of the store, or of one sentence-transformers module folder
            let parts: Vec<&str> = f.split('/').collect();
            if parts.len() > 2
                || !parts
                    .iter()
                    .all(|p| crate::source::hf_folder::is_plain_name(p))
            {
                bail!("side file {f:?} must be a plain file name (or module/name)");
            }
        }
        Ok(())
    }

    /// Total decoded bytes of every tensor.
    pub fn raw_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.raw_bytes).sum()
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
