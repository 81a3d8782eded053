//! llama.cpp file types (`llama_ftype`): the names `--type` accepts, the id written to
//! `general.file_type`, and the default tensor type.
//!
//! Transcribed from the reference build's `include/llama.h` (enum values),
//! `tools/quantize/quantize.cpp` (`QUANT_OPTIONS` names and aliases) and `src/llama-quant.cpp`
//! (`llama_ftype_get_default_type`).

use std::fmt;
use std::str::FromStr;

use crate::quant::GgmlType;

/// `llama_ftype` (include/llama.h), named as llama-quantize names the file types.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ftype {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ2_XXS,
    IQ2_XS,
    Q2_K_S,
    IQ3_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ3_M,
    IQ2_S,
    IQ2_M,
    IQ4_XS,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4_MOE,
    Q1_0,
    Q2_0,
}

/// One llama.cpp file type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileType {
    /// Which one.
    pub ftype: Ftype,
    /// The canonical name (`Q4_K_M`).
    pub name: &'static str,
    /// `general.file_type` value.
    pub id: u32,
    /// The type most tensors get.
    pub default_type: GgmlType,
}

use GgmlType as G;

/// (file type, name, llama_ftype id, default ggml type).
const TABLE: &[(Ftype, &str, u32, GgmlType)] = &[
    (Ftype::F32, "F32", 0, G::F32),
    (Ftype::F16, "F16", 1, G::F16),
    (Ftype::Q4_0, "Q4_0", 2, G::Q4_0),
    (Ftype::Q4_1, "Q4_1", 3, G::Q4_1),
    (Ftype::Q8_0, "Q8_0", 7, G::Q8_0),
    (Ftype::Q5_0, "Q5_0", 8, G::Q5_0),
    (Ftype::Q5_1, "Q5_1", 9, G::Q5_1),
    (Ftype::Q2_K, "Q2_K", 10, G::Q2_K),
    (Ftype::Q3_K_S, "Q3_K_S", 11, G::Q3_K),
    (Ftype::Q3_K_M, "Q3_K_M", 12, G::Q3_K),
    (Ftype::Q3_K_L, "Q3_K_L", 13, G::Q3_K),
    (Ftype::Q4_K_S, "Q4_K_S", 14, G::Q4_K),
    (Ftype::Q4_K_M, "Q4_K_M", 15, G::Q4_K),
    (Ftype::Q5_K_S, "Q5_K_S", 16, G::Q5_K),
    (Ftype::Q5_K_M, "Q5_K_M", 17, G::Q5_K),
    (Ftype::Q6_K, "Q6_K", 18, G::Q6_K),
    (Ftype::IQ2_XXS, "IQ2_XXS", 19, G::IQ2_XXS),
    (Ftype::IQ2_XS, "IQ2_XS", 20, G::IQ2_XS),
    (Ftype::Q2_K_S, "Q2_K_S", 21, G::Q2_K),
    (Ftype::IQ3_XS, "IQ3_XS", 22, G::IQ3_S),
    (Ftype::IQ3_XXS, "IQ3_XXS", 23, G::IQ3_XXS),
    (Ftype::IQ1_S, "IQ1_S", 24, G::IQ1_S),
    (Ftype::IQ4_NL, "IQ4_NL", 25, G::IQ4_NL),
    (Ftype::IQ3_S, "IQ3_S", 26, G::IQ3_S),
    (Ftype::IQ3_M, "IQ3_M", 27, G::IQ3_S),
    (Ftype::IQ2_S, "IQ2_S", 28, G::IQ2_XS),
    (Ftype::IQ2_M, "IQ2_M", 29, G::IQ2_S),
    (Ftype::IQ4_XS, "IQ4_XS", 30, G::IQ4_XS),
    (Ftype::IQ1_M, "IQ1_M", 31, G::IQ1_M),
    (Ftype::BF16, "BF16", 32, G::BF16),
    (Ftype::TQ1_0, "TQ1_0", 36, G::TQ1_0),
    (Ftype::TQ2_0, "TQ2_0", 37, G::TQ2_0),
    (Ftype::MXFP4_MOE, "MXFP4_MOE", 38, G::MXFP4),
    (Ftype::Q1_0, "Q1_0", 40, G::Q1_0),
    (Ftype::Q2_0, "Q2_0", 41, G::Q2_0),
];

/// llama-quantize's aliases.
const ALIASES: &[(&str, &str)] = &[("Q3_K", "Q3_K_M"), ("Q4_K", "Q4_K_M"), ("Q5_K", "Q5_K_M")];

impl FileType {
    /// Every file type, in id order.
    pub fn all() -> impl Iterator<Item = FileType> {
        TABLE
            .iter()
            .map(|&(ftype, name, id, default_type)| FileType {
                ftype,
                name,
                id,
                default_type,
            })
    }

    /// Whether this is one of `types`.
    pub fn is(self, types: &[Ftype]) -> bool {
        types.contains(&self.ftype)
    }

    /// Whether this is one of the unquantized float file types, which gmat produces the way
    /// `convert_hf_to_gguf.py --outtype` does.
    pub fn is_float(self) -> bool {
        matches!(self.default_type, G::F32 | G::F16 | G::BF16)
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for FileType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase();
        let canonical = ALIASES
            .iter()
            .find(|(a, _)| *a == upper)
            .map(|(_, c)| *c)
            .unwrap_or(&upper);
        FileType::all()
            .find(|t| t.name == canonical)
            .ok_or_else(|| {
                let names: Vec<&str> = FileType::all().map(|t| t.name).collect();
                format!(
                    "unknown file type '{s}' (known: {}, and the aliases Q3_K, Q4_K, Q5_K)",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        let t: FileType = "q4_k".parse().unwrap();
        assert_eq!((t.name, t.id, t.default_type), ("Q4_K_M", 15, G::Q4_K));
        assert_eq!("BF16".parse::<FileType>().unwrap().id, 32);
        assert!("Q9".parse::<FileType>().is_err());
        let t: FileType = "q1_0".parse().unwrap();
        assert_eq!((t.ftype, t.id, t.default_type), (Ftype::Q1_0, 40, G::Q1_0));
        let t: FileType = "Q2_0".parse().unwrap();
        assert_eq!((t.ftype, t.id, t.default_type), (Ftype::Q2_0, 41, G::Q2_0));
        let t: FileType = "mxfp4_moe".parse().unwrap();
        assert_eq!(
            (t.ftype, t.id, t.default_type),
            (Ftype::MXFP4_MOE, 38, G::MXFP4)
        );
    }
}
