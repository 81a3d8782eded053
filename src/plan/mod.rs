//! The export plan: a pure function of (manifest, architecture, config, options) that decides
//! every output tensor's name, type, shape, source, transform and byte offset, and every
//! metadata key. Execution (`pipeline`) only follows it; `--dry-run` prints it.

pub mod file_type;
pub mod mix_rules;
pub mod split;
pub mod type_rules;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use indexmap::IndexMap;
use regex::Regex;
use uuid::Uuid;

use crate::arch::metadata::{model_metadata, ParamCount};
use crate::arch::{match_hf_name, names::SKIPPED_SUFFIXES, rope, Arch, Hparams, TensorKind};
use crate::config::ExportConfig;
use crate::gguf::{GgufHeader, Value};
use crate::quant::imatrix::Imatrix;
use crate::quant::{self, GgmlType};
use crate::source::Dtype;
use crate::store::{Manifest, TensorEntry};

pub use file_type::FileType;

/// A row transform the converter applies to a source tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    None,
    /// `LlamaModel.permute`: within each of `n_head` heads, interleave the two halves of rows.
    PermuteRows {
        n_head: u64,
    },
}

impl Transform {
    /// For output row `r` of a tensor with `rows` rows (elements, for a 1-D bias), the source
    /// row it comes from. `LlamaModel.permute` is `w.reshape(n_head, 2, rows / n_head / 2, ...)
    /// .swapaxes(1, 2).reshape(w.shape)`: output (h, i, j) takes source (h, j, i).
    pub fn source_row(self, r: usize, rows: usize) -> usize {
        match self {
            Transform::None => r,
            Transform::PermuteRows { n_head } => {
                let per_head = rows / n_head as usize;
                let half = per_head / 2;
                let (h, w) = (r / per_head, r % per_head);
                h * per_head + (w % 2) * half + w / 2
            }
        }
    }
}

/// One stored tensor feeding an output tensor.
#[derive(Clone, Debug)]
pub struct SourcePiece {
    pub entry: TensorEntry,
    pub transform: Transform,
}

/// Where an output tensor's values come from.
#[derive(Clone, Debug)]
pub enum TensorSource {
    /// Stored tensors stacked along the outermost axis (one piece unless experts are stacked).
    Stored(Vec<SourcePiece>),
    /// Values computed by the converter (`rope_freqs`).
    Generated(Vec<f32>),
}

/// One tensor of the output file.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub name: String,
    pub kind: Option<TensorKind>,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub source: TensorSource,
    /// Offset within the data section.
    pub offset: u64,
    pub n_bytes: u64,
    /// Importance weights, `ne0` per expert (`ne0` for a 2-D tensor), when quantized with an
    /// importance matrix.
    pub imatrix: Option<Vec<f32>>,
}

impl PlannedTensor {
    /// Row length.
    pub fn ncols(&self) -> u64 {
        self.dims[0]
    }
    /// Number of rows (all outer dimensions).
    pub fn nrows(&self) -> u64 {
        self.dims[1..].iter().product()
    }
}

/// Everything the plan needs; gathered by the export command.
pub struct PlanInput<'a> {
    pub manifest: &'a Manifest,
    pub hparams: &'a Hparams,
    pub arch: &'static Arch,
    pub config: &'a ExportConfig,
    pub file_type: FileType,
    /// Every quantizable tensor gets the file type's default type (`llama-quantize --pure`).
    pub pure: bool,
    /// `llama-quantize --output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `llama-quantize --token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `llama-quantize --tensor-type REGEX=TYPE` rules (first match wins).
    pub tensor_types: Vec<mix_rules::TensorTypeRule>,
    /// `llama-quantize --leave-output-tensor`.
    pub leave_output_tensor: bool,
    /// `llama-quantize --imatrix` (already filtered; `None` when no entry is left).
    pub imatrix: Option<&'a Imatrix>,
    /// `general.name`.
    pub model_name: String,
    /// The tokenizer.* keys, as the converter writes them.
    pub tokenizer: Vec<(String, Value)>,
}

