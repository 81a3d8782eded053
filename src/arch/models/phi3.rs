//! `phi3`: Phi3MiniModel of llama.cpp `conversion/phi.py` (Phi-3, Phi-3.5, Phi-4-mini).
//!
//! Phi-3 keeps its fused projections as they are (`qkv_proj` → `attn_qkv`, `gate_up_proj` →
//! `ffn_up`, by the name table), writes its own parameter set (partial rotary dimensions, the
//! original context length, sliding window 0 when there is none) and, for LongRoPE models,
//! generates `rope_factors_long` / `rope_factors_short` from config.json.

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use crate::arch::kv::Kv;
use crate::arch::tensors::{Data, OutTensor, SourceTensor};
use crate::arch::{tokenizer, ArchSpec, Cx, Hparams, TensorKind};

/// The converter's `Phi3MiniModel`.
pub struct Phi3;

impl ArchSpec for Phi3 {
    fn gguf_arch(&self) -> &'static str {
        "phi3"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Phi3ForCausalLM"]
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        let hp = cx.hp;
        let rope = hp.rope_parameters();
        let g = Geometry::of(hp)?;
        let orig_ctx = orig_ctx(&rope)?;
        kv.arch_u32("context_length", g.max_pos as u32);
        kv.arch_u32("rope.scaling.original_context_length", orig_ctx as u32);
        kv.arch_u32("embedding_length", g.n_embd as u32);
        kv.arch_u32("feed_forward_length", hp.req_u32(&["intermediate_size"])?);
        kv.arch_u32("block_count", cx.block_count_u32()?);
        kv.arch_u32("attention.head_count", g.n_head as u32);
        kv.arch_u32(
            "attention.head_count_kv",
            hp.req_u32(&["num_key_value_heads", "n_head_kv"])?,
        );
        kv.arch_f32(
            "attention.layer_norm_rms_epsilon",
            hp.req_f64(&["rms_norm_eps"])?,
        );
        kv.arch_u32("rope.dimension_count", g.rope_dims as u32);
        let theta = hp
            .full_attention_rope()
            .get("rope_theta")
            .and_then(Json::as_f64)
            .context("config.json has no rope_theta")?;
        kv.arch_f32("rope.freq_base", theta);
        kv.set("general.file_type", crate::gguf::Value::U32(cx.file_type));
        // a zero sliding window tells Phi-4 apart from other PHI3 models
        kv.arch_u32(
            "attention.sliding_window",
            hp.u32(&["sliding_window"])?.unwrap_or(0),
        );
        Ok(())
    }

    fn extra_tensors(
        &self,
        cx: &Cx,
        _sources: &[SourceTensor],
        kv: &mut Kv,
    ) -> Result<Vec<OutTensor>> {
        let hp = cx.hp;
        let rope = hp.rope_parameters();
        let g = Geometry::of(hp)?;
        let orig_ctx = orig_ctx(&rope)?;
        let long = rope.get("long_factor").filter(|v| truthy_list(v));
        let Some(long) = long else {
            return Ok(Vec::new());
        };
        let scale = g.max_pos as f64 / orig_ctx as f64;
        let ty = rope
            .get("rope_type")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_lowercase();
        if ty.is_empty() {
            bail!("config.json: LongRoPE factors without rope_scaling.type");
        }
        let attn_factor = match ty.as_str() {
            "su" | "longrope" if scale > 1.0 => (1.0 + scale.ln() / (orig_ctx as f64).ln()).sqrt(),
            "yarn" if scale > 1.0 => 0.1 * scale.ln() + 1.0,
            "su" | "longrope" | "yarn" => 1.0,
            other => bail!("config.json: rope scaling type {other:?} is not supported for Phi-3"),
        };
        kv.arch_f32("rope.scaling.attn_factor", attn_factor);
        let short = rope
            .get("short_factor")
            .context("config.json: rope_scaling has long_factor but no short_factor")?;
        let (long, short) = (floats(long)?, floats(short)?);
        if long.len() != short.len() || long.len() as f64 != g.rope_dims as f64 / 2.0 {
            bail!(
                "config.json: rope long and short factors must have {} entries (long {}, short {})",
                g.rope_dims as f64 / 2.0,
                long.len(),
                short.len()
            );
        }
        let mut out = Vec::new();
        for (kind, values) in [
            (TensorKind::RopeFactorsLong, long),
            (TensorKind::RopeFactorsShort, short),
        ] {
            out.push(OutTensor {
                name: cx.names.format(kind, None, ".weight")?,
                kind,
                shape: vec![values.len() as u64],
                data: Data::Generated(values),
            });
        }
        Ok(out)
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        let md = cx.md;
        if let Some(tc) = md.json("tokenizer_config.json")? {
            let Some(class) = tokenizer::json_get(&tc, "tokenizer_class") else {
                bail!(
                    "{}: no \"tokenizer_class\"",
                    md.path("tokenizer_config.json").display()
                );
            };
            // Phi-4 uses the GPT-2 tokenizer
            if class == "GPT2Tokenizer" {
                return tokenizer::set_vocab_gpt2(md, cx.hp.json(), kv);
            }
        }
        tokenizer::create_vocab_phi3(md, cx.hp.json())?.write(md, kv)
    }
}

/// The sizes `set_gguf_parameters` and `generate_extra_tensors` both derive.
struct Geometry {
    n_embd: u64,
    n_head: u64,
    max_pos: u64,
    rope_dims: u64,
}

impl Geometry {
    fn of(hp: &Hparams) -> Result<Geometry> {
        let n_embd = hp.req_u64(&["hidden_size", "n_embd"])?;
        let n_head = hp.req_u64(&["num_attention_heads", "n_head"])?;
        let max_pos = hp.req_u64(&["n_positions", "max_position_embeddings"])?;
        let rot_pct = hp
            .rope_parameters()
            .get("partial_rotary_factor")
            .and_then(Json::as_f64)
            .unwrap_or(1.0);
        if n_head == 0 {
            bail!("config.json: num_attention_heads is 0");
        }
        // int(rot_pct * n_embd) // n_head
        let rope_dims = (rot_pct * n_embd as f64) as u64 / n_head;
        Ok(Geometry {
            n_embd,
            n_head,
            max_pos,
            rope_dims,
        })
    }
}

/// `rope_parameters["original_max_position_embeddings"]` (required by the converter).
fn orig_ctx(rope: &serde_json::Map<String, Json>) -> Result<u64> {
    rope.get("original_max_position_embeddings")
        .and_then(Json::as_u64)
        .context("config.json has no original_max_position_embeddings (Phi-3 needs it)")
}

fn truthy_list(v: &Json) -> bool {
    v.as_array().is_some_and(|a| !a.is_empty())
}

fn floats(v: &Json) -> Result<Vec<f32>> {
    v.as_array()
        .context("config.json: rope factors are not a list")?
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .context("config.json: a rope factor is not a number")
        })
        .collect()
}
