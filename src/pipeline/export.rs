//! Executes an export plan: header first, then every tensor's data written in place at its
//! planned offset. Rows are converted and quantized in parallel in bounded chunks, so memory
//! does not grow with the model. The file is written under a temporary name and renamed only
//! when complete.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use indicatif::ProgressBar;

use super::progress;
use super::writer::BackgroundWriter;
use crate::arch::transform::ValueOp;
use crate::fsio;
use crate::gguf::GgmlType;
use crate::plan::split::{self, Shard, SplitLimits};
use crate::plan::{ExportPlan, Mxfp4Source, PlannedTensor, ScaleSource, SourcePiece, TensorSource};
use crate::quant::{self, TypeCodec};
use crate::store::{Store, TensorReader};

/// f32 values converted per chunk: bounds memory to a few tens of MiB per chunk.
const CHUNK_VALUES: usize = 4 << 20;

/// What an export wrote.
pub struct ExportStats {
    /// The files written (one, or the shards in order).
    pub paths: Vec<PathBuf>,
    pub file_bytes: u64,
}

/// One output of an export: a plan, where it goes, and how it is split.
pub struct Output<'p> {
    pub plan: &'p ExportPlan,
    pub path: PathBuf,
    pub limits: SplitLimits,
}

/// How an export runs.
#[derive(Clone, Copy, Default)]
pub struct RunOptions<'a> {
    /// No progress bar.
    pub quiet: bool,
    /// Write values too large for the output type as infinities (as the converter does)
    /// instead of refusing the tensor.
    pub allow_overflow: bool,
    /// The run's inputs: no output may be one of them or inside an input store.
    pub inputs: Option<&'a fsio::Inputs>,
}

/// Rows whose largest magnitude reaches this are checked after conversion for values that
/// became infinite (a type's scale or value overflowing). No ggml type's scales exceed the
/// row's largest value by anything near 64x, so rows below it cannot overflow F16 (65504).
const OVERFLOW_CHECK_FROM: f32 = 1024.0;

/// Writes `plan` to `out`, split into shards when `limits` says so. Every file is written under
/// a temporary name; the names are swapped in only when all files are complete.
pub fn run(
    store: &Store,
    plan: &ExportPlan,
    out: &Path,
    limits: SplitLimits,
    quiet: bool,
) -> Result<ExportStats> {
    let mut stats = run_all(
        store,
        &[Output {
            plan,
            path: out.to_path_buf(),
            limits,
        }],
        &RunOptions {
            quiet,
            ..RunOptions::default()
        },
    )?;
    Ok(stats.remove(0))
}

