//! IQ1_S and IQ1_M: ternary (-1, 0, +1 plus a shift) quantization onto ggml's 2048-point grid.
//!
//! Ports ggml's `quantize_iq1_s` / `quantize_row_iq1_s_impl`, `quantize_iq1_m` /
//! `quantize_row_iq1_m_impl`, their helpers `iq1_find_best_neighbour2` and `iq1_sort_helper`
//! (through glibc's `qsort`), and `dequantize_row_iq1_s`, `dequantize_row_iq1_m` (ggml-quants.c;
//! block layouts `block_iq1_s`, `block_iq1_m` in ggml-common.h).

use super::iq2_grid::{grid, Grid, Lattice, Lookup, IQ1S_GRID};
use super::rounding::{f16_bits_to_f32, f32_to_f16_bits, nearest_int};
use super::simd::{build, F32x4};
use super::super_block::{super_blocks, weighted_super_blocks};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK_K;
const IQ1S_DELTA: f32 = 0.125;
const IQ1M_DELTA: f32 = 0.125;
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;
const IQ1S_BLOCK_SIZE: usize = 32;
const IQ1M_BLOCK_SIZE: usize = 16;

const IQ1_S_BYTES: usize = 2 + QK_K / 8 + QK_K / 16;
const IQ1_M_BYTES: usize = QK_K / 8 + QK_K / 16 + QK_K / 32;

/// C's `MAX(a, b)` macro: `a > b ? a : b`.
#[inline]
fn cmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Packs eight levels 0..=2 into a lattice key, level `i` in bits `2i..2i+2`.
#[inline]
fn pack(levels: &[i8]) -> u16 {
    levels
        .iter()
        .enumerate()
        .fold(0u16, |u, (i, &l)| u | ((l as u16) << (2 * i)))
}

/// A super-block's sum of squares (ggml's `sumx2`), accumulated in C's order.
fn sum_sq(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |s, &v| s + v * v)
}

/// ggml sorts `(value, index)` pairs with glibc's `qsort` and `iq1_sort_helper`. For arrays this
/// small glibc 2.36 (the reference build's) runs `msort_with_tmp`: a top-down merge sort that
/// splits at `n / 2` and takes from the left run unless the comparator says left > right. This is
/// that algorithm on indices into `key`, so ties (and even NaNs) land exactly where ggml puts them.
fn glibc_msort(order: &mut [u8], key: &[f32], tmp: &mut [u8]) {
    let n = order.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    {
        let (b1, b2) = order.split_at_mut(n1);
        glibc_msort(b1, key, tmp);
        glibc_msort(b2, key, tmp);
    }
    let (mut i, mut j, mut t) = (0, n1, 0);
    while i < n1 && j < n {
        // iq1_sort_helper(left, right) <= 0
        if key[order[i] as usize] > key[order[j] as usize] {
            tmp[t] = order[j];
            j += 1;
        } else {
            tmp[t] = order[i];
            i += 1;
        }
        t += 1;
    }
    while i < n1 {
        tmp[t] = order[i];
        i += 1;
        t += 1;
    }
    // What is left of the right run is already in place.
    order[..t].copy_from_slice(&tmp[..t]);
}

