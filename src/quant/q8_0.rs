//! Q8_0: blocks of 32 int8 values with one f16 scale (`block_q8_0` in ggml-common.h).

use super::rounding::{c_float_to_int, f16_bits_to_f32, f32_to_f16_bits};
use super::{GgmlType, TypeCodec};

const QK8_0: usize = 32;
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
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            y[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
            for (q, v) in y[2..].iter_mut().zip(x) {
                *q = c_float_to_int((v * id).round()) as u8;
            }
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
