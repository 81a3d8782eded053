//! ggml block formats: one [`TypeCodec`] implementation per ggml type.
//!
//! Every quantizer here is a port of ggml's reference algorithm (`ggml/src/ggml-quants.c` of the
//! reference build) and must produce the same bytes: same operation order, same rounding. Speed
//! comes from structure, never from changing the arithmetic: independent rows run in parallel,
//! and inside a row independent computations that ggml runs one after another (the candidate
//! scales of a search, the sub-blocks of a super-block, the values of a block) run side by side
//! in the lanes of `simd` vectors, each lane doing ggml's operations in ggml's order. No sum is
//! reassociated, no multiply-add fused. Each vectorised search has its scalar port kept as a test
//! oracle next to it, and `bench/quant_diff.py` compares whole matrices with the real ggml.

mod float;
mod fp4;
#[cfg(test)]
pub(crate) mod golden;
pub mod imatrix;
mod iq1;
mod iq2;
mod iq2_grid;
mod iq2_grid_tables;
mod iq3;
mod iq3_grid;
mod iq4;
mod kquant_search;
mod legacy;
mod lowbit;
mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;
mod q8_0;
pub mod rounding;
mod simd;
pub(crate) mod simd8;
mod super_block;
mod tq;

pub use crate::gguf::GgmlType;

/// The SIMD path the dispatched quantizers run (`scalar`, `sse2` or `avx2`): the one `GMAT_SIMD`
/// names, else the fastest this CPU supports; an error names a `GMAT_SIMD` value that is not a
/// path or that this CPU cannot run. Every path gives the same bytes.
pub fn simd_path() -> Result<&'static str, String> {
    simd8::init_from_env().map(simd8::Path::name)
}

/// Converts rows of f32 to one ggml type and back.
///
/// A row is the unit ggml quantizes with an importance matrix: `src.len()` is a whole number of
/// blocks and `imatrix`, when present, holds one weight per column of the row.
pub trait TypeCodec: Send + Sync {
    /// The type this codec writes.
    fn ggml_type(&self) -> GgmlType;

    /// Whether the quantizer refuses to run without importance weights (ggml's
    /// `ggml_quantize_requires_imatrix`).
    fn requires_imatrix(&self) -> bool {
        false
    }

    /// Quantizes one row. `dst.len()` must be `ggml_type().row_bytes(src.len())`.
    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]);

    /// Expands one row back to f32, as ggml's `to_float` does.
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]);
}

/// The codec for `t`, or `None` when gmat cannot write that type.
pub fn codec(t: GgmlType) -> Option<&'static dyn TypeCodec> {
    Some(match t {
        GgmlType::F32 => &float::F32Codec,
        GgmlType::F16 => &float::F16Codec,
        GgmlType::BF16 => &float::Bf16Codec,
        GgmlType::Q4_0 => &legacy::Q4_0,
        GgmlType::Q4_1 => &legacy::Q4_1,
        GgmlType::Q5_0 => &legacy::Q5_0,
        GgmlType::Q5_1 => &legacy::Q5_1,
        GgmlType::Q8_0 => &q8_0::Q8_0,
        GgmlType::Q2_K => &q2_k::Q2K,
        GgmlType::Q3_K => &q3_k::Q3K,
        GgmlType::Q4_K => &q4_k::Q4K,
        GgmlType::Q5_K => &q5_k::Q5K,
        GgmlType::Q6_K => &q6_k::Q6K,
        GgmlType::IQ4_NL => &iq4::Iq4Nl,
        GgmlType::IQ4_XS => &iq4::Iq4Xs,
        GgmlType::TQ1_0 => &tq::Tq1_0,
        GgmlType::TQ2_0 => &tq::Tq2_0,
        GgmlType::IQ3_XXS => &iq3::Iq3Xxs,
        GgmlType::IQ3_S => &iq3::Iq3S,
        GgmlType::IQ2_XXS => &iq2::Iq2Xxs,
        GgmlType::IQ2_XS => &iq2::Iq2Xs,
        GgmlType::IQ2_S => &iq2::Iq2S,
        GgmlType::IQ1_S => &iq1::Iq1S,
        GgmlType::IQ1_M => &iq1::Iq1M,
        GgmlType::MXFP4 => &fp4::Mxfp4,
        GgmlType::NVFP4 => &fp4::Nvfp4,
        GgmlType::Q1_0 => &lowbit::Q1_0,
        GgmlType::Q2_0 => &lowbit::Q2_0,
        _ => return None,
    })
}

/// Quantizes `rows` rows of `n_per_row` values laid out back to back.
pub fn quantize_rows(
    codec: &dyn TypeCodec,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) {
    let t = codec.ggml_type();
    let row_bytes = t
        .row_bytes(n_per_row as u64)
        .expect("plan checked block fit") as usize;
    for (s, d) in src
        .chunks_exact(n_per_row)
        .zip(dst.chunks_exact_mut(row_bytes))
    {
        codec.quantize_row(s, imatrix, d);
    }
}
