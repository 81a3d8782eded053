//! `gmat export --lora ADAPTER --model BASE`: a PEFT LoRA adapter → a LoRA GGUF, the file
//! llama.cpp b11312's `convert_lora_to_gguf.py --base BASE` writes (same metadata, tensors,
//! types and bytes), for `llama-cli --lora` / `llama-server --lora`.
//!
//! The base is only read for its config.json (architecture, heads, layers), as the
//! converter's `--base`: a gmat store, or any folder holding the base model's config.json.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::arch::kv::Kv;
use crate::arch::lora::{self, AdaptedWeight, LoraTensor};
use crate::arch::metadata::{self, MetadataInput};
use crate::arch::{self, ConfigFile, Cx, Hparams, ModelDir, NameMap};
use crate::commands::export::ExportArgs;
use crate::config::ExportConfig;
use crate::gguf::{GgmlType, GgufHeader, Value};
use crate::plan::kv_override::KvOverride;
use crate::source::peft::PeftAdapter;
use crate::store::Store;

/// The output types `convert_lora_to_gguf.py --outtype` offers (f32 is its default).
const OUT_TYPES: [(&str, GgmlType); 4] = [
    ("F32", GgmlType::F32),
    ("F16", GgmlType::F16),
    ("BF16", GgmlType::BF16),
    ("Q8_0", GgmlType::Q8_0),
];

/// The base model's config.json and the folder it describes.
pub struct BaseConfig {
    pub file: ConfigFile,
    /// Where its side files are (the store root, or the folder).
    pub dir: PathBuf,
    /// The base's tensor shapes by name, when the base is a store (a folder gives only its
    /// config, as the converter's `--base`).
    pub shapes: Option<std::collections::HashMap<String, Vec<u64>>>,
}

/// Reads the base model's config.json from a gmat store or a folder holding config.json.
pub fn base_config(path: &Path) -> Result<BaseConfig> {
    if let Ok(store) = Store::open(path) {
        return Ok(BaseConfig {
            file: ConfigFile {
                json: store.config()?,
                path: store.manifest.source.path.clone(),
            },
            dir: store.root.clone(),
            shapes: Some(
                store
                    .manifest
                    .tensors
                    .iter()
                    .map(|e| (e.name.clone(), e.shape.clone()))
                    .collect(),
            ),
        });
    }
    let cfg = path.join("config.json");
    if !cfg.is_file() {
        bail!(
            "--model {}: neither a gmat store nor a folder with the base model's config.json",
            path.display()
        );
    }
    let text = crate::fsio::read_small_text(&cfg)?;
    let json = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", cfg.display()))?;
    Ok(BaseConfig {
        file: ConfigFile {
            json,
            path: path.to_string_lossy().into_owned(),
        },
        dir: path.to_path_buf(),
        shapes: None,
    })
}

/// The adapter's weights as the architecture names and arranges them, for the base `base`.
pub fn plan_tensors(
    adapter: &PeftAdapter,
    base: &BaseConfig,
) -> Result<(&'static dyn arch::ArchSpec, Vec<LoraTensor>)> {
    let spec = arch::detect(&Hparams::new(&base.file.json)?)?;
    if spec.kind() != arch::ModelKind::Text {
        bail!("LoRA adapters are supported for text models only");
    }
    let hp = spec.hparams(&base.file)?;
    let block_count = spec.block_count(&hp)?;
    let names = NameMap::new(spec.gguf_arch(), block_count as usize)?;
    let md = ModelDir::new(&base.dir);
    let cx = Cx {
        hp: &hp,
        text: &hp,
        dir: &base.dir,
        md: &md,
        names: &names,
        block_count,
        file_type: 0,
    };
    let weights: Vec<AdaptedWeight> = adapter
        .pairs
        .iter()
        .map(|p| AdaptedWeight {
            base_name: p.base_name.clone(),
            shape: p.shape(),
            rank: p.rank(),
        })
        .collect();
    let tensors = lora::lora_tensors(spec, &cx, &weights)?;
    Ok((spec, tensors))
}

