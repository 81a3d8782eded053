//! Q6_K: super-blocks of 256 values in 16 sub-blocks of 16, `x = d*sc*(q - 32)` with 6-bit `q`
//! and signed 8-bit sub-block scale `sc` (`block_q6_K` in ggml-common.h).
//!
//! Ports of ggml-quants.c `quantize_row_q6_K_ref` (no importance weights),
//! `quantize_row_q6_K_impl` (with them; what `quantize_q6_K` runs per row) and
//! `dequantize_row_q6_K`. The two quantizers differ only in the weights of `make_qx_quants`:
//! `x²` for the reference one, the importance weights themselves for the weighted one.
//!
//! Block layout (210 bytes): `ql: [u8; 128]`, `qh: [u8; 64]`, `scales: [i8; 16]`, `d: f16`.
//! In each half of 128 values (`ql` 64 bytes, `qh` 32 bytes), value `i + 32*k` (`i < 32`) has
//! its low 4 bits in nibble `k / 2` of `ql[i + 32*(k % 2)]` and its top 2 bits at bit `2k` of
//! `qh[i]`.

use super::kquant_search::{make_qx_quants_v, read_f16, write_f16, GROUP_MAX_EPS};
use super::rounding::nearest_int;
use super::simd8::{self as simd, F8, I8};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK_K;
const BLOCK_BYTES: usize = 210;
const QL: usize = 0;
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

/// One super-block; `qw` are its importance weights (`None`: the `_ref` quantizer).
#[inline(always)]
fn quantize_block<V: F8>(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for (ib, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        let scale = make_qx_quants_v::<V>(32, xs, ls, w);
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }

    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        write_f16(y, D, 0.0);
        return;
    }

    // Sub-block scales are int8: -128 is their extreme level.
    let iscale = -128.0 / max_scale;
    write_f16(y, D, 1.0 / iscale);
    for (ib, &s) in scales.iter().enumerate() {
        y[SCALES + ib] = nearest_int(iscale * s).min(127) as i8 as u8;
    }

    let d_all = read_f16(y, D);
    let (lo, hi, off) = (V::I::splat(-32), V::I::splat(31), V::I::splat(32));
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = d_all * (y[SCALES + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        let d = V::splat(d);
        for (q, v) in ls.chunks_exact_mut(8).zip(xs.chunks_exact(8)) {
            let li = simd::nearest_int(V::load(v) / d).clamp(lo, hi) + off;
            for (q, b) in q.iter_mut().zip(li.low_bytes()) {
                *q = b as i8;
            }
        }
    }

    for (h, half) in l.chunks_exact(128).enumerate() {
        let ql = QL + 64 * h;
        let qh = QH + 32 * h;
        for i in 0..32 {
            let q = [0, 32, 64, 96].map(|k| half[i + k] as u8);
            y[ql + i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            y[ql + i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            y[qh + i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

/// Q6_K codec.
pub struct Q6K;

impl TypeCodec for Q6K {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q6_K
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        simd::dispatch!(V => {
            for (b, (x, y)) in src
                .chunks_exact(QK_K)
                .zip(dst.chunks_exact_mut(BLOCK_BYTES))
                .enumerate()
            {
                let qw = imatrix.map(|w| &w[QK_K * b..QK_K * (b + 1)]);
                quantize_block::<V>(x, qw, y);
            }
        })
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (y, out) in src
            .chunks_exact(BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = read_f16(y, D);
            for (h, half) in out.chunks_exact_mut(128).enumerate() {
                let ql = &y[QL + 64 * h..QL + 64 * h + 64];
                let qh = &y[QH + 32 * h..QH + 32 * h + 32];
                let sc = &y[SCALES + 8 * h..SCALES + 8 * h + 8];
                for i in 0..32 {
                    let is = i / 16;
                    for k in 0..4 {
                        let low = (ql[i + 32 * (k % 2)] >> (4 * (k / 2))) & 0xF;
                        let high = (qh[i] >> (2 * k)) & 3;
                        let q = (low | (high << 4)) as i32 - 32;
                        let s = sc[is + 2 * k] as i8;
                        half[i + 32 * k] = d * s as f32 * q as f32;
                    }
                }
            }
        }
    }
}
