//! Budget profiles: every quantizable tensor's type chosen so that the file fits a size (or a
//! bits-per-weight figure) with the least total measured error.
//!
//! Each tensor `t` offers candidate types `q` with a size `b_t(q)` (bytes) and a measured
//! relative error `D_t(q)` ([`crate::pipeline::measure`]). The choice minimises
//!
//! ```text
//! E = Σ_t D_t(q_t)      subject to      Σ_t b_t(q_t) ≤ B
//! ```
//!
//! the sum of every tensor's noise-to-signal ratio: each matrix's quantization noise reaches
//! the logits through the residual stream, and to first order independent noise adds up.
//! [`allocate`] solves it the way rate-distortion allocation is usually solved: every tensor
//! starts at its smallest type; each tensor's choices are reduced to the lower convex hull of
//! its (size, error) points; then the step with the largest error decrease per added byte over
//! all tensors is taken while it fits (a greedy walk along the hulls, which is the Lagrangian
//! optimum at every budget a hull vertex lands on). A last pass spends what is left on the
//! best single upgrades that still fit, off the hull too. Ties go to the earlier tensor, so a
//! choice is reproducible.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use anyhow::{bail, Result};

use crate::gguf::GgmlType;

/// What a target is: the whole file's size in bytes, or bits per weight of the tensor data
/// (what llama.cpp prints as BPW: data bytes × 8 / elements).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    FileBytes(u64),
    Bpw(f64),
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::FileBytes(b) => write!(f, "{} bytes", b),
            Budget::Bpw(x) => write!(f, "{x} bits per weight"),
        }
    }
}

/// The candidate types when neither the command line nor the config lists them: the types
/// llama.cpp's file-type mixes use (`llama_tensor_get_type` of llama-quant.cpp), K-quants for
/// rows that hold 256-value super-blocks and the legacy 32-value types it falls back to for the
/// others, and the IQ types when an importance matrix is given.
pub fn default_candidates(has_imatrix: bool) -> Vec<GgmlType> {
    use GgmlType::*;
    let mut c = vec![Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1];
    if has_imatrix {
        c.extend([IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ4_XS, IQ4_NL]);
    }
    c
}

/// Default candidates more than this many bits per weight below the budget's mean are not
/// measured: a tensor that far below the mean is never worth its error at budgets where
/// llama.cpp's mixes are used (and the 2-bit IQ types are the slowest to measure).
pub const PRUNE_BITS: f64 = 2.0;

/// Bits per weight of a type (block bytes × 8 / block values).
pub fn bits_per_weight(t: GgmlType) -> f64 {
    t.type_size() as f64 * 8.0 / t.block_size() as f64
}

/// The legacy 32-value types are only offered where a K-quant cannot be used, as llama.cpp's
/// fallbacks do: where both fit, a K-quant of the same size has the smaller error.
pub fn is_fallback_only(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::IQ4_NL
    )
}

/// One choice for one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub ty: GgmlType,
    pub bytes: u64,
    pub error: f64,
}

/// The result of [`allocate`]: per tensor the index of the chosen [`Choice`].
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub picks: Vec<usize>,
    pub bytes: u64,
    pub error: f64,
}

/// The budget cannot be met even with every tensor at its smallest type.
#[derive(Debug)]
pub struct Unreachable {
    pub min_bytes: u64,
}

/// A step along one tensor's hull: take `to` instead of `from`.
#[derive(Debug)]
struct Step {
    gain_per_byte: f64,
    tensor: usize,
    to: usize,
}

