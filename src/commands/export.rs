//! `gmat export`: GMAT store → GGUF, `--dry-run`, or `--generate-config`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::arch::metadata::MetadataInput;
use crate::arch::{self, ConfigFile, Hparams};
use crate::cache::Cache;
use crate::commands::export_lora;
use crate::commands::export_target::{self, SearchInput, Targeted};
use crate::commands::meta::{self, with_schema_first};
use crate::config::export_config::{ExportMapEntry, MmprojConfig, Quantization};
use crate::config::{read_config, ExportConfig};
use crate::pipeline::{self, progress::human_bytes};
use crate::plan::kv_override::KvOverride;
use crate::plan::split::{self, SplitLimits};
use crate::plan::{self, ExportPlan, FileType, PlanInput, TensorSource, TypeOptions};
use crate::quant::imatrix::Imatrix;
use crate::source::Dtype;
use crate::store::Store;

/// Options of `gmat export` (the command line is this struct).
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// GMAT store (a model.gmat folder, or the folder holding it). With --lora: the base model
    /// of the adapter, a store or a folder holding its config.json.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to write as
    /// a LoRA GGUF for `llama-cli --lora`, as convert_lora_to_gguf.py --base MODEL does
    /// (--type F32, its default, F16, BF16 or Q8_0).
    #[arg(long, value_name = "ADAPTER_DIR")]
    pub lora: Option<PathBuf>,
    /// Output GGUF file (default: NAME-TYPE.gguf in the current folder). `{name}` and `{type}`
    /// in it are replaced; with several types it must hold `{type}` or be a folder (then
    /// NAME-TYPE.gguf in it).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Export config (default type, per-tensor types, names).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// llama.cpp file type (F32, F16, BF16, Q8_0, ...); overrides the config's default_type.
    /// Default: the stored float type; for a store imported from a GGUF, the GGUF's own type
    /// (the imported file, unchanged).
    /// Several, comma-separated (Q4_K_M,Q6_K,Q8_0), write one GGUF each in one pass: the
    /// source is decoded once and tensors the profiles share are quantized once.
    #[arg(long = "type", short = 't', value_name = "TYPE[,TYPE...]")]
    pub file_type: Option<String>,
    #[command(flatten)]
    pub types: TypeOptions,
    /// Importance matrix from llama-imatrix (GGUF or legacy .dat), used exactly as
    /// llama-quantize --imatrix uses it; overrides the config's quantization.imatrix.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<String>,
    /// Use the imatrix only for tensors whose name contains NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    pub include_weights: Vec<String>,
    /// Do not use the imatrix for tensors whose name contains NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    pub exclude_weights: Vec<String>,
    /// Write the fully resolved export config (default: export_config.json) instead of a GGUF.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "export_config.json")]
    pub generate_config: Option<PathBuf>,
    /// Print the plan (every tensor, its type and size) without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Split the output into NAME-00001-of-0000N.gguf shards of at most this much tensor data
    /// (e.g. 2G, 500M; decimal units, like llama-gguf-split --split-max-size).
    #[arg(long, value_name = "SIZE")]
    pub shard_size: Option<String>,
    /// Split the output into shards of at most N tensors (like llama-gguf-split --split-max-tensors).
    #[arg(long, value_name = "N")]
    pub shard_max_tensors: Option<usize>,
    /// Where to write the vision projector of a vision-language model (default:
    /// mmproj-NAME-TYPE.gguf beside the output). It is written by default when gmat knows the
    /// model's projector.
    #[arg(long, value_name = "FILE", conflicts_with = "no_mmproj")]
    pub mmproj: Option<PathBuf>,
    /// Type of the projector file: F16 (default), BF16, F32 or Q8_0, as
    /// `convert_hf_to_gguf.py --mmproj --outtype` writes it.
    #[arg(long, value_name = "TYPE")]
    pub mmproj_type: Option<String>,
    /// Do not write the vision projector of a vision-language model.
    #[arg(long)]
    pub no_mmproj: bool,
    /// JSON file of `general.*` keys to set, as `convert_hf_to_gguf.py --metadata` reads it
    /// (e.g. {"general.name": "My Model", "general.license": "apache-2.0",
    /// "general.base_models": [{"name": "Llama 3", "organization": "Meta"}]}); adds to and
    /// replaces the config's `metadata` object.
    #[arg(long, value_name = "FILE")]
    pub metadata: Option<PathBuf>,
    /// `general.name` of the output, as `convert_hf_to_gguf.py --model-name`.
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,
    /// Set a metadata key, as llama-quantize --override-kv: KEY=TYPE:VALUE with TYPE int, float,
    /// bool or str (e.g. general.author=str:ACME, llama.context_length=int:8192); repeatable;
    /// added to the config's `override_kv`.
    #[arg(long, value_name = "KEY=TYPE:VALUE")]
    pub override_kv: Vec<String>,
    /// The BPE pre-tokenizer to write (tokenizer.ggml.pre) when llama.cpp's table does not
    /// recognise the tokenizer's hash, e.g. --pre-tokenizer llama-bpe (an unknown name lists them).
    #[arg(long, value_name = "NAME")]
    pub pre_tokenizer: Option<String>,
    /// Neither read nor fill the quantized-tensor cache ($GMAT_CACHE_DIR, else
    /// $XDG_CACHE_HOME/gmat, else ~/.cache/gmat), which lets a re-export reuse every tensor
    /// whose source, type, transform and importance weights are unchanged.
    #[arg(long)]
    pub no_cache: bool,
    /// Size limit of the quantized-tensor cache (e.g. 20G, 500M; default $GMAT_CACHE_SIZE, else
    /// 20G); the least recently used entries are dropped after each export. 0 disables it.
    #[arg(long, value_name = "SIZE")]
    pub cache_size: Option<String>,
    /// Write finite source values that are too large for a tensor's output type as infinities
    /// (what convert_hf_to_gguf.py does for F16) instead of refusing the tensor.
    #[arg(long)]
    pub allow_overflow: bool,
    /// Instead of a file type's fixed mix, choose every quantizable tensor's type by measured
    /// error so that the file is at most SIZE (3.2GB, 900MB decimal; 3GiB binary; or bytes).
    /// With --type, that file type labels the result; --tensor-type, --output-tensor-type,
    /// --token-embedding-type and per_tensor entries stay fixed.
    #[arg(long, value_name = "SIZE", conflicts_with = "target_bpw")]
    pub target_size: Option<String>,
    /// Like --target-size, for a number of bits per weight of the tensor data (what llama.cpp
    /// prints as BPW), e.g. 4.5.
    #[arg(long, value_name = "BPW")]
    pub target_bpw: Option<f64>,
    /// Write every tensor's type, size and measured error (relative, importance-weighted when
    /// an imatrix is given) to this JSON file, with the file's totals.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// No progress bars or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The projector file type when neither the command line nor the config names one: F16, what
