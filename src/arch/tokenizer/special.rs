//! Port of gguf-py's `SpecialVocab` (gguf-py/gguf/vocab.py): merges, special token ids,
//! `add_{bos,eos,sep}_token` flags, the chat template and the normalizer flags.
//!
//! The Python class is followed statement by statement, including its quirks, because the
//! converter's output is defined by it: the first source that sets a special token id wins
//! (tokenizer_config.json via tokenizer.json's `added_tokens`, then config.json), the
//! tokenizer.json post-processor decides the add-flags before tokenizer_config.json may, and
//! the TemplateProcessing heuristics may rewrite tokenizer_config's bos/eos/sep/cls entries
//! (and add `eot`/`eom` types) for the lookups that follow. JSON values keep Python's
//! comparison and truthiness semantics (`files::truthy`, `serde_json::Value` equality).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value as Json};

use super::chat_template::{self, ChatTemplate};
use super::files::{self, get, truthy, ModelDir};
use super::merges;
use crate::arch::kv::{keys, Kv};
use crate::gguf::Value;

/// The default `special_token_types`.
pub(crate) const DEFAULT_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// The loaded special vocabulary.
#[derive(Debug)]
pub(crate) struct SpecialVocab {
    pub merges: Vec<String>,
    /// Insertion-ordered, like the Python dict.
    pub add_special_token: Vec<(String, bool)>,
    /// Insertion-ordered, like the Python dict.
    pub special_token_ids: Vec<(String, u32)>,
    pub chat_template: Option<ChatTemplate>,
    normalizer_lowercase: Option<bool>,
    normalizer_strip_accents: Option<bool>,
    n_vocab: Option<usize>,
    load_merges: bool,
    special_token_types: Vec<String>,
}

impl SpecialVocab {
    /// `SpecialVocab(path, load_merges, special_token_types, n_vocab)`.
    pub fn load(
        md: &ModelDir,
        load_merges: bool,
        special_token_types: Option<&[&str]>,
        n_vocab: Option<usize>,
    ) -> Result<SpecialVocab> {
        let types = special_token_types.unwrap_or(&DEFAULT_TYPES);
        let mut sv = SpecialVocab {
            merges: Vec::new(),
            add_special_token: Vec::new(),
            special_token_ids: Vec::new(),
            chat_template: None,
            normalizer_lowercase: None,
            normalizer_strip_accents: None,
            n_vocab,
            load_merges,
            special_token_types: types.iter().map(|s| s.to_string()).collect(),
        };
        sv.try_load_from_tokenizer_json(md)?;
        sv.try_load_from_config_json(md)?;
        if sv.load_merges && sv.merges.is_empty() {
            sv.try_load_merges_txt(md)?;
        }
        Ok(sv)
    }

    /// `add_to_gguf`.
    pub fn add_to_gguf(&self, kv: &mut Kv) {
        if !self.merges.is_empty() {
            kv.set_strings(keys::MERGES, self.merges.clone());
        }
        for (typ, id) in &self.special_token_ids {
            if let Some(key) = keys::special_token_id(typ) {
                kv.set(key, Value::U32(*id));
            }
        }
        for (typ, value) in &self.add_special_token {
            if let Some(key) = keys::add_special_token(typ) {
                kv.set_bool(key, *value);
            }
        }
        if let Some(t) = &self.chat_template {
            chat_template::add_to_gguf(kv, t);
        }
        if let Some(v) = self.normalizer_lowercase {
            kv.set_bool(keys::NORMALIZER_LOWERCASE, v);
        }
        if let Some(v) = self.normalizer_strip_accents {
            kv.set_bool(keys::NORMALIZER_STRIP_ACCENTS, v);
        }
    }

