//! The legacy 32-value block formats Q4_0, Q4_1, Q5_0 and Q5_1 (`block_q4_0` ... `block_q5_1`
//! in ggml-common.h).
//!
//! Ports of ggml-quants.c: without importance weights `quantize_row_q{4,5}_{0,1}_ref`, with
//! them `quantize_row_q{4,5}_{0,1}_impl` (what `quantize_q{4,5}_{0,1}` choose per row), and
//! `dequantize_row_q{4,5}_{0,1}`.
//!
//! Block layouts (little endian): Q4_0 `d: f16, qs: [u8; 16]`; Q4_1 `d: f16, m: f16, qs`;
//! Q5_0 `d: f16, qh: u32, qs`; Q5_1 `d: f16, m: f16, qh: u32, qs`. Value `j` of a block is the
//! low nibble of `qs[j]` for `j < 16` and the high nibble of `qs[j - 16]` otherwise; Q5 keeps the
//! fifth bit of value `j` in bit `j` of `qh`.

use super::kquant_search::{
    make_qkx3_quants, make_qx_quants, read_f16, sum_sq, write_f16, MinSearch,
};
use super::rounding::c_float_to_int;
use super::{GgmlType, TypeCodec};

const QK: usize = 32;

/// The `make_qkx3_quants` tuning of the weighted Q4_1/Q5_1 quantizers (`-0.9f, 0.05f, 36,
/// false` in `quantize_row_q{4,5}_1_impl`).
const QKX3_SEARCH: MinSearch = MinSearch {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// A C `(int8_t)f` conversion as the reference build executes it: `cvttss2si`, then the low byte.
#[inline]
fn to_i8(f: f32) -> i8 {
    c_float_to_int(f) as i8
}

/// The value of largest magnitude (the first one on ties), as the `_0` quantizers find it.
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// `(min, max)` of a block as the `_1` quantizers scan it, starting from `FLT_MAX`/`-FLT_MAX`.
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `sigma2` of the weighted legacy quantizers: the mean square of the whole row.
fn row_sigma2(src: &[f32]) -> f32 {
    sum_sq(src) / src.len() as f32
}

/// Importance `qw[j] * sqrt(sigma2 + x[j]²)` of each value of a block.
fn block_weights(xb: &[f32], qw: &[f32], sigma2: f32) -> [f32; QK] {
    let mut w = [0.0f32; QK];
    for ((w, &x), &q) in w.iter_mut().zip(xb).zip(qw) {
        *w = q * (sigma2 + x * x).sqrt();
    }
    w
}

/// Packs 32 levels of 0..=15 into nibbles. Like ggml's Q4 quantizers it does not mask the low
/// level (`qs[j] = L[j] | (L[j + 16] << 4)`).
fn pack_nibbles(l: &[u8; QK], qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
}

/// Packs 32 levels of 0..=31: low nibbles into `qs`, fifth bits into the returned `qh`.
fn pack_5bit(l: &[u8; QK], qs: &mut [u8]) -> [u8; 4] {
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        qs[j] = (l[j] & 0x0F) | ((l[j + 16] & 0x0F) << 4);
        qh |= (((l[j] & 0x10) >> 4) as u32) << j;
        qh |= (((l[j + 16] & 0x10) >> 4) as u32) << (j + 16);
    }
    qh.to_le_bytes()
}

/// The 5-bit level of value `j` of a Q5 block from its nibbles and `qh`.
#[inline]
fn level_5bit(qs: &[u8], qh: u32, j: usize) -> i32 {
    let (nib, hi) = if j < 16 {
        (qs[j] & 0x0F, ((qh >> j) << 4) & 0x10)
    } else {
        (qs[j - 16] >> 4, (qh >> (j - 16 + 12)) & 0x10)
    };
    (nib as u32 | hi) as i32
}

/// Q4_0: 4-bit symmetric, `x = d * (q - 8)`.
pub struct Q4_0;

impl TypeCodec for Q4_0 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q4_0
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        const BYTES: usize = 18;
        let blocks = src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES));
        match imatrix {
            None => {
                // quantize_row_q4_0_ref
                for (x, y) in blocks {
                    let d = signed_absmax(x) / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    write_f16(y, 0, d);
                    let mut l = [0u8; QK];
                    for (l, &v) in l.iter_mut().zip(x) {
                        *l = 15.min(to_i8(v * id + 8.5) as i32) as u8;
                    }
                    pack_nibbles(&l, &mut y[2..]);
                }
            }
            Some(qw) => {
                // quantize_row_q4_0_impl
                let sigma2 = row_sigma2(src);
                for ((x, y), qw) in blocks.zip(qw.chunks_exact(QK)) {
                    let w = block_weights(x, qw, sigma2);
                    let mut li = [0i8; QK];
                    let d = make_qx_quants(8, x, &mut li, Some(&w));
                    write_f16(y, 0, d);
                    pack_nibbles(&li.map(|v| v as u8), &mut y[2..]);
                }
            }
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (y, out) in src.chunks_exact(18).zip(dst.chunks_exact_mut(QK)) {
            let d = read_f16(y, 0);
            for j in 0..QK / 2 {
                out[j] = ((y[2 + j] & 0x0F) as i32 - 8) as f32 * d;
                out[j + 16] = ((y[2 + j] >> 4) as i32 - 8) as f32 * d;
            }
        }
    }
}

