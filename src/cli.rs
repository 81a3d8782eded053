//! Command-line interface (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands::export::ExportArgs;
use crate::commands::import::ImportArgs;

const AFTER_HELP: &str = "\
Examples:
  gmat import --model ./Llama-3.2-1B --generate-config        # writes import_config.json
  gmat import --model ./Llama-3.2-1B -o ./store                # writes ./store/model.gmat
  gmat export --model ./store/model.gmat --type Q8_0 -o llama-q8_0.gguf
  gmat export --model ./store/model.gmat --generate-config     # writes export_config.json
  gmat export --model ./store/model.gmat --config export_config.json -o llama.gguf
  gmat import --model ./Llama-3.2-1B-Instruct --base ./store/model.gmat -o ./instruct
  gmat import --model ./Qwen3-0.6B-BF16.gguf -o ./qwen                 # a GGUF, kept losslessly
  gmat export --model ./store/model.gmat --lora ./my-lora -o my-lora.gguf  # for llama-cli --lora
  gmat import --lora ./my-lora --base ./store/model.gmat -o ./merged   # adapter merged, as deltas
  gmat export --model ./qwen --type Q4_K_M -o qwen-q4_k_m.gguf         # = llama-quantize's file
  gmat inspect ./instruct/model.gmat                           # tensors, encodings, sizes
  gmat verify ./instruct/model.gmat                            # re-hash every tensor
  gmat import --model ./Llama-3.2-1B -o s3://models/llama      # a store in a bucket (S3, Garage,
  gmat export --model s3://models/llama --type Q8_0 -o q8.gguf #   MinIO; see --s3-endpoint)";

/// gmat: a lossless tensor store for LLM weights and a one-pass GGUF exporter for llama.cpp.
#[derive(Parser, Debug)]
#[command(name = "gmat", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Endpoint of a self-hosted S3-compatible server for s3:// stores (Garage, MinIO, Ceph
    /// RGW), e.g. http://localhost:3900; also GMAT_S3_ENDPOINT, else AWS_ENDPOINT_URL or the
    /// AWS profile's endpoint_url. Credentials and region: AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, or ~/.aws/credentials and ~/.aws/config (AWS_PROFILE).
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
}

/// Parsed once per run: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import a HuggingFace safetensors model (or a GGUF file) into a GMAT store (model.gmat/).
    #[command(after_help = "\
Examples:
  gmat import --model ./hf-model --generate-config                  # import_config.json + statistics
  gmat import --model ./hf-model -o ./out                           # ./out/model.gmat, all tensors
  gmat import --model ./hf-model --config import_config.json -o ./out
  gmat import --model ./hf-model/model.safetensors -o ./out         # config.json must sit beside it
  gmat import --model ./hf-model -o ./out --encoding raw            # no compression
  gmat import --model ./finetune --base ./out/model.gmat -o ./ft    # shares/deltas against a base
  gmat import --model ./Qwen3-0.6B-BF16.gguf -o ./qwen              # a GGUF: tensors + all metadata
  gmat import --model ./big-Q8_0-00001-of-00003.gguf -o ./big       # a split GGUF (any of its files)
  gmat import --lora ./my-lora --base ./out/model.gmat -o ./merged  # PEFT LoRA merged into the base

--lora merges a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) as PEFT's
merge_and_unload does: W + (lora_alpha / r) * B @ A in float32, rounded to the stored dtype;
the merged weights are stored as XOR deltas against --base, everything else is shared.")]
    Import(ImportArgs),
    /// Export a GMAT store to a GGUF file for llama.cpp.
    #[command(after_help = "\
Examples:
  gmat export --model ./out/model.gmat --type Q8_0 -o model-q8_0.gguf
  gmat export --model ./out/model.gmat -o model-bf16.gguf           # keeps the stored float type
  gmat export --model ./out/model.gmat --generate-config            # export_config.json (full plan)
  gmat export --model ./out/model.gmat --config export_config.json -o model.gguf
  gmat export --model ./out/model.gmat --type Q8_0 --dry-run        # print the plan only
  gmat export --model ./out/model.gmat --type Q4_K_M --tensor-type 'ffn_down=q6_k' --output-tensor-type q8_0
  gmat export --model ./out/model.gmat --type Q8_0 --model-name 'My Model 7B' --metadata card.json
  gmat export --model ./out/model.gmat --type Q8_0 --override-kv general.author=str:ACME \
      --override-kv llama.context_length=int:8192       # as llama-quantize --override-kv
  gmat export --model ./out/model.gmat --type Q8_0 --pre-tokenizer llama-bpe  # tokenizer hash unknown
  gmat export --model ./out/model.gmat --type Q4_K_M,Q6_K,Q8_0 -o ./gguf/  # one pass, 3 files
  gmat export --model ./out/model.gmat --type Q4_K_M,Q8_0 -o 'llama-{type}.gguf'
  gmat export --model ./out/model.gmat --type Q4_K_M --no-cache     # bypass the cache
  gmat export --model ./qwen -o same.gguf                     # imported from a GGUF: that file again
  gmat export --model ./qwen --type Q4_K_M,F16 -o 'qwen-{type}.gguf'  # as llama-quantize from it
  gmat export --model ./qwen-q8 --type Q4_0 --allow-requantize      # quantized -> quantized
  gmat export --model ./out/model.gmat --lora ./my-lora -o my-lora-f32.gguf   # LoRA GGUF
  gmat export --model ./hf-base --lora ./my-lora --type F16 -o my-lora-f16.gguf  # base: its config.json

