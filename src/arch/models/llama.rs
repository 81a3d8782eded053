//! `llama`: LlamaModel of llama.cpp `conversion/llama.py` (Llama 1–3, Mistral, Mixtral).
//!
//! What it adds to `TextModel`: the Q/K row permutation (`LlamaModel.permute`, undoing HF's
//! rotary layout), Mixtral's `block_sparse_moe` expert stacks (w1, w2, w3), `vocab_size` and
//! `rope.dimension_count`, and the `rope_freqs` tensor of Llama-3 RoPE scaling.

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};

use crate::arch::auto_config::{or_none, py, py::Py, ConfigClass, Init};

use crate::arch::kv::{keys, Kv};
use crate::arch::tensors::{Data, ExpertLayout, OutTensor, SourceTensor, TensorSink};
use crate::arch::tokenizer::{self, SpecialVocab};
use crate::arch::transform::View;
use crate::arch::{text_model, ArchSpec, Cx, Hparams, TensorKind};

/// The converter's `LlamaModel`.
pub struct Llama;

/// Mixtral's experts, stacked as `layers.{bid}.feed_forward.experts.{w}.weight`.
const EXPERTS: ExpertLayout = ExpertLayout {
    expert: "model.layers.{bid}.block_sparse_moe.experts.{xid}.{w}.weight",
    merged: "layers.{bid}.feed_forward.experts.{w}.weight",
    projections: &["w1", "w2", "w3"],
};

impl ArchSpec for Llama {
    fn gguf_arch(&self) -> &'static str {
        "llama"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &[
            "LLaMAForCausalLM",
            "LlamaForCausalLM",
            "MistralForCausalLM",
            "MixtralForCausalLM",
            "LlamaModel",
        ]
    }

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[
            &LLAMA_CONFIG,
            &MISTRAL_CONFIG,
            &MINISTRAL_CONFIG,
            &MIXTRAL_CONFIG,
        ]
    }

    fn filter_tensor(&self, name: &str) -> Option<String> {
        // SmolVLM's text model
        text_model::filter_tensor(&name.replace("text_model.", ""))
    }

    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        let hp = cx.hp;
        let n_head = hp.req_u64(&["n_heads", "num_attention_heads"])?;
        let n_kv_head = hp.req_u64(&["n_kv_heads", "num_key_value_heads"])?;
        let mut t = t.clone();
        if hp.hf_architecture() == Some("LlamaModel") {
            t.name = format!("model.{}", t.name);
        }
        if t.name.contains("block_sparse_moe.experts") {
            let n = hp.req_u64(&["num_local_experts"])? as usize;
            return out.stack_expert(&EXPERTS, n, &t);
        }
        let heads = if t.name.ends_with("q_proj.weight") || t.name.ends_with("q_proj.bias") {
            Some(n_head)
        } else if t.name.ends_with("k_proj.weight") || t.name.ends_with("k_proj.bias") {
            Some(n_kv_head)
        } else {
            None
        };
        match heads {
            Some(h) => {
                let view = permute(&t.view(), h)?;
                out.map(&t.name, t.shape.clone(), t.piece(view))
            }
            None => out.map_whole(&t),
        }
    }

    fn extra_tensors(
        &self,
        cx: &Cx,
        _sources: &[SourceTensor],
        _kv: &mut Kv,
    ) -> Result<Vec<OutTensor>> {
        let Some(f) = llama3_rope_factors(cx.hp)? else {
            return Ok(Vec::new());
        };
        Ok(vec![OutTensor {
            name: cx.names.format(TensorKind::RopeFreqs, None, ".weight")?,
            kind: TensorKind::RopeFreqs,
            shape: vec![f.len() as u64],
            data: Data::Generated(f),
        }])
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        text_model::set_gguf_parameters(cx, kv)?;
        let hp = cx.hp;
        kv.arch_u32("vocab_size", hp.req_u32(&["vocab_size"])?);
        kv.arch_u32("rope.dimension_count", rope_dim(hp)?);
        Ok(())
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        set_vocab(cx, kv)
    }
}

