//! The export plan: a pure function of (manifest, architecture, config, options) that decides
//! every output tensor's name, type, shape, source, transform and byte offset, and every
//! metadata key. Execution (`pipeline`) only follows it; `--dry-run` prints it.

pub mod budget;
pub mod file_type;
pub mod gguf_source;
pub mod kv_override;
pub mod llama_load;
pub mod mix_rules;
pub mod per_tensor;
pub mod split;
pub mod type_rules;

#[cfg(test)]
mod ablation_tests;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::arch::metadata::{general_keys, MetadataInput, ParamCount};
use crate::arch::transform::{ValueOp, View};
use crate::arch::{
    self, ArchSpec, Cx, Data, Hparams, Kv, ModelDir, ModelKind, NameMap, TensorKind,
};
use crate::config::ExportConfig;
use crate::gguf::{GgmlType, GgufHeader, Value};
use crate::quant;
use crate::quant::imatrix::Imatrix;
use crate::source::Dtype;
use crate::store::{Manifest, TensorEntry};
use kv_override::KvOverride;

pub use file_type::FileType;
pub use mix_rules::TypeOptions;

/// One stored tensor feeding an output tensor: which values of it ([`View`]) and how they
/// change ([`ValueOp`]).
#[derive(Clone, Debug)]
pub struct SourcePiece {
    pub entry: TensorEntry,
    pub view: View,
    pub op: ValueOp,
    /// The block scales `entry` is dequantized with (FP8 checkpoints), applied to source
    /// elements before the view and the op.
    pub scale: Option<ScaleSource>,
    /// The E8M0 scales of a checkpoint's MXFP4 codes (`entry`): the piece is ggml MXFP4
    /// blocks repacked from both.
    pub mxfp4: Option<Mxfp4Source>,
}

/// The scale tensor of MXFP4 codes and which of its bytes go with the piece's blocks.
#[derive(Clone, Debug)]
pub struct Mxfp4Source {
    pub entry: TensorEntry,
    pub view: View,
}

/// A stored tensor of block scales and the block each scale covers, per axis.
#[derive(Clone, Debug)]
pub struct ScaleSource {
    pub entry: TensorEntry,
    pub block: Vec<u64>,
}

/// Where an output tensor's values come from.
#[derive(Clone, Debug)]
pub enum TensorSource {
    /// Pieces of stored tensors written one after another (one piece, or one per stacked
    /// expert).
    Stored(Vec<SourcePiece>),
    /// Values computed by the converter (`rope_freqs`, LongRoPE factors).
    Generated(Vec<f32>),
}

impl TensorSource {
    /// Where the values come from, for `--dry-run`: the source tensor(s), and how they are read
    /// when not as they are.
    pub fn describe(&self) -> String {
        let piece = |p: &SourcePiece| {
            let mut d = p.entry.name.clone();
            // ggml blocks are read as bytes
            let whole = match p.entry.dtype {
                Dtype::Block(_) => p.view.is_whole(&[p.entry.raw_bytes]),
                _ => p.view.is_whole(&p.entry.shape),
            };
            if !whole {
                let _ = write!(
                    d,
                    " (view +{} dims {:?} strides {:?})",
                    p.view.offset, p.view.dims, p.view.strides
                );
            }
            if let Some(sc) = &p.scale {
                let _ = write!(d, " (x {} blocks {:?})", sc.entry.name, sc.block);
            }
            if let Some(m) = &p.mxfp4 {
                let _ = write!(d, " (MXFP4 repacked with {})", m.entry.name);
            }
            if p.op != ValueOp::None {
                let _ = write!(d, " {:?}", p.op);
            }
            d
        };
        match self {
            TensorSource::Generated(v) => format!("generated ({} values)", v.len()),
            TensorSource::Stored(p) if p.len() == 1 => piece(&p[0]),
            TensorSource::Stored(p) => format!(
                "{} stacked: {} .. {}",
                p.len(),
                piece(&p[0]),
                piece(&p[p.len() - 1])
            ),
        }
    }
}

