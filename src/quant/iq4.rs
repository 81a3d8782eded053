//! IQ4_NL and IQ4_XS: 4-bit indices into the non-linear table `kvalues_iq4nl`
//! (`block_iq4_nl`, `block_iq4_xs` in ggml-common.h).
//!
//! Ports of ggml's `quantize_iq4_nl`, `quantize_iq4_xs`, their shared `quantize_row_iq4_nl_impl`,
//! `best_index_int8`, `dequantize_row_iq4_nl` and `dequantize_row_iq4_xs`
//! (ggml/src/ggml-quants.c).

use super::rounding::{f16_bits_to_f32, f32_to_f16_bits, nearest_int};
use super::simd8::{self as simd, build, F8, I8};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK4_NL;
use crate::gguf::ggml_type::QK_K;
const IQ4NL_BLOCK_BYTES: usize = 2 + QK4_NL / 2;
const IQ4XS_BLOCK_BYTES: usize = 2 + 2 + QK_K / 64 + QK_K / 2;
/// ggml's `GROUP_MAX_EPS`.
const GROUP_MAX_EPS: f32 = 1e-15;
/// The scale tries each side of the first guess; `quantize_iq4_nl` and `quantize_iq4_xs` (what
/// llama-quantize calls) both pass 7, with or without importance weights.
const NTRY: i32 = 7;

