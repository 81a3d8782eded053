//! gmat: a lossless, tensor-addressed store for LLM weights and a one-pass GGUF exporter.
//!
//! Data flows one way (see DESIGN.md): `cli` → `commands` → `source` / `store` / `arch` /
//! `plan` / `quant` / `gguf` / `pipeline`.

pub mod gguf;
pub mod quant;
