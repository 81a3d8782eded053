//! IQ3_XXS and IQ3_S: 3-bit quants on a D4-lattice grid (`block_iq3_xxs`, `block_iq3_s` in
//! ggml-common.h).
//!
//! Ports of ggml's `quantize_iq3_xxs` / `quantize_row_iq3_xxs_impl`, `quantize_iq3_s` /
//! `quantize_row_iq3_s_impl`, `iq3_find_best_neighbour`, `dequantize_row_iq3_xxs` and
//! `dequantize_row_iq3_s` (ggml/src/ggml-quants.c). The grids and neighbour maps are in
//! [`super::iq3_grid`].

use super::iq2_grid::KSIGNS_IQ2XS;
use super::iq3_grid::{iq3s_data, iq3xxs_data, Iq3Data, Lookup, IQ3S_GRID, IQ3XXS_GRID};
use super::rounding::{f16_bits_to_f32, f32_to_f16_bits, nearest_int};
use super::simd::build;
use super::{GgmlType, TypeCodec};

use crate::gguf::ggml_type::QK_K;
const IQ3XXS_BLOCK_BYTES: usize = 98;
const IQ3S_BLOCK_BYTES: usize = 110;
/// ggml's `kMaxQ` for both IQ3 types.
const K_MAX_Q: i32 = 8;
/// ggml's `GROUP_MAX_EPS_IQ3_XXS`.
const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;

/// C's `MAX(a, b)` (`a > b ? a : b`).
#[inline]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Packs four 3-bit levels, level 0 lowest (the `u` of the quantizers).
#[inline]
fn pack(l: &[i8]) -> u16 {
    l.iter()
        .enumerate()
        .fold(0u16, |u, (i, &v)| u | ((v as u16) << (3 * i)))
}

/// Port of `iq3_find_best_neighbour`: the neighbour minimising the weighted squared error at
/// `scale`; writes its levels to `l` and returns its index. ggml asserts that one is found (it
/// is unless every distance is NaN); this port then keeps the first neighbour.
fn find_best_neighbour(
    neighbours: &[u16],
    data: &Iq3Data,
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    l: &mut [i8],
) -> usize {
    // Each term `w*diff*diff` depends only on the coordinate and its value (1, 3, ..., 15),
    // not on the neighbour: computed once per (coordinate, value), then each neighbour's sum
    // adds the same values in ggml's order.
    let terms: [[f32; 8]; 4] = build(|i| {
        build(|k| {
            let diff = scale * (2 * k + 1) as f32 - xval[i];
            weight[i] * diff * diff
        })
    });
    let mut best_d2 = f32::MAX;
    let mut grid_index = neighbours[0] as usize;
    for &j in neighbours {
        let pg = data.point(j as usize);
        let mut d2 = 0.0f32;
        for i in 0..4 {
            // the mask only spares a bounds check
            d2 += terms[i][(pg[i] as usize >> 1) & 7];
        }
        if d2 < best_d2 {
            best_d2 = d2;
            grid_index = j as usize;
        }
    }
    let pg = data.point(grid_index);
    for i in 0..4 {
        l[i] = ((pg[i] - 1) / 2) as i8;
    }
    grid_index
}

