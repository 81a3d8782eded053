//! Q4_K: super-blocks of 256 values in 8 sub-blocks of 32, `x = d*sc*q - dmin*m` with 4-bit
//! `q` and 6-bit sub-block scale `sc` and min `m` (`block_q4_K` in ggml-common.h).
//!
//! Ports of ggml-quants.c `quantize_row_q4_K_ref` (no importance weights),
//! `quantize_row_q4_K_impl` (with them; what `quantize_q4_K` runs per row) and
//! `dequantize_row_q4_K`. Q5_K quantizes its scales and mins the same way, so the
//! scale/min half of both quantizers lives here as [`scales_mins_ref`] and
//! [`scales_mins_impl`].
//!
//! Block layout (144 bytes): `d: f16`, `dmin: f16`, `scales: [u8; 12]` (see
//! [`get_scale_min_k4`]), `qs: [u8; 128]` (sub-blocks `2k` and `2k+1` in the low and high
//! nibbles of bytes `32k..32k+32`).

use super::kquant_search::{
    get_scale_min_k4, lanes_to_array, levels_from_lanes, make_qp_quants, min_search_lanes,
    read_f16, set_scale_min_k4, sum_sq, to_lanes, write_f16, Lanes, MinSearch,
};
use super::rounding::nearest_int;
use super::simd8::{self as simd, build, F8, I8};
use super::{GgmlType, TypeCodec};

pub(super) use crate::gguf::ggml_type::QK_K;
const BLOCK_BYTES: usize = 144;
/// Offsets shared by the Q4_K and Q5_K blocks.
pub(super) const D: usize = 0;
pub(super) const DMIN: usize = 2;
pub(super) const SCALES: usize = 4;
const QS: usize = 16;

/// The scale/min half of `quantize_row_q{4,5}_K_ref` for one super-block: fits each sub-block
/// of 32 with `make_qkx2_quants` (weights `rms + |x|`), quantizes the scales and mins to 6 bits
/// against their maxima, stores `d`, `dmin` and the packed scales into `y`, and returns the
/// levels (0..=nmax) re-derived from the stored values.
///
/// The eight sub-block searches are independent; they run side by side, one per lane (see
/// [`min_search_lanes`]).
#[inline(always)]
pub(super) fn scales_mins_ref<V: F8>(
    x: &[f32],
    y: &mut [u8],
    nmax: i32,
    search: MinSearch,
) -> [u8; QK_K] {
    let xt: Lanes<V, 1, 32> = to_lanes(x);
    let zero = V::splat(0.0);
    let mut sum_x2 = zero;
    for xi in &xt {
        sum_x2 = sum_x2 + xi[0] * xi[0];
    }
    let av_x = (sum_x2 / V::splat(32.0)).sqrt();
    let weights: Lanes<V, 1, 32> = build(|i| [av_x + xt[i][0].abs()]);
    let mut lt = [[zero; 1]; 32];
    let (sc, mn) = min_search_lanes(nmax, &xt, &weights, search, false, &mut lt);
    let mut l = [0u8; QK_K];
    levels_from_lanes(&lt, &mut l);
    let scales: [f32; 8] = lanes_to_array(&sc);
    let mins: [f32; 8] = lanes_to_array(&mn);

    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    // Sub-block scales and mins have 6 bits: 63 is their largest level.
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t, then clamps.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        set_scale_min_k4(j, ls, lm, &mut y[SCALES..SCALES + 12]);
    }
    write_f16(y, D, max_scale / 63.0);
    write_f16(y, DMIN, max_min / 63.0);
    requantize::<V>(x, y, &mut l, nmax);
    l
}

