//! `ModelBase.dequant_model` (llama.cpp `conversion/base.py`): checkpoints shipped quantized
//! (`quantization_config` in config.json) are dequantized before any family sees them.
//!
//! gmat stores such weights as they are (FP8 bytes and their scale tensors, losslessly) and
//! dequantizes while exporting: here a weight only records which stored tensor holds its block
//! scales ([`BlockScale`]), and the scale tensors leave the stream, exactly as the converter
//! removes them. Quantization methods the converter handles but gmat does not are refused by
//! name rather than exported wrongly.

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use super::tensors::SourceTensor;
use super::Hparams;

/// A weight's block scales: `value = float(weight) × scale[i / block]` per axis
/// (`dequant_simple`: the scale repeated over each block, edge blocks cut off), computed in
/// f32 as torch does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockScale {
    /// Position of the scale tensor in the store's tensor list.
    pub source: usize,
    /// The scale tensor's shape, outermost first.
    pub shape: Vec<u64>,
    /// `weight_block_size`, one per weight axis.
    pub block: Vec<u64>,
}

/// `prepare_metadata`: a float export of an MXFP4 checkpoint is written as
/// `LLAMA_FTYPE_MOSTLY_MXFP4_MOE` (38), its experts kept MXFP4; otherwise `id` as it is.
pub fn converter_file_type(hp: &Hparams, id: u32, is_float: bool) -> u32 {
    let method = hp
        .get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .and_then(Json::as_str);
    if is_float && method == Some("mxfp4") {
        38
    } else {
        id
    }
}

/// Applies the checkpoint's `quantization_config` to the (filtered, in order) source tensors.
pub fn dequant_model(hp: &Hparams, tensors: Vec<SourceTensor>) -> Result<Vec<SourceTensor>> {
    let Some(Json::Object(qc)) = hp.get("quantization_config") else {
        return Ok(tensors);
    };
    let method = qc.get("quant_method").and_then(Json::as_str);
    match method {
        None => Ok(tensors),
        Some("fp8") => fp8(qc.get("weight_block_size"), tensors),
        Some(m) => bail!(
            "config.json: quantization_config.quant_method {m:?} is not supported (gmat \
             dequantizes \"fp8\" checkpoints and keeps gpt-oss's \"mxfp4\" experts; the \
             converter also reads bitnet, gptq, compressed-tensors and modelopt ones)"
        ),
    }
}

/// The `quant_method == "fp8"` branch: `<weight>_scale_inv` (and Mistral's `qscale_weight`)
/// scale their weight; activation scales are dropped.
fn fp8(block: Option<&Json>, mut tensors: Vec<SourceTensor>) -> Result<Vec<SourceTensor>> {
    let block: Option<Vec<u64>> = match block {
        None | Some(Json::Null) => None,
        Some(Json::Array(a)) => Some(
            a.iter()
                .map(|v| {
                    v.as_u64().filter(|&n| n > 0).with_context(|| {
                        format!(
                            "config.json: weight_block_size entry {v} is not a positive integer"
                        )
                    })
                })
                .collect::<Result<_>>()?,
        ),
        Some(v) => bail!("config.json: weight_block_size {v} is not a list"),
    };
    let mut remove = vec![false; tensors.len()];
    for i in 0..tensors.len() {
        let name = tensors[i].name.clone();
        let weight = if let Some(w) = name.strip_suffix("_scale_inv") {
            Some(w.to_string())
        } else {
            name.strip_suffix("qscale_weight")
                .filter(|_| name.ends_with(".qscale_weight"))
                .map(|w| format!("{w}weight"))
        };
        if let Some(weight) = weight {
            let Some(w) = tensors.iter().position(|t| t.name == weight) else {
                bail!("FP8 scale tensor {name} has no weight {weight}");
            };
            let s = &tensors[i];
            let scale = scale_for(&tensors[w], s, block.as_deref())?;
            tensors[w].scale = Some(BlockScale {
                source: s.index,
                shape: s.shape.clone(),
                block: scale,
            });
            remove[i] = true;
        }
        if name.ends_with(".activation_scale")
            || name.ends_with("_activation_scale")
            || name.ends_with(".qscale_act")
        {
            remove[i] = true;
        }
    }
    let mut keep = remove.iter().map(|r| !r);
    tensors.retain(|_| keep.next().unwrap_or(true));
    Ok(tensors)
}

/// The per-axis block of `scale` over `weight`, checking that the repeated scale covers it.
fn scale_for(w: &SourceTensor, s: &SourceTensor, block: Option<&[u64]>) -> Result<Vec<u64>> {
    let nd = w.shape.len();
    let block: Vec<u64> = match block {
        // no block size: the scale broadcasts (per-tensor or per-row scales)
        None => {
            if s.shape.len() > nd {
                bail!(
                    "FP8 scale {} {:?} has more axes than its weight {:?}",
                    s.name,
                    s.shape,
                    w.shape
                );
            }
            let mut full = s.shape.clone();
            full.resize(nd, 1);
            w.shape
                .iter()
                .zip(&full)
                .map(|(&d, &n)| match n {
                    1 => Ok(d.max(1)),
                    n if n == d => Ok(1),
                    _ => bail!(
                        "FP8 scale {} {:?} does not broadcast over its weight {:?}",
                        s.name,
                        s.shape,
                        w.shape
                    ),
                })
                .collect::<Result<_>>()?
        }
        Some(b) => {
            if s.shape.len() != nd || b.len() != nd {
                bail!(
                    "FP8 weight {} {:?} with scale {:?} and weight_block_size {b:?}: gmat \
                     dequantizes scales with one block size per weight axis",
                    w.name,
                    w.shape,
                    s.shape
                );
            }
            b.to_vec()
        }
    };
    for ((&d, &n), &b) in w.shape.iter().zip(&s.shape).zip(&block) {
        if n * b < d {
            bail!(
                "FP8 scale {} {:?} with blocks {block:?} does not cover its weight {:?}",
                s.name,
                s.shape,
                w.shape
            );
        }
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Dtype;

    fn t(i: usize, name: &str, dtype: Dtype, shape: &[u64]) -> SourceTensor {
        SourceTensor::new(i, name.into(), dtype, shape.to_vec())
    }

    #[test]
    fn scales_attach_to_their_weights_and_leave_the_stream() {
        let hp = Hparams::new(&serde_json::json!({"quantization_config":
            {"quant_method": "fp8", "weight_block_size": [128, 128]}}))
        .unwrap();
        let out = dequant_model(
            &hp,
            vec![
                t(0, "a.weight", Dtype::F8E4M3, &[192, 160]),
                t(1, "a.weight_scale_inv", Dtype::F32, &[2, 2]),
                t(2, "n.weight", Dtype::BF16, &[160]),
                t(3, "a.activation_scale", Dtype::F32, &[1]),
            ],
        )
        .unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a.weight", "n.weight"]);
        assert_eq!(
            out[0].scale,
            Some(BlockScale {
                source: 1,
                shape: vec![2, 2],
                block: vec![128, 128]
            })
        );
        let short = dequant_model(
            &hp,
            vec![
                t(0, "a.weight", Dtype::F8E4M3, &[300, 10]),
                t(1, "a.weight_scale_inv", Dtype::F32, &[2, 1]),
            ],
        );
        assert!(short.unwrap_err().to_string().contains("does not cover"));
        let other = Hparams::new(&serde_json::json!({"quantization_config":
            {"quant_method": "gptq"}}))
        .unwrap();
        let e = dequant_model(&other, vec![]).unwrap_err().to_string();
        assert!(e.contains("\"gptq\" is not supported"), "{e}");
    }
}
