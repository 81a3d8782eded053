//! Command-line interface (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::mix_rules::TensorTypeRule;
use crate::quant::GgmlType;

const AFTER_HELP: &str = "\
Examples:
  gmat import --model ./Llama-3.2-1B --generate-config        # writes import_config.json
  gmat import --model ./Llama-3.2-1B -o ./store                # writes ./store/model.gmat
  gmat export --model ./store/model.gmat --type Q8_0 -o llama-q8_0.gguf
  gmat export --model ./store/model.gmat --generate-config     # writes export_config.json
  gmat export --model ./store/model.gmat --config export_config.json -o llama.gguf
  gmat import --model ./Llama-3.2-1B-Instruct --base ./store/model.gmat -o ./instruct
  gmat inspect ./instruct/model.gmat                           # tensors, encodings, sizes
  gmat verify ./instruct/model.gmat                            # re-hash every tensor";

/// gmat: a lossless tensor store for LLM weights and a one-pass GGUF exporter for llama.cpp.
#[derive(Parser, Debug)]
#[command(name = "gmat", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import a HuggingFace safetensors model into a GMAT store (model.gmat/).
    #[command(after_help = "\
Examples:
  gmat import --model ./hf-model --generate-config                  # import_config.json + statistics
  gmat import --model ./hf-model -o ./out                           # ./out/model.gmat, all tensors
  gmat import --model ./hf-model --config import_config.json -o ./out
  gmat import --model ./hf-model/model.safetensors -o ./out         # config.json must sit beside it
  gmat import --model ./hf-model -o ./out --encoding raw            # no compression
  gmat import --model ./finetune --base ./out/model.gmat -o ./ft    # shares/deltas against a base")]
    Import(ImportCli),
    /// Export a GMAT store to a GGUF file for llama.cpp.
    #[command(after_help = "\
Examples:
  gmat export --model ./out/model.gmat --type Q8_0 -o model-q8_0.gguf
  gmat export --model ./out/model.gmat -o model-bf16.gguf           # keeps the stored float type
  gmat export --model ./out/model.gmat --generate-config            # export_config.json (full plan)
  gmat export --model ./out/model.gmat --config export_config.json -o model.gguf
  gmat export --model ./out/model.gmat --type Q8_0 --dry-run        # print the plan only
  gmat export --model ./out/model.gmat --type Q4_K_M --tensor-type 'ffn_down=q6_k' --output-tensor-type q8_0

File types: F32 F16 BF16 and llama-quantize's (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L
Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ3_S IQ3_M IQ4_NL IQ4_XS TQ1_0 TQ2_0 ...), with the same
per-tensor types as llama-quantize. File types that need an importance matrix are refused.")]
    Export(ExportCli),
    /// Show a store's tensors (dtype, shape, encoding, sizes, hashes) and its totals.
    #[command(after_help = "\
Examples:
  gmat inspect ./out/model.gmat
  gmat inspect ./ft                                                 # a folder holding model.gmat

Encodings: raw (the bytes as they are), zstd (byte planes + zstd), xor_zstd (XOR with the base
store's tensor, then byte planes + zstd), base_ref (no file: the base store's tensor). A zstd or
raw tensor shared with the base by a hard link shows as \"(linked)\".")]
    Inspect(InspectCli),
    /// Re-hash every tensor of a store (decoding it) and stop at the first mismatch.
    #[command(after_help = "\
Examples:
  gmat verify ./out/model.gmat
  gmat verify ./ft/model.gmat && echo ok                            # also checks what the base holds for it

Exit status: 0 if every tensor decodes to its recorded content hash, 1 at the first that does
not (the message names it), or if the store or its base cannot be read.")]
    Verify(VerifyCli),
}

#[derive(Args, Debug)]
pub struct ImportCli {
    /// HF model folder (model.safetensors or shards + index), or one .safetensors file.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Output folder; the store is written to OUTPUT/model.gmat.
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
    /// stay in place for the fine-tune to export.
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

#[derive(Args, Debug)]
pub struct InspectCli {
    /// GMAT store (a model.gmat folder, or the folder holding it).
    pub store: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyCli {
    /// GMAT store (a model.gmat folder, or the folder holding it).
    pub store: PathBuf,
    /// No progress bar or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ExportCli {
    /// GMAT store (a model.gmat folder, or the folder holding it).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Output GGUF file (default: NAME-TYPE.gguf in the current folder).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Export config (default type, per-tensor types, names).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// llama.cpp file type (F32, F16, BF16, Q8_0, ...); overrides the config's default_type.
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub file_type: Option<String>,
    /// Give every quantizable tensor the file type's own type (like llama-quantize --pure).
    #[arg(long)]
    pub pure: bool,
    /// ggml type of output.weight (and of tied token embeddings), as llama-quantize
    /// --output-tensor-type.
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<GgmlType>,
    /// ggml type of token_embd.weight, as llama-quantize --token-embedding-type.
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<GgmlType>,
    /// Give tensors whose GGUF name contains a match of REGEX (lower-cased) this ggml type;
    /// repeatable, first match wins; quantized file types only; as llama-quantize --tensor-type.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub tensor_types: Vec<TensorTypeRule>,
    /// Keep output.weight unquantized, as llama-quantize --leave-output-tensor.
    #[arg(long)]
    pub leave_output_tensor: bool,
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
    /// No progress bars or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
