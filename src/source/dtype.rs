//! Element types of source tensors, and their conversion to f32.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::quant::rounding::{bf16_bits_to_f32, f16_bits_to_f32};

/// A tensor element type as safetensors names it. gmat stores any of these losslessly; export
/// converts them to f32 first, as `convert_hf_to_gguf.py` does (`data_torch.to(torch.float32)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    #[serde(rename = "BOOL")]
    Bool,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The safetensors spelling.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U64 => "U64",
            Dtype::U32 => "U32",
            Dtype::U16 => "U16",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
        }
    }

    /// Whether the converter keeps this dtype's values as floats (the others are cast).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }

    /// Converts little-endian elements to f32, appending to `out`.
    pub fn extend_f32(self, bytes: &[u8], out: &mut Vec<f32>) {
        let n = bytes.len() / self.size();
        let start = out.len();
        out.resize(start + n, 0.0);
        let dst = &mut out[start..];
        // Index-free loops over fixed-size chunks: the compiler vectorises these (an `extend`
        // with a per-element capacity check does not).
        macro_rules! conv {
            ($w:expr, |$c:ident| $e:expr) => {
                for (d, $c) in dst.iter_mut().zip(bytes.chunks_exact($w)) {
                    *d = $e;
                }
            };
        }
        match self {
            Dtype::F32 => conv!(4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            Dtype::BF16 => conv!(2, |c| bf16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]))),
            Dtype::F16 => conv!(2, |c| f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]))),
            Dtype::F64 => conv!(8, |c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))
                as f32),
            Dtype::I64 => conv!(8, |c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))
                as f32),
            Dtype::U64 => conv!(8, |c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))
                as f32),
            Dtype::I32 => conv!(4, |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32),
            Dtype::U32 => conv!(4, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32),
            Dtype::I16 => conv!(2, |c| i16::from_le_bytes([c[0], c[1]]) as f32),
            Dtype::U16 => conv!(2, |c| u16::from_le_bytes([c[0], c[1]]) as f32),
            Dtype::I8 => conv!(1, |c| c[0] as i8 as f32),
            Dtype::U8 | Dtype::Bool => conv!(1, |c| c[0] as f32),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "F64" => Dtype::F64,
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "I16" => Dtype::I16,
            "I8" => Dtype::I8,
            "U64" => Dtype::U64,
            "U32" => Dtype::U32,
            "U16" => Dtype::U16,
            "U8" => Dtype::U8,
            "BOOL" => Dtype::Bool,
            other => {
                return Err(format!(
                    "dtype {other} is not supported (gmat stores F64, F32, F16, BF16 and integer tensors; \
                     FP8 and other quantized checkpoints need their scales applied first)"
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_each_dtype_to_f32() {
        let mut out = Vec::new();
        Dtype::BF16.extend_f32(&[0x80, 0x3f, 0x00, 0xc0], &mut out);
        Dtype::F16.extend_f32(&[0x00, 0x3c], &mut out);
        Dtype::I8.extend_f32(&[0xff], &mut out);
        Dtype::F64.extend_f32(&0.5f64.to_le_bytes(), &mut out);
        assert_eq!(out, vec![1.0, -2.0, 1.0, -1.0, 0.5]);
        assert!("F8_E4M3".parse::<Dtype>().is_err());
        assert_eq!("BF16".parse::<Dtype>(), Ok(Dtype::BF16));
    }
}