/// Writes several outputs (a text model and its projector) as one unit: every file under a
/// unique temporary name, all renamed into place only when every one is complete, none on an
/// error. Every output is locked for the run: a second gmat writing one of them is refused.
pub fn run_all(
    store: &Store,
    outputs: &[Output],
    options: &RunOptions,
) -> Result<Vec<ExportStats>> {
    let mut all_shards = Vec::new();
    for o in outputs {
        all_shards.push(split::shards(o.plan, &o.path, o.limits)?);
    }
    // Every file written: none an input or a directory, no two the same.
    let finals: Vec<&Path> = all_shards
        .iter()
        .flatten()
        .map(|s| s.path.as_path())
        .collect();
    for (i, p) in finals.iter().enumerate() {
        match options.inputs {
            Some(inputs) => inputs.check_output(p, "output")?,
            None => fsio::check_output_file(p, "output")?,
        }
        let r = fsio::resolve(p, false);
        if finals[..i].iter().any(|q| fsio::resolve(q, false) == r) {
            bail!(
                "two files of this export would both be {}; give the vision projector another name (--mmproj FILE)",
                p.display()
            );
        }
    }
    let mut locks = Vec::new();
    for p in &finals {
        locks.push(fsio::lock_output(p)?);
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        fsio::remove_stale_temps(fsio::parent_dir(p), name.as_deref());
    }
    let bytes: u64 = outputs.iter().map(|o| o.plan.data_bytes()).sum();
    let bar = progress::bytes_bar(bytes, "export", options.quiet);
    let mut written: Vec<PathBuf> = Vec::new();
    let mut totals = vec![0u64; outputs.len()];
    let result = (|| -> Result<()> {
        for (k, (o, shards)) in outputs.iter().zip(&all_shards).enumerate() {
            for shard in shards {
                let (file, tmp) = fsio::create_temp(&shard.path)?;
                written.push(tmp.clone());
                totals[k] += write_shard(store, o.plan, shard, file, &tmp, &bar, options)?;
            }
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
    for (i, (shard, tmp)) in all_shards.iter().flatten().zip(&written).enumerate() {
        if let Err(e) = std::fs::rename(tmp, &shard.path) {
            for p in &written[i..] {
                let _ = std::fs::remove_file(p);
            }
            return Err(e).with_context(|| format!("cannot move {} into place", tmp.display()));
        }
    }
    if let Some(dir) = finals.first().map(|p| fsio::parent_dir(p)) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    drop(locks);
    Ok(all_shards
        .into_iter()
        .zip(totals)
        .map(|(shards, file_bytes)| ExportStats {
            paths: shards.into_iter().map(|s| s.path).collect(),
            file_bytes,
        })
        .collect())
}

fn write_shard(
    store: &Store,
    plan: &ExportPlan,
    shard: &Shard,
    file: std::fs::File,
    tmp: &Path,
    bar: &ProgressBar,
    options: &RunOptions,
) -> Result<u64> {
    let header = shard.header.to_bytes();
    let data_start = header.len() as u64;
    let total = data_start + shard.header.data_size();
    file.set_len(total)?;
    file.write_all_at(&header, 0)?;
    let jobs = shard_jobs(plan, shard, data_start)?;
    std::thread::scope(|s| -> Result<()> {
        let mut writer = BackgroundWriter::start(s, &file);
        // The next piece's reader, opened and first window decoded while this piece finishes.
        let mut preloaded: Option<TensorReader> = None;
        for (k, job) in jobs.iter().enumerate() {
            let t = job.tensor;
            bar.set_message(crate::escape::controls(&t.name).into_owned());
            let done = match job.piece {
                None => write_generated(job, &mut writer),
                Some(p) => {
                    let piece = job.geometry(p);
                    let reader = match preloaded.take() {
                        Some(r) => r,
                        None => store.reader(&piece.piece.entry)?,
                    };
                    let mut next =
                        match jobs.get(k + 1).and_then(|j| j.piece.map(|p| j.geometry(p))) {
                            Some(g) => store
                                .reader(&g.piece.entry)
                                .ok()
                                .map(|r| (r, g.first_window())),
                            None => None,
                        };
                    let done = write_piece(
                        store,
                        job,
                        &piece,
                        reader,
                        next.as_mut(),
                        &mut writer,
                        options.allow_overflow,
                    );
                    preloaded = next.map(|(r, _)| r);
                    done
                }
            };
            done.with_context(|| format!("tensor {}", t.name))?;
            bar.inc(job.out_bytes);
        }
        writer.finish()
    })
    .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()?;
    Ok(total)
}

/// One unit of output: a generated tensor, or one stored piece of a tensor (one expert of a
/// stacked tensor), with where its rows go.
struct Job<'p> {
    tensor: &'p PlannedTensor,
    /// Index into the tensor's stored pieces; `None` for a generated tensor.
    piece: Option<usize>,
    codec: &'static dyn TypeCodec,
    ncols: usize,
    /// Rows of this piece (all rows of a generated tensor).
    nrows: usize,
    row_bytes: usize,
    /// Output file offset of the first row.
    at: u64,
    out_bytes: u64,
}

/// The jobs of a shard in file order.
fn shard_jobs<'p>(plan: &'p ExportPlan, shard: &Shard, data_start: u64) -> Result<Vec<Job<'p>>> {
    let mut jobs = Vec::new();
    for (&i, info) in shard.tensors.iter().zip(&shard.header.tensors) {
        let t = &plan.tensors[i];
        let codec = quant::codec(t.ggml_type)
            .with_context(|| format!("tensor {}: no codec for the planned type", t.name))?;
        let ncols = t.ncols() as usize;
        let row_bytes = t
            .ggml_type
            .row_bytes(ncols as u64)
            .with_context(|| format!("tensor {}: a row does not fit the type", t.name))?
            as usize;
        let at = data_start + info.offset;
        let nrows = t.nrows() as usize;
        let pieces = match &t.source {
            TensorSource::Generated(_) => None,
            TensorSource::Stored(p) => Some(p.len()),
        };
        let rows = nrows / pieces.unwrap_or(1).max(1);
        for k in 0..pieces.unwrap_or(1) {
            jobs.push(Job {
                tensor: t,
                piece: pieces.map(|_| k),
                codec,
                ncols,
                nrows: rows,
                row_bytes,
                at: at + (k * rows * row_bytes) as u64,
                out_bytes: (rows * row_bytes) as u64,
            });
        }
    }
    Ok(jobs)
}

