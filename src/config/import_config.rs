//! `import_config.json`: which source tensors to import and the UUID each gets.

use std::collections::HashSet;

use anyhow::{bail, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Namespace of gmat's default tensor UUIDs (UUIDv5 of the source tensor name), so a default
/// import and `--generate-config` agree and re-imports keep their handles.
pub const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_2c4e_8d7b_4f0a_9e35_b1c2_d3e4_f5a6);

/// The default UUID of a source tensor.
pub fn default_uuid(source_name: &str) -> Uuid {
    Uuid::new_v5(&UUID_NAMESPACE, source_name.as_bytes())
}

/// One `tensor_map` row.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportMapEntry {
    /// Source (HF) tensor name.
    pub source: String,
    /// The UUID the tensor is stored under.
    pub target: String,
    /// Whether to import the tensor.
    #[serde(default = "yes")]
    pub include: bool,
}

fn tensor_map_rows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ImportMapEntry>, D::Error> {
    super::json_strict::objects(d, "tensor_map")
}

fn yes() -> bool {
    true
}

fn safetensors() -> String {
    "safetensors".into()
}

/// The whole import config.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// The source's format: `safetensors` (a HF model) or `gguf` (a GGUF file).
    #[serde(default = "safetensors")]
    pub source_format: String,
    #[serde(default, deserialize_with = "tensor_map_rows")]
    pub tensor_map: Vec<ImportMapEntry>,
    /// Model summary from config.json; recorded in the store's manifest.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The original GMAT's lossy block encoding; accepted and ignored (the store is lossless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_format: Option<serde_json::Value>,
}

/// The model summary recorded as the config's `metadata`: the config.json values people look
/// for first.
pub fn model_summary(config: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    const KEYS: &[(&str, &[&str])] = &[
        ("model_type", &["model_type"]),
        ("vocab_size", &["vocab_size"]),
        ("hidden_size", &["hidden_size", "n_embd", "dim"]),
        (
            "num_layers",
            &["num_hidden_layers", "n_layers", "n_layer", "num_layers"],
        ),
        (
            "num_attention_heads",
            &["num_attention_heads", "n_head", "n_heads"],
        ),
        (
            "num_key_value_heads",
            &["num_key_value_heads", "n_kv_heads"],
        ),
        ("head_dim", &["head_dim"]),
        ("intermediate_size", &["intermediate_size", "n_inner"]),
        (
            "context_length",
            &["max_position_embeddings", "n_ctx", "n_positions"],
        ),
        ("rope_theta", &["rope_theta"]),
        ("rope_scaling", &["rope_scaling"]),
        ("norm_eps", &["rms_norm_eps", "layer_norm_eps", "norm_eps"]),
        ("tie_word_embeddings", &["tie_word_embeddings"]),
        ("num_experts", &["num_local_experts", "num_experts"]),
        ("num_experts_per_token", &["num_experts_per_tok"]),
        ("torch_dtype", &["torch_dtype", "dtype"]),
    ];
    let mut m = serde_json::Map::new();
    if let Some(a) = config.get("architectures").and_then(|a| a.get(0)) {
        m.insert("architecture".into(), a.clone());
    }
    for (out, keys) in KEYS {
        if let Some(v) = keys
            .iter()
            .find_map(|k| config.get(*k).filter(|v| !v.is_null()))
        {
            m.insert((*out).into(), v.clone());
        }
    }
    m
}

/// What the config decides for one source tensor.
pub struct ImportDecision {
    pub uuid: Uuid,
    pub include: bool,
}

impl ImportConfig {
    /// Checks the config against the model's tensor names and returns a decision per tensor
    /// (in `names` order). Tensors the config does not list are imported under their default
    /// UUID.
    pub fn resolve(&self, names: &[&str]) -> Result<Vec<ImportDecision>> {
        if !matches!(self.source_format.as_str(), "safetensors" | "gguf") {
            bail!(
                "source_format {:?} is not supported (allowed: \"safetensors\", \"gguf\")",
                self.source_format
            );
        }
        let known: HashSet<&str> = names.iter().copied().collect();
        let mut sources = HashSet::new();
        let mut targets = HashSet::new();
        let mut parsed = std::collections::HashMap::new();
        for (i, e) in self.tensor_map.iter().enumerate() {
            let uuid = Uuid::parse_str(&e.target).map_err(|_| {
                anyhow::anyhow!(
                    "tensor_map[{i}].target {:?} (for {}) is not a UUID; targets must look like \
                     123e4567-e89b-12d3-a456-426614174000",
                    e.target,
                    e.source
                )
            })?;
            if !known.contains(e.source.as_str()) {
                bail!(
                    "tensor_map[{i}].source {:?} is not a tensor of this model",
                    e.source
                );
            }
            if !sources.insert(e.source.as_str()) {
                bail!("tensor_map lists source {:?} twice", e.source);
            }
            if !targets.insert(uuid) {
                bail!("tensor_map[{i}].target {uuid} is used by more than one tensor");
            }
            parsed.insert(e.source.as_str(), (uuid, e.include));
        }
        names
            .iter()
            .map(|n| {
                let (uuid, include) = parsed
                    .get(n)
                    .copied()
                    .unwrap_or_else(|| (default_uuid(n), true));
                if !parsed.contains_key(n) && targets.contains(&uuid) {
                    bail!("tensor {n}'s default UUID {uuid} is already taken in tensor_map");
                }
                Ok(ImportDecision { uuid, include })
            })
            .collect()
    }
}

impl super::json_strict::ConfigFile for ImportConfig {
    const KIND: super::legacy::ConfigKind = super::legacy::ConfigKind::Import;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> Result<ImportConfig> {
        let mut v = json;
        crate::config::json_strict::strip_comments(&mut v);
        Ok(serde_json::from_value(v)?)
    }

    #[test]
    fn path_like_targets_are_rejected() {
        let c = cfg(serde_json::json!({"tensor_map": [{"source": "a", "target": "../../etc/x"}]}))
            .unwrap();
        let e = c.resolve(&["a"]).err().unwrap().to_string();
        assert!(e.contains("../../etc/x") && e.contains("not a UUID"), "{e}");
    }

    #[test]
    fn unknown_keys_and_sources_are_errors() {
        let e = cfg(serde_json::json!({"tensor_mapp": []}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tensor_mapp") && e.contains("tensor_map"), "{e}");
        let u = default_uuid("a").to_string();
        let c = cfg(serde_json::json!({"tensor_map": [{"source": "zz", "target": u}]})).unwrap();
        assert!(c.resolve(&["a"]).err().unwrap().to_string().contains("zz"));
    }

    #[test]
    fn unlisted_tensors_get_default_uuids_and_include_is_honoured() {
        let u = Uuid::new_v4().to_string();
        let c = cfg(serde_json::json!({"_note": "x", "block_format": "q8", "tensor_map": [{"source": "b", "target": u, "include": false}]})).unwrap();
        let d = c.resolve(&["a", "b"]).unwrap();
        assert_eq!(d[0].uuid, default_uuid("a"));
        assert!(d[0].include && !d[1].include);
        assert_eq!(d[1].uuid.to_string(), u);
    }
}
