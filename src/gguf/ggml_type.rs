//! The ggml tensor types gmat knows, with their on-disk block geometry.
//!
//! Type ids, block sizes and bytes per block are format facts transcribed from the reference
//! build's `ggml/include/ggml.h` (enum `ggml_type`) and `ggml/src/ggml.c` (`type_traits`),
//! llama.cpp b11312.

use std::fmt;
use std::str::FromStr;

/// One ggml tensor type. The discriminant is the id written into GGUF tensor infos.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Elements of a K-quant (and IQ/TQ) super-block (`QK_K`, ggml-common.h).
pub const QK_K: usize = 256;
/// Elements of a Q4_0/Q4_1/Q5_0/Q5_1 block (`QK4_0` = `QK4_1` = `QK5_0` = `QK5_1`,
/// ggml-common.h).
pub const QK_LEGACY: usize = 32;
/// Elements of a Q8_0 block (`QK8_0`, ggml-common.h).
pub const QK8_0: usize = 32;
/// Elements of an IQ4_NL block (`QK4_NL`, ggml-common.h).
pub const QK4_NL: usize = 32;
/// Elements of an MXFP4 block (`QK_MXFP4`, ggml-common.h).
pub const QK_MXFP4: usize = 32;
/// Elements of an NVFP4 block (`QK_NVFP4`, ggml-common.h): four sub-blocks of 16.
pub const QK_NVFP4: usize = 64;
/// Elements of a Q1_0 block (`QK1_0`, ggml-common.h).
pub const QK1_0: usize = 128;
/// Elements of a Q2_0 block (`QK2_0`, ggml-common.h).
pub const QK2_0: usize = 64;

/// (type, name, elements per block, bytes per block), from ggml.c `type_traits`.
const TABLE: &[(GgmlType, &str, usize, usize)] = &[
    (GgmlType::F32, "F32", 1, 4),
    (GgmlType::F16, "F16", 1, 2),
    (GgmlType::Q4_0, "Q4_0", QK_LEGACY, 18),
    (GgmlType::Q4_1, "Q4_1", QK_LEGACY, 20),
    (GgmlType::Q5_0, "Q5_0", QK_LEGACY, 22),
    (GgmlType::Q5_1, "Q5_1", QK_LEGACY, 24),
    (GgmlType::Q8_0, "Q8_0", QK8_0, 34),
    (GgmlType::Q8_1, "Q8_1", QK8_0, 36),
    (GgmlType::Q2_K, "Q2_K", QK_K, 84),
    (GgmlType::Q3_K, "Q3_K", QK_K, 110),
    (GgmlType::Q4_K, "Q4_K", QK_K, 144),
    (GgmlType::Q5_K, "Q5_K", QK_K, 176),
    (GgmlType::Q6_K, "Q6_K", QK_K, 210),
    (GgmlType::Q8_K, "Q8_K", QK_K, 292),
    (GgmlType::IQ2_XXS, "IQ2_XXS", QK_K, 66),
    (GgmlType::IQ2_XS, "IQ2_XS", QK_K, 74),
    (GgmlType::IQ3_XXS, "IQ3_XXS", QK_K, 98),
    (GgmlType::IQ1_S, "IQ1_S", QK_K, 50),
    (GgmlType::IQ4_NL, "IQ4_NL", QK4_NL, 18),
    (GgmlType::IQ3_S, "IQ3_S", QK_K, 110),
    (GgmlType::IQ2_S, "IQ2_S", QK_K, 82),
    (GgmlType::IQ4_XS, "IQ4_XS", QK_K, 136),
    (GgmlType::I8, "I8", 1, 1),
    (GgmlType::I16, "I16", 1, 2),
    (GgmlType::I32, "I32", 1, 4),
    (GgmlType::I64, "I64", 1, 8),
    (GgmlType::F64, "F64", 1, 8),
    (GgmlType::IQ1_M, "IQ1_M", QK_K, 56),
    (GgmlType::BF16, "BF16", 1, 2),
    (GgmlType::TQ1_0, "TQ1_0", QK_K, 54),
    (GgmlType::TQ2_0, "TQ2_0", QK_K, 66),
    (GgmlType::MXFP4, "MXFP4", QK_MXFP4, 17),
    (GgmlType::NVFP4, "NVFP4", QK_NVFP4, 36),
    (GgmlType::Q1_0, "Q1_0", QK1_0, 18),
    (GgmlType::Q2_0, "Q2_0", QK2_0, 18),
];

impl GgmlType {
    fn row(self) -> &'static (GgmlType, &'static str, usize, usize) {
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every GgmlType variant has a TABLE row")
    }

    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|r| r.0)
    }

    /// The id written into GGUF tensor infos.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The type with this GGUF id.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|r| r.0 as u32 == id).map(|r| r.0)
    }

    /// ggml's name for the type (`Q4_K`, `BF16`, ...).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.row().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().3
    }

    /// Whether the type is a block-quantized one (not a plain float or integer).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a row of `n` elements; `None` if `n` is not a whole number of blocks (or the
    /// size does not fit a u64).
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgmlType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TABLE
            .iter()
            .find(|r| r.1.eq_ignore_ascii_case(s))
            .map(|r| r.0)
            .ok_or_else(|| {
                let names: Vec<&str> = TABLE.iter().map(|r| r.1).collect();
                format!("unknown ggml type '{s}' (known: {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_parse() {
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(t.name().parse::<GgmlType>().unwrap(), t);
        }
        assert!("Q9_9".parse::<GgmlType>().is_err());
    }

    #[test]
    fn row_bytes_needs_whole_blocks() {
        assert_eq!(GgmlType::Q8_0.row_bytes(64), Some(68));
        assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_bytes(64), None);
        assert_eq!(GgmlType::BF16.row_bytes(3), Some(6));
    }
}
