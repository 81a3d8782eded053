//! Executes export plans: headers first, then every tensor's data written in place at its
//! planned offset. Rows are converted and quantized in parallel in bounded chunks, so memory
//! does not grow with the model. Files are written under temporary names and renamed only
//! when all are complete.
//!
//! Several plans (a text model and its projector; several profiles of one model) run as one
//! pass: tensors made from the same source values ([`SourceKey`]) are decoded and converted
//! once, and tensors whose bytes are the same ([`ResultKey`]: same values, type, importance
//! weights) are quantized once and written to every file that holds them. With a [`Cache`],
//! results found there are copied (checked by hash) instead of computed, and computed ones are
//! added to it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::progress;
use super::writer::{BackgroundWriter, Dest, WriterHandle};
use crate::arch::transform::ValueOp;
use crate::cache::key::{result_key, source_key, ResultKey, SourceKey};
use crate::cache::Cache;
use crate::fsio;
use crate::gguf::GgmlType;
use crate::plan::split::{self, SplitLimits};
use crate::plan::{ExportPlan, Mxfp4Source, PlannedTensor, ScaleSource, SourcePiece, TensorSource};
use crate::quant::{self, TypeCodec};
use crate::store::{Store, TensorReader};

/// f32 values converted per chunk: bounds memory to a few tens of MiB per chunk.
const CHUNK_VALUES: usize = 4 << 20;

/// Bytes copied from a cache entry at a time.
const COPY_BYTES: u64 = 2 << 20;

/// What an export wrote.
#[derive(Debug)]
pub struct ExportStats {
    /// The files written (one, or the shards in order).
    pub paths: Vec<PathBuf>,
    pub file_bytes: u64,
    /// Tensors whose bytes were copied from the cache.
    pub from_cache: usize,
    /// Tensors whose bytes were computed once for an earlier output of the same pass.
    pub shared: usize,
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
    /// The quantized-tensor cache to read and fill; `None` to bypass it.
    pub cache: Option<&'a Cache>,
}

/// Rows whose largest magnitude reaches this are checked after conversion for values that
/// became infinite (a type's scale or value overflowing). No ggml type's scales exceed the
/// row's largest value by anything near 64x, so rows below it cannot overflow F16 (65504).
const OVERFLOW_CHECK_FROM: f32 = 1024.0;

/// Writes `plan` to `out`, split into shards when `limits` says so, without a cache. Every
/// file is written under a temporary name; the names are swapped in only when all files are
/// complete.
pub fn run(
    store: &Store,
    plan: &ExportPlan,
    out: &Path,
    limits: SplitLimits,
    quiet: bool,
) -> Result<ExportStats> {
    let outputs = [Output {
        plan,
        path: out.to_path_buf(),
        limits,
    }];
    let mut stats = run_all(
        store,
        &outputs,
        &RunOptions {
            quiet,
            ..RunOptions::default()
        },
    )?;
    Ok(stats.remove(0))
}

