//! GPT-2-style BPE vocabularies: `TextModel.get_vocab_base` and `_set_vocab_gpt2`.
//!
//! Tokens come from the loaded tokenizer's vocabulary (tokenizer.json plus transformers'
//! added tokens), padded with `[PAD{id}]`/UNUSED up to config.json `vocab_size`; added tokens
//! become CONTROL (special, or looking special) or USER_DEFINED, the rest NORMAL. Added tokens
//! that are not `normalized` are replaced by `decode(encode(token))`, because llama.cpp expects
//! CONTROL/USER_DEFINED texts pre-normalized.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value as Json;

use super::files::ModelDir;
use super::hf_tokenizer::HfTokenizer;
use super::pre_tokenizer;
use super::special::SpecialVocab;
use super::token_type::{does_token_look_special, token_types_value, TokenType};
use crate::arch::kv::{keys, Kv};

/// A BPE vocabulary and its pre-tokenizer name.
pub(crate) struct BpeVocab {
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    pub pre: &'static str,
}

/// `get_vocab_base`.
pub(crate) fn get_vocab_base(md: &ModelDir, hparams: &Json) -> Result<BpeVocab> {
    let tj_path = md.path("tokenizer.json");
    let tok = HfTokenizer::load(md, hparams)?;
    let vocab = tok.vocab();
    let vocab_size = match hparams.get("vocab_size") {
        None => vocab.len(),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| anyhow!("config.json: vocab_size {v} is not a non-negative integer"))?,
    };
    let max_id = vocab.values().copied().max().unwrap_or(0);
    if vocab.is_empty() || max_id as usize >= vocab_size {
        bail!(
            "{}: token id {max_id} is not below config.json vocab_size {vocab_size}",
            tj_path.display()
        );
    }
    let pre = match md.pre_tokenizer() {
        Some(name) => pre_tokenizer::named(name)?,
        None => pre_tokenizer::detect(&tok, &tj_path)?,
    };

    let mut reverse: Vec<Option<&str>> = vec![None; vocab_size];
    for (text, &id) in &vocab {
        reverse[id as usize] = Some(text.as_str());
    }
    let decoder = tok.added_tokens_decoder();
    let added: HashSet<&str> = decoder.values().map(|t| t.content.as_str()).collect();

    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, slot) in reverse.iter().enumerate() {
        let Some(text) = *slot else {
            tokens.push(format!("[PAD{i}]"));
            types.push(TokenType::Unused);
            continue;
        };
        if !added.contains(text) {
            tokens.push(text.to_string());
            types.push(TokenType::Normal);
            continue;
        }
        let info = decoder.get(&(i as u32)).ok_or_else(|| {
            anyhow!(
                "{}: added token {text:?} has no entry for id {i}",
                tj_path.display()
            )
        })?;
        let mut token = text.to_string();
        if !info.normalized {
            let ids = tok.encode(&token, false)?;
            token = tok
                .decode(&ids)
                .with_context(|| format!("normalizing added token {text:?}"))?;
        }
        if info.special || does_token_look_special(&token) {
            types.push(TokenType::Control);
        } else {
            // Gemma: pre-normalize user-defined spaces.
            token = token.replace('\u{2581}', " ");
            types.push(TokenType::UserDefined);
        }
        tokens.push(token);
    }
    Ok(BpeVocab { tokens, types, pre })
}

/// `_set_vocab_gpt2`.
pub(crate) fn set_vocab_gpt2(md: &ModelDir, hparams: &Json, kv: &mut Kv) -> Result<()> {
    let v = get_vocab_base(md, hparams)?;
    kv.set_str(keys::MODEL, "gpt2");
    kv.set_str(keys::PRE, v.pre);
    kv.set_strings(keys::LIST, v.tokens);
    kv.set(keys::TOKEN_TYPE, token_types_value(&v.types));
    SpecialVocab::load(md, true, None, None)?.add_to_gguf(kv);
    Ok(())
}
