//! The converter's `TextModel` (and `ModelBase`) behaviour that every architecture starts
//! from: `filter_tensors`, `set_gguf_parameters`, `_try_set_pooling_type`
//! (llama.cpp `conversion/base.py` of the reference build). The [`super::ArchSpec`] trait's
//! default methods call these; families call them too before adding their own keys.

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use super::kv::Kv;
use super::Cx;

/// `TextModel.filter_tensors` (multimodal tensors dropped) then `ModelBase.filter_tensors`
/// (`e_score_correction_bias` renamed, `language_model.` removed). `None`: not converted.
pub fn filter_tensor(name: &str) -> Option<String> {
    const PREFIXES: &[&str] = &[
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const PARTS: &[&str] = &[
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
    ];
    if PREFIXES.iter().any(|p| name.starts_with(p)) || PARTS.iter().any(|p| name.contains(p)) {
        return None;
    }
    Some(base_filter(name))
}

/// `ModelBase.filter_tensors`.
pub fn base_filter(name: &str) -> String {
    let mut name = name.to_string();
    if name.ends_with("e_score_correction_bias") {
        name = name.replace("e_score_correction_bias", "e_score_correction.bias");
    }
    if name.contains("language_model.") {
        name = name.replace("language_model.", "");
    }
    name
}

/// `TextModel.set_gguf_parameters`.
pub fn set_gguf_parameters(cx: &Cx, kv: &mut Kv) -> Result<()> {
    let hp = cx.hp;
    kv.arch_u32("block_count", cx.block_count_u32()?);
    if let Some(n) = hp.u32(&[
        "max_position_embeddings",
        "n_ctx",
        "n_positions",
        "max_length",
        "max_sequence_length",
        "model_max_length",
    ])? {
        kv.arch_u32("context_length", n);
    }
    if let Some(n) = hp.u32(&["hidden_size", "n_embd", "dim"])? {
        kv.arch_u32("embedding_length", n);
    }
    if let Some(n) = hp.u32(&[
        "prefix_dense_intermediate_size",
        "dense_intermediate_size",
        "intermediate_size",
        "n_inner",
        "hidden_dim",
    ])? {
        kv.arch_u32("feed_forward_length", n);
    }
    if let Some(n) = hp.u32(&["num_attention_heads", "n_head", "n_heads"])? {
        kv.arch_u32("attention.head_count", n);
    }
    if let Some(n) = hp.u32(&["num_key_value_heads", "n_kv_heads"])? {
        kv.arch_u32("attention.head_count_kv", n);
    }
    if hp.get("is_causal") == Some(&Json::Bool(false)) {
        kv.arch_bool("attention.causal", false);
    }
    let rope_all = hp.rope_parameters();
    let rope = hp.full_attention_rope();
    let num = |k: &str| rope.get(k).and_then(Json::as_f64);
    if let Some(t) = rope.get("rope_type").filter(|v| !v.is_null()) {
        let Some(t) = t.as_str() else {
            bail!("config.json: rope_type {t} is not a string");
        };
        let factor = num("factor");
        match (t, factor) {
            ("linear", Some(f)) => {
                kv.arch_str("rope.scaling.type", "linear");
                kv.arch_f32("rope.scaling.factor", f);
            }
            ("yarn", Some(f)) => {
                kv.arch_str("rope.scaling.type", "yarn");
                kv.arch_f32("rope.scaling.factor", f);
                let orig = rope
                    .get("original_max_position_embeddings")
                    .and_then(Json::as_u64)
                    .context(
                        "config.json: yarn rope scaling needs original_max_position_embeddings",
                    )?;
                kv.arch_u32(
                    "rope.scaling.original_context_length",
                    u32::try_from(orig).context("original_max_position_embeddings")?,
                );
                if let Some(v) = num("extrapolation_factor") {
                    kv.arch_f32("rope.scaling.yarn_ext_factor", v);
                }
                if let Some(v) = num("attention_factor").or_else(|| num("attn_factor")) {
                    kv.arch_f32("rope.scaling.yarn_attn_factor", v);
                }
                if let Some(v) = num("beta_fast") {
                    kv.arch_f32("rope.scaling.yarn_beta_fast", v);
                }
                if let Some(v) = num("beta_slow") {
                    kv.arch_f32("rope.scaling.yarn_beta_slow", v);
                }
            }
            ("su" | "longrope", _) => kv.arch_str("rope.scaling.type", "longrope"),
            // linear/yarn without a factor, dynamic (HunYuan, in its class), llama3 (the
            // rope_freqs tensor), unknown (a warning): no key.
            _ => {}
        }
    }
    if let Some(Json::Array(sections)) = rope_all.get("mrope_section") {
        let mut s: Vec<i32> = Vec::new();
        for v in sections {
            let n = v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .context("config.json: mrope_section holds a non-integer")?;
            s.push(n);
        }
        s.resize(s.len().max(4), 0);
        s.truncate(4);
        kv.arch_array("rope.dimension_sections", crate::gguf::Value::i32s(s));
    }
    if let Some(t) = num("rope_theta") {
        kv.arch_f32("rope.freq_base", t);
    }
    if let Some(t) = rope_all
        .get("sliding_attention")
        .and_then(|s| s.get("rope_theta"))
        .and_then(Json::as_f64)
    {
        kv.arch_f32("rope.freq_base_swa", t);
    }
    if let Some(e) = hp.f64(&["rms_norm_eps", "norm_eps"])? {
        kv.arch_f32("attention.layer_norm_rms_epsilon", e);
    }
    if let Some(e) = hp.f64(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])? {
        kv.arch_f32("attention.layer_norm_epsilon", e);
    }
    if let Some(n) = hp.u32(&["num_local_experts", "num_experts", "n_routed_experts"])? {
        kv.arch_u32("expert_count", n);
    }
    if let Some(n) = hp.u32(&[
        "num_experts_per_tok",
        "num_experts_per_token",
        "top_k_experts",
    ])? {
        kv.arch_u32("expert_used_count", n);
    }
    if let Some(n) = hp.u32(&["n_group"])? {
        kv.arch_u32("expert_group_count", n);
    }
    if let Some(n) = hp.u32(&["topk_group"])? {
        kv.arch_u32("expert_group_used_count", n);
    }
    if let Some(f) = hp.find(&[
        "score_function",
        "scoring_func",
        "score_func",
        "moe_router_activation",
        "moe_router_activation_func",
        "expert_selection_fn",
    ]) {
        // gguf-py ExpertGatingFuncType
        let v = match f.as_str() {
            Some("softmax") => 1,
            Some("sigmoid") => 2,
            Some("sqrtsoftplus") => 3,
            _ => bail!("config.json: unsupported expert score gating function {f}"),
        };
        kv.arch_u32("expert_gating_func", v);
    }
    if let Some(d) = hp.u32(&["head_dim"])? {
        kv.arch_u32("attention.key_length", d);
        kv.arch_u32("attention.value_length", d);
    }
    kv.set("general.file_type", crate::gguf::Value::U32(cx.file_type));
    Ok(())
}