/// Writes several outputs as one unit and one pass (see the module documentation): every file
/// under a unique temporary name, all renamed into place only when every one is complete, none
/// on an error. Every output is locked for the run: a second gmat writing one of them is
/// refused.
pub fn run_all(store: &Store, outputs: &[Output], opts: &RunOptions) -> Result<Vec<ExportStats>> {
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
        match opts.inputs {
            Some(inputs) => inputs.check_output(p, "output")?,
            None => fsio::check_output_file(p, "output")?,
        }
        let r = fsio::resolve(p, false);
        if finals[..i].iter().any(|q| fsio::resolve(q, false) == r) {
            bail!(
                "two files of this export would both be {}; give each output its own name (--mmproj FILE, or {{type}} in -o)",
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
    let bar = progress::bytes_bar(bytes, "export", opts.quiet);
    let mut written: Vec<PathBuf> = Vec::new();
    let mut stats: Vec<ExportStats> = all_shards
        .iter()
        .map(|shards| ExportStats {
            paths: shards.iter().map(|s| s.path.clone()).collect(),
            file_bytes: 0,
            from_cache: 0,
            shared: 0,
        })
        .collect();
    let result = (|| -> Result<()> {
        // Every shard file, its header written; where each planned tensor's bytes go.
        let mut files = Vec::new();
        let mut places: Vec<Vec<Dest>> = Vec::new();
        for (k, (o, shards)) in outputs.iter().zip(&all_shards).enumerate() {
            let mut place = vec![(0usize, 0u64); o.plan.tensors.len()];
            for shard in shards {
                let (file, tmp) = fsio::create_temp(&shard.path)?;
                written.push(tmp.clone());
                let header = shard.header.to_bytes();
                let data_start = header.len() as u64;
                let total = data_start + shard.header.data_size();
                file.set_len(total)
                    .and_then(|()| file.write_all_at(&header, 0))
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                for (&i, info) in shard.tensors.iter().zip(&shard.header.tensors) {
                    place[i] = (files.len(), data_start + info.offset);
                }
                files.push(file);
                stats[k].file_bytes += total;
            }
            places.push(place);
        }
        let units = units(outputs, &places)?;
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        run_units(store, &units, &files, opts, &bar, &mut stats)
            .with_context(|| format!("writing {}", names.join(", ")))?;
        for (f, path) in files.iter().zip(&written) {
            f.sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
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
    if let Some(c) = opts.cache {
        if let Err(e) = c.trim() {
            eprintln!("warning: cannot trim the quantized-tensor cache: {e:#}");
        }
    }
    Ok(stats)
}

/// One distinct byte string of a unit: a type (and importance weights) applied to the unit's
/// values, and every place in the outputs that holds it.
struct Result_<'p> {
    /// The first planned tensor with these bytes (its type, intermediate and imatrix).
    tensor: &'p PlannedTensor,
    key: ResultKey,
    /// `None` for a type gmat cannot compute: then every piece is copied as it is stored.
    codec: Option<&'static dyn TypeCodec>,
    /// The stored bytes as they are (nothing to compute, nothing worth caching).
    copied: bool,
    row_bytes: usize,
    /// (output, file, offset of the tensor's first byte).
    targets: Vec<(usize, Dest)>,
}

impl Result_<'_> {
    /// Where the bytes from `offset` (within the tensor) go.
    fn dests(&self, offset: u64) -> Vec<Dest> {
        self.targets
            .iter()
            .map(|&(_, (f, at))| (f, at + offset))
            .collect()
    }
}

/// Output tensors made from the same source values.
struct Unit<'p> {
    /// The first planned tensor (its source, dims and name).
    tensor: &'p PlannedTensor,
    results: Vec<Result_<'p>>,
}

impl Unit<'_> {
    /// The geometry of the unit's first stored piece, for preloading.
    fn first_piece(&self) -> Option<PieceGeometry<'_>> {
        let t = self.tensor;
        match &t.source {
            TensorSource::Stored(p) if !p.is_empty() => Some(PieceGeometry::new(
                &p[0],
                t.ncols() as usize,
                t.nrows() as usize / p.len(),
                self.results.len(),
            )),
            _ => None,
        }
    }
}

/// Groups every planned tensor of every output by source values, then by output bytes; units
/// come in the first output's order.
fn units<'p>(outputs: &[Output<'p>], places: &[Vec<Dest>]) -> Result<Vec<Unit<'p>>> {
    let mut units: Vec<Unit<'p>> = Vec::new();
    let mut by_source: HashMap<SourceKey, usize> = HashMap::new();
    for (o, out) in outputs.iter().enumerate() {
        for (i, t) in out.plan.tensors.iter().enumerate() {
            let sk = source_key(t);
            let rk = result_key(sk, t);
            let u = match by_source.get(&sk) {
                Some(&u) => u,
                None => {
                    units.push(Unit {
                        tensor: t,
                        results: Vec::new(),
                    });
                    by_source.insert(sk, units.len() - 1);
                    units.len() - 1
                }
            };
            let unit = &mut units[u];
            let r = match unit.results.iter().position(|r| r.key == rk) {
                Some(r) => r,
                None => {
                    let codec = quant::codec(t.ggml_type);
                    let copied = match &t.source {
                        TensorSource::Stored(p) => {
                            p.iter().all(|p| copies_as_stored(p, t.ggml_type))
                        }
                        TensorSource::Generated(_) => false,
                    };
                    if codec.is_none() && !copied {
                        bail!("tensor {}: no codec for the planned type", t.name);
                    }
                    let row_bytes = t.ggml_type.row_bytes(t.ncols()).with_context(|| {
                        format!("tensor {}: a row does not fit the type", t.name)
                    })? as usize;
                    unit.results.push(Result_ {
                        tensor: t,
                        key: rk,
                        codec,
                        copied,
                        row_bytes,
                        targets: Vec::new(),
                    });
                    unit.results.len() - 1
                }
            };
            unit.results[r].targets.push((o, places[o][i]));
        }
    }
    Ok(units)
}