/// The complete plan.
pub struct ExportPlan {
    pub file_type: FileType,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<PlannedTensor>,
    /// Hash of everything that determines the output bytes (`gmat.plan_hash`).
    pub plan_hash: String,
}

impl ExportPlan {
    /// The GGUF header with metadata and tensor infos.
    pub fn header(&self) -> GgufHeader {
        let mut h = GgufHeader {
            metadata: self.metadata.clone(),
            tensors: Vec::new(),
        };
        for t in &self.tensors {
            let off = h.push_tensor(t.name.clone(), t.dims.clone(), t.ggml_type);
            debug_assert_eq!(off, t.offset);
        }
        h
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }

    /// Human-readable table for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let mut n_elements = 0u64;
        for t in &self.tensors {
            let n: u64 = t.dims.iter().product();
            n_elements += n;
            let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
            let _ = writeln!(
                s,
                "{:<36} {:<8} [{:>18}] {:>12} bytes",
                t.name,
                t.ggml_type.name(),
                dims.join(", "),
                t.n_bytes
            );
        }
        let bytes = self.data_bytes();
        let bpw = if n_elements > 0 {
            bytes as f64 * 8.0 / n_elements as f64
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "{} tensors, {} elements, {:.2} MiB of tensor data, {:.2} bits per weight, file type {}",
            self.tensors.len(),
            n_elements,
            bytes as f64 / (1 << 20) as f64,
            bpw,
            self.file_type
        );
        s
    }
}

/// A stored tensor mapped to its GGUF role.
struct Mapped {
    entry: TensorEntry,
    gguf_name: String,
    kind: TensorKind,
    bid: Option<usize>,
    xid: Option<usize>,
}