/// Runs `gmat export --lora`.
pub fn run(args: &ExportArgs, adapter_dir: &Path) -> Result<()> {
    refuse_model_options(args)?;
    let adapter = PeftAdapter::open(adapter_dir)
        .with_context(|| format!("--lora {}", adapter_dir.display()))?;
    let alora = alora_tokens(&adapter)?;
    let base = base_config(&args.model)?;
    check_shapes(&adapter, &base)?;
    let out_type = out_type(args.file_type.as_deref())?;
    let (spec, tensors) = plan_tensors(&adapter, &base)?;
    if tensors.is_empty() {
        bail!("none of the adapter's weights is a tensor of the base model's GGUF");
    }

    // The tensors and their types (prepare_tensors): 2-D tensors take the output type; a Q8_0
    // row that is not whole blocks falls back to F16, as gguf-py's quantize does.
    let mut header = GgufHeader::default();
    let mut data: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut total: i64 = 0;
    let mut fallback: Vec<String> = Vec::new();
    for t in &tensors {
        let pair = &adapter.pairs[t.pair];
        let a = adapter.values(&pair.a);
        let b_all = adapter.values(&pair.b);
        let b: Vec<f32> = (0..t.b_view.len())
            .map(|i| b_all[t.b_view.source_index(i) as usize])
            .collect();
        // gguf-py counts a pair as the adapted weight's out × in
        total += (t.b_shape[0] * t.a_shape[1]) as i64;
        for (suffix, values, outer_first) in [
            (".lora_a", a, t.a_shape.to_vec()),
            (".lora_b", b, t.b_shape.clone()),
        ] {
            let name = format!("{}{suffix}", t.name);
            let dims: Vec<u64> = outer_first.iter().rev().copied().collect();
            let ty = tensor_type(out_type, dims[0]);
            if ty != out_type {
                fallback.push(name.clone());
            }
            let bytes =
                encode(ty, &values, dims[0] as usize).with_context(|| format!("tensor {name}"))?;
            let offset = header.push_tensor(name, dims, ty);
            data.push((offset, bytes));
        }
    }

    // prepare_metadata: architecture, type, adapter.type (LoraModel.set_type), the general.*
    // keys of the adapter folder's model card and name, adapter.lora.alpha
    // (LoraModel.set_gguf_parameters), the quantization version.
    let mut kv = Kv::for_arch(spec.gguf_arch());
    kv.set(
        "general.architecture",
        Value::String(spec.gguf_arch().into()),
    );
    kv.set("general.type", Value::String("adapter".into()));
    kv.set("adapter.type", Value::String("lora".into()));
    let config = ExportConfig::default();
    let input = MetadataInput {
        folder_name: adapter.folder_name(),
        overrides: crate::commands::export::metadata_overrides(args, &config)?,
        model_name: args.model_name.clone(),
    };
    let md = ModelDir::new(&adapter.dir);
    metadata::general_keys_with_total(
        &mut kv,
        spec.gguf_arch(),
        "adapter",
        &md,
        &input,
        -total,
        None,
    )?;
    kv.set("adapter.lora.alpha", Value::F32(adapter.alpha as f32));
    if let Some(tokens) = alora {
        // gguf-py's Keys.Adapter.ALORA_INVOCATION_TOKENS, an array of UINT32
        kv.set(
            "adapter.alora.invocation_tokens",
            Value::Array(
                crate::gguf::ValueType::U32,
                tokens.into_iter().map(Value::U32).collect(),
            ),
        );
    }
    // gguf-py's GGML_QUANT_VERSION
    kv.set("general.quantization_version", Value::U32(2));
    let mut meta = kv.into_vec();
    let overrides: Vec<KvOverride> = args
        .override_kv
        .iter()
        .map(|s| {
            s.parse::<KvOverride>()
                .map_err(|e| anyhow::anyhow!("--override-kv: {e}"))
        })
        .collect::<Result<_>>()?;
    crate::plan::kv_override::apply(&mut meta, &overrides);
    header.metadata = meta;

    if !fallback.is_empty() && !args.quiet {
        eprintln!(
            "warning: {} tensors have rows that are not whole {} blocks and are written as F16 (as the converter does): {}",
            fallback.len(),
            out_type.name(),
            fallback.join(", ")
        );
    }
    if args.dry_run {
        // a closed pipe (`| head`) ends the listing quietly
        use std::io::Write;
        let mut w = std::io::stdout().lock();
        for t in &header.tensors {
            let _ = writeln!(w, "{:<40} {:<5} {:?}", t.name, t.ggml_type.name(), t.dims);
        }
        let _ = writeln!(
            w,
            "{} tensors, {} bytes of tensor data",
            header.tensors.len(),
            header.data_size()
        );
        return Ok(());
    }
    let mut file = header.to_bytes();
    let start = file.len();
    file.resize(start + header.data_size() as usize, 0);
    for (offset, bytes) in &data {
        let at = start + *offset as usize;
        file[at..at + bytes.len()].copy_from_slice(bytes);
    }
    let output = match &args.output {
        Some(o) => o.clone(),
        None => PathBuf::from(format!(
            "{}-{}-LoRA.gguf",
            adapter.folder_name(),
            OUT_TYPES
                .iter()
                .find(|(_, t)| *t == out_type)
                .map_or("F32", |(n, _)| n)
        )),
    };
    let mut inputs = crate::fsio::Inputs::default();
    inputs.dir(adapter_dir, "the adapter (--lora)");
    inputs.dir(&base.dir, "the base model (--model)");
    inputs.check_output(&output, "-o")?;
    let _lock = crate::fsio::lock_output(&output)?;
    crate::fsio::write_atomic(&output, &file)?;
    if !args.quiet {
        eprintln!(
            "wrote {} ({} LoRA tensors of {} adapted weights, {} bytes)",
            output.display(),
            header.tensors.len(),
            tensors.len(),
            file.len()
        );
    }
    Ok(())
}

