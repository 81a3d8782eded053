//! Measures what quantizing a planned tensor to a type does to its values: the rows are read
//! from the store exactly as an export reads them (views, ops, block scales, the converter's
//! intermediate rounding), quantized to each candidate type with the importance weights the
//! export would use, dequantized as ggml's `to_float` does, and compared with the values.
//!
//! The error of one type on one tensor is the importance-weighted squared error, summed over a
//! sample of the rows, together with the weighted energy of the same rows:
//!
//! ```text
//! err    = Σ_rows Σ_j w_j (x_j − x̂_j)²        signal = Σ_rows Σ_j w_j x_j²
//! ```
//!
//! with `w_j` the imatrix entry of column `j` (the mean squared activation that multiplies it,
//! so `err` estimates `E‖ΔW·a‖²`, the noise the type adds to the layer's output) or 1 without
//! one. `err / signal` is the tensor's relative (noise-to-signal) error. Rows are sampled every
//! [`sample_stride`] rows; sums are taken in row order, so a measurement is reproducible bit
//! for bit whatever the thread count.

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::export::{round_through, BlockScales, Mxfp4Repack, PieceGeometry};
use crate::arch::transform::ValueOp;
use crate::gguf::GgmlType;
use crate::plan::{PlannedTensor, TensorSource};
use crate::quant;
use crate::store::Store;

/// Rows of one tensor at or above which only every `SAMPLE_STRIDE`-th row is measured.
const SAMPLE_FROM_ROWS: usize = 256;

/// Every how many rows one is measured in a large tensor: one in eight keeps the measurement of
/// six candidate types below one full quantization pass, and the error of a sum over hundreds
/// of rows is within a few percent of the whole tensor's.
pub const SAMPLE_STRIDE: usize = 8;

/// Every how many rows one is read in a quick screen of a large tensor (see
/// [`screen_stride`]).
pub const SCREEN_STRIDE: usize = 64;

/// Values decoded per window while measuring.
const WINDOW_VALUES: usize = 4 << 20;

/// The sampling stride for a tensor of `nrows` rows (1: every row).
pub fn sample_stride(nrows: usize) -> usize {
    if nrows >= SAMPLE_FROM_ROWS {
        SAMPLE_STRIDE
    } else {
        1
    }
}

/// The stride of a quick screen: a coarser sample that tells whether a type is worth a full
/// measurement (every row of a tensor too small to be sampled).
pub fn screen_stride(nrows: usize) -> usize {
    if nrows >= SAMPLE_FROM_ROWS {
        SCREEN_STRIDE
    } else {
        1
    }
}

/// The error sums of one candidate type on one tensor (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measured {
    pub err: f64,
    pub signal: f64,
}

impl Measured {
    /// `err / signal`, 0 for a tensor of zeros.
    pub fn relative(&self) -> f64 {
        if self.signal > 0.0 {
            self.err / self.signal
        } else {
            0.0
        }
    }

    fn add(&mut self, o: Measured) {
        self.err += o.err;
        self.signal += o.signal;
    }
}

/// Measures every type of `candidates` on tensor `t` (its own `ggml_type` is not used).
/// `weights` are the importance weights the export would quantize it with: `ncols` values per
/// expert (`ncols` for a 2-D tensor).
pub fn measure(
    store: &Store,
    t: &PlannedTensor,
    candidates: &[GgmlType],
    weights: Option<&[f32]>,
) -> Result<Vec<Measured>> {
    measure_sampled(
        store,
        t,
        candidates,
        weights,
        sample_stride(t.nrows() as usize),
    )
}

