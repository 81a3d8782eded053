//! SentencePiece vocabularies as the converter assembles them: `_create_vocab_sentencepiece`
//! and `_set_vocab_sentencepiece` (base.py), and Phi-3's own variant (`Phi3MiniModel.set_vocab`,
//! phi.py).
//!
//! The pieces of tokenizer.model are overlaid with added_tokens.json and tokenizer_config.json
//! `added_tokens_decoder` (score -1000, CONTROL/USER_DEFINED), and ids up to config.json
//! `vocab_size` that no piece fills stay `[PAD{id}]` with score -10000 and type UNUSED.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_json::Value as Json;

use super::files::{self, ModelDir};
use super::special::SpecialVocab;
use super::spm::{self, PieceType};
use super::token_type::{does_token_look_special, token_types_value, TokenType};
use crate::arch::kv::{keys, Kv};
use crate::gguf::Value;

/// Tokens, scores and types of a `llama`-model vocabulary.
#[derive(Debug, Default)]
pub(crate) struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<TokenType>,
}

impl SpmVocab {
    /// `vocab_size` placeholders: `[PAD{i}]`, -10000, UNUSED.
    fn placeholders(vocab_size: usize) -> SpmVocab {
        SpmVocab {
            tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
            scores: vec![-10000.0; vocab_size],
            types: vec![TokenType::Unused; vocab_size],
        }
    }

    fn set(&mut self, id: usize, token: String, score: f32, kind: TokenType) {
        self.tokens[id] = token;
        self.scores[id] = score;
        self.types[id] = kind;
    }

    /// Writes model/pre/tokens/scores/types and the `SpecialVocab` (as `_set_vocab_sentencepiece`).
    pub fn write(self, md: &ModelDir, kv: &mut Kv) -> Result<()> {
        let n_vocab = self.tokens.len();
        kv.set_str(keys::MODEL, "llama");
        kv.set_str(keys::PRE, "default");
        kv.set_strings(keys::LIST, self.tokens);
        kv.set(keys::SCORES, Value::f32s(self.scores));
        kv.set(keys::TOKEN_TYPE, token_types_value(&self.types));
        SpecialVocab::load(md, false, None, Some(n_vocab))?.add_to_gguf(kv);
        Ok(())
    }
}

/// The token type `SentencePieceProcessor` reports (`IsUnknown`, `IsControl`, `IsUnused`,
/// `IsByte`, else NORMAL — a USER_DEFINED piece counts as NORMAL here).
fn piece_type(kind: PieceType) -> TokenType {
    match kind {
        PieceType::Unknown => TokenType::Unknown,
        PieceType::Control => TokenType::Control,
        PieceType::Unused => TokenType::Unused,
        PieceType::Byte => TokenType::Byte,
        PieceType::Normal | PieceType::UserDefined => TokenType::Normal,
    }
}

/// The path of tokenizer.model, if it is a file (the converter's FileNotFoundError branch).
pub(crate) fn tokenizer_model(md: &ModelDir) -> Option<std::path::PathBuf> {
    Some(md.path("tokenizer.model")).filter(|p| p.is_file())
}

/// A config.json integer that must be a non-negative count.
fn as_count(v: &Json, what: &str) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| anyhow!("config.json: {what} {v} is not a non-negative integer"))
}

/// A JSON token id (the converter indexes lists with it).
fn as_id(v: &Json, file: &Path, what: &str) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            anyhow!(
                "{}: {what}: id {v} is not a non-negative integer",
                file.display()
            )
        })
}

/// `_create_vocab_sentencepiece`.
pub(crate) fn create_vocab_sentencepiece(md: &ModelDir, hparams: &Json) -> Result<SpmVocab> {
    let model_path = md.path("tokenizer.model");
    if !model_path.is_file() {
        bail!("File not found: {}", model_path.display());
    }
    let pieces = spm::load(&model_path)?;

    // find_hparam(["vocab_size_per_layer_input", "vocab_size"], optional=True) or vocab_size()
    let key = ["vocab_size_per_layer_input", "vocab_size"]
        .into_iter()
        .find(|k| hparams.get(k).is_some());
    let configured = match key.and_then(|k| hparams.get(k).map(|v| (k, v))) {
        None | Some((_, Json::Null)) => 0,
        Some((k, v)) => as_count(v, k)?,
    };
    let vocab_size = if configured == 0 {
        pieces.len()
    } else {
        configured
    };

    let mut v = SpmVocab::placeholders(vocab_size);
    for (id, p) in pieces.into_iter().enumerate() {
        if id >= vocab_size {
            break; // "ignore tokens from {id}: id is out of range"
        }
        v.set(id, p.piece, p.score, piece_type(p.kind));
    }

    let at_path = md.path("added_tokens.json");
    if let Some(at) = md.json("added_tokens.json")? {
        let at = at
            .as_object()
            .ok_or_else(|| anyhow!("{} is not a JSON object", at_path.display()))?;
        for (key, id) in at {
            let id = as_id(id, &at_path, key)?;
            if id >= vocab_size {
                continue;
            }
            v.set(id, key.clone(), -1000.0, TokenType::UserDefined);
        }
    }

    let tc_path = md.path("tokenizer_config.json");
    if let Some(tc) = md.json("tokenizer_config.json")? {
        if let Some(decoder) = files::get(&tc, "added_tokens_decoder") {
            let decoder = decoder.as_object().ok_or_else(|| {
                anyhow!(
                    "{}: added_tokens_decoder is not an object",
                    tc_path.display()
                )
            })?;
            for (id, data) in decoder {
                let id: usize = id.parse().map_err(|_| {
                    anyhow!(
                        "{}: added_tokens_decoder key {id:?} is not a token id",
                        tc_path.display()
                    )
                })?;
                let mut token = content(data, &tc_path, id)?;
                if id >= vocab_size {
                    continue;
                }
                let kind = if files::get(data, "special").is_some_and(files::truthy)
                    || does_token_look_special(&token)
                {
                    TokenType::Control
                } else {
                    token = token.replace('\u{2581}', " ");
                    TokenType::UserDefined
                };
                v.set(id, token, -1000.0, kind);
            }
        }
    }
    // The converter then pads to vocab_size when there are fewer tokens; the placeholders
    // above always make exactly vocab_size tokens, so that branch never runs.
    Ok(v)
}

