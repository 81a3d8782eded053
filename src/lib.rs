//! gmat: a lossless, tensor-addressed store for LLM weights and a one-pass GGUF exporter for
//! llama.cpp.
//!
//! Data flows one way (see DESIGN.md): [`cli`] → [`commands`] → [`source`] / [`store`] /
//! [`arch`] / [`plan`] / [`quant`] / [`gguf`] / [`pipeline`]; [`config`] holds the JSON configs.

pub mod arch;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod content_hash;
pub mod escape;
pub mod fsio;
#[cfg(test)]
mod fuzz;
pub mod gguf;
pub mod malloc_arenas;
pub mod mapped;
pub mod pipeline;
pub mod plan;
pub mod quant;
pub mod source;
pub mod store;
#[doc(hidden)]
pub mod testkit;