/// [`measure`] on every `stride`-th row.
pub fn measure_sampled(
    store: &Store,
    t: &PlannedTensor,
    candidates: &[GgmlType],
    weights: Option<&[f32]>,
    stride: usize,
) -> Result<Vec<Measured>> {
    let stride = stride.max(1);
    let codecs = candidates
        .iter()
        .map(|&ty| {
            quant::codec(ty).with_context(|| format!("tensor {}: gmat cannot write {ty}", t.name))
        })
        .collect::<Result<Vec<_>>>()?;
    let ncols = t.ncols() as usize;
    for (ty, _) in candidates.iter().zip(&codecs) {
        if ty.row_bytes(ncols as u64).is_none() {
            anyhow::bail!(
                "tensor {}: rows of {ncols} values do not fit {ty} blocks",
                t.name
            );
        }
    }
    let nrows = t.nrows() as usize;
    // Rows per expert: the importance weights change with the expert.
    let rows_per_expert = if t.dims.len() >= 3 {
        t.dims[1] as usize
    } else {
        nrows.max(1)
    };
    let weights_of = |row: usize| -> Option<&[f32]> {
        let w = weights?;
        let e = row / rows_per_expert.max(1);
        w.get(e * ncols..(e + 1) * ncols).or(w.get(..ncols))
    };
    let mut totals = vec![Measured::default(); candidates.len()];
    let row_errors = |vals: &[f32], row: usize| -> Vec<Measured> {
        let w = weights_of(row);
        let mut q = Vec::new();
        let mut back = vec![0f32; vals.len()];
        codecs
            .iter()
            .map(|codec| {
                let bytes = codec.ggml_type().row_bytes(vals.len() as u64).unwrap_or(0) as usize;
                q.clear();
                q.resize(bytes, 0);
                codec.quantize_row(vals, w, &mut q);
                codec.dequantize_row(&q, &mut back);
                compare(vals, &back, w)
            })
            .collect()
    };
    match &t.source {
        TensorSource::Generated(values) => {
            for (row, vals) in values.chunks_exact(ncols.max(1)).enumerate() {
                if row.is_multiple_of(stride) {
                    for (tot, m) in totals.iter_mut().zip(row_errors(vals, row)) {
                        tot.add(m);
                    }
                }
            }
        }
        TensorSource::Stored(pieces) => {
            let rows = nrows / pieces.len().max(1);
            for (p, piece) in pieces.iter().enumerate() {
                let mut g = PieceGeometry::new(piece, ncols, rows, 1);
                g.chunk_rows = (WINDOW_VALUES / ncols.max(1)).max(1);
                let scales = match &piece.scale {
                    Some(sc) => Some(BlockScales::load(store, sc, &piece.entry.shape)?),
                    None => None,
                };
                let mxfp4 = match &piece.mxfp4 {
                    Some(m) => Some(Mxfp4Repack::load(store, m)?),
                    None => None,
                };
                // values the converter computes are rounded to its float type first
                let computed = piece.scale.is_some() || piece.op != ValueOp::None;
                let rounding = (computed
                    && matches!(t.intermediate, GgmlType::BF16 | GgmlType::F16))
                .then_some(t.intermediate);
                let f16_source = piece.entry.dtype == crate::source::Dtype::F16;
                let mut reader = store.reader(&piece.entry)?;
                let mut r0 = 0;
                while r0 < rows {
                    let r1 = (r0 + g.chunk_rows).min(rows);
                    let first = p * rows;
                    let sampled: Vec<usize> = (r0..r1)
                        .filter(|r| (first + r).is_multiple_of(stride))
                        .collect();
                    let (lo, hi) = g.source_range(r0, r1);
                    let next =
                        (r1 < rows).then(|| g.source_range(r1, (r1 + g.chunk_rows).min(rows)));
                    let (g, scales, mxfp4) = (&g, scales.as_ref(), mxfp4.as_ref());
                    let per_row = reader.with_window(
                        lo,
                        hi,
                        next,
                        || {},
                        |bytes| {
                            sampled
                                .par_iter()
                                .map(|&r| -> Vec<Measured> {
                                    let mut vals = Vec::with_capacity(ncols);
                                    match mxfp4 {
                                        Some(mx) => {
                                            let b = mx.repack(g, r, bytes, lo);
                                            vals.resize(ncols, 0.0);
                                            mx.codec.dequantize_row(&b, &mut vals);
                                        }
                                        None => g.row_values(r, bytes, lo, scales, &mut vals),
                                    }
                                    piece.op.apply(&mut vals, f16_source);
                                    round_through(&mut vals, rounding);
                                    row_errors(&vals, first + r)
                                })
                                .collect::<Vec<_>>()
                        },
                    );
                    let per_row = match per_row {
                        Ok(v) => v,
                        Err(e) => return Err(reader.finish().err().unwrap_or(e)),
                    };
                    for row in per_row {
                        for (tot, m) in totals.iter_mut().zip(row) {
                            tot.add(m);
                        }
                    }
                    r0 = r1;
                }
                reader
                    .finish()
                    .with_context(|| format!("tensor {}", t.name))?;
            }
        }
    }
    Ok(totals)
}

/// The weighted squared error and energy of one row (sums in column order).
fn compare(x: &[f32], back: &[f32], w: Option<&[f32]>) -> Measured {
    let mut m = Measured::default();
    for (j, (&a, &b)) in x.iter().zip(back).enumerate() {
        let wj = w.map_or(1.0, |w| w[j] as f64);
        let (a, b) = (a as f64, b as f64);
        m.err += wj * (a - b) * (a - b);
        m.signal += wj * a * a;
    }
    m
}

/// The codec-level check that a type is usable for rows of `ncols`: used to filter candidates.
pub fn fits(ty: GgmlType, ncols: u64) -> bool {
    ty.row_bytes(ncols).is_some() && quant::codec(ty).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_weights_columns() {
        let m = compare(&[1.0, 2.0], &[1.5, 2.0], Some(&[4.0, 1.0]));
        assert_eq!(m.err, 4.0 * 0.25);
        assert_eq!(m.signal, 4.0 + 4.0);
        let m = compare(&[1.0, -2.0], &[0.0, -1.0], None);
        assert_eq!(m.err, 2.0);
        assert_eq!(m.relative(), 2.0 / 5.0);
    }

    #[test]
    fn large_tensors_are_sampled() {
        assert_eq!(sample_stride(10), 1);
        assert_eq!(sample_stride(4096), SAMPLE_STRIDE);
    }
}
