//! The `tokenizer.*` GGUF metadata, exactly as llama.cpp's `convert_hf_to_gguf.py` writes it.
//!
//! This is a port of the converter's vocabulary code (llama.cpp `conversion/base.py`,
//! `conversion/{llama,qwen,gemma,phi}.py` and gguf-py `vocab.py`), not a reimplementation of
//! tokenization: llama.cpp's tokenizer reads these keys, so every token string, type, score,
//! merge, special id and flag has to be what the converter would have written.
//!
//! * `models`: the per-architecture `set_vocab` choices (which vocabulary reader, extra keys).
//! * `spm_vocab` / `spm` / `protobuf`: SentencePiece vocabularies from tokenizer.model.
//! * `bpe` / `hf_tokenizer` / `added_tokens` / `pre_tokenizer`: GPT-2-style BPE
//!   vocabularies from tokenizer.json (loaded as transformers' AutoTokenizer would) and the
//!   `tokenizer.ggml.pre` hash detection.
//! * `llama_hf`: Llama BPE-with-byte-fallback vocabularies from tokenizer.json alone.
//! * `special` / `merges` / `chat_template`: gguf-py's `SpecialVocab` (merges, special
//!   ids, add-flags, chat template).
//! * `kv`: the ordered key table that mirrors `GGUFWriter`'s dict.

mod added_tokens;
mod bpe;
mod chat_template;
mod files;
mod hf_tokenizer;
mod kv;
mod llama_hf;
mod merges;
mod models;
mod pre_tokenizer;
mod protobuf;
mod special;
mod spm;
mod spm_vocab;
#[cfg(test)]
mod tests;

use std::path::Path;

use anyhow::Result;

use crate::gguf::Value;

/// gguf-py `TokenType` (and the converter's `SentencePieceTokenTypes`, same values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// The token-type array as gguf-py writes a `list[int]` (INT32 elements).
pub(crate) fn token_types_value(types: &[TokenType]) -> Value {
    Value::i32s(types.iter().map(|t| *t as i32))
}

/// `TextModel.does_token_look_special`: added tokens some models forgot to mark special.
pub(crate) fn does_token_look_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

/// The `tokenizer.*` metadata convert_hf_to_gguf.py writes for a model whose tokenizer files
/// are in `dir` (tokenizer.json, tokenizer.model, tokenizer_config.json,
/// special_tokens_map.json, added_tokens.json, vocab.json, merges.txt, chat_template.jinja,
/// config.json, generation_config.json).
/// `arch` is the GGUF architecture ("llama", "qwen2", "qwen3", "gemma2", "phi3"); `hparams` is
/// config.json. Keys come in the converter's order.
///
/// The converter's hparams are `AutoConfig.to_dict()`, which fills class defaults (e.g.
/// `vocab_size`) that a sparse config.json may lack; pass a config that states `vocab_size`.
pub fn tokenizer_metadata(
    dir: &Path,
    arch: &str,
    hparams: &serde_json::Value,
) -> Result<Vec<(String, Value)>> {
    let hparams = models::merge_text_config(hparams);
    let mut kv = kv::Kv::default();
    let md = files::ModelDir::new(dir);
    models::set_vocab(&md, arch, &hparams, &mut kv)?;
    Ok(kv.into_vec())
}
