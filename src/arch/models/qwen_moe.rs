//! `qwen2moe` and `qwen3moe`: Qwen2MoeModel and Qwen3MoeModel of llama.cpp
//! `conversion/qwen.py`.
//!
//! Experts come either one tensor per expert (`mlp.experts.{xid}.{down,gate,up}_proj`, stacked
//! down, gate, up) or already fused per layer (`mlp.experts.gate_up_proj` of shape
//! `[n_expert, 2·n_ff, n_embd]`, split in halves; `mlp.experts.down_proj`). Qwen2-MoE's shared
//! expert and its gate are plain table entries.

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};

use crate::arch::auto_config::{or_none, py, py::Py, Args, ConfigClass, Init};

use crate::arch::kv::Kv;
use crate::arch::tensors::{ExpertLayout, SourceTensor, TensorSink};
use crate::arch::{text_model, ArchSpec, Cx};

use super::qwen::refuse_interns1;

/// The converter's `Qwen2MoeModel`.
pub struct Qwen2Moe;

/// The converter's `Qwen3MoeModel`.
pub struct Qwen3Moe;

const EXPERTS: ExpertLayout = ExpertLayout {
    expert: "model.layers.{bid}.mlp.experts.{xid}.{w}.weight",
    merged: "model.layers.{bid}.mlp.experts.{w}.weight",
    projections: &["down_proj", "gate_proj", "up_proj"],
};

impl ArchSpec for Qwen2Moe {
    fn gguf_arch(&self) -> &'static str {
        "qwen2moe"
    }

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[&QWEN2_MOE_CONFIG]
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Qwen2MoeForCausalLM"]
    }

    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        modify_tensor(cx, t, out)
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        set_gguf_parameters(cx, kv)
    }
}

impl ArchSpec for Qwen3Moe {
    fn gguf_arch(&self) -> &'static str {
        "qwen3moe"
    }

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[&QWEN3_MOE_CONFIG]
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Qwen3MoeForCausalLM"]
    }

    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        modify_tensor(cx, t, out)
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        set_gguf_parameters(cx, kv)
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        refuse_interns1(cx)?;
        crate::arch::tokenizer::set_vocab_gpt2(cx.md, cx.hp.json(), kv)
    }
}

/// `Qwen2MoeModel.set_gguf_parameters`.
fn set_gguf_parameters(cx: &Cx, kv: &mut Kv) -> Result<()> {
    text_model::set_gguf_parameters(cx, kv)?;
    if let Some(n) = cx.hp.u32(&["moe_intermediate_size"])? {
        kv.arch_u32("expert_feed_forward_length", n);
    }
    if let Some(n) = cx.hp.u32(&["shared_expert_intermediate_size"])? {
        kv.arch_u32("expert_shared_feed_forward_length", n);
    }
    Ok(())
}

/// `Qwen2MoeModel.modify_tensors`.
fn modify_tensor(cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
    let name = t.name.as_str();
    if name.ends_with("mlp.experts.down_proj") || name.ends_with("mlp.experts.down_proj.weight") {
        let mapped = if name.ends_with(".weight") {
            name.to_string()
        } else {
            format!("{name}.weight")
        };
        return out.map(&mapped, t.shape.clone(), t.whole());
    }
    if name.ends_with("mlp.experts.gate_up_proj")
        || name.ends_with("mlp.experts.gate_up_proj.weight")
    {
        let nd = t.shape.len();
        if nd < 3 || !t.shape[nd - 2].is_multiple_of(2) {
            bail!("unexpected gate_up_proj shape {:?}", t.shape);
        }
        let n_ff = t.shape[nd - 2] / 2;
        let base = name
            .strip_suffix(".weight")
            .unwrap_or(name)
            .strip_suffix(".gate_up_proj")
            .unwrap_or(name);
        for (half, proj) in [(0, "gate_proj"), (1, "up_proj")] {
            let view = t.view().narrow(nd - 2, half * n_ff, n_ff)?;
            let mut shape = t.shape.clone();
            shape[nd - 2] = n_ff;
            out.map(&format!("{base}.{proj}.weight"), shape, t.piece(view))?;
        }
        return Ok(());
    }
    if name.contains("experts") {
        let n = cx.hp.req_u64(&["num_local_experts", "num_experts"])? as usize;
        return out.stack_expert(&EXPERTS, n, t);
    }
    out.map_whole(t)
}

// transformers 4.57.6 configuration classes of Qwen2MoeModel / Qwen3MoeModel checkpoints: the
// defaults and normalisations the converter's view of config.json gets (`auto_config`).

/// `Qwen2MoeConfig` (models/qwen2_moe/configuration_qwen2_moe.py).
pub const QWEN2_MOE_CONFIG: ConfigClass = ConfigClass {
    name: "Qwen2MoeConfig",
    model_type: "qwen2_moe",
    attribute_map: &[],
    init: qwen2_moe_config,
};

