//! llama-quantize's `--override-kv KEY=TYPE:VALUE`: a metadata key set (or replaced) in the
//! output, after everything else the file holds. Parsing follows `string_parse_kv_override`
//! (common/common.cpp of b11312) and the writing `llama_model_quantize_impl`
//! (src/llama-quant.cpp): `int` is written as an unsigned 32-bit value of its magnitude,
//! `float` as f32, `bool` as bool, `str` as a string of at most 127 bytes; a replaced key moves
//! to the end, as `gguf_set_val_*` removes and appends it.

use std::fmt;
use std::str::FromStr;

use crate::gguf::Value;

/// One `KEY=TYPE:VALUE` override.
#[derive(Clone, Debug, PartialEq)]
pub struct KvOverride {
    pub key: String,
    pub value: Value,
    /// The text it was parsed from, for configs and messages.
    pub spec: String,
}

impl FromStr for KvOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some((key, typed)) = s.split_once('=') else {
            return Err(format!(
                "malformed KV override '{s}': expected KEY=TYPE:VALUE"
            ));
        };
        // llama.cpp's key buffer holds 127 bytes and a terminator
        if key.is_empty() || key.len() >= 128 {
            return Err(format!(
                "malformed KV override '{s}': the key must be 1 to 127 bytes"
            ));
        }
        let (ty, raw) = typed.split_once(':').unwrap_or((typed, ""));
        let value =
            match (ty, typed.contains(':')) {
                ("int", true) => {
                    let n: i64 = raw
                        .trim()
                        .parse()
                        .map_err(|_| format!("invalid integer in KV override '{s}'"))?;
                    let m = n.unsigned_abs();
                    Value::U32(u32::try_from(m).map_err(|_| {
                        format!("integer in KV override '{s}' does not fit 32 bits")
                    })?)
                }
                ("float", true) => {
                    let x: f64 = raw
                        .trim()
                        .parse()
                        .map_err(|_| format!("invalid number in KV override '{s}'"))?;
                    Value::F32(x as f32)
                }
                ("bool", true) => match raw {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        return Err(format!(
                            "invalid boolean value for KV override '{s}' (true or false)"
                        ))
                    }
                },
                ("str", true) => {
                    if raw.len() > 127 {
                        return Err(format!(
                            "malformed KV override '{s}', value cannot exceed 127 chars"
                        ));
                    }
                    Value::String(raw.into())
                }
                _ => {
                    return Err(format!(
                        "invalid type for KV override '{s}': use int:, float:, bool: or str:"
                    ))
                }
            };
        if key.starts_with("general.alignment")
            || key == "general.file_type"
            || key == "general.architecture"
        {
            return Err(format!(
                "KV override '{s}': {key} is decided by the export itself and cannot be overridden"
            ));
        }
        Ok(KvOverride {
            key: key.into(),
            value,
            spec: s.into(),
        })
    }
}

impl fmt::Display for KvOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// Applies overrides in order: each key removed where it is and appended.
pub fn apply(metadata: &mut Vec<(String, Value)>, overrides: &[KvOverride]) {
    for o in overrides {
        metadata.retain(|(k, _)| *k != o.key);
        metadata.push((o.key.clone(), o.value.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_llama_quantize() {
        let o: KvOverride = "general.name=str:My Model".parse().unwrap();
        assert_eq!(o.key, "general.name");
        assert_eq!(o.value, Value::String("My Model".into()));
        let o: KvOverride = "llama.context_length=int:-4096".parse().unwrap();
        assert_eq!(o.value, Value::U32(4096));
        let o: KvOverride = "x.scale=float:0.5".parse().unwrap();
        assert_eq!(o.value, Value::F32(0.5));
        let o: KvOverride = "x.flag=bool:false".parse().unwrap();
        assert_eq!(o.value, Value::Bool(false));
        for bad in [
            "noequals",
            "=str:x",
            "k=bool:yes",
            "k=text:x",
            "k=int:abc",
            "k=int",
            "general.file_type=int:7",
        ] {
            assert!(bad.parse::<KvOverride>().is_err(), "{bad}");
        }
        let long = format!("k=str:{}", "x".repeat(128));
        assert!(long.parse::<KvOverride>().is_err());
    }

    #[test]
    fn replaced_keys_move_to_the_end() {
        let mut md = vec![
            ("a".to_string(), Value::U32(1)),
            ("b".to_string(), Value::U32(2)),
        ];
        apply(
            &mut md,
            &["a=int:5".parse().unwrap(), "c=str:x".parse().unwrap()],
        );
        let keys: Vec<&str> = md.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "c"]);
        assert_eq!(md[1].1, Value::U32(5));
    }
}