/// Builds the plan.
pub fn build(input: &PlanInput) -> Result<ExportPlan> {
    let PlanInput {
        manifest,
        hparams,
        arch,
        config,
        file_type,
        pure,
        ..
    } = input;
    if config.target_format != "gguf" {
        bail!(
            "target_format {:?} is not supported (allowed: \"gguf\")",
            config.target_format
        );
    }
    let mut tensors = ordered_tensors(manifest, hparams, arch)?;
    apply_name_map(&mut tensors, config, manifest)?;

    // Metadata first: llama-quantize's model facts come from it, and it needs no types.
    let mut params = ParamCount::default();
    let (mut n_exp_tensors, mut exp_sum) = (0, 0);
    for t in &tensors {
        let outer_first: Vec<u64> = t.dims.iter().rev().copied().collect();
        params.add(&t.name, &outer_first, &mut n_exp_tensors, &mut exp_sum);
    }
    let mut metadata = model_metadata(arch, hparams, &input.model_name, &params, file_type.id)?;

    // Stage 1: the converter's type, i.e. the type in the unquantized intermediate file.
    for t in &mut tensors {
        let src_float = match &t.source {
            TensorSource::Stored(p) => float_type_of(p[0].entry.dtype),
            TensorSource::Generated(_) => GgmlType::F32,
        };
        let out_float = if file_type.is_float() {
            file_type.default_type
        } else {
            src_float
        };
        t.ggml_type = type_rules::converter_type(&t.name, t.dims.len(), t.kind, out_float);
    }
    // Stage 2: llama-quantize's choice (file type mix and its options).
    let facts = mix_rules::ModelFacts::from_gguf_metadata(&metadata)?;
    let mix = mix_rules::MixOptions {
        pure: *pure,
        output_tensor_type: input.output_tensor_type,
        token_embedding_type: input.token_embedding_type,
        tensor_types: input.tensor_types.clone(),
        leave_output_tensor: input.leave_output_tensor,
        has_imatrix: input.imatrix.is_some(),
    };
    let descs: Vec<mix_rules::TensorDesc> = tensors
        .iter()
        .map(|t| mix_rules::TensorDesc {
            name: &t.name,
            dims: &t.dims,
            ty: t.ggml_type,
        })
        .collect();
    let mut types = mix_rules::select_types(&facts, &descs, *file_type, &mix)?;
    // Stage 3: the config's per-tensor types have the last word.
    let overrides = PerTensor::new(&config.quantization.per_tensor)?;
    for (t, ty) in tensors.iter().zip(&mut types) {
        let quantizable = mix_rules::allows_quantization(
            &facts.arch,
            &t.name,
            &t.dims,
            !input.leave_output_tensor,
        );
        if let Some(o) = overrides.find(t, quantizable) {
            *ty = o;
        }
    }
    overrides.check_all_used()?;
    mix_rules::check_imatrix(&facts, &descs, &types, *file_type, &mix)?;
    for (t, ty) in tensors.iter_mut().zip(types) {
        if ty.row_bytes(t.ncols()).is_none() {
            bail!(
                "tensor {}: rows of {} values do not fit {ty} blocks of {}; choose another type for it",
                t.name,
                t.ncols(),
                ty.block_size()
            );
        }
        if quant::codec(ty).is_none() {
            bail!(
                "tensor {}: type {ty} cannot be written by this gmat build",
                t.name
            );
        }
        if let Some(im) = input.imatrix {
            // llama-quantize looks weights up only for tensors it converts to a quantized type.
            if ty != t.ggml_type && ty.is_quantized() {
                let n_expert = t.dims.get(2).copied().unwrap_or(1) as usize;
                t.imatrix = im
                    .for_tensor(&t.name, t.ncols() as usize, n_expert)?
                    .map(<[f32]>::to_vec);
                if t.imatrix.is_none() && mix_rules::requires_imatrix(&t.name, ty, *file_type) {
                    bail!(
                        "missing importance matrix for tensor {} in a very low-bit quantization ({ty}): \
                         the imatrix {} has no usable entry for it",
                        t.name,
                        im.file()
                    );
                }
            }
        }
        t.ggml_type = ty;
    }

    // Offsets, exactly as the GGUF writer will lay them out.
    let mut header = GgufHeader::default();
    for t in &mut tensors {
        t.n_bytes = t.ggml_type.row_bytes(t.ncols()).unwrap_or(0) * t.nrows();
        t.offset = header.push_tensor(t.name.clone(), t.dims.clone(), t.ggml_type);
    }
    let mut names = HashSet::new();
    for t in &tensors {
        if !names.insert(t.name.as_str()) {
            bail!(
                "two tensors would both be named {} in the GGUF (check tensor_map)",
                t.name
            );
        }
    }

    metadata.extend(input.tokenizer.iter().cloned());
    for (k, id) in &config.special_token_keys {
        let key = format!("tokenizer.ggml.{k}_token_id");
        metadata.retain(|(mk, _)| *mk != key);
        metadata.push((key, Value::U32(*id)));
    }
    if let Some(im) = input.imatrix {
        // llama-quantize appends these last.
        let keys = im.metadata();
        metadata.retain(|(k, _)| !keys.iter().any(|(n, _)| n == k));
        metadata.extend(keys);
    }
    let plan_hash = plan_hash(file_type, &metadata, &tensors);
    metadata.push((
        "gmat.version".into(),
        Value::String(env!("CARGO_PKG_VERSION").into()),
    ));
    metadata.push((
        "gmat.source_hash".into(),
        Value::String(manifest.model_hash()),
    ));
    metadata.push(("gmat.plan_hash".into(), Value::String(plan_hash.clone())));
    Ok(ExportPlan {
        file_type: *file_type,
        metadata,
        tensors,
        plan_hash,
    })
}

fn float_type_of(d: Dtype) -> GgmlType {
    match d {
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::BF16,
        _ => GgmlType::F32,
    }
}

