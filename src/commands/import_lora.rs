//! `gmat import --lora ADAPTER --base STORE -o OUT`: the base model with a PEFT LoRA adapter
//! merged in ([`crate::source::peft_merge`], PEFT's `merge_and_unload` arithmetic), stored as a
//! fine-tune of the base: every tensor the adapter leaves alone is shared with the base, every
//! merged weight is an XOR delta against it, exactly as `gmat import --model FT --base STORE`
//! stores a fine-tune.
//!
//! The merged model is staged as a safetensors folder inside OUT (the base's side files and one
//! `model.safetensors`, streamed tensor by tensor), imported with the ordinary import pipeline
//! against the base, and removed; the staging needs free space for one copy of the model.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::commands::import::ImportArgs;
use crate::config::import_config::ImportConfig;
use crate::pipeline::import::ImportOptions;
use crate::source::peft::PeftAdapter;
use crate::source::{peft_merge, HfModel};
use crate::store::Store;

/// The staging folder's name inside OUT (hidden, removed when the import ends).
const STAGING: &str = ".gmat-lora-merge";

/// Runs `gmat import --lora`.
pub fn run(args: &ImportArgs, adapter_dir: &Path) -> Result<()> {
    let Some(base_path) = &args.base else {
        bail!("--lora needs --base STORE: the base model the adapter was trained on, imported with gmat");
    };
    if args.config.is_some() || args.generate_config.is_some() || args.revision.is_some() {
        bail!("--config, --generate-config and --revision do not apply to --lora");
    }
    let Some(out) = &args.output else {
        bail!("give an output folder with -o DIR (the merged store is written to DIR/model.gmat)");
    };
    let adapter = PeftAdapter::open(adapter_dir)
        .with_context(|| format!("--lora {}", adapter_dir.display()))?;
    if adapter
        .config
        .get("fan_in_fan_out")
        .and_then(|v| v.as_bool())
        == Some(true)
    {
        bail!(
            "--lora {}: fan_in_fan_out adapters (GPT-2 Conv1D layers) are not supported",
            adapter_dir.display()
        );
    }
    let base = Store::open(base_path).with_context(|| format!("--base {}", base_path.display()))?;
    if base.is_gguf() {
        bail!("--base {}: a store imported from a GGUF cannot take a merge; import the base model's safetensors", base_path.display());
    }

    // Every adapted weight must be a float tensor of the base with the adapter's shape.
    let mut merged: std::collections::HashMap<&str, usize> = Default::default();
    for (i, p) in adapter.pairs.iter().enumerate() {
        let Some(e) = base.manifest.tensors.iter().find(|e| e.name == p.base_name) else {
            bail!(
                "the adapter adapts {}, which the base store {} does not hold (is it the adapter's base model?)",
                p.base_name,
                base.root.display()
            );
        };
        if e.shape != p.shape() {
            bail!(
                "the adapter adapts {} as {:?}, but the base holds it as {:?}",
                p.base_name,
                p.shape(),
                e.shape
            );
        }
        merged.insert(e.name.as_str(), i);
    }

    let root = out.join("model.gmat");
    let staging = out.join(STAGING);
    let mut inputs = crate::fsio::Inputs::default();
    inputs.dir(&base.root, "the base store (--base)");
    inputs.dir(adapter_dir, "the adapter (--lora)");
    inputs.check_output_dir(&root, "the store folder")?;
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let result = stage_and_import(args, &adapter, &base, &merged, &staging, &root);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn stage_and_import(
    args: &ImportArgs,
    adapter: &PeftAdapter,
    base: &Store,
    merged: &std::collections::HashMap<&str, usize>,
    staging: &Path,
    root: &Path,
) -> Result<()> {
    for f in &base.manifest.side_files {
        if let Some(src) = base.side_file(f) {
            let dst = staging.join(f);
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::copy(&src, &dst)
                .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
        }
    }
    write_merged_safetensors(adapter, base, merged, &staging.join("model.safetensors"))?;

    let model = HfModel::open(staging)?;
    let names: Vec<&str> = model.tensors().map(|r| r.tensor.name.as_str()).collect();
    let config = ImportConfig {
        source_format: model.format().into(),
        tensor_map: Vec::new(),
        metadata: Default::default(),
        block_format: None,
    };
    let decisions = config.resolve(&names)?;
    let mut summary = crate::config::import_config::model_summary(&model.config);
    summary.insert("name".into(), adapter.folder_name().into());
    summary.insert(
        "lora".into(),
        serde_json::json!({
            "adapter": adapter.dir.display().to_string(),
            "base": base.root.display().to_string(),
            "merged_tensors": merged.len(),
        }),
    );
    let options = ImportOptions {
        encoding: args.encoding.into(),
        base: Some(base),
    };
    let manifest = crate::pipeline::import::run(
        &model,
        &adapter.dir,
        &decisions,
        summary,
        root,
        &options,
        args.quiet,
    )?;
    if !args.quiet {
        let deltas = manifest
            .tensors
            .iter()
            .filter(|t| t.holding() == crate::store::Holding::Delta)
            .count();
        eprintln!(
            "merged {} adapted weights of {} into {} ({} tensors, {deltas} stored as deltas against {})",
            merged.len(),
            adapter.dir.display(),
            root.display(),
            manifest.tensors.len(),
            base.root.display()
        );
    }
    Ok(())
}

/// Writes every tensor of the base, the adapted ones merged, as one safetensors file, streaming
/// one tensor at a time.
fn write_merged_safetensors(
    adapter: &PeftAdapter,
    base: &Store,
    merged: &std::collections::HashMap<&str, usize>,
    path: &Path,
) -> Result<()> {
    let mut entries: Vec<&crate::store::TensorEntry> = base.manifest.tensors.iter().collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for e in &entries {
        header.insert(
            e.name.clone(),
            serde_json::json!({"dtype": e.dtype.name(), "shape": e.shape, "data_offsets": [at, at + e.raw_bytes]}),
        );
        at += e.raw_bytes;
    }
    let mut h = serde_json::to_vec(&header)?;
    // the format pads the header with spaces to 8 bytes
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    w.write_all(&(h.len() as u64).to_le_bytes())?;
    w.write_all(&h)?;
    for e in &entries {
        let bytes = base
            .reader(e)
            .and_then(|r| r.read_all())
            .with_context(|| format!("tensor {} of the base", e.name))?;
        let bytes = match merged.get(e.name.as_str()) {
            Some(&i) => {
                let p = &adapter.pairs[i];
                let s = peft_merge::scaling(adapter, p)?;
                peft_merge::merge(
                    &bytes,
                    e.dtype,
                    &adapter.values(&p.a),
                    &adapter.values(&p.b),
                    p.shape(),
                    p.rank(),
                    s,
                )
                .with_context(|| format!("merging the adapter into {}", e.name))?
            }
            None => bytes,
        };
        w.write_all(&bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
