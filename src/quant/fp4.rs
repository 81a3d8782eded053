//! MXFP4 and NVFP4: 4-bit E2M1 values with a shared power-of-two (MXFP4, `block_mxfp4`) or
//! UE4M3 (NVFP4, `block_nvfp4`) scale, ggml-common.h.
//!
//! Ports of ggml's `quantize_row_mxfp4_ref`, `quantize_row_nvfp4_ref` (which `quantize_mxfp4` and
//! `quantize_nvfp4` call, ignoring importance weights), `dequantize_row_mxfp4` and
//! `dequantize_row_nvfp4` (ggml/src/ggml-quants.c), with the scale conversions of
//! ggml/src/ggml-impl.h.
//!
//! ggml picks each value's code by trying all sixteen E2M1 values (`best_index_mxfp4`). The
//! table is symmetric (codes 8..15 are the negatives of codes 0..7), so gmat tries the eight
//! non-negative ones on `|x|` and puts the sign back; [`best_index_mxfp4`] (the scalar port,
//! kept as the test oracle) documents why that gives ggml's code for every input, NaN and
//! infinities included.

use super::simd::{build, F32x4, I32x4};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::{QK_MXFP4, QK_NVFP4};
/// `block_mxfp4`: `e` (E8M0), then `qs[16]`.
const MXFP4_BLOCK_BYTES: usize = 1 + QK_MXFP4 / 2;
/// `QK_NVFP4_SUB` (ggml-common.h).
const QK_NVFP4_SUB: usize = 16;
const NVFP4_N_SUB: usize = QK_NVFP4 / QK_NVFP4_SUB;
/// `block_nvfp4`: `d[4]` (UE4M3), then `qs[32]`.
const NVFP4_BLOCK_BYTES: usize = NVFP4_N_SUB + QK_NVFP4 / 2;

/// `kvalues_fp4` (alias `kvalues_mxfp4`), ggml-common.h: the E2M1 values, doubled.
const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `ggml_e8m0_to_fp32_half` (ggml-impl.h): `2^(x-128)`, with the two denormal patterns for
/// `x < 2`.
#[inline]
fn e8m0_to_fp32_half(x: u8) -> f32 {
    let bits = if x < 2 {
        0x0020_0000u32 << x
    } else {
        (x as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// `ggml_ue4m3_to_fp32` (ggml-impl.h): an unsigned E4M3 value (bias 7, the sign bit ignored)
/// times 0.5; 0 and 0x7F give 0. Every result is exact, so this computes it with exact
/// products instead of `ldexpf`.
const fn ue4m3_to_fp32(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xF) as i32;
    let man = (x & 0x7) as i32;
    let raw = if exp == 0 {
        // ldexpf(man, -9)
        man as f32 * f32::from_bits((127 - 9) << 23)
    } else {
        // ldexpf(1 + man/8, exp - 7)
        (1.0 + man as f32 / 8.0) * f32::from_bits(((exp - 7 + 127) as u32) << 23)
    };
    raw * 0.5
}

/// [`ue4m3_to_fp32`] of every byte.
static UE4M3_TO_FP32: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ue4m3_to_fp32(i as u8);
        i += 1;
    }
    t
};

/// `ggml_fp32_to_ue4m3` (ggml-impl.h): round half up on the mantissa's fourth bit, saturating
/// at 0x7E (448), subnormals `(int)(x*512 + 0.5)` clamped to 1..=7, 0 for anything not > 0.
fn fp32_to_ue4m3(x: f32) -> u8 {
    // written as ggml writes it (NaN is not > 0)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(x > 0.0) {
        return 0;
    }
    let x = if x > 448.0 { 448.0 } else { x };
    let bits = x.to_bits();
    let fp32_exp = ((bits >> 23) & 0xFF) as i32 - 127;
    let fp32_man = ((bits >> 20) & 0x7) as i32;
    let mut ue4m3_exp = fp32_exp + 7;
    if ue4m3_exp <= 0 {
        // subnormal: value = man * 2^-9, man = round(x * 2^9); x < 2^-6 here, so the C
        // truncation is Rust's
        let man = (x * 512.0 + 0.5) as i32;
        let man = man.min(7);
        if man < 1 {
            return 0;
        }
        return man as u8;
    }
    if ue4m3_exp >= 15 {
        return 0x7E;
    }
    let round_bit = ((bits >> 19) & 1) as i32;
    let mut ue4m3_man = fp32_man + round_bit;
    if ue4m3_man > 7 {
        ue4m3_man = 0;
        ue4m3_exp += 1;
        if ue4m3_exp >= 15 {
            return 0x7E;
        }
    }
    ((ue4m3_exp << 3) | ue4m3_man) as u8
}

/// The MXFP4 block exponent: `amax > 0 ? (uint8_t)(floorf(log2f(amax)) - 2 + 127) : 0`.
///
/// `log2f` is the C library's (Rust's `f32::log2` calls it, as ggml does). The float-to-uint8
/// conversion is `cvttss2si` and the low byte: a subnormal `amax` gives a negative exponent
/// that wraps (e.g. 251), an infinite one the "integer indefinite" value, whose low byte is 0.
#[inline]
fn mxfp4_exponent(amax: f32) -> u8 {
    if amax > 0.0 {
        let v = amax.log2().floor() - 2.0 + 127.0;
        if v.is_finite() {
            v as i32 as u8
        } else {
            0
        }
    } else {
        0
    }
}