/// Maps every stored tensor and orders output tensors the way the converter emits them:
/// generated tensors first, then source order, stacked experts where their layer completes.
fn ordered_tensors(manifest: &Manifest, hp: &Hparams, arch: &Arch) -> Result<Vec<PlannedTensor>> {
    let mut out = Vec::new();
    if arch.llama_extras {
        if let Some(f) = rope::llama3_rope_factors(hp)? {
            out.push(PlannedTensor {
                name: "rope_freqs.weight".into(),
                kind: Some(TensorKind::RopeFreqs),
                dims: vec![f.len() as u64],
                ggml_type: GgmlType::F32,
                source: TensorSource::Generated(f),
                offset: 0,
                n_bytes: 0,
                imatrix: None,
            });
        }
    }
    let n_head = hp.u64(&["n_heads", "num_attention_heads"])?;
    let n_head_kv = hp.u64(&["n_kv_heads", "num_key_value_heads"])?;
    let n_expert = hp.u64(&["num_local_experts"])?;
    // experts waiting for their layer to complete: (bid) -> (kind, xid) -> entry
    let mut pending: BTreeMap<usize, HashMap<(TensorKind, usize), TensorEntry>> = BTreeMap::new();
    for e in &manifest.tensors {
        if SKIPPED_SUFFIXES.iter().any(|s| e.name.ends_with(s)) {
            continue;
        }
        let m = match_hf_name(&e.name).with_context(|| {
            format!(
                "cannot map tensor {} to a GGUF name for architecture {}",
                e.name, arch.name
            )
        })?;
        if !arch.has(m.kind) {
            bail!(
                "tensor {} ({:?}) is not part of architecture {}",
                e.name,
                m.kind,
                arch.name
            );
        }
        let mapped = Mapped {
            entry: e.clone(),
            gguf_name: m.gguf_name(),
            kind: m.kind,
            bid: m.bid,
            xid: m.xid,
        };
        if let Some(xid) = mapped.xid {
            let n_exp =
                n_expert.context("expert tensors need num_local_experts in config.json")? as usize;
            if xid >= n_exp {
                bail!(
                    "tensor {}: expert {xid} but num_local_experts is {n_exp}",
                    e.name
                );
            }
            let bid = mapped.bid.unwrap_or(0);
            let layer = pending.entry(bid).or_default();
            layer.insert((mapped.kind, xid), mapped.entry.clone());
            if layer.len() == 3 * n_exp {
                let layer = pending.remove(&bid).unwrap_or_default();
                // conversion/llama.py stacks w1, w2, w3 in that order.
                for kind in [
                    TensorKind::FfnGateExps,
                    TensorKind::FfnDownExps,
                    TensorKind::FfnUpExps,
                ] {
                    out.push(stack_experts(&layer, kind, bid, n_exp)?);
                }
            }
            continue;
        }
        let transform = match (arch.permute_qk, mapped.kind) {
            (true, TensorKind::AttnQ) => Transform::PermuteRows {
                n_head: n_head.context("config.json has no num_attention_heads")?,
            },
            (true, TensorKind::AttnK) => {
                let h = n_head.context("config.json has no num_attention_heads")?;
                Transform::PermuteRows {
                    n_head: n_head_kv.filter(|&kv| kv != h).unwrap_or(h),
                }
            }
            _ => Transform::None,
        };
        if let Transform::PermuteRows { n_head } = transform {
            let rows = e.shape.first().copied().unwrap_or(0);
            if n_head == 0 || rows % (2 * n_head) != 0 {
                bail!(
                    "tensor {}: {rows} rows cannot be split into {n_head} heads of two halves",
                    e.name
                );
            }
        }
        out.push(PlannedTensor {
            name: mapped.gguf_name,
            kind: Some(mapped.kind),
            dims: e.shape.iter().rev().copied().collect(),
            ggml_type: GgmlType::F32,
            source: TensorSource::Stored(vec![SourcePiece {
                entry: mapped.entry,
                transform,
            }]),
            offset: 0,
            n_bytes: 0,
            imatrix: None,
        });
        let _ = mapped.bid;
    }
    if let Some((bid, layer)) = pending.into_iter().next() {
        bail!(
            "layer {bid} has {} expert tensors; expected 3 x num_local_experts",
            layer.len()
        );
    }
    for t in &out {
        if t.dims.is_empty() || t.dims.len() > 4 {
            bail!(
                "tensor {} has {} dimensions; GGUF holds 1 to 4",
                t.name,
                t.dims.len()
            );
        }
    }
    Ok(out)
}

