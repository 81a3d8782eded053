//! `gemma2` and `gemma3`: Gemma2Model and Gemma3Model of llama.cpp `conversion/gemma.py`
//! (Gemma3Model also converts the text part of Gemma3ForConditionalGeneration).
//!
//! Gemma's RMSNorm multiplies by `1 + weight`, so the converter adds 1 to every `*norm.weight`
//! (in the source dtype's arithmetic: [`ValueOp::AddOne`]). Gemma 2 has no output tensor
//! (tied; a stray `lm_head.weight` is dropped), soft-capping and a sliding window; Gemma 3 trims
//! token-embedding rows past the real vocabulary and writes the local RoPE base.

use anyhow::Result;
use serde_json::{json, Value as Json};

use crate::arch::auto_config::{py, py::Py, ConfigClass, Init};

use crate::arch::kv::{keys, Kv};
use crate::arch::tensors::{SourceTensor, TensorSink};
use crate::arch::transform::ValueOp;
use crate::arch::{text_model, tokenizer, ArchSpec, Cx};

/// The converter's `Gemma2Model`.
pub struct Gemma2;

/// The converter's `Gemma3Model`.
pub struct Gemma3;

impl ArchSpec for Gemma2 {
    fn gguf_arch(&self) -> &'static str {
        "gemma2"
    }

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[&GEMMA2_CONFIG]
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Gemma2ForCausalLM"]
    }

    fn filter_tensor(&self, name: &str) -> Option<String> {
        // lm_head is not used in llama.cpp (some exports carry it anyway)
        if name == "lm_head.weight" {
            return None;
        }
        text_model::filter_tensor(name)
    }

    fn modify_tensor(&self, _cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        let mut piece = t.whole();
        if t.name.ends_with("norm.weight") {
            piece = piece.with_op(ValueOp::AddOne);
        }
        out.map(&t.name, t.shape.clone(), piece)
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        let hp = cx.hp;
        kv.arch_u32("context_length", hp.req_u32(&["max_position_embeddings"])?);
        kv.arch_u32("embedding_length", hp.req_u32(&["hidden_size"])?);
        kv.arch_u32("block_count", cx.block_count_u32()?);
        kv.arch_u32("feed_forward_length", hp.req_u32(&["intermediate_size"])?);
        let n_head = hp.req_u32(&["num_attention_heads"])?;
        kv.arch_u32("attention.head_count", n_head);
        let n_head_kv = if hp.contains("num_key_value_heads") {
            hp.req_u32(&["num_key_value_heads"])?
        } else {
            n_head
        };
        kv.arch_u32("attention.head_count_kv", n_head_kv);
        kv.arch_f32(
            "attention.layer_norm_rms_epsilon",
            hp.req_f64(&["rms_norm_eps"])?,
        );
        let head_dim = hp.req_u32(&["head_dim"])?;
        kv.arch_u32("attention.key_length", head_dim);
        kv.arch_u32("attention.value_length", head_dim);
        kv.set("general.file_type", crate::gguf::Value::U32(cx.file_type));
        kv.arch_f32(
            "attn_logit_softcapping",
            hp.req_f64(&["attn_logit_softcapping"])?,
        );
        kv.arch_f32(
            "final_logit_softcapping",
            hp.req_f64(&["final_logit_softcapping"])?,
        );
        kv.arch_u32("attention.sliding_window", hp.req_u32(&["sliding_window"])?);
        Ok(())
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        tokenizer::set_vocab_sentencepiece(cx.md, cx.hp.json(), kv)?;
        kv.set_bool(keys::ADD_PREFIX, false);
        Ok(())
    }
}

