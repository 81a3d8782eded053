//! Keys of the original GMAT tool's configs, which tuned its own lossy block encoder and
//! quantizer. gmat keeps that format's documented keys (`source_format`, `tensor_map`,
//! `quantization.default_type`, ...) but stores tensors losslessly and quantizes exactly as
//! llama-quantize does, so the encoder's knobs have nothing to act on. Each one gets a message
//! saying what gmat does instead, rather than serde's bare "unknown field":
//!
//! * keys that only tuned the original encoder are ignored with a note, so old configs still
//!   run and give the same GGUF gmat would write without them;
//! * keys whose intent gmat meets with another setting (importance data) are errors naming
//!   that setting, because ignoring them would silently drop what the user asked for.

use anyhow::{bail, Result};
use serde_json::{Map, Value};

/// What to do with a legacy key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Remove it and print the note.
    Ignore,
    /// Refuse the config with the message.
    Refuse,
}

/// Which config a key is looked for in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    Import,
    Export,
}

const LOSSLESS: &str = "the gmat store is lossless (byte planes + zstd), so there is no block \
                        encoding to choose; --encoding zstd|raw picks how tensors are stored";
const GGML_QUANT: &str = "gmat quantizes each ggml type exactly as llama-quantize does (the \
                          output is byte-identical), so the original's encoder settings have no \
                          counterpart; choose types with quantization.default_type / per_tensor";
const BLOCK_SIZE: &str = "block sizes are fixed by each ggml type (32 values for Q8_0/Q4_0, 256 \
                          for the K-quants); choose types with quantization.default_type / \
                          per_tensor";
const IMPORTANCE: &str = "gmat takes importance data as llama.cpp does: a llama-imatrix file in \
                          quantization.imatrix (or --imatrix), limited with \
                          quantization.include_weights / exclude_weights; replace this key with \
                          those";

/// `(key, action, message)`. Keys are looked for at the top level and, for export configs,
/// inside `quantization`. `block_format` is a declared (ignored) field of both configs, so the
/// JSON Schema lists it; its note is printed here like the others.
const LEGACY_KEYS: &[(&str, Action, &str)] = &[
    ("block_format", Action::Ignore, LOSSLESS),
    ("scale_optimization", Action::Ignore, GGML_QUANT),
    ("trellis", Action::Ignore, GGML_QUANT),
    ("trellis_lambda", Action::Ignore, GGML_QUANT),
    ("trellis_quantization", Action::Ignore, GGML_QUANT),
    ("block_size", Action::Ignore, BLOCK_SIZE),
    ("importance", Action::Refuse, IMPORTANCE),
    ("importance_matrix", Action::Refuse, IMPORTANCE),
    ("importance_weights", Action::Refuse, IMPORTANCE),
    ("importance_file", Action::Refuse, IMPORTANCE),
    ("use_importance", Action::Refuse, IMPORTANCE),
    ("importance_threshold", Action::Refuse, IMPORTANCE),
];

fn lookup(key: &str) -> Option<(Action, &'static str)> {
    LEGACY_KEYS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, a, m)| (*a, *m))
}

/// Finds the legacy keys of a parsed config (comments already stripped): removes the ignored
/// ones except the declared `block_format` and returns a note for each; refuses the config,
/// with one message per key, if it has keys gmat meets with another setting.
pub fn check(v: &mut Value, kind: ConfigKind) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut refused = Vec::new();
    let Some(top) = v.as_object_mut() else {
        return Ok(notes);
    };
    scan(top, "", &mut notes, &mut refused);
    if kind == ConfigKind::Export {
        if let Some(Value::Object(q)) = top.get_mut("quantization") {
            scan(q, "quantization.", &mut notes, &mut refused);
        }
    }
    if !refused.is_empty() {
        bail!(
            "keys of the original GMAT format that gmat does not take: {}",
            refused.join("; ")
        );
    }
    Ok(notes)
}

fn scan(
    obj: &mut Map<String, Value>,
    prefix: &str,
    notes: &mut Vec<String>,
    refused: &mut Vec<String>,
) {
    let keys: Vec<String> = obj
        .keys()
        .filter(|k| lookup(k).is_some())
        .cloned()
        .collect();
    for k in keys {
        let Some((action, msg)) = lookup(&k) else {
            continue;
        };
        match action {
            Action::Ignore => {
                // block_format is a declared field at the top level; elsewhere it is removed.
                if !(k == "block_format" && prefix.is_empty()) {
                    obj.remove(&k);
                }
                notes.push(format!("{prefix}{k} is ignored: {msg}"));
            }
            Action::Refuse => refused.push(format!("{prefix}{k}: {msg}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tuning_keys_are_noted_and_removed() {
        let mut v = json!({"block_format": "log8", "trellis_lambda": 0.3,
            "quantization": {"scale_optimization": true, "default_type": "Q8_0"}});
        let notes = check(&mut v, ConfigKind::Export).unwrap();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("block_format is ignored: the gmat store is lossless"));
        assert!(notes[1].starts_with("trellis_lambda is ignored: gmat quantizes"));
        assert!(notes[2].starts_with("quantization.scale_optimization is ignored"));
        assert_eq!(
            v,
            json!({"block_format": "log8", "quantization": {"default_type": "Q8_0"}})
        );
    }

    #[test]
    fn importance_keys_are_refused_naming_the_replacement() {
        let mut v = json!({"quantization": {"importance_matrix": "x.dat"}, "use_importance": true});
        let e = check(&mut v, ConfigKind::Export).unwrap_err().to_string();
        assert!(
            e.contains("use_importance: gmat takes importance data"),
            "{e}"
        );
        assert!(e.contains("quantization.importance_matrix: "), "{e}");
        assert!(e.contains("quantization.imatrix"), "{e}");
    }

    #[test]
    fn import_configs_have_no_quantization_section() {
        let mut v = json!({"quantization": {"trellis": 1}});
        assert!(check(&mut v, ConfigKind::Import).unwrap().is_empty());
    }
}
