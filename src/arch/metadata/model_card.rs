//! The YAML front matter of a model card (README.md), read as gguf-py's
//! `Metadata.load_model_card` reads it: only when the first line is `---`, up to the next `---`
//! line, with its two fixes (`- no` kept a string, tabs as two spaces).

use anyhow::{Context, Result};
use serde_json::{Map, Value as Json};
use yaml_rust2::{Yaml, YamlLoader};

/// The front matter as a JSON object; empty when the card has none. YAML that does not parse,
/// or parses to something other than a mapping, is an error naming the card (the converter
/// stops on the first and ignores the second).
pub fn front_matter(card: &str) -> Result<Map<String, Json>> {
    let lines = python_splitlines(card);
    if lines.first() != Some(&"---") {
        return Ok(Map::new());
    }
    let mut yaml = String::new();
    for line in &lines[1..] {
        if *line == "---" {
            break;
        }
        yaml.push_str(line);
        yaml.push('\n');
    }
    // gguf-py: "Quick hack to fix the Norway problem", and tabs as two spaces
    let yaml = yaml.replace("- no\n", "- \"no\"\n").replace('\t', "  ");
    let docs = YamlLoader::load_from_str(&yaml)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("README.md: the model card's YAML front matter does not parse")?;
    match docs.into_iter().next().map(to_json) {
        Some(Json::Object(map)) => Ok(map),
        _ => Ok(Map::new()),
    }
}

fn to_json(y: Yaml) -> Json {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Json::String(s), Json::Number),
        Yaml::Integer(i) => Json::from(i),
        Yaml::String(s) => Json::String(s),
        Yaml::Boolean(b) => Json::Bool(b),
        Yaml::Array(a) => Json::Array(a.into_iter().map(to_json).collect()),
        Yaml::Hash(h) => Json::Object(
            h.into_iter()
                .map(|(k, v)| (scalar_string(&k), to_json(v)))
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Json::Null,
    }
}

fn scalar_string(y: &Yaml) -> String {
    match y {
        Yaml::Real(s) | Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => if *b { "True" } else { "False" }.into(),
        _ => String::new(),
    }
}

/// Python's `str.splitlines()`: every line boundary Python knows, `\r\n` as one.
fn python_splitlines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let boundary = matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if boundary {
            out.push(&s[start..i]);
            let mut next = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = chars.peek() {
                    chars.next();
                    next = j + 1;
                }
            }
            start = next;
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_as_gguf_py_reads_it() {
        let card = "---\nlicense: apache-2.0\nlanguage:\n- en\n- no\nbase_model: Qwen/Qwen3-0.6B\ntags:\n\t- chat\n---\n# Title\n";
        let m = front_matter(card).unwrap();
        assert_eq!(m["license"], "apache-2.0");
        assert_eq!(m["language"], serde_json::json!(["en", "no"]));
        assert_eq!(m["base_model"], "Qwen/Qwen3-0.6B");
        assert_eq!(m["tags"], serde_json::json!(["chat"]));
        assert!(front_matter("# no front matter\n---\nname: x\n---\n")
            .unwrap()
            .is_empty());
        assert!(front_matter("").unwrap().is_empty());
        assert!(front_matter("---\n- a list\n---\n").unwrap().is_empty());
        assert!(front_matter("---\nname: [unclosed\n---\n").is_err());
        assert_eq!(python_splitlines("a\r\nb\rc\n"), vec!["a", "b", "c"]);
    }
}
