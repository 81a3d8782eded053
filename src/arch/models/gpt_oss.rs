//! `gpt-oss`: GptOssModel of llama.cpp `conversion/gpt_oss.py` (openai/gpt-oss-20b/120b).
//!
//! Experts ship already stacked per layer, the gate and up projections interleaved row by row
//! in one `gate_up_proj` (even rows gate, odd rows up). An MXFP4 checkpoint
//! (`quantization_config.quant_method == "mxfp4"`) holds them as `*_blocks` (4-bit codes) and
//! `*_scales` (E8M0 exponents): the converter does not dequantize them but repacks the bytes
//! into ggml MXFP4 blocks (`generate_extra_tensors`, written first), and writes the file as
//! MXFP4_MOE. A BF16 checkpoint's experts are transposed instead. Attention sinks get a
//! `.weight` suffix; `post_attention_layernorm` is this architecture's ATTN_POST_NORM.

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use crate::arch::kv::Kv;
use crate::arch::tensors::{Data, Mxfp4Scales, OutTensor, SourceTensor, TensorSink};
use crate::arch::transform::View;
use crate::arch::{text_model, ArchSpec, Cx};

/// The converter's `GptOssModel`.
pub struct GptOss;

impl ArchSpec for GptOss {
    fn gguf_arch(&self) -> &'static str {
        "gpt-oss"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["GptOssForCausalLM"]
    }

    fn filter_tensor(&self, name: &str) -> Option<String> {
        let name = if name.contains("sinks") {
            format!("{name}.weight")
        } else {
            name.to_string()
        };
        text_model::filter_tensor(&name)
    }

    fn dequant_model(&self, cx: &Cx, tensors: Vec<SourceTensor>) -> Result<Vec<SourceTensor>> {
        // MXFP4 weights stay as they are (repacked, not dequantized)
        if is_mxfp4(cx) {
            return Ok(tensors);
        }
        crate::arch::dequant::dequant_model(cx.hp, tensors)
    }

    fn extra_tensors(
        &self,
        cx: &Cx,
        sources: &[SourceTensor],
        _kv: &mut Kv,
    ) -> Result<Vec<OutTensor>> {
        // "we assume that tensors are loaded in the correct order": blocks, then their scales
        let mut out = Vec::new();
        let mut blocks: Option<&SourceTensor> = None;
        for t in sources {
            if t.name.contains("mlp.experts.down_proj_blocks")
                || t.name.contains("mlp.experts.gate_up_proj_blocks")
            {
                blocks = Some(t);
            } else if t.name.contains("mlp.experts.down_proj_scales") {
                let b = blocks.context("down_proj_scales before its down_proj_blocks")?;
                let name = t.name.replace("_scales", ".weight");
                out.push(repack(cx, &name, b, t, None)?);
            } else if t.name.contains("mlp.experts.gate_up_proj_scales") {
                let b = blocks.context("gate_up_proj_scales before its gate_up_proj_blocks")?;
                for (parity, proj) in [(0, "gate_proj.weight"), (1, "up_proj.weight")] {
                    let name = t.name.replace("gate_up_proj_scales", proj);
                    out.push(repack(cx, &name, b, t, Some(parity))?);
                }
            }
        }
        Ok(out)
    }

    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        let _ = cx;
        let mut name = t.name.clone();
        let nd = t.shape.len();
        if name.contains("down_proj") {
            if name.ends_with("_bias") {
                name = name.replace("down_proj_bias", "down_proj.bias");
            } else if !name.contains("_blocks") && !name.contains("_scales") {
                // not MXFP4 ("performance may be degraded"): [experts, ff, hidden] transposed
                name = name.replace("down_proj", "down_proj.weight");
                let mut shape = t.shape.clone();
                shape.swap(nd - 1, nd - 2);
                let view = t.view().swap_axes(nd - 1, nd - 2);
                return out.map(&name, shape, t.piece(view));
            } else {
                return Ok(()); // already repacked to ggml MXFP4
            }
        }
        if name.contains("gate_up_proj") {
            if name.ends_with("_bias") {
                // gate = [..., ::2], up = [..., 1::2]
                let last = t.shape[nd - 1];
                for (parity, proj) in [(0, "gate_proj.bias"), (1, "up_proj.bias")] {
                    let view = every_other(t.view(), nd - 1, parity, last)?;
                    let mut shape = t.shape.clone();
                    shape[nd - 1] = last / 2;
                    out.map(
                        &name.replace("gate_up_proj_bias", proj),
                        shape,
                        t.piece(view),
                    )?;
                }
            } else if !name.contains("_blocks") && !name.contains("_scales") {
                // transposed to [experts, 2·ff, hidden], then rows ::2 gate, 1::2 up
                if nd != 3 {
                    bail!(
                        "gate_up_proj has shape {:?}; expected 3 dimensions",
                        t.shape
                    );
                }
                let transposed = t.view().swap_axes(1, 2);
                let rows = t.shape[2];
                for (parity, proj) in [(0, "gate_proj.weight"), (1, "up_proj.weight")] {
                    let view = every_other(transposed.clone(), 1, parity, rows)?;
                    out.map(
                        &name.replace("gate_up_proj", proj),
                        vec![t.shape[0], rows / 2, t.shape[1]],
                        t.piece(view),
                    )?;
                }
            }
            // MXFP4 gate_up blocks/scales were repacked in extra_tensors
            return Ok(());
        }
        out.map(&name, t.shape.clone(), t.piece(t.view()))
    }

    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        text_model::set_gguf_parameters(cx, kv)?;
        kv.arch_u32(
            "attention.sliding_window",
            cx.hp.req_u32(&["sliding_window"])?,
        );
        kv.arch_u32(
            "expert_feed_forward_length",
            cx.hp.req_u32(&["intermediate_size"])?,
        );
        Ok(())
    }
}

