//! Which vocabulary reader each architecture's `set_vocab` uses, and the keys it adds
//! around it (llama.cpp `conversion/llama.py` `LlamaModel`, `qwen.py` `Qwen2Model` /
//! `Qwen3Model`, `gemma.py` `Gemma2Model`, `phi.py` `Phi3MiniModel`).
//!
//! Converter branches for checkpoints gmat does not handle (Mistral-format/tekken, EAGLE-3
//! drafts, HybridDNA, GLM-ASR, Intern-S1) are reported as errors rather than guessed.

use anyhow::{bail, Result};
use serde_json::Value as Json;

use super::files::{self, ModelDir};
use super::kv::{keys, Kv};
use super::special::SpecialVocab;
use super::{bpe, llama_hf, spm_vocab};

/// `TextModel.__init__`: `{**hparams, **hparams["text_config"]}`.
pub(crate) fn merge_text_config(hparams: &Json) -> Json {
    match (hparams, hparams.get("text_config")) {
        (Json::Object(root), Some(Json::Object(text))) => {
            let mut merged = root.clone();
            for (k, v) in text {
                merged.insert(k.clone(), v.clone());
            }
            Json::Object(merged)
        }
        _ => hparams.clone(),
    }
}

/// `architectures[0]` of config.json (`origin_hf_arch`).
fn origin_hf_arch(hparams: &Json) -> Option<&str> {
    hparams.get("architectures")?.get(0)?.as_str()
}

/// Dispatches on the GGUF architecture.
pub(crate) fn set_vocab(md: &ModelDir, arch: &str, hparams: &Json, kv: &mut Kv) -> Result<()> {
    match arch {
        "llama" => llama(md, hparams, kv),
        "qwen2" => qwen2(md, hparams, kv),
        "qwen3" => {
            if origin_hf_arch(hparams) == Some("InternS1ForConditionalGeneration") {
                bail!("Intern-S1 vocabularies (_set_vocab_interns1) are not supported");
            }
            qwen2(md, hparams, kv)
        }
        "gemma2" => {
            spm_vocab::set_vocab_sentencepiece(md, hparams, kv)?;
            kv.set_bool(keys::ADD_PREFIX, false);
            Ok(())
        }
        "phi3" => phi3(md, hparams, kv),
        other => bail!(
            "tokenizer metadata for GGUF architecture {other:?} is not supported \
             (supported: llama, qwen2, qwen3, gemma2, phi3)"
        ),
    }
}

/// `LlamaModel.set_vocab`.
fn llama(md: &ModelDir, hparams: &Json, kv: &mut Kv) -> Result<()> {
    if origin_hf_arch(hparams) == Some("GlmasrModel") {
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
        match files::get(&tc, "add_prefix_space") {
            None | Some(Json::Null) => {}
            Some(Json::Bool(b)) => kv.set_bool(keys::ADD_PREFIX, *b),
            Some(v) => bail!(
                "{}: add_prefix_space {v} is not a boolean",
                md.path("tokenizer_config.json").display()
            ),
        }
        if files::get(&tc, "tokenizer_class").and_then(Json::as_str) == Some("HybridDNATokenizer") {
            bail!("HybridDNA vocabularies (_set_vocab_hybriddna) are not supported");
        }
    }

    if spm_vocab::tokenizer_model(md).is_some() {
        spm_vocab::set_vocab_sentencepiece(md, hparams, kv)?;
    } else if !md.is_file("tokenizer.json") {
        return no_tokenizer(md);
    } else if llama_hf::check(md)? {
        let v = llama_hf::create_vocab(md, hparams)?;
        v.write(md, kv)?;
    } else {
        // Llama 3
        bpe::set_vocab_gpt2(md, hparams, kv)?;
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

/// `Qwen2Model.set_vocab` (Qwen3 inherits it).
fn qwen2(md: &ModelDir, hparams: &Json, kv: &mut Kv) -> Result<()> {
    if spm_vocab::tokenizer_model(md).is_some() {
        spm_vocab::set_vocab_sentencepiece(md, hparams, kv)
    } else if !md.is_file("tokenizer.json") {
        no_tokenizer(md)
    } else {
        bpe::set_vocab_gpt2(md, hparams, kv)
    }
}

/// Neither vocabulary file exists (the converter fails inside AutoTokenizer then).
fn no_tokenizer(md: &ModelDir) -> Result<()> {
    bail!(
        "no tokenizer found: neither {} nor {} exists (vocab.json/merges.txt alone are not supported)",
        md.path("tokenizer.model").display(),
        md.path("tokenizer.json").display()
    )
}

/// `Phi3MiniModel.set_vocab`.
fn phi3(md: &ModelDir, hparams: &Json, kv: &mut Kv) -> Result<()> {
    let tc_path = md.path("tokenizer_config.json");
    if let Some(tc) = md.json("tokenizer_config.json")? {
        let Some(class) = files::get(&tc, "tokenizer_class") else {
            bail!("{}: no \"tokenizer_class\"", tc_path.display());
        };
        if class == "GPT2Tokenizer" {
            return bpe::set_vocab_gpt2(md, hparams, kv);
        }
    }
    spm_vocab::create_vocab_phi3(md, hparams)?.write(md, kv)
}
