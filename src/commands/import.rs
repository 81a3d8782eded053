//! `gmat import`: HF safetensors folder → GMAT store, or `--generate-config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::commands::meta::{self, with_schema_first};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::config::import_config::{default_uuid, model_summary, ImportConfig, ImportMapEntry};
use crate::config::read_config;
use crate::pipeline::import::ImportOptions;
use crate::pipeline::{self, progress::human_bytes};
use crate::source::HfModel;
use crate::store::{Encoding, Holding, Location, Store};

/// Options of `gmat import` (the command line is this struct).
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// HF model folder (model.safetensors or shards + index), one .safetensors file, a GGUF
    /// file (of a split set NAME-0000K-of-0000N.gguf, any one of its files), or a Hugging Face
    /// Hub repo id (ORG/NAME), found in the HF cache (HF_HUB_CACHE, HF_HOME/hub,
    /// ~/.cache/huggingface/hub) and downloaded into it when missing (token: HF_TOKEN or
    /// `huggingface-cli login`; HF_HUB_OFFLINE=1 forbids downloads). A local path that exists
    /// wins over a repo id.
    #[arg(
        long,
        short = 'm',
        value_name = "PATH|ORG/NAME",
        required_unless_present = "lora",
        conflicts_with = "lora"
    )]
    pub model: Option<PathBuf>,
    /// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to merge
    /// into the --base store, as PEFT's merge_and_unload does (W + alpha/r · B @ A in float32,
    /// rounded to the stored dtype); the result is stored as a fine-tune of the base.
    #[arg(long, value_name = "ADAPTER_DIR", requires = "base")]
    pub lora: Option<PathBuf>,
    /// Branch, tag or commit hash of a Hub repo id (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Output folder; the store is written to OUTPUT/model.gmat. An `s3://bucket/prefix` URL
    /// writes it to a bucket (S3, Garage, MinIO, ...): credentials and endpoint come from the
    /// AWS_* environment variables or ~/.aws (see --s3-endpoint).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Import config (tensor selection and UUIDs).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Write an import config for the model (default: import_config.json) and print tensor
    /// statistics, instead of importing.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "import_config.json")]
    pub generate_config: Option<PathBuf>,
    /// How tensors are stored: zstd (lossless byte planes + zstd, in chunks) or raw.
    #[arg(long, value_enum, default_value_t = StoreEncoding::Zstd)]
    pub encoding: StoreEncoding,
    /// Base store of a fine-tune: tensors identical to the base's are shared (hard link, or a
    /// reference), others of the same name and shape are stored as XOR deltas. The base must
    /// stay in place for the fine-tune to export. In a bucket (`s3://...`), shared tensors are
    /// read from the base's objects.
    #[arg(long, value_name = "STORE")]
    pub base: Option<PathBuf>,
    /// No progress bars or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Tensor encodings `gmat import` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreEncoding {
    /// Byte planes + zstd (lossless, smaller).
    Zstd,
    /// The source bytes as they are.
    Raw,
}

impl From<StoreEncoding> for Encoding {
    fn from(e: StoreEncoding) -> Encoding {
        match e {
            StoreEncoding::Zstd => Encoding::Zstd,
            StoreEncoding::Raw => Encoding::Raw,
        }
    }
}

