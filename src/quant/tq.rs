//! TQ1_0 and TQ2_0: ternary (-1, 0, 1) quants for BitNet b1.58 and TriLMs (`block_tq1_0`,
//! `block_tq2_0` in ggml-common.h).
//!
//! Ports of ggml's `quantize_row_tq1_0_ref`, `quantize_row_tq2_0_ref` (which `quantize_tq1_0` and
//! `quantize_tq2_0` call, ignoring importance weights), `dequantize_row_tq1_0` and
//! `dequantize_row_tq2_0` (ggml/src/ggml-quants.c).

use super::rounding::{f16_bits_to_f32, f32_to_f16_bits};
use super::simd::{self, build, F32x4, I32x4};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK_K;
/// `block_tq1_0`: `qs[48]` (five trits a byte), `qh[4]` (four trits a byte), then `d`.
const TQ1_QS: usize = (QK_K - 4 * QK_K / 64) / 5;
const TQ1_QH: usize = QK_K / 64;
const TQ1_BLOCK_BYTES: usize = TQ1_QS + TQ1_QH + 2;
/// `block_tq2_0`: `qs[64]` (four 2-bit values a byte), then `d`.
const TQ2_QS: usize = QK_K / 4;
const TQ2_BLOCK_BYTES: usize = TQ2_QS + 2;

/// `lroundf(v)` as glibc computes it on x86-64, truncated to C `int` the way ggml stores it:
/// round half away from zero, and for NaN, infinities and anything beyond `long` the result of
/// `(long)v` (`i64::MIN`, whose low 32 bits are 0). A subnormal block maximum makes `1/d`
/// infinite, and ggml then relies on this.
#[inline]
fn lroundf_int(v: f32) -> i32 {
    let l = if v.is_finite() && v.abs() < 9.223_372e18 {
        v.round() as i64
    } else {
        i64::MIN
    };
    l as i32
}

/// `amax` and `id = amax ? 1/amax : 0` of a block, as both ternary quantizers compute them.
#[inline]
fn block_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, &v| {
        let a = v.abs();
        if m > a {
            m
        } else {
            a
        }
    });
    let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
    (amax, id)
}

/// `-1, 0, 1 -> 0, 1, 2` of ggml: `lroundf(v * id) + 1`.
#[inline]
fn trit(v: f32, id: f32) -> i32 {
    lroundf_int(v * id).wrapping_add(1)
}

/// Packs the trits of `x[m + n*stride]`, n = 0..count, most significant first, into one byte
/// (`q *= 3; q += xi` in uint8 arithmetic), optionally shifting by one more trit.
#[inline]
fn pack_trits(x: &[f32], id: f32, m: usize, stride: usize, count: usize, pad: bool) -> u8 {
    let mut q = 0u8;
    for n in 0..count {
        q = q
            .wrapping_mul(3)
            .wrapping_add(trit(x[m + n * stride], id) as u8);
    }
    if pad {
        q = q.wrapping_mul(3);
    }
    // ceiling division (243 == pow(3, 5)): ggml's (q*256 + 242) / 243
    (q as u32 * 256).div_ceil(243) as u8
}

/// `(q * 256 + 242) / 243` for every byte `q` (ggml's ceiling division by 3^5).
const DIV243: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut q = 0;
    while q < 256 {
        t[q] = (q as u32 * 256).div_ceil(243) as u8;
        q += 1;
    }
    t
};

/// The trits `lroundf(x * id) + 1` of a whole super-block, four per vector (`t[k]` = values
/// `4k..4k+4`), when that can be done with vectors: every value finite (then `|x * id| <= 1`,
/// where `lroundf` and the packed round-half-away [`simd::round_to_i32`] agree). Returns `d`
/// (ggml's `amax`) too; `None` sends the block to the scalar port, which reproduces ggml's
/// handling of NaN, infinities and subnormal maxima.
#[inline(always)]
fn trits_fast(x: &[f32]) -> Option<(f32, [I32x4; QK_K / 4])> {
    let mut m = F32x4::splat(0.0);
    let mut nan = F32x4::splat(0.0);
    for c in x.chunks_exact(4) {
        let v = F32x4::load(c);
        // ggml's MAX(amax, fabsf(v)); without NaNs its result does not depend on the order
        m = m.max(v.abs());
        nan = nan | v.is_nan();
    }
    if nan.bitmask() != 0 {
        return None;
    }
    let amax = m.hmax().first();
    let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
    if !amax.is_finite() || !id.is_finite() {
        return None;
    }
    let (id, one) = (F32x4::splat(id), I32x4::splat(1));
    Some((
        amax,
        build(|k| simd::round_to_i32(F32x4::load(&x[4 * k..]) * id) + one),
    ))
}

/// `q*3 + t` in wrapping integer arithmetic (the `uint8_t` truncation is applied at the end).
#[inline(always)]
fn times3_plus(q: I32x4, t: I32x4) -> I32x4 {
    q + q.shl::<1>() + t
}

/// Ceiling-divided bytes of packed trit sums.
#[inline(always)]
fn div243(q: I32x4, out: &mut [u8]) {
    for (o, q) in out.iter_mut().zip(q.to_array()) {
        *o = DIV243[(q & 0xff) as usize];
    }
}

/// TQ1_0: 1.6875 bpw ternary. Port of `quantize_row_tq1_0_ref`.
pub struct Tq1_0;

