//! The model metadata keys `convert_hf_to_gguf.py` writes (`TextModel.set_gguf_parameters`,
//! the per-architecture overrides, `Metadata.set_gguf_meta_model`, `size_label`), with the GGUF
//! value types gguf-py's `GGUFWriter.add_*` methods use.

use anyhow::Result;

use super::hparams::Hparams;
use super::Arch;
use crate::gguf::Value;

/// Parameter counts of the output tensors, for `general.size_label`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamCount {
    pub total: u64,
    pub shared: u64,
    pub expert: u64,
    pub expert_count: u64,
}

impl ParamCount {
    /// Adds one output tensor, as gguf-py's `get_total_parameter_count` does.
    pub fn add(
        &mut self,
        name: &str,
        shape_outer_first: &[u64],
        n_expert_tensors: &mut u64,
        expert_sum: &mut u64,
    ) {
        let size: u64 = shape_outer_first.iter().product();
        if name.contains("_exps.") && shape_outer_first.len() >= 3 {
            let count = shape_outer_first[if name.contains(".bias") {
                shape_outer_first.len() - 2
            } else {
                shape_outer_first.len() - 3
            }];
            self.expert += size / count.max(1);
            *expert_sum += count;
            *n_expert_tensors += 1;
        } else {
            self.shared += size;
        }
        self.total += size;
        self.expert_count = expert_sum.checked_div(*n_expert_tensors).unwrap_or(0);
    }

    /// gguf-py's `size_label`: "4.6M", "10M", "8x7.2B".
    pub fn size_label(&self) -> String {
        if self.expert_count > 0 {
            format!(
                "{}x{}",
                self.expert_count,
                rounded_notation(self.shared + self.expert, 2)
            )
        } else {
            rounded_notation(self.total, 2)
        }
    }
}

/// gguf-py's `model_weight_count_rounded_notation`.
fn rounded_notation(n: u64, min_digits: usize) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    // Python's round() rounds half to even; str() of the int, leading zeros stripped.
    let int_digits = format!("{}", scaled.round_ties_even() as u64);
    let int_digits = int_digits.trim_start_matches('0').len();
    let fix = min_digits.saturating_sub(int_digits);
    format!("{scaled:.fix$}{suffix}")
}