    /// `_set_special_token`: ignores non-ints, rejects negatives, keeps the first id per type
    /// and skips ids outside `n_vocab`.
    pub fn set_special_token(&mut self, typ: &str, tid: Option<&Json>) -> Result<()> {
        let Some(tid) = tid.and_then(files::py_int) else {
            return Ok(());
        };
        if tid < 0 {
            bail!("invalid value for special token type {typ}: {tid}");
        }
        if self.n_vocab.is_none_or(|n| tid < n as i128) {
            if self.special_token_ids.iter().any(|(t, _)| t == typ) {
                return Ok(());
            }
            let id = u32::try_from(tid)
                .map_err(|_| anyhow!("special token type {typ}: id {tid} does not fit in u32"))?;
            self.special_token_ids.push((typ.to_string(), id));
        }
        Ok(())
    }

    /// Sets a special token id from Rust code (`special_vocab._set_special_token(typ, 107)`).
    pub fn set_special_token_id(&mut self, typ: &str, id: u32) -> Result<()> {
        self.set_special_token(typ, Some(&Json::from(id)))
    }

    fn set_add(&mut self, typ: &str, value: bool) {
        match self.add_special_token.iter_mut().find(|(t, _)| t == typ) {
            Some(e) => e.1 = value,
            None => self.add_special_token.push((typ.to_string(), value)),
        }
    }

    fn setdefault_add(&mut self, typ: &str, value: bool) {
        if !self.add_special_token.iter().any(|(t, _)| t == typ) {
            self.add_special_token.push((typ.to_string(), value));
        }
    }

    fn has_type(&self, typ: &str) -> bool {
        self.special_token_types.iter().any(|t| t == typ)
    }

    fn try_load_merges_txt(&mut self, md: &ModelDir) -> Result<()> {
        let Some(text) = md.text("merges.txt")? else {
            return Ok(());
        };
        self.merges = merges::parse_merges_txt(&text);
        Ok(())
    }

    /// `_parse_normalizer`.
    fn parse_normalizer(&mut self, normalizer: &Json) {
        match get(normalizer, "type").and_then(Json::as_str) {
            Some("Lowercase") => self.normalizer_lowercase = Some(true),
            Some("StripAccents") => self.normalizer_strip_accents = Some(true),
            Some("BertNormalizer") => {
                // The raw value is stored; `None` means "not written" in add_to_gguf.
                if let Some(v) = get(normalizer, "lowercase") {
                    self.normalizer_lowercase = (!v.is_null()).then(|| truthy(v));
                }
                if let Some(v) = get(normalizer, "strip_accents") {
                    self.normalizer_strip_accents = (!v.is_null()).then(|| truthy(v));
                }
            }
            Some("Sequence") => {
                if let Some(list) = get(normalizer, "normalizers").and_then(Json::as_array) {
                    for n in list {
                        self.parse_normalizer(n);
                    }
                }
            }
            _ => {}
        }
    }

