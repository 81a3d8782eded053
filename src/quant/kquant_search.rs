//! The scale searches shared by the k-quants and the weighted legacy quantizers.
//!
//! Ports of the static helpers at the top of the 2-6 bit section of ggml's `ggml-quants.c`:
//! `make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`, `make_qkx3_quants`, `make_qp_quants`
//! and `get_scale_min_k4`. Each performs the same f32 operations in the same order as the C code
//! (which the reference build compiles for plain x86-64 SSE, so no fused multiply-adds and no
//! reassociated sums), and stores quant levels with the same integer truncations, because the
//! resulting bytes must equal ggml's.
//!
//! Every function works on one group of at most [`MAX_GROUP`] values; the caller passes slices
//! of that group and its output levels.

use super::rounding::{f16_bits_to_f32, f32_to_f16_bits, nearest_int};

/// ggml's `GROUP_MAX_EPS` (ggml-quants.c): a group whose largest magnitude is below this is
/// treated as all zeros.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// The largest group any caller hands to these searches (the 32-value sub-blocks of Q4_K/Q5_K
/// and of the legacy 32-value blocks).
pub const MAX_GROUP: usize = 32;

/// Reads the little-endian f16 at `b[off..off + 2]` as f32 (`GGML_FP16_TO_FP32`).
#[inline]
pub fn read_f16(b: &[u8], off: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Stores `v` as a little-endian f16 at `b[off..off + 2]` (`GGML_FP32_TO_FP16`).
#[inline]
pub fn write_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
}

/// Port of `make_qx_quants` for `rmse_type == 1`, the only mode the quantizers use.
///
/// Symmetric quantization of `x` to levels `-nmax..nmax-1`, stored in `l` offset by `nmax`
/// (`0..2*nmax-1`). The weights are `qw` or, when `None`, `x[i]²`. Starting from the scale that
/// maps the largest magnitude to `-nmax`, it tries 18 nearby scales and keeps the one with the
/// best weighted least-squares fit; it returns that fitted scale (0 for an all-zero group).
pub fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let weight = |i: usize| match qw {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);

    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let li = quant(iscale, x[i]);
        l[i] = (li + nmax) as i8;
        let w = weight(i);
        sumlx += w * x[i] * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (i, &xi) in x.iter().enumerate() {
            let li = quant(iscale, xi);
            let w = weight(i);
            sumlx += w * xi * li as f32;
            suml2 += w * li as f32 * li as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (quant(iscale, x[i]) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Port of `make_q3_quants`: symmetric quantization to `-nmax..nmax-1` (stored offset by `nmax`)
/// with x²-weights. With `do_rmse` it refines the levels one at a time (up to 5 sweeps) while
/// the weighted fit improves and returns the least-squares scale; otherwise it returns the
/// max-based scale.
pub fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..n {
            let li = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l[i] = li as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * li as f32;
            suml2 += w * li as f32 * li as f32;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != l[i] as i32 {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for v in &mut l[..n] {
            *v += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        l[i] = (nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1) + nmax) as i8;
    }
    1.0 / iscale
}

/// The tuning of one asymmetric (scale + min) search: candidate inverse scales are
/// `(rmin + rdelta*is + nmax) / (max - min)` for `is` in `0..=nstep`, and the error is the
/// weighted absolute (`use_mad`) or squared difference.
#[derive(Clone, Copy)]
pub struct MinSearch {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// Port of `make_qkx2_quants`: asymmetric quantization of `x` to levels `0..=nmax` in `l` with
/// `x ≈ scale*l - the_min`, minimizing the `weights`-weighted error over the candidate scales of
/// `search`. Returns `(scale, the_min)`, where `the_min` is ggml's `*the_min` output (the negated
/// offset, so `>= 0` up to the sign of zero).
pub fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    search: MinSearch,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    min_search(nmax, x, weights, l, search, (min, max), (sum_w, sum_x))
}

/// Port of `make_qkx3_quants` with explicit weights (every caller passes them; ggml's x²
/// fallback for NULL weights is not needed). Same search as [`make_qkx2_quants`] except that a
/// group with `max <= min` (rather than `max == min`) is all zeros.
pub fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    search: MinSearch,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    min_search(nmax, x, weights, l, search, (min, max), (sum_w, sum_x))
}

/// The common body of `make_qkx2_quants` and `make_qkx3_quants` after the min/max scan (the two
/// C functions are identical from there on).
fn min_search(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    search: MinSearch,
    (mut min, max): (f32, f32),
    (sum_w, sum_x): (f32, f32),
) -> (f32, f32) {
    let n = x.len();
    let err = |diff: f32| {
        if search.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = li as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if search.nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; MAX_GROUP];
    for is in 0..=search.nstep {
        iscale = (search.rmin + search.rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = li as u8;
            let w = weights[i];
            let lf = li as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Port of `make_qp_quants`: quantizes the non-negative `x` (a super-block's sub-block scales or
/// mins) to levels `0..=nmax` in `l` with weights `quant_weights`, trying 8 scales near the
/// max-based one, then refining levels one at a time; returns the least-squares scale.
///
/// Like ggml, levels are stored with a `uint8_t` truncation and are only clamped from above, so
/// a negative input gives the same wrapped byte ggml writes.
pub fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    for &v in x {
        // ggml's MAX(max, x[i])
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += quant_weights[i] * diff * diff;
    }
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let li = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * li as f32;
            mse += quant_weights[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let li = nearest_int(iscale * x[i]).min(nmax);
        l[i] = li as u8;
        let w = quant_weights[i];
        sumlx += w * x[i] * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = quant_weights[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Port of `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) from the 12
/// packed scale bytes of a Q4_K/Q5_K block.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The inverse of [`get_scale_min_k4`], as the Q4_K/Q5_K quantizers pack it: sub-blocks must be
/// stored in order `j = 0..8`, since `j >= 4` ORs its top bits into bytes that `j < 4` wrote.
/// Bits of `ls`/`lm` beyond 6 are truncated exactly as ggml's `uint8_t` stores do.
#[inline]
pub fn set_scale_min_k4(j: usize, ls: u8, lm: u8, q: &mut [u8]) {
    if j < 4 {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        q[j - 4] |= (ls >> 4) << 6;
        q[j] |= (lm >> 4) << 6;
    }
}

/// The 2-bit packing shared by Q2_K and Q3_K: each half super-block of 128 levels fills 32 bytes,
/// level `l + 32*k` going to bits `2k..2k+2` of byte `l`.
pub fn pack_2bit(levels: &[u8; 256], qs: &mut [u8]) {
    for (half, q) in levels.chunks_exact(128).zip(qs.chunks_exact_mut(32)) {
        for (l, b) in q.iter_mut().enumerate() {
            *b = half[l] | (half[l + 32] << 2) | (half[l + 64] << 4) | (half[l + 96] << 6);
        }
    }
}

/// Sum of squares in index order, the way every ggml quantizer computes it before `sigma2`.
#[inline]
pub fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// Plain sum in index order (ggml's `sumw` of a sub-block's weights).
#[inline]
pub fn sum_in_order(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v;
    }
    s
}
