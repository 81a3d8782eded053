//! The scale searches shared by the k-quants and the weighted legacy quantizers.
//!
//! Ports of the static helpers at the top of the 2-6 bit section of ggml's `ggml-quants.c`:
//! `make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`, `make_qkx3_quants`, `make_qp_quants`
//! and `get_scale_min_k4`. Each performs the same f32 operations in the same order as the C code
//! (which the reference build compiles for plain x86-64 SSE, so no fused multiply-adds and no
//! reassociated sums), and stores quant levels with the same integer truncations, because the
//! resulting bytes must equal ggml's.
//!
//! The scalar functions work on one group (at most 32 values); the caller passes slices of
//! that group and its output levels. The `*_lanes` functions run the same search for several
//! independent groups at once, one group per vector lane (see `super::simd`), and are what the
//! quantizers call; `make_qx_quants` evaluates its candidate scales side by side the same way.
//! The scalar ports that only the tests use (`make_qkx2_quants`, `make_qkx3_quants`,
//! `make_q3_quants`, the scalar `make_qx_quants`) are the specifications those are checked
//! against.

use super::rounding::{f16_bits_to_f32, f32_to_f16_bits, nearest_int};
use super::simd8::{self as simd, build, F8, I8};

/// ggml's `GROUP_MAX_EPS` (ggml-quants.c): a group whose largest magnitude is below this is
/// treated as all zeros.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// The largest group any caller hands to these searches (the 32-value sub-blocks of Q4_K/Q5_K
/// and of the legacy 32-value blocks).
#[cfg(test)]
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
///
/// ggml evaluates the 19 inverse scales one after another; they do not depend on each other
/// (only the comparison that picks the best does), so here they are evaluated side by side, one
/// per lane, each with ggml's operations and its sums accumulated in index order; then the
/// choice runs over them in ggml's order, and the levels are recomputed once for the winner.
#[cfg(test)]
pub fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    simd::dispatch!(V => make_qx_quants_v::<V>(nmax, x, l, qw))
}

/// [`make_qx_quants`] on the vector implementation `V` (the caller dispatches).
#[inline(always)]
pub fn make_qx_quants_v<V: F8>(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    let mut finite = true;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
        finite &= v.is_finite();
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    // With finite values and amax >= GROUP_MAX_EPS every |iscale * x| is below nmax + 1, far
    // inside the range where the float rounding of [`simd::round_clamp_small`] is exact.
    if finite {
        qx_search::<V, true>(nmax, x, l, qw, max)
    } else {
        qx_search::<V, false>(nmax, x, l, qw, max)
    }
}

