//! `gmat export --target-size / --target-bpw`: the plan whose tensor types fit a budget with
//! the least measured error, and `--report`: what each tensor's type costs and loses.
//!
//! The search never writes its own kind of file: it ends as an ordinary plan of a file type
//! plus exact `per_tensor` entries, the same entries `--generate-config` writes, so exporting
//! the generated config gives the same bytes without searching again.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::cache::key::{result_key, source_key};
use crate::cache::Cache;
use crate::config::export_config::TargetConfig;
use crate::config::ExportConfig;
use crate::gguf::{GgmlType, Value};
use crate::pipeline::measure::{self, Measured};
use crate::pipeline::progress::{self, human_bytes};
use crate::plan::budget::{self, Budget, Choice};
use crate::plan::mix_rules;
use crate::plan::per_tensor::PerTensor;
use crate::plan::split::{self, SplitLimits};
use crate::plan::{ExportPlan, FileType, PlannedTensor, TypeOptions};
use crate::quant::imatrix::Imatrix;
use crate::store::Store;

/// A budget with the types to choose from.
#[derive(Clone, Debug)]
pub struct Target {
    pub budget: Budget,
    /// `None`: [`budget::default_candidates`].
    pub candidates: Option<Vec<GgmlType>>,
}

/// The target from the command line (which wins) or the config's `quantization.target`.
pub fn target_from(
    size: Option<&str>,
    bpw: Option<f64>,
    config: Option<&TargetConfig>,
) -> Result<Option<Target>> {
    let from_config = |c: &TargetConfig| -> Result<Option<Budget>> {
        match (&c.size, c.bpw) {
            (Some(_), Some(_)) => bail!("quantization.target: give size or bpw, not both"),
            (Some(serde_json::Value::Number(n)), None) => match n.as_u64() {
                Some(b) if b > 0 => Ok(Some(Budget::FileBytes(b))),
                _ => bail!("quantization.target.size {n} is not a positive number of bytes"),
            },
            (Some(serde_json::Value::String(s)), None) => Ok(Some(Budget::FileBytes(
                budget::parse_target_size(s).context("quantization.target.size")?,
            ))),
            (Some(v), None) => bail!(
                "quantization.target.size must be a number of bytes or a size like \"3.2GB\", not {v}"
            ),
            (None, Some(b)) => Ok(Some(Budget::Bpw(b))),
            (None, None) => Ok(None),
        }
    };
    let budget = match (size, bpw) {
        (Some(s), _) => Some(Budget::FileBytes(
            budget::parse_target_size(s).context("--target-size")?,
        )),
        (None, Some(b)) => Some(Budget::Bpw(b)),
        (None, None) => match config {
            Some(c) => from_config(c)?,
            None => None,
        },
    };
    if let Some(Budget::Bpw(b)) = budget {
        if !(b.is_finite() && b > 0.0) {
            bail!("the target bits per weight must be a positive number, not {b}");
        }
    }
    let Some(budget) = budget else {
        if config.is_some_and(|c| !c.candidates.is_empty()) {
            bail!("quantization.target lists candidates but neither size nor bpw");
        }
        return Ok(None);
    };
    let candidates = match config.map(|c| &c.candidates) {
        Some(list) if !list.is_empty() => Some(
            list.iter()
                .map(|n| {
                    n.parse::<GgmlType>()
                        .map_err(|e| anyhow::anyhow!("quantization.target.candidates: {n:?}: {e}"))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        _ => None,
    };
    Ok(Some(Target { budget, candidates }))
}

/// What the search measured for one tensor.
#[derive(Clone, Debug)]
pub struct TensorChoice {
    pub name: String,
    /// (type, bytes, relative error), in candidate order.
    pub candidates: Vec<Choice>,
    pub chosen: GgmlType,
}

/// A targeted plan and what it was chosen from.
pub struct Targeted {
    pub plan: ExportPlan,
    /// The user's config plus the chosen `per_tensor` entries: exporting it gives `plan`.
    pub config: ExportConfig,
    pub budget: Budget,
    /// The budget in bytes of the measure it is given in (file bytes, or tensor data bytes
    /// for a bits-per-weight target).
    pub budget_bytes: u64,
    /// The same measure of the result.
    pub used_bytes: u64,
    pub searched: Vec<TensorChoice>,
    /// Sum of the chosen types' relative errors (what the search minimised).
    pub total_error: f64,
}

impl Targeted {
    /// One-line summary: the budget, how far under it, and the predicted error.
    pub fn summary(&self) -> String {
        let what = match self.budget {
            Budget::FileBytes(_) => format!(
                "target size {}: file {}",
                human_bytes(self.budget_bytes),
                human_bytes(self.used_bytes)
            ),
            Budget::Bpw(b) => format!(
                "target {b} bits per weight: {:.4} bits per weight, {} of tensor data",
                self.plan.bits_per_weight(),
                human_bytes(self.used_bytes)
            ),
        };
        format!(
            "{what}, {} under the budget; {} tensors chosen by measured error, total relative error {:.6}",
            human_bytes(self.budget_bytes - self.used_bytes),
            self.searched.len(),
            self.total_error
        )
    }
}

/// Bytes of all files of `plan` (headers, padding and data; every shard).
pub fn file_bytes(plan: &ExportPlan, limits: SplitLimits) -> Result<u64> {
    let shards = split::shards(plan, Path::new("size.gguf"), limits)?;
    Ok(shards
        .iter()
        .map(|s| s.header.to_bytes().len() as u64 + s.header.data_size())
        .sum())
}

/// Everything the search reads besides the plans.
pub struct SearchInput<'a> {
    pub store: &'a Store,
    pub config: &'a ExportConfig,
    pub types: &'a TypeOptions,
    pub imatrix: Option<&'a Imatrix>,
    /// `--type` given with the target: the file type of the result (else the one of the type
    /// holding most bytes).
    pub file_type: Option<FileType>,
    pub limits: SplitLimits,
    pub cache: Option<&'a Cache>,
    pub quiet: bool,
}

/// Plans the export within `target` (see the module documentation). `build` makes the plan of
/// a file type under a config.
pub fn search(
    input: &SearchInput,
    target: &Target,
    build: &dyn Fn(FileType, &ExportConfig) -> Result<ExportPlan>,
) -> Result<Targeted> {
    let provisional_type = match input.file_type {
        Some(ft) => ft,
        None => parse_ft("Q8_0")?,
    };
    let provisional = build(provisional_type, input.config)?;
    let arch = match provisional
        .metadata
        .iter()
        .find(|(k, _)| k == "general.architecture")
    {
        Some((_, Value::String(s))) => s.clone(),
        _ => bail!("the plan has no general.architecture"),
    };
    let pinned = PerTensor::new(&input.config.quantization.per_tensor)?;
    let has_imatrix = input.imatrix.is_some();
    let candidates = target
        .candidates
        .clone()
        .unwrap_or_else(|| budget::default_candidates(has_imatrix));
    let explicit = target.candidates.is_some();
    let n_elements = provisional.n_elements();
    // The budget's mean bits per weight: default candidates far below it are not measured.
    let target_bpw = match target.budget {
        Budget::Bpw(x) => x,
        Budget::FileBytes(b) => {
            let headers = file_bytes(&provisional, input.limits)? - provisional.data_bytes();
            b.saturating_sub(headers) as f64 * 8.0 / n_elements.max(1) as f64
        }
    };

    // Which tensors are searched, and over which types.
    let mut work: Vec<(usize, Vec<GgmlType>, Option<Vec<f32>>)> = Vec::new();
    // every candidate that fits each searched tensor (pruned ones included), by plan index
    let mut fitting_of: HashMap<usize, Vec<GgmlType>> = HashMap::new();
    let mut fixed_bytes = 0u64;
    let mut forced: Vec<(String, GgmlType)> = Vec::new();
    for (i, t) in provisional.tensors.iter().enumerate() {
        let searchable = mix_rules::allows_quantization(
            &arch,
            &t.name,
            &t.dims,
            !input.types.leave_output_tensor,
        ) && !t.intermediate.is_quantized()
            && !is_pinned(t, &pinned, input.types);
        if !searchable {
            fixed_bytes += t.n_bytes;
            continue;
        }
        let ncols = t.ncols();
        let n_expert = t.dims.get(2).copied().unwrap_or(1) as usize;
        let weights = match input.imatrix {
            Some(im) => im
                .for_tensor(&t.name, ncols as usize, n_expert)?
                .map(<[f32]>::to_vec),
            None => None,
        };
        let k_fits = ncols % 256 == 0;
        let fitting: Vec<GgmlType> = candidates
            .iter()
            .copied()
            .filter(|&ty| measure::fits(ty, ncols))
            .filter(|&ty| explicit || !(k_fits && budget::is_fallback_only(ty)))
            .filter(|&ty| {
                weights.is_some() || !crate::quant::codec(ty).is_some_and(|c| c.requires_imatrix())
            })
            .collect();
        let mut types: Vec<GgmlType> = fitting
            .iter()
            .copied()
            .filter(|&ty| {
                explicit || budget::bits_per_weight(ty) >= target_bpw - budget::PRUNE_BITS
            })
            .collect();
        if types.is_empty() {
            // a budget above every type: the largest one
            types.extend(fitting.iter().copied().max_by(|a, b| {
                budget::bits_per_weight(*a).total_cmp(&budget::bits_per_weight(*b))
            }));
        }
        if types.is_empty() {
            // nothing offered fits its rows: it keeps the type the file type gives it
            fixed_bytes += t.n_bytes;
            forced.push((t.name.clone(), t.ggml_type));
            continue;
        }
        fitting_of.insert(i, fitting);
        work.push((i, types, weights));
    }

    // Measure every candidate of every searched tensor.
    let total_values: u64 = work
        .iter()
        .map(|(i, ..)| provisional.tensors[*i].dims.iter().product::<u64>())
        .sum();
    let bar = progress::bytes_bar(total_values, "measure", input.quiet);
    let mut searched: Vec<TensorChoice> = Vec::new();
    for (i, types, weights) in &work {
        let t = &provisional.tensors[*i];
        bar.set_message(crate::escape::controls(&t.name).into_owned());
        let nrows = t.nrows() as usize;
        let mut types = types.clone();
        let mut measured = measure_cached(
            input,
            t,
            &types,
            weights.as_deref(),
            measure::sample_stride(nrows),
        )?;
        // Types below the window are screened on a coarse sample, and measured when they beat
        // the window's smallest type: what a tensor stored on a low-bit grid (weights that came
        // from a quantized file) loses nothing in.
        let below: Vec<GgmlType> = below_window(&fitting_of[i], &types);
        if !below.is_empty() {
            let smallest = types
                .iter()
                .zip(&measured)
                .min_by_key(|(ty, _)| ty.row_bytes(t.ncols()).unwrap_or(u64::MAX))
                .map(|(_, m)| m.relative())
                .unwrap_or(0.0);
            let screens = measure_cached(
                input,
                t,
                &below,
                weights.as_deref(),
                measure::screen_stride(nrows),
            )?;
            let promising: Vec<GgmlType> = below
                .iter()
                .zip(&screens)
                .filter(|(_, m)| m.relative() < smallest * SCREEN_MARGIN)
                .map(|(&ty, _)| ty)
                .collect();
            if !promising.is_empty() {
                measured.extend(measure_cached(
                    input,
                    t,
                    &promising,
                    weights.as_deref(),
                    measure::sample_stride(nrows),
                )?);
                types.extend(promising);
            }
        }
        searched.push(TensorChoice {
            name: t.name.clone(),
            candidates: types
                .iter()
                .zip(&measured)
                .map(|(&ty, m)| Choice {
                    ty,
                    bytes: ty.row_bytes(t.ncols()).unwrap_or(0) * t.nrows(),
                    error: m.relative(),
                })
                .collect(),
            chosen: t.ggml_type,
        });
        bar.inc(t.dims.iter().product::<u64>());
    }
    bar.finish_and_clear();

    // The budget for the searched tensors' data.
    let (budget_bytes, overhead) = match target.budget {
        Budget::FileBytes(b) => {
            let whole = file_bytes(&provisional, input.limits)?;
            // headers and padding: the same whatever the types, up to the padding
            let overhead = whole - provisional.data_bytes() + 32 * provisional.tensors.len() as u64;
            (b, overhead)
        }
        Budget::Bpw(x) => (((x * n_elements as f64) / 8.0).floor() as u64, 0),
    };
    let choices: Vec<Vec<Choice>> = searched.iter().map(|s| s.candidates.clone()).collect();
    let mut slack = 0u64;
    for _attempt in 0..4 {
        let room = budget_bytes.saturating_sub(overhead + fixed_bytes + slack);
        let alloc = match budget::allocate(&choices, room) {
            Ok(a) => a,
            Err(u) => {
                let min = u.min_bytes + fixed_bytes + overhead;
                let shown = match target.budget {
                    Budget::FileBytes(_) => format!("{} ({min} bytes)", human_bytes(min)),
                    Budget::Bpw(_) => format!(
                        "{:.4} bits per weight",
                        min as f64 * 8.0 / n_elements.max(1) as f64
                    ),
                };
                bail!(
                    "the target {} cannot be reached: the smallest this model can be with the candidate types ({}) is {shown}",
                    match target.budget {
                        Budget::FileBytes(b) => human_bytes(b),
                        Budget::Bpw(b) => format!("{b} bits per weight"),
                    },
                    candidate_names(&candidates),
                );
            }
        };
        let mut config = input.config.clone();
        let per_tensor = &mut config.quantization.per_tensor;
        for (name, ty) in &forced {
            per_tensor.insert(name.clone(), ty.name().to_string());
        }
        let mut by_type: HashMap<GgmlType, u64> = HashMap::new();
        for (s, &pick) in searched.iter_mut().zip(&alloc.picks) {
            let c = s.candidates[pick];
            s.chosen = c.ty;
            *by_type.entry(c.ty).or_default() += c.bytes;
            per_tensor.insert(s.name.clone(), c.ty.name().to_string());
        }
        config.quantization.target = None;
        let file_type = match input.file_type {
            Some(ft) => ft,
            None => file_type_for(&by_type)?,
        };
        let plan = build(file_type, &config)?;
        let used = match target.budget {
            Budget::FileBytes(_) => file_bytes(&plan, input.limits)?,
            Budget::Bpw(_) => plan.data_bytes(),
        };
        if used <= budget_bytes {
            return Ok(Targeted {
                plan,
                config,
                budget: target.budget,
                budget_bytes,
                used_bytes: used,
                searched,
                total_error: alloc.error,
            });
        }
        // padding came out larger than allowed for: ask for that much less
        slack += used - budget_bytes;
    }
    bail!("internal error: the targeted plan does not fit its budget after four attempts")
}

/// Whether the user fixed `t`'s type: a `per_tensor` entry, or a llama-quantize type option.
fn is_pinned(t: &PlannedTensor, per_tensor: &PerTensor, types: &TypeOptions) -> bool {
    if per_tensor.find(t, true).is_some() {
        return true;
    }
    let name = t.name.as_str();
    if types.tensor_types.iter().any(|r| r.matches(name)) {
        return true;
    }
    match name {
        "output.weight" => types.output_tensor_type.is_some() || types.leave_output_tensor,
        "token_embd.weight" => types.token_embedding_type.is_some(),
        _ => false,
    }
}

/// The file type a targeted file is labelled with (`general.file_type`): the mix named after
/// the quantized type holding most bytes (Q4_K → Q4_K_M, as llama.cpp's own Q4_K files).
fn file_type_for(by_type: &HashMap<GgmlType, u64>) -> Result<FileType> {
    use GgmlType::*;
    let mut v: Vec<(&GgmlType, &u64)> = by_type.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.id().cmp(&b.0.id())));
    let name = match v.first().map(|(t, _)| **t) {
        Some(Q2_K) => "Q2_K",
        Some(Q3_K) => "Q3_K_M",
        Some(Q4_K) => "Q4_K_M",
        Some(Q5_K) => "Q5_K_M",
        Some(Q6_K) => "Q6_K",
        Some(Q4_0) => "Q4_0",
        Some(Q4_1) => "Q4_1",
        Some(Q5_0) => "Q5_0",
        Some(Q5_1) => "Q5_1",
        Some(IQ2_XXS) => "IQ2_XXS",
        Some(IQ2_XS) => "IQ2_XS",
        Some(IQ2_S) => "IQ2_S",
        Some(IQ3_XXS) => "IQ3_XXS",
        Some(IQ3_S) => "IQ3_S",
        Some(IQ4_XS) => "IQ4_XS",
        Some(IQ4_NL) => "IQ4_NL",
        Some(IQ1_S) => "IQ1_S",
        Some(IQ1_M) => "IQ1_M",
        Some(TQ1_0) => "TQ1_0",
        Some(TQ2_0) => "TQ2_0",
        // float or Q8_0 weights (or none searched): a quantized file all the same
        _ => "Q8_0",
    };
    parse_ft(name)
}