/// `LlamaModel.permute(w, n_head, n_head_kv)` as a view: within each head, the two halves of
/// the rows interleave (`reshape(n_head, 2, rows / n_head / 2, ...).swapaxes(1, 2)`).
/// `heads` is the number of heads of this tensor (the converter's `n_head_kv` for K).
pub fn permute(view: &View, heads: u64) -> Result<View> {
    let rows = view.dims.first().copied().unwrap_or(0);
    if heads == 0 || rows % (2 * heads) != 0 {
        bail!("{rows} rows cannot be split into {heads} heads of two halves (LlamaModel.permute)");
    }
    let mut shape = vec![heads, 2, rows / heads / 2];
    shape.extend_from_slice(&view.dims[1..]);
    Ok(view.reshape(&shape)?.swap_axes(1, 2))
}

/// `head_dim`, else `hidden_size // num_attention_heads`.
fn rope_dim(hp: &Hparams) -> Result<u32> {
    match hp.u32(&["head_dim"])? {
        Some(d) => Ok(d),
        None => {
            let heads = hp.req_u64(&["num_attention_heads"])?;
            if heads == 0 {
                bail!("config.json: num_attention_heads is 0");
            }
            Ok((hp.req_u64(&["hidden_size"])? / heads) as u32)
        }
    }
}

/// Per-dimension RoPE frequency factors of Llama-3 scaling (`generate_extra_tensors`), or
/// `None` when the model does not use it.
///
/// The converter computes these in float32 torch arithmetic; the steps below repeat that
/// arithmetic in f32 (torch's `scalar / tensor` is `reciprocal(tensor) * scalar`), which is what
/// makes the factors in the smooth band bit-identical.
pub fn llama3_rope_factors(hp: &Hparams) -> Result<Option<Vec<f32>>> {
    let p = hp.full_attention_rope();
    let is_llama3 = p
        .get("rope_type")
        .and_then(|v| v.as_str())
        .is_some_and(|t| t.eq_ignore_ascii_case("llama3"));
    if !is_llama3 {
        return Ok(None);
    }
    let num = |k: &str, d: f64| p.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
    let base = num("rope_theta", 10000.0) as f32;
    let dim = rope_dim(hp)? as u64;
    let factor = num("factor", 8.0) as f32;
    let low = num("low_freq_factor", 1.0);
    let high = num("high_freq_factor", 4.0);
    let old_ctx = num("original_max_position_embeddings", 8192.0);
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let two_pi = std::f64::consts::PI * 2.0;
    let mut out = Vec::new();
    for i in (0..dim).step_by(2) {
        let exponent = i as f32 / dim as f32;
        let freq = 1.0f32 / base.powf(exponent);
        let wavelen = (1.0f32 / freq) * two_pi as f32;
        let w = wavelen as f64;
        out.push(if w < high_wavelen {
            1.0
        } else if w > low_wavelen {
            factor
        } else {
            let smooth = ((1.0f32 / wavelen) * old_ctx as f32 - low as f32) / (high - low) as f32;
            1.0f32 / ((1.0f32 - smooth) / factor + smooth)
        });
    }
    Ok(Some(out))
}