/// Port of ggml's `best_index_mxfp4`: the first of the sixteen codes with the smallest
/// `fabsf(kvalues_mxfp4[i]*e - x)`. The scalar oracle of [`best_codes`].
///
/// Why eight candidates on `|x|` give the same code ([`best_codes`]): let `j` be the first best
/// of codes 0..7 for `y = |x|`. For `x >= 0` ggml's errors of codes 0..7 are exactly those, and
/// code `8+m` has error `fl(k_m*e + y) >= y` = the error of code 0, so it never wins (a tie
/// goes to the earlier code). For `x < 0`, code `8+m` computes `fl(|-k_m*e - x|)`, the error of
/// code `m` for `y` (IEEE rounding is sign-symmetric); code `m >= 1` now has error
/// `fl(k_m*e + y) >= y` = the error of code 0, so when `j >= 1` (error below `y`) the answer is
/// `8+j`, and when `j == 0` code 0 (which comes first) wins. NaN fails every comparison (code
/// 0), and infinities keep these inequalities (an infinite or NaN error never beats code 0).
#[cfg(test)]
fn best_index_mxfp4(x: f32, e: f32) -> u8 {
    let mut best_index = 0;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * e - x).abs();
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * e - x).abs();
        if err < best_err {
            best_index = i;
            best_err = err;
        }
    }
    best_index as u8
}

/// The candidate values `kvalues_mxfp4[m]*e` (m = 1..8) that [`best_codes`] tries.
#[inline(always)]
fn candidates(e: f32) -> [F32x4; 7] {
    build(|m| F32x4::splat(KVALUES_MXFP4[m + 1] as f32 * e))
}

/// `best_index_mxfp4` of four values at once (see [`best_index_mxfp4`] for the sign folding).
#[inline(always)]
fn best_codes(x: F32x4, cand: &[F32x4; 7]) -> I32x4 {
    let y = x.abs();
    // code 0: fabsf(0*e - y) = y
    let mut best_err = y;
    let mut best = I32x4::splat(0);
    for (m, &c) in cand.iter().enumerate() {
        let err = (c - y).abs();
        let lt = err.lt(best_err);
        best_err = F32x4::select(lt, err, best_err);
        best = I32x4::select(lt.to_bits(), I32x4::splat(m as i32 + 1), best);
    }
    // negative x and a non-zero code: the negative twin, 8 codes later
    let neg = x.lt(F32x4::splat(0.0)).to_bits();
    best | (neg & best.gt(I32x4::splat(0)) & I32x4::splat(8))
}

/// `amax` of some values as ggml's `if (amax < fabsf(v)) amax = fabsf(v)` finds it: NaNs are
/// skipped (`maxps(|v|, m)` keeps `m` for a NaN `|v|`); the lanes then hold no NaN and only +0
/// zeros, so their maximum does not depend on the order.
#[inline(always)]
fn amax(x: &[f32]) -> f32 {
    let mut m = F32x4::splat(0.0);
    for c in x.chunks_exact(4) {
        m = F32x4::load(c).abs().max(m);
    }
    m.hmax().first()
}

/// Packs the codes of `lo` (low nibbles) and `hi` (high nibbles), four bytes per vector pair.
#[inline(always)]
fn pack_nibbles(lo: &[I32x4], hi: &[I32x4], out: &mut [u8]) {
    for ((l, h), o) in lo.iter().zip(hi).zip(out.chunks_exact_mut(4)) {
        let b = *l | h.shl::<4>();
        for (o, v) in o.iter_mut().zip(b.to_array()) {
            *o = v as u8;
        }
    }
}

/// MXFP4: 32 E2M1 values with an E8M0 scale (4.25 bpw). Port of `quantize_row_mxfp4_ref`.
pub struct Mxfp4;

impl TypeCodec for Mxfp4 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::MXFP4
    }

    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (x, y) in src
            .chunks_exact(QK_MXFP4)
            .zip(dst.chunks_exact_mut(MXFP4_BLOCK_BYTES))
        {
            let e = mxfp4_exponent(amax(x));
            let cand = candidates(e8m0_to_fp32_half(e));
            y[0] = e;
            // qs[j] = code(x[j]) | code(x[j + 16]) << 4
            let codes: [I32x4; 8] = build(|v| best_codes(F32x4::load(&x[4 * v..]), &cand));
            pack_nibbles(&codes[..4], &codes[4..], &mut y[1..]);
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(MXFP4_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_MXFP4))
        {
            let d = e8m0_to_fp32_half(x[0]);
            for (j, &q) in x[1..].iter().enumerate() {
                y[j] = KVALUES_MXFP4[(q & 0x0F) as usize] as f32 * d;
                y[j + QK_MXFP4 / 2] = KVALUES_MXFP4[(q >> 4) as usize] as f32 * d;
            }
        }
    }
}