#[inline(always)]
fn qx_search<V: F8, const SMALL: bool>(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
    qw: Option<&[f32]>,
    max: f32,
) -> f32 {
    /// Lane 0 is the first guess, lanes 1..=18 are `is` = -9..-1, 1..9; lanes 19.. pad.
    const NC: usize = 24;
    const NV: usize = NC / 8;
    let n = x.len();
    // `is` per lane; the first guess `-nmax/max` is `is` = 0 (`nmax + 0.1*0` is `nmax` exactly)
    const IS: [f32; NC] = [
        0.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
        7.0, 8.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    let (nmaxv, tenth, maxv) = (V::splat(nmax as f32), V::splat(0.1), V::splat(max));
    // ggml: iscale = -(nmax + 0.1f*is)/max
    let iscale: [V; NV] = build(|v| (nmaxv + tenth * V::load(&IS[8 * v..])).neg() / maxv);
    let (lo, hi) = (V::I::splat(-nmax), V::I::splat(nmax - 1));
    let (lof, hif) = (V::splat(-nmax as f32), V::splat((nmax - 1) as f32));
    let zero = V::splat(0.0);
    let mut sumlx = [zero; NV];
    let mut suml2 = [zero; NV];
    for (i, &xi) in x.iter().enumerate() {
        let w = match qw {
            Some(w) => w[i],
            None => xi * xi,
        };
        let (xv, wv, wx) = (V::splat(xi), V::splat(w), V::splat(w * xi));
        for v in 0..NV {
            let li = if SMALL {
                simd::round_clamp_small(iscale[v] * xv, lof, hif)
            } else {
                simd::nearest_int(iscale[v] * xv).clamp(lo, hi).to_f32()
            };
            sumlx[v] = sumlx[v] + wx * li;
            suml2[v] = suml2[v] + wv * li * li;
        }
    }
    let mut iscales = [0.0f32; NC];
    let mut lx = [0.0f32; NC];
    let mut l2 = [0.0f32; NC];
    for v in 0..NV {
        iscale[v].store(&mut iscales[8 * v..]);
        sumlx[v].store(&mut lx[8 * v..]);
        suml2[v].store(&mut l2[8 * v..]);
    }
    let mut scale = if l2[0] != 0.0 { lx[0] / l2[0] } else { 0.0 };
    let mut best = scale * lx[0];
    let mut winner = 0;
    for c in 1..19 {
        if l2[c] > 0.0 && lx[c] * lx[c] > best * l2[c] {
            scale = lx[c] / l2[c];
            best = scale * lx[c];
            winner = c;
        }
    }
    let iscale = iscales[winner];
    for (q, &xi) in l[..n].iter_mut().zip(x) {
        *q = (nearest_int(iscale * xi).clamp(-nmax, nmax - 1) + nmax) as i8;
    }
    scale
}

/// The value of largest magnitude and that magnitude, the first one on ties, as ggml's scalar
/// searches find it (`max` keeps its sign: it sets the sign of the scale). Used by the test-only
/// scalar specifications.
#[cfg(test)]
fn largest_magnitude(x: &[f32]) -> (f32, f32) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// Port of `make_q3_quants`: symmetric quantization to `-nmax..nmax-1` (stored offset by `nmax`)
/// with x²-weights. With `do_rmse` it refines the levels one at a time (up to 5 sweeps) while
/// the weighted fit improves and returns the least-squares scale; otherwise it returns the
/// max-based scale. The quantizer runs [`make_q3_quants_lanes`]; this scalar port is its
/// specification (see the tests).
#[cfg(test)]
pub fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let (max, amax) = largest_magnitude(x);
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

/// `make_q3_quants` with `do_rmse` for `8*NV` groups of `N` values at once, one group per
/// lane: returns the scales per lane and the levels (offset by `nmax`, as floats) in `l`.
///
/// Within a group ggml's refinement is sequential (each accepted change moves the sums the
/// next value is judged against), so each lane runs its group's sweeps in index order with the
/// same operations; the lanes only differ in when they stop. A sweep that changes nothing
/// leaves the state as it found it, so further sweeps would change nothing either: running a
/// finished lane on until every lane has finished (or the 5 sweeps are done) gives the same
/// result as ggml's `break`.
#[inline(always)]
pub fn make_q3_quants_lanes<V: F8, const NV: usize, const N: usize>(
    nmax: i32,
    x: &Lanes<V, NV, N>,
    l: &mut Lanes<V, NV, N>,
) -> [V; NV] {
    let zero = V::splat(0.0);
    let mut max = [zero; NV];
    let mut amax = [zero; NV];
    for xi in x {
        for v in 0..NV {
            let ax = xi[v].abs();
            let upd = ax.gt(amax[v]);
            amax[v] = V::select(upd, ax, amax[v]);
            max[v] = V::select(upd, xi[v], max[v]);
        }
    }
    let live: [V; NV] = build(|v| amax[v].lt(V::splat(GROUP_MAX_EPS)).not());
    let (lo, hi) = (V::I::splat(-nmax), V::I::splat(nmax - 1));
    let quant = |f: V| simd::nearest_int(f).clamp(lo, hi).to_f32();
    let iscale: [V; NV] = build(|v| V::splat(-nmax as f32) / max[v]);
    let mut sumlx = [zero; NV];
    let mut suml2 = [zero; NV];
    for i in 0..N {
        for v in 0..NV {
            let xi = x[i][v];
            let li = quant(iscale[v] * xi);
            l[i][v] = li;
            let w = xi * xi;
            sumlx[v] = sumlx[v] + w * xi * li;
            suml2[v] = suml2[v] + w * li * li;
        }
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..N {
            for v in 0..NV {
                let xi = x[i][v];
                let w = xi * xi;
                let li = l[i][v];
                let slx = sumlx[v] - w * xi * li;
                let sl2 = suml2[v] - w * li * li;
                let new_l = quant(xi * sl2 / slx);
                let slx_n = slx + w * xi * new_l;
                let sl2_n = sl2 + w * new_l * new_l;
                let better = (slx_n * slx_n * suml2[v]).gt(sumlx[v] * sumlx[v] * sl2_n);
                let upd = slx.gt(zero) & new_l.eq(li).not() & sl2_n.gt(zero) & better & live[v];
                changed |= upd.bitmask();
                l[i][v] = V::select(upd, new_l, li);
                sumlx[v] = V::select(upd, slx_n, sumlx[v]);
                suml2[v] = V::select(upd, sl2_n, suml2[v]);
            }
        }
        if changed == 0 {
            break;
        }
    }
    let off = V::splat(nmax as f32);
    for li in l.iter_mut() {
        for v in 0..NV {
            li[v] = (li[v] + off) & live[v];
        }
    }
    build(|v| {
        let s = V::select(suml2[v].gt(zero), sumlx[v] / suml2[v], zero);
        s & live[v]
    })
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
///
/// The quantizers run [`min_search_lanes`]; this scalar port is its specification (see the
/// tests).
#[cfg(test)]
pub fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    search: MinSearch,
) -> (f32, f32) {
    let ((min, max), sums) = min_max_sums(x, weights);
    if max == min {
        l[..x.len()].fill(0);
        return (0.0, -min);
    }
    min_search(nmax, x, weights, l, search, (min, max), sums)
}

/// Port of `make_qkx3_quants` with explicit weights (every caller passes them; ggml's x²
/// fallback for NULL weights is not needed). Same search as [`make_qkx2_quants`] except that a
/// group with `max <= min` (rather than `max == min`) is all zeros. Test-only, like
/// [`make_qkx2_quants`].
#[cfg(test)]
pub fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    search: MinSearch,
) -> (f32, f32) {
    let ((min, max), sums) = min_max_sums(x, weights);
    if max <= min {
        l[..x.len()].fill(0);
        return (0.0, -min);
    }
    min_search(nmax, x, weights, l, search, (min, max), sums)
}