/// ggml's weighted sums `sum w*x*q` and `sum w*q*q` with `q = 2*L + 1`.
#[inline]
fn weighted_sums(weight: &[f32; 32], xval: &[f32; 32], l: &[i8; 32]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for i in 0..32 {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// How the two IQ3 quantizers differ in their search of one block of 32.
struct Search {
    data: &'static Iq3Data,
    /// Scale steps tried are `-nstep..=nstep` (15 for IQ3_XXS, 9 for IQ3_S).
    nstep: i32,
    /// IQ3_S re-rounds every group after the search; IQ3_XXS only those off the grid (and so
    /// starts with all groups marked on the grid).
    refit_all: bool,
}

impl Search {
    /// The block search shared by `quantize_row_iq3_xxs_impl` and `quantize_row_iq3_s_impl`:
    /// tries scales around `max/15`, snaps each group of four to the grid, keeps the best
    /// weighted fit, then re-rounds at that scale. Returns the scale; `l` gets the levels.
    fn block(
        &self,
        xval: &[f32; 32],
        weight: &[f32; 32],
        waux: &[f32; 32],
        max: f32,
        l: &mut [i8; 32],
    ) -> f32 {
        let data = self.data;
        let mut laux = [0i8; 32];
        let mut is_on_grid_aux = [false; 8];
        let mut best = 0.0f32;
        let mut scale = max / (2 * K_MAX_Q - 1) as f32;
        let mut is_on_grid = [!self.refit_all; 8];
        for is in -self.nstep..=self.nstep {
            let id = ((2 * K_MAX_Q - 1) as f32 + is as f32 * 0.2f32) / max;
            let this_scale = 1.0 / id;
            for k in 0..8 {
                for i in 0..4 {
                    let li = nearest_int(0.5f32 * (id * xval[4 * k + i] - 1.0));
                    laux[4 * k + i] = li.clamp(0, K_MAX_Q - 1) as i8;
                }
                let u = pack(&laux[4 * k..4 * k + 4]);
                is_on_grid_aux[k] = true;
                if let Lookup::Neighbours(nb) = data.lookup(u) {
                    is_on_grid_aux[k] = false;
                    find_best_neighbour(
                        nb,
                        data,
                        &xval[4 * k..4 * k + 4],
                        &waux[4 * k..4 * k + 4],
                        this_scale,
                        &mut laux[4 * k..4 * k + 4],
                    );
                }
            }
            let (sumqx, sumq2) = weighted_sums(weight, xval, &laux);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                *l = laux;
                is_on_grid = is_on_grid_aux;
            }
        }
        let n_not_ongrid = is_on_grid.iter().filter(|&&g| !g).count();
        if n_not_ongrid > 0 && scale > 0.0 {
            let id = 1.0 / scale;
            for k in 0..8 {
                if !self.refit_all && is_on_grid[k] {
                    continue;
                }
                let mut u = 0u16;
                for i in 0..4 {
                    let li = nearest_int(0.5f32 * (id * xval[4 * k + i] - 1.0));
                    u |= (li.clamp(0, K_MAX_Q - 1) as u16) << (3 * i);
                }
                let grid_index = match data.lookup(u) {
                    Lookup::OnGrid(g) => g,
                    Lookup::Neighbours(nb) => find_best_neighbour(
                        nb,
                        data,
                        &xval[4 * k..4 * k + 4],
                        &waux[4 * k..4 * k + 4],
                        scale,
                        &mut l[4 * k..4 * k + 4],
                    ),
                };
                let pg = data.point(grid_index);
                for i in 0..4 {
                    l[4 * k + i] = ((pg[i] - 1) / 2) as i8;
                }
            }
            let (sumqx, sumq2) = weighted_sums(weight, xval, l);
            if sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        scale
    }
}

/// The grid index of the levels of group `k`. The search only ever yields grid points (ggml
/// aborts otherwise); an impossible miss maps to index 0.
#[inline]
fn grid_index_of(data: &Iq3Data, l: &[i8]) -> usize {
    match data.lookup(pack(l)) {
        Lookup::OnGrid(g) => g,
        Lookup::Neighbours(_) => {
            debug_assert!(false, "IQ3 levels not on the grid");
            0
        }
    }
}

/// Per-block weights as both IQ3 quantizers compute them: `qw * sqrt(sigma2 + x^2)` with
/// importance weights, else `x^2`.
#[inline]
fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32; 32]) {
    match qw {
        Some(qw) => {
            for i in 0..32 {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..32 {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
}

/// `2 * sum(x^2) / QK_K` over a super-block.
#[inline]
fn super_block_sigma2(xbl: &[f32]) -> f32 {
    let mut sumx2 = 0.0f32;
    for &v in xbl {
        sumx2 += v * v;
    }
    2.0 * sumx2 / QK_K as f32
}

/// IQ3_XXS: 256 values as 64 grid indices (256-point grid) plus, per block of 32, a 4-bit scale
/// and 4x7 sign bits. Port of `quantize_iq3_xxs` (grid size 256).
pub struct Iq3Xxs;

impl TypeCodec for Iq3Xxs {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ3_XXS
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        let search = Search {
            data: iq3xxs_data(),
            nstep: 15,
            refit_all: false,
        };
        for (ibl, (xbl, y)) in src
            .chunks_exact(QK_K)
            .zip(dst.chunks_exact_mut(IQ3XXS_BLOCK_BYTES))
            .enumerate()
        {
            let mut q3 = [0u8; QK_K / 4];
            let mut scales_and_signs = [0u32; QK_K / 32];
            let mut scales = [0.0f32; QK_K / 32];
            let mut weight = [0.0f32; 32];
            let mut waux = [0.0f32; 32];
            let mut xval = [0.0f32; 32];
            let mut block_signs = [0u8; 4];
            let mut max_scale = 0.0f32;
            let sigma2 = super_block_sigma2(xbl);

            for ib in 0..QK_K / 32 {
                let xb = &xbl[32 * ib..32 * ib + 32];
                let qw = imatrix.map(|w| &w[QK_K * ibl + 32 * ib..QK_K * ibl + 32 * ib + 32]);
                block_weights(xb, qw, sigma2, &mut weight);
                for i in 0..32 {
                    waux[i] = weight[i].sqrt();
                }
                for k in 0..4 {
                    let mut nflip = 0;
                    let mut s = 0u8;
                    for i in 0..8 {
                        let v = xb[8 * k + i];
                        if v >= 0.0 {
                            xval[8 * k + i] = v;
                        } else {
                            xval[8 * k + i] = -v;
                            nflip += 1;
                            s |= 1 << i;
                        }
                    }
                    if nflip % 2 == 1 {
                        // An odd number of negatives: flip the least important value so the
                        // parity bit of ksigns_iq2xs can restore it.
                        let sq = |i: usize| weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                        let mut imin = 0;
                        let mut min = sq(0);
                        for i in 1..8 {
                            let ax = sq(i);
                            if ax < min {
                                min = ax;
                                imin = i;
                            }
                        }
                        xval[8 * k + imin] = -xval[8 * k + imin];
                        s ^= 1 << imin;
                    }
                    block_signs[k] = s & 127;
                }
                let max = xval[1..].iter().fold(xval[0], |m, &v| c_max(m, v));
                let mut l = [0i8; 32];
                if max < GROUP_MAX_EPS_IQ3_XXS {
                    scales[ib] = 0.0;
                    continue;
                }
                let mut scale = search.block(&xval, &weight, &waux, max, &mut l);
                if scale < 0.0 {
                    // ggml: "should never happen"; flips the scale and (only) the stored signs.
                    scale = -scale;
                    for s in &mut block_signs {
                        *s = !*s & 127;
                    }
                }
                for k in 0..8 {
                    q3[8 * ib + k] = grid_index_of(search.data, &l[4 * k..4 * k + 4]) as u8;
                }
                scales_and_signs[ib] = block_signs[0] as u32
                    | (block_signs[1] as u32) << 7
                    | (block_signs[2] as u32) << 14
                    | (block_signs[3] as u32) << 21;
                scales[ib] = scale;
                max_scale = c_max(max_scale, scale);
            }

            if max_scale == 0.0 {
                y.fill(0);
                y[..2].copy_from_slice(&f32_to_f16_bits(0.0).to_le_bytes());
                continue;
            }

            let d = max_scale / 31.0;
            // ggml's "small improvement via this fudge factor"
            y[..2].copy_from_slice(&f32_to_f16_bits(d * 1.0125f32).to_le_bytes());
            let id = 1.0 / d;
            for ib in 0..QK_K / 32 {
                let li = nearest_int(0.5f32 * (id * scales[ib] - 1.0)).clamp(0, 15);
                scales_and_signs[ib] |= (li as u32) << 28;
            }
            y[2..2 + QK_K / 4].copy_from_slice(&q3);
            for (b, s) in y[2 + QK_K / 4..].chunks_exact_mut(4).zip(&scales_and_signs) {
                b.copy_from_slice(&s.to_le_bytes());
            }
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ3XXS_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            let qs = &x[2..2 + QK_K / 4];
            let sas = &x[2 + QK_K / 4..];
            for ib32 in 0..QK_K / 32 {
                let aux32 = u32::from_le_bytes([
                    sas[4 * ib32],
                    sas[4 * ib32 + 1],
                    sas[4 * ib32 + 2],
                    sas[4 * ib32 + 3],
                ]);
                let db = d * (0.5f32 + (aux32 >> 28) as f32) * 0.5f32;
                for l in 0..4 {
                    let signs = KSIGNS_IQ2XS[((aux32 >> (7 * l)) & 127) as usize];
                    let grid1 = IQ3XXS_GRID[qs[8 * ib32 + 2 * l] as usize].to_le_bytes();
                    let grid2 = IQ3XXS_GRID[qs[8 * ib32 + 2 * l + 1] as usize].to_le_bytes();
                    let out = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
                    for j in 0..4 {
                        out[j] = db * grid1[j] as f32 * sign(signs, j);
                        out[j + 4] = db * grid2[j] as f32 * sign(signs, j + 4);
                    }
                }
            }
        }
    }
}

/// `signs & kmask_iq2xs[j] ? -1.f : 1.f`.
#[inline]
fn sign(signs: u8, j: usize) -> f32 {
    if signs & (1 << j) != 0 {
        -1.0
    } else {
        1.0
    }
}

/// IQ3_S: 256 values as 64 grid indices into a 512-point grid (9th bits in `qh`), explicit sign
/// bits, and a 4-bit scale per block of 32. Port of `quantize_iq3_s` (`IQ3S_BLOCK_SIZE` 32).
pub struct Iq3S;

/// Byte offsets inside `block_iq3_s`.
const IQ3S_QS: usize = 2;
const IQ3S_QH: usize = IQ3S_QS + QK_K / 4;
const IQ3S_SIGNS: usize = IQ3S_QH + QK_K / 32;
const IQ3S_SCALES: usize = IQ3S_SIGNS + QK_K / 8;

impl TypeCodec for Iq3S {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ3_S
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        let search = Search {
            data: iq3s_data(),
            nstep: 9,
            refit_all: true,
        };
        for (ibl, (xbl, y)) in src
            .chunks_exact(QK_K)
            .zip(dst.chunks_exact_mut(IQ3S_BLOCK_BYTES))
            .enumerate()
        {
            y.fill(0);
            y[..2].copy_from_slice(&f32_to_f16_bits(0.0).to_le_bytes());
            let mut scales = [0.0f32; QK_K / 32];
            let mut weight = [0.0f32; 32];
            let mut waux = [0.0f32; 32];
            let mut xval = [0.0f32; 32];
            let mut block_signs = [0u8; 4];
            let mut max_scale = 0.0f32;
            // ggml advances its qs and signs pointers only past blocks it does not skip, so a
            // block of zeros shifts the later blocks' indices and signs down (qh is indexed by
            // block and does not shift).
            let mut qs_pos = IQ3S_QS;
            let mut signs_pos = IQ3S_SIGNS;
            let sigma2 = super_block_sigma2(xbl);

            for ib in 0..QK_K / 32 {
                let xb = &xbl[32 * ib..32 * ib + 32];
                let qw = imatrix.map(|w| &w[QK_K * ibl + 32 * ib..QK_K * ibl + 32 * ib + 32]);
                block_weights(xb, qw, sigma2, &mut weight);
                for i in 0..32 {
                    waux[i] = weight[i].sqrt();
                }
                for k in 0..4 {
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
                let max = xval[1..].iter().fold(xval[0], |m, &v| c_max(m, v));
                let mut l = [0i8; 32];
                if max == 0.0 {
                    scales[ib] = 0.0;
                    continue;
                }
                let mut scale = search.block(&xval, &weight, &waux, max, &mut l);
                if scale < 0.0 {
                    // ggml: "should never happen"
                    scale = -scale;
                    for s in &mut block_signs {
                        *s = !*s;
                    }
                }
                for k in 0..8 {
                    let grid_index = grid_index_of(search.data, &l[4 * k..4 * k + 4]);
                    y[qs_pos + k] = (grid_index & 255) as u8;
                    y[IQ3S_QH + ib] |= ((grid_index >> 8) << k) as u8;
                }
                qs_pos += 8;
                y[signs_pos..signs_pos + 4].copy_from_slice(&block_signs);
                signs_pos += 4;
                scales[ib] = scale;
                max_scale = c_max(max_scale, scale);
            }

            if max_scale == 0.0 {
                continue;
            }

            let d = max_scale / 31.0;
            y[..2].copy_from_slice(&f32_to_f16_bits(d * 1.033f32).to_le_bytes());
            let id = 1.0 / d;
            for ib in (0..QK_K / 32).step_by(2) {
                let l1 = nearest_int(0.5f32 * (id * scales[ib] - 1.0)).clamp(0, 15);
                let l2 = nearest_int(0.5f32 * (id * scales[ib + 1] - 1.0)).clamp(0, 15);
                y[IQ3S_SCALES + ib / 2] = (l1 | (l2 << 4)) as u8;
            }
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ3S_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            for ib32 in 0..QK_K / 32 {
                let sc = x[IQ3S_SCALES + ib32 / 2];
                let nibble = if ib32 % 2 == 0 { sc & 0xf } else { sc >> 4 };
                let db = d * (1 + 2 * nibble as i32) as f32;
                let qs = &x[IQ3S_QS + 8 * ib32..IQ3S_QS + 8 * ib32 + 8];
                let qh = x[IQ3S_QH + ib32] as usize;
                let signs = &x[IQ3S_SIGNS + 4 * ib32..IQ3S_SIGNS + 4 * ib32 + 4];
                for l in 0..4 {
                    let i1 = qs[2 * l] as usize | ((qh << (8 - 2 * l)) & 256);
                    let i2 = qs[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256);
                    let grid1 = IQ3S_GRID[i1].to_le_bytes();
                    let grid2 = IQ3S_GRID[i2].to_le_bytes();
                    let out = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
                    for j in 0..4 {
                        out[j] = db * grid1[j] as f32 * sign(signs[l], j);
                        out[j + 4] = db * grid2[j] as f32 * sign(signs[l], j + 4);
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
    fn ksigns_matches_ggml_table_start() {
        assert_eq!(KSIGNS_IQ2XS[..8], [0, 129, 130, 3, 132, 5, 6, 135]);
        assert_eq!(KSIGNS_IQ2XS[127], 255);
    }

    #[test]
    fn iq3_xxs_matches_ggml() {
        check(GgmlType::IQ3_XXS);
    }

    #[test]
    fn iq3_s_matches_ggml() {
        check(GgmlType::IQ3_S);
    }
}
