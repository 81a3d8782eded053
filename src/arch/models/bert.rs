//! `bert`: BertModel of llama.cpp `conversion/bert.py` (BERT encoders used for sentence
//! embeddings: BertModel, BertForMaskedLM, BertForSequenceClassification checkpoints).
//!
//! Non-causal attention, the pooling type of a sentence-transformers folder, a WordPiece
//! vocabulary rewritten to llama.cpp's "phantom space" form (`##x` → `x`, other tokens get a
//! leading `▁`), and the token-type count. The pooler and the masked-LM / next-sentence heads
//! are not converted.

use anyhow::Result;
use serde_json::Value as Json;

use crate::arch::kv::{keys, Kv};
use crate::arch::tensors::{SourceTensor, TensorSink};
use crate::arch::tokenizer::{self, SpecialVocab, TokenType};
use crate::arch::{text_model, ArchSpec, Cx};
use crate::gguf::{Value, ValueType};

/// The converter's `BertModel`.
pub struct Bert;

impl ArchSpec for Bert {
    fn gguf_arch(&self) -> &'static str {
        "bert"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &[
            "BertModel",
            "BertForMaskedLM",
            "BertForSequenceClassification",
        ]
    }

    fn filter_tensor(&self, name: &str) -> Option<String> {
        let mut name = name.strip_prefix("bert.").unwrap_or(name).to_string();
        if let Some(n) = name.strip_suffix(".gamma") {
            name = format!("{n}.weight");
        }
        if let Some(n) = name.strip_suffix(".beta") {
            name = format!("{n}.bias");
        }
        // only used for embeddings: no pooler, no pre-training heads
        if matches!(
            name.as_str(),
            "embeddings.position_ids" | "pooler.dense.weight" | "pooler.dense.bias"
        ) || name.starts_with("cls.predictions")
            || name.starts_with("cls.seq_relationship")
        {
            return None;
        }
        text_model::filter_tensor(&name)
    }

    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        if classifier_labels(cx).is_some() {
            // BertForSequenceClassification: a direct projection layer
            let renamed = match t.name.as_str() {
                "classifier.weight" => Some("classifier.out_proj.weight"),
                "classifier.bias" => Some("classifier.out_proj.bias"),
                _ => None,
            };
            if let Some(n) = renamed {
                return out.map(n, t.shape.clone(), t.whole());
            }
        }
        out.map_whole(t)
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        text_model::set_gguf_parameters(cx, kv)?;
        kv.arch_bool("attention.causal", false);
        text_model::try_set_pooling_type(cx, kv)?;
        if let Some(labels) = classifier_labels(cx) {
            kv.arch_array(
                "classifier.output_labels",
                Value::Array(
                    ValueType::String,
                    labels.into_iter().map(Value::String).collect(),
                ),
            );
        }
        Ok(())
    }

    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        let v = tokenizer::get_vocab_base(cx.md, cx.hp.json())?;
        let n_vocab = v.tokens.len();
        let type_count = cx.hp.u32(&["type_vocab_size"])?.unwrap_or(1);
        kv.set("tokenizer.ggml.token_type_count", Value::U32(type_count));
        // convert to the phantom space vocabulary
        let tokens: Vec<String> = v
            .tokens
            .into_iter()
            .zip(&v.types)
            .map(|(t, ty)| {
                if *ty == TokenType::Control {
                    t
                } else if let Some(rest) = t.strip_prefix("##") {
                    rest.to_string()
                } else {
                    format!("\u{2581}{t}")
                }
            })
            .collect();
        kv.set_str(keys::MODEL, "bert");
        kv.set_str(keys::PRE, v.pre);
        kv.set_strings(keys::LIST, tokens);
        kv.set(
            keys::TOKEN_TYPE,
            Value::i32s(v.types.iter().map(|t| *t as i32)),
        );
        SpecialVocab::load(cx.md, false, None, Some(n_vocab))?.add_to_gguf(kv);
        Ok(())
    }
}

/// `id2label` values in key order, unless they are AutoConfig's two dummy labels.
fn classifier_labels(cx: &Cx) -> Option<Vec<String>> {
    let Some(Json::Object(m)) = cx.hp.get("id2label") else {
        return None;
    };
    let mut items: Vec<(i64, String)> = m
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
        .collect();
    items.sort();
    if items.len() == 2 && items[0].1 == "LABEL_0" {
        return None;
    }
    Some(items.into_iter().map(|(_, v)| v).collect())
}