/// ggml's `iq1_find_best_neighbour2`: the neighbour minimising the weighted squared error of
/// `scale * xg[level]` against `xval`; writes its levels to `levels`, returns its grid index.
fn find_best_neighbour2(
    g: &Grid,
    neighbours: &[u16],
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    xg: &[f32; 3],
    levels: &mut [i8],
) -> u16 {
    // Each term `w*diff*diff` depends only on the coordinate and its level (three choices), not
    // on the neighbour: computed once per (coordinate, level), then each neighbour's sum adds
    // the same values in ggml's order.
    let terms: [[f32; 4]; 8] = build(|i| {
        let t = xg.map(|q| {
            let diff = scale * q - xval[i];
            weight[i] * diff * diff
        });
        [t[0], t[1], t[2], 0.0]
    });
    let mut best_score = f32::MAX;
    let mut best = None;
    for &j in neighbours {
        let pg = g.point(j);
        let mut d2 = 0.0f32;
        for i in 0..8 {
            // coordinates are 2*level + 1 (1, 3, 5); the mask only spares a bounds check
            d2 += terms[i][(pg[i] as usize >> 1) & 3];
        }
        if d2 < best_score {
            best_score = d2;
            best = Some(j);
        }
    }
    // No neighbour scores below FLT_MAX only for non-finite data. ggml then scans the whole grid
    // reading past `xval` (it indexes it by grid index) and aborts if that fails too; gmat takes
    // the first neighbour.
    let best = best.unwrap_or(neighbours[0]);
    for (l, &p) in levels.iter_mut().zip(g.point(best)) {
        *l = (p - 1) / 2;
    }
    best
}