/// The scan `make_qkx2_quants` and `make_qkx3_quants` both open with, kept in C's order so the
/// sums round as ggml's do: `(min, max)` of `x`, with `min` raised to 0 as ggml does so that the
/// returned `the_min` is never negative, and the weighted sums `(sum_w, sum_x)` that
/// [`min_search`]'s least-squares refits need.
#[cfg(test)]
fn min_max_sums(x: &[f32], weights: &[f32]) -> ((f32, f32), (f32, f32)) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..x.len() {
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
    ((min, max), (sum_w, sum_x))
}

/// The common body of `make_qkx2_quants` and `make_qkx3_quants` after the min/max scan (the two
/// C functions are identical from there on).
#[cfg(test)]
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

/// Groups of values laid out for [`min_search_lanes`]: `t[i][v]` holds value `i` of the eight
/// groups `8v..8v+8` (one group per lane).
pub type Lanes<V, const NV: usize, const N: usize> = [[V; NV]; N];

/// Transposes `8*NV` groups of `N` values stored back to back (`x[g*N + i]`) into lanes.
#[inline(always)]
pub fn to_lanes<V: F8, const NV: usize, const N: usize>(x: &[f32]) -> Lanes<V, NV, N> {
    let x = &x[..8 * NV * N];
    build(|i| build(|v| V::from_array(build(|k| x[(8 * v + k) * N + i]))))
}