/// `kvalues_iq4nl` (ggml-common.h).
const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Port of `best_index_int8`: the index of the table value nearest `x` (ties go up). The
/// quantizers use [`best_index`], which gives the same index without branches; this is kept as
/// its specification (see the tests).
#[cfg(test)]
fn best_index_int8(val: &[i8; 16], x: f32) -> u8 {
    let n = val.len();
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[n - 1] as f32 {
        return (n - 1) as u8;
    }
    let (mut ml, mut mu) = (0usize, n - 1);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// `best_index_int8` as a count of thresholds.
///
/// For `x` between table values `a = val[k-1]` and `b = val[k]`, `best_index_int8` returns `k`
/// exactly when `!(x - a < b - x)`, i.e. `x - a >= b - x` in f32 arithmetic. Both sides are
/// monotonic in `x` (rounding is), so that predicate is `x >= t_k` for one f32 threshold `t_k`
/// (within an ulp or two of the midpoint); and it is also true for every `x >= b` and false for
/// every `x < a`. So for any non-NaN `x` the index is the number of `t_k` (k = 1..15) with
/// `x >= t_k`. A NaN `x` runs ggml's binary search to the top: index 15.
const fn threshold(a: f32, b: f32) -> f32 {
    // `x - a >= b - x`, as ggml evaluates it (no fused operations in a const fn either).
    const fn up(x: f32) -> f32 {
        // next float toward +inf, for finite x
        let bits = x.to_bits();
        if x == 0.0 {
            f32::from_bits(1)
        } else if bits >> 31 == 0 {
            f32::from_bits(bits + 1)
        } else {
            f32::from_bits(bits - 1)
        }
    }
    const fn down(x: f32) -> f32 {
        -up(-x)
    }
    let mut t = (a + b) * 0.5;
    if t - a >= b - t {
        while down(t) - a >= b - down(t) {
            t = down(t);
        }
    } else {
        while t - a < b - t {
            t = up(t);
        }
    }
    t
}

const fn thresholds() -> [f32; 15] {
    let mut t = [0.0f32; 15];
    let mut k = 1;
    while k < 16 {
        t[k - 1] = threshold(KVALUES_IQ4NL[k - 1] as f32, KVALUES_IQ4NL[k] as f32);
        k += 1;
    }
    t
}

/// `t_k` of [`best_index`], k = 1..15.
const THRESHOLDS: [f32; 15] = thresholds();

/// `val[k] - val[k-1]`, k = 1..15, so that the table value of an index is
/// `val[0] + sum of the steps whose threshold is passed` (small integers: exact in f32).
const STEPS: [f32; 15] = {
    let mut s = [0.0f32; 15];
    let mut k = 1;
    while k < 16 {
        s[k - 1] = (KVALUES_IQ4NL[k] as i32 - KVALUES_IQ4NL[k - 1] as i32) as f32;
        k += 1;
    }
    s
};

/// `best_index_int8(16, kvalues_iq4nl, x)`, branch-free (see [`THRESHOLDS`]).
#[cfg(test)]
fn best_index(x: f32) -> u8 {
    let mut n = 0u8;
    for &t in &THRESHOLDS {
        n += (x >= t) as u8;
    }
    if x.is_nan() {
        15
    } else {
        n
    }
}

/// What `quantize_row_iq4_nl_impl` writes besides the packed nibbles.
struct SuperBlockHeader {
    /// f16 bits of the super-block scale.
    d: u16,
    /// High two bits of each block's 6-bit scale (IQ4_XS only).
    scales_h: u16,
    /// Low four bits of each block's 6-bit scale, two per byte (IQ4_XS only).
    scales_l: [u8; QK_K / 64],
}

/// Scales tried per block: the first guess, then `ntry` = 7 each side.
const NCAND: usize = 2 * NTRY as usize + 2;

/// The scale search of `quantize_row_iq4_nl_impl` for one block of 32 whose value of largest
/// magnitude is `max` (nonzero): returns ggml's `d`.
///
/// ggml tries its 16 inverse scales one after another, each with a sequential pass over the
/// block. They are independent, so here they run side by side, one lane per candidate: each
/// lane sees the same operations, and accumulates its sums in the same order, as ggml's loop
/// for that candidate. The table value of each `id*x` comes from [`THRESHOLDS`] (what
/// `best_index_int8` picks). The levels of this pass are not kept: ggml overwrites them
/// afterwards in every case.
#[inline(always)]
fn search_block<V: F8, const CHECK_NAN: bool>(xb: &[f32; 32], weight: &[f32; 32], max: f32) -> f32 {
    const NV: usize = NCAND / 8;
    let v0 = KVALUES_IQ4NL[0] as f32;
    // Lane 0: ggml's first guess `1/d`, d = -max/values[0]; lanes 1..16: `(itry + values[0])/max`
    // for itry = -7..=7, whose integer numerators are exact floats.
    const NUM: [f32; NCAND] = {
        let mut n = [0.0f32; NCAND];
        let mut c = 1;
        while c < NCAND {
            n[c] = (c as i32 - 1 - NTRY + KVALUES_IQ4NL[0] as i32) as f32;
            c += 1;
        }
        n
    };
    let maxv = V::splat(max);
    let mut id: [V; NV] = build(|v| V::load(&NUM[8 * v..]) / maxv);
    let mut first = id[0].to_array();
    first[0] = 1.0 / (-max / v0);
    id[0] = V::from_array(first);
    let thresholds: [V; 15] = build(|k| V::splat(THRESHOLDS[k]));
    let steps: [V; 15] = build(|k| V::splat(STEPS[k]));
    let zero = V::splat(0.0);
    let mut sumqx = [zero; NV];
    let mut sumq2 = [zero; NV];
    for (&xj, &w) in xb.iter().zip(weight) {
        let (xv, wv) = (V::splat(xj), V::splat(w));
        for v in 0..NV {
            let al = id[v] * xv;
            // q = kvalues_iq4nl[best_index_int8(al)]; the running sum never is -0.0, so adding
            // 0.0 for a threshold not passed leaves it unchanged.
            let mut q = V::splat(v0);
            for k in 0..15 {
                q = q + (al.ge(thresholds[k]) & steps[k]);
            }
            if CHECK_NAN {
                q = V::select(al.is_nan(), V::splat(KVALUES_IQ4NL[15] as f32), q);
            }
            let wq = wv * q;
            sumqx[v] = sumqx[v] + wq * xv;
            sumq2[v] = sumq2[v] + wq * q;
        }
    }
    let mut qx = [0.0f32; NCAND];
    let mut q2 = [0.0f32; NCAND];
    for v in 0..NV {
        sumqx[v].store(&mut qx[8 * v..]);
        sumq2[v].store(&mut q2[8 * v..]);
    }
    let mut d = if q2[0] > 0.0 { qx[0] / q2[0] } else { 0.0 };
    let mut best = d * qx[0];
    for c in 1..NCAND {
        if q2[c] > 0.0 && qx[c] * qx[c] > best * q2[c] {
            d = qx[c] / q2[c];
            best = d * qx[c];
        }
    }
    d
}

/// Levels of a block at inverse scale `id`: [`best_index`] of `id * v`, eight values at a time.
#[inline(always)]
fn block_levels<V: F8>(xb: &[f32], id: f32, l: &mut [u8]) {
    let (idv, one) = (V::splat(id), V::splat(1.0));
    for (q, v) in l.chunks_exact_mut(8).zip(xb.chunks_exact(8)) {
        let al = idv * V::load(v);
        let mut n = V::splat(0.0);
        for &t in &THRESHOLDS {
            n = n + (al.ge(V::splat(t)) & one);
        }
        let n = V::select(al.is_nan(), V::splat(15.0), n);
        q.copy_from_slice(&n.to_i32_trunc().low_bytes());
    }
}

/// Port of `quantize_row_iq4_nl_impl` with `block_size` 32 and `ntry` 7, for a super-block of
/// `x.len()` values (32 for IQ4_NL, 256 for IQ4_XS). `quant_weights` covers the super-block;
/// `q4` gets `x.len() / 2` packed nibbles.
#[inline(always)]
fn quantize_iq4_nl_impl<V: F8>(
    x: &[f32],
    quant_weights: Option<&[f32]>,
    q4: &mut [u8],
) -> SuperBlockHeader {
    let super_block_size = x.len();
    let nb = super_block_size / 32;

    let mut sigma2 = 0.0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0f32 / super_block_size as f32;

    let mut header = SuperBlockHeader {
        d: f32_to_f16_bits(0.0),
        scales_h: 0,
        scales_l: [0; QK_K / 64],
    };

    let mut scales = [0.0f32; QK_K / 32];
    let mut weight = [0.0f32; 32];
    let mut l = [0u8; QK_K];
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for (ib, xb) in x.chunks_exact(32).enumerate() {
        let xb: &[f32; 32] = xb.try_into().unwrap();
        match quant_weights {
            Some(qw) => {
                let qw = &qw[32 * ib..32 * ib + 32];
                let s2 = V::splat(sigma2);
                for j in (0..32).step_by(8) {
                    let xv = V::load(&xb[j..]);
                    (V::load(&qw[j..]) * (s2 + xv * xv).sqrt()).store(&mut weight[j..]);
                }
            }
            None => {
                for j in 0..32 {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        // With finite values every `id*x` is finite (|id| <= 134/1e-15); only a non-finite input
        // can make a NaN, which best_index_int8 maps to the top index.
        let d = if xb.iter().all(|v| v.is_finite()) {
            search_block::<V, false>(xb, &weight, max)
        } else {
            search_block::<V, true>(xb, &weight, max)
        };
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if nb > 1 {
        let d = -max_scale / 32.0;
        header.d = f32_to_f16_bits(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb {
            let mut li = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * li as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            block_levels::<V>(
                &x[32 * ib..32 * ib + 32],
                idl,
                &mut l[32 * ib..32 * ib + 32],
            );
            li += 32;
            let l_l = (li & 0xf) as u8;
            let l_h = (li >> 4) as u16;
            if ib % 2 == 0 {
                header.scales_l[ib / 2] = l_l;
            } else {
                header.scales_l[ib / 2] |= l_l << 4;
            }
            header.scales_h |= l_h << (2 * (ib % 8));
        }
    } else {
        header.d = f32_to_f16_bits(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        block_levels::<V>(x, id, &mut l[..super_block_size]);
    }

    for (q, lb) in q4.chunks_exact_mut(16).zip(l.chunks_exact(32)) {
        for j in 0..16 {
            q[j] = lb[j] | (lb[16 + j] << 4);
        }
    }
    header
}

/// IQ4_NL: blocks of 32 4-bit table indices with one f16 scale. Port of `quantize_iq4_nl`.
pub struct Iq4Nl;

impl TypeCodec for Iq4Nl {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ4_NL
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        simd::dispatch!(V => {
            for (ibl, (x, y)) in src
                .chunks_exact(QK4_NL)
                .zip(dst.chunks_exact_mut(IQ4NL_BLOCK_BYTES))
                .enumerate()
            {
                let qw = imatrix.map(|w| &w[QK4_NL * ibl..QK4_NL * (ibl + 1)]);
                let (dh, qs) = y.split_at_mut(2);
                let header = quantize_iq4_nl_impl::<V>(x, qw, qs);
                dh.copy_from_slice(&header.d.to_le_bytes());
            }
        })
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ4NL_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK4_NL))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            for (j, &q) in x[2..].iter().enumerate() {
                y[j] = d * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
                y[j + QK4_NL / 2] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    }
}

/// IQ4_XS: super-blocks of 256 with an f16 scale, 6-bit scales per block of 32 and 4-bit table
/// indices. Port of `quantize_iq4_xs`.
pub struct Iq4Xs;

impl TypeCodec for Iq4Xs {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ4_XS
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        simd::dispatch!(V => {
            for (ibl, (x, y)) in src
                .chunks_exact(QK_K)
                .zip(dst.chunks_exact_mut(IQ4XS_BLOCK_BYTES))
                .enumerate()
            {
                let qw = imatrix.map(|w| &w[QK_K * ibl..QK_K * (ibl + 1)]);
                let header = quantize_iq4_nl_impl::<V>(x, qw, &mut y[8..]);
                y[0..2].copy_from_slice(&header.d.to_le_bytes());
                y[2..4].copy_from_slice(&header.scales_h.to_le_bytes());
                y[4..8].copy_from_slice(&header.scales_l);
            }
        })
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ4XS_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            let scales_h = u16::from_le_bytes([x[2], x[3]]) as i32;
            let scales_l = &x[4..8];
            for (ib, (qs, yb)) in x[8..]
                .chunks_exact(16)
                .zip(y.chunks_exact_mut(32))
                .enumerate()
            {
                let ls = ((scales_l[ib / 2] as i32 >> (4 * (ib % 2))) & 0xf)
                    | (((scales_h >> (2 * ib)) & 3) << 4);
                let dl = d * (ls - 32) as f32;
                for (j, &q) in qs.iter().enumerate() {
                    yb[j] = dl * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
                    yb[j + 16] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
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
    fn best_index_picks_nearest_and_clamps() {
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, -200.0), 0);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 200.0), 15);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 0.0), 8);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 7.0), 9);
    }

    #[test]
    fn threshold_index_equals_best_index_int8() {
        let check = |x: f32| {
            assert_eq!(
                best_index(x),
                best_index_int8(&KVALUES_IQ4NL, x),
                "x = {x:e}"
            );
        };
        // every float within 64 ulps of each table value and each threshold, both signs of the
        // neighbourhood, and the specials
        let mut probes: Vec<f32> = KVALUES_IQ4NL.iter().map(|&v| v as f32).collect();
        probes.extend(THRESHOLDS);
        for p in probes {
            for k in -64i32..=64 {
                check(f32::from_bits((p.to_bits() as i32 + k) as u32));
            }
        }
        for x in [
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -1e-40,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ] {
            check(x);
        }
        // and a dense sweep of the whole table range
        let mut x = -140.0f32;
        while x < 130.0 {
            check(x);
            x += 0.000_731;
        }
        for t in THRESHOLDS {
            assert!(t.is_finite());
        }
    }

    #[test]
    fn iq4_nl_matches_ggml() {
        check(GgmlType::IQ4_NL);
    }

    #[test]
    fn iq4_xs_matches_ggml() {
        check(GgmlType::IQ4_XS);
    }
}