impl TypeCodec for Tq1_0 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::TQ1_0
    }

    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (x, y) in src
            .chunks_exact(QK_K)
            .zip(dst.chunks_exact_mut(TQ1_BLOCK_BYTES))
        {
            if let Some((d, t)) = trits_fast(x) {
                // 5 trits per byte: bytes 0..32 from values m + 32n, bytes 32..48 from
                // 160 + m + 16n, then 4 per byte in qh from 240 + j + 4n (n = 0..).
                for mv in 0..8 {
                    let q = (0..5).fold(I32x4::splat(0), |q, n| times3_plus(q, t[mv + 8 * n]));
                    div243(q, &mut y[4 * mv..4 * mv + 4]);
                }
                for mv in 0..4 {
                    let q = (0..5).fold(I32x4::splat(0), |q, n| times3_plus(q, t[40 + mv + 4 * n]));
                    div243(q, &mut y[32 + 4 * mv..32 + 4 * mv + 4]);
                }
                let q = (0..4).fold(I32x4::splat(0), |q, n| times3_plus(q, t[60 + n]));
                div243(
                    times3_plus(q, I32x4::splat(0)),
                    &mut y[TQ1_QS..TQ1_QS + TQ1_QH],
                );
                y[TQ1_QS + TQ1_QH..].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
                continue;
            }
            let (d, id) = block_scale(x);
            // 5 elements per byte, along 32 bytes
            let main = TQ1_QS - TQ1_QS % 32;
            let (qs_main, rest_bytes) = y.split_at_mut(main);
            for (m, q) in qs_main.iter_mut().enumerate() {
                *q = pack_trits(&x[..5 * main], id, m, main, 5, false);
            }
            let x = &x[5 * main..];
            // along 16 bytes
            let rest = TQ1_QS % 32;
            for (m, q) in rest_bytes[..rest].iter_mut().enumerate() {
                *q = pack_trits(&x[..5 * rest], id, m, rest, 5, false);
            }
            let x = &x[5 * rest..];
            // 4 elements per byte, the first shifted to the most significant trit
            for (j, q) in y[TQ1_QS..TQ1_QS + TQ1_QH].iter_mut().enumerate() {
                *q = pack_trits(x, id, j, TQ1_QH, 4, true);
            }
            y[TQ1_QS + TQ1_QH..].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
        let trit_value = |byte: u8, n: usize, d: f32| {
            let q = byte.wrapping_mul(POW3[n]);
            let xi = ((q as u16 * 3) >> 8) as i16;
            (xi - 1) as f32 * d
        };
        for (x, y) in src
            .chunks_exact(TQ1_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([
                x[TQ1_BLOCK_BYTES - 2],
                x[TQ1_BLOCK_BYTES - 1],
            ]));
            let mut out = y.iter_mut();
            let main = TQ1_QS - TQ1_QS % 32;
            for (start, width) in [(0, main), (main, TQ1_QS % 32)] {
                for n in 0..5 {
                    for &b in &x[start..start + width] {
                        if let Some(o) = out.next() {
                            *o = trit_value(b, n, d);
                        }
                    }
                }
            }
            for n in 0..4 {
                for &b in &x[TQ1_QS..TQ1_QS + TQ1_QH] {
                    if let Some(o) = out.next() {
                        *o = trit_value(b, n, d);
                    }
                }
            }
        }
    }
}

/// TQ2_0: 2.0625 bpw ternary, four 2-bit values a byte. Port of `quantize_row_tq2_0_ref`.
pub struct Tq2_0;

impl TypeCodec for Tq2_0 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::TQ2_0
    }

    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (x, y) in src
            .chunks_exact(QK_K)
            .zip(dst.chunks_exact_mut(TQ2_BLOCK_BYTES))
        {
            if let Some((d, t)) = trits_fast(x) {
                // byte 32g + m holds values 128g + m + 32n at bits 2n (n = 0..4); the
                // disjoint bit fields make ggml's additions plain ORs
                let three = I32x4::splat(3);
                for g in 0..2 {
                    let b: [I32x4; 8] = build(|mv| {
                        let f = |n: usize| t[32 * g + 8 * n + mv] & three;
                        f(0) | f(1).shl::<2>() | f(2).shl::<4>() | f(3).shl::<6>()
                    });
                    y[32 * g..32 * g + 16]
                        .copy_from_slice(&I32x4::low_bytes([b[0], b[1], b[2], b[3]]));
                    y[32 * g + 16..32 * g + 32]
                        .copy_from_slice(&I32x4::low_bytes([b[4], b[5], b[6], b[7]]));
                }
                y[TQ2_QS..].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
                continue;
            }
            let (d, id) = block_scale(x);
            for (qs, xg) in y[..TQ2_QS].chunks_exact_mut(32).zip(x.chunks_exact(128)) {
                for (m, q) in qs.iter_mut().enumerate() {
                    let mut b = 0u8;
                    for n in 0..4 {
                        let xi = trit(xg[m + 32 * n], id);
                        b = b.wrapping_add(((xi & 3) << (2 * n)) as u8);
                    }
                    *q = b;
                }
            }
            y[TQ2_QS..].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(TQ2_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[TQ2_QS], x[TQ2_QS + 1]]));
            for (qs, yg) in x[..TQ2_QS].chunks_exact(32).zip(y.chunks_exact_mut(128)) {
                for l in 0..4 {
                    for (m, &b) in qs.iter().enumerate() {
                        let q = ((b >> (2 * l)) & 3) as i8;
                        yg[32 * l + m] = (q - 1) as f32 * d;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::golden::check;
    use super::*;

    #[test]
    fn lroundf_matches_glibc_edges() {
        assert_eq!(lroundf_int(0.5), 1);
        assert_eq!(lroundf_int(-0.5), -1);
        assert_eq!(lroundf_int(f32::INFINITY), 0);
        assert_eq!(lroundf_int(f32::NAN), 0);
    }

    #[test]
    fn tq1_0_matches_ggml() {
        check(GgmlType::TQ1_0);
    }

    #[test]
    fn tq2_0_matches_ggml() {
        check(GgmlType::TQ2_0);
    }
}