/// `quantization_config.quant_method == "mxfp4"`.
pub fn is_mxfp4(cx: &Cx) -> bool {
    cx.hp
        .get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .and_then(Json::as_str)
        == Some("mxfp4")
}

/// Elements `parity, parity + 2, ...` of `axis` (`x[..., parity::2, ...]`).
fn every_other(view: View, axis: usize, parity: u64, len: u64) -> Result<View> {
    if !len.is_multiple_of(2) {
        bail!("{len} rows cannot be split into even and odd halves");
    }
    let mut v = view.narrow(axis, parity, len - parity)?;
    v.dims[axis] = len / 2;
    v.strides[axis] *= 2;
    Ok(v)
}

/// `repack_mxfp4`: one stacked ggml MXFP4 tensor from `blocks` `[experts, rows, n_blocks, 16]`
/// and `scales` `[experts, rows, n_blocks]` (rows `parity::2` only, for the interleaved
/// gate/up), shape `[experts, rows, n_blocks · 32]`.
fn repack(
    cx: &Cx,
    hf_name: &str,
    blocks: &SourceTensor,
    scales: &SourceTensor,
    parity: Option<u64>,
) -> Result<OutTensor> {
    let (e, r, nb) = match (&blocks.shape[..], &scales.shape[..]) {
        ([e, r, nb, 16], [e2, r2, nb2]) if (e, r, nb) == (e2, r2, nb2) => (*e, *r, *nb),
        _ => bail!(
            "MXFP4 blocks {} {:?} and scales {} {:?} do not match ([experts, rows, blocks, 16] and [experts, rows, blocks])",
            blocks.name,
            blocks.shape,
            scales.name,
            scales.shape
        ),
    };
    let mut bview = View::contiguous(&[e, r, nb * 16]);
    let mut sview = View::contiguous(&[e, r, nb]);
    let mut rows = r;
    if let Some(p) = parity {
        bview = every_other(bview, 1, p, r)?;
        sview = every_other(sview, 1, p, r)?;
        rows = r / 2;
    }
    let m = cx.names.map(hf_name)?;
    let mut piece = blocks.piece(bview);
    piece.mxfp4 = Some(Mxfp4Scales {
        source: scales.index,
        view: sview,
    });
    Ok(OutTensor {
        name: m.name,
        kind: m.kind,
        shape: vec![e, rows, nb * 32],
        data: Data::Pieces(vec![piece]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_row_is_a_strided_view() {
        let v = every_other(View::contiguous(&[2, 6, 3]), 1, 1, 6).unwrap();
        let rows: Vec<u64> = (0..6).map(|i| v.source_index(i * 3) / 3).collect();
        assert_eq!(rows, [1, 3, 5, 7, 9, 11]);
        assert!(every_other(View::contiguous(&[5]), 0, 0, 5).is_err());
    }
}
