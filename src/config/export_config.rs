//! `export_config.json`: the output format, the type of every tensor, and GGUF names.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::json_strict::{object, objects};

fn quantization_section<'de, D: Deserializer<'de>>(d: D) -> Result<Quantization, D::Error> {
    object(d, "quantization")
}

fn tensor_map_rows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ExportMapEntry>, D::Error> {
    objects(d, "tensor_map")
}

fn mmproj_section<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MmprojConfig>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    object(v, "mmproj")
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn gguf() -> String {
    "gguf".into()
}

/// `quantization` section.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// A llama.cpp file type (`Q8_0`, `BF16`, ...) used for every tensor without an override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_type: Option<String>,
    /// Several file types written in one pass, one GGUF each (instead of `default_type`):
    /// the source is decoded once and bytes the profiles share are computed once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Importance matrix file (llama-imatrix output, GGUF or legacy .dat); `--imatrix`
    /// overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imatrix: Option<String>,
    /// Use the imatrix only for tensors whose name contains one of these (llama-quantize
    /// `--include-weights`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_weights: Vec<String>,
    /// Do not use the imatrix for tensors whose name contains one of these (`--exclude-weights`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_weights: Vec<String>,
    /// Per-tensor ggml types. Keys: a tensor UUID, a GGUF tensor name or a source (HF) name,
    /// or `re:REGEX` matched against GGUF names (the first such key in file order wins).
    #[serde(default)]
    pub per_tensor: IndexMap<String, String>,
    /// A budget instead of a file type: every quantizable tensor's type is chosen by measured
    /// error so that the file fits (`--target-size` / `--target-bpw` override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetConfig>,
}

/// `quantization.target`: the budget of a targeted export.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The largest file: bytes, or a size such as "3.2GB" (decimal) or "3GiB" (binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<serde_json::Value>,
    /// Bits per weight of the tensor data (what llama.cpp prints as BPW), e.g. 4.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpw: Option<f64>,
    /// The types to choose from (default: Q2_K..Q8_0 and the legacy fallbacks, plus the IQ
    /// types with an importance matrix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

/// One `tensor_map` row: which stored tensor becomes which GGUF tensor.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportMapEntry {
    /// Stored tensor: UUID or source (HF) name.
    pub source: String,
    /// GGUF tensor name.
    pub target: String,
}

/// `mmproj` section: the vision projector of a vision-language model.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MmprojConfig {
    /// Whether export writes the projector file (default true).
    #[serde(default = "yes")]
    pub write: bool,
    /// Its file type: F16 (default), BF16, F32 or Q8_0.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub default_type: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for MmprojConfig {
    fn default() -> Self {
        MmprojConfig {
            write: true,
            default_type: None,
        }
    }
}

/// The whole export config.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    #[serde(default = "gguf")]
    pub target_format: String,
    #[serde(default, deserialize_with = "quantization_section")]
    pub quantization: Quantization,
    #[serde(default, deserialize_with = "tensor_map_rows")]
    pub tensor_map: Vec<ExportMapEntry>,
    /// Maximum bytes of tensor data per output file (a number, or a string such as "2G" or
    /// "500M" in decimal units, as llama-gguf-split takes them); `null` for one file.
    #[serde(default)]
    pub shard_size: Option<serde_json::Value>,
    /// Maximum tensors per output file; `null` for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_max_tensors: Option<usize>,
    /// Overrides of special token ids: `{"bos": 1, "eos": 2, ...}` → `tokenizer.ggml.<k>_token_id`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub special_token_keys: BTreeMap<String, u32>,
    /// The original GMAT's lossy block encoding; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_format: Option<serde_json::Value>,
    /// The vision projector (vision-language models only).
    #[serde(
        default,
        deserialize_with = "mmproj_section",
        skip_serializing_if = "Option::is_none"
    )]
    pub mmproj: Option<MmprojConfig>,
    /// `general.*` keys as the converter's `--metadata` file gives them (`general.name`,
    /// `general.license`, `general.base_models`, ...); `--metadata` adds to and replaces them.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// llama-quantize's `--override-kv` entries, `KEY=TYPE:VALUE`; `--override-kv` adds to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub override_kv: Vec<String>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            target_format: gguf(),
            quantization: Quantization::default(),
            tensor_map: Vec::new(),
            shard_size: None,
            shard_max_tensors: None,
            special_token_keys: BTreeMap::new(),
            block_format: None,
            mmproj: None,
            metadata: serde_json::Map::new(),
            override_kv: Vec::new(),
        }
    }
}

impl super::json_strict::ConfigFile for ExportConfig {
    const KIND: super::legacy::ConfigKind = super::legacy::ConfigKind::Export;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_allowed_ones() {
        let e = serde_json::from_value::<ExportConfig>(serde_json::json!({"quantisation": {}}))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("quantisation") && e.contains("quantization"),
            "{e}"
        );
        let e = serde_json::from_value::<ExportConfig>(
            serde_json::json!({"quantization": {"default": "Q8_0"}}),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("default_type"), "{e}");
    }
}