/// One tensor of the output file.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub name: String,
    pub kind: TensorKind,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// The type the converter writes it in (the file llama-quantize reads for quantized
    /// types): values not already exact in it are rounded to it first.
    pub intermediate: GgmlType,
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
    /// The store root: config.json and the tokenizer files.
    pub dir: &'a Path,
    pub hparams: &'a Hparams,
    pub arch: &'static dyn ArchSpec,
    pub config: &'a ExportConfig,
    pub file_type: FileType,
    /// llama-quantize's type options.
    pub types: &'a TypeOptions,
    /// `llama-quantize --imatrix` (already filtered; `None` when no entry is left).
    pub imatrix: Option<&'a Imatrix>,
    /// The converter's `--metadata` / `--model-name` and the source folder's name, for the
    /// `general.*` keys.
    pub metadata: MetadataInput,
    /// llama-quantize's `--override-kv`, applied last (before the imatrix keys, as it does).
    pub kv_overrides: &'a [KvOverride],
    /// `--pre-tokenizer`: the BPE pre-tokenizer name instead of the detected one.
    pub pre_tokenizer: Option<String>,
}

/// The complete plan.
#[derive(Clone)]
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

    /// Number of values of all tensors.
    pub fn n_elements(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.dims.iter().product::<u64>())
            .sum()
    }

    /// Bits per weight of the tensor data (what llama.cpp prints as BPW).
    pub fn bits_per_weight(&self) -> f64 {
        match self.n_elements() {
            0 => 0.0,
            n => self.data_bytes() as f64 * 8.0 / n as f64,
        }
    }

    /// Human-readable table for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for t in &self.tensors {
            let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
            let _ = writeln!(
                s,
                "{:<36} {:<8} [{:>18}] {:>12} bytes  <- {}",
                t.name,
                t.ggml_type.name(),
                dims.join(", "),
                t.n_bytes,
                t.source.describe()
            );
        }
        let _ = writeln!(
            s,
            "{} tensors, {} elements, {:.2} MiB of tensor data, {:.2} bits per weight, file type {}",
            self.tensors.len(),
            self.n_elements(),
            self.data_bytes() as f64 / (1 << 20) as f64,
            self.bits_per_weight(),
            self.file_type
        );
        s
    }
}