/// `LlamaModel.set_vocab`. Converter branches for checkpoints gmat does not handle
/// (Mistral-format/tekken, EAGLE-3 drafts, HybridDNA, GLM-ASR) are errors, not guesses.
fn set_vocab(cx: &Cx, kv: &mut Kv) -> Result<()> {
    let (md, hparams) = (cx.md, cx.hp.json());
    if cx.hp.origin_hf_arch() == Some("GlmasrModel") {
        bail!("GLM-ASR vocabularies (_set_vocab_glmedge) are not supported");
    }
    if hparams.get("draft_vocab_size").is_some()
        && hparams.get("num_hidden_layers").and_then(Json::as_u64) == Some(1)
    {
        bail!("EAGLE-3 draft models take their tokenizer from the target model: not supported");
    }
    if md.is_file("tekken.json") && !md.is_file("tokenizer.json") {
        bail!("Mistral tekken.json vocabularies (_set_vocab_mistral) are not supported");
    }
    if let Some(tc) = md.json("tokenizer_config.json")? {
        match tokenizer::json_get(&tc, "add_prefix_space") {
            None | Some(Json::Null) => {}
            Some(Json::Bool(b)) => kv.set_bool(keys::ADD_PREFIX, *b),
            Some(v) => bail!(
                "{}: add_prefix_space {v} is not a boolean",
                md.path("tokenizer_config.json").display()
            ),
        }
        if tokenizer::json_get(&tc, "tokenizer_class").and_then(Json::as_str)
            == Some("HybridDNATokenizer")
        {
            bail!("HybridDNA vocabularies (_set_vocab_hybriddna) are not supported");
        }
    }

    if tokenizer::tokenizer_model(md).is_some() {
        tokenizer::set_vocab_sentencepiece(md, hparams, kv)?;
    } else if !tokenizer::has_bpe_files(md) {
        bail!("{}", tokenizer::no_tokenizer(md));
    } else if tokenizer::llama_hf_applies(md)? {
        tokenizer::create_vocab_llama_hf(md, hparams)?.write(md, kv)?;
    } else {
        // Llama 3
        tokenizer::set_vocab_gpt2(md, hparams, kv)?;
    }

    let vocab_size = hparams.get("vocab_size").map_or(Some(32000), Json::as_u64);
    // CodeLlama (and not Llama 3 with 128256 tokens): the infill tokens.
    if vocab_size == Some(32016) {
        let types = ["prefix", "suffix", "middle", "eot"];
        let mut sv = SpecialVocab::load(md, false, Some(&types), None)?;
        sv.set_special_token_id("prefix", 32007)?;
        sv.set_special_token_id("suffix", 32008)?;
        sv.set_special_token_id("middle", 32009)?;
        sv.set_special_token_id("eot", 32010)?;
        sv.add_to_gguf(kv);
    }
    // Granite small models.
    if vocab_size == Some(49152) {
        kv.set_bool("tokenizer.ggml.add_bos_token", false);
    }
    Ok(())
}

// transformers 4.57.6 configuration classes of LlamaModel checkpoints: the defaults and
// normalisations the converter's view of config.json gets (`auto_config`).

/// `LlamaConfig` (models/llama/configuration_llama.py).
pub const LLAMA_CONFIG: ConfigClass = ConfigClass {
    name: "LlamaConfig",
    model_type: "llama",
    attribute_map: &[],
    init: llama_config,
};

fn llama_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(32000)),
        ("hidden_size", json!(4096)),
        ("intermediate_size", json!(11008)),
        ("num_hidden_layers", json!(32)),
        ("num_attention_heads", json!(32)),
        ("num_key_value_heads", Json::Null),
        ("hidden_act", json!("silu")),
        ("max_position_embeddings", json!(2048)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("pad_token_id", Json::Null),
        ("bos_token_id", json!(1)),
        ("eos_token_id", json!(2)),
        ("pretraining_tp", json!(1)),
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(10000.0)),
        ("rope_scaling", Json::Null),
        ("attention_bias", json!(false)),
        ("attention_dropout", json!(0.0)),
        ("mlp_bias", json!(false)),
        ("head_dim", Json::Null),
    ]);
    c.set_args(
        &a,
        &[
            "vocab_size",
            "max_position_embeddings",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        ],
    );
    // num_key_value_heads: num_attention_heads when None (backward compatibility)
    c.set(
        "num_key_value_heads",
        or_none(a.get("num_key_value_heads"), a.get("num_attention_heads")),
    );
    c.set_args(
        &a,
        &[
            "hidden_act",
            "initializer_range",
            "rms_norm_eps",
            "pretraining_tp",
            "use_cache",
            "rope_theta",
            "rope_scaling",
            "attention_bias",
            "attention_dropout",
            "mlp_bias",
        ],
    );
    // head_dim: hidden_size // num_attention_heads when None
    let head_dim = match a.get("head_dim") {
        Json::Null => py::floordiv(c.attr("hidden_size")?, c.attr("num_attention_heads")?)?,
        d => d,
    };
    c.set("head_dim", head_dim);
    c.rope_type_from_type()?;
    c.rope_config_validation()?;
    c.base(&[
        ("pad_token_id", a.get("pad_token_id")),
        ("bos_token_id", a.get("bos_token_id")),
        ("eos_token_id", a.get("eos_token_id")),
        ("tie_word_embeddings", a.get("tie_word_embeddings")),
    ])
}

