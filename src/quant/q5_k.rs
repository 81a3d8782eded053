//! Q5_K: super-blocks of 256 values in 8 sub-blocks of 32, `x = d*sc*q - dmin*m` with 5-bit
//! `q` and 6-bit sub-block scale `sc` and min `m` (`block_q5_K` in ggml-common.h).
//!
//! Ports of ggml-quants.c `quantize_row_q5_K_ref` (no importance weights),
//! `quantize_row_q5_K_impl` (with them; what `quantize_q5_K` runs per row) and
//! `dequantize_row_q5_K`. The scale/min search is Q4_K's (see [`super::q4_k`]) with 31 levels.
//!
//! Block layout (176 bytes): `d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qh: [u8; 32]` (bit `j`
//! of byte `i` is the fifth bit of value `32*j + i`), `qs: [u8; 128]` (low 4 bits, laid out as
//! in Q4_K).

use super::kquant_search::{get_scale_min_k4, read_f16, MinSearch};
use super::q4_k::{scales_mins_impl, scales_mins_ref, D, DMIN, QK_K, SCALES};
use super::simd8::{self as simd, F8};
use super::{GgmlType, TypeCodec};

const BLOCK_BYTES: usize = 176;
const QH: usize = 16;
const QS: usize = 48;

/// Writes the 5-bit levels into `qh` and `qs`.
fn pack(l: &[u8; QK_K], y: &mut [u8]) {
    y[QH..QH + 32].fill(0);
    for (n, pair) in l.chunks_exact(64).enumerate() {
        let (m1, m2) = (1u8 << (2 * n), 2u8 << (2 * n));
        for j in 0..32 {
            let mut l1 = pair[j];
            if l1 > 15 {
                l1 -= 16;
                y[QH + j] |= m1;
            }
            let mut l2 = pair[j + 32];
            if l2 > 15 {
                l2 -= 16;
                y[QH + j] |= m2;
            }
            y[QS + 32 * n + j] = l1 | (l2 << 4);
        }
    }
}

/// Q5_K codec.
pub struct Q5K;

impl TypeCodec for Q5K {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q5_K
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
        // make_qkx2_quants tuning of quantize_row_q5_K_ref.
        const SEARCH: MinSearch = MinSearch {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let blocks = src
            .chunks_exact(QK_K)
            .zip(dst.chunks_exact_mut(BLOCK_BYTES));
        match imatrix {
            None => {
                for (x, y) in blocks {
                    let l = scales_mins_ref::<V>(x, y, 31, SEARCH);
                    pack(&l, y);
                }
            }
            Some(qw) => {
                for ((x, y), qw) in blocks.zip(qw.chunks_exact(QK_K)) {
                    let l = scales_mins_impl::<V>(x, qw, y, 31, true);
                    pack(&l, y);
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
                let ql = &y[QS + 32 * (j / 2)..QS + 32 * (j / 2) + 32];
                let qh = &y[QH..QH + 32];
                let shift = 4 * (j % 2);
                let hbit = 1u8 << j;
                for ((v, &lo), &hi) in o.iter_mut().zip(ql).zip(qh) {
                    let q = ((lo >> shift) & 0xF) as i32 + if hi & hbit != 0 { 16 } else { 0 };
                    *v = d1 * q as f32 - m1;
                }
            }
        }
    }
}