fn stack_experts(
    layer: &HashMap<(TensorKind, usize), TensorEntry>,
    kind: TensorKind,
    bid: usize,
    n_exp: usize,
) -> Result<PlannedTensor> {
    let mut pieces = Vec::with_capacity(n_exp);
    for xid in 0..n_exp {
        let e = layer
            .get(&(kind, xid))
            .with_context(|| format!("layer {bid}: expert {xid} of {:?} is missing", kind))?;
        if let Some(first) = pieces.first().map(|p: &SourcePiece| &p.entry) {
            if first.shape != e.shape {
                bail!(
                    "layer {bid}: experts of {:?} have different shapes ({:?} vs {:?})",
                    kind,
                    first.shape,
                    e.shape
                );
            }
        }
        pieces.push(SourcePiece {
            entry: e.clone(),
            transform: Transform::None,
        });
    }
    let mut dims: Vec<u64> = pieces[0].entry.shape.iter().rev().copied().collect();
    dims.push(n_exp as u64);
    Ok(PlannedTensor {
        name: kind.gguf_base().replace("{bid}", &bid.to_string()) + ".weight",
        kind: Some(kind),
        dims,
        ggml_type: GgmlType::F32,
        source: TensorSource::Stored(pieces),
        offset: 0,
        n_bytes: 0,
        imatrix: None,
    })
}

/// Applies `tensor_map` (stored UUID or source name → GGUF name).
fn apply_name_map(
    tensors: &mut [PlannedTensor],
    config: &ExportConfig,
    manifest: &Manifest,
) -> Result<()> {
    let mut by_key: HashMap<String, &str> = HashMap::new();
    for (i, e) in config.tensor_map.iter().enumerate() {
        let entry = resolve_stored(&e.source, manifest).with_context(|| {
            format!(
                "tensor_map[{i}].source {:?} is neither a stored UUID nor a source tensor name",
                e.source
            )
        })?;
        if e.target.is_empty() || e.target.len() > 64 {
            bail!(
                "tensor_map[{i}].target {:?} is not a valid GGUF tensor name (1 to 64 bytes)",
                e.target
            );
        }
        by_key.insert(entry.uuid.to_string(), &e.target);
    }
    for t in tensors {
        if let TensorSource::Stored(pieces) = &t.source {
            let targets: HashSet<&str> = pieces
                .iter()
                .filter_map(|p| by_key.get(&p.entry.uuid.to_string()).copied())
                .collect();
            match targets.len() {
                0 => {}
                1 => t.name = targets.into_iter().next().unwrap_or_default().to_string(),
                _ => bail!("tensor_map gives the pieces of {} different names", t.name),
            }
        }
    }
    Ok(())
}

fn resolve_stored<'a>(key: &str, manifest: &'a Manifest) -> Option<&'a TensorEntry> {
    match Uuid::parse_str(key) {
        Ok(u) => manifest.tensors.iter().find(|t| t.uuid == u),
        Err(_) => manifest.by_name(key),
    }
}

/// `quantization.per_tensor`: the type of chosen tensors, overriding the file type's mix and
/// the command-line type options. A key is
/// * a stored tensor's UUID, a GGUF tensor name or a source (HF) tensor name (compared without
///   regard to case), or
/// * `re:REGEX`: a regular expression (Rust `regex` syntax, case-sensitive) searched for
///   anywhere in the GGUF tensor name, e.g. `"re:^blk\\.[0-9]\\.ffn_down": "Q6_K"` in JSON.
///   Like llama-quantize's `--tensor-type`, it only applies to tensors llama-quantize may
///   quantize (not to norms, biases, routers or 1-D tensors).
///
/// An exact key beats every `re:` key; among `re:` keys the first that matches, in the order
/// they appear in the config file, wins. A key that matches no tensor is an error.
struct PerTensor {
    rules: Vec<PerTensorRule>,
    used: std::cell::RefCell<HashSet<String>>,
}

