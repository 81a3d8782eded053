//! GGUF v3: the header writer used by export, and a strict reader for inspection and tests.
//!
//! Layout facts (magic, version, alignment, value encodings) follow ggml's `docs/gguf.md` and
//! `ggml/src/gguf.cpp` of the reference build.

pub mod ggml_type;
pub mod reader;
pub mod value;
pub mod writer;

pub use ggml_type::GgmlType;
pub use reader::GgufFile;
pub use value::{Value, ValueType};
pub use writer::{GgufHeader, TensorInfo};

/// "GGUF" as a little-endian u32.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The only version gmat writes.
pub const VERSION: u32 = 3;
/// Default data alignment (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Rounds `n` up to a multiple of `align`.
pub fn align_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}