/// Builds the plan.
pub fn build(input: &PlanInput) -> Result<ExportPlan> {
    let PlanInput {
        manifest,
        hparams,
        arch,
        config,
        file_type,
        ..
    } = input;
    if config.target_format != "gguf" {
        bail!(
            "target_format {:?} is not supported (allowed: \"gguf\")",
            config.target_format
        );
    }
    // The class's own view of config.json (a projector's is the vision config).
    let class_hp = arch.hparams(hparams.file())?;
    let block_count = arch.block_count(&class_hp)?;
    let names = NameMap::new(arch.gguf_arch(), block_count as usize)?;
    let md = ModelDir::new(input.dir).with_pre_tokenizer(input.pre_tokenizer.clone());
    let cx = Cx {
        hp: &class_hp,
        text: hparams,
        dir: input.dir,
        md: &md,
        names: &names,
        block_count,
        file_type: arch::dequant::converter_file_type(
            &class_hp,
            file_type.id,
            file_type.is_float(),
        ),
    };

    // The converter's tensor stream (prepare_tensors), then its metadata (prepare_metadata).
    let mut kv = Kv::for_arch(arch.gguf_arch());
    kv.set(
        "general.architecture",
        Value::String(arch.gguf_arch().into()),
    );
    let mut tensors = converted_tensors(*arch, &cx, manifest, &mut kv)?;
    apply_name_map(&mut tensors, config, manifest)?;
    let mut params = ParamCount::default();
    let (mut n_exp_tensors, mut exp_sum) = (0, 0);
    for t in &tensors {
        let outer_first: Vec<u64> = t.dims.iter().rev().copied().collect();
        params.add(&t.name, &outer_first, &mut n_exp_tensors, &mut exp_sum);
    }
    let general_type = match arch.kind() {
        ModelKind::Text => "model",
        ModelKind::Mmproj => "mmproj",
    };
    general_keys(
        &mut kv,
        arch.gguf_arch(),
        general_type,
        &md,
        &input.metadata,
        &params,
    )?;
    arch.set_gguf_parameters(&cx, &mut kv)?;
    // gguf-py's GGML_QUANT_VERSION
    kv.set("general.quantization_version", Value::U32(2));
    arch.set_vocab(&cx, &mut kv)
        .with_context(|| format!("tokenizer of {}", input.dir.display()))?;
    let mut metadata = kv.into_vec();

    // The converter writes what config.json (with its class's defaults) says even when it
    // contradicts the tensors; llama.cpp then refuses the file, and so does gmat.
    if arch.kind() == ModelKind::Text {
        let shapes: Vec<(String, Vec<u64>)> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone()))
            .collect();
        if let Err(r) = llama_load::check(&metadata, &shapes) {
            bail!("{}", explain_refusal(&r, &metadata, &class_hp));
        }
    }

    // Integer weights: the converter casts them to float and writes a file llama.cpp loads
    // and computes garbage with; a float weight stored as integers is a broken checkpoint.
    for t in &tensors {
        if let TensorSource::Stored(pieces) = &t.source {
            for p in pieces.iter().filter(|p| p.mxfp4.is_none()) {
                use crate::source::Dtype::*;
                if matches!(
                    p.entry.dtype,
                    I64 | I32 | I16 | I8 | U64 | U32 | U16 | U8 | Bool
                ) {
                    bail!(
                        "tensor {} ({} in the GGUF) is stored as {}: a weight must be floating \
                         point (F32, F16, BF16, FP8), so this checkpoint is not one llama.cpp can \
                         use as it is",
                        p.entry.name,
                        t.name,
                        p.entry.dtype.name()
                    );
                }
            }
        }
    }

    match arch.kind() {
        ModelKind::Text => choose_types(input, &mut tensors, &metadata)?,
        ModelKind::Mmproj => choose_converter_types(*arch, *file_type, &mut tensors)?,
    }

    // Offsets, exactly as the GGUF writer will lay them out.
    let mut header = GgufHeader::default();
    for t in &mut tensors {
        t.n_bytes = t.ggml_type.row_bytes(t.ncols()).unwrap_or(0) * t.nrows();
        t.offset = header.push_tensor(t.name.clone(), t.dims.clone(), t.ggml_type);
    }
    let mut seen = HashSet::new();
    for t in &tensors {
        if !seen.insert(t.name.as_str()) {
            bail!(
                "two tensors would both be named {} in the GGUF (check tensor_map)",
                t.name
            );
        }
    }

    for (k, id) in &config.special_token_keys {
        let key = special_token_key(k, *id, &metadata)?;
        metadata.retain(|(mk, _)| *mk != key);
        metadata.push((key, Value::U32(*id)));
    }
    kv_override::apply(&mut metadata, input.kv_overrides);
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

