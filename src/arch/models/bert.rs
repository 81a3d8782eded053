//! `bert`: BertModel of llama.cpp `conversion/bert.py` (BERT encoders used for sentence
//! embeddings: BertModel, BertForMaskedLM, BertForSequenceClassification checkpoints).
//!
//! Non-causal attention, the pooling type of a sentence-transformers folder, a WordPiece
//! vocabulary rewritten to llama.cpp's "phantom space" form (`##x` → `x`, other tokens get a
//! leading `▁`), and the token-type count. The pooler and the masked-LM / next-sentence heads
//! are not converted.

use anyhow::Result;
use serde_json::{json, Value as Json};

use crate::arch::auto_config::{py::Py, ConfigClass, Init};

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

    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[&BERT_CONFIG]
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
        let type_count = cx.hp.u32_or("type_vocab_size", 1)?;
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

// transformers 4.57.6 configuration class of BertModel checkpoints: the defaults the
// converter's view of config.json gets (`auto_config`).

/// `BertConfig` (models/bert/configuration_bert.py).
pub const BERT_CONFIG: ConfigClass = ConfigClass {
    name: "BertConfig",
    model_type: "bert",
    attribute_map: &[],
    init: bert_config,
};

fn bert_config(c: &mut Init) -> Py<()> {
    let a = c.args(&[
        ("vocab_size", json!(30522)),
        ("hidden_size", json!(768)),
        ("num_hidden_layers", json!(12)),
        ("num_attention_heads", json!(12)),
        ("intermediate_size", json!(3072)),
        ("hidden_act", json!("gelu")),
        ("hidden_dropout_prob", json!(0.1)),
        ("attention_probs_dropout_prob", json!(0.1)),
        ("max_position_embeddings", json!(512)),
        ("type_vocab_size", json!(2)),
        ("initializer_range", json!(0.02)),
        ("layer_norm_eps", json!(1e-12)),
        ("pad_token_id", json!(0)),
        ("position_embedding_type", json!("absolute")),
        ("use_cache", json!(true)),
        ("classifier_dropout", Json::Null),
    ]);
    c.base(&[("pad_token_id", a.get("pad_token_id"))])?;
    c.set_args(
        &a,
        &[
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "hidden_act",
            "intermediate_size",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "max_position_embeddings",
            "type_vocab_size",
            "initializer_range",
            "layer_norm_eps",
            "position_embedding_type",
            "use_cache",
            "classifier_dropout",
        ],
    );
    Ok(())
}
