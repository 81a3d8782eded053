//! Q8_0: blocks of 32 int8 values with one f16 scale (`block_q8_0` in ggml-common.h).

use super::rounding::{f16_bits_to_f32, f32_to_f16_bits};
use super::simd8::{self as simd, build, F8, I8};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK8_0;
const BLOCK_BYTES: usize = 2 + QK8_0;

/// Port of ggml's `quantize_row_q8_0_ref`: scale = amax / 127, values rounded half away from
/// zero (`roundf`). ggml ignores importance weights for this type.
pub struct Q8_0;

impl TypeCodec for Q8_0 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q8_0
    }

    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        simd::dispatch!(V => quantize_row_v::<V>(src, dst))
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        dequantize_row(src, dst)
    }
}

#[inline(always)]
fn quantize_row_v<V: F8>(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(QK8_0)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let v: [V; 4] = build(|m| V::load(&x[8 * m..]));
        // amax = max over |v| ignoring NaNs, which `maxps(|v|, m)` (`|v| > m ? |v| : m`)
        // does per lane; the lanes then hold no NaN and only +0 zeros, so their maximum
        // is order-independent.
        let mut m = V::splat(0.0);
        for &vm in &v {
            m = vm.abs().max(m);
        }
        let amax = m.hmax();
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        // (int8_t)roundf(v * id)
        let id = V::splat(id);
        for (m, q) in y[2..].chunks_exact_mut(8).enumerate() {
            q.copy_from_slice(&simd::round_to_i32(v[m] * id).low_bytes());
        }
    }
}

fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    {
        for (y, x) in src
            .chunks_exact(BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK8_0))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([y[0], y[1]]));
            for (v, q) in x.iter_mut().zip(&y[2..]) {
                *v = (*q as i8) as f32 * d;
            }
        }
    }
}