/// The error for a file llama.cpp would refuse: its loader's message, then each metadata key
/// the failed check read, with the config.json keys the converter wrote it from (absent ones
/// with the configuration class's default, null ones).
fn explain_refusal(r: &llama_load::Refusal, metadata: &[(String, Value)], hp: &Hparams) -> String {
    let file = hp.file();
    let loaded = arch::auto_config::load_hparams(file, &arch::all_config_classes())
        .map(|(_, how)| how)
        .ok();
    // config.json as written, text_config merged
    let raw = Hparams::new(&file.json).ok();
    let mut lines = Vec::new();
    for key in &r.keys {
        let value = metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let shown = match value {
            Some(Value::Array(_, a)) => format!("{key} has {} entries", a.len()),
            Some(v) => format!("{key} = {}", value_text(v)),
            None => format!("the converter writes no {key}"),
        };
        let mut why = Vec::new();
        let arch_name = key.split('.').next().unwrap_or("");
        let keys: Vec<&str> = match llama_load::config_keys(arch_name, key) {
            // find_hparam: the first spelling present decides
            llama_load::ConfigKeys::FirstOf(ks) => {
                let first = ks.iter().copied().find(|k| hp.contains(k));
                if first.is_none() && !ks.is_empty() {
                    // nothing to write it from: name every spelling the converter looks for
                    why.push(format!("config.json has no {}", ks.join(" / ")));
                }
                first.into_iter().collect()
            }
            llama_load::ConfigKeys::All(ks) => ks.to_vec(),
        };
        for ck in keys {
            let in_file = raw.as_ref().filter(|r| r.contains(ck));
            match in_file.map(|r| r.get(ck)) {
                Some(None) => why.push(format!("{ck} is null in config.json")),
                Some(Some(v)) => why.push(format!("config.json: {ck} = {v}")),
                None if hp.contains(ck) => {
                    let class = match &loaded {
                        Some(arch::auto_config::Loaded::Class(c)) => format!("transformers' {c}"),
                        _ => "the converter".into(),
                    };
                    let v = hp.get(ck).map_or("None".into(), |v| v.to_string());
                    why.push(format!("config.json has no {ck}: {class} default {v}"));
                }
                None => {}
            }
        }
        if why.is_empty() {
            lines.push(shown);
        } else {
            lines.push(format!("{shown} ({})", why.join("; ")));
        }
    }
    let mut s = format!(
        "config.json contradicts the tensors: llama.cpp would refuse the file the converter writes \
         for it ({})",
        r.message
    );
    for l in lines {
        s.push_str("; ");
        s.push_str(&l);
    }
    s
}

