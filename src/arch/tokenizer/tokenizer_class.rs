//! Which fast tokenizer class `AutoTokenizer` picks for a model, as far as it changes what the
//! converter sees (special-token defaults, added tokens, the post-processor).

use serde_json::{Map, Value as Json};

use super::files::get;

/// The fast tokenizer class AutoTokenizer picks, as far as it matters here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Generic,
    Gpt2,
    Qwen2,
    Llama,
}

impl Class {
    pub(crate) fn from_name(name: &str) -> Class {
        match name.strip_suffix("Fast").unwrap_or(name) {
            "GPT2Tokenizer" => Class::Gpt2,
            "Qwen2Tokenizer" => Class::Qwen2,
            "LlamaTokenizer" => Class::Llama,
            _ => Class::Generic,
        }
    }

    /// tokenizer_config.json `tokenizer_class`, else config.json `tokenizer_class`, else
    /// the `TOKENIZER_MAPPING` entry of config.json `model_type`.
    pub(crate) fn detect(tc: Option<&Map<String, Json>>, config: &Json) -> Class {
        if let Some(name) = tc
            .and_then(|m| m.get("tokenizer_class"))
            .and_then(Json::as_str)
        {
            return Class::from_name(name);
        }
        if let Some(name) = get(config, "tokenizer_class").and_then(Json::as_str) {
            return Class::from_name(name);
        }
        match get(config, "model_type").and_then(Json::as_str) {
            Some("llama" | "mistral" | "mixtral") => Class::Llama,
            Some("qwen2" | "qwen3" | "qwen2_moe" | "qwen3_moe") => Class::Qwen2,
            Some("gpt2") => Class::Gpt2,
            _ => Class::Generic,
        }
    }

    /// The special-token defaults of the class's `__init__` (bos, eos, unk, pad).
    pub(crate) fn default_special(self, attr: &str) -> Option<&'static str> {
        match (self, attr) {
            (Class::Llama, "unk_token") => Some("<unk>"),
            (Class::Llama, "bos_token") => Some("<s>"),
            (Class::Llama, "eos_token") => Some("</s>"),
            (Class::Gpt2, "unk_token" | "bos_token" | "eos_token") => Some("<|endoftext|>"),
            (Class::Qwen2, "unk_token" | "eos_token" | "pad_token") => Some("<|endoftext|>"),
            _ => None,
        }
    }
}
