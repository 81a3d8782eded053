//! BPE merges as gguf-py's `SpecialVocab` loads them: from tokenizer.json `model.merges`
//! (legacy `"a b"` strings, or `["a", "b"]` pairs whose spaces become U+0120), else from
//! merges.txt.

use anyhow::{anyhow, bail, Result};
use serde_json::Value as Json;

use super::files::get;

/// The merges of tokenizer.json `model.merges` as `SpecialVocab` stores them (`"a b"`), or
/// an empty list when there are none.
pub(crate) fn from_tokenizer_json(tokenizer: &Json) -> Result<Vec<String>> {
    let merges = get(tokenizer, "model").and_then(|m| get(m, "merges"));
    let Some(merges) = merges.and_then(Json::as_array).filter(|m| !m.is_empty()) else {
        return Ok(Vec::new());
    };
    if merges[0].is_string() {
        merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("model.merges[{i}] is not a string"))
            })
            .collect()
    } else if merges[0]
        .as_array()
        .is_some_and(|p| p.len() == 2 && p[0].is_string())
    {
        // Transformers >= 4.45 pairs; spaces inside a part become U+0120 ('Ġ').
        let mut out = Vec::with_capacity(merges.len());
        for (i, pair) in merges.iter().enumerate() {
            let parts = pair
                .as_array()
                .ok_or_else(|| anyhow!("model.merges[{i}] is not a pair"))?;
            let mut s = String::new();
            for (j, part) in parts.iter().enumerate() {
                let part = part
                    .as_str()
                    .ok_or_else(|| anyhow!("model.merges[{i}][{j}] is not a string"))?;
                if j > 0 {
                    s.push(' ');
                }
                s.extend(part.chars().map(|c| if c == ' ' { '\u{120}' } else { c }));
            }
            out.push(s);
        }
        Ok(out)
    } else {
        bail!("Unknown tokenizer merges format");
    }
}

/// Python's `str.isspace` for one character (`str.split()`/`strip()` whitespace): Unicode
/// White_Space plus the ASCII separators U+001C..U+001F.
pub(crate) fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `_try_load_merges_txt`: skips a leading `#` line, blank lines and lines that do not split
/// into exactly two fields.
pub(crate) fn parse_merges_txt(text: &str) -> Vec<String> {
    let mut lines = text.split_inclusive('\n').peekable();
    if lines
        .peek()
        .is_some_and(|first| first.trim_matches(py_space).starts_with('#'))
    {
        lines.next();
    }
    let mut merges = Vec::new();
    for line in lines {
        let line = line.trim_matches(py_space);
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line
            .split(py_space)
            .filter(|s| !s.is_empty())
            .take(3)
            .collect();
        if parts.len() == 2 {
            merges.push(format!("{} {}", parts[0], parts[1]));
        }
    }
    merges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_txt() {
        let m = parse_merges_txt("#version: 0.2\nĠ t\r\n\na b c\nh e\n");
        assert_eq!(m, vec!["Ġ t", "h e"]);
        assert_eq!(parse_merges_txt("a b\nc d"), vec!["a b", "c d"]);
    }

    #[test]
    fn merges_from_tokenizer_json() {
        let legacy = serde_json::json!({"model": {"merges": ["a b", "ab c"]}});
        assert_eq!(
            from_tokenizer_json(&legacy).unwrap_or_default(),
            ["a b", "ab c"]
        );
        let pairs = serde_json::json!({"model": {"merges": [["a", "b"], [" x", "y "]]}});
        assert_eq!(
            from_tokenizer_json(&pairs).unwrap_or_default(),
            ["a b", "\u{120}x y\u{120}"]
        );
        assert!(from_tokenizer_json(&serde_json::json!({"model": {"merges": [1]}})).is_err());
        assert!(from_tokenizer_json(&serde_json::json!({"model": {}})).is_ok_and(|m| m.is_empty()));
    }
}