/// Writes every unit: cached results copied, the others computed.
fn run_units(
    store: &Store,
    units: &[Unit],
    files: &[File],
    opts: &RunOptions,
    bar: &indicatif::ProgressBar,
    stats: &mut [ExportStats],
) -> Result<()> {
    let cache = opts.cache;
    let cached = probe_cache(cache, units);
    // Whether a unit will (probably) need its source read: then it is worth preloading.
    let needs_source: Vec<bool> = cached.iter().map(|u| u.iter().any(|&c| !c)).collect();
    // The cached results in the order they are copied, for reading them from disk ahead.
    let (hit_sizes, hits): (Vec<(usize, u64)>, Vec<&Result_>) = units
        .iter()
        .zip(&cached)
        .enumerate()
        .flat_map(|(k, (u, c))| u.results.iter().zip(c).map(move |(r, &c)| (k, r, c)))
        .filter(|&(_, _, c)| c)
        .map(|(k, r, _)| ((k, r.tensor.n_bytes), r))
        .unzip();
    let all_cached = !needs_source.iter().any(|&n| n);
    std::thread::scope(|s| -> Result<()> {
        let mut writer = BackgroundWriter::start(s, files);
        // Cached results are copied on a thread of their own, so that reading them overlaps
        // the computing of the others (their places in the files do not depend on the order).
        // It returns whether each copy succeeded; a damaged entry's tensor is computed after.
        let copier = match (cache, writer.handle()) {
            (Some(c), Some(handle)) if !hits.is_empty() => {
                let (hits, hit_sizes) = (&hits, &hit_sizes);
                Some(s.spawn(move || -> Result<Vec<bool>> {
                    let mut prefetch = Prefetch::default();
                    let mut copied = Vec::with_capacity(hits.len());
                    for (i, r) in hits.iter().enumerate() {
                        prefetch.advance(hit_sizes, hit_sizes[i].0, |j| c.prefetch(&hits[j].key));
                        copied.push(copy_cached(c, r, &handle, all_cached)?);
                        bar.inc(r.tensor.n_bytes * r.targets.len() as u64);
                    }
                    Ok(copied)
                }))
            }
            _ => None,
        };
        let mut tee_ids = 0u64;
        // The next unit's first reader, opened and first window decoded while this one finishes.
        let mut preloaded: Option<TensorReader> = None;
        for (k, unit) in units.iter().enumerate() {
            let todo: Vec<&Result_> = unit
                .results
                .iter()
                .zip(&cached[k])
                .filter(|(_, &probably)| !probably)
                .map(|(r, _)| r)
                .collect();
            if todo.is_empty() {
                continue;
            }
            let reader = preloaded.take();
            bar.set_message(crate::escape::controls(&unit.tensor.name).into_owned());
            let next = units
                .iter()
                .zip(&needs_source)
                .skip(k + 1)
                .find(|(_, &n)| n)
                .and_then(|(u, _)| u.first_piece());
            preloaded = compute(
                store,
                unit,
                &todo,
                reader,
                next,
                opts,
                &mut writer,
                &mut tee_ids,
            )
            .with_context(|| format!("tensor {}", unit.tensor.name))?;
            for r in &todo {
                add_computed(stats, r);
                bar.inc(r.tensor.n_bytes * r.targets.len() as u64);
            }
        }
        let copied = match copier {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the cache copier panicked"))??,
            None => Vec::new(),
        };
        for ((r, &(k, _)), ok) in hits.iter().zip(&hit_sizes).zip(copied) {
            if ok {
                for &(o, _) in &r.targets {
                    stats[o].from_cache += 1;
                }
                continue;
            }
            // A damaged entry: the tensor is computed now, over the bytes copied.
            let unit = &units[k];
            compute(
                store,
                unit,
                &[r],
                None,
                None,
                opts,
                &mut writer,
                &mut tee_ids,
            )
            .with_context(|| format!("tensor {}", unit.tensor.name))?;
            add_computed(stats, r);
        }
        writer.finish()
    })
}