impl ArchSpec for Gemma3 {
    fn gguf_arch(&self) -> &'static str {
        "gemma3"
    }

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[&GEMMA3_TEXT_CONFIG, &GEMMA3_CONFIG]
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"]
    }

    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        let mut piece = t.whole();
        let mut shape = t.shape.clone();
        if t.name.contains("embed_tokens.weight") {
            // remove out-of-vocabulary rows (`data_torch[:n_vocab_real]`)
            let n_vocab = real_vocab_size(cx)?;
            if let Some(rows) = shape.first_mut() {
                if n_vocab < *rows {
                    piece = t.piece(t.view().narrow(0, 0, n_vocab)?);
                    *rows = n_vocab;
                }
            }
        }
        // Gemma3RMSNorm: output * (1.0 + weight)
        if t.name.ends_with("norm.weight") {
            piece = piece.with_op(ValueOp::AddOne);
        }
        out.map(&t.name, shape, piece)
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        text_model::set_gguf_parameters(cx, kv)?;
        let hp = cx.hp;
        // some default values are not specified in the hparams
        kv.arch_u32(
            "context_length",
            hp.u32_or("max_position_embeddings", 131072)?,
        );
        kv.arch_u32("attention.head_count", hp.u32_or("num_attention_heads", 8)?);
        kv.arch_f32(
            "attention.layer_norm_rms_epsilon",
            hp.f64_or("rms_norm_eps", 1e-6)?,
        );
        let head_dim = hp.u32_or("head_dim", 256)?;
        kv.arch_u32("attention.key_length", head_dim);
        kv.arch_u32("attention.value_length", head_dim);
        let theta = hp
            .full_attention_rope()
            .get("rope_theta")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(1_000_000.0);
        kv.arch_f32("rope.freq_base", theta); // for global layers
        if hp.get("attn_logit_softcapping").is_some() {
            anyhow::bail!(
                "config.json: Gemma 3 has no attn_logit_softcapping (the converter asserts so)"
            );
        }
        if let Some(c) = hp.f64(&["final_logit_softcapping"])?.filter(|c| *c != 0.0) {
            kv.arch_f32("final_logit_softcapping", c);
        }
        if hp
            .get("sliding_window_pattern")
            .and_then(serde_json::Value::as_i64)
            != Some(1)
        {
            kv.arch_u32("attention.sliding_window", hp.req_u32(&["sliding_window"])?);
        }
        kv.arch_u32(
            "attention.head_count_kv",
            hp.u32_or("num_key_value_heads", 4)?,
        );
        Ok(())
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        if cx.md.is_file("tokenizer.model") {
            tokenizer::set_vocab_sentencepiece(cx.md, cx.hp.json(), kv)?;
            kv.set_bool(keys::ADD_PREFIX, false);
            Ok(())
        } else {
            tokenizer::set_vocab_gpt2(cx.md, cx.hp.json(), kv)
        }
    }
}

/// `n_vocab_real` of `Gemma3Model.modify_tensors`: the SentencePiece vocabulary's size, else
/// tokenizer.json's vocabulary plus its added tokens.
fn real_vocab_size(cx: &Cx) -> Result<u64> {
    if cx.md.is_file("tokenizer.model") {
        let v = tokenizer::create_vocab_sentencepiece(cx.md, cx.hp.json())?;
        return Ok(v.tokens.len() as u64);
    }
    let path = cx.md.path("tokenizer.json");
    let Some(tj) = cx.md.json("tokenizer.json")? else {
        anyhow::bail!("{}", tokenizer::no_tokenizer(cx.md));
    };
    let vocab = tj
        .get("model")
        .and_then(|m| m.get("vocab"))
        .and_then(|v| v.as_object())
        .map(|v| v.len());
    let added = tj
        .get("added_tokens")
        .and_then(|v| v.as_array())
        .map(|v| v.len());
    match (vocab, added) {
        (Some(v), Some(a)) => Ok((v + a) as u64),
        _ => anyhow::bail!(
            "{}: no model.vocab object or added_tokens list",
            path.display()
        ),
    }
}

// transformers 4.57.6 configuration classes of Gemma2Model / Gemma3Model checkpoints: the
// defaults and normalisations the converter's view of config.json gets (`auto_config`).

/// `Gemma2Config` (models/gemma2/configuration_gemma2.py).
pub const GEMMA2_CONFIG: ConfigClass = ConfigClass {
    name: "Gemma2Config",
    model_type: "gemma2",
    attribute_map: &[],
    init: gemma2_config,
};

