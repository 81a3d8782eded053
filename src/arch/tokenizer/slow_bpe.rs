//! GPT-2-style BPE tokenizers shipped as `vocab.json` + `merges.txt` without a tokenizer.json.
//!
//! transformers' fast tokenizer then instantiates the class's slow tokenizer (which reads the
//! two files) and converts it (`convert_slow_tokenizer.GPT2Converter` / `Qwen2Converter`,
//! transformers 4.57): the result is a tokenizer.json-equivalent that this module builds as
//! JSON, so the rest of the loader ([`super::hf_tokenizer`]) treats it as a tokenizer.json
//! with no added tokens (transformers adds the config's added and special tokens afterwards,
//! exactly as for a tokenizer.json).
//!
//! Only the classes whose slow tokenizer reads these two files and whose converter gmat
//! transcribes are accepted (GPT-2 and Qwen2); others are an error, as they are for the
//! converter when transformers cannot build them.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value as Json};

use super::files::{truthy, ModelDir};
use super::merges::py_space;
use super::tokenizer_class::Class;

/// `PRETOKENIZE_REGEX` of `Qwen2Converter` (transformers 4.57 convert_slow_tokenizer.py).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Whether the folder has the two files of a slow GPT-2-style BPE tokenizer.
pub(crate) fn present(md: &ModelDir) -> bool {
    md.is_file("vocab.json") && md.is_file("merges.txt")
}

/// The tokenizer.json transformers would build for `class` from vocab.json + merges.txt.
/// `tc` is tokenizer_config.json (the slow tokenizer's `add_prefix_space`/`add_bos_token`).
pub(crate) fn tokenizer_json(
    md: &ModelDir,
    class: Class,
    tc: Option<&Map<String, Json>>,
    class_name: &str,
) -> Result<Json> {
    if class != Class::Gpt2 && class != Class::Qwen2 {
        bail!(
            "{} is missing and tokenizer class {class_name} cannot be built from vocab.json + \
             merges.txt (transformers converts only slow tokenizers; gmat reads vocab.json + \
             merges.txt for GPT2Tokenizer and Qwen2Tokenizer): add the model's tokenizer.json, \
             or set \"tokenizer_class\" in tokenizer_config.json if the tokenizer is one of those",
            md.path("tokenizer.json").display()
        );
    }
    let vocab_path = md.path("vocab.json");
    let vocab = md
        .json("vocab.json")?
        .ok_or_else(|| anyhow!("{} not found", vocab_path.display()))?;
    let vocab_map = vocab.as_object().ok_or_else(|| {
        anyhow!(
            "{} is not a JSON object of token -> id",
            vocab_path.display()
        )
    })?;
    for (tok, id) in vocab_map {
        if id.as_u64().is_none_or(|i| i > u32::MAX as u64) {
            bail!(
                "{}: token {tok:?} has id {id}, not a non-negative integer",
                vocab_path.display()
            );
        }
    }
    let merges_path = md.path("merges.txt");
    let text = md
        .text("merges.txt")?
        .ok_or_else(|| anyhow!("{} not found", merges_path.display()))?;
    let merges = if class == Class::Gpt2 {
        gpt2_merges(&text)
    } else {
        qwen2_merges(&text)
    }
    .with_context(|| format!("{}", merges_path.display()))?;
    let merges: Vec<Json> = merges.into_iter().map(|(a, b)| json!([a, b])).collect();
    let flag = |k: &str| tc.and_then(|m| m.get(k)).is_some_and(truthy);
    let model = json!({
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
        "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
        "ignore_merges": false, "vocab": vocab.as_ref().clone(), "merges": merges,
    });
    let byte_level = |aps: bool, trim: bool, regex: bool| json!({"type": "ByteLevel", "add_prefix_space": aps, "trim_offsets": trim, "use_regex": regex});
    let mut tj = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "decoder": byte_level(true, true, true),
        "post_processor": byte_level(true, false, true), "model": model,
    });
    if class == Class::Qwen2 {
        // Qwen2Tokenizer ignores add_prefix_space (it warns); the converter reads the
        // attribute, which the slow class never sets, so it is False.
        tj["normalizer"] = json!({"type": "NFC"});
        tj["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level(false, true, false),
        ]});
    } else {
        tj["pre_tokenizer"] = byte_level(flag("add_prefix_space"), true, true);
        if flag("add_bos_token") {
            bail!(
                "{}: add_bos_token with a vocab.json + merges.txt GPT-2 tokenizer (a template \
                 post-processor) is not supported; add the model's tokenizer.json",
                md.path("tokenizer_config.json").display()
            );
        }
    }
    Ok(tj)
}

/// `(a, b)` pairs, duplicates dropped keeping the first (`list(dict(zip(merges, ...)))`).
fn dedup(pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    pairs
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

fn pair(line: &str, n: usize) -> Result<(String, String)> {
    let parts: Vec<&str> = line.split(py_space).filter(|p| !p.is_empty()).collect();
    match parts[..] {
        [a, b] => Ok((a.to_string(), b.to_string())),
        _ => bail!("line {n}: {line:?} is not a merge of two tokens"),
    }
}

/// `GPT2Tokenizer`: `read().split("\n")[1:-1]`, each `tuple(merge.split())` — the first line
/// is dropped whatever it holds, and so is the last (empty when the file ends in a newline).
fn gpt2_merges(text: &str) -> Result<Vec<(String, String)>> {
    let lines: Vec<&str> = text.split('\n').collect();
    let inner = lines.get(1..lines.len().saturating_sub(1)).unwrap_or(&[]);
    let pairs = inner
        .iter()
        .enumerate()
        .map(|(i, l)| pair(l, i + 2))
        .collect::<Result<Vec<_>>>()?;
    Ok(dedup(pairs))
}

/// `Qwen2Tokenizer`: lines stripped, a first `#version:` line and blank lines skipped.
fn qwen2_merges(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line = line.trim_matches(py_space);
        if (i == 0 && line.starts_with("#version:")) || line.is_empty() {
            continue;
        }
        pairs.push(pair(line, i + 1)?);
    }
    Ok(dedup(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    #[test]
    fn gpt2_drops_first_and_last_line() {
        assert_eq!(
            gpt2_merges("#version: 0.2\nĠ t\nh e\nĠ t\n").unwrap(),
            [p("Ġ", "t"), p("h", "e")]
        );
        // no header: the first merge is lost, as in transformers
        assert_eq!(gpt2_merges("a b\nc d\n").unwrap(), [p("c", "d")]);
        assert!(gpt2_merges("#v\na b c\n").is_err());
    }

    #[test]
    fn qwen2_skips_header_and_blanks() {
        assert_eq!(
            qwen2_merges("#version: 0.2\r\nĠ t\n\nh e").unwrap(),
            [p("Ġ", "t"), p("h", "e")]
        );
        assert_eq!(qwen2_merges("a b\n").unwrap(), [p("a", "b")]);
    }
}
