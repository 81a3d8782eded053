//! `qwen2` and `qwen3`: Qwen2Model and Qwen3Model of llama.cpp `conversion/qwen.py`.
//!
//! Both are `TextModel` with a SentencePiece-or-BPE vocabulary and the sentence-transformers
//! pooling type; Qwen3 adds Q/K norms (table data only). Qwen3 rerankers (a `cls_out` head cut
//! from the output matrix) and Intern-S1 vocabularies are refused, not guessed.

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};

use crate::arch::auto_config::{or_none, py, py::Py, ConfigClass, Init};

use crate::arch::kv::Kv;
use crate::arch::tensors::{SourceTensor, TensorSink};
use crate::arch::{text_model, tokenizer, ArchSpec, Cx};

/// The converter's `Qwen2Model`.
pub struct Qwen2;

/// The converter's `Qwen3Model`.
pub struct Qwen3;

impl ArchSpec for Qwen2 {
    fn gguf_arch(&self) -> &'static str {
        "qwen2"
    }

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[&QWEN2_CONFIG]
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Qwen2ForCausalLM", "Qwen2Model"]
    }

    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        if cx.hp.hf_architecture() == Some("Qwen2Model") {
            // map to Qwen2ForCausalLM tensors
            let name = format!("model.{}", t.name);
            return out.map(&name, t.shape.clone(), t.whole());
        }
        out.map_whole(t)
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        text_model::set_gguf_parameters(cx, kv)?;
        text_model::try_set_pooling_type(cx, kv)
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        tokenizer::set_vocab_sentencepiece_or_gpt2(cx.md, cx.hp.json(), kv)
    }
}

impl ArchSpec for Qwen3 {
    fn gguf_arch(&self) -> &'static str {
        "qwen3"
    }

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[&QWEN3_CONFIG]
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Qwen3ForCausalLM", "Qwen3Model"]
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        refuse_reranker(cx)?;
        text_model::set_gguf_parameters(cx, kv)?;
        text_model::try_set_pooling_type(cx, kv)
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        refuse_interns1(cx)?;
        tokenizer::set_vocab_sentencepiece_or_gpt2(cx.md, cx.hp.json(), kv)
    }
}

/// `Qwen3Model._is_qwen3_reranker`, as far as a store can tell (the converter also reads the
/// folder name and README): such models get a classifier head gmat does not build.
fn refuse_reranker(cx: &Cx) -> Result<()> {
    let hints = [
        cx.hp.str("_name_or_path").unwrap_or(""),
        cx.hp.str("model_type").unwrap_or(""),
        cx.hp.origin_hf_arch().unwrap_or(""),
    ];
    let rerank = hints.iter().any(|h| {
        let h = h.to_lowercase();
        h.contains("qwen3-reranker") || h.contains("qwen3-vl-reranker")
    }) || cx
        .hp
        .origin_hf_arch()
        .is_some_and(|a| a.to_lowercase().contains("sequenceclassification"));
    if rerank {
        bail!("Qwen3 reranker models (a cls_out head and rank pooling) are not supported");
    }
    Ok(())
}

/// Intern-S1 checkpoints carry a Qwen3 text model with their own vocabulary reader.
pub(super) fn refuse_interns1(cx: &Cx) -> Result<()> {
    if cx.hp.origin_hf_arch() == Some("InternS1ForConditionalGeneration") {
        bail!("Intern-S1 vocabularies (_set_vocab_interns1) are not supported");
    }
    Ok(())
}

// transformers 4.57.6 configuration classes of Qwen2Model / Qwen3Model checkpoints: the
// defaults and normalisations the converter's view of config.json gets (`auto_config`).

/// `Qwen2Config` (models/qwen2/configuration_qwen2.py).
pub const QWEN2_CONFIG: ConfigClass = ConfigClass {
    name: "Qwen2Config",
    model_type: "qwen2",
    attribute_map: &[],
    init: qwen2_config,
};

/// `Qwen3Config` (models/qwen3/configuration_qwen3.py).
pub const QWEN3_CONFIG: ConfigClass = ConfigClass {
    name: "Qwen3Config",
    model_type: "qwen3",
    attribute_map: &[],
    init: qwen3_config,
};

fn qwen2_config(c: &mut Init) -> Py<()> {
    qwen_dense_config(c, false)
}

fn qwen3_config(c: &mut Init) -> Py<()> {
    qwen_dense_config(c, true)
}

/// Qwen2Config and Qwen3Config: the same code, Qwen3 adding `head_dim` (default 128, not
/// derived) and `attention_bias`.
fn qwen_dense_config(c: &mut Init, qwen3: bool) -> Py<()> {
    let mut params = vec![
        ("vocab_size", json!(151936)),
        ("hidden_size", json!(4096)),
        ("intermediate_size", json!(22016)),
        ("num_hidden_layers", json!(32)),
        ("num_attention_heads", json!(32)),
        ("num_key_value_heads", json!(32)),
    ];
    if qwen3 {
        params.push(("head_dim", json!(128)));
    }
    params.extend([
        ("hidden_act", json!("silu")),
        ("max_position_embeddings", json!(32768)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(10000.0)),
        ("rope_scaling", Json::Null),
    ]);
    if qwen3 {
        params.push(("attention_bias", json!(false)));
    }
    params.extend([
        ("use_sliding_window", json!(false)),
        ("sliding_window", json!(4096)),
        ("max_window_layers", json!(28)),
        ("layer_types", Json::Null),
        ("attention_dropout", json!(0.0)),
    ]);
    let a = c.args(&params);
    c.set_args(
        &a,
        &[
            "vocab_size",
            "max_position_embeddings",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "use_sliding_window",
        ],
    );
    // sliding_window: None unless use_sliding_window
    c.set(
        "sliding_window",
        if py::truthy(&a.get("use_sliding_window")) {
            a.get("sliding_window")
        } else {
            Json::Null
        },
    );
    c.set_args(&a, &["max_window_layers"]);
    c.set(
        "num_key_value_heads",
        or_none(a.get("num_key_value_heads"), a.get("num_attention_heads")),
    );
    if qwen3 {
        c.set_args(&a, &["head_dim"]);
    }
    c.set_args(
        &a,
        &[
            "hidden_act",
            "initializer_range",
            "rms_norm_eps",
            "use_cache",
            "rope_theta",
            "rope_scaling",
        ],
    );
    if qwen3 {
        c.set_args(&a, &["attention_bias"]);
    }
    c.set_args(&a, &["attention_dropout"]);
    c.rope_type_from_type()?;
    c.rope_config_validation()?;
    // layer_types: sliding from max_window_layers on when there is a sliding window
    let layer_types = match a.get("layer_types") {
        Json::Null => {
            let sliding = c.attr_or_null("sliding_window");
            let max_window = a.get("max_window_layers");
            let n = py::range_len(c.attr("num_hidden_layers")?)?;
            let mut types = Vec::with_capacity(n);
            for i in 0..n {
                let swa = !sliding.is_null()
                    && py::cmp(&json!(i), &max_window)? != std::cmp::Ordering::Less;
                types.push(if swa {
                    "sliding_attention"
                } else {
                    "full_attention"
                });
            }
            json!(types)
        }
        t => t,
    };
    c.set("layer_types", layer_types.clone());
    c.layer_type_validation(&layer_types, c.attr("num_hidden_layers")?)?;
    c.base(&[("tie_word_embeddings", a.get("tie_word_embeddings"))])
}
