//! The export plan of a store imported from a GGUF: llama-quantize run on that GGUF
//! (`llama-quantize in.gguf out.gguf TYPE`, `llama_model_quantize_impl` of the reference
//! build), not the converter: the architecture, tensor names, shapes and metadata are the
//! GGUF's own, as they are.
//!
//! * An export that changes nothing — the GGUF's own file type (or none given), every tensor
//!   kept in its type and name, no metadata override — is the imported file itself, byte for
//!   byte: same keys in the same order, same tensor order and layout.
//! * Otherwise the plan is llama-quantize's: the file type's mix over the GGUF's tensor types
//!   (tensors already of the chosen type are copied), the key/value pairs copied with
//!   `general.quantization_version` and `general.file_type` set last (gguf's `set_val` removes a
//!   key and appends it), `split.*` removed, `--override-kv` and the imatrix keys after them;
//!   tensors in llama-quantize's order (`weight_name_comparer`) with `ggml_n_dims`
//!   dimensions. A quantized tensor that would change type is refused unless
//!   `--allow-requantize` (then dequantized with ggml's `to_float` and quantized again).
//!   gmat's `gmat.*` provenance keys of the imported file are replaced by this export's.

use anyhow::{bail, Context, Result};

use super::mix_rules::{self, MixOptions, ModelFacts, TensorDesc, TypeOptions};
use super::{
    kv_override, per_tensor, ExportPlan, FileType, PlannedTensor, SourcePiece, TensorSource,
};
use crate::arch::transform::{ValueOp, View};
use crate::arch::TensorKind;
use crate::config::ExportConfig;
use crate::gguf::{GgmlType, GgufHeader, Value};
use crate::quant;
use crate::quant::imatrix::Imatrix;
use crate::source::gguf_model::SPLIT_KEYS;
use crate::source::Dtype;
use crate::store::{Manifest, TensorEntry};

/// `GGML_QNT_VERSION` (ggml.h), what llama-quantize writes to `general.quantization_version`.
const QNT_VERSION: u32 = 2;

/// Everything the plan of a GGUF-sourced store needs.
pub struct GgufPlanInput<'a> {
    pub manifest: &'a Manifest,
    /// The imported GGUF's key/value pairs.
    pub metadata: &'a [(String, Value)],
    pub config: &'a ExportConfig,
    /// The file type to write; `None`: the GGUF's own.
    pub file_type: Option<FileType>,
    pub types: &'a TypeOptions,
    pub imatrix: Option<&'a Imatrix>,
    /// llama-quantize's `--override-kv`.
    pub kv_overrides: &'a [kv_override::KvOverride],
}

/// What the plan decided besides the plan itself.
pub struct GgufPlan {
    pub plan: ExportPlan,
    /// The imported file, unchanged.
    pub identical: bool,
    /// Quantized tensors quantized again (`--allow-requantize`): (name, from, to).
    pub requantized: Vec<(String, GgmlType, GgmlType)>,
}

/// The GGUF's own file type (`general.file_type`), if llama.cpp knows it.
pub fn source_file_type(metadata: &[(String, Value)]) -> Option<FileType> {
    let id = get(metadata, "general.file_type")?.as_u64()?;
    FileType::all().find(|f| u64::from(f.id) == id)
}

fn get<'m>(metadata: &'m [(String, Value)], key: &str) -> Option<&'m Value> {
    metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The ggml type a stored tensor of a GGUF source has.
fn ggml_type_of(e: &TensorEntry) -> Result<GgmlType> {
    e.dtype.ggml_type().with_context(|| {
        format!(
            "tensor {} is stored as {}, which is not a GGUF tensor type",
            e.name, e.dtype
        )
    })
}

/// The stored tensor as a planned tensor of its own type and shape.
fn planned(e: &TensorEntry) -> Result<PlannedTensor> {
    let ty = ggml_type_of(e)?;
    let dims: Vec<u64> = e.shape.iter().rev().copied().collect();
    // ggml blocks are read as bytes: a flat view of the whole tensor
    let view = match e.dtype {
        Dtype::Block(_) => View::contiguous(&[e.raw_bytes]),
        _ => View::contiguous(&e.shape),
    };
    Ok(PlannedTensor {
        name: e.name.clone(),
        kind: TensorKind::TokenEmbd, // not used: a GGUF source has no converter types to choose
        dims,
        ggml_type: ty,
        intermediate: ty,
        source: TensorSource::Stored(vec![SourcePiece {
            entry: e.clone(),
            view,
            op: ValueOp::None,
            scale: None,
            mxfp4: None,
        }]),
        offset: 0,
        n_bytes: 0,
        imatrix: None,
    })
}