impl PartialEq for Step {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Step {}
impl PartialOrd for Step {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Step {
    // largest gain first; among equal gains, the earlier tensor
    fn cmp(&self, o: &Self) -> Ordering {
        self.gain_per_byte
            .total_cmp(&o.gain_per_byte)
            .then(o.tensor.cmp(&self.tensor))
    }
}

/// Indices of `choices` on the lower convex hull of (bytes, error), smallest first: the
/// choices no mix of two others beats at their size. Choices that are larger and not better
/// than a smaller one never appear.
fn hull(choices: &[Choice]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..choices.len()).collect();
    order.sort_by(|&a, &b| {
        choices[a]
            .bytes
            .cmp(&choices[b].bytes)
            .then(choices[a].error.total_cmp(&choices[b].error))
            .then(a.cmp(&b))
    });
    let mut h: Vec<usize> = Vec::new();
    for i in order {
        let c = choices[i];
        if let Some(&last) = h.last() {
            // same size or not better: never worth it
            if c.bytes == choices[last].bytes || c.error >= choices[last].error {
                continue;
            }
        }
        while h.len() >= 2 {
            let (a, b) = (choices[h[h.len() - 2]], choices[h[h.len() - 1]]);
            // b is above the segment a–c: drop it
            let lhs = (b.error - a.error) * (c.bytes - a.bytes) as f64;
            let rhs = (c.error - a.error) * (b.bytes - a.bytes) as f64;
            if lhs >= rhs {
                h.pop();
            } else {
                break;
            }
        }
        h.push(i);
    }
    h
}

/// At most this many swaps: each lowers the total error, and a handful settle a budget.
const MAX_SWAPS: usize = 256;

/// Fill: the best error decrease per byte among all upgrades that still fit, repeatedly.
fn fill(tensors: &[Vec<Choice>], picks: &mut [usize], left: &mut u64) {
    loop {
        let mut best: Option<(f64, usize, usize, u64)> = None;
        for (t, choices) in tensors.iter().enumerate() {
            if choices.is_empty() {
                continue;
            }
            let cur = choices[picks[t]];
            for (i, c) in choices.iter().enumerate() {
                if c.bytes <= cur.bytes || c.error >= cur.error || c.bytes - cur.bytes > *left {
                    continue;
                }
                let gain = (cur.error - c.error) / (c.bytes - cur.bytes) as f64;
                if best.is_none_or(|(g, ..)| gain > g) {
                    best = Some((gain, t, i, c.bytes - cur.bytes));
                }
            }
        }
        let Some((_, t, i, cost)) = best else { break };
        picks[t] = i;
        *left -= cost;
    }
}

/// One swap: the upgrade that does not fit in what is left, paid for by a downgrade of another
/// tensor that frees enough bytes, with the largest net error decrease (if any is positive).
/// The walk along the hulls cannot make these: a budget a few bytes short of one large step
/// (an embedding's) is spent on small steps instead, and no later step gives them back.
fn swap(tensors: &[Vec<Choice>], picks: &mut [usize], left: &mut u64) -> bool {
    // Every downgrade: (bytes freed, error added, tensor, choice), most bytes freed first.
    let mut downs: Vec<(u64, f64, usize, usize)> = Vec::new();
    for (t, choices) in tensors.iter().enumerate() {
        let Some(&cur) = choices.get(picks[t]) else {
            continue;
        };
        for (i, c) in choices.iter().enumerate() {
            if c.bytes < cur.bytes {
                downs.push((cur.bytes - c.bytes, c.error - cur.error, t, i));
            }
        }
    }
    downs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    // For each prefix (downgrades freeing at least some amount): the least error added, and the
    // least among other tensors than that one's.
    let mut best_two: Vec<(usize, Option<usize>)> = Vec::with_capacity(downs.len());
    for (k, d) in downs.iter().enumerate() {
        let (mut b1, mut b2) = best_two.last().copied().map_or((k, None), |(a, b)| (a, b));
        if k > 0 {
            if d.1 < downs[b1].1 {
                if d.2 != downs[b1].2 {
                    b2 = Some(b1);
                }
                b1 = k;
            } else if d.2 != downs[b1].2 && b2.is_none_or(|j| d.1 < downs[j].1) {
                b2 = Some(k);
            }
        }
        best_two.push((b1, b2));
    }
    let mut best: Option<(f64, usize, usize, usize)> = None; // (net, tensor, choice, down)
    for (t, choices) in tensors.iter().enumerate() {
        let Some(&cur) = choices.get(picks[t]) else {
            continue;
        };
        for (i, c) in choices.iter().enumerate() {
            if c.bytes <= cur.bytes || c.error >= cur.error {
                continue;
            }
            let cost = c.bytes - cur.bytes;
            if cost <= *left {
                continue; // the fill's
            }
            let need = cost - *left;
            let k = downs.partition_point(|d| d.0 >= need);
            if k == 0 {
                continue;
            }
            let (b1, b2) = best_two[k - 1];
            let Some(d) = (if downs[b1].2 != t { Some(b1) } else { b2 }) else {
                continue;
            };
            let net = (cur.error - c.error) - downs[d].1;
            if net > 0.0 && best.is_none_or(|(n, ..)| net > n) {
                best = Some((net, t, i, d));
            }
        }
    }
    let Some((_, t, i, d)) = best else {
        return false;
    };
    let (freed, _, dt, di) = downs[d];
    let cost = tensors[t][i].bytes - tensors[t][picks[t]].bytes;
    *left = *left + freed - cost;
    picks[t] = i;
    picks[dt] = di;
    true
}

/// Chooses one type per tensor within `budget` bytes (see the module documentation).
pub fn allocate(
    tensors: &[Vec<Choice>],
    budget: u64,
) -> std::result::Result<Allocation, Unreachable> {
    let hulls: Vec<Vec<usize>> = tensors.iter().map(|c| hull(c)).collect();
    let mut at: Vec<usize> = vec![0; tensors.len()]; // position on the hull
    let min_bytes: u64 = hulls
        .iter()
        .zip(tensors)
        .map(|(h, c)| h.first().map_or(0, |&i| c[i].bytes))
        .sum();
    if min_bytes > budget {
        return Err(Unreachable { min_bytes });
    }
    let mut left = budget - min_bytes;
    let step = |t: usize, pos: usize| -> Option<Step> {
        let h = &hulls[t];
        let (from, to) = (tensors[t][*h.get(pos)?], tensors[t][*h.get(pos + 1)?]);
        Some(Step {
            gain_per_byte: (from.error - to.error) / (to.bytes - from.bytes) as f64,
            tensor: t,
            to: pos + 1,
        })
    };
    let mut heap: BinaryHeap<Step> = (0..tensors.len()).filter_map(|t| step(t, 0)).collect();
    while let Some(s) = heap.pop() {
        let h = &hulls[s.tensor];
        let (from, to) = (
            tensors[s.tensor][h[at[s.tensor]]],
            tensors[s.tensor][h[s.to]],
        );
        let cost = to.bytes - from.bytes;
        if cost > left {
            // this tensor's hull ends here; the fill pass may still find a smaller step
            continue;
        }
        left -= cost;
        at[s.tensor] = s.to;
        if let Some(n) = step(s.tensor, s.to) {
            heap.push(n);
        }
    }
    let mut picks: Vec<usize> = at
        .iter()
        .zip(&hulls)
        .map(|(&pos, h)| h.get(pos).copied().unwrap_or(0))
        .collect();
    fill(tensors, &mut picks, &mut left);
    // Swaps, each followed by a fill, while one lowers the total error.
    for _ in 0..MAX_SWAPS {
        if !swap(tensors, &mut picks, &mut left) {
            break;
        }
        fill(tensors, &mut picks, &mut left);
    }
    let bytes = budget - left;
    let error = picks
        .iter()
        .zip(tensors)
        .filter(|(_, c)| !c.is_empty())
        .map(|(&i, c)| c[i].error)
        .sum();
    Ok(Allocation {
        picks,
        bytes,
        error,
    })
}

/// Parses a size for `--target-size`: bytes, or a number with K/M/G/T (decimal, as file sizes
/// are shown) or KiB/MiB/GiB/TiB (binary), an optional trailing `B`: `3.2GB`, `3.2G`, `900MiB`.
pub fn parse_target_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let (num, mult) = [
        ("TIB", 1u64 << 40),
        ("GIB", 1 << 30),
        ("MIB", 1 << 20),
        ("KIB", 1 << 10),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1_000),
        ("T", 1_000_000_000_000),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("K", 1_000),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| upper.strip_suffix(suf).map(|n| (n.trim(), *m)))
    .unwrap_or((upper.as_str(), 1));
    let v: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a size (e.g. 3.2GB, 900MiB, 123456789)"))?;
    if !v.is_finite() || v <= 0.0 {
        bail!("{s:?} is not a positive size");
    }
    let bytes = (v * mult as f64).floor();
    if bytes >= u64::MAX as f64 {
        bail!("{s:?} is too large");
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType::*;

    fn c(ty: GgmlType, bytes: u64, error: f64) -> Choice {
        Choice { ty, bytes, error }
    }

    /// Every assignment, for checking the greedy result on small cases.
    fn brute_force(tensors: &[Vec<Choice>], budget: u64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut idx = vec![0usize; tensors.len()];
        loop {
            let bytes: u64 = idx.iter().zip(tensors).map(|(&i, c)| c[i].bytes).sum();
            if bytes <= budget {
                let e: f64 = idx.iter().zip(tensors).map(|(&i, c)| c[i].error).sum();
                best = Some(best.map_or(e, |b: f64| b.min(e)));
            }
            let mut k = 0;
            loop {
                if k == idx.len() {
                    return best;
                }
                idx[k] += 1;
                if idx[k] < tensors[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        let ch = vec![
            c(Q2_K, 100, 10.0),
            c(Q3_K, 150, 9.5), // above the segment Q2_K–Q4_K: dropped
            c(Q4_K, 200, 4.0),
            c(Q5_0, 250, 5.0), // larger and worse than Q4_K: dropped
            c(Q6_K, 300, 1.0),
        ];
        assert_eq!(hull(&ch), vec![0, 2, 4]);
    }

    #[test]
    fn never_exceeds_the_budget_and_is_optimal_on_hull_vertices() {
        let tensors = vec![
            vec![c(Q2_K, 10, 8.0), c(Q4_K, 20, 2.0), c(Q6_K, 30, 0.5)],
            vec![c(Q2_K, 40, 3.0), c(Q4_K, 80, 1.0), c(Q6_K, 120, 0.2)],
            vec![c(Q2_K, 5, 1.0), c(Q4_K, 10, 0.1), c(Q6_K, 15, 0.01)],
        ];
        for budget in 55..=170 {
            let a = allocate(&tensors, budget).unwrap();
            assert!(a.bytes <= budget, "budget {budget}: {a:?}");
            let real: u64 = a.picks.iter().zip(&tensors).map(|(&i, c)| c[i].bytes).sum();
            assert_eq!(real, a.bytes);
            let best = brute_force(&tensors, budget).unwrap();
            // greedy on hulls is within one step of the optimum; at these sizes it finds it
            assert!(
                a.error <= best * 1.5 + 1e-12,
                "budget {budget}: {} vs {best}",
                a.error
            );
        }
    }

    /// A budget a few bytes short of one large step: the walk spends it on a small step, and
    /// a swap gives that back to take the large one (the optimum here).
    #[test]
    fn a_swap_takes_the_large_step_the_walk_cannot() {
        let tensors = vec![
            vec![c(Q4_K, 100, 1.0), c(Q8_0, 200, 0.0)],
            vec![c(Q4_K, 10, 0.5), c(Q8_0, 20, 0.0)],
        ];
        let a = allocate(&tensors, 210).unwrap();
        assert_eq!(a.picks, vec![1, 0], "{a:?}");
        assert_eq!(a.bytes, 210);
        assert_eq!(a.error, brute_force(&tensors, 210).unwrap());
    }

    #[test]
    fn too_small_a_budget_names_the_smallest_size() {
        let tensors = vec![
            vec![c(Q2_K, 10, 8.0), c(Q4_K, 20, 2.0)],
            vec![c(Q2_K, 7, 1.0)],
        ];
        let e = allocate(&tensors, 16).unwrap_err();
        assert_eq!(e.min_bytes, 17);
        assert!(allocate(&tensors, 17).is_ok());
    }

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_target_size("3.2GB").unwrap(), 3_200_000_000);
        assert_eq!(parse_target_size("3.2g").unwrap(), 3_200_000_000);
        assert_eq!(parse_target_size("900MiB").unwrap(), 900 << 20);
        assert_eq!(parse_target_size("12345").unwrap(), 12345);
        assert!(parse_target_size("-1G").is_err());
        assert!(parse_target_size("big").is_err());
    }
}