fn value_text(v: &Value) -> String {
    match v {
        Value::U32(n) => n.to_string(),
        Value::I32(n) => n.to_string(),
        Value::F32(f) => f.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// The special token types `special_token_keys` may set, and the key of each.
const SPECIAL_TOKEN_TYPES: &[&str] = &[
    "bos", "eos", "unk", "sep", "pad", "mask", "eot", "eom", "fim_pre", "fim_suf", "fim_mid",
    "fim_pad", "fim_rep", "fim_sep",
];

/// The metadata key of the `special_token_keys` entry `typ: id`, refusing a type gguf has no key
/// for and an id outside the vocabulary (`tokenizer.ggml.tokens`).
pub(super) fn special_token_key(
    typ: &str,
    id: u32,
    metadata: &[(String, Value)],
) -> Result<String> {
    if !SPECIAL_TOKEN_TYPES.contains(&typ) {
        bail!(
            "special_token_keys: {:?} is not a special token type (allowed: {})",
            crate::escape::controls(typ),
            SPECIAL_TOKEN_TYPES.join(", ")
        );
    }
    let n_vocab = metadata.iter().find_map(|(k, v)| match v {
        Value::Array(_, items) if k == "tokenizer.ggml.tokens" => Some(items.len()),
        _ => None,
    });
    match n_vocab {
        Some(n) if id as usize >= n => bail!(
            "special_token_keys: {typ} = {id} is not a token of the vocabulary (ids 0..{})",
            n.saturating_sub(1)
        ),
        None => bail!(
            "special_token_keys: {typ} = {id} cannot be checked: the model has no vocabulary (tokenizer.ggml.tokens)"
        ),
        _ => {}
    }
    Ok(match crate::arch::kv::keys::special_token_id(typ) {
        Some(k) => k.to_string(),
        None => format!("tokenizer.ggml.{typ}_token_id"),
    })
}

/// A text model's tensor types: the converter's type (the intermediate file), then
/// llama-quantize's choice for the file type and options, then the config's per-tensor types.
fn choose_types(
    input: &PlanInput,
    tensors: &mut [PlannedTensor],
    metadata: &[(String, Value)],
) -> Result<()> {
    let PlanInput {
        config,
        file_type,
        types: type_options,
        ..
    } = input;
    // Stage 1: the converter's type, i.e. the type in the unquantized intermediate file.
    for t in tensors.iter_mut() {
        let src_float = match &t.source {
            TensorSource::Stored(p) => float_type_of(p[0].entry.dtype),
            TensorSource::Generated(_) => GgmlType::F32,
        };
        let out_float = if file_type.is_float() {
            file_type.default_type
        } else {
            src_float
        };
        t.ggml_type = match &t.source {
            // the converter writes repacked MXFP4 blocks as they are (raw_dtype MXFP4)
            TensorSource::Stored(p) if p.iter().all(|p| p.mxfp4.is_some()) => GgmlType::MXFP4,
            _ => type_rules::converter_type(&t.name, t.dims.len(), t.kind, out_float),
        };
        t.intermediate = t.ggml_type;
    }
    // Stage 2: llama-quantize's choice (file type mix and its options).
    let facts = mix_rules::ModelFacts::from_gguf_metadata(metadata)?;
    let mix = mix_rules::MixOptions {
        types: (*type_options).clone(),
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
    if file_type.is_float() {
        // a float file is the converter's own: what it writes quantized (MXFP4 experts) stays so
        for (d, ty) in descs.iter().zip(&mut types) {
            if d.ty.is_quantized() {
                *ty = d.ty;
            }
        }
    }
    // Stage 3: the config's per-tensor types have the last word.
    let overrides = per_tensor::PerTensor::new(&config.quantization.per_tensor)?;
    for (t, ty) in tensors.iter().zip(&mut types) {
        let quantizable = mix_rules::allows_quantization(
            &facts.arch,
            &t.name,
            &t.dims,
            !type_options.leave_output_tensor,
        );
        if let Some(o) = overrides.find(t, quantizable) {
            *ty = o;
        }
    }
    overrides.check_all_used()?;
    mix_rules::check_imatrix(&facts, &descs, &types, *file_type, &mix)?;
    mix_rules::check_requantize(&descs, &types, &mix)?;
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

    if !file_type.is_float() {
        // llama-quantize writes each tensor with `ggml_n_dims` dimensions: outer dimensions of
        // size 1 are dropped (a [1, n] router or token-type table becomes [n]).
        for t in tensors.iter_mut() {
            t.dims.truncate(mix_rules::ggml_n_dims(&t.dims));
        }
    }
    Ok(())
}

/// A projector's tensor types: what `convert_hf_to_gguf.py --mmproj --outtype T` writes
/// (llama-quantize does not quantize projectors): F32/F16/BF16, or Q8_0 with gguf-py's F16
/// fallback for rows that are not whole blocks, and the class's forced types.
fn choose_converter_types(
    arch: &dyn ArchSpec,
    file_type: FileType,
    tensors: &mut [PlannedTensor],
) -> Result<()> {
    if !(file_type.is_float() || file_type.default_type == GgmlType::Q8_0) {
        bail!(
            "a projector (mmproj) is written as F32, F16, BF16 or Q8_0, as the converter \
             writes it; {file_type} is not one of them"
        );
    }
    for t in tensors.iter_mut() {
        let source_name = match &t.source {
            TensorSource::Stored(p) => p[0].entry.name.as_str(),
            TensorSource::Generated(_) => "",
        };
        let forced = arch.force_type(source_name, &t.name, file_type.id);
        let mut ty = type_rules::converter_type_forced(
            &t.name,
            t.dims.len(),
            t.kind,
            forced,
            file_type.default_type,
        );
        if ty.is_quantized() && t.ncols() % ty.block_size() as u64 != 0 {
            ty = GgmlType::F16; // gguf-py QuantError: "falling back to F16"
        }
        t.ggml_type = ty;
        t.intermediate = ty;
    }
    Ok(())
}

/// The converter's float type for a source dtype, when it writes "the source type" (the
/// intermediate file of a quantized export): FP8 checkpoints are converted as BF16, the
/// type they are published in besides FP8.
fn float_type_of(d: Dtype) -> GgmlType {
    match d {
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 | Dtype::F8E4M3 | Dtype::F8E5M2 => GgmlType::BF16,
        _ => GgmlType::F32,
    }
}

/// The architecture's output tensors for the stored tensors, as planned tensors (types and
/// offsets still to be decided).
fn converted_tensors(
    arch: &dyn ArchSpec,
    cx: &Cx,
    manifest: &Manifest,
    kv: &mut Kv,
) -> Result<Vec<PlannedTensor>> {
    let sources: Vec<arch::SourceTensor> = manifest
        .tensors
        .iter()
        .enumerate()
        .map(|(i, e)| arch::SourceTensor::new(i, e.name.clone(), e.dtype, e.shape.clone()))
        .collect();
    let out = arch::convert_tensors(arch, cx, &sources, kv)?;
    let mut planned = Vec::with_capacity(out.len());
    for t in out {
        if t.shape.is_empty() || t.shape.len() > 4 {
            bail!(
                "tensor {} has {} dimensions; GGUF holds 1 to 4",
                t.name,
                t.shape.len()
            );
        }
        if t.name.len() >= MAX_NAME_BYTES {
            bail!(
                "tensor name {} is {} bytes; llama.cpp accepts names of at most {} bytes",
                t.name,
                t.name.len(),
                MAX_NAME_BYTES - 1
            );
        }
        let source = match t.data {
            Data::Generated(v) => TensorSource::Generated(v),
            Data::Pieces(pieces) => TensorSource::Stored(
                pieces
                    .into_iter()
                    .map(|p| SourcePiece {
                        entry: manifest.tensors[p.source].clone(),
                        view: p.view,
                        op: p.op,
                        scale: p.scale.map(|s| ScaleSource {
                            entry: manifest.tensors[s.source].clone(),
                            block: s.block,
                        }),
                        mxfp4: p.mxfp4.map(|m| Mxfp4Source {
                            entry: manifest.tensors[m.source].clone(),
                            view: m.view,
                        }),
                    })
                    .collect(),
            ),
        };
        planned.push(PlannedTensor {
            name: t.name,
            kind: t.kind,
            dims: t.shape.iter().rev().copied().collect(),
            ggml_type: GgmlType::F32,
            intermediate: GgmlType::F32,
            source,
            offset: 0,
            n_bytes: 0,
            imatrix: None,
        });
    }
    Ok(planned)
}

/// `GGML_MAX_NAME`: ggml keeps tensor names in 64-byte buffers with the terminating zero.
pub const MAX_NAME_BYTES: usize = 64;

/// Applies `tensor_map` (stored UUID or source name → GGUF name).
pub(super) fn apply_name_map(
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
        if e.target.is_empty() || e.target.len() >= MAX_NAME_BYTES {
            bail!(
                "tensor_map[{i}].target {:?} is not a valid GGUF tensor name (1 to {} bytes)",
                e.target,
                MAX_NAME_BYTES - 1
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

pub(super) fn plan_hash(
    ft: &FileType,
    metadata: &[(String, Value)],
    tensors: &[PlannedTensor],
) -> String {
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
                    h.update(
                        format!("{}:{:?}:{:?};", piece.entry.hash, piece.view, piece.op).as_bytes(),
                    );
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
    fn names_llama_cpp_cannot_hold_are_refused() {
        let config = ExportConfig {
            tensor_map: vec![crate::config::export_config::ExportMapEntry {
                source: "x".into(),
                target: "n".repeat(MAX_NAME_BYTES),
            }],
            ..ExportConfig::default()
        };
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "format": "gmat", "format_version": 1, "gmat_version": "0",
            "source": {"format": "safetensors", "path": "p", "files": []},
            "model": {}, "side_files": [],
            "tensors": [{"name": "x", "uuid": "00000000-0000-0000-0000-000000000001",
                         "dtype": "F32", "shape": [1], "encoding": "raw", "raw_bytes": 4,
                         "stored_bytes": 4, "hash": format!("blake3:{}", "0".repeat(64))}]
        }))
        .unwrap();
        let e = apply_name_map(&mut [], &config, &manifest).unwrap_err();
        assert!(e.to_string().contains("1 to 63 bytes"), "{e}");
    }
}
