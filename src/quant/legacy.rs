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

use std::slice::ChunksExactMut;

use super::kquant_search::{
    lanes_to_array, levels_from_lanes, make_qx_quants_v, min_search_lanes, read_f16, sum_sq,
    to_lanes, write_f16, Lanes, MinSearch,
};
use super::simd8::{self, build, F8, I8};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK_LEGACY as QK;

/// The `make_qkx3_quants` tuning of the weighted Q4_1/Q5_1 quantizers (`-0.9f, 0.05f, 36,
/// false` in `quantize_row_q{4,5}_1_impl`).
const QKX3_SEARCH: MinSearch = MinSearch {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// A block of 32 as four vectors, `v[m]` = values `8m..8m+8`.
#[inline(always)]
fn block_vectors<V: F8>(x: &[f32]) -> [V; 4] {
    let x = &x[..QK];
    build(|m| V::load(&x[8 * m..]))
}

/// The value of largest magnitude (the first one on ties), as the `_0` quantizers find it:
/// `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` over the block in order.
///
/// That loop ends with `amax` = the largest magnitude that is not NaN (0 if there is none, and
/// then `max` stays 0) and `max` = the first value with that magnitude. The largest magnitude
/// is found per lane with `maxps(|v|, m)` (`|v| > m ? |v| : m`, which skips NaNs like ggml's
/// test) and then across lanes, which for NaN-free maxima is order-independent; the first
/// value with that magnitude is then located with a mask over the block.
#[inline(always)]
fn signed_absmax<V: F8>(x: &[f32], v: &[V; 4]) -> f32 {
    let a: [V; 4] = build(|m| v[m].abs());
    // NaN-free accumulators (a NaN lane only ever enters as the first operand of maxps, which
    // then keeps the accumulator)
    let (mut m0, mut m1) = (V::splat(0.0), V::splat(0.0));
    for k in 0..2 {
        m0 = a[k].max(m0);
        m1 = a[k + 2].max(m1);
    }
    let top = m0.max(m1).hmax();
    if top == 0.0 {
        return 0.0; // nothing passed `amax < |v|`: ggml's max stays 0
    }
    let mut at_top = 0u32;
    for (m, am) in a.iter().enumerate() {
        at_top |= am.eq(V::splat(top)).bitmask() << (8 * m);
    }
    x[at_top.trailing_zeros() as usize]
}

/// [`signed_absmax`] one value after another, as ggml (its specification; see the tests).
#[cfg(test)]
fn signed_absmax_scalar(x: &[f32]) -> f32 {
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

/// `(min, max)` of a block as the `_1` quantizers scan it, starting from `FLT_MAX`/`-FLT_MAX`
/// with `if (v < min) min = v; if (v > max) max = v;`.
///
/// `minps`/`maxps` are exactly those conditional updates, per lane. Equal floats have equal
/// bits except +0/-0, so only a zero extreme (ggml keeps the first zero it meets) can depend on
/// the order between lanes; when the lanes' zeros disagree the block is scanned again in order.
#[inline(always)]
fn min_max<V: F8>(x: &[f32], v: &[V; 4]) -> (f32, f32) {
    let mut mn = V::splat(f32::MAX);
    let mut mx = V::splat(-f32::MAX);
    for &vm in v {
        mn = vm.min(mn);
        mx = vm.max(mx);
    }
    // Lanes are never NaN (a NaN never passes `v < min` / `v > max`).
    let (min, max) = (mn.hmin(), mx.hmax());
    if min == 0.0 || max == 0.0 {
        let zero = V::splat(0.0);
        let mixed = |lanes: V| {
            let z = lanes.eq(zero).bitmask();
            let neg = lanes.bitmask() & z;
            neg != 0 && neg != z
        };
        if mixed(mn) || mixed(mx) {
            return min_max_scalar(x);
        }
        // all zero lanes agree: take the zero's sign from them
        let sign_of = |lanes: V, e: f32| {
            if e == 0.0 && lanes.eq(zero).bitmask() & lanes.bitmask() != 0 {
                -0.0
            } else if e == 0.0 {
                0.0
            } else {
                e
            }
        };
        return (sign_of(mn, min), sign_of(mx, max));
    }
    (min, max)
}

/// [`min_max`] one value after another, as ggml.
#[cold]
fn min_max_scalar(x: &[f32]) -> (f32, f32) {
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

/// The bytes `(uint8_t)(int8_t)f` of C for 32 floats (`f[m]` = values `8m..8m+8`), in order:
/// the `(int8_t)` of a float is `cvttss2si` and the low byte.
#[inline(always)]
fn levels_u8<V: F8>(f: [V; 4]) -> [u8; QK] {
    let mut out = [0u8; QK];
    for (o, f) in out.chunks_exact_mut(8).zip(f) {
        o.copy_from_slice(&f.to_i32_trunc().low_bytes());
    }
    out
}

/// The Q4 reference quantizers' `MIN(hi, (int8_t)f)` levels of 32 floats, packed into nibbles
/// as ggml packs them, without masking the low level: `qs[j] = L[j] | (L[j + 16] << 4)` in
/// `uint8_t`. In 32-bit lanes: the `(int8_t)` is the sign-extended low byte of the truncation,
/// and the low byte of `l0 | (l1 << 4)` is that `uint8_t` expression.
#[inline(always)]
fn pack_q4_ref<V: F8>(f: [V; 4], hi: i32, qs: &mut [u8]) {
    let hi = V::I::splat(hi);
    let l: [V::I; 4] = build(|m| f[m].to_i32_trunc().sext8().min(hi));
    qs[..8].copy_from_slice(&l[0].or(l[2].shl4()).low_bytes());
    qs[8..16].copy_from_slice(&l[1].or(l[3].shl4()).low_bytes());
}

/// The bytes `MIN(hi, (int8_t)f)` of C for 32 floats, in order (the Q5 reference quantizers).
#[inline(always)]
fn levels_min_i8<V: F8>(f: [V; 4], hi: i32) -> [u8; QK] {
    let hi = V::I::splat(hi);
    let mut out = [0u8; QK];
    for (o, f) in out.chunks_exact_mut(8).zip(f) {
        o.copy_from_slice(&f.to_i32_trunc().sext8().min(hi).low_bytes());
    }
    out
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

/// The reference `_0` quantizers (`quantize_row_q{4,5}_0_ref`) up to the levels: `d = max /
/// -half` from the block's [`signed_absmax`], written as the block's f16 scale, and the float
/// levels `x * (1/d) + (half + 0.5)`. What follows (clamping to the bit width, packing) is the
/// part where Q4_0 and Q5_0 differ, so the caller does it.
#[inline(always)]
fn symmetric_ref_levels<V: F8>(x: &[f32], y: &mut [u8], half: f32) -> [V; 4] {
    let v = block_vectors::<V>(x);
    let d = signed_absmax(x, &v) / -half;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, 0, d);
    let (id, add) = (V::splat(id), V::splat(half + 0.5));
    build(|m| v[m] * id + add)
}

/// The reference `_1` quantizers (`quantize_row_q{4,5}_1_ref`) up to the levels: `d = (max -
/// min) / nmax`, written with `min` as the block's header, and the float levels `(x - min) *
/// (1/d) + 0.5`. The caller converts them to bytes, which Q4_1 (clamped to 15) and Q5_1 (a
/// plain `(uint8_t)` cast) do differently, and packs them.
#[inline(always)]
fn affine_ref_levels<V: F8>(x: &[f32], y: &mut [u8], nmax: f32) -> [V; 4] {
    let v = block_vectors::<V>(x);
    let (min, max) = min_max(x, &v);
    let d = (max - min) / nmax;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, 0, d);
    write_f16(y, 2, min);
    let (min, id, half) = (V::splat(min), V::splat(id), V::splat(0.5));
    build(|m| (v[m] - min) * id + half)
}

/// The weighted `_0` quantizers (`quantize_row_q{4,5}_0_impl`) up to the packing: for each
/// block of 32, in order, finds `d` and the levels of `make_qx_quants(32, nmax, x, L, 1,
/// weight)` with ggml's weights `qw[j] * sqrt(sigma2 + x[j]^2)`, writes `d` as the header of the
/// block's bytes in `out` and hands that block and the levels to `pack`, the one step
/// where Q4_0 and Q5_0 differ.
#[inline(always)]
fn qx_blocks<V: F8>(
    src: &[f32],
    qw: &[f32],
    nmax: i32,
    out: ChunksExactMut<'_, u8>,
    mut pack: impl FnMut(&mut [u8], &[u8; QK]),
) {
    let blocks = src.chunks_exact(QK).zip(out);
    let sigma2 = row_sigma2(src);
    for ((x, y), qw) in blocks.zip(qw.chunks_exact(QK)) {
        let w = block_weights(x, qw, sigma2);
        let mut li = [0i8; QK];
        let d = make_qx_quants_v::<V>(nmax, x, &mut li, Some(&w));
        write_f16(y, 0, d);
        pack(y, &li.map(|v| v as u8));
    }
}

/// The weighted `_1` quantizers (`quantize_row_q{4,5}_1_impl`) up to the packing: for each
/// block of 32, in order, finds `d`, `the_min` and the levels of `make_qkx3_quants(32, nmax, x,
/// weight, L, &the_min, ...)` with ggml's weights `qw[j] * sqrt(sigma2 + x[j]^2)`, writes `d`
/// and `-the_min` as the header of the block's bytes in `out` and hands that block and
/// the levels to `pack`, the one step where Q4_1 and Q5_1 differ.
///
/// The blocks are independent, so eight at a time run side by side, one per lane
/// ([`min_search_lanes`]); a last group of fewer than eight is padded with zero blocks, whose
/// lanes finish at once and are dropped.
#[inline(always)]
fn qkx3_blocks<V: F8>(
    src: &[f32],
    qw: &[f32],
    nmax: i32,
    mut out: ChunksExactMut<'_, u8>,
    mut pack: impl FnMut(&mut [u8], &[u8; QK]),
) {
    const G: usize = 8;
    let sigma2 = V::splat(row_sigma2(src));
    let nb = src.len() / QK;
    let mut b0 = 0;
    while b0 < nb {
        let n = G.min(nb - b0);
        let (mut xp, mut qp) = ([0.0f32; G * QK], [0.0f32; G * QK]);
        xp[..n * QK].copy_from_slice(&src[b0 * QK..(b0 + n) * QK]);
        qp[..n * QK].copy_from_slice(&qw[b0 * QK..(b0 + n) * QK]);
        let xt: Lanes<V, 1, QK> = to_lanes(&xp);
        let qt: Lanes<V, 1, QK> = to_lanes(&qp);
        let weights: Lanes<V, 1, QK> =
            build(|i| [qt[i][0] * (sigma2 + xt[i][0] * xt[i][0]).sqrt()]);
        let mut lt = [[V::splat(0.0); 1]; QK];
        let (d, m) = min_search_lanes(nmax, &xt, &weights, QKX3_SEARCH, true, &mut lt);
        let mut l = [0u8; G * QK];
        levels_from_lanes(&lt, &mut l);
        let (d, m): ([f32; G], [f32; G]) = (lanes_to_array(&d), lanes_to_array(&m));
        for k in 0..n {
            let (d, m) = (d[k], m[k]);
            let y = out.next().expect("one output block per input block");
            write_f16(y, 0, d);
            write_f16(y, 2, -m);
            pack(y, l[k * QK..(k + 1) * QK].try_into().unwrap());
        }
        b0 += n;
    }
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
        match imatrix {
            None => {
                simd8::dispatch!(V => {
                    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
                        pack_q4_ref(symmetric_ref_levels::<V>(x, y, 8.0), 15, &mut y[2..]);
                    }
                })
            }
            Some(qw) => simd8::dispatch!(V => qx_blocks::<V>(
                src,
                qw,
                8,
                dst.chunks_exact_mut(BYTES),
                #[inline(always)]
                |y, l| pack_nibbles(l, &mut y[2..])
            )),
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
        match imatrix {
            None => {
                simd8::dispatch!(V => {
                    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
                        pack_q4_ref(affine_ref_levels::<V>(x, y, 15.0), 15, &mut y[4..]);
                    }
                })
            }
            Some(qw) => simd8::dispatch!(V => qkx3_blocks::<V>(
                src,
                qw,
                15,
                dst.chunks_exact_mut(BYTES),
                #[inline(always)]
                |y, l| pack_nibbles(l, &mut y[4..])
            )),
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
        let pack = |y: &mut [u8], l: &[u8; QK]| {
            let qh = pack_5bit(l, &mut y[6..]);
            y[2..6].copy_from_slice(&qh);
        };
        match imatrix {
            None => {
                simd8::dispatch!(V => {
                    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
                        let l = levels_min_i8(symmetric_ref_levels::<V>(x, y, 16.0), 31);
                        pack(y, &l);
                    }
                })
            }
            Some(qw) => {
                simd8::dispatch!(V => qx_blocks::<V>(src, qw, 16, dst.chunks_exact_mut(BYTES), pack))
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
        let pack = |y: &mut [u8], l: &[u8; QK]| {
            let qh = pack_5bit(l, &mut y[8..]);
            y[4..8].copy_from_slice(&qh);
        };
        match imatrix {
            None => {
                simd8::dispatch!(V => {
                    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
                        // quantize_row_q5_1_ref converts with a plain `(uint8_t)`, no clamp to 31.
                        let l = levels_u8(affine_ref_levels::<V>(x, y, 31.0));
                        pack(y, &l);
                    }
                })
            }
            Some(qw) => {
                simd8::dispatch!(V => qkx3_blocks::<V>(src, qw, 31, dst.chunks_exact_mut(BYTES), pack))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_extremes_equal_the_sequential_scans() {
        let specials = [
            0.0f32,
            -0.0,
            1.5,
            -1.5,
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            1e-40,
            -3.0,
            3.0,
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        fn check<V: F8>(x: &[f32; QK]) {
            let v = block_vectors::<V>(x);
            assert_eq!(
                signed_absmax(x, &v).to_bits(),
                signed_absmax_scalar(x).to_bits(),
                "{x:?}"
            );
            let (a, b) = min_max(x, &v);
            let (c, d) = min_max_scalar(x);
            assert_eq!(
                (a.to_bits(), b.to_bits()),
                (c.to_bits(), d.to_bits()),
                "{x:?}"
            );
        }
        for _ in 0..20000 {
            let x: [f32; QK] =
                std::array::from_fn(|_| specials[(next() % specials.len() as u64) as usize]);
            for p in simd8::Path::available() {
                simd8::with_path(p, || simd8::dispatch!(V => check::<V>(&x)));
            }
        }
    }
}