/// Builds the plan.
pub fn build(input: &GgufPlanInput) -> Result<GgufPlan> {
    let GgufPlanInput {
        manifest,
        metadata,
        config,
        ..
    } = input;
    if config.target_format != "gguf" {
        bail!(
            "target_format {:?} is not supported (allowed: \"gguf\")",
            config.target_format
        );
    }
    let own = source_file_type(metadata);
    let mut tensors = manifest
        .tensors
        .iter()
        .map(planned)
        .collect::<Result<Vec<_>>>()?;
    let source_types: Vec<GgmlType> = tensors.iter().map(|t| t.ggml_type).collect();
    let source_names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
    super::apply_name_map(&mut tensors, config, manifest)?;
    let file_type = match (input.file_type, own) {
        (Some(ft), _) => ft,
        (None, Some(ft)) => ft,
        (None, None) => bail!(
            "the imported GGUF has no general.file_type llama.cpp knows ({}); give the file type \
             to write with --type",
            get(metadata, "general.file_type").map_or("none".into(), |v| v.to_string())
        ),
    };

    // llama-quantize's choice for every tensor (its own type where it does not quantize).
    let facts = ModelFacts::from_gguf_metadata(metadata)
        .context("the imported GGUF's metadata (the facts llama-quantize's mixes read)")?;
    let mix = MixOptions {
        types: input.types.clone(),
        has_imatrix: input.imatrix.is_some(),
    };
    let descs: Vec<TensorDesc> = tensors
        .iter()
        .zip(&source_types)
        .map(|(t, &ty)| TensorDesc {
            name: &t.name,
            dims: &t.dims,
            ty,
        })
        .collect();
    let mut types = if input.file_type.is_none() && !changes_types(input.types) {
        source_types.clone()
    } else {
        mix_rules::select_types(&facts, &descs, file_type, &mix)?
    };
    let overrides = per_tensor::PerTensor::new(&config.quantization.per_tensor)?;
    for (t, ty) in tensors.iter().zip(&mut types) {
        let quantizable = mix_rules::allows_quantization(
            &facts.arch,
            &t.name,
            &t.dims,
            !input.types.leave_output_tensor,
        );
        if let Some(o) = overrides.find(t, quantizable) {
            *ty = o;
        }
    }
    overrides.check_all_used()?;

    let unchanged = Some(file_type) == own
        && types == source_types
        && tensors.iter().map(|t| &t.name).eq(source_names.iter())
        && input.kv_overrides.is_empty()
        && input.imatrix.is_none()
        && config.special_token_keys.is_empty();
    if unchanged {
        return Ok(GgufPlan {
            plan: finish(file_type, metadata.to_vec(), tensors),
            identical: true,
            requantized: Vec::new(),
        });
    }

    mix_rules::check_imatrix(&facts, &descs, &types, file_type, &mix)?;
    let mut requantized = Vec::new();
    for i in mix_rules::quantize_order(descs.iter().map(|d| d.name)) {
        let (from, to) = (source_types[i], types[i]);
        if from.is_quantized() && from != to {
            if !input.types.allow_requantize {
                bail!(
                    "tensor {} is {from} in the imported GGUF and would become {to}: requantizing \
                     from type {from} is disabled, as in llama-quantize; export from a float GGUF, \
                     keep the tensor {from} (per_tensor in the export config), or allow it with \
                     --allow-requantize",
                    tensors[i].name
                );
            }
            requantized.push((tensors[i].name.clone(), from, to));
        }
    }
    for ((t, ty), from) in tensors.iter_mut().zip(types).zip(&source_types) {
        if ty.row_bytes(t.ncols()).is_none() {
            bail!(
                "tensor {}: rows of {} values do not fit {ty} blocks of {}; choose another type for it",
                t.name,
                t.ncols(),
                ty.block_size()
            );
        }
        if ty != *from {
            for (what, x) in [("read", *from), ("written", ty)] {
                if quant::codec(x).is_none() {
                    bail!(
                        "tensor {}: type {x} cannot be {what} by this gmat build (it is {from} in \
                         the imported GGUF and would become {ty})",
                        t.name
                    );
                }
            }
            if let Some(im) = input.imatrix {
                // llama-quantize looks weights up only for tensors it converts to a quantized type
                if ty.is_quantized() {
                    let n_expert = t.dims.get(2).copied().unwrap_or(1) as usize;
                    t.imatrix = im
                        .for_tensor(&t.name, t.ncols() as usize, n_expert)?
                        .map(<[f32]>::to_vec);
                    if t.imatrix.is_none() && mix_rules::requires_imatrix(&t.name, ty, file_type) {
                        bail!(
                            "missing importance matrix for tensor {} in a very low-bit quantization \
                             ({ty}): the imatrix {} has no usable entry for it",
                            t.name,
                            im.file()
                        );
                    }
                }
            }
        }
        t.ggml_type = ty;
        // llama-quantize writes `ggml_n_dims` dimensions
        t.dims.truncate(mix_rules::ggml_n_dims(&t.dims));
    }
    let order = mix_rules::quantize_order(tensors.iter().map(|t| t.name.as_str()));
    let mut slots: Vec<Option<PlannedTensor>> = tensors.into_iter().map(Some).collect();
    let tensors: Vec<PlannedTensor> = order.iter().filter_map(|&i| slots[i].take()).collect();

    // gguf_set_kv, then set_val (remove + append) of the two keys, then split keys removed
    let mut md: Vec<(String, Value)> = metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("gmat."))
        .cloned()
        .collect();
    for (k, v) in [
        ("general.quantization_version", QNT_VERSION),
        ("general.file_type", file_type.id),
    ] {
        md.retain(|(mk, _)| mk != k);
        md.push((k.into(), Value::U32(v)));
    }
    md.retain(|(k, _)| !SPLIT_KEYS.contains(&k.as_str()));
    for (k, id) in &config.special_token_keys {
        let key = super::special_token_key(k, *id, &md)?;
        md.retain(|(mk, _)| *mk != key);
        md.push((key, Value::U32(*id)));
    }
    kv_override::apply(&mut md, input.kv_overrides);
    if let Some(im) = input.imatrix {
        let keys = im.metadata();
        md.retain(|(k, _)| !keys.iter().any(|(n, _)| n == k));
        md.extend(keys);
    }
    let mut plan = finish(file_type, md, tensors);
    let plan_hash = super::plan_hash(&plan.file_type, &plan.metadata, &plan.tensors);
    plan.metadata.push((
        "gmat.version".into(),
        Value::String(env!("CARGO_PKG_VERSION").into()),
    ));
    plan.metadata.push((
        "gmat.source_hash".into(),
        Value::String(manifest.model_hash()),
    ));
    plan.metadata
        .push(("gmat.plan_hash".into(), Value::String(plan_hash.clone())));
    plan.plan_hash = plan_hash;
    Ok(GgufPlan {
        plan,
        identical: false,
        requantized,
    })
}

