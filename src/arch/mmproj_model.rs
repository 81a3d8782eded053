//! The converter's `MmprojModel` (llama.cpp `conversion/base.py`): the defaults of projector
//! classes, which write a vision-language model's vision tower and projector as a CLIP-style
//! GGUF (`general.architecture` "clip", `general.type` "mmproj") that llama.cpp's multimodal
//! tools load next to the text model.
//!
//! The class's `self.hparams` is the model's `vision_config`; the text model's hidden size
//! comes from the (merged) text config; image mean and std from preprocessor_config.json or
//! processor_config.json.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value as Json};

use super::kv::Kv;
use super::{ConfigFile, Cx, Hparams};
use crate::gguf::{GgmlType, Value, ValueType};

/// `n_block_keys`: spellings of a vision tower's depth.
pub const N_BLOCK_KEYS: &[&str] = &[
    "n_layers",
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "depth",
    "layers",
    "encoder_layers",
    "vt_num_hidden_layers",
];

/// `MmprojModel.filter_tensors`: the text model's tensors are skipped, then
/// `ModelBase.filter_tensors`.
pub fn filter_tensor(name: &str) -> Option<String> {
    if name.contains("language_model.") {
        return None;
    }
    Some(super::text_model::base_filter(name))
}

/// `hparams_vision`: the `vision_config` of the converter's view of config.json (a
/// projector needs one).
pub fn vision_hparams(view: &Json, file: &ConfigFile) -> Result<Hparams> {
    match view.get("vision_config") {
        Some(v @ Json::Object(_)) => Hparams::from_view(v, file),
        _ => bail!("config.json has no vision_config object, which a projector model needs"),
    }
}

/// `self.block_count` of a projector: the vision tower's depth.
pub fn block_count(hp: &Hparams) -> Result<u64> {
    hp.req_u64(N_BLOCK_KEYS)
}

/// `MmprojModel.tensor_force_quant`: patch embeddings stay F16 in an F16 file, F32 otherwise.
pub fn force_type(_name: &str, gguf_name: &str, file_type: u32) -> Option<GgmlType> {
    const MOSTLY_F16: u32 = 1; // llama_ftype LLAMA_FTYPE_MOSTLY_F16
    let patch =
        gguf_name.contains(".patch_embd.weight") || gguf_name.contains(".patch_merger.weight");
    let ty = if file_type == MOSTLY_F16 {
        GgmlType::F16
    } else {
        GgmlType::F32
    };
    patch.then_some(ty)
}

/// `MmprojModel.set_gguf_parameters` for a vision encoder.
pub fn set_gguf_parameters(cx: &Cx, kv: &mut Kv) -> Result<()> {
    let v = cx.hp;
    kv.set("general.file_type", Value::U32(cx.file_type));
    kv.set("clip.has_vision_encoder", Value::Bool(true));
    let n_embd_text = cx
        .text
        .u32(&["hidden_size"])?
        .or(cx.text.u32(&["n_embd"])?)
        .filter(|&n| n > 0)
        .context("config.json: the text model's hidden_size is needed for the projector")?;
    kv.set("clip.vision.projection_dim", Value::U32(n_embd_text));
    kv.set(
        "clip.vision.image_size",
        Value::U32(v.req_u32(&["image_size"])?),
    );
    kv.set(
        "clip.vision.patch_size",
        Value::U32(v.req_u32(&["patch_size"])?),
    );
    kv.set(
        "clip.vision.embedding_length",
        Value::U32(v.req_u32(&["hidden_size", "width", "vt_hidden_size"])?),
    );
    kv.set(
        "clip.vision.feed_forward_length",
        Value::U32(v.req_u32(&["intermediate_size", "vt_intermediate_size"])?),
    );
    kv.set(
        "clip.vision.block_count",
        Value::U32(v.req_u32(N_BLOCK_KEYS)?),
    );
    kv.set(
        "clip.vision.attention.head_count",
        Value::U32(v.req_u32(&[
            "num_attention_heads",
            "num_heads",
            "heads",
            "vt_num_attention_heads",
        ])?),
    );
    let pre = preprocessor_config(cx)?;
    for (key, field) in [
        ("clip.vision.image_mean", "image_mean"),
        ("clip.vision.image_std", "image_std"),
    ] {
        let Some(values) = pre.get(field) else {
            bail!(
                "{} has no {field} (the projector needs the image normalisation)",
                cx.md.path("preprocessor_config.json").display()
            );
        };
        if let Some(a) = python_list(values)? {
            kv.set(key, a);
        }
    }
    Ok(())
}

/// `self.preprocessor_config`: preprocessor_config.json (with `media_proc_cfg` lifted), then
/// processor_config.json (with `image_processor` lifted) over it.
pub fn preprocessor_config(cx: &Cx) -> Result<Map<String, Json>> {
    let mut out = Map::new();
    for (file, nested) in [
        ("preprocessor_config.json", "media_proc_cfg"),
        ("processor_config.json", "image_processor"),
    ] {
        let Some(cfg) = cx.md.json(file)? else {
            continue;
        };
        let Some(obj) = cfg.as_object() else {
            bail!("{} is not a JSON object", cx.md.path(file).display());
        };
        let mut merged = obj.clone();
        if let Some(Json::Object(inner)) = obj.get(nested) {
            for (k, v) in inner {
                merged.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in merged {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// A JSON list as `GGUFWriter.add_array` writes a Python list: the element type is that of the
/// first element (float → FLOAT32, int → INT32, bool → BOOL, str → STRING); an empty list
/// writes nothing.
pub fn python_list(v: &Json) -> Result<Option<Value>> {
    let Some(items) = v.as_array() else {
        bail!("{v} is not a list");
    };
    let Some(first) = items.first() else {
        return Ok(None);
    };
    let bad = || anyhow::anyhow!("list {v} mixes element types gguf-py cannot write together");
    let (ty, values): (ValueType, Vec<Value>) = match first {
        Json::Bool(_) => (
            ValueType::Bool,
            items
                .iter()
                .map(|x| x.as_bool().map(Value::Bool).ok_or_else(bad))
                .collect::<Result<_>>()?,
        ),
        Json::Number(n) if n.is_f64() => (
            ValueType::F32,
            items
                .iter()
                .map(|x| x.as_f64().map(|f| Value::F32(f as f32)).ok_or_else(bad))
                .collect::<Result<_>>()?,
        ),
        Json::Number(_) => (
            ValueType::I32,
            items
                .iter()
                .map(|x| {
                    x.as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .map(Value::I32)
                        .ok_or_else(bad)
                })
                .collect::<Result<_>>()?,
        ),
        Json::String(_) => (
            ValueType::String,
            items
                .iter()
                .map(|x| x.as_str().map(|s| Value::String(s.into())).ok_or_else(bad))
                .collect::<Result<_>>()?,
        ),
        _ => bail!("list {v} holds values gguf-py cannot write"),
    };
    Ok(Some(Value::Array(ty, values)))
}
