//! Q3_K: super-blocks of 256 values in 16 sub-blocks of 16, `x = d*(sc - 32)*(q - 4)` with
//! 3-bit `q` and 6-bit sub-block scale `sc` (`block_q3_K` in ggml-common.h).
//!
//! Ports of ggml-quants.c `quantize_row_q3_K_ref` (no importance weights),
//! `quantize_row_q3_K_impl` (with them; what `quantize_q3_K` runs per row) and
//! `dequantize_row_q3_K`.
//!
//! Block layout (110 bytes): `hmask: [u8; 32]` (bit `k` of byte `i` is the high bit of value
//! `32*k + i`), `qs: [u8; 64]` (low 2 bits, see [`pack_2bit`]), `scales: [u8; 12]`, `d: f16`.
//! Scale `j` has its low nibble in byte `j % 8` (low nibble for `j < 8`, high nibble otherwise)
//! and its top 2 bits in byte `8 + j % 4` at bit `2*(j/4)`.

use super::kquant_search::{
    lanes_to_array, levels_from_lanes, make_q3_quants_lanes, make_qx_quants_v, pack_2bit, read_f16,
    sum_in_order, sum_sq, to_lanes, write_f16, Lanes,
};
use super::rounding::nearest_int;
use super::simd8::{self as simd, F8, I8};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK_K;
const BLOCK_BYTES: usize = 110;
const HMASK: usize = 0;
const QS: usize = 32;
const SCALES: usize = 96;
const D: usize = 108;

/// Stores the 6-bit scale `l` (0..=63) of sub-block `j` into the 12 zero-initialized bytes `s`.
fn set_scale(s: &mut [u8], j: usize, l: u8) {
    if j < 8 {
        s[j] = l & 0xF;
    } else {
        s[j - 8] |= (l & 0xF) << 4;
    }
    s[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
}

/// The signed scale (`sc - 32`) of sub-block `j`.
fn get_scale(s: &[u8], j: usize) -> i32 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Re-derives the levels (0..=7) from the stored scales, then writes `hmask` and `qs`.
/// Sub-blocks whose scale is zero keep the levels of the search.
#[inline(always)]
fn finish_block<V: F8>(x: &[f32], y: &mut [u8], l: &mut [i8; QK_K]) {
    let d_all = read_f16(y, D);
    let (lo, hi, four) = (V::I::splat(-4), V::I::splat(3), V::I::splat(4));
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = d_all * get_scale(&y[SCALES..SCALES + 12], j) as f32;
        if d == 0.0 {
            continue;
        }
        let d = V::splat(d);
        for (q, v) in ls.chunks_exact_mut(8).zip(xs.chunks_exact(8)) {
            let li = simd::nearest_int(V::load(v) / d).clamp(lo, hi) + four;
            for (o, b) in q.iter_mut().zip(li.low_bytes()) {
                *o = b as i8;
            }
        }
    }

    // ggml: `if (L[j] > 3) { hmask[j%32] |= 1 << (j/32); L[j] -= 4; }`, without the branch
    let mut low = [0u8; QK_K];
    let mut hmask = [0u8; 32];
    for (k, (lq, lo)) in l.chunks_exact(32).zip(low.chunks_exact_mut(32)).enumerate() {
        for ((&q, lo), h) in lq.iter().zip(lo.iter_mut()).zip(hmask.iter_mut()) {
            let q = q as u8;
            let high = (q > 3) as u8;
            *h |= high << k;
            *lo = q.wrapping_sub(4 * high);
        }
    }
    y[HMASK..HMASK + 32].copy_from_slice(&hmask);
    pack_2bit(&low, &mut y[QS..QS + 64]);
}

/// Port of `quantize_row_q3_K_ref` for one super-block.
#[inline(always)]
fn quantize_block_ref<V: F8>(x: &[f32], y: &mut [u8]) {
    // The sixteen sub-block fits run side by side, one per lane.
    let xt: Lanes<V, 2, 16> = to_lanes(x);
    let mut lt = [[V::splat(0.0); 2]; 16];
    let sc = make_q3_quants_lanes(4, &xt, &mut lt);
    let mut lu = [0u8; QK_K];
    levels_from_lanes(&lt, &mut lu);
    let mut l = lu.map(|v| v as i8);
    let scales: [f32; 16] = lanes_to_array(&sc);
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for &s in &scales {
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }

    let s = &mut y[SCALES..SCALES + 12];
    s.fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &v) in scales.iter().enumerate() {
            // ggml stores nearest_int into an int8_t before clamping.
            let l = nearest_int(iscale * v) as i8;
            set_scale(s, j, ((l as i32).clamp(-32, 31) + 32) as u8);
        }
        write_f16(y, D, 1.0 / iscale);
    } else {
        write_f16(y, D, 0.0);
    }
    finish_block::<V>(x, y, &mut l);
}

/// Port of `quantize_row_q3_K_impl` for one super-block with its importance weights `qw`.
#[inline(always)]
fn quantize_block_impl<V: F8>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let q = &qw[16 * j..16 * j + 16];
        let weight: [f32; 16] = std::array::from_fn(|i| q[i] * (sigma2 + xs[i] * xs[i]).sqrt());
        sw[j] = sum_in_order(&weight);
        scales[j] = make_qx_quants_v::<V>(4, xs, ls, Some(&weight));
    }

    let mut lsc = [0i8; 16];
    let d_block = make_qx_quants_v::<V>(32, &scales, &mut lsc, Some(&sw));
    let s = &mut y[SCALES..SCALES + 12];
    s.fill(0);
    for (j, &v) in lsc.iter().enumerate() {
        set_scale(s, j, v as u8);
    }
    write_f16(y, D, d_block);
    finish_block::<V>(x, y, &mut l);
}

/// Q3_K codec.
pub struct Q3K;

impl TypeCodec for Q3K {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q3_K
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
            let d_all = read_f16(y, D);
            for (j, o) in out.chunks_exact_mut(16).enumerate() {
                let dl = d_all * get_scale(&y[SCALES..SCALES + 12], j) as f32;
                // Sub-block j lives in the 2-bit plane (j % 8) / 2 of bytes
                // 32*(j/8) + 16*(j%2) .. +16; its high bits in plane j / 2 of hmask.
                let shift = 2 * ((j % 8) / 2);
                let base = 32 * (j / 8) + 16 * (j % 2);
                let hbit = 1u8 << (j / 2);
                let hoff = 16 * (j % 2);
                for (l, v) in o.iter_mut().enumerate() {
                    let low = ((y[QS + base + l] >> shift) & 3) as i32;
                    let high = if y[HMASK + hoff + l] & hbit != 0 {
                        0
                    } else {
                        4
                    };
                    *v = dl * (low - high) as f32;
                }
            }
        }
    }
}