/// Runs the command.
pub fn run(args: ImportArgs) -> Result<()> {
    if let Some(adapter) = &args.lora {
        return crate::commands::import_lora::run(&args, adapter);
    }
    let Some(model_arg) = &args.model else {
        bail!("give the model to import with --model PATH (or --lora ADAPTER with --base STORE)");
    };
    let started = Instant::now();
    let resolved = crate::source::hub::resolve(model_arg, args.revision.as_deref(), args.quiet)?;
    let model_path = resolved.path.as_path();
    if crate::source::peft::is_adapter(model_path) && !model_path.join("config.json").is_file() {
        bail!(
            "{} is a PEFT LoRA adapter, not a model: merge it into its base with `gmat import --lora {0} --base STORE -o DIR`, or write a LoRA GGUF with `gmat export --model STORE --lora {0}`",
            model_path.display()
        );
    }
    let model = HfModel::open(model_path)?;
    // What this run reads: nothing it writes may be one of these.
    let mut inputs = crate::fsio::Inputs::default();
    for f in &model.files {
        inputs.file(&f.path, "a weight file of the model");
    }
    for f in model
        .side_files
        .iter()
        .chain([&"model.safetensors.index.json".to_string()])
    {
        inputs.file(&model.dir.join(f), format!("the model's {f}"));
    }
    if let Some(c) = &args.config {
        inputs.file(c, "the import config (--config)");
    }
    if let Some(path) = &args.generate_config {
        inputs.check_output(path, "--generate-config")?;
        return generate(&model, path);
    }
    let Some(out) = &args.output else {
        bail!("give an output folder with -o DIR (the store is written to DIR/model.gmat), or --generate-config");
    };
    let target = Location::parse(out)?.child("model.gmat");
    let root = out.join("model.gmat");
    if target.local().is_some() {
        for (p, what) in [(out, "-o"), (&root, "the store folder")] {
            if let Ok(m) = std::fs::metadata(p) {
                if !m.is_dir() {
                    bail!("{what} {} exists and is not a folder", p.display());
                }
            }
        }
    }
    let base = match &args.base {
        Some(p) => Some(Store::open(p).with_context(|| format!("--base {}", p.display()))?),
        None => None,
    };
    if let Some(b) = &base {
        inputs.dir(&b.root, "the base store (--base)");
    }
    if target.local().is_some() {
        inputs.check_output_dir(&root, "the store folder")?;
    }
    let config = match &args.config {
        Some(p) => read_config::<ImportConfig>(p)?,
        None => ImportConfig {
            source_format: model.format().into(),
            tensor_map: Vec::new(),
            metadata: summary_of(&model),
            block_format: None,
        },
    };
    if config.source_format != model.format() {
        bail!(
            "the import config says source_format {:?} but {} is {}",
            config.source_format,
            model_path.display(),
            model.format()
        );
    }
    let names: Vec<&str> = model.tensors().map(|r| r.tensor.name.as_str()).collect();
    let decisions = config.resolve(&names)?;
    let mut summary = if config.metadata.is_empty() {
        summary_of(&model)
    } else {
        config.metadata.clone()
    };
    if !summary.contains_key("name") {
        let name = match &model.gguf_metadata {
            Some(_) => gguf_model_name(model_path),
            None => resolved
                .repo_name
                .clone()
                .unwrap_or_else(|| model_name(model_path)),
        };
        summary.insert("name".into(), serde_json::Value::String(name));
    }
    let options = ImportOptions {
        encoding: args.encoding.into(),
        base: base.as_ref(),
    };
    let manifest = match &target {
        Location::Local(_) => pipeline::import::run(
            &model, model_path, &decisions, summary, &root, &options, args.quiet,
        )?,
        Location::S3(loc) => pipeline::import_s3::run(
            &model, model_path, &decisions, summary, loc, &options, args.quiet,
        )?,
    };
    if !args.quiet {
        let raw = manifest.raw_bytes();
        let mut own = 0u64;
        let (mut shared, mut shared_bytes) = (0usize, 0u64);
        let (mut deltas, mut delta_bytes) = (0usize, 0u64);
        for t in &manifest.tensors {
            match t.holding() {
                Holding::Own => own += t.stored_bytes,
                Holding::Linked | Holding::Referenced => {
                    shared += 1;
                    shared_bytes += t.raw_bytes;
                }
                Holding::Delta => {
                    deltas += 1;
                    delta_bytes += t.stored_bytes;
                    own += t.stored_bytes;
                }
            }
        }
        let based = match &base {
            Some(b) => format!(
                "; against base {}: {shared} tensors ({}) shared, {deltas} stored as deltas ({})",
                b.location,
                human_bytes(shared_bytes),
                human_bytes(delta_bytes)
            ),
            None => String::new(),
        };
        eprintln!(
            "imported {} tensors ({}) into {} in {:.2?}: {} stored ({:.1}% of the source, {}){based}{}",
            manifest.tensors.len(),
            human_bytes(raw),
            target,
            started.elapsed(),
            human_bytes(own),
            100.0 * own as f64 / raw.max(1) as f64,
            Encoding::from(args.encoding),
            pipeline::progress::peak_rss_bytes()
                .map(|b| format!(", peak memory {}", human_bytes(b)))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The manifest's model summary: config.json's main keys, or a GGUF's architecture and file
/// type.
fn summary_of(model: &HfModel) -> serde_json::Map<String, serde_json::Value> {
    let Some(kv) = &model.gguf_metadata else {
        return model_summary(&model.config);
    };
    let mut m = serde_json::Map::new();
    for (key, out) in [
        ("general.architecture", "architecture"),
        ("general.file_type", "file_type"),
    ] {
        match kv.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            Some(crate::gguf::Value::String(s)) => {
                m.insert(out.into(), s.clone().into());
            }
            Some(v) => {
                if let Some(n) = v.as_u64() {
                    m.insert(out.into(), n.into());
                }
            }
            None => {}
        }
    }
    m
}

/// A GGUF's display name: its file name without `.gguf`, the split suffix and the file type
/// (`Qwen3-0.6B-Q4_K_M-00001-of-00002.gguf` → `Qwen3-0.6B`), which export appends again.
pub fn gguf_model_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut stem = name.strip_suffix(".gguf").unwrap_or(&name).to_string();
    if crate::source::gguf_model::split_paths(path).is_some() {
        if let Some(i) = stem.rfind("-of-").and_then(|i| stem[..i].rfind('-')) {
            stem.truncate(i);
        }
    }
    if let Some((head, tail)) = stem.rsplit_once(['-', '.']) {
        let t = tail.to_ascii_uppercase();
        if !head.is_empty() && (t.parse::<crate::plan::FileType>().is_ok() || t == "F32") {
            stem = head.to_string();
        }
    }
    if stem.is_empty() {
        "model".into()
    } else {
        stem
    }
}

/// The model's display name: its folder's name as given on the command line, as
/// `convert_hf_to_gguf.py` takes `dir_model.name` (a symlink keeps its own name, and a folder
/// called `hf` is "hf"). A path without a name of its own (`.`, `..`) is resolved first.
pub fn model_name(path: &Path) -> String {
    let dir = match path.parent() {
        Some(p) if path.is_file() && p.as_os_str().is_empty() => Path::new("."),
        Some(p) if path.is_file() => p,
        _ => path,
    };
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
    };
    name(dir)
        .or_else(|| std::fs::canonicalize(dir).ok().as_deref().and_then(name))
        .unwrap_or_else(|| "model".into())
}

