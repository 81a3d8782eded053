//! Q1_0 and Q2_0: one sign bit per value with the block's mean magnitude (`block_q1_0`), and
//! 2-bit codes -1, 0, 1, 2 with the block's maximum magnitude (`block_q2_0`), ggml-common.h.
//!
//! Ports of ggml's `quantize_row_q1_0_ref` and `quantize_row_q2_0_ref` (which `quantize_q1_0`
//! and `quantize_q2_0` call, row by row when given importance weights, which they ignore),
//! `dequantize_row_q1_0` and `dequantize_row_q2_0` (ggml/src/ggml-quants.c).

use super::rounding::{f16_bits_to_f32, f32_to_f16_bits};
use super::simd::{self, build, F32x4, I32x4};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::{QK1_0, QK2_0};
/// `block_q1_0`: `d`, then `qs[16]` (bit j of the block in byte j/8, bit j%8).
const Q1_BLOCK_BYTES: usize = 2 + QK1_0 / 8;
/// `block_q2_0`: `d`, then `qs[16]` (value j of the block in byte j/4, bits 2*(j%4)).
const Q2_BLOCK_BYTES: usize = 2 + QK2_0 / 4;

/// Blocks whose `sum_abs` run side by side in [`Q1_0::quantize_row`].
const Q1_GROUP: usize = 8;

/// ggml's `sum_abs += fabsf(x[j])` over a block, j = 0..128 in order.
#[inline]
fn sum_abs(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |s, v| s + v.abs())
}

/// The sign bits of a block: bit j set when `x[j] >= 0.0f` (so for -0.0, not for NaN).
#[inline(always)]
fn sign_bits(x: &[f32], qs: &mut [u8]) {
    let zero = F32x4::splat(0.0);
    for (q, c) in qs.iter_mut().zip(x.chunks_exact(8)) {
        let lo = F32x4::load(c).ge(zero).bitmask();
        let hi = F32x4::load(&c[4..]).ge(zero).bitmask();
        *q = (lo | hi << 4) as u8;
    }
}

/// Q1_0: 1.125 bpw, sign times the mean magnitude. Port of `quantize_row_q1_0_ref`.
pub struct Q1_0;

impl TypeCodec for Q1_0 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q1_0
    }

    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        // The sum is one chain of dependent additions per block; the chains of Q1_GROUP blocks
        // are interleaved (each still adds its values in ggml's order) so they overlap.
        let mut x = src.chunks_exact(QK1_0 * Q1_GROUP);
        let mut y = dst.chunks_exact_mut(Q1_BLOCK_BYTES * Q1_GROUP);
        for (xg, yg) in (&mut x).zip(&mut y) {
            let mut s = [0.0f32; Q1_GROUP];
            for j in 0..QK1_0 {
                for (b, s) in s.iter_mut().enumerate() {
                    *s += xg[b * QK1_0 + j].abs();
                }
            }
            for ((xb, yb), s) in xg
                .chunks_exact(QK1_0)
                .zip(yg.chunks_exact_mut(Q1_BLOCK_BYTES))
                .zip(s)
            {
                let d = s / QK1_0 as f32;
                yb[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
                sign_bits(xb, &mut yb[2..]);
            }
        }
        for (xb, yb) in x
            .remainder()
            .chunks_exact(QK1_0)
            .zip(y.into_remainder().chunks_exact_mut(Q1_BLOCK_BYTES))
        {
            let d = sum_abs(xb) / QK1_0 as f32;
            yb[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
            sign_bits(xb, &mut yb[2..]);
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(Q1_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK1_0))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            let neg_d = -d;
            for (j, v) in y.iter_mut().enumerate() {
                let bit = (x[2 + j / 8] >> (j % 8)) & 1;
                *v = if bit != 0 { d } else { neg_d };
            }
        }
    }
}

/// Q2_0: 2.25 bpw, codes -1, 0, 1, 2 times the block's maximum magnitude. Port of
/// `quantize_row_q2_0_ref`.
pub struct Q2_0;

