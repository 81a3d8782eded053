//! PEFT LoRA adapter folders (`adapter_config.json` + `adapter_model.safetensors`), as
//! `save_pretrained` writes them and llama.cpp's `convert_lora_to_gguf.py` reads them.
//!
//! A LoRA adapter holds, for each adapted linear layer of the base model, two matrices:
//! `lora_A` (rank × in) and `lora_B` (out × rank); the layer's weight becomes
//! `W + scaling · B @ A` with `scaling = lora_alpha / r` (`lora_alpha / sqrt(r)` with rsLoRA).
//! This module reads and validates the folder and pairs the matrices by the base tensor they
//! adapt; what to do with them (a LoRA GGUF, a merge) is the caller's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use super::safetensors::{SafetensorsFile, SafetensorsTensor};
use super::Dtype;

/// The adapter's config file, which marks a folder as a PEFT adapter.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights (`adapter_model.bin`, a pickle, is not read).
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Whether `dir` is a PEFT adapter folder.
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// One adapted base tensor: its `lora_A` and `lora_B` weights.
#[derive(Clone, Debug)]
pub struct LoraPair {
    /// The base model's tensor name (`model.layers.0.self_attn.q_proj.weight`), as
    /// `get_base_tensor_name` of the converter derives it.
    pub base_name: String,
    /// `lora_A`: rank × in.
    pub a: SafetensorsTensor,
    /// `lora_B`: out × rank.
    pub b: SafetensorsTensor,
}

impl LoraPair {
    /// The rank (rows of A).
    pub fn rank(&self) -> u64 {
        self.a.shape[0]
    }

    /// The shape of the adapted weight, out × in.
    pub fn shape(&self) -> [u64; 2] {
        [self.b.shape[0], self.a.shape[1]]
    }
}

/// An opened adapter folder.
pub struct PeftAdapter {
    pub dir: PathBuf,
    /// adapter_config.json.
    pub config: Json,
    /// `lora_alpha`.
    pub alpha: f64,
    /// `r`.
    pub r: u64,
    /// `use_rslora`: scaling is alpha / sqrt(r) instead of alpha / r.
    pub use_rslora: bool,
    pub weights: SafetensorsFile,
    /// Adapted tensors in the converter's order: by the first of their two weights' names in
    /// the safetensors file's (sorted) order.
    pub pairs: Vec<LoraPair>,
}

impl PeftAdapter {
    /// Opens and validates `dir`: a LoRA config (not DoRA, not another PEFT method), a
    /// safetensors file whose every tensor is a `lora_A`/`lora_B` weight of matching pairs.
    pub fn open(dir: &Path) -> Result<PeftAdapter> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = crate::fsio::read_small_text(&cfg_path)?;
        let config: Json = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
        let what = cfg_path.display();
        let peft_type = config.get("peft_type").and_then(Json::as_str);
        if let Some(t) = peft_type {
            if t != "LORA" {
                bail!("{what}: peft_type is {t:?}; only LoRA adapters (\"LORA\") are supported");
            }
        }
        let alpha = config
            .get("lora_alpha")
            .and_then(Json::as_f64)
            .with_context(|| format!("{what}: no numeric \"lora_alpha\""))?;
        let r = config
            .get("r")
            .and_then(Json::as_u64)
            .with_context(|| format!("{what}: no integer \"r\" (the rank)"))?;
        let flag = |k: &str| config.get(k).and_then(Json::as_bool).unwrap_or(false);
        if flag("use_dora") {
            bail!("{what}: use_dora is true; DoRA adapters are not supported (llama.cpp has no DoRA either)");
        }
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        if !weights_path.is_file() {
            if dir.join("adapter_model.bin").is_file() {
                bail!(
                    "{} holds adapter_model.bin (a pickle), which gmat does not read; save the adapter with safetensors (save_pretrained(..., safe_serialization=True))",
                    dir.display()
                );
            }
            bail!("{} has no {ADAPTER_WEIGHTS}", dir.display());
        }
        let weights = SafetensorsFile::open(&weights_path)?;
        let pairs = pair_tensors(&weights.tensors)
            .with_context(|| format!("{}", weights_path.display()))?;
        Ok(PeftAdapter {
            dir: dir.to_path_buf(),
            alpha,
            r,
            use_rslora: flag("use_rslora"),
            config,
            weights,
            pairs,
        })
    }

    /// The values of one of the adapter's tensors, widened to f32 (exact for F32, F16, BF16).
    pub fn values(&self, t: &SafetensorsTensor) -> Vec<f32> {
        let mut out = Vec::new();
        t.dtype.extend_f32(self.weights.data(t), &mut out);
        out
    }

    /// The folder name, which the converter reads as the model name (`Metadata.load`).
    pub fn folder_name(&self) -> String {
        let abs = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        abs.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "adapter".into())
    }
}