fn parse_ft(name: &str) -> Result<FileType> {
    name.parse().map_err(|e: String| anyhow::anyhow!(e))
}

fn candidate_names(c: &[GgmlType]) -> String {
    c.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

/// A screened type is measured when its screened error is below this many times the error of
/// the smallest type in the window (the screen's sample is eight times coarser).
const SCREEN_MARGIN: f64 = 1.25;

/// The fitting types not in the measured window (in candidate order).
fn below_window(fitting: &[GgmlType], window: &[GgmlType]) -> Vec<GgmlType> {
    fitting
        .iter()
        .copied()
        .filter(|ty| !window.contains(ty))
        .collect()
}

/// Version of the measurement (sampling and error definition): part of its cache key.
const MEASURE_VERSION: &str = "gmat measured error v1";

/// Measures `types` on `t`, reusing earlier measurements from the cache folder.
fn measure_cached(
    input: &SearchInput,
    t: &PlannedTensor,
    types: &[GgmlType],
    weights: Option<&[f32]>,
    stride: usize,
) -> Result<Vec<Measured>> {
    let Some(cache) = input.cache else {
        return measure::measure_sampled(input.store, t, types, weights, stride);
    };
    let sk = source_key(t);
    let dir = cache.dir().join("errors");
    let keys: Vec<String> = types
        .iter()
        .map(|&ty| {
            let mut probe = t.clone();
            probe.ggml_type = ty;
            probe.imatrix = weights.map(<[f32]>::to_vec);
            let rk = result_key(sk, &probe);
            let mut h = blake3::Hasher::new();
            h.update(MEASURE_VERSION.as_bytes());
            h.update(&rk.0);
            h.update(&(stride as u64).to_le_bytes());
            h.finalize().to_hex().to_string()
        })
        .collect();
    let read = |k: &str| -> Option<Measured> {
        let b = std::fs::read(dir.join(format!("{k}.err"))).ok()?;
        // the key, then the two sums
        if b.len() != 64 + 16 || &b[..64] != k.as_bytes() {
            return None;
        }
        let err = f64::from_le_bytes(b[64..72].try_into().ok()?);
        let signal = f64::from_le_bytes(b[72..80].try_into().ok()?);
        (err.is_finite() && signal.is_finite()).then_some(Measured { err, signal })
    };
    let found: Vec<Option<Measured>> = keys.iter().map(|k| read(k)).collect();
    let missing: Vec<GgmlType> = types
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(&ty, _)| ty)
        .collect();
    let fresh = if missing.is_empty() {
        Vec::new()
    } else {
        measure::measure_sampled(input.store, t, &missing, weights, stride)?
    };
    let mut fresh = fresh.into_iter();
    let mut out = Vec::with_capacity(types.len());
    for (k, f) in keys.iter().zip(found) {
        match f {
            Some(m) => out.push(m),
            None => {
                let m = fresh.next().context("measurement count")?;
                let mut b = k.as_bytes().to_vec();
                b.extend_from_slice(&m.err.to_le_bytes());
                b.extend_from_slice(&m.signal.to_le_bytes());
                // a cache that cannot be written only costs the next run a measurement
                let _ = std::fs::create_dir_all(&dir)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| crate::fsio::write_atomic(&dir.join(format!("{k}.err")), &b));
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// `--report FILE.json`: every tensor's type, size and measured relative error (quantized
/// tensors measured now unless the search already did), and the file's totals.
pub fn write_report(
    path: &Path,
    input: &SearchInput,
    plan: &ExportPlan,
    targeted: Option<&Targeted>,
) -> Result<()> {
    let by_name: HashMap<&str, &TensorChoice> = targeted
        .map(|t| t.searched.iter().map(|s| (s.name.as_str(), s)).collect())
        .unwrap_or_default();
    let bar = progress::bytes_bar(
        plan.tensors
            .iter()
            .map(|t| t.dims.iter().product::<u64>())
            .sum(),
        "measure",
        input.quiet,
    );
    let mut rows = Vec::new();
    let mut total_error = 0.0;
    for t in &plan.tensors {
        bar.set_message(crate::escape::controls(&t.name).into_owned());
        let mut row = json!({
            "name": t.name,
            "type": t.ggml_type.name(),
            "shape": t.dims,
            "bytes": t.n_bytes,
        });
        let error = match by_name.get(t.name.as_str()) {
            Some(s) => {
                let cands: serde_json::Map<String, serde_json::Value> = s
                    .candidates
                    .iter()
                    .map(|c| {
                        (
                            c.ty.name().to_string(),
                            json!({"bytes": c.bytes, "error": c.error}),
                        )
                    })
                    .collect();
                row["candidates"] = serde_json::Value::Object(cands);
                s.candidates
                    .iter()
                    .find(|c| c.ty == t.ggml_type)
                    .map(|c| c.error)
            }
            None if t.ggml_type.is_quantized() && t.intermediate != t.ggml_type => {
                let stride = measure::sample_stride(t.nrows() as usize);
                let m = measure_cached(input, t, &[t.ggml_type], t.imatrix.as_deref(), stride)?;
                m.first().map(Measured::relative)
            }
            // stored as the converter writes it
            None => Some(0.0),
        };
        if let Some(e) = error {
            total_error += e;
            row["error"] = json!(e);
        }
        rows.push(row);
        bar.inc(t.dims.iter().product::<u64>());
    }
    bar.finish_and_clear();
    let mut report = json!({
        "file_type": plan.file_type.name,
        "tensor_data_bytes": plan.data_bytes(),
        "file_bytes": file_bytes(plan, input.limits)?,
        "bits_per_weight": plan.bits_per_weight(),
        "total_error": total_error,
        "error": "relative importance-weighted squared error of each tensor: sum w_j (x_j - q_j)^2 / sum w_j x_j^2 over sampled rows (w = imatrix, else 1)",
        "tensors": rows,
    });
    if let Some(t) = targeted {
        report["target"] = match t.budget {
            Budget::FileBytes(b) => json!({"size": b}),
            Budget::Bpw(b) => json!({"bpw": b}),
        };
        report["under_budget_bytes"] = json!(t.budget_bytes - t.used_bytes);
    }
    crate::fsio::write_atomic(
        path,
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )
    .with_context(|| format!("--report {}", path.display()))?;
    Ok(())
}
