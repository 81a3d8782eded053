//! The tokenizer the converter gets from `AutoTokenizer.from_pretrained(dir)` (transformers
//! 4.57, fast tokenizers), rebuilt on the `tokenizers` crate — the same Rust library the Python
//! package wraps — so `encode`/`decode`/`get_vocab` agree id for id.
//!
//! transformers does more than load tokenizer.json, and each of these changes what the
//! converter sees (token ids of the pre-tokenizer hash, which tokens count as added/special):
//! * added tokens from tokenizer_config.json / added_tokens.json and missing special tokens
//!   are (re-)added and marked special ([`super::added_tokens`]);
//! * a top-level ByteLevel pre-tokenizer gets tokenizer_config's `add_prefix_space`;
//! * `LlamaTokenizerFast` replaces the post-processor with `<bos> $A <eos>` per
//!   add_bos_token/add_eos_token (`update_post_processor`);
//! * tokenizer.json truncation/padding are not applied by `encode`;
//! * `decode` applies `clean_up_tokenization` when clean_up_tokenization_spaces is set.
//!
//! Tokenizer classes other than the generic, GPT-2, Qwen2 and Llama fast tokenizers are
//! treated like the generic `PreTrainedTokenizerFast`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use tokenizers::models::bpe::BPE;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, ModelWrapper, Tokenizer};

use super::added_tokens::{self, Specials};
use super::files::{get, truthy, ModelDir};
use super::slow_bpe;
use super::tokenizer_class::Class;

/// The loaded tokenizer and what the converter reads from it.
pub(crate) struct HfTokenizer {
    pub tok: Tokenizer,
    clean_up_tokenization_spaces: bool,
    /// `all_special_tokens`, in transformers' order.
    pub all_special_tokens: Vec<String>,
}

impl HfTokenizer {
    /// Loads `dir/tokenizer.json` the way `AutoTokenizer.from_pretrained(dir)` does; `config`
    /// is config.json (for the tokenizer class when tokenizer_config.json names none).
    pub fn load(md: &ModelDir, config: &Json) -> Result<HfTokenizer> {
        let tj_path = md.path("tokenizer.json");
        if !tj_path.is_file() && !slow_bpe::present(md) {
            bail!(
                "{} not found: gmat reads BPE vocabularies from tokenizer.json, or from \
                 vocab.json + merges.txt",
                tj_path.display()
            );
        }
        let tc_path = md.path("tokenizer_config.json");
        let tc_json = md.json("tokenizer_config.json")?;
        let tc_ref = match tc_json.as_deref() {
            None => None,
            Some(Json::Object(m)) => Some(m),
            Some(_) => bail!("{} is not a JSON object", tc_path.display()),
        };
        let class = Class::detect(tc_ref, config);
        let tc_get = |k: &str| tc_ref.and_then(|m| m.get(k));

        let tj = match md.json("tokenizer.json")? {
            Some(tj) => tj,
            None => {
                let name = tc_get("tokenizer_class")
                    .or_else(|| get(config, "tokenizer_class"))
                    .and_then(Json::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        format!(
                            "(the default of model_type {})",
                            get(config, "model_type").unwrap_or(&Json::Null)
                        )
                    });
                std::rc::Rc::new(
                    slow_bpe::tokenizer_json(md, class, tc_ref, &name)
                        .context("building the tokenizer from vocab.json + merges.txt")?,
                )
            }
        };
        let mut tok = backend(&tj).with_context(|| format!("cannot load {}", tj_path.display()))?;
        tok.with_truncation(None)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("{}: truncation", tj_path.display()))?;
        tok.with_padding(None);
        if let Some(Json::Bool(split)) = tc_get("split_special_tokens") {
            tok.set_encode_special_tokens(*split);
        }

        if class == Class::Llama && tc_get("add_prefix_space").is_some_and(|v| !v.is_null()) {
            // LlamaTokenizerFast then rebuilds itself from tokenizer.model (from_slow=True).
            bail!(
                "{}: a LlamaTokenizer with add_prefix_space is rebuilt by transformers from \
                 tokenizer.model, which is not supported for a BPE tokenizer.json",
                tc_path.display()
            );
        }

        let specials = added_tokens::apply(md, tc_ref, class, &mut tok)?;

        // A top-level ByteLevel pre-tokenizer takes add_prefix_space from the config.
        let add_prefix_space = match (tc_get("add_prefix_space"), class) {
            (Some(Json::Bool(b)), _) => Some(*b),
            (None, Class::Llama) => None,
            (None, _) => Some(false),
            _ => None,
        };
        if let Some(aps) = add_prefix_space {
            set_byte_level_prefix_space(&mut tok, &tj_path, aps)?;
        }

        if class == Class::Llama {
            update_llama_post_processor(&mut tok, tc_ref, &specials).with_context(|| {
                format!(
                    "LlamaTokenizerFast post-processor for {}",
                    tj_path.display()
                )
            })?;
        }

        let clean_up = tc_get("clean_up_tokenization_spaces").is_some_and(truthy);
        Ok(HfTokenizer {
            tok,
            clean_up_tokenization_spaces: clean_up,
            all_special_tokens: specials.all_special_tokens,
        })
    }

    /// `tokenizer.encode(text, add_special_tokens=...)`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .tok
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("cannot encode {text:?}: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `tokenizer.decode(ids)` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self
            .tok
            .decode(ids, false)
            .map_err(|e| anyhow!("cannot decode {ids:?}: {e}"))?;
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// `tokenizer.vocab` (with added tokens).
    pub fn vocab(&self) -> HashMap<String, u32> {
        self.tok.get_vocab(true)
    }

    /// `tokenizer.added_tokens_decoder`.
    pub fn added_tokens_decoder(&self) -> HashMap<u32, AddedToken> {
        self.tok.get_added_tokens_decoder().into_iter().collect()
    }

    /// `tokenizer.vocab_size` (without added tokens).
    pub fn base_vocab_size(&self) -> usize {
        self.tok.get_vocab_size(false)
    }
}

