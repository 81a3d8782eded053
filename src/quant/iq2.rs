//! IQ2_XXS, IQ2_XS and IQ2_S: 2-bit quantization onto E8-style lattices.
//!
//! Ports ggml's `quantize_iq2_xxs` / `quantize_row_iq2_xxs_impl`, `quantize_iq2_xs` /
//! `quantize_row_iq2_xs_impl`, `quantize_iq2_s` / `quantize_row_iq2_s_impl`, their helpers
//! `iq2_find_best_neighbour` and `make_qp_quants`, and `dequantize_row_iq2_xxs`,
//! `dequantize_row_iq2_xs`, `dequantize_row_iq2_s` (ggml-quants.c; block layouts `block_iq2_xxs`,
//! `block_iq2_xs`, `block_iq2_s` in ggml-common.h).

use super::iq2_grid::{
    grid, Grid, Lattice, Lookup, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, KMASK_IQ2XS, KSIGNS_IQ2XS,
};
use super::kquant_search::make_qp_quants;
use super::rounding::{f16_bits_to_f32, f32_to_f16_bits, nearest_int};
use super::simd::build;
use super::super_block::{super_blocks, weighted_super_blocks};
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK_K;
const GROUP_MAX_EPS: f32 = 1e-15;
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;
/// ggml's `kMaxQ`: three levels per coordinate.
const K_MAX_Q: i32 = 3;

const IQ2_XXS_BYTES: usize = 2 + QK_K / 4;
const IQ2_XS_BYTES: usize = 2 + QK_K / 4 + QK_K / 32;
const IQ2_S_BYTES: usize = 2 + QK_K / 4 + QK_K / 16;

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

/// Levels of `x * id` for one group of eight: `nearest_int(0.5 * (id * x - 1))` clamped to 0..=2.
#[inline]
fn levels_for(xval: &[f32], id: f32, out: &mut [i8]) {
    for (o, &x) in out.iter_mut().zip(xval) {
        *o = nearest_int(0.5 * (id * x - 1.0)).clamp(0, K_MAX_Q - 1) as i8;
    }
}

/// ggml's `iq2_find_best_neighbour`: the neighbour minimising the weighted squared error at
/// `scale`; writes its levels to `levels` and returns its grid index.
fn find_best_neighbour(
    g: &Grid,
    neighbours: &[u16],
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    levels: &mut [i8],
) -> u16 {
    // Each term `w*diff*diff` depends only on the coordinate and its value (1, 3 or 5), not on
    // the neighbour: computed once per (coordinate, value), then each neighbour's sum adds the
    // same values in ggml's order.
    let terms: [[f32; 4]; 8] = build(|i| {
        [1.0f32, 3.0, 5.0, 7.0].map(|q| {
            let diff = scale * q - xval[i];
            weight[i] * diff * diff
        })
    });
    let mut best_d2 = f32::MAX;
    // ggml aborts when no neighbour scores below FLT_MAX (only non-finite data does that); gmat
    // takes the first neighbour instead.
    let mut best = neighbours[0];
    for &j in neighbours {
        let pg = g.point(j);
        let mut d2 = 0.0f32;
        for i in 0..8 {
            // coordinates are 1, 3, 5; the mask only spares a bounds check
            d2 += terms[i][(pg[i] as usize >> 1) & 3];
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = j;
        }
    }
    for (l, &p) in levels.iter_mut().zip(g.point(best)) {
        *l = (p - 1) / 2;
    }
    best
}

/// Grid index of `levels` (eight of them), searching the neighbours at `scale` when off the grid.
#[inline]
fn snap(g: &Grid, xval: &[f32], waux: &[f32], scale: f32, levels: &mut [i8]) -> (u16, bool) {
    match g.lookup(pack(levels)) {
        Lookup::OnGrid(i) => (i, true),
        Lookup::Off(nb) => (find_best_neighbour(g, nb, xval, waux, scale, levels), false),
    }
}

/// Grid index of levels that are known to be on the grid.
#[inline]
fn on_grid_index(g: &Grid, levels: &[i8]) -> u16 {
    match g.lookup(pack(levels)) {
        Lookup::OnGrid(i) => i,
        // ggml aborts ("found point not on grid"); every level vector reaching here came from
        // the grid or from a neighbour search.
        Lookup::Off(_) => unreachable!("IQ2 levels left the grid"),
    }
}