/// The inverse of [`to_lanes`] for levels: `out[g*N + i]` = level `i` of group `g`.
#[inline(always)]
pub fn levels_from_lanes<V: F8, const NV: usize, const N: usize>(
    l: &Lanes<V, NV, N>,
    out: &mut [u8],
) {
    let out = &mut out[..8 * NV * N];
    for (i, li) in l.iter().enumerate() {
        for (v, lv) in li.iter().enumerate() {
            for (k, q) in lv.to_i32_trunc().low_bytes().into_iter().enumerate() {
                out[(8 * v + k) * N + i] = q;
            }
        }
    }
}

/// The eight lanes of each vector of `v`, in order (`M` = 8 × `NV`).
#[inline(always)]
pub fn lanes_to_array<V: F8, const NV: usize, const M: usize>(v: &[V; NV]) -> [f32; M] {
    let mut out = [0.0f32; M];
    for (o, v) in out.chunks_exact_mut(8).zip(v) {
        v.store(o);
    }
    out
}

/// `make_qkx2_quants` (`qkx3 == false`) or `make_qkx3_quants` (`qkx3 == true`) for `8*NV`
/// groups of `N` values at once, one group per lane.
///
/// ggml runs the groups one after another, and inside a group the candidate scales one after
/// another, because each accepted candidate moves `min`, on which the next one depends. Across
/// groups nothing is shared, so here each lane runs one group's search: the same operations in
/// the same order, every sum accumulated over `i` in index order, the accept/reject decisions
/// taken per lane with selects. Levels are returned as (exact, small integer) floats in `l`;
/// the result is `(scale, the_min)` per lane.
#[inline(always)]
pub fn min_search_lanes<V: F8, const NV: usize, const N: usize>(
    nmax: i32,
    x: &Lanes<V, NV, N>,
    weights: &Lanes<V, NV, N>,
    search: MinSearch,
    qkx3: bool,
    l: &mut Lanes<V, NV, N>,
) -> ([V; NV], [V; NV]) {
    let zero = V::splat(0.0);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x: [V; NV] = build(|v| sum_w[v] * x[0][v]);
    for i in 1..N {
        for v in 0..NV {
            let xi = x[i][v];
            min[v] = V::select(xi.lt(min[v]), xi, min[v]);
            max[v] = V::select(xi.gt(max[v]), xi, max[v]);
            let w = weights[i][v];
            sum_w[v] = sum_w[v] + w;
            sum_x[v] = sum_x[v] + w * xi;
        }
    }
    // Lanes of a constant group (qkx2: max == min, qkx3: max <= min) are done: levels 0,
    // scale 0. `live` masks the others.
    let mut live = [zero; NV];
    for v in 0..NV {
        min[v] = V::select(min[v].gt(zero), zero, min[v]);
        let done = if qkx3 {
            min[v].ge(max[v]) // max <= min
        } else {
            max[v].eq(min[v])
        };
        live[v] = done.not();
    }
    let err = |diff: V| {
        if search.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    };
    let (lo, hi) = (V::I::splat(0), V::I::splat(nmax));
    let quant = |iscale: V, xi: V, min: V| {
        simd::nearest_int(iscale * (xi - min))
            .clamp(lo, hi)
            .to_f32()
    };

    let nmaxf = V::splat(nmax as f32);
    let mut scale = [zero; NV];
    let mut best_error = [zero; NV];
    let mut range = [zero; NV];
    {
        let mut iscale = [zero; NV];
        for v in 0..NV {
            range[v] = max[v] - min[v];
            iscale[v] = nmaxf / range[v];
            scale[v] = V::splat(1.0) / iscale[v];
        }
        for i in 0..N {
            for v in 0..NV {
                let xi = x[i][v];
                let li = quant(iscale[v], xi, min[v]);
                l[i][v] = li;
                let diff = scale[v] * li + min[v] - xi;
                best_error[v] = best_error[v] + weights[i][v] * err(diff);
            }
        }
    }
    if search.nstep >= 1 {
        let mut laux = [[zero; NV]; N];
        for is in 0..=search.nstep {
            let num = V::splat(search.rmin + search.rdelta * is as f32 + nmax as f32);
            let mut iscale = [zero; NV];
            for v in 0..NV {
                iscale[v] = num / range[v];
            }
            let mut sum_l = [zero; NV];
            let mut sum_l2 = [zero; NV];
            let mut sum_xl = [zero; NV];
            for i in 0..N {
                for v in 0..NV {
                    let xi = x[i][v];
                    let li = quant(iscale[v], xi, min[v]);
                    laux[i][v] = li;
                    let wl = weights[i][v] * li;
                    sum_l[v] = sum_l[v] + wl;
                    sum_l2[v] = sum_l2[v] + wl * li;
                    sum_xl[v] = sum_xl[v] + wl * xi;
                }
            }
            let mut this_scale = [zero; NV];
            let mut this_min = [zero; NV];
            let mut ok = [zero; NV];
            let mut any = 0;
            for v in 0..NV {
                let d = sum_w[v] * sum_l2[v] - sum_l[v] * sum_l[v];
                ok[v] = d.gt(zero) & live[v];
                any |= ok[v].bitmask();
                let ts = (sum_w[v] * sum_xl[v] - sum_x[v] * sum_l[v]) / d;
                let tm = (sum_l2[v] * sum_x[v] - sum_l[v] * sum_xl[v]) / d;
                let pos = tm.gt(zero);
                this_min[v] = V::select(pos, zero, tm);
                this_scale[v] = V::select(pos, sum_xl[v] / sum_l2[v], ts);
            }
            if any == 0 {
                continue;
            }
            let mut cur_error = [zero; NV];
            for i in 0..N {
                for v in 0..NV {
                    let diff = this_scale[v] * laux[i][v] + this_min[v] - x[i][v];
                    cur_error[v] = cur_error[v] + weights[i][v] * err(diff);
                }
            }
            let mut take = [zero; NV];
            let mut anytake = 0;
            for v in 0..NV {
                take[v] = ok[v] & cur_error[v].lt(best_error[v]);
                anytake |= take[v].bitmask();
                best_error[v] = V::select(take[v], cur_error[v], best_error[v]);
                scale[v] = V::select(take[v], this_scale[v], scale[v]);
                min[v] = V::select(take[v], this_min[v], min[v]);
                range[v] = max[v] - min[v];
            }
            if anytake != 0 {
                for i in 0..N {
                    for v in 0..NV {
                        l[i][v] = V::select(take[v], laux[i][v], l[i][v]);
                    }
                }
            }
        }
    }
    // Finished lanes: levels 0, scale 0, the_min = -min.
    let mut the_min = [zero; NV];
    for v in 0..NV {
        scale[v] = scale[v] & live[v];
        the_min[v] = min[v].neg();
    }
    for li in l.iter_mut() {
        for v in 0..NV {
            li[v] = li[v] & live[v];
        }
    }
    (scale, the_min)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::simd8::Path;

    /// xorshift64*: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn unif(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
        fn gauss(&mut self) -> f32 {
            (0..6).map(|_| self.unif()).sum::<f32>() - 3.0
        }
    }

    /// A group of `n` awkward values: its kind varies with the draw.
    fn group(r: &mut Rng, n: usize) -> Vec<f32> {
        let scale = 10f32.powf(r.unif() * 70.0 - 40.0);
        let c = r.gauss() * scale;
        let kind = r.next() % 9;
        (0..n)
            .map(|i| match kind {
                0 => 0.0,
                1 => c,
                2 => r.gauss() * scale,
                3 => ((r.gauss() * 2.0).round() * 0.25) * scale, // ties
                4 => (r.gauss() * 0.02).abs(),
                5 => -(r.gauss() * 0.02).abs(),
                6 => {
                    if r.next().is_multiple_of(10) {
                        r.gauss()
                    } else {
                        0.0
                    }
                }
                7 => {
                    if i == 3 {
                        40.0
                    } else {
                        r.gauss() * 0.02
                    }
                }
                _ => r.gauss() * 0.02,
            })
            .collect()
    }

    fn weights(r: &mut Rng, x: &[f32]) -> Vec<f32> {
        match r.next() % 4 {
            0 => vec![0.0; x.len()],
            1 => x.iter().map(|v| v * v).collect(),
            2 => x
                .iter()
                .map(|_| {
                    if r.next().is_multiple_of(3) {
                        0.0
                    } else {
                        r.unif() * 4.0
                    }
                })
                .collect(),
            _ => x.iter().map(|v| v.abs() + 0.01).collect(),
        }
    }

    /// Runs `f` once on every SIMD path this CPU has, naming the path on failure.
    fn on_every_path(f: impl Fn(Path)) {
        for p in Path::available() {
            simd::with_path(p, || f(p));
        }
    }

    fn check_min_search<V: F8, const NV: usize, const N: usize>(
        r: &mut Rng,
        nmax: i32,
        search: MinSearch,
        p: Path,
    ) {
        for qkx3 in [false, true] {
            for _ in 0..200 {
                let x: Vec<f32> = (0..8 * NV).flat_map(|_| group(r, N)).collect();
                let w: Vec<f32> = x.chunks(N).flat_map(|g| weights(r, g)).collect();
                let (xt, wt) = (to_lanes::<V, NV, N>(&x), to_lanes::<V, NV, N>(&w));
                let mut lt = [[V::splat(0.0); NV]; N];
                let (sc, mn) = min_search_lanes(nmax, &xt, &wt, search, qkx3, &mut lt);
                let mut l = vec![0u8; 8 * NV * N];
                levels_from_lanes(&lt, &mut l);
                for g in 0..8 * NV {
                    let xs = &x[g * N..(g + 1) * N];
                    let ws = &w[g * N..(g + 1) * N];
                    let mut lr = [0u8; MAX_GROUP];
                    let (s, m) = if qkx3 {
                        make_qkx3_quants(nmax, xs, ws, &mut lr, search)
                    } else {
                        make_qkx2_quants(nmax, xs, ws, &mut lr, search)
                    };
                    let (sl, ml) = (sc[g / 8].to_array()[g % 8], mn[g / 8].to_array()[g % 8]);
                    assert_eq!(
                        (sl.to_bits(), ml.to_bits(), &l[g * N..(g + 1) * N]),
                        (s.to_bits(), m.to_bits(), &lr[..N]),
                        "path={p:?} qkx3={qkx3} nmax={nmax} x={xs:?} w={ws:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn min_search_lanes_equals_scalar_port() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let q4k = MinSearch {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let q5k = MinSearch {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let q2k = MinSearch {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let imx = MinSearch {
            rmin: -0.9,
            rdelta: 0.05,
            nstep: 36,
            use_mad: false,
        };
        let r = std::cell::RefCell::new(&mut r);
        on_every_path(|p| {
            let r = &mut *r.borrow_mut();
            simd::dispatch!(V => {
                check_min_search::<V, 1, 32>(r, 15, q4k, p);
                check_min_search::<V, 1, 32>(r, 31, q5k, p);
                check_min_search::<V, 1, 32>(r, 15, imx, p);
                check_min_search::<V, 1, 32>(r, 31, imx, p);
                check_min_search::<V, 2, 16>(r, 3, q2k, p);
                check_min_search::<V, 2, 16>(r, 3, imx, p);
            })
        });
    }

    fn check_q3_lanes<V: F8>(r: &mut Rng, p: Path) {
        for _ in 0..1000 {
            let x: Vec<f32> = (0..16).flat_map(|_| group(r, 16)).collect();
            let xt = to_lanes::<V, 2, 16>(&x);
            let mut lt = [[V::splat(0.0); 2]; 16];
            let sc = make_q3_quants_lanes(4, &xt, &mut lt);
            let mut l = [0u8; 256];
            levels_from_lanes(&lt, &mut l);
            for g in 0..16 {
                let mut lr = [0i8; 16];
                let s = make_q3_quants(4, &x[16 * g..16 * g + 16], &mut lr, true);
                let lr = lr.map(|v| v as u8);
                assert_eq!(
                    (
                        sc[g / 8].to_array()[g % 8].to_bits(),
                        &l[16 * g..16 * g + 16]
                    ),
                    (s.to_bits(), &lr[..]),
                    "path={p:?} x={:?}",
                    &x[16 * g..16 * g + 16]
                );
            }
        }
    }

    #[test]
    fn make_q3_quants_lanes_equals_scalar_port() {
        let mut r = Rng(0x0dd_ba11_cafe_f00d);
        let r = std::cell::RefCell::new(&mut r);
        on_every_path(|p| simd::dispatch!(V => check_q3_lanes::<V>(&mut r.borrow_mut(), p)));
    }

    #[test]
    fn make_qx_quants_equals_scalar_port() {
        on_every_path(|p| {
            let mut r = Rng(0x1234_5678_9abc_def1);
            for &(nmax, n) in &[(32, 16), (4, 16), (8, 32), (16, 32)] {
                for _ in 0..2000 {
                    let x = group(&mut r, n);
                    let w = weights(&mut r, &x);
                    for qw in [None, Some(&w[..])] {
                        let (mut a, mut b) = (vec![0i8; n], vec![0i8; n]);
                        let sa = make_qx_quants(nmax, &x, &mut a, qw);
                        let sb = make_qx_quants_ref(nmax, &x, &mut b, qw);
                        assert_eq!(
                            (sa.to_bits(), &a),
                            (sb.to_bits(), &b),
                            "path={p:?} nmax={nmax} x={x:?}"
                        );
                    }
                }
            }
            // non-finite values take the exact integer path. The scale is then NaN, and which
            // of several NaNs a sum propagates (their sign bit) is the compiler's choice of
            // operand order (Rust and LLVM leave it unspecified), so only NaN-ness is compared.
            let mut x = group(&mut r, 16);
            x[5] = f32::INFINITY;
            x[9] = f32::NAN;
            let (mut a, mut b) = (vec![0i8; 16], vec![0i8; 16]);
            let sa = make_qx_quants(32, &x, &mut a, None);
            let sb = make_qx_quants_ref(32, &x, &mut b, None);
            let bits = |v: f32| if v.is_nan() { u32::MAX } else { v.to_bits() };
            assert_eq!((bits(sa), &a), (bits(sb), &b), "path={p:?}");
        });
    }

    /// The scalar port of `make_qx_quants` (one candidate after another, as ggml): the
    /// specification [`make_qx_quants`] is tested against.
    ///
    /// Symmetric quantization of `x` to levels `-nmax..nmax-1`, stored in `l` offset by `nmax`
    /// (`0..2*nmax-1`). The weights are `qw` or, when `None`, `x[i]²`. Starting from the scale that
    /// maps the largest magnitude to `-nmax`, it tries 18 nearby scales and keeps the one with the
    /// best weighted least-squares fit; it returns that fitted scale (0 for an all-zero group).
    pub fn make_qx_quants_ref(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
        let n = x.len();
        let (max, amax) = largest_magnitude(x);
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
}