/// `get_base_tensor_name`: the base model's name of a LoRA weight, and whether it is A or B.
/// `None` for a tensor that is neither.
fn base_name(name: &str) -> Option<(String, bool)> {
    let is_a = name.contains(".lora_A.weight");
    let is_b = name.contains(".lora_B.weight");
    if !is_a && !is_b {
        return None;
    }
    let base = name
        .replace("base_model.model.", "")
        .replace(".lora_A.weight", ".weight")
        .replace(".lora_B.weight", ".weight");
    Some((base, is_a))
}

/// Pairs the A and B weights of each adapted tensor, in the converter's order.
fn pair_tensors(tensors: &[SafetensorsTensor]) -> Result<Vec<LoraPair>> {
    let mut order: Vec<String> = Vec::new();
    let mut parts: std::collections::HashMap<
        String,
        (Option<SafetensorsTensor>, Option<SafetensorsTensor>),
    > = Default::default();
    for t in tensors {
        let Some((base, is_a)) = base_name(&t.name) else {
            if t.name.contains("lora_embedding_") {
                bail!(
                    "tensor {}: adapted token embeddings (lora_embedding_A/B) are not supported",
                    t.name
                );
            }
            if t.name.contains("embed_tokens") || t.name.contains("lm_head") {
                bail!("tensor {}: the adapter holds full embedding or output weights (new tokens added during fine-tuning, or modules_to_save), which a LoRA GGUF cannot carry", t.name);
            }
            bail!(
                "tensor {}: not a lora_A or lora_B weight (only plain LoRA layers are supported)",
                t.name
            );
        };
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            bail!(
                "tensor {} is stored as {}; LoRA weights must be F32, F16 or BF16",
                t.name,
                t.dtype.name()
            );
        }
        if t.shape.len() != 2 || t.shape.contains(&0) {
            bail!(
                "tensor {} has shape {:?}; LoRA weights are non-empty matrices",
                t.name,
                t.shape
            );
        }
        let e = parts.entry(base.clone()).or_insert_with(|| {
            order.push(base.clone());
            (None, None)
        });
        let slot = if is_a { &mut e.0 } else { &mut e.1 };
        if slot.is_some() {
            bail!(
                "tensor {}: a second {} weight for {base}",
                t.name,
                if is_a { "lora_A" } else { "lora_B" }
            );
        }
        *slot = Some(t.clone());
    }
    let mut pairs = Vec::with_capacity(order.len());
    for base in order {
        let Some((a, b)) = parts.remove(&base) else {
            continue;
        };
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => bail!("tensor {} has no lora_B partner", a.name),
            (None, Some(b)) => bail!("tensor {} has no lora_A partner", b.name),
            (None, None) => continue,
        };
        if a.shape[0] != b.shape[1] {
            bail!(
                "{} ({:?}) and {} ({:?}) do not share a rank",
                a.name,
                a.shape,
                b.name,
                b.shape
            );
        }
        pairs.push(LoraPair {
            base_name: base,
            a,
            b,
        });
    }
    if pairs.is_empty() {
        bail!("no LoRA weights in it");
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[u64]) -> SafetensorsTensor {
        SafetensorsTensor {
            name: name.into(),
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            range: 0..0,
        }
    }

    #[test]
    fn pairs_follow_the_first_weight_and_strip_peft_prefixes() {
        let p = "base_model.model.model.layers";
        let ts = [
            t(&format!("{p}.0.self_attn.k_proj.lora_A.weight"), &[2, 8]),
            t(&format!("{p}.0.self_attn.k_proj.lora_B.weight"), &[4, 2]),
            t(&format!("{p}.0.self_attn.q_proj.lora_A.weight"), &[2, 8]),
            t(&format!("{p}.0.self_attn.q_proj.lora_B.weight"), &[8, 2]),
        ];
        let pairs = pair_tensors(&ts).unwrap();
        let names: Vec<&str> = pairs.iter().map(|p| p.base_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.layers.0.self_attn.k_proj.weight",
                "model.layers.0.self_attn.q_proj.weight"
            ]
        );
        assert_eq!(pairs[0].shape(), [4, 8]);
        assert_eq!(pairs[0].rank(), 2);
    }

    #[test]
    fn unpaired_mismatched_and_foreign_tensors_are_refused() {
        let a = t("base_model.model.x.lora_A.weight", &[2, 8]);
        let e = pair_tensors(std::slice::from_ref(&a))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no lora_B partner"), "{e}");
        let b = t("base_model.model.x.lora_B.weight", &[8, 3]);
        let e = pair_tensors(&[a.clone(), b]).unwrap_err().to_string();
        assert!(e.contains("do not share a rank"), "{e}");
        let e = pair_tensors(&[t("base_model.model.lm_head.weight", &[8, 8])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("full embedding or output weights"), "{e}");
        let e = pair_tensors(&[t("base_model.model.x.lora_embedding_A", &[2, 8])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lora_embedding"), "{e}");
    }
}