/// Assigns level 0, 1, 2 to the sorted values below `i1`, from `i1` to `i2`, and from `i2` on.
fn split_levels(order: &[u8], i1: usize, i2: usize, l: &mut [i8]) {
    for (j, &o) in order.iter().enumerate() {
        l[o as usize] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
}

// ------------------------------------------------------------------------------------ IQ1_S

/// IQ1_S (1.5625 bpw): per super-block an f16 scale; per group of 32 four 11-bit grid indices, a
/// 3-bit scale and the sign of the shift. ggml requires an importance matrix.
pub struct Iq1S;

/// One super-block of `quantize_row_iq1_s_impl`.
fn quantize_block_iq1_s(g: &Grid, xbl: &[f32], qwbl: &[f32], y: &mut [u8]) {
    const BS: usize = IQ1S_BLOCK_SIZE;
    let x_p = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
    let x_m = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];

    let mut scales = [0.0f32; QK_K / BS];
    let mut shifts = [0i8; QK_K / BS];
    let mut weight = [0.0f32; BS];
    // prefix sums, padded by 3 so that four consecutive entries can always be loaded
    let mut sumx = [0.0f32; BS + 4];
    let mut sumw = [0.0f32; BS + 4];
    let mut order = [0u8; BS];
    let mut tmp = [0u8; BS];
    let mut l = [0i8; BS];
    let mut index = [0u16; BS / 8];
    let mut qh = [0u16; QK_K / BS];

    y.fill(0);
    let (d_bytes, rest) = y.split_at_mut(2);
    let (qs, qh_bytes) = rest.split_at_mut(QK_K / 8);

    let mut max_scale = 0.0f32;
    let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;

    for ib in 0..QK_K / BS {
        let xb = &xbl[BS * ib..BS * (ib + 1)];
        let qw = &qwbl[BS * ib..BS * (ib + 1)];
        for i in 0..BS {
            weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
        }
        let mut max = xb[0].abs();
        for &v in &xb[1..] {
            max = cmax(max, v.abs());
        }
        if max < GROUP_MAX_EPS_IQ1_S {
            scales[ib] = 0.0;
            shifts[ib] = 1;
            continue;
        }
        // Exhaustive search over the two boundaries splitting the sorted values into the three
        // levels, with prefix sums of weight*x and weight.
        for (j, o) in order.iter_mut().enumerate() {
            *o = j as u8;
        }
        glibc_msort(&mut order, xb, &mut tmp);
        for (j, &o) in order.iter().enumerate() {
            let i = o as usize;
            sumx[j + 1] = sumx[j] + weight[i] * xb[i];
            sumw[j + 1] = sumw[j] + weight[i];
        }
        // ggml scores every split (i1, i2) for both shifts, one after another, keeping a
        // candidate when `sumqx^2 > best_score*sumq2` against the best so far. Here four
        // consecutive i2 are scored at once (each lane with ggml's operations); when no lane
        // would pass the test against the current best, none is kept, as in ggml, and only
        // when one would are the four replayed in order with the sequential test.
        let mut best_score = -f32::MAX;
        let mut scale = max;
        let mut best = None;
        let (xp, xm) = (x_p.map(F32x4::splat), x_m.map(F32x4::splat));
        let lane = F32x4::from_array([0.0, 1.0, 2.0, 3.0]);
        let zero = F32x4::splat(0.0);
        for i1 in 0..=BS {
            let (ax, aw) = (sumx[i1] - sumx[0], sumw[i1] - sumw[0]);
            let (sx1, sw1) = (F32x4::splat(sumx[i1]), F32x4::splat(sumw[i1]));
            let (sxn, swn) = (F32x4::splat(sumx[BS]), F32x4::splat(sumw[BS]));
            // ggml: (S1)*v0 + (S2 - S1)*v1 + (Sn - S2)*v2 and the same with v*v, left to right
            let score =
                |xs: &[f32; 3], v: &[F32x4; 3], b: F32x4, c: F32x4, bw: F32x4, cw: F32x4| {
                    let qx = F32x4::splat(ax * xs[0]) + b * v[1] + c * v[2];
                    let q2 = F32x4::splat(aw * xs[0] * xs[0]) + bw * v[1] * v[1] + cw * v[2] * v[2];
                    (qx, q2)
                };
            let mut i2 = i1;
            while i2 <= BS {
                let sx2 = F32x4::load(&sumx[i2..]);
                let sw2 = F32x4::load(&sumw[i2..]);
                let (b, c, bw, cw) = (sx2 - sx1, sxn - sx2, sw2 - sw1, swn - sw2);
                let (qxp, q2p) = score(&x_p, &xp, b, c, bw, cw);
                let (qxm, q2m) = score(&x_m, &xm, b, c, bw, cw);
                let valid = lane.lt(F32x4::splat((BS + 1 - i2) as f32));
                let bs = F32x4::splat(best_score);
                let pass = |qx: F32x4, q2: F32x4| q2.gt(zero) & (qx * qx).gt(bs * q2);
                if ((pass(qxp, q2p) | pass(qxm, q2m)) & valid).bitmask() != 0 {
                    let (qxp, q2p, qxm, q2m) = (
                        qxp.to_array(),
                        q2p.to_array(),
                        qxm.to_array(),
                        q2m.to_array(),
                    );
                    for k in 0..4.min(BS + 1 - i2) {
                        for (sumqx, sumq2, shift) in [(qxp[k], q2p[k], 1i8), (qxm[k], q2m[k], -1)] {
                            if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                                scale = sumqx / sumq2;
                                best_score = scale * sumqx;
                                best = Some((i1, i2 + k, shift));
                            }
                        }
                    }
                }
                i2 += 4;
            }
        }
        let Some((besti1, besti2, mut best_shift)) = best else {
            scales[ib] = 0.0;
            shifts[ib] = 1;
            continue;
        };
        split_levels(&order, besti1, besti2, &mut l);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            best_shift = -best_shift;
        }
        let xx = if best_shift == 1 { &x_p } else { &x_m };
        let mut all_on_grid = true;
        for (k, idx) in index.iter_mut().enumerate() {
            let r = 8 * k..8 * k + 8;
            *idx = match g.lookup(pack(&l[r.clone()])) {
                Lookup::OnGrid(i) => i,
                Lookup::Off(nb) => {
                    all_on_grid = false;
                    let (xv, w) = (&xb[r.clone()], &weight[r.clone()]);
                    find_best_neighbour2(g, nb, xv, w, scale, xx, &mut l[r])
                }
            };
        }
        if !all_on_grid {
            let mut sumqx = 0.0f32;
            let mut sumq2 = 0.0f32;
            for k in 0..BS / 8 {
                let pg = g.point(index[k]);
                for j in 0..8 {
                    let w = weight[8 * k + j];
                    let q = xx[((pg[j] - 1) / 2) as usize];
                    sumqx += w * q * xb[8 * k + j];
                    sumq2 += w * q * q;
                }
            }
            if sumqx > 0.0 && sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        let mut h = 0u16;
        for k in 0..BS / 8 {
            qs[(BS / 8) * ib + k] = (index[k] & 255) as u8;
            h |= (index[k] >> 8) << (3 * k);
        }
        qh[ib] = h;
        scales[ib] = scale;
        shifts[ib] = best_shift;
        max_scale = cmax(max_scale, scale);
    }

    if max_scale != 0.0 {
        let d = max_scale / 15.0;
        // 1.125: ggml's fudge factor.
        d_bytes.copy_from_slice(&f32_to_f16_bits(d * 1.125).to_le_bytes());
        let id = 1.0 / d;
        for ib in 0..QK_K / BS {
            let mut l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7) as u16;
            if shifts[ib] == -1 {
                l |= 8;
            }
            qh[ib] |= l << 12;
        }
    }
    for (out, h) in qh_bytes.chunks_exact_mut(2).zip(qh) {
        out.copy_from_slice(&h.to_le_bytes());
    }
}