fn gemma2_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(256000)),
        ("hidden_size", json!(2304)),
        ("intermediate_size", json!(9216)),
        ("num_hidden_layers", json!(26)),
        ("num_attention_heads", json!(8)),
        ("num_key_value_heads", json!(4)),
        ("head_dim", json!(256)),
        ("hidden_activation", json!("gelu_pytorch_tanh")),
        ("max_position_embeddings", json!(8192)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("pad_token_id", json!(0)),
        ("eos_token_id", json!(1)),
        ("bos_token_id", json!(2)),
        ("tie_word_embeddings", json!(true)),
        ("rope_theta", json!(10000.0)),
        ("attention_bias", json!(false)),
        ("attention_dropout", json!(0.0)),
        ("query_pre_attn_scalar", json!(256)),
        ("sliding_window", json!(4096)),
        ("layer_types", Json::Null),
        ("final_logit_softcapping", json!(30.0)),
        ("attn_logit_softcapping", json!(50.0)),
    ]);
    c.base(&[
        ("pad_token_id", a.get("pad_token_id")),
        ("bos_token_id", a.get("bos_token_id")),
        ("eos_token_id", a.get("eos_token_id")),
        ("tie_word_embeddings", a.get("tie_word_embeddings")),
    ])?;
    c.set_args(
        &a,
        &[
            "vocab_size",
            "max_position_embeddings",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "head_dim",
            "num_key_value_heads",
            "initializer_range",
            "rms_norm_eps",
            "use_cache",
            "rope_theta",
            "attention_bias",
            "attention_dropout",
            "hidden_activation",
            "query_pre_attn_scalar",
            "sliding_window",
            "final_logit_softcapping",
            "attn_logit_softcapping",
            "layer_types",
        ],
    );
    // layer_types: sliding and full attention alternating
    if a.get("layer_types").is_null() {
        let types = alternating_layers(&a.get("num_hidden_layers"), &json!(2))?;
        c.set("layer_types", types);
    }
    c.layer_type_validation(c.attr("layer_types")?, c.attr("num_hidden_layers")?)
}

/// `["sliding_attention" if bool((i + 1) % pattern) else "full_attention" for i in
/// range(num_hidden_layers)]`.
pub(crate) fn alternating_layers(num_hidden_layers: &Json, pattern: &Json) -> Py<Json> {
    let n = py::range_len(num_hidden_layers)?;
    let mut types = Vec::with_capacity(n);
    for i in 0..n {
        let p = match py::Num::of(pattern) {
            Some(p) => p,
            None => return py::raise("TypeError: unsupported operand type(s) for %"),
        };
        let rest = match p {
            py::Num::Int(0) => return py::raise("ZeroDivisionError: integer modulo by zero"),
            py::Num::Int(q) => ((i as i128) + 1) % q != 0,
            py::Num::Float(0.0) => return py::raise("ZeroDivisionError: float modulo"),
            py::Num::Float(q) => ((i as f64) + 1.0) % q != 0.0,
        };
        types.push(if rest {
            "sliding_attention"
        } else {
            "full_attention"
        });
    }
    Ok(json!(types))
}

/// `Gemma3TextConfig` (models/gemma3/configuration_gemma3.py).
pub const GEMMA3_TEXT_CONFIG: ConfigClass = ConfigClass {
    name: "Gemma3TextConfig",
    model_type: "gemma3_text",
    attribute_map: &[],
    init: gemma3_text_config,
};

