//! The added and special tokens of a fast tokenizer after `from_pretrained` (transformers
//! 4.57 `PreTrainedTokenizerBase._from_pretrained` and `PreTrainedTokenizerFast.__init__`).
//!
//! transformers builds an `added_tokens_decoder` from tokenizer_config.json (or, without one
//! there, from added_tokens.json and tokenizer.json) and special-token values from
//! tokenizer_config.json, special_tokens_map.json and the class defaults; it then re-adds every
//! decoder entry that differs from tokenizer.json's and every special token not yet an added
//! token, marking special each one whose text is a special token. Added tokens decide CONTROL /
//! USER_DEFINED / NORMAL types and which ids the pre-tokenizer hash sees, so the steps are
//! reproduced in order, with Python's equality rules (a string never equals an `AddedToken`;
//! two `AddedToken`s are equal only when every flag is).

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value as Json};
use tokenizers::{AddedToken, Tokenizer};

use super::files::{truthy, ModelDir};
use super::tokenizer_class::Class;

/// `SPECIAL_TOKENS_ATTRIBUTES` without `additional_special_tokens`.
const SPECIAL_ATTRS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// A Python `tokenizers.AddedToken`: `normalized` defaults to `not special` at use time.
#[derive(Clone, Debug, PartialEq)]
struct PyAddedToken {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: Option<bool>,
    special: bool,
}

impl PyAddedToken {
    fn new(content: &str, special: bool) -> Self {
        PyAddedToken {
            content: content.to_string(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: None,
            special,
        }
    }

    /// `AddedToken(**d)`.
    fn from_json(d: &Map<String, Json>) -> Result<Self> {
        let content = d
            .get("content")
            .and_then(Json::as_str)
            .ok_or_else(|| anyhow!("added token without a string `content`"))?;
        let flag = |k: &str| d.get(k).map(truthy);
        let mut t = PyAddedToken::new(content, flag("special").unwrap_or(false));
        t.single_word = flag("single_word").unwrap_or(false);
        t.lstrip = flag("lstrip").unwrap_or(false);
        t.rstrip = flag("rstrip").unwrap_or(false);
        t.normalized = flag("normalized");
        Ok(t)
    }

    fn from_crate(t: &AddedToken) -> Self {
        PyAddedToken {
            content: t.content.clone(),
            single_word: t.single_word,
            lstrip: t.lstrip,
            rstrip: t.rstrip,
            normalized: Some(t.normalized),
            special: t.special,
        }
    }

    fn to_crate(&self) -> AddedToken {
        AddedToken::from(self.content.clone(), self.special)
            .single_word(self.single_word)
            .lstrip(self.lstrip)
            .rstrip(self.rstrip)
            .normalized(self.normalized.unwrap_or(!self.special))
    }
}

/// A special-token attribute value: a plain string or an `AddedToken`.
#[derive(Clone, Debug)]
enum SpecialValue {
    Str(String),
    Token(PyAddedToken),
}

impl SpecialValue {
    fn content(&self) -> &str {
        match self {
            SpecialValue::Str(s) => s,
            SpecialValue::Token(t) => &t.content,
        }
    }

    /// A value from tokenizer_config.json (`convert_added_tokens` turns `__type: AddedToken`
    /// dicts into tokens). `stm` marks special_tokens_map.json dicts, which are forced special.
    fn from_json(v: &Json, stm: bool) -> Result<Option<SpecialValue>> {
        Ok(match v {
            Json::Null => None,
            Json::String(s) => Some(SpecialValue::Str(s.clone())),
            Json::Object(o) => {
                let mut t = PyAddedToken::from_json(o)?;
                if stm {
                    t.special = true;
                }
                Some(SpecialValue::Token(t))
            }
            other => bail!("a special token must be a string or an AddedToken, not {other}"),
        })
    }
}

/// The special-token attributes after loading, and `all_special_tokens`.
pub(crate) struct Specials {
    values: Vec<(String, Option<SpecialValue>)>,
    pub all_special_tokens: Vec<String>,
}

impl Specials {
    /// The text of a special-token attribute (`tokenizer.bos_token`), if set.
    pub fn text(&self, attr: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(a, _)| a == attr)
            .and_then(|(_, v)| v.as_ref().map(|v| v.content().to_string()))
    }
}

