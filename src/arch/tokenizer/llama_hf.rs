//! gguf-py's `LlamaHfVocab` (vocab.py) and `_set_vocab_llama_hf` (base.py): a Llama
//! vocabulary given only as a tokenizer.json BPE model with byte fallback (no
//! tokenizer.model). Written as model `llama` with every score -1000.
//!
//! [`check`] reproduces the constructor's pre-checks, which decide whether `LlamaModel`
//! falls through to the GPT-2 path: a Llama-3 style BPE raises TypeError, anything else that
//! is not BPE + byte_fallback + a `Sequence` decoder raises FileNotFoundError.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, Result};
use serde_json::Value as Json;

use super::files::{get, truthy, ModelDir};
use super::hf_tokenizer::HfTokenizer;
use super::spm_vocab::SpmVocab;
use super::token_type::TokenType;

/// Whether tokenizer.json is a vocabulary `LlamaHfVocab` accepts.
pub(crate) fn check(md: &ModelDir) -> Result<bool> {
    let path = md.path("tokenizer.json");
    let Some(tj) = md.json("tokenizer.json")? else {
        return Ok(false);
    };
    let model = get(&tj, "model").ok_or_else(|| anyhow!("{}: no \"model\"", path.display()))?;
    let kind =
        get(model, "type").ok_or_else(|| anyhow!("{}: no model \"type\"", path.display()))?;
    let bpe = kind == "BPE";
    let is_llama3 = bpe
        && get(model, "ignore_merges").is_some_and(truthy)
        && !get(model, "byte_fallback").is_none_or(truthy);
    if is_llama3 {
        return Ok(false);
    }
    let byte_fallback = get(model, "byte_fallback").is_some_and(truthy);
    // `tokenizer_json['decoder']['type']` on a null decoder is a TypeError: also a fallthrough.
    let seq_decoder =
        get(&tj, "decoder").and_then(|d| get(d, "type")) == Some(&Json::from("Sequence"));
    Ok(bpe && byte_fallback && seq_decoder)
}

/// `LlamaHfVocab(dir).all_tokens()`.
pub(crate) fn create_vocab(md: &ModelDir, hparams: &Json) -> Result<SpmVocab> {
    let path = md.path("tokenizer.json");
    let tok = HfTokenizer::load(md, hparams)?;
    let base = tok.base_vocab_size();
    let vocab = tok.vocab();

    let mut added: Vec<(String, u32)> = tok
        .added_tokens_decoder()
        .into_iter()
        .map(|(id, t)| (t.content, id))
        .collect();
    added.sort_by_key(|(_, id)| *id);
    let added: Vec<String> = added
        .into_iter()
        .filter(|(_, id)| *id as usize >= base)
        .map(|(t, _)| t)
        .collect();

    let mut specials: HashMap<&str, u32> = HashMap::new();
    let mut special_ids: HashSet<u32> = HashSet::new();
    for t in &tok.all_special_tokens {
        let id = vocab.get(t).copied().ok_or_else(|| {
            anyhow!(
                "{}: special token {t:?} is not in the vocabulary",
                path.display()
            )
        })?;
        specials.insert(t, id);
        special_ids.insert(id);
    }

    let mut reverse: HashMap<u32, &str> = HashMap::with_capacity(vocab.len());
    for (t, &id) in &vocab {
        reverse.insert(id, t);
    }
    let mut v = SpmVocab::default();
    for id in 0..base as u32 {
        let text = reverse
            .get(&id)
            .ok_or_else(|| anyhow!("{}: no token has id {id}", path.display()))?;
        let kind = if is_byte_token(text) {
            TokenType::Byte
        } else if special_ids.contains(&id) {
            TokenType::Control
        } else {
            TokenType::Normal
        };
        v.tokens.push(text.to_string());
        v.scores.push(-1000.0);
        v.types.push(kind);
    }
    for text in added {
        let kind = match specials.get(text.as_str()) {
            Some(id) if special_ids.contains(id) => TokenType::Control,
            Some(_) => TokenType::Normal,
            None => TokenType::UserDefined,
        };
        v.tokens.push(text);
        v.scores.push(-1000.0);
        v.types.push(kind);
    }
    Ok(v)
}

/// `re.fullmatch(br"<0x[0-9A-Fa-f]{2}>", token_text)`.
fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && b.starts_with(b"<0x")
        && b[5] == b'>'
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}