fn generate(model: &HfModel, path: &Path) -> Result<()> {
    let mut tensor_map = Vec::new();
    let mut elements = 0u64;
    let mut bytes = 0u64;
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    let mut ranks: BTreeMap<usize, usize> = BTreeMap::new();
    for r in model.tensors() {
        let t = r.tensor;
        tensor_map.push(ImportMapEntry {
            source: t.name.clone(),
            target: default_uuid(&t.name).to_string(),
            include: true,
        });
        elements += t.shape.iter().product::<u64>();
        bytes += t.range.len() as u64;
        *dtypes.entry(t.dtype.to_string()).or_default() += 1;
        *ranks.entry(t.shape.len()).or_default() += 1;
    }
    let config = ImportConfig {
        source_format: model.format().into(),
        tensor_map,
        metadata: summary_of(model),
        block_format: None,
    };
    let mut json = serde_json::to_value(&config)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "_comment".into(),
            "gmat import config: set include=false to skip a tensor; targets are the UUIDs tensors are stored under".into(),
        );
    }
    let schema = meta::write_schema_beside(path, meta::ConfigKind::Import)?;
    let json = with_schema_first(json, schema);
    crate::fsio::write_atomic(
        path,
        (serde_json::to_string_pretty(&json)? + "\n").as_bytes(),
    )?;
    println!("wrote {}", path.display());
    println!("tensors:        {}", config.tensor_map.len());
    println!("total elements: {elements}");
    println!("total bytes:    {bytes} ({})", human_bytes(bytes));
    let d: Vec<String> = dtypes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("dtypes:         {}", d.join(", "));
    let r: Vec<String> = ranks.iter().map(|(k, v)| format!("{k}-D: {v}")).collect();
    println!("ranks:          {}", r.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::model_name;

    #[test]
    fn model_name_is_the_folder_name_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let hf = dir.path().join("SmolLM2").join("hf");
        std::fs::create_dir_all(&hf).unwrap();
        std::fs::write(hf.join("model.safetensors"), b"").unwrap();
        // the converter's `dir_model.name`: "hf", not the parent's name
        assert_eq!(model_name(&hf), "hf");
        assert_eq!(model_name(&hf.join("model.safetensors")), "hf");
        assert_eq!(model_name(&hf.join("..")), "SmolLM2");
        #[cfg(unix)]
        {
            let link = dir.path().join("my-model");
            std::os::unix::fs::symlink(&hf, &link).unwrap();
            assert_eq!(model_name(&link), "my-model");
        }
    }
}