/// gguf-py `PoolingType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean = 1,
    Cls = 2,
    Last = 3,
}

/// `_try_set_pooling_type`: the pooling of a sentence-transformers folder (`modules.json`
/// naming a `*Pooling` module whose `config.json` says the mode), and `classifier_pooling`.
pub fn try_set_pooling_type(cx: &Cx, kv: &mut Kv) -> Result<()> {
    let modules_path = cx.dir.join("modules.json");
    if modules_path.is_file() {
        let modules = read_json(&modules_path)?;
        let Some(list) = modules.as_array() else {
            bail!("{} is not a list of modules", modules_path.display());
        };
        let mut pooling_path = None;
        for m in list {
            let ty = m
                .get("type")
                .and_then(Json::as_str)
                .with_context(|| format!("{}: a module has no \"type\"", modules_path.display()))?;
            if ty.ends_with("Pooling") {
                pooling_path = Some(m.get("path").and_then(Json::as_str).with_context(|| {
                    format!(
                        "{}: the pooling module has no \"path\"",
                        modules_path.display()
                    )
                })?);
                break;
            }
        }
        if let Some(rel) = pooling_path {
            let p = cx.dir.join(rel).join("config.json");
            let cfg = read_json(&p)?;
            let flag = |k: &str| cfg.get(k).is_some_and(truthy);
            let pooling = if flag("pooling_mode_mean_tokens") {
                Pooling::Mean
            } else if flag("pooling_mode_cls_token") {
                Pooling::Cls
            } else if flag("pooling_mode_lasttoken") {
                Pooling::Last
            } else {
                match cfg.get("pooling_mode").and_then(Json::as_str) {
                    Some("mean") => Pooling::Mean,
                    Some("cls") => Pooling::Cls,
                    Some("lasttoken") => Pooling::Last,
                    _ => bail!(
                        "{}: only MEAN, CLS and LAST pooling are supported (as by the converter)",
                        p.display()
                    ),
                }
            };
            kv.arch_u32("pooling_type", pooling as u32);
        }
    }
    if let Some(c) = cx.hp.get("classifier_pooling") {
        let pooling = match c.as_str() {
            Some("cls") => Pooling::Cls,
            Some("mean") => Pooling::Mean,
            _ => bail!("config.json: unsupported classifier_pooling {c}"),
        };
        kv.arch_u32("classifier_pooling_type", pooling as u32);
    }
    Ok(())
}

/// Python truthiness of a JSON value (`if pooling.get(...)`).
fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// A JSON file, with errors naming it.
pub fn read_json(path: &std::path::Path) -> Result<Json> {
    let text = crate::fsio::read_small_text(path)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multimodal_tensors_are_dropped_and_prefixes_normalised() {
        assert_eq!(filter_tensor("vision_tower.blocks.0.wqkv.weight"), None);
        assert_eq!(filter_tensor("multi_modal_projector.linear_1.weight"), None);
        assert_eq!(filter_tensor("mlp1.0.weight"), None);
        assert_eq!(
            filter_tensor("language_model.model.layers.1.mlp.gate.e_score_correction_bias")
                .as_deref(),
            Some("model.layers.1.mlp.gate.e_score_correction.bias")
        );
        assert_eq!(
            filter_tensor("model.layers.0.mlp.up_proj.weight").as_deref(),
            Some("model.layers.0.mlp.up_proj.weight")
        );
    }
}
