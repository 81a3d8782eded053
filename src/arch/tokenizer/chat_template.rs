//! The chat template(s) gguf-py's `SpecialVocab` finds and `GGUFWriter.add_chat_template`
//! writes: one `tokenizer.chat_template`, or named templates as
//! `tokenizer.chat_template.{name}` plus a `tokenizer.chat_templates` list.
//!
//! Files are read as Python's text mode reads them (universal newlines), because the template
//! text is copied into the GGUF byte for byte.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value as Json};

use super::files::{self, get, ModelDir};
use crate::arch::kv::{keys, Kv};

/// A chat template as `add_chat_template` accepts it: one string, or named templates.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ChatTemplate {
    Single(String),
    /// `(name, template)` pairs; `None` templates and non-string names are kept as the converter
    /// sees them (`choice.get('name', '')`, `choice.get('template')`).
    Named(Vec<(String, Option<String>)>),
}

/// The chat-template part of `_try_load_from_tokenizer_json`: tokenizer_config.json
/// `chat_template` if the key is there, else chat_template.jinja (with
/// additional_chat_templates/*.jinja as named templates), else chat_template.json.
pub(crate) fn load(
    md: &ModelDir,
    tc: &Map<String, Json>,
    tc_path: &Path,
) -> Result<Option<ChatTemplate>> {
    let mut alt: Option<ChatTemplate> = None;
    if let Some(text) = md.text("chat_template.jinja")? {
        let extra_dir = md.path("additional_chat_templates");
        let mut extra: Vec<std::path::PathBuf> = match std::fs::read_dir(&extra_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
                .collect(),
            Err(_) => Vec::new(),
        };
        if extra.is_empty() {
            alt = Some(ChatTemplate::Single(text));
        } else {
            // Python's glob order is the directory's; sort for a reproducible file.
            extra.sort();
            let mut named = vec![("default".to_string(), Some(text))];
            for p in extra {
                let body = crate::fsio::read_small_text(&p)
                    .map(|t| files::universal_newlines(&t))
                    .with_context(|| format!("cannot read {}", p.display()))?;
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                named.push((stem.unwrap_or_default(), Some(body)));
            }
            alt = Some(ChatTemplate::Named(named));
        }
    } else if let Some(j) = md.json("chat_template.json")? {
        let p = md.path("chat_template.json");
        alt = parse_chat_template(get(&j, "chat_template"))
            .with_context(|| format!("chat_template of {}", p.display()))?
            .flatten();
    }
    match tc.get("chat_template") {
        // A bad type is only warned about by gguf-py: the template stays unset.
        Some(v) => Ok(parse_chat_template(Some(v))
            .with_context(|| format!("chat_template of {}", tc_path.display()))?
            .flatten()),
        None => Ok(alt),
    }
}

/// A chat template value: `Ok(None)` when absent, `Ok(Some(None))` for a value gguf-py
/// ignores (neither str nor list nor None), otherwise the template.
fn parse_chat_template(v: Option<&Json>) -> Result<Option<Option<ChatTemplate>>> {
    Ok(match v {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(Some(ChatTemplate::Single(s.clone()))),
        Some(Json::Array(list)) => {
            let mut named = Vec::new();
            for (i, choice) in list.iter().enumerate() {
                let name = match get(choice, "name") {
                    None => String::new(),
                    Some(Json::String(s)) => s.clone(),
                    Some(_) => bail!("template {i}: `name` is not a string"),
                };
                let template = match get(choice, "template") {
                    None | Some(Json::Null) => None,
                    Some(Json::String(s)) => Some(s.clone()),
                    Some(_) => bail!("template {i}: `template` is not a string"),
                };
                named.push((name, template));
            }
            Some(Some(ChatTemplate::Named(named)))
        }
        Some(_) => Some(None),
    })
}

/// `GGUFWriter.add_chat_template`.
pub(crate) fn add_to_gguf(kv: &mut Kv, t: &ChatTemplate) {
    match t {
        ChatTemplate::Single(s) => kv.set_str(keys::CHAT_TEMPLATE, s),
        ChatTemplate::Named(list) => {
            let mut default = None;
            let mut names: Vec<String> = Vec::new();
            for (name, template) in list {
                let name: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let Some(template) = template else { continue };
                if name.is_empty() {
                    continue;
                }
                if name == "default" {
                    default = Some(template);
                } else {
                    if !names.contains(&name) {
                        names.push(name.clone());
                    }
                    kv.set_str(&keys::chat_template_named(&name), template);
                }
            }
            // gguf-py lists the names from a set (arbitrary order); we keep first-seen order.
            if !names.is_empty() {
                kv.set_strings(keys::CHAT_TEMPLATES, names);
            }
            if let Some(d) = default {
                kv.set_str(keys::CHAT_TEMPLATE, d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_chat_templates() {
        let mut kv = Kv::default();
        let t = ChatTemplate::Named(vec![
            ("default".into(), Some("D".into())),
            ("tool use".into(), Some("T".into())),
            ("".into(), Some("X".into())),
        ]);
        add_to_gguf(&mut kv, &t);
        let v = kv.into_vec();
        let names: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "tokenizer.chat_template.tool_use",
                "tokenizer.chat_templates",
                "tokenizer.chat_template"
            ]
        );
    }
}
