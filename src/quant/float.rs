//! The unquantized float types: F32, F16 and BF16.

use super::rounding::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
use super::{GgmlType, TypeCodec};

/// IEEE single precision, stored little-endian.
pub struct F32Codec;

impl TypeCodec for F32Codec {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::F32
    }
    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (v, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (s, d) in src.chunks_exact(4).zip(dst.iter_mut()) {
            *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        }
    }
}

/// IEEE half precision.
pub struct F16Codec;

impl TypeCodec for F16Codec {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::F16
    }
    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (v, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
            d.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
        }
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (s, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
            *d = f16_bits_to_f32(u16::from_le_bytes([s[0], s[1]]));
        }
    }
}

/// bfloat16: the high half of an f32.
pub struct Bf16Codec;

impl TypeCodec for Bf16Codec {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::BF16
    }
    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (v, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
            d.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
        }
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (s, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
            *d = bf16_bits_to_f32(u16::from_le_bytes([s[0], s[1]]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_codecs_round_trip_representable_values() {
        let xs = [0.0f32, -0.0, 1.0, -2.5, 0.15625, 65504.0];
        for codec in [&F32Codec as &dyn TypeCodec, &F16Codec, &Bf16Codec] {
            let t = codec.ggml_type();
            let mut buf = vec![0u8; t.row_bytes(xs.len() as u64).unwrap() as usize];
            codec.quantize_row(&xs, None, &mut buf);
            let mut back = vec![0f32; xs.len()];
            codec.dequantize_row(&buf, &mut back);
            if t == GgmlType::BF16 {
                // 65504 is not a bf16 value; the rest are.
                assert_eq!(&back[..5], &xs[..5]);
            } else {
                assert_eq!(back, xs);
            }
        }
    }
}