/// The scale/min half of `quantize_row_q{4,5}_K_impl` for one super-block with importance
/// weights `qw`: `make_qkx3_quants` per sub-block (the eight side by side, one per lane), then
/// `make_qp_quants` for the scales and the mins. `clamp63` is Q5_K's extra `MIN(63, ...)` on
/// the quantized scales (Q4_K stores them as they come).
#[inline(always)]
pub(super) fn scales_mins_impl<V: F8>(
    x: &[f32],
    qw: &[f32],
    y: &mut [u8],
    nmax: i32,
    clamp63: bool,
) -> [u8; QK_K] {
    const SEARCH: MinSearch = MinSearch {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let sigma2 = V::splat(2.0 * sum_sq(x) / QK_K as f32);
    let xt: Lanes<V, 1, 32> = to_lanes(x);
    let qt: Lanes<V, 1, 32> = to_lanes(qw);
    let zero = V::splat(0.0);
    let mut weights = [[zero; 1]; 32];
    let mut sum_w = [zero; 1];
    for i in 0..32 {
        let xi = xt[i][0];
        weights[i][0] = qt[i][0] * (sigma2 + xi * xi).sqrt();
        sum_w[0] = sum_w[0] + weights[i][0];
    }
    let mut lt = [[zero; 1]; 32];
    let (sc, mn) = min_search_lanes(nmax, &xt, &weights, SEARCH, true, &mut lt);
    let mut l = [0u8; QK_K];
    levels_from_lanes(&lt, &mut l);
    let scales: [f32; 8] = lanes_to_array(&sc);
    let mins: [f32; 8] = lanes_to_array(&mn);
    let sw: [f32; 8] = lanes_to_array(&sum_w);

    let mut lsc = [0u8; 8];
    let mut lmn = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut lsc, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lmn, &sw);
    for j in 0..8 {
        let (ls, lm) = if clamp63 {
            (lsc[j].min(63), lmn[j].min(63))
        } else {
            (lsc[j], lmn[j])
        };
        set_scale_min_k4(j, ls, lm, &mut y[SCALES..SCALES + 12]);
    }
    write_f16(y, D, d_block);
    write_f16(y, DMIN, m_block);
    requantize::<V>(x, y, &mut l, nmax);
    l
}

/// Re-derives the levels (0..=nmax) from the stored scales and mins; sub-blocks whose scale is
/// zero keep the levels of the search.
#[inline(always)]
fn requantize<V: F8>(x: &[f32], y: &[u8], l: &mut [u8; QK_K], nmax: i32) {
    let d_all = read_f16(y, D);
    let dmin = read_f16(y, DMIN);
    let (lo, hi) = (V::I::splat(0), V::I::splat(nmax));
    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, &y[SCALES..SCALES + 12]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = V::splat(dmin * m as f32);
        let d = V::splat(d);
        for (q, v) in ls.chunks_exact_mut(8).zip(xs.chunks_exact(8)) {
            let li = simd::nearest_int((V::load(v) + dm) / d).clamp(lo, hi);
            q.copy_from_slice(&li.low_bytes());
        }
    }
}

/// Writes the 4-bit levels into `qs`.
fn pack_qs(l: &[u8; QK_K], qs: &mut [u8]) {
    for (pair, q) in l.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
        for (i, b) in q.iter_mut().enumerate() {
            *b = pair[i] | (pair[i + 32] << 4);
        }
    }
}

/// Q4_K codec.
pub struct Q4K;

impl TypeCodec for Q4K {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q4_K
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        simd::dispatch!(V => quantize_row_v::<V>(src, imatrix, dst))
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        dequantize_row(src, dst)
    }
}

#[inline(always)]
fn quantize_row_v<V: F8>(src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
    {
        // make_qkx2_quants tuning of quantize_row_q4_K_ref.
        const SEARCH: MinSearch = MinSearch {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let blocks = src
            .chunks_exact(QK_K)
            .zip(dst.chunks_exact_mut(BLOCK_BYTES));
        match imatrix {
            None => {
                for (x, y) in blocks {
                    let l = scales_mins_ref::<V>(x, y, 15, SEARCH);
                    pack_qs(&l, &mut y[QS..]);
                }
            }
            Some(qw) => {
                for ((x, y), qw) in blocks.zip(qw.chunks_exact(QK_K)) {
                    let l = scales_mins_impl::<V>(x, qw, y, 15, false);
                    pack_qs(&l, &mut y[QS..]);
                }
            }
        }
    }
}

fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    {
        for (y, out) in src
            .chunks_exact(BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = read_f16(y, D);
            let min = read_f16(y, DMIN);
            for (j, o) in out.chunks_exact_mut(32).enumerate() {
                let (sc, m) = get_scale_min_k4(j, &y[SCALES..SCALES + 12]);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                let q = &y[QS + 32 * (j / 2)..QS + 32 * (j / 2) + 32];
                let shift = 4 * (j % 2);
                for (v, &b) in o.iter_mut().zip(q) {
                    *v = d1 * ((b >> shift) & 0xF) as f32 - m1;
                }
            }
        }
    }
}