/// Counts a computed result: beyond its first output, each is one the outputs share.
fn add_computed(stats: &mut [ExportStats], r: &Result_) {
    for &(o, _) in r.targets.iter().skip(1) {
        stats[o].shared += 1;
    }
}

/// Threads that look for cache entries at the start of an export: each look reads one small
/// header, a random read that waits on the disk, so more of them in flight than there are
/// cores keep the disk busy (a cold cache of 100 entries: 0.1 s one at a time).
const PROBE_THREADS: usize = 8;

/// For each unit, whether each result probably has a cache entry (its header matches).
fn probe_cache(cache: Option<&Cache>, units: &[Unit]) -> Vec<Vec<bool>> {
    let Some(c) = cache else {
        return units.iter().map(|u| vec![false; u.results.len()]).collect();
    };
    let wanted = |r: &Result_| {
        !r.copied && Cache::caches(r.tensor.ggml_type) && c.probably_has(&r.key, r.tensor.n_bytes)
    };
    let per_thread = units.len().div_ceil(PROBE_THREADS).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = units
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|u| u.results.iter().map(wanted).collect::<Vec<bool>>())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            // A panicked probe only loses hits: those tensors are computed.
            .zip(units.chunks(per_thread))
            .flat_map(|(p, part)| {
                p.join()
                    .unwrap_or_else(|_| part.iter().map(|u| vec![false; u.results.len()]).collect())
            })
            .collect()
    })
}

/// Cache entries whose reading from disk is started before they are copied, in bytes from the
/// unit being written on: copying a cached export is bound by reading the entries, and one
/// read at a time leaves the disk idle while each is hashed and handed to the writer.
const PREFETCH_BYTES: u64 = 64 << 20;

/// How far [`Prefetch::advance`] has gone through the cached results.
#[derive(Default)]
struct Prefetch {
    /// Results whose reading was started.
    next: usize,
    /// Results before the unit being written.
    done: usize,
    /// Bytes of the results in `done..next`.
    ahead: u64,
}

impl Prefetch {
    /// Before unit `k` is written: starts reading (`start(i)`) the entries `hits[i]` (each its
    /// unit and size, in copying order) until [`PREFETCH_BYTES`] from unit `k` on are on their
    /// way.
    fn advance(&mut self, hits: &[(usize, u64)], k: usize, mut start: impl FnMut(usize)) {
        while self.done < hits.len() && hits[self.done].0 < k {
            if self.done < self.next {
                self.ahead -= hits[self.done].1;
            } else {
                self.next += 1;
            }
            self.done += 1;
        }
        while self.next < hits.len() && self.ahead < PREFETCH_BYTES {
            start(self.next);
            self.ahead += hits[self.next].1;
            self.next += 1;
        }
    }
}

/// Copies a cached result to its places, checking the entry's hash on the way. Returns false
/// (after warning and dropping the entry) when the entry is damaged: the caller computes the
/// bytes again and they overwrite what was copied.
fn copy_cached(
    cache: &Cache,
    r: &Result_,
    writer: &WriterHandle,
    hash_on_all_cores: bool,
) -> Result<bool> {
    let Some(mut entry) = cache.get(&r.key, r.tensor.n_bytes) else {
        return Ok(false);
    };
    entry.hash_on_all_cores(hash_on_all_cores);
    let mut at = 0u64;
    while entry.remaining() > 0 {
        let n = entry.remaining().min(COPY_BYTES) as usize;
        let mut buf = writer.buffer();
        if let Err(e) = entry.read_next(n, &mut buf) {
            eprintln!("warning: {e:#}; quantizing tensor {} again", r.tensor.name);
            cache.discard(entry.path());
            return Ok(false);
        }
        writer.write_to(buf, r.dests(at))?;
        at += n as u64;
    }
    let path = entry.path().to_path_buf();
    if entry.verify() {
        return Ok(true);
    }
    eprintln!(
        "warning: cache entry {} is damaged (its hash does not match); quantizing tensor {} again",
        path.display(),
        r.tensor.name
    );
    cache.discard(&path);
    Ok(false)
}