fn gemma3_text_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(262208)),
        ("hidden_size", json!(2304)),
        ("intermediate_size", json!(9216)),
        ("num_hidden_layers", json!(26)),
        ("num_attention_heads", json!(8)),
        ("num_key_value_heads", json!(4)),
        ("head_dim", json!(256)),
        ("hidden_activation", json!("gelu_pytorch_tanh")),
        ("max_position_embeddings", json!(131072)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("pad_token_id", json!(0)),
        ("eos_token_id", json!(1)),
        ("bos_token_id", json!(2)),
        ("tie_word_embeddings", json!(true)),
        ("rope_theta", json!(1_000_000.0)),
        ("attention_bias", json!(false)),
        ("attention_dropout", json!(0.0)),
        ("query_pre_attn_scalar", json!(256)),
        ("sliding_window", json!(4096)),
        ("layer_types", Json::Null),
        ("final_logit_softcapping", Json::Null),
        ("attn_logit_softcapping", Json::Null),
        ("rope_scaling", Json::Null),
        ("rope_local_base_freq", json!(10000.0)),
        ("use_bidirectional_attention", json!(false)),
    ]);
    // `kwargs.get("sliding_window_pattern", 6)` (the keyword stays an attribute too)
    let pattern = c
        .kwarg("sliding_window_pattern")
        .cloned()
        .unwrap_or(json!(6));
    c.base(&[
        ("pad_token_id", a.get("pad_token_id")),
        ("bos_token_id", a.get("bos_token_id")),
        ("eos_token_id", a.get("eos_token_id")),
        ("tie_word_embeddings", a.get("tie_word_embeddings")),
    ])?;
    c.set_args(
        &a,
        &[
            "vocab_size",
            "max_position_embeddings",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "head_dim",
            "num_key_value_heads",
            "initializer_range",
            "rms_norm_eps",
            "use_cache",
            "rope_theta",
            "attention_bias",
            "attention_dropout",
            "hidden_activation",
            "query_pre_attn_scalar",
            "sliding_window",
            "final_logit_softcapping",
            "attn_logit_softcapping",
            "layer_types",
            "use_bidirectional_attention",
        ],
    );
    // bidirectional attention: sliding_window // 2 + 1
    if py::truthy(&a.get("use_bidirectional_attention")) {
        let w = py::add(
            &py::floordiv(c.attr("sliding_window")?, &json!(2))?,
            &json!(1),
        )?;
        c.set("sliding_window", w);
    }
    c.set_args(&a, &["rope_local_base_freq", "rope_scaling"]);
    // no BC copy of rope_scaling.type to rope_type in this class
    c.rope_config_validation()?;
    c.set("_sliding_window_pattern", pattern.clone());
    if a.get("layer_types").is_null() {
        let types = alternating_layers(&a.get("num_hidden_layers"), &pattern)?;
        c.set("layer_types", types);
    }
    c.layer_type_validation(c.attr("layer_types")?, c.attr("num_hidden_layers")?)
}

/// `Gemma3Config` (models/gemma3/configuration_gemma3.py): Gemma 3 with a vision tower, its
/// text model in `text_config` (a Gemma3TextConfig with all its defaults, which the converter
/// merges over the top level) and a SiglipVisionConfig `vision_config`.
pub const GEMMA3_CONFIG: ConfigClass = ConfigClass {
    name: "Gemma3Config",
    model_type: "gemma3",
    attribute_map: &[
        ("image_token_id", "image_token_index"),
        ("boi_token_id", "boi_token_index"),
        ("eoi_token_id", "eoi_token_index"),
    ],
    init: gemma3_config,
};

fn gemma3_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("text_config", Json::Null),
        ("vision_config", Json::Null),
        ("mm_tokens_per_image", json!(256)),
        ("boi_token_index", json!(255_999)),
        ("eoi_token_index", json!(256_000)),
        ("image_token_index", json!(262_144)),
        ("initializer_range", json!(0.02)),
    ]);
    let text = c.sub_config(&GEMMA3_TEXT_CONFIG, a.get("text_config"))?;
    let vision = c.sub_config(&SIGLIP_VISION_CONFIG, a.get("vision_config"))?;
    c.set("text_config", text);
    c.set("vision_config", vision);
    c.set_args(
        &a,
        &[
            "mm_tokens_per_image",
            "boi_token_index",
            "eoi_token_index",
            "image_token_index",
            "initializer_range",
        ],
    );
    c.base(&[])
}

/// `SiglipVisionConfig` (models/siglip/configuration_siglip.py): Gemma 3's vision tower.
pub const SIGLIP_VISION_CONFIG: ConfigClass = ConfigClass {
    name: "SiglipVisionConfig",
    model_type: "siglip_vision_model",
    attribute_map: &[],
    init: siglip_vision_config,
};

fn siglip_vision_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("hidden_size", json!(768)),
        ("intermediate_size", json!(3072)),
        ("num_hidden_layers", json!(12)),
        ("num_attention_heads", json!(12)),
        ("num_channels", json!(3)),
        ("image_size", json!(224)),
        ("patch_size", json!(16)),
        ("hidden_act", json!("gelu_pytorch_tanh")),
        ("layer_norm_eps", json!(1e-6)),
        ("attention_dropout", json!(0.0)),
    ]);
    c.base(&[])?;
    c.set_args(
        &a,
        &[
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_channels",
            "patch_size",
            "image_size",
            "attention_dropout",
            "layer_norm_eps",
            "hidden_act",
        ],
    );
    Ok(())
}