impl<'p> Job<'p> {
    /// The converter's type to round a piece's values through first: only for values it
    /// computes (dequantized, or changed by an op) and when the output type is another.
    fn round_to(&self, piece: &SourcePiece) -> Option<GgmlType> {
        let t = self.tensor;
        let computed = piece.scale.is_some() || piece.op != ValueOp::None;
        let narrow = matches!(t.intermediate, GgmlType::BF16 | GgmlType::F16);
        (computed && narrow && t.intermediate != t.ggml_type).then_some(t.intermediate)
    }

    fn geometry(&self, piece: usize) -> PieceGeometry<'p> {
        let TensorSource::Stored(pieces) = &self.tensor.source else {
            unreachable!("only stored tensors have pieces")
        };
        PieceGeometry::new(&pieces[piece], self.ncols, self.nrows)
    }

    /// The importance weights of the piece (stacked experts: piece i is expert i, with its own
    /// slice of the weights).
    fn weights(&self) -> Option<&'p [f32]> {
        let i = self.piece.unwrap_or(0);
        let n = self.ncols;
        self.tensor
            .imatrix
            .as_deref()
            .map(|w| &w[i * n..(i + 1) * n])
    }
}

/// Which source bytes a window of output rows of one piece reads: output row `r` is the
/// piece view's elements `r·ncols .. (r+1)·ncols`.
struct PieceGeometry<'p> {
    piece: &'p SourcePiece,
    ncols: usize,
    nrows: usize,
    esize: usize,
    /// Source elements per output row: `ncols`, or the code bytes of a row of MXFP4 blocks.
    src_cols: usize,
    chunk_rows: usize,
}

impl<'p> PieceGeometry<'p> {
    fn new(piece: &'p SourcePiece, ncols: usize, nrows: usize) -> Self {
        PieceGeometry {
            piece,
            ncols,
            nrows,
            esize: piece.entry.dtype.size(),
            src_cols: if piece.mxfp4.is_some() {
                ncols / 2
            } else {
                ncols
            },
            chunk_rows: (CHUNK_VALUES / ncols.max(1)).max(1),
        }
    }

    /// The source byte range output rows `r0..r1` read.
    fn source_range(&self, r0: usize, r1: usize) -> (usize, usize) {
        let n = self.src_cols as u64;
        let (lo, hi) = self.piece.view.source_span(r0 as u64 * n, r1 as u64 * n);
        (lo as usize * self.esize, hi as usize * self.esize)
    }

    fn first_window(&self) -> (usize, usize) {
        self.source_range(0, self.chunk_rows.min(self.nrows))
    }