/// Whether llama-quantize's type options change any type by themselves.
fn changes_types(t: &TypeOptions) -> bool {
    t.pure
        || t.output_tensor_type.is_some()
        || t.token_embedding_type.is_some()
        || !t.tensor_types.is_empty()
        || t.leave_output_tensor
}

/// Offsets as the writer lays them out, and the plan.
fn finish(
    file_type: FileType,
    metadata: Vec<(String, Value)>,
    mut tensors: Vec<PlannedTensor>,
) -> ExportPlan {
    let mut header = GgufHeader::default();
    for t in &mut tensors {
        t.n_bytes = t.ggml_type.row_bytes(t.ncols()).unwrap_or(0) * t.nrows();
        t.offset = header.push_tensor(t.name.clone(), t.dims.clone(), t.ggml_type);
    }
    let plan_hash = super::plan_hash(&file_type, &metadata, &tensors);
    ExportPlan {
        file_type,
        metadata,
        tensors,
        plan_hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, dtype: Dtype, shape: &[u64]) -> serde_json::Value {
        let raw = dtype.bytes_for(shape).unwrap();
        serde_json::json!({"name": name, "uuid": crate::config::import_config::default_uuid(name),
            "dtype": dtype.name(), "shape": shape, "encoding": "raw", "raw_bytes": raw,
            "stored_bytes": raw, "hash": format!("blake3:{}", "0".repeat(64))})
    }

    fn manifest(tensors: Vec<serde_json::Value>) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": "gmat", "format_version": 1, "gmat_version": "0",
            "source": {"format": "gguf", "path": "m.gguf", "files": ["m.gguf"]},
            "model": {}, "side_files": [], "tensors": tensors
        }))
        .unwrap()
    }

    fn metadata(ft: u32) -> Vec<(String, Value)> {
        vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("general.file_type".into(), Value::U32(ft)),
            ("general.quantization_version".into(), Value::U32(2)),
            ("llama.block_count".into(), Value::U32(1)),
            ("gmat.version".into(), Value::String("old".into())),
            ("general.name".into(), Value::String("m".into())),
        ]
    }

    fn plan(
        m: &Manifest,
        md: &[(String, Value)],
        ft: Option<&str>,
        types: &TypeOptions,
    ) -> Result<GgufPlan> {
        build(&GgufPlanInput {
            manifest: m,
            metadata: md,
            config: &ExportConfig::default(),
            file_type: ft.map(|f| f.parse().unwrap()),
            types,
            imatrix: None,
            kv_overrides: &[],
        })
    }

    #[test]
    fn own_type_is_the_imported_file() {
        let m = manifest(vec![
            entry("token_embd.weight", Dtype::BF16, &[4, 256]),
            entry("blk.0.attn_norm.weight", Dtype::F32, &[256]),
        ]);
        let md = metadata(32);
        let p = plan(&m, &md, None, &TypeOptions::default()).unwrap();
        assert!(p.identical);
        assert_eq!(p.plan.metadata, md);
        let p = plan(&m, &md, Some("BF16"), &TypeOptions::default()).unwrap();
        assert!(p.identical);
    }

    #[test]
    fn other_types_follow_llama_quantize() {
        let m = manifest(vec![
            entry("token_embd.weight", Dtype::BF16, &[4, 256]),
            entry("blk.0.attn_q.weight", Dtype::BF16, &[256, 256]),
            entry("blk.0.attn_norm.weight", Dtype::F32, &[256]),
        ]);
        let md = metadata(32);
        let p = plan(&m, &md, Some("Q8_0"), &TypeOptions::default()).unwrap();
        assert!(!p.identical);
        let names: Vec<&str> = p.plan.tensors.iter().map(|t| t.name.as_str()).collect();
        // weight_name_comparer: outside blocks first, then by layer and name
        assert_eq!(
            names,
            [
                "token_embd.weight",
                "blk.0.attn_norm.weight",
                "blk.0.attn_q.weight"
            ]
        );
        let keys: Vec<&str> = p.plan.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            &keys[..5],
            [
                "general.architecture",
                "llama.block_count",
                "general.name",
                "general.quantization_version",
                "general.file_type"
            ]
        );
        assert_eq!(keys.iter().filter(|k| k.starts_with("gmat.")).count(), 3);
        assert_eq!(p.plan.tensors[2].ggml_type, GgmlType::Q8_0);
        assert_eq!(p.plan.tensors[1].ggml_type, GgmlType::F32);
    }

    #[test]
    fn requantizing_needs_the_flag() {
        let m = manifest(vec![
            entry("token_embd.weight", Dtype::Block(GgmlType::Q8_0), &[4, 256]),
            entry(
                "blk.0.attn_q.weight",
                Dtype::Block(GgmlType::Q8_0),
                &[256, 256],
            ),
        ]);
        let md = metadata(7);
        let e = plan(&m, &md, Some("Q4_0"), &TypeOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            // the first tensor in llama-quantize's order
            e.contains("tensor token_embd.weight is Q8_0") && e.contains("--allow-requantize"),
            "{e}"
        );
        let allow = TypeOptions {
            allow_requantize: true,
            ..TypeOptions::default()
        };
        let p = plan(&m, &md, Some("Q4_0"), &allow).unwrap();
        assert!(!p.requantized.is_empty());
        // the same type again copies, and is the imported file
        assert!(
            plan(&m, &md, Some("Q8_0"), &TypeOptions::default())
                .unwrap()
                .identical
        );
    }
}