/// Q4_1: 4-bit with offset, `x = d * q + m`.
pub struct Q4_1;

impl TypeCodec for Q4_1 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q4_1
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        const BYTES: usize = 20;
        let blocks = src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES));
        match imatrix {
            None => {
                // quantize_row_q4_1_ref
                for (x, y) in blocks {
                    let (min, max) = min_max(x);
                    let d = (max - min) / 15.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    write_f16(y, 0, d);
                    write_f16(y, 2, min);
                    let mut l = [0u8; QK];
                    for (l, &v) in l.iter_mut().zip(x) {
                        *l = 15.min(to_i8((v - min) * id + 0.5) as i32) as u8;
                    }
                    pack_nibbles(&l, &mut y[4..]);
                }
            }
            Some(qw) => {
                // quantize_row_q4_1_impl
                let sigma2 = row_sigma2(src);
                for ((x, y), qw) in blocks.zip(qw.chunks_exact(QK)) {
                    let w = block_weights(x, qw, sigma2);
                    let mut l = [0u8; QK];
                    let (d, min) = make_qkx3_quants(15, x, &w, &mut l, QKX3_SEARCH);
                    write_f16(y, 0, d);
                    write_f16(y, 2, -min);
                    pack_nibbles(&l, &mut y[4..]);
                }
            }
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (y, out) in src.chunks_exact(20).zip(dst.chunks_exact_mut(QK)) {
            let d = read_f16(y, 0);
            let m = read_f16(y, 2);
            for j in 0..QK / 2 {
                out[j] = (y[4 + j] & 0x0F) as f32 * d + m;
                out[j + 16] = (y[4 + j] >> 4) as f32 * d + m;
            }
        }
    }
}

/// Q5_0: 5-bit symmetric, `x = d * (q - 16)`.
pub struct Q5_0;

impl TypeCodec for Q5_0 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q5_0
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        const BYTES: usize = 22;
        let blocks = src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES));
        match imatrix {
            None => {
                // quantize_row_q5_0_ref
                for (x, y) in blocks {
                    let d = signed_absmax(x) / -16.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    write_f16(y, 0, d);
                    let mut l = [0u8; QK];
                    for (l, &v) in l.iter_mut().zip(x) {
                        *l = 31.min(to_i8(v * id + 16.5) as i32) as u8;
                    }
                    let qh = pack_5bit(&l, &mut y[6..]);
                    y[2..6].copy_from_slice(&qh);
                }
            }
            Some(qw) => {
                // quantize_row_q5_0_impl
                let sigma2 = row_sigma2(src);
                for ((x, y), qw) in blocks.zip(qw.chunks_exact(QK)) {
                    let w = block_weights(x, qw, sigma2);
                    let mut li = [0i8; QK];
                    let d = make_qx_quants(16, x, &mut li, Some(&w));
                    write_f16(y, 0, d);
                    let qh = pack_5bit(&li.map(|v| v as u8), &mut y[6..]);
                    y[2..6].copy_from_slice(&qh);
                }
            }
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (y, out) in src.chunks_exact(22).zip(dst.chunks_exact_mut(QK)) {
            let d = read_f16(y, 0);
            let qh = u32::from_le_bytes([y[2], y[3], y[4], y[5]]);
            for (j, o) in out.iter_mut().enumerate() {
                *o = (level_5bit(&y[6..], qh, j) - 16) as f32 * d;
            }
        }
    }
}

/// Q5_1: 5-bit with offset, `x = d * q + m`.
pub struct Q5_1;

impl TypeCodec for Q5_1 {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::Q5_1
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        const BYTES: usize = 24;
        let blocks = src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES));
        match imatrix {
            None => {
                // quantize_row_q5_1_ref: note the plain `(uint8_t)` conversion, no clamp to 31.
                for (x, y) in blocks {
                    let (min, max) = min_max(x);
                    let d = (max - min) / 31.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    write_f16(y, 0, d);
                    write_f16(y, 2, min);
                    let mut l = [0u8; QK];
                    for (l, &v) in l.iter_mut().zip(x) {
                        *l = c_float_to_int((v - min) * id + 0.5) as u8;
                    }
                    let qh = pack_5bit(&l, &mut y[8..]);
                    y[4..8].copy_from_slice(&qh);
                }
            }
            Some(qw) => {
                // quantize_row_q5_1_impl
                let sigma2 = row_sigma2(src);
                for ((x, y), qw) in blocks.zip(qw.chunks_exact(QK)) {
                    let w = block_weights(x, qw, sigma2);
                    let mut l = [0u8; QK];
                    let (d, min) = make_qkx3_quants(31, x, &w, &mut l, QKX3_SEARCH);
                    write_f16(y, 0, d);
                    write_f16(y, 2, -min);
                    let qh = pack_5bit(&l, &mut y[8..]);
                    y[4..8].copy_from_slice(&qh);
                }
            }
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (y, out) in src.chunks_exact(24).zip(dst.chunks_exact_mut(QK)) {
            let d = read_f16(y, 0);
            let m = read_f16(y, 2);
            let qh = u32::from_le_bytes([y[4], y[5], y[6], y[7]]);
            for (j, o) in out.iter_mut().enumerate() {
                *o = level_5bit(&y[8..], qh, j) as f32 * d + m;
            }
        }
    }
}
