//! One module per model family, each the Rust twin of a converter class
//! (llama.cpp `conversion/<family>.py` of the reference build), registered in [`ARCHES`].

pub mod bert;
pub mod deepseek2;
pub mod gemma;
pub mod gpt_oss;
pub mod llama;
pub mod phi3;
pub mod qwen;
pub mod qwen_moe;

use super::ArchSpec;

/// Every supported architecture, in the order `gmat` looks a model's HF class up.
pub static ARCHES: &[&dyn ArchSpec] = &[
    &llama::Llama,
    &qwen::Qwen2,
    &qwen::Qwen3,
    &qwen_moe::Qwen2Moe,
    &qwen_moe::Qwen3Moe,
    &gemma::Gemma2,
    &gemma::Gemma3,
    &phi3::Phi3,
    &deepseek2::Deepseek2,
    &bert::Bert,
    &gpt_oss::GptOss,
];
