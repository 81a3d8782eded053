//! Q8_0: blocks of 32 int8 values with one f16 scale (`block_q8_0` in ggml-common.h).

use super::rounding::{f16_bits_to_f32, f32_to_f16_bits};
use super::simd::{self, build, F32x4, I32x4};
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
        for (x, y) in src
            .chunks_exact(QK8_0)
            .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        {
            let v: [F32x4; 8] = build(|m| F32x4::load(&x[4 * m..]));
            // amax = max over |v| ignoring NaNs, which `maxps(|v|, m)` (`|v| > m ? |v| : m`)
            // does per lane; the lanes then hold no NaN and only +0 zeros, so their maximum
            // is order-independent.
            let mut m = F32x4::splat(0.0);
            for &vm in &v {
                m = vm.abs().max(m);
            }
            let amax = m.hmax().first();
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            y[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
            // (int8_t)roundf(v * id)
            let id = F32x4::splat(id);
            let q: [I32x4; 8] = build(|m| simd::round_to_i32(v[m] * id));
            y[2..18].copy_from_slice(&I32x4::low_bytes([q[0], q[1], q[2], q[3]]));
            y[18..34].copy_from_slice(&I32x4::low_bytes([q[4], q[5], q[6], q[7]]));
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
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