/// llama.cpp's multimodal instructions convert projectors to.
const DEFAULT_MMPROJ_TYPE: &str = "F16";

/// Runs the command.
pub fn run(args: ExportArgs) -> Result<()> {
    if let Some(adapter) = &args.lora {
        return export_lora::run(&args, adapter);
    }
    let started = Instant::now();
    if crate::source::peft::is_adapter(&args.model) {
        bail!(
            "{} is a PEFT LoRA adapter: give it with --lora and the base model with --model (gmat export --model BASE --lora {0})",
            args.model.display()
        );
    }
    let store = Store::open(&args.model)?;
    // What this run reads: nothing it writes may be one of these, or inside a store.
    let mut inputs = crate::fsio::Inputs::default();
    inputs.dir(&store.root, "the store");
    let mut base = store.base_path();
    let mut seen = 0;
    while let Some(b) = base.take() {
        if !crate::store::Location::is_remote(&b) {
            inputs.dir(&b, "the base store");
        }
        seen += 1;
        if seen < 8 {
            base = Store::open(&b).ok().and_then(|s| s.base_path());
        }
    }
    if let Some(c) = &args.config {
        inputs.file(c, "the export config (--config)");
    }
    if let Some(m) = &args.metadata {
        inputs.file(m, "the metadata file (--metadata)");
    }
    let imatrix_arg = args.imatrix.clone().map(PathBuf::from);
    if let Some(i) = &imatrix_arg {
        inputs.file(i, "the imatrix");
    }
    // A folder or a {type} template names no file itself: the files it gives are checked
    // before any work (pipeline::export::run_all).
    if let Some(o) = args.output.as_ref().filter(|o| !names_many(o)) {
        inputs.check_output(o, "-o")?;
    }
    if let Some(m) = &args.mmproj {
        inputs.check_output(m, "--mmproj")?;
    }
    if let Some(g) = &args.generate_config {
        inputs.check_output(g, "--generate-config")?;
    }
    let config: ExportConfig = match &args.config {
        Some(p) => read_config(p)?,
        None => ExportConfig::default(),
    };
    let kv_overrides = kv_overrides(&args, &config)?;
    let imatrix_path = args
        .imatrix
        .clone()
        .or_else(|| config.quantization.imatrix.clone());
    let (include, exclude) = if args.include_weights.is_empty() && args.exclude_weights.is_empty() {
        (
            config.quantization.include_weights.clone(),
            config.quantization.exclude_weights.clone(),
        )
    } else {
        (args.include_weights.clone(), args.exclude_weights.clone())
    };
    let imatrix = match &imatrix_path {
        Some(path) => Imatrix::prepare(Path::new(path), &include, &exclude)?,
        None => None,
    };
    let q = Quantization {
        imatrix: imatrix_path.clone(),
        include_weights: include,
        exclude_weights: exclude,
        ..Quantization::default()
    };
    // the budget, the shard limits and the cache: every kind of store's exports read them
    let target = export_target::target_from(
        args.target_size.as_deref(),
        args.target_bpw,
        config.quantization.target.as_ref(),
    )?;
    let limits = split_limits(&args, &config)?;
    let cache = open_cache(&args)?;
    let search_input = SearchInput {
        store: &store,
        config: &config,
        types: &args.types,
        imatrix: imatrix.as_ref(),
        file_type: None,
        limits,
        cache: cache.as_ref(),
        quiet: args.quiet,
    };
    if store.is_gguf() {
        let (plans, targeted) = match &target {
            Some(t) => {
                let found = gguf_target(
                    &args,
                    &store,
                    &config,
                    imatrix.as_ref(),
                    &kv_overrides,
                    t,
                    &search_input,
                )?;
                (vec![found.plan.clone()], Some(found))
            }
            None => (
                gguf_plans(&args, &store, &config, imatrix.as_ref(), &kv_overrides)?,
                None,
            ),
        };
        if let Some(path) = &args.generate_config {
            if plans.len() > 1 {
                bail!("--generate-config writes the config of one file type; give one --type");
            }
            if let Some(i) = &imatrix_path {
                inputs.file(Path::new(i), "the imatrix");
                inputs.check_output(path, "--generate-config")?;
            }
            let extra = ExportConfig {
                override_kv: kv_overrides.iter().map(|o| o.spec.clone()).collect(),
                ..ExportConfig::default()
            };
            return generate(&plans[0], None, &store, q, extra, targeted.as_ref(), path);
        }
        return write_outputs(
            &args,
            &store,
            &config,
            &plans,
            None,
            &mut inputs,
            imatrix_path.as_deref(),
            Some((&search_input, targeted.as_ref())),
            started,
        );
    }
    // config.json and the folder path the model was imported from (what the converter would
    // have been given): the class's view of it is what every step reads
    let file = ConfigFile {
        json: store.config()?,
        path: store.manifest.source.path.clone(),
    };
    let arch = arch::detect(&Hparams::new(&file.json)?)?;
    let hparams = arch.hparams(&file)?;
    let file_types = choose_file_types(args.file_type.as_deref(), &config, &store)?;
    let metadata = metadata_input(&args, &config, &store)?;
    let build = |file_type: FileType, config: &ExportConfig| {
        plan::build(&PlanInput {
            manifest: &store.manifest,
            dir: &store.root,
            hparams: &hparams,
            arch,
            config,
            file_type,
            types: &args.types,
            imatrix: imatrix.as_ref(),
            metadata: metadata.clone(),
            kv_overrides: &kv_overrides,
            pre_tokenizer: args.pre_tokenizer.clone(),
        })
    };
    let mut targeted: Option<Targeted> = None;
    let mut plans = Vec::new();
    match &target {
        Some(t) => {
            let explicit = args.file_type.is_some()
                || config.quantization.default_type.is_some()
                || !config.quantization.profiles.is_empty();
            if explicit && file_types.len() > 1 {
                anyhow::bail!("a target (--target-size / --target-bpw) makes one file: give at most one --type");
            }
            let input = SearchInput {
                file_type: explicit.then(|| file_types[0]),
                ..search_input
            };
            let found = export_target::search(&input, t, &build)?;
            plans.push(found.plan.clone());
            targeted = Some(found);
        }
        None => {
            for file_type in &file_types {
                plans.push(build(*file_type, &config)?);
            }
        }
    }
    // The vision projector of a vision-language model: its own plan, from the converter's
    // --mmproj class.
    let mmproj_config = config.mmproj.clone().unwrap_or_default();
    let projector = if args.no_mmproj || !mmproj_config.write {
        None
    } else {
        arch::detect_projector(&hparams)
    };
    let mmproj = match projector {
        None => None,
        Some(p) => {
            let name = args
                .mmproj_type
                .as_deref()
                .or(mmproj_config.default_type.as_deref())
                .unwrap_or(DEFAULT_MMPROJ_TYPE);
            let ft: FileType = name
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--mmproj-type: {e}"))?;
            let plan = plan::build(&PlanInput {
                manifest: &store.manifest,
                dir: &store.root,
                hparams: &hparams,
                arch: p,
                config: &ExportConfig::default(),
                file_type: ft,
                types: &TypeOptions::default(),
                imatrix: None,
                metadata: metadata.clone(),
                kv_overrides: &[],
                pre_tokenizer: None,
            })
            .context("vision projector (mmproj)")?;
            Some(plan)
        }
    };
    if let Some(path) = &args.generate_config {
        if plans.len() > 1 {
            anyhow::bail!("--generate-config writes the config of one file type; give one --type");
        }
        if let Some(i) = &imatrix_path {
            inputs.file(Path::new(i), "the imatrix");
            inputs.check_output(path, "--generate-config")?;
        }
        // the --metadata file as already read, not a second read that could differ
        let mut md = metadata.overrides.clone();
        if let Some(name) = &args.model_name {
            // --model-name wins over the file's general.name, so the config can hold it there
            md.insert(
                "general.name".into(),
                serde_json::Value::String(name.clone()),
            );
        }
        let extra = ExportConfig {
            metadata: md,
            override_kv: kv_overrides.iter().map(|o| o.spec.clone()).collect(),
            ..ExportConfig::default()
        };
        return generate(
            &plans[0],
            mmproj.as_ref(),
            &store,
            q,
            extra,
            targeted.as_ref(),
            path,
        );
    }
    write_outputs(
        &args,
        &store,
        &config,
        &plans,
        mmproj.as_ref(),
        &mut inputs,
        imatrix_path.as_deref(),
        Some((&search_input, targeted.as_ref())),
        started,
    )
}

