//! `deepseek2`: DeepseekV2Model of llama.cpp `conversion/deepseek.py` (DeepSeek-V2, V3, and the
//! text model of Kimi-VL, whose `language_model.` prefix the base filter removes).
//!
//! Multi-head latent attention: `kv_b_proj` is split per head into `attn_k_b` (transposed, for
//! the absorption optimisation) and `attn_v_b`, as views of the stored tensor; the KV head
//! count is written as 1 (MLA becomes MQA). Routed experts are stacked down, gate, up; the
//! leading dense layers, shared experts and `e_score_correction` bias are table entries; the
//! multi-token-prediction layers past `num_hidden_layers` and a tied `lm_head` are dropped.

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};

use crate::arch::auto_config::{or_none, py, py::Py, ConfigClass, Init};

use crate::arch::kv::Kv;
use crate::arch::tensors::{ExpertLayout, SourceTensor, TensorSink};
use crate::arch::{text_model, tokenizer, ArchSpec, Cx};

/// The converter's `DeepseekV2Model`.
pub struct Deepseek2;

const EXPERTS: ExpertLayout = ExpertLayout {
    expert: "model.layers.{bid}.mlp.experts.{xid}.{w}.weight",
    merged: "model.layers.{bid}.mlp.experts.{w}.weight",
    projections: &["down_proj", "gate_proj", "up_proj"],
};

impl ArchSpec for Deepseek2 {
    fn gguf_arch(&self) -> &'static str {
        "deepseek2"
    }

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[&DEEPSEEK_V2_CONFIG, &DEEPSEEK_V3_CONFIG]
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &[
            "DeepseekV2ForCausalLM",
            "DeepseekV3ForCausalLM",
            "KimiVLForConditionalGeneration",
        ]
    }

    fn filter_tensor(&self, name: &str) -> Option<String> {
        // DeepSeek-OCR's vision encoders
        if name.contains("sam_model") || name.contains("qwen2_model") {
            return None;
        }
        text_model::filter_tensor(name)
    }

    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        let hp = cx.hp;
        if hp.bool("tie_word_embeddings") == Some(true)
            && (t.name == "lm_head.weight" || t.name == "model.lm_head.weight")
        {
            return Ok(()); // the output uses token_embd.weight
        }
        // multi-token-prediction layers
        let block_count = hp.req_u64(&["num_hidden_layers"])?;
        if let Some(b) = mtp_layer(&t.name) {
            if b >= block_count {
                return Ok(());
            }
        }
        if t.name.contains("mlp.experts") {
            let n = hp.req_u64(&["n_routed_experts"])? as usize;
            return out.stack_expert(&EXPERTS, n, t);
        }
        if t.name.ends_with("kv_b_proj.weight") {
            return split_kv_b(cx, t, out);
        }
        out.map_whole(t)
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        // MLA is converted into MQA (GQA with one group)
        let mut hp = cx.hp.clone();
        hp.set("num_key_value_heads", Json::from(1));
        if !hp.contains("rms_norm_eps") {
            hp.set("rms_norm_eps", Json::from(1e-6));
        }
        let cx = Cx { hp: &hp, ..*cx };
        text_model::set_gguf_parameters(&cx, kv)?;

        let has_moe = hp.get("n_routed_experts").is_some();
        let first_k_dense = match hp.u32(&["first_k_dense_replace"])? {
            Some(n) => n,
            None if !has_moe => hp.req_u32(&["num_hidden_layers"])?,
            None => 0,
        };
        kv.arch_u32("leading_dense_block_count", first_k_dense);
        let kv_lora_rank = hp.u32_or("kv_lora_rank", 512)?;
        kv.arch_u32("vocab_size", hp.req_u32(&["vocab_size"])?);
        if let Some(q) = hp.u32(&["q_lora_rank"])? {
            kv.arch_u32("attention.q_lora_rank", q);
        }
        let rope_dim = hp.req_u32(&["qk_rope_head_dim"])?;
        let nope = hp.req_u32(&["qk_nope_head_dim"])?;
        kv.arch_u32("attention.kv_lora_rank", kv_lora_rank);
        kv.arch_u32("attention.key_length", kv_lora_rank + rope_dim);
        kv.arch_u32("attention.value_length", kv_lora_rank);
        kv.arch_u32("attention.key_length_mla", nope + rope_dim);
        kv.arch_u32("attention.value_length_mla", hp.req_u32(&["v_head_dim"])?);
        kv.arch_u32(
            "expert_feed_forward_length",
            hp.req_u32(&["moe_intermediate_size", "intermediate_size"])?,
        );
        if let Some(n) = hp.u32(&["n_routed_experts"])? {
            kv.arch_u32("expert_count", n);
        }
        kv.arch_u32("expert_shared_count", hp.u32_or("n_shared_experts", 0)?);
        if let Some(s) = hp.f64(&["routed_scaling_factor"])? {
            kv.arch_f32("expert_weights_scale", s);
        }
        if hp.bool("norm_topk_prob") == Some(true) {
            kv.arch_bool("expert_weights_norm", true);
        }
        kv.arch_u32("rope.dimension_count", rope_dim);
        if let Some(m) = hp
            .rope_parameters()
            .get("mscale_all_dim")
            .and_then(Json::as_f64)
        {
            // for legacy reasons not the usual yarn_log_mul meaning (llama.cpp PR 17945)
            kv.arch_f32("rope.scaling.yarn_log_multiplier", 0.1 * m);
        }
        Ok(())
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        if !cx.md.is_file("tokenizer.json") && cx.md.is_file("tiktoken.model") {
            // The converter's fallback: AutoTokenizer with remote code, merges rebuilt from the
            // tiktoken ranks, pre-tokenizer "kimi-k2".
            bail!(
                "{} is a tiktoken vocabulary (Kimi's remote-code TikTokenTokenizer), which gmat \
                 does not read yet: the converter rebuilds its BPE merges from the ranks and \
                 needs the tokenization_kimi.py code; give the model a tokenizer.json (a fast \
                 tokenizer saved with transformers) to export it",
                cx.md.path("tiktoken.model").display()
            );
        }
        tokenizer::set_vocab_gpt2(cx.md, cx.hp.json(), kv)
    }
}