/// `Tokenizer::from_file` on already parsed JSON. The crate's own model deserialization goes
/// through an untagged enum, a flattened map and a `serde_json::Value` before it reaches
/// `BPE`, copying a 150k-token vocabulary and merge list several times (most of a second in
/// release); here `BPE` is deserialized straight from the JSON value, the rest of the
/// tokenizer around a placeholder model, and then the model is put in and the added tokens
/// are added exactly as the crate's `TokenizerVisitor` does after building.
pub(crate) fn backend(json: &Json) -> Result<Tokenizer> {
    // The tokenizers crate panics on some malformed files (found by fuzzing, src/fuzz.rs): the
    // known case is refused first, and any other panic becomes an error.
    check_bpe_merges(json)?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend_unchecked(json)))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            Err(anyhow!("the tokenizers library cannot load it ({what})"))
        })
}

/// The tokenizers crate slices the continuing-subword prefix off the second token of every
/// merge without checking that it is there (`&b[prefix_len..]`): refuse such a merge.
fn check_bpe_merges(json: &Json) -> Result<()> {
    let Some(model) = get(json, "model") else {
        return Ok(());
    };
    let prefix = get(model, "continuing_subword_prefix")
        .and_then(Json::as_str)
        .unwrap_or("");
    if prefix.is_empty() {
        return Ok(());
    }
    for m in get(model, "merges")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let second = match m {
            Json::String(s) => s.split_once(' ').map(|(_, b)| b),
            Json::Array(p) => p.get(1).and_then(Json::as_str),
            _ => None,
        };
        if let Some(b) = second {
            if b.get(prefix.len()..).is_none() {
                bail!(
                    "model: merge {m} has a second token shorter than continuing_subword_prefix {prefix:?}"
                );
            }
        }
    }
    Ok(())
}