/// `MistralConfig` (models/mistral/configuration_mistral.py): `head_dim` stays None when
/// absent; no `rope_scaling` parameter (a `rope_scaling` key is kept as it is).
pub const MISTRAL_CONFIG: ConfigClass = ConfigClass {
    name: "MistralConfig",
    model_type: "mistral",
    attribute_map: &[],
    init: mistral_config,
};

fn mistral_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(32000)),
        ("hidden_size", json!(4096)),
        ("intermediate_size", json!(14336)),
        ("num_hidden_layers", json!(32)),
        ("num_attention_heads", json!(32)),
        ("num_key_value_heads", json!(8)),
        ("head_dim", Json::Null),
        ("hidden_act", json!("silu")),
        ("max_position_embeddings", json!(4096 * 32)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("pad_token_id", Json::Null),
        ("bos_token_id", json!(1)),
        ("eos_token_id", json!(2)),
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(10000.0)),
        ("sliding_window", json!(4096)),
        ("attention_dropout", json!(0.0)),
    ]);
    c.set_args(
        &a,
        &[
            "vocab_size",
            "max_position_embeddings",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "sliding_window",
            "head_dim",
        ],
    );
    c.set(
        "num_key_value_heads",
        or_none(a.get("num_key_value_heads"), a.get("num_attention_heads")),
    );
    c.set_args(
        &a,
        &[
            "hidden_act",
            "initializer_range",
            "rms_norm_eps",
            "use_cache",
            "rope_theta",
            "attention_dropout",
        ],
    );
    c.base(&[
        ("pad_token_id", a.get("pad_token_id")),
        ("bos_token_id", a.get("bos_token_id")),
        ("eos_token_id", a.get("eos_token_id")),
        ("tie_word_embeddings", a.get("tie_word_embeddings")),
    ])
}

/// `MinistralConfig` (models/ministral/configuration_ministral.py): what `AutoConfig` uses for
/// a `mistral` config.json that has `layer_types`.
pub const MINISTRAL_CONFIG: ConfigClass = ConfigClass {
    name: "MinistralConfig",
    model_type: "ministral",
    attribute_map: &[],
    init: ministral_config,
};

fn ministral_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(32000)),
        ("hidden_size", json!(4096)),
        ("intermediate_size", json!(14336)),
        ("num_hidden_layers", json!(32)),
        ("num_attention_heads", json!(32)),
        ("num_key_value_heads", json!(8)),
        ("head_dim", Json::Null),
        ("hidden_act", json!("silu")),
        ("max_position_embeddings", json!(4096 * 32)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("pad_token_id", Json::Null),
        ("bos_token_id", json!(1)),
        ("eos_token_id", json!(2)),
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(10000.0)),
        ("sliding_window", json!(4096)),
        ("attention_dropout", json!(0.0)),
        ("layer_types", Json::Null),
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
            "sliding_window",
            "head_dim",
        ],
    );
    c.set(
        "num_key_value_heads",
        or_none(a.get("num_key_value_heads"), a.get("num_attention_heads")),
    );
    c.set_args(
        &a,
        &[
            "hidden_act",
            "initializer_range",
            "rms_norm_eps",
            "use_cache",
            "rope_theta",
            "attention_dropout",
            "layer_types",
        ],
    );
    // layer_types: ["sliding_attention" if sliding_window is not None else "full_attention"]
    // * num_hidden_layers
    if a.get("layer_types").is_null() {
        let t = if a.get("sliding_window").is_null() {
            "full_attention"
        } else {
            "sliding_attention"
        };
        let n = match py::Num::of(&a.get("num_hidden_layers")) {
            Some(py::Num::Int(n)) => usize::try_from(n.max(0)).unwrap_or(0),
            _ => return py::raise("TypeError: can't multiply sequence by non-int"),
        };
        c.set("layer_types", json!(vec![t; n]));
    }
    Ok(())
}