/// Computes the results `todo` of `unit` and writes them (and to the cache when there is
/// one). Returns `next`'s reader, opened and its first window decoded during the last window.
#[allow(clippy::too_many_arguments)]
fn compute<'s>(
    store: &'s Store,
    unit: &Unit,
    todo: &[&Result_],
    first: Option<TensorReader<'s>>,
    next: Option<PieceGeometry>,
    opts: &RunOptions,
    writer: &mut BackgroundWriter,
    tee_ids: &mut u64,
) -> Result<Option<TensorReader<'s>>> {
    let (cache, allow_overflow) = (opts.cache, opts.allow_overflow);
    let t = unit.tensor;
    let mut tees = Vec::with_capacity(todo.len());
    for r in todo {
        let tee = match cache.filter(|_| !r.copied && Cache::caches(r.tensor.ggml_type)) {
            Some(c) => match c.put(r.key, r.tensor.n_bytes) {
                Ok(w) => {
                    *tee_ids += 1;
                    writer.tee(*tee_ids, w)?;
                    Some(*tee_ids)
                }
                Err(e) => {
                    eprintln!("warning: the quantized-tensor cache is not written: {e:#}");
                    None
                }
            },
            None => None,
        };
        tees.push(tee);
    }
    let ncols = t.ncols() as usize;
    let mut carried = first;
    match &t.source {
        TensorSource::Generated(values) => {
            for (r, &tee) in todo.iter().zip(&tees) {
                let mut out = writer.buffer();
                out.resize(r.tensor.n_bytes as usize, 0);
                let codec = r
                    .codec
                    .with_context(|| format!("no codec for {}", r.tensor.ggml_type))?;
                quant::quantize_rows(codec, values, ncols, r.tensor.imatrix.as_deref(), &mut out);
                writer.write_to(out, r.dests(0), tee)?;
            }
        }
        TensorSource::Stored(pieces) => {
            let rows = t.nrows() as usize / pieces.len().max(1);
            for (p, piece) in pieces.iter().enumerate() {
                let g = PieceGeometry::new(piece, ncols, rows, todo.len());
                let reader = match carried.take() {
                    Some(r) => r,
                    None => store.reader(&piece.entry)?,
                };
                let next_geometry = match pieces.get(p + 1) {
                    Some(np) => Some(PieceGeometry::new(np, ncols, rows, todo.len())),
                    None => next.as_ref().cloned(),
                };
                let mut preload = next_geometry.and_then(|ng| {
                    store
                        .reader(&ng.piece.entry)
                        .ok()
                        .map(|r| (r, ng.first_window()))
                });
                write_piece(
                    store,
                    &g,
                    p,
                    todo,
                    &tees,
                    reader,
                    preload.as_mut(),
                    writer,
                    allow_overflow,
                )?;
                carried = preload.map(|(r, _)| r);
            }
        }
    }
    for id in tees.into_iter().flatten() {
        writer.commit(id)?;
    }
    Ok(carried)
}

/// Whether output type `ty` of `piece` is the stored bytes as they are: the whole tensor, of
/// that type, unchanged (a tensor of an imported GGUF kept in its type).
fn copies_as_stored(piece: &SourcePiece, ty: GgmlType) -> bool {
    let e = &piece.entry;
    piece.op == ValueOp::None
        && piece.scale.is_none()
        && piece.mxfp4.is_none()
        && e.dtype.ggml_type() == Some(ty)
        && piece.view.is_whole(&[e.raw_bytes / e.dtype.size() as u64])
}

/// The converter's type to round a piece's values through first, for output `t`: only for
/// values it computes (dequantized, or changed by an op) and when the output type is another.
pub(super) fn round_to(t: &PlannedTensor, piece: &SourcePiece) -> Option<GgmlType> {
    let computed = piece.scale.is_some() || piece.op != ValueOp::None;
    let narrow = matches!(t.intermediate, GgmlType::BF16 | GgmlType::F16);
    (computed && narrow && t.intermediate != t.ggml_type).then_some(t.intermediate)
}

/// Refuses values that are not finite, naming the source tensor and the place; returns the
/// largest magnitude.
pub(super) fn check_finite(vals: &[f32], g: &PieceGeometry, r: usize) -> Result<f32> {
    // A branch-free scan first (vectorised); the position only on failure.
    let (finite, amax) = vals.iter().fold((true, 0f32), |(ok, m), v| {
        (ok & v.is_finite(), m.max(v.abs()))
    });
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
    Ok(amax)
}

