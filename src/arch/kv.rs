//! An ordered key/value sink that behaves like gguf-py's `GGUFWriter` key table.
//!
//! The converter calls `add_*` several times for some keys (e.g. Gemma3 writes the context
//! length in `TextModel.set_gguf_parameters` and again in its own; Gemma2 first lets
//! `SpecialVocab` run, then writes `add_space_prefix`). `GGUFWriter.add_key_value` stores keys
//! in a Python dict, so a repeated key keeps its first position and takes the last value.
//! Reproducing that exactly is what keeps our key order identical to the converter's.
//! Architecture keys (`{arch}.block_count`, ...) are written through the `arch_*` methods with
//! the value types of the matching `GGUFWriter.add_*` methods.

use crate::gguf::{Value, ValueType};

/// Key names from gguf-py `constants.py` (`Keys.Tokenizer`).
pub mod keys {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const LIST: &str = "tokenizer.ggml.tokens";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
    pub const CHAT_TEMPLATES: &str = "tokenizer.chat_templates";
    pub const NORMALIZER_LOWERCASE: &str = "tokenizer.ggml.normalizer.lowercase";
    pub const NORMALIZER_STRIP_ACCENTS: &str = "tokenizer.ggml.normalizer.strip_accents";

    /// `tokenizer.chat_template.{name}`.
    pub fn chat_template_named(name: &str) -> String {
        format!("tokenizer.chat_template.{name}")
    }

    /// The key `GGUFWriter.add_{typ}_token_id` writes, or `None` when gguf-py has no such
    /// handler (then `SpecialVocab.add_to_gguf` skips the id with a warning, e.g. `cls`).
    pub fn special_token_id(typ: &str) -> Option<&'static str> {
        Some(match typ {
            "bos" => "tokenizer.ggml.bos_token_id",
            "eos" => "tokenizer.ggml.eos_token_id",
            "unk" => "tokenizer.ggml.unknown_token_id",
            // sic: the misspelling is the real key name.
            "sep" => "tokenizer.ggml.seperator_token_id",
            "pad" => "tokenizer.ggml.padding_token_id",
            "mask" => "tokenizer.ggml.mask_token_id",
            "eot" => "tokenizer.ggml.eot_token_id",
            "eom" => "tokenizer.ggml.eom_token_id",
            _ => return None,
        })
    }

    /// The key `GGUFWriter.add_add_{typ}_token` writes, or `None` when there is no handler.
    pub fn add_special_token(typ: &str) -> Option<&'static str> {
        Some(match typ {
            "bos" => "tokenizer.ggml.add_bos_token",
            "eos" => "tokenizer.ggml.add_eos_token",
            "sep" => "tokenizer.ggml.add_sep_token",
            _ => return None,
        })
    }
}

/// Insertion-ordered metadata with dict semantics (see the module doc).
#[derive(Default, Debug)]
pub struct Kv {
    /// `GGUFWriter.arch`: the prefix of architecture keys.
    arch: String,
    entries: Vec<(String, Value)>,
}

impl Kv {
    /// An empty table whose architecture keys start with `arch.`.
    pub fn for_arch(arch: &str) -> Kv {
        Kv {
            arch: arch.to_string(),
            entries: Vec::new(),
        }
    }

    /// `{arch}.{suffix}`.
    pub fn arch_key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    /// An architecture key as uint32 (`add_uint32`).
    pub fn arch_u32(&mut self, suffix: &str, v: u32) {
        let k = self.arch_key(suffix);
        self.set(&k, Value::U32(v));
    }

    /// An architecture key as float32 (`add_float32`).
    pub fn arch_f32(&mut self, suffix: &str, v: f64) {
        let k = self.arch_key(suffix);
        self.set(&k, Value::F32(v as f32));
    }

    /// An architecture key as bool (`add_bool`).
    pub fn arch_bool(&mut self, suffix: &str, v: bool) {
        let k = self.arch_key(suffix);
        self.set(&k, Value::Bool(v));
    }

    /// An architecture key as string (`add_string`).
    pub fn arch_str(&mut self, suffix: &str, v: &str) {
        let k = self.arch_key(suffix);
        self.set(&k, Value::String(v.to_string()));
    }

    /// An architecture key as an array (`add_array`).
    pub fn arch_array(&mut self, suffix: &str, v: Value) {
        let k = self.arch_key(suffix);
        self.set(&k, v);
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key`, keeping its original position if it was already set.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn set_str(&mut self, key: &str, value: &str) {
        self.set(key, Value::String(value.to_string()));
    }

    pub fn set_bool(&mut self, key: &str, value: bool) {
        self.set(key, Value::Bool(value));
    }

    /// A string array; gguf-py writes `list[str]` and `list[bytes]` the same way.
    pub fn set_strings(&mut self, key: &str, items: Vec<String>) {
        let items = items.into_iter().map(Value::String).collect();
        self.set(key, Value::Array(ValueType::String, items));
    }

    pub fn into_vec(self) -> Vec<(String, Value)> {
        self.entries
    }
}
