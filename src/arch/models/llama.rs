//! `llama`: LlamaModel of llama.cpp `conversion/llama.py` (Llama 1–3, Mistral, Mixtral).
//!
//! What it adds to `TextModel`: the Q/K row permutation (`LlamaModel.permute`, undoing HF's
//! rotary layout), Mixtral's `block_sparse_moe` expert stacks (w1, w2, w3), `vocab_size` and
//! `rope.dimension_count`, and the `rope_freqs` tensor of Llama-3 RoPE scaling.

use anyhow::{bail, Result};
use serde_json::Value as Json;

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
    } else if !md.is_file("tokenizer.json") {
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