struct PerTensorRule {
    key: String,
    regex: Option<Regex>,
    ty: GgmlType,
}

impl PerTensor {
    fn new(map: &IndexMap<String, String>) -> Result<PerTensor> {
        let mut rules = Vec::new();
        for (k, v) in map {
            let ty: GgmlType = v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("quantization.per_tensor[{k:?}]: {e}"))?;
            let regex = match k.strip_prefix("re:") {
                Some(re) => Some(Regex::new(re).with_context(|| {
                    format!("quantization.per_tensor[{k:?}]: not a valid regular expression")
                })?),
                None => None,
            };
            rules.push(PerTensorRule {
                key: k.clone(),
                regex,
                ty,
            });
        }
        Ok(PerTensor {
            rules,
            used: Default::default(),
        })
    }

    /// The type for `t`; `re:` keys are tried only if `quantizable`.
    fn find(&self, t: &PlannedTensor, quantizable: bool) -> Option<GgmlType> {
        let mut keys: Vec<String> = vec![t.name.clone()];
        if let TensorSource::Stored(pieces) = &t.source {
            for p in pieces {
                keys.push(p.entry.uuid.to_string());
                keys.push(p.entry.name.clone());
            }
        }
        let exact = self
            .rules
            .iter()
            .find(|r| r.regex.is_none() && keys.iter().any(|x| x.eq_ignore_ascii_case(&r.key)));
        let hit = exact.or_else(|| {
            if !quantizable {
                return None;
            }
            self.rules
                .iter()
                .find(|r| r.regex.as_ref().is_some_and(|re| re.is_match(&t.name)))
        })?;
        self.used.borrow_mut().insert(hit.key.clone());
        Some(hit.ty)
    }

    fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        if let Some(r) = self.rules.iter().find(|r| !used.contains(&r.key)) {
            bail!(
                "quantization.per_tensor key {:?} matches no tensor (use a UUID, a GGUF name, a source name or re:REGEX)",
                r.key
            );
        }
        Ok(())
    }
}

fn plan_hash(ft: &FileType, metadata: &[(String, Value)], tensors: &[PlannedTensor]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(ft.name.as_bytes());
    for (k, v) in metadata {
        h.update(format!("{k}={v:?}\n").as_bytes());
    }
    for t in tensors {
        h.update(format!("{}:{}:{:?}:{}:", t.name, t.ggml_type, t.dims, t.offset).as_bytes());
        if let Some(w) = &t.imatrix {
            for x in w {
                h.update(&x.to_le_bytes());
            }
        }
        match &t.source {
            TensorSource::Stored(p) => {
                for piece in p {
                    h.update(format!("{}:{:?};", piece.entry.hash, piece.transform).as_bytes());
                }
            }
            TensorSource::Generated(v) => {
                for x in v {
                    h.update(&x.to_le_bytes());
                }
            }
        }
    }
    format!("blake3:{}", h.finalize().to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qk_permutation_matches_reshape_swapaxes() {
        // Direct evaluation of reshape(n_head, 2, half).swapaxes(1, 2).reshape(-1) on row ids.
        for (rows, n_head) in [(8usize, 2u64), (64, 8), (32, 2), (12, 3)] {
            let half = rows / n_head as usize / 2;
            let mut expected = Vec::new();
            for h in 0..n_head as usize {
                for i in 0..half {
                    for j in 0..2 {
                        expected.push(h * 2 * half + j * half + i);
                    }
                }
            }
            let t = Transform::PermuteRows { n_head };
            let got: Vec<usize> = (0..rows).map(|r| t.source_row(r, rows)).collect();
            assert_eq!(got, expected, "rows {rows}, heads {n_head}");
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, (0..rows).collect::<Vec<_>>());
        }
        // two heads of four rows: [a0 a1 b0 b1] per head becomes [a0 b0 a1 b1]
        let t = Transform::PermuteRows { n_head: 2 };
        assert_eq!(
            (0..8).map(|r| t.source_row(r, 8)).collect::<Vec<_>>(),
            [0, 2, 1, 3, 4, 6, 5, 7]
        );
    }
}
