//! Strict JSON config reading: keys starting with `_` are comments and removed before
//! deserialising; unknown keys and bad values are errors that name the key (serde's
//! `deny_unknown_fields` messages list the allowed keys).

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Removes every object key that starts with `_`, at any depth.
pub fn strip_comments(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('_'));
            for x in map.values_mut() {
                strip_comments(x);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_comments),
        _ => {}
    }
}

/// Reads a config file into `T`, with comments stripped and errors naming the file.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut v: Value = serde_json::from_str(&text)
        .with_context(|| format!("config {} is not valid JSON", path.display()))?;
    strip_comments(&mut v);
    serde_json::from_value(v).with_context(|| format!("config {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_removed_recursively() {
        let mut v = serde_json::json!({"_c": 1, "a": {"_x": 2, "b": [ {"_y": 3, "z": 4} ]}});
        strip_comments(&mut v);
        assert_eq!(v, serde_json::json!({"a": {"b": [ {"z": 4} ]}}));
    }
}
