//! Executes an export plan: header first, then every tensor's data written in place at its
//! planned offset. Rows are converted and quantized in parallel in bounded chunks, so memory
//! does not grow with the model. The file is written under a temporary name and renamed only
//! when complete.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use indicatif::ProgressBar;

use super::progress;
use crate::plan::split::{self, Shard, SplitLimits};
use crate::plan::{ExportPlan, PlannedTensor, SourcePiece, TensorSource, Transform};
use crate::quant::{self, TypeCodec};
use crate::store::Store;

/// f32 values converted per chunk: bounds memory to a few tens of MiB per chunk.
const CHUNK_VALUES: usize = 4 << 20;

/// What an export wrote.
pub struct ExportStats {
    /// The files written (one, or the shards in order).
    pub paths: Vec<PathBuf>,
    pub file_bytes: u64,
}

/// Writes `plan` to `out`, split into shards when `limits` says so. Every file is written under
/// a temporary name; the names are swapped in only when all files are complete.
pub fn run(
    store: &Store,
    plan: &ExportPlan,
    out: &Path,
    limits: SplitLimits,
    quiet: bool,
) -> Result<ExportStats> {
    let shards = split::shards(plan, out, limits)?;
    let bar = progress::bytes_bar(plan.data_bytes(), "export", quiet);
    let mut written: Vec<PathBuf> = Vec::new();
    let mut total = 0u64;
    let result = (|| -> Result<()> {
        for shard in &shards {
            let tmp = partial_path(&shard.path);
            written.push(tmp.clone());
            total += write_shard(store, plan, shard, &tmp, &bar)?;
        }
        Ok(())
    })();
    bar.finish_and_clear();
    if let Err(e) = result {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    for shard in &shards {
        let tmp = partial_path(&shard.path);
        std::fs::rename(&tmp, &shard.path)
            .with_context(|| format!("cannot move {} into place", tmp.display()))?;
    }
    Ok(ExportStats {
        paths: shards.into_iter().map(|s| s.path).collect(),
        file_bytes: total,
    })
}

fn write_shard(
    store: &Store,
    plan: &ExportPlan,
    shard: &Shard,
    tmp: &Path,
    bar: &ProgressBar,
) -> Result<u64> {
    let header = shard.header.to_bytes();
    let data_start = header.len() as u64;
    let total = data_start + shard.header.data_size();
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.set_len(total)?;
    file.write_all_at(&header, 0)?;
    for (&i, info) in shard.tensors.iter().zip(&shard.header.tensors) {
        let t = &plan.tensors[i];
        bar.set_message(t.name.clone());
        write_tensor(store, t, &file, data_start + info.offset)
            .with_context(|| format!("tensor {}", t.name))?;
        bar.inc(t.n_bytes);
    }
    file.sync_all()?;
    Ok(total)
}

/// The temporary name an output is written under.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn write_tensor(store: &Store, t: &PlannedTensor, file: &File, at: u64) -> Result<()> {
    let codec = quant::codec(t.ggml_type).context("no codec for the planned type")?;
    let ncols = t.ncols() as usize;
    let row_bytes = t
        .ggml_type
        .row_bytes(ncols as u64)
        .context("row does not fit the type")? as usize;
    match &t.source {
        TensorSource::Generated(values) => {
            let mut out = vec![0u8; row_bytes * values.len() / ncols];
            quant::quantize_rows(codec, values, ncols, t.imatrix.as_deref(), &mut out);
            file.write_all_at(&out, at)?;
        }
        TensorSource::Stored(pieces) => {
            let rows_per_piece = t.nrows() as usize / pieces.len();
            for (i, piece) in pieces.iter().enumerate() {
                let at = at + (i * rows_per_piece * row_bytes) as u64;
                // Stacked experts: piece i is expert i, with its own slice of the weights.
                let weights = t.imatrix.as_deref().map(|w| &w[i * ncols..(i + 1) * ncols]);
                write_piece(
                    store,
                    piece,
                    codec,
                    weights,
                    ncols,
                    rows_per_piece,
                    row_bytes,
                    file,
                    at,
                )?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_piece(
    store: &Store,
    piece: &SourcePiece,
    codec: &dyn TypeCodec,
    weights: Option<&[f32]>,
    ncols: usize,
    nrows: usize,
    row_bytes: usize,
    file: &File,
    at: u64,
) -> Result<()> {
    // Any encoding: raw tensors are read from the map, encoded ones decoded a window of rows
    // at a time (deltas and references through the base store). The content hash is checked by
    // `finish`, after the rows are written to the (still temporary) output.
    let mut reader = store.reader(&piece.entry)?;
    let dtype = piece.entry.dtype;
    let esize = dtype.size();
    // 1-D tensors are permuted element-wise (a bias): treat elements as rows of one value.
    let (perm_rows, perm_len) = if piece.entry.shape.len() == 1 {
        (ncols, 1)
    } else {
        (nrows, ncols)
    };
    let source_row = |r: usize| piece.transform.source_row(r, perm_rows);
    let chunk_rows = (CHUNK_VALUES / ncols.max(1)).max(1);
    // The source bytes rows r0..r1 read: the permutation stays within a head's rows.
    let source_range = |r0: usize, r1: usize| -> (usize, usize) {
        if perm_len == 1 && piece.transform != Transform::None {
            (0, piece.entry.raw_bytes as usize)
        } else {
            let (a, b) = (r0..r1)
                .map(source_row)
                .fold((usize::MAX, 0), |(a, b), s| (a.min(s), b.max(s + 1)));
            (a * ncols * esize, b * ncols * esize)
        }
    };
    let mut out = Vec::new();
    let mut r0 = 0;
    while r0 < nrows {
        let r1 = (r0 + chunk_rows).min(nrows);
        let (lo, hi) = source_range(r0, r1);
        // Encoded tensors decode the next rows' bytes while these are converted.
        let next = (r1 < nrows).then(|| source_range(r1, (r1 + chunk_rows).min(nrows)));
        out.resize((r1 - r0) * row_bytes, 0);
        let out_rows = &mut out;
        let done = reader.with_window(lo, hi, next, |bytes| {
            out_rows
                .par_chunks_mut(row_bytes)
                .enumerate()
                .try_for_each_init(
                    || Vec::with_capacity(ncols),
                    |vals: &mut Vec<f32>, (i, dst)| -> Result<()> {
                        let r = r0 + i;
                        vals.clear();
                        if perm_len == 1 && piece.transform != Transform::None {
                            for c in 0..ncols {
                                let s = source_row(c) * esize - lo;
                                dtype.extend_f32(&bytes[s..s + esize], vals);
                            }
                        } else {
                            let s = source_row(r) * ncols * esize - lo;
                            dtype.extend_f32(&bytes[s..s + ncols * esize], vals);
                        }
                        if let Some(c) = vals.iter().position(|v| !v.is_finite()) {
                            bail!(
                                "source tensor {} holds {} at row {r}, column {c}; refusing to export it",
                                piece.entry.name,
                                vals[c]
                            );
                        }
                        codec.quantize_row(vals, weights, dst);
                        Ok(())
                    },
                )
        });
        if let Err(e) = done.and_then(|d| d) {
            return Err(prefer_corruption(reader, e));
        }
        file.write_all_at(&out, at + (r0 * row_bytes) as u64)?;
        if perm_len != 1 {
            reader.release(r0 * ncols * esize, r1 * ncols * esize);
        }
        r0 = r1;
    }
    reader.finish()
}

/// A failure while reading a tensor (a NaN, a bad chunk) is reported as corruption when the
/// tensor does not match its content hash.
fn prefer_corruption(reader: crate::store::TensorReader<'_>, e: anyhow::Error) -> anyhow::Error {
    match reader.finish() {
        Err(corrupt) => corrupt,
        Ok(()) => e,
    }
}