impl TypeCodec for Q2_0 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q2_0
    }

    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (x, y) in src
            .chunks_exact(QK2_0)
            .zip(dst.chunks_exact_mut(Q2_BLOCK_BYTES))
        {
            let v: [F32x4; QK2_0 / 4] = build(|k| F32x4::load(&x[4 * k..]));
            // `if (a > amax) amax = a`: `maxps(|v|, m)` per lane skips NaNs the same way; the
            // lanes then hold no NaN and only +0 zeros, so their maximum is order-independent.
            let mut m = F32x4::splat(0.0);
            for &vk in &v {
                m = vk.abs().max(m);
            }
            let d = m.hmax().first();
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            y[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
            // q = clamp((int)roundf(w*id) + 1, 0, 3); NaN and out-of-range products convert to
            // INT_MIN (cvttss2si), which the clamp sends to 0
            let id = F32x4::splat(id);
            let (one, zero, three) = (I32x4::splat(1), I32x4::splat(0), I32x4::splat(3));
            for (q, &vk) in y[2..].iter_mut().zip(&v) {
                let c = (simd::round_to_i32(vk * id) + one).clamp(zero, three);
                let [c0, c1, c2, c3] = c.to_array();
                *q = (c0 | c1 << 2 | c2 << 4 | c3 << 6) as u8;
            }
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(Q2_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK2_0))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            for (j, v) in y.iter_mut().enumerate() {
                let q = (x[2 + j / 4] >> ((j % 4) * 2)) & 0x03;
                // 00=-1, 01=0, 10=+1, 11=+2
                *v = (q as i32 - 1) as f32 * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::golden::check;
    use super::super::rounding::c_float_to_int;
    use super::*;

    /// The scalar ports, for inputs the golden vectors do not hold.
    fn q1_0_scalar(x: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for xb in x.chunks_exact(QK1_0) {
            out.extend(f32_to_f16_bits(sum_abs(xb) / QK1_0 as f32).to_le_bytes());
            let mut qs = [0u8; QK1_0 / 8];
            for (j, &v) in xb.iter().enumerate() {
                if v >= 0.0 {
                    qs[j / 8] |= 1 << (j % 8);
                }
            }
            out.extend(qs);
        }
        out
    }

    fn q2_0_scalar(x: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for xb in x.chunks_exact(QK2_0) {
            let mut amax = 0.0f32;
            for &v in xb {
                if v.abs() > amax {
                    amax = v.abs();
                }
            }
            let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
            out.extend(f32_to_f16_bits(amax).to_le_bytes());
            let mut qs = [0u8; QK2_0 / 4];
            for (j, &w) in xb.iter().enumerate() {
                let q = c_float_to_int((w * id).round()).wrapping_add(1).clamp(0, 3);
                qs[j / 4] |= (q as u8) << ((j % 4) * 2);
            }
            out.extend(qs);
        }
        out
    }

    #[test]
    fn grouped_and_vector_paths_match_the_scalar_ports() {
        // 11 Q1_0 blocks: one group of 8 and three single blocks; values of every kind
        let n = 11 * QK1_0;
        let mut s = 0x2545_f491u32;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                match i % 97 {
                    3 => f32::NAN,
                    5 => f32::INFINITY,
                    7 => -0.0,
                    11 => 1e-41,
                    _ if (i / QK2_0) % 5 == 1 => u * 1e-39,
                    _ if (i / QK2_0) % 5 == 2 => u * 3e38,
                    _ => u,
                }
            })
            .collect();
        let mut y = vec![0u8; n / QK1_0 * Q1_BLOCK_BYTES];
        Q1_0.quantize_row(&x, None, &mut y);
        assert_eq!(y, q1_0_scalar(&x));
        let mut y = vec![0u8; n / QK2_0 * Q2_BLOCK_BYTES];
        Q2_0.quantize_row(&x, None, &mut y);
        assert_eq!(y, q2_0_scalar(&x));
    }

    #[test]
    fn q1_0_matches_ggml() {
        check(GgmlType::Q1_0);
    }

    #[test]
    fn q2_0_matches_ggml() {
        check(GgmlType::Q2_0);
    }
}
