//! `gemma2` and `gemma3`: Gemma2Model and Gemma3Model of llama.cpp `conversion/gemma.py`
//! (Gemma3Model also converts the text part of Gemma3ForConditionalGeneration).
//!
//! Gemma's RMSNorm multiplies by `1 + weight`, so the converter adds 1 to every `*norm.weight`
//! (in the source dtype's arithmetic: [`ValueOp::AddOne`]). Gemma 2 has no output tensor
//! (tied; a stray `lm_head.weight` is dropped), soft-capping and a sliding window; Gemma 3 trims
//! token-embedding rows past the real vocabulary and writes the local RoPE base.

use anyhow::Result;

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
            hp.u32(&["max_position_embeddings"])?.unwrap_or(131072),
        );
        kv.arch_u32(
            "attention.head_count",
            hp.u32(&["num_attention_heads"])?.unwrap_or(8),
        );
        kv.arch_f32(
            "attention.layer_norm_rms_epsilon",
            hp.f64(&["rms_norm_eps"])?.unwrap_or(1e-6),
        );
        let head_dim = hp.u32(&["head_dim"])?.unwrap_or(256);
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
            hp.u32(&["num_key_value_heads"])?.unwrap_or(4),
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