Quantized tensors are cached (by source content hash, type, transform and imatrix entry) in
$GMAT_CACHE_DIR, else $XDG_CACHE_HOME/gmat, else ~/.cache/gmat, up to --cache-size (default 20G):
re-exports reuse every tensor whose inputs did not change.

The quantizers use the widest vector unit the CPU has (AVX2, else SSE2); GMAT_SIMD=scalar|sse2|avx2
forces one path (every path writes the same bytes).

File types: F32 F16 BF16 and llama-quantize's (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L
Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ3_S IQ3_M IQ4_NL IQ4_XS TQ1_0 TQ2_0 ...), with the same
per-tensor types as llama-quantize. File types that need an importance matrix are refused.

A store imported from a GGUF exports as llama-quantize run on that GGUF: its metadata as it is
(general.file_type and general.quantization_version updated), tensors in llama-quantize's order;
with no --type (or its own type) and no change, the imported file byte for byte. Quantized tensors
are quantized again only with --allow-requantize.

--lora writes a PEFT LoRA adapter as the LoRA GGUF of convert_lora_to_gguf.py --base MODEL
(byte for byte; --type F32, its default, F16, BF16 or Q8_0), for llama-cli/llama-server --lora
with the base model's GGUF. --model is the base: a store, or any folder with its config.json.")]
    Export(Box<ExportArgs>),
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
    /// Delete a store: a model.gmat folder, or every object of a store in a bucket, including
    /// what an interrupted import left behind.
    #[command(after_help = "\
Examples:
  gmat remove s3://models/old-finetune                          # every object of its model.gmat/
  gmat remove ./out/model.gmat

A store an import is writing is refused; the lock of an interrupted import is taken over. Fine-tunes
stored against the store (--base) can no longer be exported once it is gone.")]
    Remove(RemoveCli),
    /// Print the JSON Schema of import_config.json or export_config.json, for editors.
    #[command(after_help = "\
Examples:
  gmat schema export > gmat-export-config.schema.json
  gmat schema import -o gmat-import-config.schema.json

Configs written by --generate-config point at their schema with \"$schema\" (written beside them).")]
    Schema(SchemaCli),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    #[command(after_help = "\
Examples:
  gmat completions bash > ~/.local/share/bash-completion/completions/gmat
  gmat completions zsh > ~/.zfunc/_gmat
  gmat completions fish > ~/.config/fish/completions/gmat.fish")]
    Completions(CompletionsCli),
    /// Print the man page, or write one page per command into a folder.
    #[command(after_help = "\
Examples:
  gmat man | man -l -
  gmat man --dir ~/.local/share/man/man1")]
    Man(ManCli),
}

/// Options of `gmat schema`.
#[derive(Args, Debug)]
pub struct SchemaCli {
    /// Which config file.
    #[arg(value_enum)]
    pub kind: crate::commands::meta::ConfigKind,
    /// Write the schema to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Options of `gmat completions`.
#[derive(Args, Debug)]
pub struct CompletionsCli {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of `gmat man`.
#[derive(Args, Debug)]
pub struct ManCli {
    /// Write gmat.1 and gmat-COMMAND.1 into DIR instead of printing gmat.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectCli {
    /// GMAT store (a model.gmat folder, or the folder holding it; or s3://bucket/prefix).
    pub store: PathBuf,
}

#[derive(Args, Debug)]
pub struct RemoveCli {
    /// GMAT store (a model.gmat folder or the folder holding it, or s3://bucket/prefix).
    pub store: PathBuf,
    /// No summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct VerifyCli {
    /// GMAT store (a model.gmat folder, or the folder holding it; or s3://bucket/prefix).
    pub store: PathBuf,
    /// No progress bar or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