/// Weighted least-squares numerator and denominator of levels `l` (values 2l+1) against `xval`.
#[inline]
fn sums(weight: &[f32], xval: &[f32], l: &[i8]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for i in 0..weight.len() {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Splits a group of eight into magnitudes and sign bits, flipping the least important value
/// when needed so that an even number of signs is negative (IQ2_XXS/IQ2_XS store seven sign
/// bits; the eighth is the parity). Returns the seven stored bits.
fn even_signs(xb: &[f32], weight: &[f32], xval: &mut [f32]) -> u8 {
    let mut nflip = 0;
    let mut s = 0u8;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if nflip % 2 != 0 {
        let mut imin = 0;
        let mut min = weight[0] * xb[0] * xb[0];
        for i in 1..8 {
            let ax = weight[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

/// A super-block's sum of squares (ggml's `sumx2`), accumulated in C's order.
fn sum_sq(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |s, &v| s + v * v)
}

// ---------------------------------------------------------------------------------- IQ2_XXS

/// IQ2_XXS (2.0625 bpw): per super-block an f16 scale and, per group of 32, four 8-bit grid
/// indices, four 7-bit sign sets and a 4-bit scale. ggml requires an importance matrix.
pub struct Iq2Xxs;

/// One super-block of `quantize_row_iq2_xxs_impl`.
fn quantize_block_iq2_xxs(g: &Grid, xbl: &[f32], qwbl: &[f32], y: &mut [u8]) {
    let mut scales = [0.0f32; QK_K / 32];
    let mut weight = [0.0f32; 32];
    let mut xval = [0.0f32; 32];
    let mut l = [0i8; 32];
    let mut laux = [0i8; 32];
    let mut waux = [0.0f32; 32];
    let mut block_signs = [0u8; 4];
    let mut q2 = [0u32; 2 * (QK_K / 32)];

    let mut max_scale = 0.0f32;
    let sigma2 = sum_sq(xbl) / QK_K as f32;

    for ib in 0..QK_K / 32 {
        let xb = &xbl[32 * ib..32 * ib + 32];
        let qw = &qwbl[32 * ib..32 * ib + 32];
        for i in 0..32 {
            weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            waux[i] = weight[i].sqrt();
        }
        for (k, signs) in block_signs.iter_mut().enumerate() {
            let r = 8 * k..8 * k + 8;
            *signs = even_signs(&xb[r.clone()], &weight[r.clone()], &mut xval[r]);
        }
        let mut max = xval[0];
        for &v in &xval[1..] {
            max = cmax(max, v);
        }
        if max < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut lq = [0u8; 32];
        let mut scale = make_qp_quants(K_MAX_Q + 1, &xval, &mut lq, &weight);
        for (d, s) in l.iter_mut().zip(lq) {
            *d = s as i8;
        }
        let eff_max = scale * K_MAX_Q as f32;
        if eff_max <= 0.0 {
            scales[ib] = 0.0;
            continue;
        }
        let mut best = 0.0f32;
        for is in -6i32..=6 {
            let id = ((2 * K_MAX_Q - 1) as f32 + is as f32 * 0.1) / eff_max;
            let this_scale = 1.0 / id;
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                levels_for(&xval[r.clone()], id, &mut laux[r.clone()]);
                snap(
                    g,
                    &xval[r.clone()],
                    &waux[r.clone()],
                    this_scale,
                    &mut laux[r],
                );
            }
            let (sumqx, sumq2) = sums(&weight, &xval, &laux);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                l = laux;
            }
        }
        if scale > 0.0 {
            let id = 1.0 / scale;
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                levels_for(&xval[r.clone()], id, &mut l[r.clone()]);
                let (gi, _) = snap(
                    g,
                    &xval[r.clone()],
                    &waux[r.clone()],
                    scale,
                    &mut l[r.clone()],
                );
                for (d, &p) in l[r].iter_mut().zip(g.point(gi)) {
                    *d = (p - 1) / 2;
                }
            }
            let (sumqx, sumq2) = sums(&weight, &xval, &l);
            if sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        if scale < 0.0 {
            // ggml: "should never happen"; flip the scale and the signs.
            scale = -scale;
            for s in &mut block_signs {
                *s = !*s & 127;
            }
        }
        for k in 0..4 {
            let gi = on_grid_index(g, &l[8 * k..8 * k + 8]);
            q2[2 * ib] |= (gi as u32) << (8 * k);
            q2[2 * ib + 1] |= (block_signs[k] as u32) << (7 * k);
        }
        scales[ib] = scale;
        max_scale = cmax(max_scale, scale);
    }

    y.fill(0);
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
    let id = 1.0 / d;
    for (ib, &s) in scales.iter().enumerate() {
        let l = nearest_int(0.5 * (id * s - 1.0)).clamp(0, 15);
        q2[2 * ib + 1] |= (l as u32) << 28;
    }
    for (out, q) in y[2..].chunks_exact_mut(4).zip(q2) {
        out.copy_from_slice(&q.to_le_bytes());
    }
}

impl TypeCodec for Iq2Xxs {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ2_XXS
    }

    fn requires_imatrix(&self) -> bool {
        true
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        let blocks = weighted_super_blocks(src, imatrix, dst, IQ2_XXS_BYTES, "IQ2_XXS");
        let g = grid(Lattice::Iq2Xxs);
        for (xbl, qwbl, y) in blocks {
            quantize_block_iq2_xxs(g, xbl, qwbl, y);
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ2_XXS_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            for (q, y) in x[2..].chunks_exact(8).zip(y.chunks_exact_mut(32)) {
                let aux0 = &q[..4];
                let aux1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
                let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
                for (l, y) in y.chunks_exact_mut(8).enumerate() {
                    let grid = &IQ2XXS_GRID[aux0[l] as usize];
                    let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                    for j in 0..8 {
                        let sign = if signs & KMASK_IQ2XS[j] != 0 {
                            -1.0
                        } else {
                            1.0
                        };
                        y[j] = db * grid[j] as f32 * sign;
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------- IQ2_XS and IQ2_S

/// The scale search IQ2_XS and IQ2_S share for one group of 16 (two grid points), from the
/// `is` loop to the refit of off-grid points. Writes the levels to `l` (which must start zeroed)
/// and returns the scale, which may come out negative.
fn search_group_16(
    g: &Grid,
    xval: &[f32; 16],
    weight: &[f32; 16],
    waux: &[f32; 16],
    max: f32,
    l: &mut [i8; 16],
) -> f32 {
    let mut laux = [0i8; 16];
    let mut best = 0.0f32;
    let mut scale = max / (2 * K_MAX_Q - 1) as f32;
    let mut is_on_grid = [true; 2];
    let mut is_on_grid_aux = [true; 2];
    for is in -9i32..=9 {
        let id = ((2 * K_MAX_Q - 1) as f32 + is as f32 * 0.1) / max;
        let this_scale = 1.0 / id;
        for (k, on_grid) in is_on_grid_aux.iter_mut().enumerate() {
            let r = 8 * k..8 * k + 8;
            levels_for(&xval[r.clone()], id, &mut laux[r.clone()]);
            (_, *on_grid) = snap(
                g,
                &xval[r.clone()],
                &waux[r.clone()],
                this_scale,
                &mut laux[r],
            );
        }
        let (sumqx, sumq2) = sums(weight, xval, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            *l = laux;
            is_on_grid = is_on_grid_aux;
        }
    }
    if is_on_grid.contains(&false) && scale > 0.0 {
        let id = 1.0 / scale;
        for (k, &on_grid) in is_on_grid.iter().enumerate() {
            if on_grid {
                continue;
            }
            let r = 8 * k..8 * k + 8;
            levels_for(&xval[r.clone()], id, &mut l[r.clone()]);
            snap(g, &xval[r.clone()], &waux[r.clone()], scale, &mut l[r]);
        }
        let (sumqx, sumq2) = sums(weight, xval, l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// Final super-block scale and the 4-bit group scales, as IQ2_XS and IQ2_S write them.
fn group_scales_4bit(scales: &[f32; QK_K / 16], d: f32, out: &mut [u8]) {
    let id = 1.0 / d;
    for (ib, &s) in scales.iter().enumerate() {
        let l = nearest_int(0.5 * (id * s - 1.0)).clamp(0, 15) as u8;
        if ib % 2 == 0 {
            out[ib / 2] = l;
        } else {
            out[ib / 2] |= l << 4;
        }
    }
}

/// IQ2_XS (2.3125 bpw): per super-block an f16 scale; per group of 16 two 9-bit grid indices
/// with seven sign bits each and a 4-bit scale. ggml requires an importance matrix.
pub struct Iq2Xs;

/// One super-block of `quantize_row_iq2_xs_impl`.
fn quantize_block_iq2_xs(g: &Grid, xbl: &[f32], qwbl: &[f32], y: &mut [u8]) {
    let mut scales = [0.0f32; QK_K / 16];
    let mut weight = [0.0f32; 16];
    let mut xval = [0.0f32; 16];
    let mut waux = [0.0f32; 16];
    let mut block_signs = [0u8; 2];
    let mut q2 = [0u16; 2 * (QK_K / 16)];

    let mut max_scale = 0.0f32;
    let sigma2 = sum_sq(xbl) / QK_K as f32;

    for ib in 0..QK_K / 16 {
        let xb = &xbl[16 * ib..16 * ib + 16];
        let qw = &qwbl[16 * ib..16 * ib + 16];
        for i in 0..16 {
            weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            waux[i] = weight[i].sqrt();
        }
        for (k, signs) in block_signs.iter_mut().enumerate() {
            let r = 8 * k..8 * k + 8;
            *signs = even_signs(&xb[r.clone()], &weight[r.clone()], &mut xval[r]);
        }
        let mut max = xval[0];
        for &v in &xval[1..] {
            max = cmax(max, v);
        }
        let mut l = [0i8; 16];
        if max < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut scale = search_group_16(g, &xval, &weight, &waux, max, &mut l);
        if scale < 0.0 {
            scale = -scale;
            for s in &mut block_signs {
                *s = !*s & 127;
            }
        }
        for k in 0..2 {
            let gi = on_grid_index(g, &l[8 * k..8 * k + 8]);
            q2[2 * ib + k] = gi | ((block_signs[k] as u16) << 9);
        }
        scales[ib] = scale;
        max_scale = cmax(max_scale, scale);
    }

    y.fill(0);
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
    group_scales_4bit(&scales, d, &mut y[2 + QK_K / 4..]);
    for (out, q) in y[2..2 + QK_K / 4].chunks_exact_mut(2).zip(q2) {
        out.copy_from_slice(&q.to_le_bytes());
    }
}

impl TypeCodec for Iq2Xs {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ2_XS
    }

    fn requires_imatrix(&self) -> bool {
        true
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        let blocks = weighted_super_blocks(src, imatrix, dst, IQ2_XS_BYTES, "IQ2_XS");
        let g = grid(Lattice::Iq2Xs);
        for (xbl, qwbl, y) in blocks {
            quantize_block_iq2_xs(g, xbl, qwbl, y);
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ2_XS_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            let qs = &x[2..2 + QK_K / 4];
            let sc = &x[2 + QK_K / 4..];
            for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
                let db = [
                    d * (0.5 + (sc[ib32] & 0xf) as f32) * 0.25,
                    d * (0.5 + (sc[ib32] >> 4) as f32) * 0.25,
                ];
                for (l, y) in y.chunks_exact_mut(8).enumerate() {
                    let o = 2 * (4 * ib32 + l);
                    let q = u16::from_le_bytes([qs[o], qs[o + 1]]);
                    let grid = &IQ2XS_GRID[(q & 511) as usize];
                    let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                    for j in 0..8 {
                        let sign = if signs & KMASK_IQ2XS[j] != 0 {
                            -1.0
                        } else {
                            1.0
                        };
                        y[j] = db[l / 2] * grid[j] as f32 * sign;
                    }
                }
            }
        }
    }
}

/// IQ2_S (2.5625 bpw): per super-block an f16 scale; per group of 16 two 10-bit grid indices
/// with eight explicit sign bits each and a 4-bit scale. Importance weights optional.
pub struct Iq2S;

/// One super-block of `quantize_row_iq2_s_impl`.
fn quantize_block_iq2_s(g: &Grid, xbl: &[f32], qwbl: Option<&[f32]>, y: &mut [u8]) {
    let mut scales = [0.0f32; QK_K / 16];
    let mut weight = [0.0f32; 16];
    let mut xval = [0.0f32; 16];
    let mut waux = [0.0f32; 16];
    let mut block_signs = [0u8; 2];

    y.fill(0);
    let (d_bytes, rest) = y.split_at_mut(2);
    let (qs, rest) = rest.split_at_mut(QK_K / 4);
    let (qh, y_scales) = rest.split_at_mut(QK_K / 32);

    let mut max_scale = 0.0f32;
    let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;

    for ib in 0..QK_K / 16 {
        let xb = &xbl[16 * ib..16 * ib + 16];
        match qwbl {
            Some(qwbl) => {
                let qw = &qwbl[16 * ib..16 * ib + 16];
                for i in 0..16 {
                    weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
                }
            }
            None => {
                for i in 0..16 {
                    weight[i] = 0.25 * sigma2 + xb[i] * xb[i];
                }
            }
        }
        for i in 0..16 {
            waux[i] = weight[i].sqrt();
        }
        for k in 0..2 {
            let mut s = 0u8;
            for i in 0..8 {
                let v = xb[8 * k + i];
                if v >= 0.0 {
                    xval[8 * k + i] = v;
                } else {
                    xval[8 * k + i] = -v;
                    s |= 1 << i;
                }
            }
            block_signs[k] = s;
        }
        let mut max = xval[0];
        for &v in &xval[1..] {
            max = cmax(max, v);
        }
        let mut l = [0i8; 16];
        if max < GROUP_MAX_EPS_IQ2_S {
            scales[ib] = 0.0;
            continue;
        }
        let mut scale = search_group_16(g, &xval, &weight, &waux, max, &mut l);
        if scale < 0.0 {
            scale = -scale;
            for s in &mut block_signs {
                *s = !*s;
            }
        }
        for k in 0..2 {
            let gi = on_grid_index(g, &l[8 * k..8 * k + 8]);
            let i8 = 2 * ib + k;
            qs[i8] = (gi & 255) as u8;
            qh[i8 / 4] |= ((gi >> 8) << (2 * (i8 % 4))) as u8;
            qs[QK_K / 8 + i8] = block_signs[k];
        }
        scales[ib] = scale;
        max_scale = cmax(max_scale, scale);
    }

    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    d_bytes.copy_from_slice(&f32_to_f16_bits(d * 0.9875).to_le_bytes());
    group_scales_4bit(&scales, d, y_scales);
}

impl TypeCodec for Iq2S {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ2_S
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        let blocks = super_blocks(src, imatrix, dst, IQ2_S_BYTES);
        let g = grid(Lattice::Iq2S);
        for (xbl, qwbl, y) in blocks {
            quantize_block_iq2_s(g, xbl, qwbl, y);
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ2_S_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            let qs = &x[2..2 + QK_K / 8];
            let signs = &x[2 + QK_K / 8..2 + QK_K / 4];
            let qh = &x[2 + QK_K / 4..2 + QK_K / 4 + QK_K / 32];
            let sc = &x[2 + QK_K / 4 + QK_K / 32..];
            for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
                let db = [
                    d * (0.5 + (sc[ib32] & 0xf) as f32) * 0.25,
                    d * (0.5 + (sc[ib32] >> 4) as f32) * 0.25,
                ];
                for (l, y) in y.chunks_exact_mut(8).enumerate() {
                    let dl = db[l / 2];
                    let index =
                        qs[4 * ib32 + l] as usize | (((qh[ib32] as usize) << (8 - 2 * l)) & 0x300);
                    let grid = &IQ2S_GRID[index];
                    let s = signs[4 * ib32 + l];
                    for j in 0..8 {
                        let sign = if s & KMASK_IQ2XS[j] != 0 { -1.0 } else { 1.0 };
                        y[j] = dl * grid[j] as f32 * sign;
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
    fn iq2_xxs_matches_ggml() {
        check(GgmlType::IQ2_XXS);
    }

    #[test]
    fn iq2_xs_matches_ggml() {
        check(GgmlType::IQ2_XS);
    }

    #[test]
    fn iq2_s_matches_ggml() {
        check(GgmlType::IQ2_S);
    }
}