/// Writes the GGUFs of `plans` (and the projector's), or prints them with `--dry-run`.
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    args: &ExportArgs,
    store: &Store,
    config: &ExportConfig,
    plans: &[ExportPlan],
    mmproj: Option<&ExportPlan>,
    inputs: &mut crate::fsio::Inputs,
    imatrix_path: Option<&str>,
    report: Option<(&SearchInput, Option<&Targeted>)>,
    started: Instant,
) -> Result<()> {
    let stem = store
        .manifest
        .model
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("model")
        .to_string();
    let outs = plans
        .iter()
        .map(|p| {
            output_path(
                args.output.as_deref(),
                &stem,
                p.file_type.name,
                plans.len() > 1,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mmproj_out = mmproj.map(|p| match &args.mmproj {
        Some(f) => f.clone(),
        None => outs[0].with_file_name(format!("mmproj-{stem}-{}.gguf", p.file_type.name)),
    });
    if args.dry_run {
        for (plan, out) in plans.iter().zip(&outs) {
            if plans.len() > 1 {
                println!("{} -> {}", plan.file_type, out.display());
            }
            print!("{}", crate::escape::controls_keep_lines(&plan.describe()));
        }
        if let Some(t) = report.and_then(|r| r.1) {
            println!("{}", t.summary());
        }
        if let (Some(r), Some((input, targeted))) = (&args.report, report) {
            export_target::write_report(r, input, &plans[0], targeted)?;
        }
        if let (Some(p), Some(path)) = (mmproj, &mmproj_out) {
            println!("\nvision projector -> {}", path.display());
            print!("{}", crate::escape::controls_keep_lines(&p.describe()));
        }
        return Ok(());
    }
    let limits = split_limits(args, config)?;
    let mut outputs: Vec<_> = plans
        .iter()
        .zip(outs)
        .map(|(plan, path)| pipeline::export::Output { plan, path, limits })
        .collect();
    if let (Some(p), Some(path)) = (mmproj, mmproj_out) {
        outputs.push(pipeline::export::Output {
            plan: p,
            path,
            limits: SplitLimits::default(),
        });
    }
    if let Some(i) = imatrix_path {
        inputs.file(Path::new(i), "the imatrix");
    }
    let cache = open_cache(args)?;
    let run = pipeline::export::RunOptions {
        quiet: args.quiet,
        allow_overflow: args.allow_overflow,
        inputs: Some(inputs),
        cache: cache.as_ref(),
    };
    let stats = pipeline::export::run_all(store, &outputs, &run)?;
    if let (Some(r), Some((input, targeted))) = (&args.report, report) {
        export_target::write_report(r, input, &plans[0], targeted)?;
    }
    if !args.quiet {
        if let Some(t) = report.and_then(|r| r.1) {
            eprintln!("{}", t.summary());
        }
        for (o, st) in outputs.iter().zip(&stats) {
            let mut reuse = Vec::new();
            if cache.is_some() {
                reuse.push(format!("{} from the cache", st.from_cache));
            }
            if st.shared > 0 {
                reuse.push(format!("{} shared with an earlier file", st.shared));
            }
            let reuse = if reuse.is_empty() {
                String::new()
            } else {
                format!(", {}", reuse.join(", "))
            };
            eprintln!(
                "wrote {} ({}, {} tensors, file type {}{reuse})",
                st.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                human_bytes(st.file_bytes),
                o.plan.tensors.len(),
                o.plan.file_type,
            );
        }
        eprintln!(
            "done in {:.2?}{}",
            started.elapsed(),
            pipeline::progress::peak_rss_bytes()
                .map(|b| format!(", peak memory {}", human_bytes(b)))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The plans of a store imported from a GGUF (llama-quantize's, or the imported file itself;
/// see [`plan::gguf_source`]): one per file type asked for, the GGUF's own when none is.
fn gguf_plans(
    args: &ExportArgs,
    store: &Store,
    config: &ExportConfig,
    imatrix: Option<&Imatrix>,
    kv_overrides: &[KvOverride],
) -> Result<Vec<ExportPlan>> {
    // The converter's options: the GGUF already holds what they set.
    let converter_only = [
        (args.metadata.is_some(), "--metadata"),
        (args.model_name.is_some(), "--model-name"),
        (!config.metadata.is_empty(), "the config's metadata"),
        (args.pre_tokenizer.is_some(), "--pre-tokenizer"),
        (args.mmproj.is_some(), "--mmproj"),
        (args.mmproj_type.is_some(), "--mmproj-type"),
    ];
    if let Some((_, what)) = converter_only.iter().find(|(given, _)| *given) {
        bail!(
            "{what} is an option of the converter's (HF) exports; {} was imported from a GGUF, \
             whose metadata is kept as it is: set keys with --override-kv KEY=TYPE:VALUE, as \
             llama-quantize does",
            store.location
        );
    }
    let metadata = store.gguf_metadata()?;
    let q = &config.quantization;
    if q.default_type.is_some() && !q.profiles.is_empty() {
        bail!("quantization: give default_type or profiles, not both");
    }
    let names: Vec<(String, &str)> = match (&args.file_type, &q.default_type) {
        (Some(t), _) => t
            .split(',')
            .map(|n| (n.trim().to_string(), "--type"))
            .collect(),
        (None, _) if !q.profiles.is_empty() => q
            .profiles
            .iter()
            .map(|n| (n.clone(), "quantization.profiles"))
            .collect(),
        (None, Some(t)) => vec![(t.clone(), "quantization.default_type")],
        (None, None) => Vec::new(),
    };
    let mut types: Vec<Option<FileType>> = Vec::new();
    for (n, what) in &names {
        let ft: FileType = n
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{what}: {e}"))?;
        if types.contains(&Some(ft)) {
            bail!("{what}: {} is given twice", ft.name);
        }
        types.push(Some(ft));
    }
    if types.is_empty() {
        types.push(None);
    }
    let mut plans = Vec::new();
    for ft in types {
        let p = plan::gguf_source::build(&plan::gguf_source::GgufPlanInput {
            manifest: &store.manifest,
            metadata: &metadata,
            config,
            file_type: ft,
            types: &args.types,
            imatrix,
            kv_overrides,
        })?;
        if !p.requantized.is_empty() {
            let shown: Vec<String> = p
                .requantized
                .iter()
                .take(3)
                .map(|(n, a, b)| format!("{n} {a} -> {b}"))
                .collect();
            eprintln!(
                "warning: requantizing {} tensor(s) that are already quantized ({}{}): this can \
                 severely reduce quality compared to quantizing from 16bit or 32bit \
                 (llama-quantize --allow-requantize)",
                p.requantized.len(),
                shown.join(", "),
                if p.requantized.len() > 3 { ", ..." } else { "" }
            );
        }
        if p.identical && !args.quiet && args.generate_config.is_none() {
            eprintln!(
                "note: file type {} with no change to any tensor or key: writing the imported \
                 GGUF as it was",
                p.plan.file_type
            );
        }
        plans.push(p.plan);
    }
    Ok(plans)
}

/// The targeted plan of a store imported from a GGUF: the budget search over llama-quantize's
/// plans of that GGUF (the file type's mix, per-tensor entries for the searched tensors).
#[allow(clippy::too_many_arguments)]
fn gguf_target(
    args: &ExportArgs,
    store: &Store,
    config: &ExportConfig,
    imatrix: Option<&Imatrix>,
    kv_overrides: &[KvOverride],
    target: &export_target::Target,
    search_input: &SearchInput,
) -> Result<Targeted> {
    let q = &config.quantization;
    let named = args
        .file_type
        .clone()
        .or_else(|| q.default_type.clone())
        .or_else(|| (q.profiles.len() == 1).then(|| q.profiles[0].clone()));
    if named.as_deref().is_some_and(|n| n.contains(',')) || q.profiles.len() > 1 {
        bail!("a target (--target-size / --target-bpw) makes one file: give at most one --type");
    }
    let file_type = named
        .map(|n| n.trim().parse::<FileType>())
        .transpose()
        .map_err(|e: String| anyhow::anyhow!("--type: {e}"))?;
    // Tensors the GGUF holds quantized are not searched: they keep their type (unless the
    // user's own entry says otherwise), as requantizing them would lose what was lost once.
    let mut config = config.clone();
    for e in &store.manifest.tensors {
        if let (Dtype::Block(_), Some(ty)) = (e.dtype, e.dtype.ggml_type()) {
            config
                .quantization
                .per_tensor
                .entry(e.name.clone())
                .or_insert_with(|| ty.name().to_string());
        }
    }
    let metadata = store.gguf_metadata()?;
    let build = |ft: FileType, config: &ExportConfig| {
        let p = plan::gguf_source::build(&plan::gguf_source::GgufPlanInput {
            manifest: &store.manifest,
            metadata: &metadata,
            config,
            file_type: Some(ft),
            types: &args.types,
            imatrix,
            kv_overrides,
        })?;
        Ok(p.plan)
    };
    let input = SearchInput {
        file_type,
        config: &config,
        ..*search_input
    };
    export_target::search(&input, target, &build)
}

/// Shard limits from the command line, else from the config.
fn split_limits(args: &ExportArgs, config: &ExportConfig) -> Result<SplitLimits> {
    let max_bytes = match (&args.shard_size, &config.shard_size) {
        (Some(s), _) => Some(split::parse_size(s).context("--shard-size")?),
        (None, Some(serde_json::Value::Number(n))) => match n.as_u64() {
            Some(b) if b > 0 => Some(b),
            _ => anyhow::bail!("shard_size {n} is not a positive number of bytes"),
        },
        (None, Some(serde_json::Value::String(s))) => {
            Some(split::parse_size(s).context("shard_size")?)
        }
        (None, Some(serde_json::Value::Null)) | (None, None) => None,
        (None, Some(other)) => anyhow::bail!(
            "shard_size {other} must be a number of bytes, a size like \"2G\", or null"
        ),
    };
    let max_tensors = args.shard_max_tensors.or(config.shard_max_tensors);
    if max_tensors == Some(0) {
        anyhow::bail!("the maximum number of tensors per shard must be at least 1");
    }
    Ok(SplitLimits {
        max_bytes,
        max_tensors,
    })
}

/// `--type` (comma-separated), else the config's `profiles` or `default_type`, else the float
/// type of the stored weights (lossless).
fn choose_file_types(
    cli: Option<&str>,
    config: &ExportConfig,
    store: &Store,
) -> Result<Vec<FileType>> {
    let q = &config.quantization;
    if q.default_type.is_some() && !q.profiles.is_empty() {
        anyhow::bail!("quantization: give default_type or profiles, not both");
    }
    let parse_all = |names: &mut dyn Iterator<Item = &str>, what: &str| -> Result<Vec<FileType>> {
        let mut out: Vec<FileType> = Vec::new();
        for n in names {
            let ft: FileType = n
                .trim()
                .parse()
                .map_err(|e: String| anyhow::anyhow!("{what}: {e}"))?;
            if out.iter().any(|o| o.name == ft.name) {
                anyhow::bail!("{what}: {} is given twice", ft.name);
            }
            out.push(ft);
        }
        Ok(out)
    };
    if let Some(t) = cli {
        return parse_all(&mut t.split(','), "--type");
    }
    if !q.profiles.is_empty() {
        return parse_all(
            &mut q.profiles.iter().map(String::as_str),
            "quantization.profiles",
        );
    }
    if let Some(t) = &q.default_type {
        return parse_all(
            &mut std::iter::once(t.as_str()),
            "quantization.default_type",
        );
    }
    let weights = store.manifest.tensors.iter().find(|t| t.shape.len() >= 2);
    let name = match weights.map(|t| t.dtype) {
        Some(Dtype::BF16 | Dtype::F8E4M3 | Dtype::F8E5M2) => "BF16",
        Some(Dtype::F16) => "F16",
        _ => "F32",
    };
    Ok(vec![name
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?])
}

/// Whether `-o` is a folder or a name template rather than one file's name.
fn names_many(out: &Path) -> bool {
    let s = out.to_string_lossy();
    s.contains("{type}") || s.contains("{name}") || s.ends_with('/') || out.is_dir()
}

/// Where the GGUF of file type `ty` goes: `out` as given, `{name}`/`{type}` replaced in it, or,
/// with several types, `NAME-TYPE.gguf` in the folder `out` (in the current folder without
/// `out`).
fn output_path(out: Option<&Path>, stem: &str, ty: &str, several: bool) -> Result<PathBuf> {
    let default = format!("{stem}-{ty}.gguf");
    let Some(out) = out else {
        return Ok(PathBuf::from(default));
    };
    let s = out.to_string_lossy();
    if s.contains("{type}") || s.contains("{name}") {
        return Ok(PathBuf::from(
            s.replace("{type}", ty).replace("{name}", stem),
        ));
    }
    // One file type: `-o` names the file (a folder is refused before any work, as ever).
    if several && (out.is_dir() || s.ends_with('/')) {
        return Ok(out.join(default));
    }
    if several {
        anyhow::bail!(
            "-o {s}: with several types, give a folder or a name containing {{type}} \
             (e.g. out/{{name}}-{{type}}.gguf)"
        );
    }
    Ok(out.to_path_buf())
}

/// The quantized-tensor cache, unless `--no-cache`, a zero size or no cache folder.
fn open_cache(args: &ExportArgs) -> Result<Option<Cache>> {
    if args.no_cache {
        return Ok(None);
    }
    // Like a shard size, but 0 (no cache) is allowed.
    let size = |s: &str| match s.trim() {
        "0" => Ok(0),
        s => split::parse_size(s),
    };
    let limit = match (&args.cache_size, std::env::var("GMAT_CACHE_SIZE")) {
        (Some(s), _) => size(s).context("--cache-size")?,
        (None, Ok(s)) if !s.is_empty() => size(&s).context("GMAT_CACHE_SIZE")?,
        _ => crate::cache::DEFAULT_LIMIT,
    };
    if limit == 0 {
        return Ok(None);
    }
    let Some(dir) = Cache::default_dir() else {
        return Ok(None);
    };
    match Cache::open(&dir, limit) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            eprintln!("warning: exporting without the quantized-tensor cache: {e:#}");
            Ok(None)
        }
    }
}

/// Writes the fully resolved plan as an export config: the JSON alone reproduces the file.
fn generate(
    plan: &ExportPlan,
    mmproj: Option<&ExportPlan>,
    store: &Store,
    imatrix: Quantization,
    extra: ExportConfig,
    targeted: Option<&Targeted>,
    path: &Path,
) -> Result<()> {
    // in plan order (the file's order): token_embd, blk.0.*, blk.1.*, ..., output
    let mut per_tensor = indexmap::IndexMap::new();
    let mut errors_of: HashMap<String, serde_json::Value> = HashMap::new();
    let mut tensor_map = Vec::new();
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in &plan.tensors {
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
        // keyed by GGUF tensor name: what a person reads in llama.cpp's logs and gguf dumps
        per_tensor.insert(t.name.clone(), t.ggml_type.name().to_string());
        if let Some(s) = targeted.and_then(|g| g.searched.iter().find(|s| s.name == t.name)) {
            // what the search measured, as a comment key (configs ignore keys starting with _)
            let errors: serde_json::Map<String, serde_json::Value> = s
                .candidates
                .iter()
                .map(|c| (c.ty.name().to_string(), serde_json::json!(c.error)))
                .collect();
            errors_of.insert(t.name.clone(), serde_json::Value::Object(errors));
        }
        if let TensorSource::Stored(pieces) = &t.source {
            for p in pieces {
                tensor_map.push(ExportMapEntry {
                    source: p.entry.uuid.to_string(),
                    target: t.name.clone(),
                });
            }
        }
    }
    let config = ExportConfig {
        quantization: Quantization {
            default_type: Some(plan.file_type.name.to_string()),
            per_tensor,
            ..imatrix
        },
        tensor_map,
        mmproj: mmproj.map(|p| MmprojConfig {
            write: true,
            default_type: Some(p.file_type.name.to_string()),
        }),
        metadata: extra.metadata,
        override_kv: extra.override_kv,
        ..ExportConfig::default()
    };
    let mut json = serde_json::to_value(&config)?;
    if let Some(pt) = json
        .pointer_mut("/quantization/per_tensor")
        .and_then(|v| v.as_object_mut())
    {
        // each searched tensor's measured errors right after its entry
        let entries: Vec<(String, serde_json::Value)> = std::mem::take(pt).into_iter().collect();
        for (k, v) in entries {
            let err = errors_of.remove(&k);
            pt.insert(k.clone(), v);
            if let Some(e) = err {
                pt.insert(format!("_error:{k}"), e);
            }
        }
    }
    if let (Some(obj), Some(t)) = (json.as_object_mut(), targeted) {
        obj.insert("_target".into(), t.summary().into());
    }
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "_comment".into(),
            format!(
                "gmat export config for {}: per_tensor keys may be a GGUF tensor name, a UUID or a source tensor name",
                store.location
            )
            .into(),
        );
    }
    let schema = meta::write_schema_beside(path, meta::ConfigKind::Export)?;
    let json = with_schema_first(json, schema);
    crate::fsio::write_atomic(
        path,
        (serde_json::to_string_pretty(&json)? + "\n").as_bytes(),
    )?;
    println!("wrote {}", path.display());
    println!(
        "file type: {}  tensors: {}  data: {}",
        plan.file_type,
        plan.tensors.len(),
        human_bytes(plan.data_bytes())
    );
    for (t, (n, b)) in by_type {
        println!("  {t:<8} {n:>5} tensors {:>12}", human_bytes(b));
    }
    if let Some(p) = mmproj {
        println!(
            "vision projector: file type {}  tensors: {}  data: {}",
            p.file_type,
            p.tensors.len(),
            human_bytes(p.data_bytes())
        );
    }
    Ok(())
}

/// The converter's metadata inputs: the config's `metadata` object with the `--metadata` file
/// over it.
pub(crate) fn metadata_overrides(
    args: &ExportArgs,
    config: &ExportConfig,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = config.metadata.clone();
    if let Some(path) = &args.metadata {
        let text = crate::fsio::read_small_text(path)
            .with_context(|| format!("--metadata {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("--metadata {}: not valid JSON", path.display()))?;
        let serde_json::Value::Object(file) = json else {
            bail!(
                "--metadata {}: expected a JSON object of GGUF keys",
                path.display()
            );
        };
        map.extend(file);
    }
    Ok(map)
}

fn metadata_input(
    args: &ExportArgs,
    config: &ExportConfig,
    store: &Store,
) -> Result<MetadataInput> {
    let folder_name = store
        .manifest
        .model
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("model")
        .to_string();
    Ok(MetadataInput {
        folder_name,
        overrides: metadata_overrides(args, config)?,
        model_name: args.model_name.clone(),
    })
}

/// The config's `override_kv` then the command line's, parsed.
fn kv_overrides(args: &ExportArgs, config: &ExportConfig) -> Result<Vec<KvOverride>> {
    config
        .override_kv
        .iter()
        .chain(&args.override_kv)
        .map(|s| {
            s.parse::<KvOverride>()
                .map_err(|e| anyhow::anyhow!("--override-kv: {e}"))
        })
        .collect()
}
