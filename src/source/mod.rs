//! Reading source models: HF folders of safetensors weights plus config and tokenizer files,
//! and GGUF files.

pub mod dtype;
pub mod gguf_model;
pub mod hf_folder;
pub mod safetensors;

pub use dtype::Dtype;
pub use hf_folder::HfModel;
