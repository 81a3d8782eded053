//! `gmat import`: HF safetensors folder → GMAT store, or `--generate-config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::config::import_config::{default_uuid, model_summary, ImportConfig, ImportMapEntry};
use crate::config::read_config;
use crate::pipeline::import::ImportOptions;
use crate::pipeline::{self, progress::human_bytes};
use crate::source::HfModel;
use crate::store::{Encoding, Holding, Store};

/// Options of `gmat import`.
pub struct ImportArgs {
    pub model: PathBuf,
    pub output: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub generate_config: Option<PathBuf>,
    /// Encoding of tensors not shared with a base: `raw` or `zstd`.
    pub encoding: Encoding,
    /// Base store of a fine-tune: identical tensors are shared, others stored as deltas.
    pub base: Option<PathBuf>,
    pub quiet: bool,
}

/// Runs the command.
pub fn run(args: ImportArgs) -> Result<()> {
    let started = Instant::now();
    let model = HfModel::open(&args.model)?;
    if let Some(path) = &args.generate_config {
        return generate(&model, path);
    }
    let Some(out) = &args.output else {
        bail!("give an output folder with -o DIR (the store is written to DIR/model.gmat), or --generate-config");
    };
    let config = match &args.config {
        Some(p) => read_config::<ImportConfig>(p)?,
        None => ImportConfig {
            source_format: "safetensors".into(),
            tensor_map: Vec::new(),
            metadata: model_summary(&model.config),
            block_format: None,
        },
    };
    if config.block_format.is_some() {
        eprintln!("note: block_format is ignored: the gmat store is lossless");
    }
    let names: Vec<&str> = model.tensors().map(|r| r.tensor.name.as_str()).collect();
    let decisions = config.resolve(&names)?;
    let mut summary = if config.metadata.is_empty() {
        model_summary(&model.config)
    } else {
        config.metadata.clone()
    };
    if !summary.contains_key("name") {
        summary.insert(
            "name".into(),
            serde_json::Value::String(model_name(&args.model)),
        );
    }
    let root = out.join("model.gmat");
    let base = match &args.base {
        Some(p) => Some(Store::open(p).with_context(|| format!("--base {}", p.display()))?),
        None => None,
    };
    let options = ImportOptions {
        encoding: args.encoding,
        base: base.as_ref(),
    };
    let manifest = pipeline::import::run(
        &model,
        &args.model,
        &decisions,
        summary,
        &root,
        &options,
        args.quiet,
    )?;
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
                b.root.display(),
                human_bytes(shared_bytes),
                human_bytes(delta_bytes)
            ),
            None => String::new(),
        };
        eprintln!(
            "imported {} tensors ({}) into {} in {:.2?}: {} stored ({:.1}% of the source, {}){based}{}",
            manifest.tensors.len(),
            human_bytes(raw),
            root.display(),
            started.elapsed(),
            human_bytes(own),
            100.0 * own as f64 / raw.max(1) as f64,
            args.encoding,
            pipeline::progress::peak_rss_bytes()
                .map(|b| format!(", peak memory {}", human_bytes(b)))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The model's display name: its folder name (the parent's for a folder called `hf`).
pub fn model_name(path: &Path) -> String {
    let dir = if path.is_file() {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match name(&dir) {
        Some(n) if n == "hf" => dir.parent().and_then(name).unwrap_or(n),
        Some(n) => n,
        None => "model".into(),
    }
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
        source_format: "safetensors".into(),
        tensor_map,
        metadata: model_summary(&model.config),
        block_format: None,
    };
    let mut json = serde_json::to_value(&config)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "_comment".into(),
            "gmat import config: set include=false to skip a tensor; targets are the UUIDs tensors are stored under".into(),
        );
    }
    std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
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