/// `re.match(r"model.layers.(\d+)", name)`: the layer of a `model.layers.N...` name.
fn mtp_layer(name: &str) -> Option<u64> {
    // the converter's pattern has unescaped dots: any character matches there
    let b = name.as_bytes();
    if b.len() < 14 || &b[..5] != b"model" || &b[6..12] != b"layers" {
        return None;
    }
    let digits: String = name[13..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// MLA with the absorption optimisation: `kv_b_proj` viewed as
/// `[n_head_kv, qk_nope + v_head, kv_lora_rank]`, split into `k_b` (the first `qk_nope` rows of
/// each head, transposed) and `v_b` (the rest).
fn split_kv_b(cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
    let hp = cx.hp;
    let n_head_kv = hp.req_u64(&["num_key_value_heads"])?;
    let v_head = hp.req_u64(&["v_head_dim"])?;
    let nope = hp.req_u64(&["qk_nope_head_dim"])?;
    let (rows, rank) = match t.shape[..] {
        [r, c] => (r, c),
        _ => bail!("kv_b_proj has shape {:?}; expected 2 dimensions", t.shape),
    };
    if rows != n_head_kv * (v_head + nope) {
        bail!(
            "kv_b_proj has {rows} rows; expected num_key_value_heads {n_head_kv} x (v_head_dim {v_head} + qk_nope_head_dim {nope})"
        );
    }
    let kv_b = t.view().reshape(&[n_head_kv, v_head + nope, rank])?;
    let k_b = kv_b.clone().narrow(1, 0, nope)?.swap_axes(1, 2);
    let v_b = kv_b.narrow(1, nope, v_head)?;
    let k_name = t.name.replace("kv_b_proj", "k_b_proj");
    let v_name = t.name.replace("kv_b_proj", "v_b_proj");
    out.map(&k_name, vec![n_head_kv, rank, nope], t.piece(k_b))?;
    out.map(&v_name, vec![n_head_kv, v_head, rank], t.piece(v_b))
}

// transformers 4.57.6 configuration classes of DeepseekV2Model checkpoints: the defaults and
// normalisations the converter's view of config.json gets (`auto_config`). Kimi-VL's
// `kimi_vl` is remote code: its config.json is read as raw JSON.

/// `DeepseekV2Config` (models/deepseek_v2/configuration_deepseek_v2.py): `head_dim` is always
/// `qk_rope_head_dim` (a `head_dim` key is overwritten).
pub const DEEPSEEK_V2_CONFIG: ConfigClass = ConfigClass {
    name: "DeepseekV2Config",
    model_type: "deepseek_v2",
    attribute_map: &[],
    init: deepseek_v2_config,
};

fn deepseek_v2_config(c: &mut Init) -> Py<()> {
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
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(10000.0)),
        ("rope_scaling", Json::Null),
        ("attention_bias", json!(false)),
        ("attention_dropout", json!(0.0)),
        ("mlp_bias", json!(false)),
        ("aux_loss_alpha", json!(0.001)),
        ("first_k_dense_replace", json!(0)),
        ("kv_lora_rank", json!(512)),
        ("q_lora_rank", json!(1536)),
        ("n_group", Json::Null),
        ("n_routed_experts", json!(64)),
        ("n_shared_experts", json!(2)),
        ("qk_nope_head_dim", json!(128)),
        ("qk_rope_head_dim", json!(64)),
        ("routed_scaling_factor", json!(1.0)),
        ("seq_aux", json!(true)),
        ("topk_group", Json::Null),
        ("topk_method", json!("greedy")),
        ("v_head_dim", json!(128)),
        ("num_experts_per_tok", Json::Null),
        ("norm_topk_prob", json!(false)),
        ("moe_intermediate_size", json!(1407)),
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
            "rope_scaling",
            "attention_bias",
            "attention_dropout",
            "mlp_bias",
        ],
    );
    c.set("head_dim", a.get("qk_rope_head_dim"));
    c.rope_type_from_type()?;
    c.rope_config_validation()?;
    c.set_args(
        &a,
        &[
            "aux_loss_alpha",
            "first_k_dense_replace",
            "kv_lora_rank",
            "q_lora_rank",
            "n_group",
            "n_routed_experts",
            "n_shared_experts",
            "qk_nope_head_dim",
            "qk_rope_head_dim",
            "routed_scaling_factor",
            "seq_aux",
            "topk_group",
            "topk_method",
            "v_head_dim",
            "num_experts_per_tok",
            "norm_topk_prob",
            "moe_intermediate_size",
        ],
    );
    Ok(())
}

