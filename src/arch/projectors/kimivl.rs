//! Kimi-VL's MoonViT vision tower and projector: KimiVLModel of llama.cpp
//! `conversion/kimivl.py` (projector type `kimivl`).
//!
//! The fused `wqkv` weight and bias are split in thirds (views), the learned 2-D position
//! embedding is flattened to one row per position, and the image size is fixed at 64 × 14
//! pixels "for compatibility".

use anyhow::{bail, Result};
use serde_json::Value as Json;

use crate::arch::kv::Kv;
use crate::arch::tensors::{SourceTensor, TensorSink};
use crate::arch::{mmproj_model, ArchSpec, ConfigFile, Cx, Hparams, ModelKind};
use crate::gguf::Value;

/// The converter's `KimiVLModel`.
pub struct KimiVl;

impl ArchSpec for KimiVl {
    fn gguf_arch(&self) -> &'static str {
        "clip"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["KimiVLForConditionalGeneration"]
    }

    fn kind(&self) -> ModelKind {
        ModelKind::Mmproj
    }

    fn hparams(&self, file: &ConfigFile) -> Result<Hparams> {
        let mut hp = mmproj_model::vision_hparams(&self.config_defaults(file)?, file)?;
        hp.set("image_size", Json::from(64 * 14)); // for compatibility
        Ok(hp)
    }

    fn filter_tensor(&self, name: &str) -> Option<String> {
        if !(name.contains("vision_tower") || name.contains("multi_modal_projector")) {
            return None;
        }
        mmproj_model::filter_tensor(name)
    }

    fn modify_tensor(&self, _cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        let mut shape = t.shape.clone();
        if t.name.contains("pos_emb.weight") {
            // view(h * w, dim)
            let [h, w, d] = t.shape[..] else {
                bail!("pos_emb has shape {:?}; expected 3 dimensions", t.shape);
            };
            shape = vec![h * w, d];
        }
        if t.name.contains("wqkv") {
            // chunk(3) along rows (weight) or the only axis (bias)
            let rows = shape[0];
            if !rows.is_multiple_of(3) {
                bail!("wqkv has {rows} rows, not a multiple of 3");
            }
            let third = rows / 3;
            for (k, part) in ["wq", "wk", "wv"].iter().enumerate() {
                let view = t.view().narrow(0, k as u64 * third, third)?;
                let mut s = shape.clone();
                s[0] = third;
                out.map(&t.name.replace("wqkv", part), s, t.piece(view))?;
            }
            return Ok(());
        }
        out.map(&t.name, shape, t.whole())
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        mmproj_model::set_gguf_parameters(cx, kv)?;
        kv.set("clip.projector_type", Value::String("kimivl".into()));
        kv.set("clip.use_gelu", Value::Bool(true));
        kv.set("clip.vision.projector.scale_factor", Value::U32(2));
        // eps is the same as pytorch's default value
        let eps = cx.hp.f64_or("layer_norm_eps", 1e-5)?;
        kv.set(
            "clip.vision.attention.layer_norm_epsilon",
            Value::F32(eps as f32),
        );
        Ok(())
    }
}