/// A human name for `general.name`, from a model folder name ("llama-tiny" → "Llama Tiny").
pub fn display_name(folder: &str) -> String {
    folder
        .split(['-', '_', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything before the tokenizer keys: general.*, the architecture's hyper-parameters,
/// file type and quantization version.
pub fn model_metadata(
    arch: &Arch,
    hp: &Hparams,
    name: &str,
    params: &ParamCount,
    file_type: u32,
) -> Result<Vec<(String, Value)>> {
    let a = arch.name;
    let mut kv: Vec<(String, Value)> = Vec::new();
    let mut put = |k: String, v: Value| kv.push((k, v));
    put("general.architecture".into(), Value::String(a.into()));
    put("general.type".into(), Value::String("model".into()));
    put("general.name".into(), Value::String(name.into()));
    if params.total > 0 {
        put(
            "general.size_label".into(),
            Value::String(params.size_label()),
        );
    }
    let block_count = hp.req_u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
    put(format!("{a}.block_count"), Value::U32(block_count as u32));
    let u32_key = |keys: &[&str]| hp.u32(keys);
    if let Some(v) = u32_key(&[
        "max_position_embeddings",
        "n_ctx",
        "n_positions",
        "max_length",
        "max_sequence_length",
        "model_max_length",
    ])? {
        put(format!("{a}.context_length"), Value::U32(v));
    }
    if let Some(v) = u32_key(&["hidden_size", "n_embd", "dim"])? {
        put(format!("{a}.embedding_length"), Value::U32(v));
    }
    if let Some(v) = u32_key(&[
        "prefix_dense_intermediate_size",
        "dense_intermediate_size",
        "intermediate_size",
        "n_inner",
        "hidden_dim",
    ])? {
        put(format!("{a}.feed_forward_length"), Value::U32(v));
    }
    if let Some(v) = u32_key(&["num_attention_heads", "n_head", "n_heads"])? {
        put(format!("{a}.attention.head_count"), Value::U32(v));
    }
    if let Some(v) = u32_key(&["num_key_value_heads", "n_kv_heads"])? {
        put(format!("{a}.attention.head_count_kv"), Value::U32(v));
    }
    if hp.bool("is_causal") == Some(false) {
        put(format!("{a}.attention.causal"), Value::Bool(false));
    }
    let rope = hp.rope_parameters();
    let rnum = |k: &str| rope.get(k).and_then(|v| v.as_f64());
    if let Some(t) = rope.get("rope_type").and_then(|v| v.as_str()) {
        let factor = rnum("factor");
        match (t, factor) {
            ("linear", Some(f)) => {
                put(
                    format!("{a}.rope.scaling.type"),
                    Value::String("linear".into()),
                );
                put(format!("{a}.rope.scaling.factor"), Value::F32(f as f32));
            }
            ("yarn", Some(f)) => {
                put(
                    format!("{a}.rope.scaling.type"),
                    Value::String("yarn".into()),
                );
                put(format!("{a}.rope.scaling.factor"), Value::F32(f as f32));
                if let Some(n) = rope
                    .get("original_max_position_embeddings")
                    .and_then(|v| v.as_u64())
                {
                    put(
                        format!("{a}.rope.scaling.original_context_length"),
                        Value::U32(n as u32),
                    );
                }
                if let Some(v) = rnum("extrapolation_factor") {
                    put(
                        format!("{a}.rope.scaling.yarn_ext_factor"),
                        Value::F32(v as f32),
                    );
                }
                if let Some(v) = rnum("attention_factor").or_else(|| rnum("attn_factor")) {
                    put(
                        format!("{a}.rope.scaling.yarn_attn_factor"),
                        Value::F32(v as f32),
                    );
                }
                if let Some(v) = rnum("beta_fast") {
                    put(
                        format!("{a}.rope.scaling.yarn_beta_fast"),
                        Value::F32(v as f32),
                    );
                }
                if let Some(v) = rnum("beta_slow") {
                    put(
                        format!("{a}.rope.scaling.yarn_beta_slow"),
                        Value::F32(v as f32),
                    );
                }
            }
            ("su" | "longrope", _) => {
                put(
                    format!("{a}.rope.scaling.type"),
                    Value::String("longrope".into()),
                );
            }
            _ => {} // llama3 (rope_freqs tensor), dynamic, or unknown: no key, as the converter
        }
    }
    if let Some(t) = rnum("rope_theta") {
        put(format!("{a}.rope.freq_base"), Value::F32(t as f32));
    }
    if let Some(e) = hp.f64(&["rms_norm_eps", "norm_eps"])? {
        put(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(e as f32),
        );
    }
    if let Some(e) = hp.f64(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])? {
        put(
            format!("{a}.attention.layer_norm_epsilon"),
            Value::F32(e as f32),
        );
    }
    if let Some(n) = u32_key(&["num_local_experts", "num_experts", "n_routed_experts"])? {
        put(format!("{a}.expert_count"), Value::U32(n));
    }
    if let Some(n) = u32_key(&[
        "num_experts_per_tok",
        "num_experts_per_token",
        "top_k_experts",
    ])? {
        put(format!("{a}.expert_used_count"), Value::U32(n));
    }
    if let Some(d) = hp.u32(&["head_dim"])? {
        put(format!("{a}.attention.key_length"), Value::U32(d));
        put(format!("{a}.attention.value_length"), Value::U32(d));
    }
    put("general.file_type".into(), Value::U32(file_type));
    if arch.llama_extras {
        put(
            format!("{a}.vocab_size"),
            Value::U32(hp.req_u64(&["vocab_size"])? as u32),
        );
        let rope_dim = match hp.u64(&["head_dim"])? {
            Some(d) => d,
            None => hp.req_u64(&["hidden_size"])? / hp.req_u64(&["num_attention_heads"])?.max(1),
        };
        put(
            format!("{a}.rope.dimension_count"),
            Value::U32(rope_dim as u32),
        );
    }
    // gguf-py's GGML_QUANT_VERSION
    put("general.quantization_version".into(), Value::U32(2));
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels_match_gguf_py() {
        let p = |total| ParamCount {
            total,
            shared: total,
            expert: 0,
            expert_count: 0,
        };
        assert_eq!(p(4_550_000).size_label(), "4.5M");
        assert_eq!(p(4_556_032).size_label(), "4.6M");
        // 9.82M rounds to 10, which has two digits already: no decimals (qwen2-tiny is "10M").
        assert_eq!(p(9_820_000).size_label(), "10M");
        assert_eq!(p(9_960_000).size_label(), "10M");
        assert_eq!(p(1_950_000).size_label(), "1.9M");
        assert_eq!(p(7_240_000_000).size_label(), "7.2B");
        assert_eq!(p(999_000).size_label(), "999K");
        let moe = ParamCount {
            total: 0,
            shared: 1_000_000,
            expert: 1_700_000,
            expert_count: 4,
        };
        assert_eq!(moe.size_label(), "4x2.7M");
    }

    #[test]
    fn display_name_title_cases_folder_names() {
        assert_eq!(display_name("llama-tiny"), "Llama Tiny");
        assert_eq!(display_name("tiny_llm"), "Tiny Llm");
    }
}