/// `added_tokens_decoder[id]["content"]`.
fn content(data: &Json, file: &Path, id: usize) -> Result<String> {
    files::get(data, "content")
        .and_then(Json::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "{}: added token {id} has no string \"content\"",
                file.display()
            )
        })
}

/// `_set_vocab_sentencepiece`.
pub(crate) fn set_vocab_sentencepiece(md: &ModelDir, hparams: &Json, kv: &mut Kv) -> Result<()> {
    create_vocab_sentencepiece(md, hparams)?.write(md, kv)
}

/// `Phi3MiniModel.set_vocab` after its GPT2Tokenizer check: like
/// `_create_vocab_sentencepiece`, but added tokens also come from tokenizer.json, no
/// "looks special" test or space pre-normalization, and out-of-range ids are errors.
pub(crate) fn create_vocab_phi3(md: &ModelDir, hparams: &Json) -> Result<SpmVocab> {
    let model_path = md.path("tokenizer.model");
    if !model_path.is_file() {
        bail!("Error: Missing {}", model_path.display());
    }
    let pieces = spm::load(&model_path)?;
    let vocab_size = match hparams.get("vocab_size") {
        None => pieces.len(),
        Some(v) => as_count(v, "vocab_size")?,
    };
    if pieces.len() > vocab_size {
        bail!(
            "{} has {} pieces, more than config.json vocab_size {vocab_size}",
            model_path.display(),
            pieces.len()
        );
    }
    let mut v = SpmVocab::placeholders(vocab_size);
    for (id, p) in pieces.into_iter().enumerate() {
        v.set(id, p.piece, p.score, piece_type(p.kind));
    }
    let out_of_range = |file: &Path, id: usize| {
        anyhow!(
            "{}: token id {id} is out of range (vocab_size {vocab_size})",
            file.display()
        )
    };

    let at_path = md.path("added_tokens.json");
    if let Some(at) = md.json("added_tokens.json")? {
        let at = at
            .as_object()
            .ok_or_else(|| anyhow!("{} is not a JSON object", at_path.display()))?;
        for (key, id) in at {
            let id = as_id(id, &at_path, key)?;
            if id >= vocab_size {
                continue;
            }
            v.set(id, key.clone(), -1000.0, TokenType::UserDefined);
        }
    }

    let tc_path = md.path("tokenizer_config.json");
    if let Some(tc) = md.json("tokenizer_config.json")? {
        if let Some(decoder) = files::get(&tc, "added_tokens_decoder") {
            let decoder = decoder.as_object().ok_or_else(|| {
                anyhow!(
                    "{}: added_tokens_decoder is not an object",
                    tc_path.display()
                )
            })?;
            for (id, data) in decoder {
                let id: usize = id.parse().map_err(|_| {
                    anyhow!(
                        "{}: added_tokens_decoder key {id:?} is not a token id",
                        tc_path.display()
                    )
                })?;
                let token = content(data, &tc_path, id)?;
                if id >= vocab_size {
                    return Err(out_of_range(&tc_path, id));
                }
                v.set(id, token, -1000.0, special_or_user(data));
            }
        }
    }

    let tj_path = md.path("tokenizer.json");
    if let Some(tj) = md.json("tokenizer.json")? {
        let empty = Vec::new();
        let added = match files::get(&tj, "added_tokens") {
            None => &empty,
            Some(a) => a
                .as_array()
                .ok_or_else(|| anyhow!("{}: added_tokens is not a list", tj_path.display()))?,
        };
        for data in added {
            let id = files::get(data, "id")
                .ok_or_else(|| anyhow!("{}: an added token has no \"id\"", tj_path.display()))
                .and_then(|id| as_id(id, &tj_path, "added_tokens"))?;
            let token = content(data, &tj_path, id)?;
            if id >= vocab_size {
                return Err(out_of_range(&tj_path, id));
            }
            v.set(id, token, -1000.0, special_or_user(data));
        }
    }
    Ok(v)
}

fn special_or_user(data: &Json) -> TokenType {
    if files::get(data, "special").is_some_and(files::truthy) {
        TokenType::Control
    } else {
        TokenType::UserDefined
    }
}
