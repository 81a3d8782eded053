//! The `tokenizer.*` GGUF metadata, exactly as llama.cpp's `convert_hf_to_gguf.py` writes it.
//!
//! This is a port of the converter's vocabulary readers (llama.cpp `conversion/base.py`
//! `_set_vocab_*`, the family-specific readers, and gguf-py `vocab.py`), not a
//! reimplementation of tokenization: llama.cpp's tokenizer reads these keys, so every token
//! string, type, score, merge, special id and flag has to be what the converter would have
//! written. Which reader a model uses is its architecture's `set_vocab` (`arch::models`).
//!
//! * `spm_vocab` / `spm` / `protobuf`: SentencePiece vocabularies from tokenizer.model.
//! * `bpe` / `hf_tokenizer` / `tokenizer_class` / `added_tokens` / `pre_tokenizer`: vocabularies
//!   from tokenizer.json (loaded as transformers' AutoTokenizer would) and the
//!   `tokenizer.ggml.pre` hash detection.
//! * `llama_hf`: Llama BPE-with-byte-fallback vocabularies from tokenizer.json alone.
//! * `special` / `merges` / `chat_template`: gguf-py's `SpecialVocab` (merges, special
//!   ids, add-flags, chat template).
//! * `token_type`: gguf-py's token types.

mod added_tokens;
mod bpe;
mod chat_template;
mod files;
pub(crate) mod hf_tokenizer;
mod llama_hf;
mod merges;
mod pre_tokenizer;
mod protobuf;
mod slow_bpe;
mod special;
pub(crate) mod spm;
mod spm_vocab;
#[cfg(test)]
mod tests;
mod token_type;
mod tokenizer_class;

pub use files::ModelDir;
pub use token_type::TokenType;

pub(crate) use bpe::{get_vocab_base, set_vocab_gpt2};
pub(crate) use files::get as json_get;
pub(crate) use llama_hf::{check as llama_hf_applies, create_vocab as create_vocab_llama_hf};
pub(crate) use special::SpecialVocab;
pub(crate) use spm_vocab::{
    create_vocab_phi3, create_vocab_sentencepiece, set_vocab_sentencepiece, tokenizer_model,
};

use anyhow::{bail, Result};
use serde_json::Value as Json;

use crate::arch::kv::Kv;

/// `try: self._set_vocab_sentencepiece() except FileNotFoundError: self._set_vocab_gpt2()`
/// (Qwen2 and the families that copy it).
pub(crate) fn set_vocab_sentencepiece_or_gpt2(
    md: &ModelDir,
    hparams: &Json,
    kv: &mut Kv,
) -> Result<()> {
    if tokenizer_model(md).is_some() {
        set_vocab_sentencepiece(md, hparams, kv)
    } else if !has_bpe_files(md) {
        bail!("{}", no_tokenizer(md))
    } else {
        set_vocab_gpt2(md, hparams, kv)
    }
}

/// Whether the folder has a BPE tokenizer AutoTokenizer can load: tokenizer.json, or a slow
/// GPT-2-style tokenizer's vocab.json + merges.txt.
pub(crate) fn has_bpe_files(md: &ModelDir) -> bool {
    md.is_file("tokenizer.json") || slow_bpe::present(md)
}

/// The error when no vocabulary file exists (the converter fails inside AutoTokenizer).
pub(crate) fn no_tokenizer(md: &ModelDir) -> String {
    format!(
        "no tokenizer found: none of {}, {} or vocab.json + merges.txt exists",
        md.path("tokenizer.model").display(),
        md.path("tokenizer.json").display()
    )
}
