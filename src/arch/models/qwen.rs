//! `qwen2` and `qwen3`: Qwen2Model and Qwen3Model of llama.cpp `conversion/qwen.py`.
//!
//! Both are `TextModel` with a SentencePiece-or-BPE vocabulary and the sentence-transformers
//! pooling type; Qwen3 adds Q/K norms (table data only). Qwen3 rerankers (a `cls_out` head cut
//! from the output matrix) and Intern-S1 vocabularies are refused, not guessed.

use anyhow::{bail, Result};

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