    /// `_try_load_from_tokenizer_json` (which also reads tokenizer_config.json and the chat
    /// template files).
    fn try_load_from_tokenizer_json(&mut self, md: &ModelDir) -> Result<()> {
        let tokenizer_path = md.path("tokenizer.json");
        let tokenizer = md.json("tokenizer.json")?;
        let mut added_tokens: &[Json] = &[];
        if let Some(tok) = &tokenizer {
            if self.load_merges {
                self.merges = merges::from_tokenizer_json(tok)
                    .with_context(|| format!("in {}", tokenizer_path.display()))?;
            }
            if let Some(n) = get(tok, "normalizer").filter(|n| truthy(n)) {
                self.parse_normalizer(n);
            }
            added_tokens = get(tok, "added_tokens")
                .and_then(Json::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
        }
        let tc_path = md.path("tokenizer_config.json");
        let mut tc: Option<Map<String, Json>> = match md.json("tokenizer_config.json")?.as_deref() {
            None => None,
            Some(Json::Object(m)) => Some(m.clone()),
            Some(_) => bail!("{} is not a JSON object", tc_path.display()),
        };
        if let Some(tok) = tokenizer.as_ref().filter(|t| truthy(t)) {
            self.parse_post_processor(tok, &mut tc);
        }
        let Some(tc) = tc.filter(|m| !m.is_empty()) else {
            return Ok(());
        };
        self.chat_template = chat_template::load(md, &tc, &tc_path)?;
        let types = self.special_token_types.clone();
        for typ in &types {
            if let Some(Json::Bool(add)) = tc.get(&format!("add_{typ}_token")) {
                // On a mismatch the post-processor's value wins (gguf-py only warns).
                self.setdefault_add(typ, *add);
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Json::String(s)) => s.as_str(),
                Some(Json::Object(o)) => match o.get("content") {
                    Some(Json::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            // The first added token with this content.
            let id = added_tokens
                .iter()
                .find(|t| get(t, "content").and_then(Json::as_str) == Some(content))
                .and_then(|t| get(t, "id"));
            self.set_special_token(typ, id)
                .with_context(|| format!("{typ}_token of {}", tc_path.display()))?;
        }
        Ok(())
    }

    /// The post-processor part of `_try_load_from_tokenizer_json`.
    fn parse_post_processor(&mut self, tokenizer: &Json, tc: &mut Option<Map<String, Json>>) {
        let tc_get = |tc: &Option<Map<String, Json>>, k: &str| -> Json {
            tc.as_ref()
                .and_then(|m| m.get(k))
                .cloned()
                .unwrap_or(Json::Null)
        };
        let tc_truthy = |tc: &Option<Map<String, Json>>| tc.as_ref().is_some_and(|m| !m.is_empty());
        let tc_set = |tc: &mut Option<Map<String, Json>>, k: &str, v: &Json| {
            if let Some(m) = tc.as_mut() {
                m.insert(k.to_string(), v.clone());
            }
        };
        let mut special_bos = tc_get(tc, "bos_token");
        let mut special_cls = tc_get(tc, "cls_token");
        let mut special_eos = tc_get(tc, "eos_token");
        let mut special_sep = tc_get(tc, "sep_token");
        if !truthy(&special_bos) && truthy(&special_cls) && tc_truthy(tc) {
            special_bos = special_cls.clone();
            tc_set(tc, "bos_token", &special_bos);
        }
        if !truthy(&special_eos) && truthy(&special_sep) && tc_truthy(tc) {
            special_eos = special_sep.clone();
            tc_set(tc, "eos_token", &special_eos);
        }
        let Some(post) = get(tokenizer, "post_processor").filter(|p| truthy(p)) else {
            return;
        };
        let processors: Vec<&Json> = match get(post, "processors") {
            Some(Json::Array(list)) => list.iter().collect(),
            Some(_) => Vec::new(),
            None => vec![post],
        };
        let sid = |v: Option<&Json>| -> Json {
            v.and_then(|e| get(e, "SpecialToken"))
                .and_then(|s| get(s, "id"))
                .cloned()
                .unwrap_or(Json::Null)
        };
        let seq_id = |v: Option<&Json>| -> Json {
            v.and_then(|e| get(e, "Sequence"))
                .and_then(|s| get(s, "id"))
                .cloned()
                .unwrap_or(Json::Null)
        };
        for processor in processors {
            match get(processor, "type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    self.setdefault_add("bos", false);
                    self.setdefault_add("eos", false);
                }
                Some("RobertaProcessing") => {
                    self.set_add("bos", true);
                    self.set_add("eos", true);
                    self.set_add("sep", true);
                    if !truthy(&special_cls) && tc_truthy(tc) {
                        special_cls = first_of(get(processor, "cls"), &special_bos);
                        tc_set(tc, "cls_token", &special_cls);
                    }
                    if !truthy(&special_sep) && tc_truthy(tc) {
                        special_sep = first_of(get(processor, "sep"), &special_eos);
                        tc_set(tc, "sep_token", &special_sep);
                    }
                }
                Some("TemplateProcessing") => {
                    let empty = Vec::new();
                    let single = get(processor, "single")
                        .and_then(Json::as_array)
                        .unwrap_or(&empty);
                    let pair = get(processor, "pair")
                        .and_then(Json::as_array)
                        .unwrap_or(&empty);
                    let mut special_first = Json::Null;
                    let mut special_last = Json::Null;
                    if single.len() > 1 {
                        special_first = sid(single.first());
                        if truthy(&special_first) {
                            if !tc_truthy(tc) {
                                special_bos = special_first.clone();
                            } else if special_first != special_bos && special_first != special_cls {
                                if !truthy(&special_bos) {
                                    special_bos = special_first.clone();
                                    tc_set(tc, "bos_token", &special_bos);
                                }
                                if !truthy(&special_cls) {
                                    special_cls = special_first.clone();
                                    tc_set(tc, "cls_token", &special_cls);
                                }
                            }
                            let is_bos =
                                special_first == special_bos || special_first == special_cls;
                            self.set_add("bos", is_bos);
                        }
                        special_last = sid(single.last());
                        if truthy(&special_last) {
                            if !tc_truthy(tc) {
                                special_eos = special_last.clone();
                            } else if special_last != special_eos {
                                if !self.has_type("eot") {
                                    self.special_token_types.push("eot".into());
                                    tc_set(tc, "eot_token", &special_eos);
                                } else if !self.has_type("eom") {
                                    self.special_token_types.push("eom".into());
                                    tc_set(tc, "eom_token", &special_eos);
                                }
                                special_eos = special_last.clone();
                                tc_set(tc, "eos_token", &special_eos);
                            }
                            let is_eos = special_last == special_eos;
                            self.set_add("eos", is_eos);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(
                            truthy(&special_first) && sid(pair.first()) == special_first,
                        );
                        let cut_last = truthy(&special_last) && sid(pair.last()) == special_last;
                        let stop = if cut_last { pair.len() - 1 } else { pair.len() };
                        let pair = if start < stop {
                            &pair[start..stop]
                        } else {
                            &[][..]
                        };
                        if !pair.is_empty() {
                            let a = seq_id(pair.first());
                            let b = seq_id(pair.last());
                            let middle = if pair.len() >= 2 {
                                &pair[1..pair.len() - 1]
                            } else {
                                &[][..]
                            };
                            if a == "A" && b == "B" && !middle.is_empty() {
                                let mut add_sep = false;
                                let entry = sid(middle.first());
                                if truthy(&entry)
                                    && (entry == special_sep || entry == special_eos)
                                    && !truthy(&special_last)
                                {
                                    add_sep = true;
                                }
                                if middle.len() == 2 {
                                    let entry = sid(middle.get(1));
                                    if truthy(&entry)
                                        && (entry == special_sep || entry == special_eos)
                                    {
                                        add_sep = true;
                                    }
                                }
                                self.set_add("sep", add_sep);
                                if add_sep && !truthy(&special_sep) && tc_truthy(tc) {
                                    tc_set(tc, "sep_token", &special_eos);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// `_try_load_from_config_json`.
    fn try_load_from_config_json(&mut self, md: &ModelDir) -> Result<()> {
        let Some(config) = md.json("config.json")? else {
            return Ok(());
        };
        let p = md.path("config.json");
        let types = self.special_token_types.clone();
        for typ in &types {
            let key = format!("{typ}_token_id");
            let mut id = get(&config, &key).filter(|v| !v.is_null());
            if id.is_none() {
                if let Some(text) = get(&config, "text_config") {
                    id = get(text, &key);
                }
            }
            self.set_special_token(typ, id)
                .with_context(|| format!("{key} of {}", p.display()))?;
        }
        Ok(())
    }
}

/// `processor.get(key, [default])[0]`.
fn first_of(v: Option<&Json>, default: &Json) -> Json {
    match v {
        None => default.clone(),
        Some(Json::Array(a)) => a.first().cloned().unwrap_or(Json::Null),
        Some(_) => Json::Null,
    }
}