/// `MixtralConfig` (models/mixtral/configuration_mixtral.py).
pub const MIXTRAL_CONFIG: ConfigClass = ConfigClass {
    name: "MixtralConfig",
    model_type: "mixtral",
    attribute_map: &[],
    init: mixtral_config,
};

fn mixtral_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(32000)),
        ("hidden_size", json!(4096)),
        ("intermediate_size", json!(14336)),
        ("num_hidden_layers", json!(32)),
        ("num_attention_heads", json!(32)),
        ("num_key_value_heads", json!(8)),
        ("head_dim", Json::Null),
        ("hidden_act", json!("silu")),
        ("max_position_embeddings", json!(4096 * 32)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-5)),
        ("use_cache", json!(true)),
        ("pad_token_id", Json::Null),
        ("bos_token_id", json!(1)),
        ("eos_token_id", json!(2)),
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(1e6)),
        ("sliding_window", Json::Null),
        ("attention_dropout", json!(0.0)),
        ("num_experts_per_tok", json!(2)),
        ("num_local_experts", json!(8)),
        ("output_router_logits", json!(false)),
        ("router_aux_loss_coef", json!(0.001)),
        ("router_jitter_noise", json!(0.0)),
    ]);
    c.set_args(
        &a,
        &[
            "vocab_size",
            "max_position_embeddings",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "sliding_window",
        ],
    );
    c.set(
        "num_key_value_heads",
        or_none(a.get("num_key_value_heads"), a.get("num_attention_heads")),
    );
    c.set_args(
        &a,
        &[
            "hidden_act",
            "initializer_range",
            "rms_norm_eps",
            "use_cache",
            "rope_theta",
            "attention_dropout",
            "head_dim",
            "num_experts_per_tok",
            "num_local_experts",
            "output_router_logits",
            "router_aux_loss_coef",
            "router_jitter_noise",
        ],
    );
    c.base(&[
        ("pad_token_id", a.get("pad_token_id")),
        ("bos_token_id", a.get("bos_token_id")),
        ("eos_token_id", a.get("eos_token_id")),
        ("tie_word_embeddings", a.get("tie_word_embeddings")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_converter_for_llama3_scaling() {
        // llama-bpe-tiny's config; expected bits read from the converter's GGUF
        // (../shared/reference/models/llama-bpe-tiny/expected, tensor rope_freqs.weight).
        let cfg = serde_json::json!({
            "head_dim": 16, "hidden_size": 64, "num_attention_heads": 4, "rope_theta": 500000.0,
            "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        });
        let f = llama3_rope_factors(&Hparams::new(&cfg).unwrap())
            .unwrap()
            .unwrap();
        let bits: Vec<u32> = f.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            bits,
            [
                1065353216, 1065353216, 1065353216, 1065353216, 1076654894, 1090519040, 1090519040,
                1090519040
            ]
        );
        assert!(
            llama3_rope_factors(&Hparams::new(&serde_json::json!({})).unwrap())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // Direct evaluation of reshape(n_head, 2, half).swapaxes(1, 2).reshape(-1) on row ids.
        for (rows, n_head) in [(8u64, 2u64), (64, 8), (32, 2), (12, 3)] {
            let half = rows / n_head / 2;
            let mut expected = Vec::new();
            for h in 0..n_head {
                for i in 0..half {
                    for j in 0..2 {
                        expected.push(h * 2 * half + j * half + i);
                    }
                }
            }
            let v = permute(&View::contiguous(&[rows, 5]), n_head).unwrap();
            let got: Vec<u64> = (0..rows).map(|r| v.source_index(r * 5) / 5).collect();
            assert_eq!(got, expected, "rows {rows}, heads {n_head}");
            // a bias (1-D) is permuted element by element
            let b = permute(&View::contiguous(&[rows]), n_head).unwrap();
            let got: Vec<u64> = (0..rows).map(|r| b.source_index(r)).collect();
            assert_eq!(got, expected);
        }
        assert!(permute(&View::contiguous(&[6, 4]), 4).is_err());
    }
}