/// NVFP4: 64 E2M1 values in four sub-blocks of 16, each with a UE4M3 scale (4.5 bpw). Port of
/// `quantize_row_nvfp4_ref`.
pub struct Nvfp4;

impl TypeCodec for Nvfp4 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::NVFP4
    }

    fn quantize_row(&self, src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (x, y) in src
            .chunks_exact(QK_NVFP4)
            .zip(dst.chunks_exact_mut(NVFP4_BLOCK_BYTES))
        {
            let (d, qs) = y.split_at_mut(NVFP4_N_SUB);
            for ((xb, ds), q) in x
                .chunks_exact(QK_NVFP4_SUB)
                .zip(d.iter_mut())
                .zip(qs.chunks_exact_mut(QK_NVFP4_SUB / 2))
            {
                // UE4M3 scale: amax / 6.0 maps the max E2M1 value (6.0) to amax
                let ue = fp32_to_ue4m3(amax(xb) / 6.0);
                *ds = ue;
                let cand = candidates(UE4M3_TO_FP32[ue as usize]);
                // qs[j] = code(xb[j]) | code(xb[j + 8]) << 4
                let codes: [I32x4; 4] = build(|v| best_codes(F32x4::load(&xb[4 * v..]), &cand));
                pack_nibbles(&codes[..2], &codes[2..], q);
            }
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(NVFP4_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_NVFP4))
        {
            let (d, qs) = x.split_at(NVFP4_N_SUB);
            for ((&ds, q), yb) in d
                .iter()
                .zip(qs.chunks_exact(QK_NVFP4_SUB / 2))
                .zip(y.chunks_exact_mut(QK_NVFP4_SUB))
            {
                let d = UE4M3_TO_FP32[ds as usize];
                for (j, &q) in q.iter().enumerate() {
                    yb[j] = KVALUES_MXFP4[(q & 0x0F) as usize] as f32 * d;
                    yb[j + QK_NVFP4_SUB / 2] = KVALUES_MXFP4[(q >> 4) as usize] as f32 * d;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::golden::check;
    use super::*;

    /// Awkward values for the code search: every code's value and the midpoints between
    /// neighbours (the ties), both signs, zeros, NaN, infinities, subnormals.
    fn probes(e: f32) -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
        ];
        v.extend([1e-45, -1e-45, 1e-39, -3e38, 3e38, f32::MIN_POSITIVE]);
        let mut ks: Vec<f32> = KVALUES_MXFP4[..8].iter().map(|&k| k as f32).collect();
        ks.push(16.0);
        for w in ks.windows(2) {
            for f in [w[0], (w[0] + w[1]) / 2.0, w[1]] {
                let a = f * e;
                for s in [a, f32::from_bits(a.to_bits().wrapping_sub(1)), a.next_up()] {
                    v.extend([s, -s]);
                }
            }
        }
        v
    }

    #[test]
    fn folded_search_matches_ggml_best_index() {
        let mut scales: Vec<f32> = (0..=255u8).map(e8m0_to_fp32_half).collect();
        scales.extend((0..=255u8).map(|u| UE4M3_TO_FP32[u as usize]));
        for e in scales {
            let cand = candidates(e);
            let p = probes(e);
            for c in p.chunks(4) {
                let mut l = [0f32; 4];
                l[..c.len()].copy_from_slice(c);
                let got = best_codes(F32x4::from_array(l), &cand).to_array();
                for (g, &x) in got.iter().zip(&l) {
                    assert_eq!(*g as u8, best_index_mxfp4(x, e), "x={x:e} e={e:e}");
                }
            }
        }
    }

    #[test]
    fn scale_conversions_follow_ggml_impl() {
        assert_eq!(e8m0_to_fp32_half(0), f32::from_bits(0x0020_0000));
        assert_eq!(e8m0_to_fp32_half(1), f32::from_bits(0x0040_0000));
        assert_eq!(e8m0_to_fp32_half(128), 1.0);
        assert_eq!(UE4M3_TO_FP32[0x7F], 0.0);
        assert_eq!(UE4M3_TO_FP32[0x7E], 224.0); // 448 * 0.5
        assert_eq!(UE4M3_TO_FP32[0x38], 0.5); // 1.0 * 0.5
        assert_eq!(UE4M3_TO_FP32[1], 2f32.powi(-10));
        assert_eq!(fp32_to_ue4m3(f32::NAN), 0);
        assert_eq!(fp32_to_ue4m3(1e9), 0x7E);
        assert_eq!(fp32_to_ue4m3(1.0), 0x38);
        assert_eq!(fp32_to_ue4m3(2f32.powi(-9) * 3.4), 3);
        assert_eq!(mxfp4_exponent(0.0), 0);
        assert_eq!(mxfp4_exponent(1.0), 125);
        assert_eq!(mxfp4_exponent(f32::INFINITY), 0);
        assert_eq!(mxfp4_exponent(1e-39), 251);
    }

    #[test]
    fn mxfp4_matches_ggml() {
        check(GgmlType::MXFP4);
    }

    #[test]
    fn nvfp4_matches_ggml() {
        check(GgmlType::NVFP4);
    }
}