    /// Appends output row `r`'s values, converted to f32 (and dequantized with `scales`),
    /// from `bytes` (the source bytes starting at byte `lo`).
    fn row_values(
        &self,
        r: usize,
        bytes: &[u8],
        lo: usize,
        scales: Option<&BlockScales>,
        vals: &mut Vec<f32>,
    ) {
        let (n, esize, dtype) = (self.ncols as u64, self.esize, self.piece.entry.dtype);
        self.piece
            .view
            .for_each_run(r as u64 * n, (r as u64 + 1) * n, |s, len| {
                let at = s as usize * esize - lo;
                let start = vals.len();
                dtype.extend_f32(&bytes[at..at + len as usize * esize], vals);
                if let Some(sc) = scales {
                    sc.apply(s, &mut vals[start..]);
                }
            });
    }
}

/// A weight's block scales in memory (`dequant_simple`), for its source elements.
struct BlockScales {
    values: Vec<f32>,
    /// The weight's shape and, per axis, the block and the scale tensor's stride.
    shape: Vec<u64>,
    block: Vec<u64>,
    strides: Vec<u64>,
}

impl BlockScales {
    fn load(store: &Store, sc: &ScaleSource, weight_shape: &[u64]) -> Result<BlockScales> {
        let bytes = store
            .reader(&sc.entry)?
            .read_all()
            .with_context(|| format!("scale tensor {}", sc.entry.name))?;
        let mut values = Vec::new();
        sc.entry.dtype.extend_f32(&bytes, &mut values);
        // the scale's axes line up with the weight's first axes (unsqueezed at the end)
        let mut sshape = sc.entry.shape.clone();
        sshape.resize(weight_shape.len(), 1);
        let mut strides = vec![1u64; sshape.len()];
        for i in (0..sshape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * sshape[i + 1];
        }
        Ok(BlockScales {
            values,
            shape: weight_shape.to_vec(),
            block: sc.block.clone(),
            strides,
        })
    }

    /// Multiplies `vals`, the source elements from flat index `first` on, by their scales (in
    /// f32, as `weight.float() * scale`).
    fn apply(&self, first: u64, vals: &mut [f32]) {
        let nd = self.shape.len();
        if nd == 2 {
            let cols = self.shape[1];
            let (b0, b1, s0) = (self.block[0], self.block[1], self.strides[0]);
            for (k, v) in vals.iter_mut().enumerate() {
                let e = first + k as u64;
                let (r, c) = (e / cols, e % cols);
                *v *= self.values[((r / b0) * s0 + c / b1) as usize];
            }
            return;
        }
        for (k, v) in vals.iter_mut().enumerate() {
            let mut e = first + k as u64;
            let mut at = 0u64;
            for d in (0..nd).rev() {
                let i = e % self.shape[d];
                e /= self.shape[d];
                at += (i / self.block[d]) * self.strides[d];
            }
            *v *= self.values[at as usize];
        }
    }
}

/// A checkpoint's MXFP4 codes repacked into ggml MXFP4 blocks (`repack_mxfp4`): per block of
/// 32 values, the E8M0 scale byte, then 16 bytes whose byte j holds value j in the low nibble
/// and value j + 16 in the high one (the source packs values 2i and 2i + 1 into byte i).
struct Mxfp4Repack {
    scales: Vec<u8>,
    view: crate::arch::transform::View,
    /// The output type is MXFP4: copy the blocks; otherwise they are dequantized first.
    direct: bool,
    codec: &'static dyn TypeCodec,
}

impl Mxfp4Repack {
    fn load(store: &Store, m: &Mxfp4Source, out: GgmlType) -> Result<Mxfp4Repack> {
        let scales = store
            .reader(&m.entry)?
            .read_all()
            .with_context(|| format!("MXFP4 scale tensor {}", m.entry.name))?;
        Ok(Mxfp4Repack {
            scales,
            view: m.view.clone(),
            direct: out == GgmlType::MXFP4,
            codec: quant::codec(GgmlType::MXFP4).context("no MXFP4 codec")?,
        })
    }