/// `DeepseekV3Config` (models/deepseek_v3/configuration_deepseek_v3.py): `head_dim` is
/// `qk_rope_head_dim` unless config.json has one (the base class sets the keyword afterwards);
/// yarn's `beta_fast`, `beta_slow` and `factor` become floats.
pub const DEEPSEEK_V3_CONFIG: ConfigClass = ConfigClass {
    name: "DeepseekV3Config",
    model_type: "deepseek_v3",
    attribute_map: &[],
    init: deepseek_v3_config,
};

fn deepseek_v3_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(129280)),
        ("hidden_size", json!(7168)),
        ("intermediate_size", json!(18432)),
        ("moe_intermediate_size", json!(2048)),
        ("num_hidden_layers", json!(61)),
        ("num_attention_heads", json!(128)),
        ("num_key_value_heads", json!(128)),
        ("n_shared_experts", json!(1)),
        ("n_routed_experts", json!(256)),
        ("routed_scaling_factor", json!(2.5)),
        ("kv_lora_rank", json!(512)),
        ("q_lora_rank", json!(1536)),
        ("qk_rope_head_dim", json!(64)),
        ("v_head_dim", json!(128)),
        ("qk_nope_head_dim", json!(128)),
        ("n_group", json!(8)),
        ("topk_group", json!(4)),
        ("num_experts_per_tok", json!(8)),
        ("first_k_dense_replace", json!(3)),
        ("norm_topk_prob", json!(true)),
        ("hidden_act", json!("silu")),
        ("max_position_embeddings", json!(4096)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("pad_token_id", Json::Null),
        ("bos_token_id", json!(0)),
        ("eos_token_id", json!(1)),
        ("pretraining_tp", json!(1)),
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(10000.0)),
        ("rope_scaling", Json::Null),
        ("rope_interleave", json!(true)),
        ("attention_bias", json!(false)),
        ("attention_dropout", json!(0.0)),
    ]);
    c.set_args(
        &a,
        &[
            "vocab_size",
            "max_position_embeddings",
            "hidden_size",
            "intermediate_size",
            "moe_intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "n_shared_experts",
            "n_routed_experts",
            "routed_scaling_factor",
            "kv_lora_rank",
            "q_lora_rank",
            "qk_rope_head_dim",
            "v_head_dim",
            "qk_nope_head_dim",
        ],
    );
    c.set(
        "qk_head_dim",
        py::add(&a.get("qk_nope_head_dim"), &a.get("qk_rope_head_dim"))?,
    );
    c.set("head_dim", a.get("qk_rope_head_dim"));
    c.set_args(
        &a,
        &[
            "n_group",
            "topk_group",
            "num_experts_per_tok",
            "first_k_dense_replace",
            "norm_topk_prob",
            "rope_interleave",
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
            "pretraining_tp",
            "use_cache",
            "rope_theta",
            "rope_scaling",
            "attention_bias",
            "attention_dropout",
        ],
    );
    c.rope_type_from_type()?;
    if let Json::Object(mut m) = c.attr_or_null("rope_scaling") {
        for k in ["beta_fast", "beta_slow", "factor"] {
            if let Some(v) = m.get(k) {
                let f = py::float(v)?;
                m.insert(k.into(), f);
            }
        }
        c.set("rope_scaling", Json::Object(m));
    }
    c.rope_config_validation()?;
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
    fn mtp_layers_are_found_like_the_converters_regex() {
        assert_eq!(mtp_layer("model.layers.61.mlp.gate.weight"), Some(61));
        assert_eq!(mtp_layer("model.layers.7"), Some(7));
        assert_eq!(mtp_layer("model.norm.weight"), None);
        assert_eq!(mtp_layer("lm_head.weight"), None);
    }
}
