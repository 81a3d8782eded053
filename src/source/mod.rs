//! Reading source models: HF folders of safetensors weights plus config and tokenizer files,
//! GGUF files, found locally or through the Hugging Face cache (`hub`).

pub mod dtype;
pub mod gguf_model;
pub mod hf_folder;
pub mod hub;
pub mod peft;
pub mod peft_merge;
pub mod safetensors;

pub use dtype::Dtype;
pub use hf_folder::HfModel;
