//! Strict JSON config reading: keys starting with `_` are comments and removed before
//! deserialising; unknown keys and bad values are errors that name the key (serde's
//! `deny_unknown_fields` messages list the allowed keys).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::legacy::ConfigKind;

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

/// A config file type: which legacy keys ([`super::legacy`]) it is checked for.
pub trait ConfigFile: DeserializeOwned {
    const KIND: ConfigKind;
}

/// Reads a config file into `T`, with comments stripped and errors naming the file; a note
/// for each ignored key of the original GMAT format goes to stderr.
pub fn read_config<T: ConfigFile>(path: &Path) -> Result<T> {
    let text = crate::fsio::read_small_text(path).context("cannot read the config")?;
    let (config, notes) =
        parse_config_noted(&text).with_context(|| format!("config {}", path.display()))?;
    for n in notes {
        eprintln!("note: config {}: {n}", path.display());
    }
    Ok(config)
}

/// Parses the text of a config into `T`, comments stripped.
pub fn parse_config<T: ConfigFile>(text: &str) -> Result<T> {
    parse_config_noted(text).map(|(c, _)| c)
}

/// [`parse_config`], also returning the notes on ignored legacy keys.
pub fn parse_config_noted<T: ConfigFile>(text: &str) -> Result<(T, Vec<String>)> {
    let mut v: Value = serde_json::from_str(text).context("not valid JSON")?;
    if !v.is_object() {
        bail!("it must be a JSON object ({{...}}), not {}", kind(&v));
    }
    strip_comments(&mut v);
    // the pointer to the file's JSON Schema (written by --generate-config, read by editors)
    if let Some(map) = v.as_object_mut() {
        map.remove("$schema");
    }
    let notes = super::legacy::check(&mut v, T::KIND)?;
    Ok((serde_json::from_value(v)?, notes))
}

/// What a JSON value is, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A section read only from a JSON object: serde would also take an array of the fields in
/// order, which no one writes on purpose.
pub fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
    what: &str,
) -> std::result::Result<T, D::Error> {
    let v = Value::deserialize(d)?;
    if !v.is_object() {
        return Err(D::Error::custom(format!(
            "{what} must be a JSON object, not {}",
            kind(&v)
        )));
    }
    T::deserialize(v).map_err(|e| D::Error::custom(format!("{what}: {e}")))
}

/// A list of rows, each read only from a JSON object.
pub fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
    what: &str,
) -> std::result::Result<Vec<T>, D::Error> {
    let v = Value::deserialize(d)?;
    let Value::Array(items) = v else {
        return Err(D::Error::custom(format!(
            "{what} must be a JSON array of objects, not {}",
            kind(&v)
        )));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            if !item.is_object() {
                return Err(D::Error::custom(format!(
                    "{what}[{i}] must be a JSON object, not {}",
                    kind(&item)
                )));
            }
            T::deserialize(item).map_err(|e| D::Error::custom(format!("{what}[{i}]: {e}")))
        })
        .collect()
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