/// `Qwen3MoeConfig` (models/qwen3_moe/configuration_qwen3_moe.py).
pub const QWEN3_MOE_CONFIG: ConfigClass = ConfigClass {
    name: "Qwen3MoeConfig",
    model_type: "qwen3_moe",
    attribute_map: &[],
    init: qwen3_moe_config,
};

fn qwen2_moe_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(151936)),
        ("hidden_size", json!(2048)),
        ("intermediate_size", json!(5632)),
        ("num_hidden_layers", json!(24)),
        ("num_attention_heads", json!(16)),
        ("num_key_value_heads", json!(16)),
        ("hidden_act", json!("silu")),
        ("max_position_embeddings", json!(32768)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(10000.0)),
        ("rope_scaling", Json::Null),
        ("use_sliding_window", json!(false)),
        ("sliding_window", json!(4096)),
        ("max_window_layers", json!(28)),
        ("attention_dropout", json!(0.0)),
        ("decoder_sparse_step", json!(1)),
        ("moe_intermediate_size", json!(1408)),
        ("shared_expert_intermediate_size", json!(5632)),
        ("num_experts_per_tok", json!(4)),
        ("num_experts", json!(60)),
        ("norm_topk_prob", json!(false)),
        ("output_router_logits", json!(false)),
        ("router_aux_loss_coef", json!(0.001)),
        ("mlp_only_layers", Json::Null),
        ("qkv_bias", json!(true)),
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
            "use_sliding_window",
        ],
    );
    // sliding_window: None unless use_sliding_window
    c.set("sliding_window", sliding_window(&a));
    // num_key_value_heads is not defaulted to num_attention_heads here
    c.set_args(
        &a,
        &[
            "max_window_layers",
            "num_key_value_heads",
            "hidden_act",
            "initializer_range",
            "rms_norm_eps",
            "use_cache",
            "rope_theta",
            "rope_scaling",
            "attention_dropout",
        ],
    );
    c.rope_type_from_type()?;
    c.rope_config_validation()?;
    c.set_args(
        &a,
        &[
            "decoder_sparse_step",
            "moe_intermediate_size",
            "shared_expert_intermediate_size",
            "num_experts_per_tok",
            "num_experts",
            "norm_topk_prob",
            "output_router_logits",
            "router_aux_loss_coef",
        ],
    );
    c.set(
        "mlp_only_layers",
        or_none(a.get("mlp_only_layers"), json!([])),
    );
    c.set_args(&a, &["qkv_bias"]);
    c.base(&[("tie_word_embeddings", a.get("tie_word_embeddings"))])
}

fn qwen3_moe_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(151936)),
        ("hidden_size", json!(2048)),
        ("intermediate_size", json!(6144)),
        ("num_hidden_layers", json!(24)),
        ("num_attention_heads", json!(32)),
        ("num_key_value_heads", json!(4)),
        ("hidden_act", json!("silu")),
        ("max_position_embeddings", json!(32768)),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-6)),
        ("use_cache", json!(true)),
        ("tie_word_embeddings", json!(false)),
        ("rope_theta", json!(10000.0)),
        ("rope_scaling", Json::Null),
        ("attention_bias", json!(false)),
        ("use_sliding_window", json!(false)),
        ("sliding_window", json!(4096)),
        ("attention_dropout", json!(0.0)),
        ("decoder_sparse_step", json!(1)),
        ("moe_intermediate_size", json!(768)),
        ("num_experts_per_tok", json!(8)),
        ("num_experts", json!(128)),
        ("norm_topk_prob", json!(false)),
        ("output_router_logits", json!(false)),
        ("router_aux_loss_coef", json!(0.001)),
        ("mlp_only_layers", Json::Null),
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
            "use_sliding_window",
        ],
    );
    c.set("sliding_window", sliding_window(&a));
    // no head_dim parameter: a head_dim key is kept as it is, an absent one stays absent
    c.set_args(
        &a,
        &[
            "num_key_value_heads",
            "hidden_act",
            "initializer_range",
            "rms_norm_eps",
            "use_cache",
            "rope_theta",
            "rope_scaling",
            "attention_bias",
            "attention_dropout",
        ],
    );
    c.rope_type_from_type()?;
    c.rope_config_validation()?;
    c.set_args(
        &a,
        &[
            "decoder_sparse_step",
            "moe_intermediate_size",
            "num_experts_per_tok",
            "num_experts",
            "norm_topk_prob",
            "output_router_logits",
            "router_aux_loss_coef",
        ],
    );
    c.set(
        "mlp_only_layers",
        or_none(a.get("mlp_only_layers"), json!([])),
    );
    c.base(&[("tie_word_embeddings", a.get("tie_word_embeddings"))])
}

/// `sliding_window if use_sliding_window else None`.
fn sliding_window(a: &Args) -> Json {
    if py::truthy(&a.get("use_sliding_window")) {
        a.get("sliding_window")
    } else {
        Json::Null
    }
}
