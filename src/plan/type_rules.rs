//! Which ggml type each tensor gets.
//!
//! Two stages, as in the reference route `convert_hf_to_gguf.py` + `llama-quantize`:
//! 1. [`converter_type`]: the type the converter writes (1-D tensors, norms, routers and biases
//!    stay F32; other weights take the float out-type).
//! 2. llama-quantize's choice ([`super::mix_rules`]), ending with the shape fallback
//!    ([`fallback`]).
//!
//! Rules are those of the reference build (llama.cpp b11312): `prepare_tensors` in
//! conversion/base.py and `tensor_type_fallback` in src/llama-quant.cpp.

use anyhow::{bail, Result};

use crate::arch::TensorKind;
use crate::gguf::GgmlType;

/// Tensor kinds `prepare_tensors` always writes as F32 (its list of `match_model_tensor_name`
/// keys, conversion/base.py of the reference build).
const KEPT_F32: &[TensorKind] = &[
    TensorKind::FfnGateInp,
    TensorKind::FfnGateInpShexp,
    TensorKind::PosEmbd,
    TensorKind::TokenTypes,
    TensorKind::SsmConv1d,
    TensorKind::ShortconvConv,
    TensorKind::TimeMixFirst,
    TensorKind::TimeMixW1,
    TensorKind::TimeMixW2,
    TensorKind::TimeMixDecayW1,
    TensorKind::TimeMixDecayW2,
    TensorKind::TimeMixLerpFused,
    TensorKind::PosnetNorm1,
    TensorKind::PosnetNorm2,
    TensorKind::VEncEmbdPos,
    TensorKind::AEncEmbdPos,
    TensorKind::AltupCorrectCoef,
    TensorKind::AltupPredictCoef,
    TensorKind::SsmConv1dQ,
    TensorKind::SsmConv1dK,
    TensorKind::SsmConv1dV,
    TensorKind::IndexerProj,
];

/// The converter's type for a tensor, given its float out-type: F32 for 1-D tensors, norms,
/// the [`KEPT_F32`] kinds and names not ending in `.weight`/`.lora_a`/`.lora_b`.
pub fn converter_type(
    gguf_name: &str,
    n_dims: usize,
    kind: TensorKind,
    out_type: GgmlType,
) -> GgmlType {
    let forced_f32 = n_dims <= 1
        || gguf_name.ends_with("_norm.weight")
        || (KEPT_F32.contains(&kind) && gguf_name.ends_with(".weight"))
        || ![".weight", ".lora_a", ".lora_b"]
            .iter()
            .any(|s| gguf_name.ends_with(s));
    if forced_f32 {
        GgmlType::F32
    } else {
        out_type
    }
}

/// `prepare_tensors`' type when the class may force one (`tensor_force_quant`): the forced
/// type, unless the tensor is 1-D or a norm (always F32); otherwise as [`converter_type`].
pub fn converter_type_forced(
    gguf_name: &str,
    n_dims: usize,
    kind: TensorKind,
    forced: Option<GgmlType>,
    out_type: GgmlType,
) -> GgmlType {
    match forced {
        Some(_) if n_dims <= 1 || gguf_name.ends_with("_norm.weight") => GgmlType::F32,
        Some(t) => t,
        None => converter_type(gguf_name, n_dims, kind, out_type),
    }
}

/// llama-quantize's `tensor_type_fallback`: a type whose block fits a row of `ncols`.
pub fn fallback(ncols: u64, target: GgmlType) -> Result<GgmlType> {
    let qk = target.block_size() as u64;
    if ncols.is_multiple_of(qk) {
        return Ok(target);
    }
    use GgmlType as G;
    let ret = match target {
        G::IQ1_S
        | G::IQ1_M
        | G::IQ2_XXS
        | G::IQ2_XS
        | G::IQ2_S
        | G::IQ3_XXS
        | G::IQ3_S
        | G::IQ4_XS => G::IQ4_NL,
        G::Q2_0 | G::Q2_K | G::Q3_K | G::TQ1_0 | G::TQ2_0 => G::Q4_0,
        G::Q4_K => G::Q5_0,
        G::Q5_K => G::Q5_1,
        G::Q6_K => G::Q8_0,
        t if qk <= 32 => t,
        t => bail!("no tensor type fallback is defined for type {t}"),
    };
    Ok(if !ncols.is_multiple_of(ret.block_size() as u64) {
        G::F16
    } else {
        ret
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converter_keeps_norms_biases_and_routers_f32() {
        let bf = GgmlType::BF16;
        let k = TensorKind::AttnQ;
        assert_eq!(
            converter_type("blk.0.attn_norm.weight", 1, TensorKind::AttnNorm, bf),
            GgmlType::F32
        );
        assert_eq!(converter_type("blk.0.attn_q.bias", 1, k, bf), GgmlType::F32);
        assert_eq!(
            converter_type("blk.0.ffn_gate_inp.weight", 2, TensorKind::FfnGateInp, bf),
            GgmlType::F32
        );
        assert_eq!(
            converter_type("token_types.weight", 2, TensorKind::TokenTypes, bf),
            GgmlType::F32
        );
        assert_eq!(converter_type("blk.0.attn_q.weight", 2, k, bf), bf);
    }

    #[test]
    fn fallback_follows_llama_quantize() {
        assert_eq!(fallback(64, GgmlType::Q4_K).unwrap(), GgmlType::Q5_0);
        assert_eq!(fallback(64, GgmlType::Q6_K).unwrap(), GgmlType::Q8_0);
        assert_eq!(fallback(64, GgmlType::IQ2_XXS).unwrap(), GgmlType::IQ4_NL);
        assert_eq!(fallback(40, GgmlType::Q8_0).unwrap(), GgmlType::F16);
        assert_eq!(fallback(256, GgmlType::Q4_K).unwrap(), GgmlType::Q4_K);
        assert_eq!(fallback(96, GgmlType::Q2_0).unwrap(), GgmlType::Q4_0);
        assert_eq!(fallback(80, GgmlType::Q2_0).unwrap(), GgmlType::F16);
        assert!(fallback(192, GgmlType::Q1_0).is_err());
        assert!(fallback(96, GgmlType::NVFP4).is_err());
        assert_eq!(fallback(48, GgmlType::MXFP4).unwrap(), GgmlType::F16);
    }
}