    /// Output row `r`'s ggml MXFP4 blocks, from `bytes` (the code bytes from byte `lo` on).
    fn repack(&self, g: &PieceGeometry, r: usize, bytes: &[u8], lo: usize) -> Vec<u8> {
        let nb = g.ncols / 32;
        let mut codes = Vec::with_capacity(nb * 16);
        let n = g.src_cols as u64;
        g.piece
            .view
            .for_each_run(r as u64 * n, (r as u64 + 1) * n, |s, len| {
                let at = s as usize - lo;
                codes.extend_from_slice(&bytes[at..at + len as usize]);
            });
        let mut out = Vec::with_capacity(nb * 17);
        for (b, src) in codes.chunks_exact(16).enumerate() {
            let scale = self.scales[self.view.source_index((r * nb + b) as u64) as usize];
            out.push(scale);
            let mut v = [0u8; 32];
            for (i, byte) in src.iter().enumerate() {
                v[2 * i] = byte & 0x0f;
                v[2 * i + 1] = byte >> 4;
            }
            out.extend((0..16).map(|j| v[j] | (v[j + 16] << 4)));
        }
        out
    }
}

/// Rounds values to the type the converter writes them in before llama-quantize reads them.
fn round_through(vals: &mut [f32], to: Option<GgmlType>) {
    use crate::quant::rounding::{
        bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits,
    };
    match to {
        Some(GgmlType::BF16) => vals
            .iter_mut()
            .for_each(|v| *v = bf16_bits_to_f32(f32_to_bf16_bits(*v))),
        Some(GgmlType::F16) => vals
            .iter_mut()
            .for_each(|v| *v = f16_bits_to_f32(f32_to_f16_bits(*v))),
        _ => {}
    }
}

fn write_generated(job: &Job, file: &mut BackgroundWriter) -> Result<()> {
    let t = job.tensor;
    let TensorSource::Generated(values) = &t.source else {
        unreachable!("only generated tensors have no pieces")
    };
    let mut out = file.buffer();
    out.resize(job.out_bytes as usize, 0);
    quant::quantize_rows(job.codec, values, job.ncols, t.imatrix.as_deref(), &mut out);
    file.write(out, job.at)
}