fn backend_unchecked(json: &Json) -> Result<Tokenizer> {
    let obj = json
        .as_object()
        .ok_or_else(|| anyhow!("the file is not a JSON object"))?;
    let model_json = obj.get("model").ok_or_else(|| anyhow!("no \"model\""))?;
    let model = if get(model_json, "type").and_then(Json::as_str) == Some("BPE") {
        ModelWrapper::BPE(BPE::deserialize(model_json).context("model")?)
    } else {
        ModelWrapper::deserialize(model_json).context("model")?
    };
    let mut rest = Map::new();
    for (k, v) in obj {
        if k != "model" && k != "added_tokens" {
            rest.insert(k.clone(), v.clone());
        }
    }
    rest.insert(
        "model".into(),
        serde_json::json!({"type": "WordLevel", "vocab": {}, "unk_token": ""}),
    );
    let mut tok = Tokenizer::deserialize(&Json::Object(rest))?;
    tok.with_model(model);
    let added = match obj.get("added_tokens") {
        None => Vec::new(),
        Some(v) => Vec::<AddedToken>::deserialize(v).context("added_tokens")?,
    };
    tok.add_tokens(&added);
    Ok(tok)
}

/// The ByteLevel `add_prefix_space` override of `PreTrainedTokenizerFast.__init__`.
fn set_byte_level_prefix_space(tok: &mut Tokenizer, path: &Path, aps: bool) -> Result<()> {
    let Some(pre) = tok.get_pre_tokenizer() else {
        return Ok(());
    };
    let mut state =
        serde_json::to_value(pre).with_context(|| format!("{}: pre_tokenizer", path.display()))?;
    let Some(obj) = state.as_object_mut() else {
        return Ok(());
    };
    if obj.get("type").and_then(Json::as_str) != Some("ByteLevel") {
        return Ok(());
    }
    if obj.get("add_prefix_space").and_then(Json::as_bool) == Some(aps) {
        return Ok(());
    }
    obj.insert("add_prefix_space".into(), Json::Bool(aps));
    let pre: tokenizers::PreTokenizerWrapper = serde_json::from_value(state)
        .with_context(|| format!("{}: pre_tokenizer", path.display()))?;
    tok.with_pre_tokenizer(Some(pre));
    Ok(())
}

/// `LlamaTokenizerFast.update_post_processor`.
fn update_llama_post_processor(
    tok: &mut Tokenizer,
    tc: Option<&Map<String, Json>>,
    specials: &Specials,
) -> Result<()> {
    let flag = |k: &str, default: bool| tc.and_then(|m| m.get(k)).map_or(default, truthy);
    let add_bos = flag("add_bos_token", true);
    let add_eos = flag("add_eos_token", false);
    let text = |attr: &str| specials.text(attr);
    let id_of = |t: &str| -> Result<u32> {
        tok.token_to_id(t)
            .or_else(|| text("unk_token").and_then(|u| tok.token_to_id(&u)))
            .ok_or_else(|| anyhow!("special token {t:?} is not in the vocabulary"))
    };
    let mut special_tokens: Vec<(String, u32)> = Vec::new();
    let mut single = String::new();
    let mut pair_bos = String::new();
    let mut pair_eos = String::new();
    if add_bos {
        let bos = text("bos_token")
            .ok_or_else(|| anyhow!("add_bos_token = True but bos_token = None"))?;
        single.push_str(&format!("{bos}:0 "));
        pair_bos = format!(" {bos}:1");
        special_tokens.push((bos.clone(), id_of(&bos)?));
    }
    single.push_str("$A:0");
    if add_eos {
        let eos = text("eos_token")
            .ok_or_else(|| anyhow!("add_eos_token = True but eos_token = None"))?;
        single.push_str(&format!(" {eos}:0"));
        pair_eos = format!(" {eos}:1");
        special_tokens.push((eos.clone(), id_of(&eos)?));
    }
    let pair = format!("{single}{pair_bos} $B:1{pair_eos}");
    let template = TemplateProcessing::builder()
        .try_single(single.as_str())
        .map_err(|e| anyhow!("template {single:?}: {e}"))?
        .try_pair(pair.as_str())
        .map_err(|e| anyhow!("template {pair:?}: {e}"))?
        .special_tokens(special_tokens)
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    tok.with_post_processor(Some(template));
    Ok(())
}

/// `PreTrainedTokenizerBase.clean_up_tokenization`.
fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
