//! `qwen2moe` and `qwen3moe`: Qwen2MoeModel and Qwen3MoeModel of llama.cpp
//! `conversion/qwen.py`.
//!
//! Experts come either one tensor per expert (`mlp.experts.{xid}.{down,gate,up}_proj`, stacked
//! down, gate, up) or already fused per layer (`mlp.experts.gate_up_proj` of shape
//! `[n_expert, 2·n_ff, n_embd]`, split in halves; `mlp.experts.down_proj`). Qwen2-MoE's shared
//! expert and its gate are plain table entries.

use anyhow::{bail, Result};

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
