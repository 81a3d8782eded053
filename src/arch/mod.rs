//! Per-architecture knowledge: which HF models an architecture covers, how tensor names map,
//! which transforms the converter applies, and which metadata keys it writes.
//!
//! Architectures are data ([`ARCHES`]) plus a few flags for the converter's per-class hooks.
//! Adding one means adding a row here and, if its HF names are new, rows in `names.rs`.

pub mod hparams;
pub mod metadata;
pub mod names;
pub mod rope;
pub mod tokenizer;

use anyhow::{bail, Result};

pub use hparams::Hparams;
pub use names::{match_hf_name, NameMatch, TensorKind};

/// One GGUF architecture and the converter behaviour gmat reproduces for it.
#[derive(Debug)]
pub struct Arch {
    /// `general.architecture`.
    pub name: &'static str,
    /// HF `architectures[0]` values handled as this architecture.
    pub hf_classes: &'static [&'static str],
    /// Tensor kinds this architecture has besides [`COMMON`] (others are refused, as the
    /// converter refuses them).
    pub kinds: &'static [TensorKind],
    /// The llama converter's Q/K row permutation (`LlamaModel.permute`).
    pub permute_qk: bool,
    /// `LlamaModel.set_gguf_parameters`: writes `vocab_size` and `rope.dimension_count`, and
    /// generates `rope_freqs` for llama3 RoPE scaling.
    pub llama_extras: bool,
}

use TensorKind as K;

/// The tensors every supported architecture has.
const COMMON: &[TensorKind] = &[
    K::TokenEmbd,
    K::Output,
    K::OutputNorm,
    K::AttnNorm,
    K::AttnQ,
    K::AttnK,
    K::AttnV,
    K::AttnOutput,
    K::FfnNorm,
    K::FfnGate,
    K::FfnUp,
    K::FfnDown,
];

/// Every supported architecture.
pub static ARCHES: &[Arch] = &[
    Arch {
        name: "llama",
        hf_classes: &[
            "LlamaForCausalLM",
            "LLaMAForCausalLM",
            "MistralForCausalLM",
            "MixtralForCausalLM",
        ],
        kinds: &[
            K::RopeFreqs,
            K::FfnGateInp,
            K::FfnGateExps,
            K::FfnUpExps,
            K::FfnDownExps,
        ],
        permute_qk: true,
        llama_extras: true,
    },
    Arch {
        name: "qwen2",
        hf_classes: &["Qwen2ForCausalLM"],
        kinds: &[],
        permute_qk: false,
        llama_extras: false,
    },
    Arch {
        name: "qwen3",
        hf_classes: &["Qwen3ForCausalLM"],
        kinds: &[K::AttnQNorm, K::AttnKNorm],
        permute_qk: false,
        llama_extras: false,
    },
];

impl Arch {
    /// Whether tensors of `kind` belong to this architecture.
    pub fn has(&self, kind: TensorKind) -> bool {
        COMMON.contains(&kind) || self.kinds.contains(&kind)
    }
}

/// The architecture of a model, from config.json's `architectures`.
pub fn detect(hp: &Hparams) -> Result<&'static Arch> {
    let Some(class) = hp.hf_architecture() else {
        bail!("config.json has no \"architectures\" list, so the model's architecture is unknown");
    };
    match ARCHES.iter().find(|a| a.hf_classes.contains(&class)) {
        Some(a) => Ok(a),
        None => {
            let known: Vec<&str> = ARCHES
                .iter()
                .flat_map(|a| a.hf_classes.iter().copied())
                .collect();
            bail!(
                "architecture {class} is not supported (supported: {})",
                known.join(", ")
            )
        }
    }
}