impl TypeCodec for Iq1S {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ1_S
    }

    fn requires_imatrix(&self) -> bool {
        true
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        let blocks = weighted_super_blocks(src, imatrix, dst, IQ1_S_BYTES, "IQ1_S");
        let g = grid(Lattice::Iq1);
        for (xbl, qwbl, y) in blocks {
            quantize_block_iq1_s(g, xbl, qwbl, y);
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ1_S_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            let qs = &x[2..2 + QK_K / 8];
            let qh = &x[2 + QK_K / 8..];
            for (ib, y) in y.chunks_exact_mut(32).enumerate() {
                let h = u16::from_le_bytes([qh[2 * ib], qh[2 * ib + 1]]) as usize;
                let dl = d * (2 * ((h >> 12) & 7) + 1) as f32;
                let delta = if h & 0x8000 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                };
                for (l, y) in y.chunks_exact_mut(8).enumerate() {
                    let grid = &IQ1S_GRID[qs[4 * ib + l] as usize | (((h >> (3 * l)) & 7) << 8)];
                    for (v, &q) in y.iter_mut().zip(grid) {
                        *v = dl * (q as f32 + delta);
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------ IQ1_M

/// IQ1_M (1.75 bpw): per group of 16 two 11-bit grid indices, a 3-bit scale and a shift sign per
/// eight; the super-block's f16 scale is spread over the top nibbles of the scales. Importance
/// weights optional.
pub struct Iq1M;

/// One super-block of `quantize_row_iq1_m_impl`.
fn quantize_block_iq1_m(g: &Grid, xbl: &[f32], qwbl: Option<&[f32]>, y: &mut [u8]) {
    const BS: usize = IQ1M_BLOCK_SIZE;
    let x_p = [-1.0 + IQ1M_DELTA, IQ1M_DELTA, 1.0 + IQ1M_DELTA];
    let x_m = [-1.0 - IQ1M_DELTA, -IQ1M_DELTA, 1.0 - IQ1M_DELTA];
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    // The shift of the first and second eight for each sign choice k (0: ++, 1: +-, 2: -+, 3: --).
    let shift_values = |k: usize, half: usize| {
        let plus = if half == 0 {
            k < 2
        } else {
            k.is_multiple_of(2)
        };
        if plus {
            &x_p
        } else {
            &x_m
        }
    };
    let weights_of = |ib: usize, xb: &[f32], sigma2: f32, weight: &mut [f32; BS]| match qwbl {
        Some(qwbl) => {
            let qw = &qwbl[BS * ib..BS * (ib + 1)];
            for i in 0..BS {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..BS {
                weight[i] = xb[i] * xb[i];
            }
        }
    };

    let mut scales = [0.0f32; QK_K / BS];
    let mut shifts = [0usize; QK_K / BS];
    let mut weight = [0.0f32; BS];
    let mut order = [0u8; BS];
    let mut tmp = [0u8; BS];
    let mut l = [0i8; BS];
    let mut index = [0u16; BS / 8];

    y.fill(0);
    let (qs, rest) = y.split_at_mut(QK_K / 8);
    let (qh, sc_bytes) = rest.split_at_mut(QK_K / 16);

    let mut max_scale = 0.0f32;
    let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;

    for ib in 0..QK_K / BS {
        let xb = &xbl[BS * ib..BS * (ib + 1)];
        weights_of(ib, xb, sigma2, &mut weight);
        let mut max = xb[0].abs();
        for &v in &xb[1..] {
            max = cmax(max, v.abs());
        }
        if max < GROUP_MAX_EPS_IQ1_M {
            scales[ib] = 0.0;
            shifts[ib] = 0;
            continue;
        }
        for (j, o) in order.iter_mut().enumerate() {
            *o = j as u8;
        }
        glibc_msort(&mut order, xb, &mut tmp);
        // Prefix sums per half of the group, since each half picks its own shift sign.
        // padded by 3 so that four consecutive entries can always be loaded
        let mut px = [[0.0f32; BS + 4]; 2];
        let mut pw = [[0.0f32; BS + 4]; 2];
        for (j, &o) in order.iter().enumerate() {
            let i = o as usize;
            let h = if i < BS / 2 { 0 } else { 1 };
            px[h][j + 1] = px[h][j] + weight[i] * xb[i];
            px[1 - h][j + 1] = px[1 - h][j];
            pw[h][j + 1] = pw[h][j] + weight[i];
            pw[1 - h][j + 1] = pw[1 - h][j];
        }
        let txs = [px[0][BS], px[1][BS]];
        let tws = [pw[0][BS], pw[1][BS]];
        let (p2, m2) = (x_p[2], x_m[2]);
        let cp1 = x_p[0] * x_p[0] - x_p[1] * x_p[1];
        let cp2 = x_p[1] * x_p[1] - x_p[2] * x_p[2];
        let cm1 = x_m[0] * x_m[0] - x_m[1] * x_m[1];
        let cm2 = x_m[1] * x_m[1] - x_m[2] * x_m[2];
        // As in IQ1_S: four consecutive i2 scored at once, replayed in ggml's order only when
        // one of them would pass the sequential test against the current best.
        let mut best_score = -f32::MAX;
        let mut scale = max;
        let mut best = None;
        let lane = F32x4::from_array([0.0, 1.0, 2.0, 3.0]);
        let zero = F32x4::splat(0.0);
        for i1 in 0..=BS {
            let mut i2 = i1;
            while i2 <= BS {
                let mut qx_p = [zero; 2];
                let mut qx_m = [zero; 2];
                let mut q2_p = [zero; 2];
                let mut q2_m = [zero; 2];
                for h in 0..2 {
                    let sx = F32x4::splat(px[h][i1]) + F32x4::load(&px[h][i2..]);
                    let pw2 = F32x4::load(&pw[h][i2..]);
                    qx_p[h] = F32x4::splat(txs[h] * p2) - sx;
                    qx_m[h] = F32x4::splat(txs[h] * m2) - sx;
                    // ggml: tws*v2*v2 + pw[i1]*c1 + pw[i2]*c2, left to right
                    q2_p[h] =
                        F32x4::splat(tws[h] * p2 * p2 + pw[h][i1] * cp1) + pw2 * F32x4::splat(cp2);
                    q2_m[h] =
                        F32x4::splat(tws[h] * m2 * m2 + pw[h][i1] * cm1) + pw2 * F32x4::splat(cm2);
                }
                let sumqx = [
                    qx_p[0] + qx_p[1],
                    qx_p[0] + qx_m[1],
                    qx_m[0] + qx_p[1],
                    qx_m[0] + qx_m[1],
                ];
                let sumq2 = [
                    q2_p[0] + q2_p[1],
                    q2_p[0] + q2_m[1],
                    q2_m[0] + q2_p[1],
                    q2_m[0] + q2_m[1],
                ];
                let bs = F32x4::splat(best_score);
                let mut pass = zero;
                for k in 0..4 {
                    pass = pass | (sumq2[k].gt(zero) & (sumqx[k] * sumqx[k]).gt(bs * sumq2[k]));
                }
                let valid = lane.lt(F32x4::splat((BS + 1 - i2) as f32));
                if (pass & valid).bitmask() != 0 {
                    let qx = sumqx.map(F32x4::to_array);
                    let q2 = sumq2.map(F32x4::to_array);
                    for j in 0..4.min(BS + 1 - i2) {
                        for k in 0..4 {
                            if q2[k][j] > 0.0 && qx[k][j] * qx[k][j] > best_score * q2[k][j] {
                                scale = qx[k][j] / q2[k][j];
                                best_score = scale * qx[k][j];
                                best = Some((i1, i2 + j, k));
                            }
                        }
                    }
                }
                i2 += 4;
            }
        }
        let Some((besti1, besti2, mut best_k)) = best else {
            scales[ib] = 0.0;
            shifts[ib] = 0;
            continue;
        };
        split_levels(&order, besti1, besti2, &mut l);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            best_k = 3 - best_k;
        }
        let mut all_on_grid = true;
        for (k, idx) in index.iter_mut().enumerate() {
            let xx = shift_values(best_k, k);
            let r = 8 * k..8 * k + 8;
            *idx = match g.lookup(pack(&l[r.clone()])) {
                Lookup::OnGrid(i) => i,
                Lookup::Off(nb) => {
                    all_on_grid = false;
                    let (xv, w) = (&xb[r.clone()], &weight[r.clone()]);
                    find_best_neighbour2(g, nb, xv, w, scale, xx, &mut l[r])
                }
            };
        }
        if !all_on_grid {
            let mut sumqx_f = 0.0f32;
            let mut sumq2_f = 0.0f32;
            for k in 0..BS / 8 {
                let xx = shift_values(best_k, k);
                let pg = g.point(index[k]);
                for j in 0..8 {
                    let w = weight[8 * k + j];
                    let q = xx[((pg[j] - 1) / 2) as usize];
                    sumqx_f += w * q * xb[8 * k + j];
                    sumq2_f += w * q * q;
                }
            }
            if sumqx_f > 0.0 && sumq2_f > 0.0 {
                scale = sumqx_f / sumq2_f;
            }
        }
        qs[2 * ib] = (index[0] & 255) as u8;
        qs[2 * ib + 1] = (index[1] & 255) as u8;
        qh[ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
        scales[ib] = scale;
        shifts[ib] = best_k;
        max_scale = cmax(max_scale, scale);
    }

    if max_scale == 0.0 {
        return;
    }

    // Refit the super-block scale to the chosen grid points and 3-bit group scales.
    let mut sc = [0u16; 4];
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let mut sumqx_f = 0.0f32;
    let mut sumq2_f = 0.0f32;
    for ib in 0..QK_K / BS {
        let ls = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7);
        sc[ib / 4] |= (ls as u16) << (3 * (ib % 4));
        qh[ib] |= MASKS[shifts[ib]];
        let xb = &xbl[BS * ib..BS * (ib + 1)];
        weights_of(ib, xb, sigma2, &mut weight);
        for k in 0..BS / 8 {
            let xx = shift_values(shifts[ib], k);
            let gi = qs[2 * ib + k] as u16 + (((qh[ib] as u16) << (8 - 4 * k)) & 0x700);
            let pg = g.point(gi);
            for j in 0..8 {
                let w = weight[8 * k + j];
                let q = xx[((pg[j] - 1) / 2) as usize] * (2 * ls + 1) as f32;
                sumqx_f += w * q * xb[8 * k + j];
                sumq2_f += w * q * q;
            }
        }
    }
    if sumq2_f > 0.0 {
        d = sumqx_f / sumq2_f;
    }
    // 1.1125: ggml's fudge factor.
    let s = f32_to_f16_bits(d * 1.1125);
    sc[0] |= (s & 0x000f) << 12;
    sc[1] |= (s & 0x00f0) << 8;
    sc[2] |= (s & 0x0f00) << 4;
    sc[3] |= s & 0xf000;
    for (out, v) in sc_bytes.chunks_exact_mut(2).zip(sc) {
        out.copy_from_slice(&v.to_le_bytes());
    }
}

impl TypeCodec for Iq1M {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ1_M
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        let blocks = super_blocks(src, imatrix, dst, IQ1_M_BYTES);
        let g = grid(Lattice::Iq1);
        for (xbl, qwbl, y) in blocks {
            quantize_block_iq1_m(g, xbl, qwbl, y);
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ1_M_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let qs = &x[..QK_K / 8];
            let qh = &x[QK_K / 8..QK_K / 8 + QK_K / 16];
            let scb = &x[QK_K / 8 + QK_K / 16..];
            let sc: [u16; 4] =
                std::array::from_fn(|i| u16::from_le_bytes([scb[2 * i], scb[2 * i + 1]]));
            let scale = (sc[0] >> 12)
                | ((sc[1] >> 8) & 0x00f0)
                | ((sc[2] >> 4) & 0x0f00)
                | (sc[3] & 0xf000);
            let d = f16_bits_to_f32(scale);
            for (ib, y) in y.chunks_exact_mut(32).enumerate() {
                let s = sc[ib / 2] as usize;
                let dl1 = d * (2 * ((s >> (6 * (ib % 2))) & 0x7) + 1) as f32;
                let dl2 = d * (2 * ((s >> (6 * (ib % 2) + 3)) & 0x7) + 1) as f32;
                let (h0, h1) = (qh[2 * ib] as usize, qh[2 * ib + 1] as usize);
                let q = &qs[4 * ib..4 * ib + 4];
                let idx = [
                    q[0] as usize | ((h0 << 8) & 0x700),
                    q[1] as usize | ((h0 << 4) & 0x700),
                    q[2] as usize | ((h1 << 8) & 0x700),
                    q[3] as usize | ((h1 << 4) & 0x700),
                ];
                let delta = |bit: bool| if bit { -IQ1S_DELTA } else { IQ1S_DELTA };
                let deltas = [
                    delta(h0 & 0x08 != 0),
                    delta(h0 & 0x80 != 0),
                    delta(h1 & 0x08 != 0),
                    delta(h1 & 0x80 != 0),
                ];
                for (l, y) in y.chunks_exact_mut(8).enumerate() {
                    let dl = if l < 2 { dl1 } else { dl2 };
                    for (v, &g) in y.iter_mut().zip(&IQ1S_GRID[idx[l]]) {
                        *v = dl * (g as f32 + deltas[l]);
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
    fn iq1_s_matches_ggml() {
        check(GgmlType::IQ1_S);
    }

    #[test]
    fn iq1_m_matches_ggml() {
        check(GgmlType::IQ1_M);
    }

    #[test]
    fn msort_is_stable_on_ties() {
        let key = [0.5f32, -1.0, 0.5, 0.0, -0.0, -1.0, 2.0, 0.5];
        let mut order: [u8; 8] = std::array::from_fn(|i| i as u8);
        let mut tmp = [0u8; 8];
        glibc_msort(&mut order, &key, &mut tmp);
        assert_eq!(order, [1, 5, 3, 4, 0, 2, 7, 6]);
    }
}