/// Converts piece `p`'s rows a window at a time, once, and quantizes them into every result
/// of `results` (piece `p` of a stacked tensor lands after `p` pieces' rows). Encoded tensors
/// decode the next window while this one is converted; during the last window, `next` (the
/// following piece's reader and its first window) is decoded instead. Any encoding works:
/// raw tensors are read from the map, encoded ones decoded (deltas and references through the
/// base store). The content hash is checked at the end, after the rows are written to the
/// (still temporary) outputs and before any cache entry of them is committed.
#[allow(clippy::too_many_arguments)]
fn write_piece(
    store: &Store,
    g: &PieceGeometry,
    p: usize,
    results: &[&Result_],
    tees: &[Option<u64>],
    mut reader: TensorReader,
    mut next: Option<&mut (TensorReader, (usize, usize))>,
    writer: &mut BackgroundWriter,
    allow_overflow: bool,
) -> Result<()> {
    let (ncols, nrows) = (g.ncols, g.nrows);
    let f16_source = g.piece.entry.dtype == crate::source::Dtype::F16;
    let scales = match &g.piece.scale {
        Some(sc) => Some(BlockScales::load(store, sc, &g.piece.entry.shape)?),
        None => None,
    };
    let mxfp4 = match &g.piece.mxfp4 {
        Some(m) => Some(Mxfp4Repack::load(store, m)?),
        None => None,
    };
    // MXFP4 kept as MXFP4 copies the repacked blocks, a tensor kept in its stored type its
    // bytes; every other result needs the values.
    let direct: Vec<bool> = results
        .iter()
        .map(|r| mxfp4.is_some() && r.tensor.ggml_type == GgmlType::MXFP4)
        .collect();
    let as_stored: Vec<bool> = results
        .iter()
        .map(|r| copies_as_stored(g.piece, r.tensor.ggml_type))
        .collect();
    let need_values = direct.iter().zip(&as_stored).any(|(d, s)| !d && !s);
    // ggml blocks are expanded a row at a time with ggml's to_float
    let block_codec = match g.piece.entry.dtype {
        crate::source::Dtype::Block(t) if need_values => Some(
            quant::codec(t)
                .with_context(|| format!("type {t} cannot be read by this gmat build"))?,
        ),
        _ => None,
    };
    let codecs: Vec<Option<&dyn TypeCodec>> = results
        .iter()
        .zip(direct.iter().zip(&as_stored))
        .map(|(r, (d, s))| {
            if *d || *s {
                Ok(None)
            } else {
                r.codec
                    .map(Some)
                    .with_context(|| format!("no codec for {}", r.tensor.ggml_type))
            }
        })
        .collect::<Result<_>>()?;
    let rounding: Vec<Option<GgmlType>> = results
        .iter()
        .map(|r| round_to(r.tensor, g.piece))
        .collect();
    let weights: Vec<Option<&[f32]>> = results
        .iter()
        .map(|r| {
            r.tensor
                .imatrix
                .as_deref()
                .map(|w| &w[p * ncols..(p + 1) * ncols])
        })
        .collect();
    let piece_at: Vec<u64> = results
        .iter()
        .map(|r| (p * nrows * r.row_bytes) as u64)
        .collect();
    let mut released = 0usize;
    let mut r0 = 0;
    while r0 < nrows {
        let r1 = (r0 + g.chunk_rows).min(nrows);
        let (lo, hi) = g.source_range(r0, r1);
        let next_window = (r1 < nrows).then(|| g.source_range(r1, (r1 + g.chunk_rows).min(nrows)));
        let preload = if r1 == nrows { next.take() } else { None };
        let mut bufs: Vec<Vec<u8>> = results
            .iter()
            .map(|r| {
                let mut b = writer.buffer();
                b.resize((r1 - r0) * r.row_bytes, 0);
                b
            })
            .collect();
        let bufs_ref = &mut bufs;
        let side = move || {
            if let Some((r, (s, e))) = preload {
                r.preload(*s, *e);
            }
        };
        let (direct, rounding, weights) = (&direct, &rounding, &weights);
        let (as_stored, codecs) = (&as_stored, &codecs);
        let (scales, mxfp4) = (scales.as_ref(), mxfp4.as_ref());
        let done = reader.with_window(lo, hi, next_window, side, |bytes| {
            // Row i's destination in every result's buffer.
            let mut rows: Vec<Vec<&mut [u8]>> = (r0..r1)
                .map(|_| Vec::with_capacity(results.len()))
                .collect();
            for (b, r) in bufs_ref.iter_mut().zip(results) {
                for (row, dst) in rows.iter_mut().zip(b.chunks_mut(r.row_bytes)) {
                    row.push(dst);
                }
            }
            rows.into_par_iter().enumerate().try_for_each_init(
                || (Vec::with_capacity(ncols), Vec::new()),
                |(vals, rounded): &mut (Vec<f32>, Vec<f32>), (i, dsts)| -> Result<()> {
                    let r = r0 + i;
                    vals.clear();
                    let blocks = mxfp4.map(|mx| mx.repack(g, r, bytes, lo));
                    // Rows with large values are checked for values the output types (or
                    // the converter's intermediate type) cannot hold.
                    let mut check = false;
                    if need_values {
                        match (&blocks, mxfp4, block_codec) {
                            (Some(b), Some(mx), _) => {
                                vals.resize(ncols, 0.0);
                                mx.codec.dequantize_row(b, vals);
                            }
                            (_, _, Some(c)) => {
                                vals.resize(ncols, 0.0);
                                c.dequantize_row(g.stored_row(r, bytes, lo), vals);
                            }
                            _ => g.row_values(r, bytes, lo, scales, vals),
                        }
                        g.piece.op.apply(vals, f16_source);
                        let amax = check_finite(vals, g, r)?;
                        check = !allow_overflow && amax >= OVERFLOW_CHECK_FROM;
                    }
                    for (j, dst) in dsts.into_iter().enumerate() {
                        if let (true, Some(b)) = (direct[j], &blocks) {
                            dst.copy_from_slice(b);
                            continue;
                        }
                        if as_stored[j] {
                            dst.copy_from_slice(g.stored_row(r, bytes, lo));
                            continue;
                        }
                        let Some(codec) = codecs[j] else {
                            continue; // not reached: a result without a codec is copied
                        };
                        let t = results[j].tensor;
                        let v: &[f32] = match rounding[j] {
                            None => vals,
                            to => {
                                rounded.clear();
                                rounded.extend_from_slice(vals);
                                round_through(rounded, to);
                                if check {
                                    if let Some(c) = rounded.iter().position(|v| !v.is_finite()) {
                                        return Err(overflow(t, g, r, c, vals[c], to));
                                    }
                                }
                                rounded
                            }
                        };
                        codec.quantize_row(v, weights[j], dst);
                        if check {
                            let mut back = vec![0f32; v.len()];
                            codec.dequantize_row(dst, &mut back);
                            if back.iter().any(|v| !v.is_finite()) {
                                let c = vals.iter().enumerate().fold(0, |m, (i, v)| {
                                    if v.abs() > vals[m].abs() {
                                        i
                                    } else {
                                        m
                                    }
                                });
                                return Err(overflow(t, g, r, c, vals[c], None));
                            }
                        }
                    }
                    Ok(())
                },
            )
        });
        if let Err(e) = done.and_then(|d| d) {
            return Err(prefer_corruption(reader, e));
        }
        for (j, b) in bufs.into_iter().enumerate() {
            let r = results[j];
            let at = piece_at[j] + (r0 * r.row_bytes) as u64;
            writer.write_to(b, r.dests(at), tees[j])?;
        }
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

/// Which source bytes a window of output rows of one piece reads: output row `r` is the
/// piece view's elements `r·ncols .. (r+1)·ncols`.
#[derive(Clone)]
pub(super) struct PieceGeometry<'p> {
    pub(super) piece: &'p SourcePiece,
    pub(super) ncols: usize,
    pub(super) nrows: usize,
    esize: usize,
    /// Source elements per output row: `ncols`, or the code bytes of a row of MXFP4 blocks.
    src_cols: usize,
    pub(super) chunk_rows: usize,
}

impl<'p> PieceGeometry<'p> {
    /// `results`: how many outputs each window's rows are quantized into; the window shrinks
    /// with it so that the output buffers (one per result) stay within the same memory.
    pub(super) fn new(piece: &'p SourcePiece, ncols: usize, nrows: usize, results: usize) -> Self {
        PieceGeometry {
            piece,
            ncols,
            nrows,
            esize: piece.entry.dtype.size(),
            src_cols: match piece.entry.dtype {
                _ if piece.mxfp4.is_some() => ncols / 2,
                // ggml blocks are addressed in bytes: a row is its blocks
                crate::source::Dtype::Block(t) => t.row_bytes(ncols as u64).unwrap_or(0) as usize,
                _ => ncols,
            },
            chunk_rows: (CHUNK_VALUES / results.max(1) / ncols.max(1)).max(1),
        }
    }

    /// The source byte range output rows `r0..r1` read.
    pub(super) fn source_range(&self, r0: usize, r1: usize) -> (usize, usize) {
        let n = self.src_cols as u64;
        let (lo, hi) = self.piece.view.source_span(r0 as u64 * n, r1 as u64 * n);
        (lo as usize * self.esize, hi as usize * self.esize)
    }

    fn first_window(&self) -> (usize, usize) {
        self.source_range(0, self.chunk_rows.min(self.nrows))
    }

    /// Output row `r`'s stored bytes, from `bytes` (the source bytes from byte `lo` on), for a
    /// piece that reads its tensor whole ([`copies_as_stored`], ggml blocks).
    fn stored_row<'b>(&self, r: usize, bytes: &'b [u8], lo: usize) -> &'b [u8] {
        let n = self.src_cols * self.esize;
        let at = r * n - lo;
        &bytes[at..at + n]
    }

    /// Appends output row `r`'s values, converted to f32 (and dequantized with `scales`),
    /// from `bytes` (the source bytes starting at byte `lo`).
    pub(super) fn row_values(
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
pub(super) struct BlockScales {
    values: Vec<f32>,
    /// The weight's shape and, per axis, the block and the scale tensor's stride.
    shape: Vec<u64>,
    block: Vec<u64>,
    strides: Vec<u64>,
}

impl BlockScales {
    pub(super) fn load(
        store: &Store,
        sc: &ScaleSource,
        weight_shape: &[u64],
    ) -> Result<BlockScales> {
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
pub(super) struct Mxfp4Repack {
    scales: Vec<u8>,
    view: crate::arch::transform::View,
    /// Dequantizes the blocks for outputs of other types.
    pub(super) codec: &'static dyn TypeCodec,
}

impl Mxfp4Repack {
    pub(super) fn load(store: &Store, m: &Mxfp4Source) -> Result<Mxfp4Repack> {
        let scales = store
            .reader(&m.entry)?
            .read_all()
            .with_context(|| format!("MXFP4 scale tensor {}", m.entry.name))?;
        Ok(Mxfp4Repack {
            scales,
            view: m.view.clone(),
            codec: quant::codec(GgmlType::MXFP4).context("no MXFP4 codec")?,
        })
    }

    /// Output row `r`'s ggml MXFP4 blocks, from `bytes` (the code bytes from byte `lo` on).
    pub(super) fn repack(&self, g: &PieceGeometry, r: usize, bytes: &[u8], lo: usize) -> Vec<u8> {
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
pub(super) fn round_through(vals: &mut [f32], to: Option<GgmlType>) {
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

/// The error for a finite value that becomes infinite in the output: in the converter's
/// intermediate type `via` (when given), else in the output type.
fn overflow(
    t: &PlannedTensor,
    g: &PieceGeometry,
    row: usize,
    col: usize,
    value: f32,
    via: Option<GgmlType>,
) -> anyhow::Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_stays_a_window_ahead_of_the_unit_being_written() {
        let mb = 1u64 << 20;
        // Units 0..6 with one 40 MiB entry each, except unit 2 (none) and unit 4 (two).
        let hits = [
            (0, 40 * mb),
            (1, 40 * mb),
            (3, 40 * mb),
            (4, 40 * mb),
            (4, 40 * mb),
            (5, 40 * mb),
        ];
        let mut p = Prefetch::default();
        let mut started = Vec::new();
        for k in 0..6 {
            p.advance(&hits, k, |i| started.push(i));
            // The window (64 MiB) holds two 40 MiB entries from unit k on, when there are two.
            let left = hits.iter().filter(|h| h.0 >= k).count();
            let reached = started.iter().filter(|&&i| hits[i].0 >= k).count();
            assert!(reached >= left.min(2), "unit {k}: {started:?}");
            assert!(p.ahead < PREFETCH_BYTES + 40 * mb, "unit {k}: {}", p.ahead);
        }
        // Each entry is started once, in copying order.
        assert_eq!(started, (0..hits.len()).collect::<Vec<_>>());
    }
}