/// An activated LoRA's invocation tokens (`alora_invocation_tokens` of adapter_config.json),
/// which the converter writes; an `invocation_string` alone needs the base's tokenizer, which
/// gmat does not run here, and is refused.
fn alora_tokens(adapter: &PeftAdapter) -> Result<Option<Vec<u32>>> {
    let what = || {
        format!(
            "{}",
            adapter
                .dir
                .join(crate::source::peft::ADAPTER_CONFIG)
                .display()
        )
    };
    match adapter.config.get("alora_invocation_tokens") {
        Some(serde_json::Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .with_context(|| {
                        format!(
                            "{}: alora_invocation_tokens holds {v}, not a token id",
                            what()
                        )
                    })
            })
            .collect::<Result<Vec<u32>>>()
            .map(Some),
        Some(serde_json::Value::Array(_)) | Some(serde_json::Value::Null) | None => {
            match adapter.config.get("invocation_string") {
                Some(serde_json::Value::String(s)) if !s.is_empty() => bail!(
                    "{}: an activated LoRA given by invocation_string needs its tokens; put them in alora_invocation_tokens (gmat does not tokenize here)",
                    what()
                ),
                _ => Ok(None),
            }
        }
        Some(other) => bail!(
            "{}: alora_invocation_tokens is {other}, not a list of token ids",
            what()
        ),
    }
}

/// With a store as the base, every adapted weight must be one of its tensors with the adapter's
/// shape: an adapter for another model would give a file llama.cpp refuses or misapplies.
fn check_shapes(adapter: &PeftAdapter, base: &BaseConfig) -> Result<()> {
    let Some(shapes) = &base.shapes else {
        return Ok(());
    };
    for p in &adapter.pairs {
        match shapes.get(&p.base_name) {
            None => bail!(
                "the adapter adapts {}, which the base store {} does not hold (is it the adapter's base model?)",
                p.base_name,
                base.dir.display()
            ),
            Some(s) if s.as_slice() != p.shape() => bail!(
                "the adapter adapts {} as {:?}, but the base holds it as {s:?}",
                p.base_name,
                p.shape()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// `--type` for an adapter: F32 (the converter's default), F16, BF16 or Q8_0.
fn out_type(cli: Option<&str>) -> Result<GgmlType> {
    let Some(name) = cli else {
        return Ok(GgmlType::F32);
    };
    OUT_TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, t)| *t)
        .with_context(|| {
            format!("--type {name}: a LoRA adapter is written as F32, F16, BF16 or Q8_0 (convert_lora_to_gguf.py --outtype)")
        })
}

/// The type of a 2-D LoRA tensor whose rows hold `row` values: the output type, or F16 where
/// Q8_0 blocks do not fit the row (gguf-py's QuantError fallback).
fn tensor_type(out: GgmlType, row: u64) -> GgmlType {
    if out.row_bytes(row).is_some() {
        out
    } else {
        GgmlType::F16
    }
}

/// Values (row-major, rows of `row` values) in ggml type `ty`, as gguf-py's `quantize` writes
/// them.
fn encode(ty: GgmlType, values: &[f32], row: usize) -> Result<Vec<u8>> {
    let codec =
        crate::quant::codec(ty).with_context(|| format!("gmat cannot write {}", ty.name()))?;
    let row_bytes = ty
        .row_bytes(row as u64)
        .with_context(|| format!("rows of {row} values do not fit {}", ty.name()))?
        as usize;
    let rows = values.len() / row.max(1);
    let mut out = vec![0u8; rows * row_bytes];
    for (src, dst) in values
        .chunks_exact(row)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        codec.quantize_row(src, None, dst);
    }
    Ok(out)
}

/// Options of `gmat export` that describe a whole-model export and mean nothing for an
/// adapter: refused by name rather than ignored.
fn refuse_model_options(args: &ExportArgs) -> Result<()> {
    let given = [
        (args.config.is_some(), "--config"),
        (args.imatrix.is_some(), "--imatrix"),
        (args.generate_config.is_some(), "--generate-config"),
        (args.shard_size.is_some(), "--shard-size"),
        (args.shard_max_tensors.is_some(), "--shard-max-tensors"),
        (args.mmproj.is_some(), "--mmproj"),
        (args.mmproj_type.is_some(), "--mmproj-type"),
        (args.pre_tokenizer.is_some(), "--pre-tokenizer"),
        (args.target_size.is_some(), "--target-size"),
        (args.target_bpw.is_some(), "--target-bpw"),
        (args.report.is_some(), "--report"),
    ];
    if let Some((_, name)) = given.iter().find(|(g, _)| *g) {
        bail!("{name} does not apply to a LoRA adapter (--lora)");
    }
    Ok(())
}