/// Converts and quantizes one piece's rows a window at a time. Encoded tensors decode the next
/// window while this one is converted; during the last window, `next` (the following piece's
/// reader and its first window) is decoded instead. Any encoding works: raw tensors are read
/// from the map, encoded ones decoded (deltas and references through the base store). The
/// content hash is checked at the end, after the rows are written to the (still temporary)
/// output.
fn write_piece(
    store: &Store,
    job: &Job,
    g: &PieceGeometry,
    mut reader: TensorReader,
    mut next: Option<&mut (TensorReader, (usize, usize))>,
    file: &mut BackgroundWriter,
    allow_overflow: bool,
) -> Result<()> {
    let (ncols, nrows, row_bytes) = (job.ncols, job.nrows, job.row_bytes);
    let (codec, weights) = (job.codec, job.weights());
    let f16_source = g.piece.entry.dtype == crate::source::Dtype::F16;
    let scales = match &g.piece.scale {
        Some(sc) => Some(BlockScales::load(store, sc, &g.piece.entry.shape)?),
        None => None,
    };
    let round_to = job.round_to(g.piece);
    let mxfp4 = match &g.piece.mxfp4 {
        Some(m) => Some(Mxfp4Repack::load(store, m, job.tensor.ggml_type)?),
        None => None,
    };
    let mut released = 0usize;
    let mut r0 = 0;
    while r0 < nrows {
        let r1 = (r0 + g.chunk_rows).min(nrows);
        let (lo, hi) = g.source_range(r0, r1);
        let next_window = (r1 < nrows).then(|| g.source_range(r1, (r1 + g.chunk_rows).min(nrows)));
        let preload = if r1 == nrows { next.take() } else { None };
        let mut out = file.buffer();
        out.resize((r1 - r0) * row_bytes, 0);
        let out_rows = &mut out;
        let side = move || {
            if let Some((r, (s, e))) = preload {
                r.preload(*s, *e);
            }
        };
        let done = reader.with_window(lo, hi, next_window, side, |bytes| {
            out_rows
                .par_chunks_mut(row_bytes)
                .enumerate()
                .try_for_each_init(
                    || Vec::with_capacity(ncols),
                    |vals: &mut Vec<f32>, (i, dst)| -> Result<()> {
                        let r = r0 + i;
                        vals.clear();
                        if let Some(mx) = &mxfp4 {
                            let blocks = mx.repack(g, r, bytes, lo);
                            if mx.direct {
                                // MXFP4 kept as MXFP4: the repacked bytes as they are
                                dst.copy_from_slice(&blocks);
                                return Ok(());
                            }
                            vals.resize(ncols, 0.0);
                            mx.codec.dequantize_row(&blocks, vals);
                        } else {
                            g.row_values(r, bytes, lo, scales.as_ref(), vals);
                        }
                        g.piece.op.apply(vals, f16_source);
                        // A branch-free scan first (vectorised); the position only on failure.
                        let (finite, amax) = vals
                            .iter()
                            .fold((true, 0f32), |(ok, m), v| (ok & v.is_finite(), m.max(v.abs())));
                        if let Some(c) = (!finite)
                            .then(|| vals.iter().position(|v| !v.is_finite()))
                            .flatten()
                        {
                            bail!(
                                "source tensor {} holds {} at row {r}, column {c}; refusing to export it",
                                g.piece.entry.name,
                                vals[c]
                            );
                        }
                        // Finite values that the output type (or the converter's intermediate
                        // type) cannot hold: checked only on rows with large values.
                        let check = !allow_overflow && amax >= OVERFLOW_CHECK_FROM;
                        let before = check.then(|| vals.clone());
                        round_through(vals, round_to);
                        if let Some(before) = &before {
                            if let Some(c) = vals.iter().position(|v| !v.is_finite()) {
                                return Err(overflow(job, g, r, c, before[c], round_to));
                            }
                        }
                        codec.quantize_row(vals, weights, dst);
                        if let Some(before) = &before {
                            let mut back = vec![0f32; vals.len()];
                            codec.dequantize_row(dst, &mut back);
                            if back.iter().any(|v| !v.is_finite()) {
                                let c = before
                                    .iter()
                                    .enumerate()
                                    .fold(0, |m, (i, v)| if v.abs() > before[m].abs() { i } else { m });
                                return Err(overflow(job, g, r, c, before[c], None));
                            }
                        }
                        Ok(())
                    },
                )
        });
        if let Err(e) = done.and_then(|d| d) {
            return Err(prefer_corruption(reader, e));
        }
        file.write(out, job.at + (r0 * row_bytes) as u64)?;
        // Views read forward: pages before the next window are done with.
        let keep_from = next_window.map_or(hi, |(s, _)| s);
        if keep_from > released {
            reader.release(released, keep_from);
            released = keep_from;
        }
        r0 = r1;
    }
    reader.finish()
}

/// The error for a finite value that becomes infinite in the output: in the converter's
/// intermediate type `via` (when given), else in the output type.
fn overflow(
    job: &Job,
    g: &PieceGeometry,
    row: usize,
    col: usize,
    value: f32,
    via: Option<GgmlType>,
) -> anyhow::Error {
    let t = job.tensor;
    let into = via.unwrap_or(t.ggml_type);
    let who = if t.ggml_type.is_quantized() {
        "llama-quantize refuses such a tensor (\"quantized data validation failed\")"
    } else {
        "convert_hf_to_gguf.py writes it as inf without a word"
    };
    anyhow::anyhow!(
        "tensor {} (from {}): the value {value} at row {row}, column {col} is too large for {} and would become inf; {who}. Give the tensor a wider type (per_tensor in the export config, e.g. F32), or pass --allow-overflow to write it anyway",
        t.name,
        g.piece.entry.name,
        into.name()
    )
}

/// A failure while reading a tensor (a NaN, a bad chunk) is reported as corruption when the
/// tensor does not match its content hash.
fn prefer_corruption(reader: crate::store::TensorReader<'_>, e: anyhow::Error) -> anyhow::Error {
    match reader.finish() {
        Err(corrupt) => corrupt,
        Ok(()) => e,
    }
}