/// Applies transformers' added-token handling to `tok` (freshly loaded from tokenizer.json).
pub(crate) fn apply(
    md: &ModelDir,
    tc: Option<&Map<String, Json>>,
    class: Class,
    tok: &mut Tokenizer,
) -> Result<Specials> {
    let tc_path = md.path("tokenizer_config.json");
    let tc_get = |k: &str| tc.and_then(|m| m.get(k));
    // added_tokens_decoder as from_pretrained builds it, and the special token values.
    let mut decoder: Vec<(i64, PyAddedToken)> = Vec::new();
    let mut specials: Vec<(String, Option<SpecialValue>)> = Vec::new();
    let mut additional: Vec<SpecialValue> = Vec::new();
    let mut from_stm: Vec<(String, Option<SpecialValue>)> = Vec::new();
    let ctx = |what: &str| format!("{what} of {}", tc_path.display());
    for attr in SPECIAL_ATTRS {
        if let Some(v) = tc_get(attr) {
            let v = SpecialValue::from_json(v, false).with_context(|| ctx(attr))?;
            specials.push((attr.to_string(), v));
        }
    }
    if let Some(Json::Array(list)) = tc_get("additional_special_tokens") {
        for v in list {
            if let Some(v) = SpecialValue::from_json(v, false)
                .with_context(|| ctx("additional_special_tokens"))?
            {
                additional.push(v);
            }
        }
    }
    match tc_get("added_tokens_decoder") {
        Some(Json::Object(m)) => {
            for (idx, t) in m {
                let idx: i64 = idx.parse().map_err(|_| {
                    anyhow!(
                        "{}: key {idx:?} is not an integer",
                        ctx("added_tokens_decoder")
                    )
                })?;
                let t = t
                    .as_object()
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: entry {idx} is not an object",
                            ctx("added_tokens_decoder")
                        )
                    })
                    .and_then(PyAddedToken::from_json)
                    .with_context(|| ctx("added_tokens_decoder"))?;
                decoder.push((idx, t));
            }
        }
        Some(_) => bail!("{} is not an object", ctx("added_tokens_decoder")),
        None => {
            let stm_path = md.path("special_tokens_map.json");
            if let Some(stm) = md.json("special_tokens_map.json")? {
                let stm = stm
                    .as_object()
                    .ok_or_else(|| anyhow!("{} is not a JSON object", stm_path.display()))?;
                for (k, v) in stm {
                    let c = || format!("{k} of {}", stm_path.display());
                    if k == "additional_special_tokens" {
                        if let Json::Array(list) = v {
                            for t in list {
                                if let Some(t) = SpecialValue::from_json(t, true).with_context(c)? {
                                    if !additional.iter().any(|a| a.content() == t.content()) {
                                        additional.push(t);
                                    }
                                }
                            }
                        }
                    } else if SPECIAL_ATTRS.contains(&k.as_str()) {
                        from_stm
                            .push((k.clone(), SpecialValue::from_json(v, true).with_context(c)?));
                    }
                }
            }
            for (k, v) in from_stm.drain(..) {
                match specials.iter_mut().find(|(a, _)| *a == k) {
                    Some(e) => e.1 = v,
                    None => specials.push((k, v)),
                }
            }
            let special_strings: Vec<String> = specials
                .iter()
                .filter_map(|(_, v)| v.as_ref().map(|v| v.content().to_string()))
                .chain(additional.iter().map(|v| v.content().to_string()))
                .collect();
            let at_path = md.path("added_tokens.json");
            if let Some(at) = md.json("added_tokens.json")? {
                let at = at
                    .as_object()
                    .ok_or_else(|| anyhow!("{} is not a JSON object", at_path.display()))?;
                for (content, idx) in at {
                    let idx = idx.as_i64().ok_or_else(|| {
                        anyhow!("{}: id of {content:?} is not an integer", at_path.display())
                    })?;
                    let special = special_strings.contains(content);
                    let mut t = PyAddedToken::new(content, special);
                    t.normalized = Some(!special);
                    decoder.retain(|(i, _)| *i != idx);
                    decoder.push((idx, t));
                }
            }
            // tokenizer.json's own added tokens (they override added_tokens.json ids).
            for (id, t) in tok.get_added_tokens_decoder() {
                let idx = i64::from(id);
                decoder.retain(|(i, _)| *i != idx);
                decoder.push((idx, PyAddedToken::from_crate(&t)));
            }
        }
    }
    decoder.sort_by_key(|(i, _)| *i);

    // Special values that name an added token become that token (`added_tokens_map`).
    if !decoder.is_empty() {
        for (_, v) in specials.iter_mut() {
            if let Some(val) = v {
                let content = val.content().to_string();
                if let Some((_, t)) = decoder.iter().rev().find(|(_, t)| t.content == content) {
                    *val = SpecialValue::Token(t.clone());
                }
            }
        }
    }
    // Class defaults for attributes tokenizer_config did not mention.
    for attr in SPECIAL_ATTRS {
        if !specials.iter().any(|(a, _)| a == attr) {
            if let Some(d) = class.default_special(attr) {
                specials.push((attr.to_string(), Some(SpecialValue::Str(d.to_string()))));
            }
        }
    }
    // all_special_tokens_extended: attribute order, then additional, deduplicated by text.
    let mut extended: Vec<SpecialValue> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for attr in SPECIAL_ATTRS {
        let v = specials
            .iter()
            .find(|(a, _)| a == attr)
            .and_then(|(_, v)| v.clone());
        if let Some(v) = v.filter(|v| !v.content().is_empty()) {
            if seen.insert(v.content().to_string()) {
                extended.push(v);
            }
        }
    }
    for v in &additional {
        if seen.insert(v.content().to_string()) {
            extended.push(v.clone());
        }
    }
    let all_special_tokens: Vec<String> =
        extended.iter().map(|v| v.content().to_string()).collect();

    // PreTrainedTokenizerFast.__init__: tokens_to_add.
    let backend: Vec<AddedToken> = tok.get_added_tokens_decoder().into_values().collect();
    let mut to_add: Vec<PyAddedToken> = decoder
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| !backend.contains(&t.to_crate()))
        .collect();
    let encoder: HashSet<String> = backend
        .iter()
        .map(|t| t.content.clone())
        .chain(to_add.iter().map(|t| t.content.clone()))
        .collect();
    let before = to_add.len();
    for v in &extended {
        match v {
            SpecialValue::Str(s) => {
                if !encoder.contains(s) {
                    to_add.push(PyAddedToken::new(s, true));
                }
            }
            SpecialValue::Token(t) => {
                let t_crate = t.to_crate();
                if !to_add[..before].iter().any(|a| a.to_crate() == t_crate) {
                    to_add.push(t.clone());
                }
            }
        }
    }
    if !to_add.is_empty() {
        let tokens: Vec<AddedToken> = to_add
            .iter_mut()
            .map(|t| {
                t.special = t.special || all_special_tokens.contains(&t.content);
                t.to_crate()
            })
            .collect();
        tok.add_tokens(&tokens);
    }
    Ok(Specials {
        values: specials,
        all_special_tokens,
    })
}
