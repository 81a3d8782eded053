//! Q2_K: super-blocks of 256 values in 16 sub-blocks of 16, `x = d*sc*q - dmin*m` with 2-bit
//! `q` and 4-bit sub-block scale `sc` and min `m` (`block_q2_K` in ggml-common.h).
//!
//! Ports of ggml-quants.c `quantize_row_q2_K_ref` (no importance weights),
//! `quantize_row_q2_K_impl` (with them; what `quantize_q2_K` runs per row) and
//! `dequantize_row_q2_K`.
//!
//! Block layout (84 bytes): `scales: [u8; 16]` (scale in the low nibble, min in the high one),
//! `qs: [u8; 64]` (see [`pack_2bit`]), `d: f16`, `dmin: f16`.

use super::kquant_search::{
    lanes_to_array, levels_from_lanes, make_qp_quants, min_search_lanes, pack_2bit, read_f16,
    sum_sq, to_lanes, write_f16, Lanes, MinSearch,
};
use super::rounding::nearest_int;
use super::simd8::{self as simd, build, F8, I8};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK_K;
const BLOCK_BYTES: usize = 84;
const SCALES: usize = 0;
const QS: usize = 16;
const D: usize = 80;
const DMIN: usize = 82;

/// Port of `quantize_row_q2_K_ref` for one super-block.
#[inline(always)]
fn quantize_block_ref<V: F8>(x: &[f32], y: &mut [u8]) {
    // Sub-block scales and mins are quantized against their maximum with 4 bits.
    const Q4SCALE: f32 = 15.0;
    const SEARCH: MinSearch = MinSearch {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    // The sixteen sub-block searches run side by side, one per lane (`min_search_lanes`).
    let xt: Lanes<V, 2, 16> = to_lanes(x);
    let weights: Lanes<V, 2, 16> = build(|i| build(|v| xt[i][v].abs()));
    let mut lt = [[V::splat(0.0); 2]; 16];
    let (sc, mn) = min_search_lanes(3, &xt, &weights, SEARCH, false, &mut lt);
    let mut l = [0u8; QK_K];
    levels_from_lanes(&lt, &mut l);
    let scales: [f32; 16] = lanes_to_array(&sc);
    let mins: [f32; 16] = lanes_to_array(&mn);
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let mut sc = [0u8; 16];
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v) as u8;
        }
        write_f16(y, D, max_scale / Q4SCALE);
    } else {
        write_f16(y, D, 0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &v) in sc.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * v) << 4) as u8;
        }
        write_f16(y, DMIN, max_min / Q4SCALE);
    } else {
        write_f16(y, DMIN, 0.0);
    }
    y[SCALES..SCALES + 16].copy_from_slice(&sc);
    requantize::<V>(x, y, &mut l, read_f16(y, D), read_f16(y, DMIN));
    pack_2bit(&l, &mut y[QS..QS + 64]);
}

/// Port of `quantize_row_q2_K_impl` for one super-block with its importance weights `qw`.
#[inline(always)]
fn quantize_block_impl<V: F8>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    const SEARCH: MinSearch = MinSearch {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let sigma2 = V::splat(sum_sq(x) / QK_K as f32);
    let xt: Lanes<V, 2, 16> = to_lanes(x);
    let qt: Lanes<V, 2, 16> = to_lanes(qw);
    let zero = V::splat(0.0);
    let mut weight = [[zero; 2]; 16];
    let mut sum_w = [zero; 2];
    for i in 0..16 {
        for v in 0..2 {
            let xi = xt[i][v];
            weight[i][v] = qt[i][v] * (sigma2 + xi * xi).sqrt();
            sum_w[v] = sum_w[v] + weight[i][v];
        }
    }
    let mut lt = [[zero; 2]; 16];
    let (sc, mn) = min_search_lanes(3, &xt, &weight, SEARCH, true, &mut lt);
    let mut l = [0u8; QK_K];
    levels_from_lanes(&lt, &mut l);
    let scales: [f32; 16] = lanes_to_array(&sc);
    let mins: [f32; 16] = lanes_to_array(&mn);
    let sw: [f32; 16] = lanes_to_array(&sum_w);

    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    write_f16(y, D, dm);
    write_f16(y, DMIN, mm);
    for j in 0..16 {
        y[SCALES + j] = ls[j] | (lm[j] << 4);
    }
    requantize::<V>(x, y, &mut l, read_f16(y, D), read_f16(y, DMIN));
    pack_2bit(&l, &mut y[QS..QS + 64]);
}

/// Re-derives the 2-bit levels from the stored (rounded) scales and mins; sub-blocks whose
/// scale is zero keep the levels of the search.
#[inline(always)]
fn requantize<V: F8>(x: &[f32], y: &[u8], l: &mut [u8; QK_K], dm: f32, mm: f32) {
    let (lo, hi) = (V::I::splat(0), V::I::splat(3));
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let sc = y[SCALES + j];
        let d = dm * (sc & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let (m, d) = (V::splat(mm * (sc >> 4) as f32), V::splat(d));
        for (q, v) in ls.chunks_exact_mut(8).zip(xs.chunks_exact(8)) {
            let li = simd::nearest_int((V::load(v) + m) / d).clamp(lo, hi);
            q.copy_from_slice(&li.low_bytes());
        }
    }
}

/// Q2_K codec.
pub struct Q2K;

impl TypeCodec for Q2K {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q2_K
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        simd::dispatch!(V => {
            let blocks = src
                .chunks_exact(QK_K)
                .zip(dst.chunks_exact_mut(BLOCK_BYTES));
            // plain loops, not closures: everything here must inline into the dispatched code
            match imatrix {
                None => {
                    for (x, y) in blocks {
                        quantize_block_ref::<V>(x, y);
                    }
                }
                Some(qw) => {
                    for ((x, y), qw) in blocks.zip(qw.chunks_exact(QK_K)) {
                        quantize_block_impl::<V>(x, qw, y);
                    }
                }
            }
        })
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (y, out) in src
            .chunks_exact(BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = read_f16(y, D);
            let min = read_f16(y, DMIN);
            for (j, o) in out.chunks_exact_mut(16).enumerate() {
                let sc = y[SCALES + j];
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                // Sub-block j lives in the 2-bit plane (j % 8) / 2 of bytes
                // 32*(j/8) + 16*(j%2) .. +16.
                let shift = 2 * ((j % 8) / 2);
                let base = QS + 32 * (j / 8) + 16 * (j % 2);
                for (l, v) in o.iter_mut().enumerate() {
                    let q = (y[base + l] >> shift) & 3;
                    *v = dl * q as f32 - ml;
                }
            }
        }
    }
}
