//! Element types of source tensors, and their conversion to f32.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::gguf::GgmlType;
use crate::quant::rounding::{bf16_bits_to_f32, f16_bits_to_f32};

/// A tensor element type as safetensors names it, or a ggml block type of a tensor imported
/// from a GGUF. gmat stores any of these losslessly; export converts them to f32 first, as
/// `convert_hf_to_gguf.py` does (`data_torch.to(torch.float32)`), or, for ggml blocks, as
/// llama-quantize does (ggml's `to_float`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    Bool,
    /// FP8 with 4 exponent bits, no infinities (`float8_e4m3fn`), as DeepSeek-V3 ships.
    F8E4M3,
    /// FP8 with 5 exponent bits (`float8_e5m2`): the top byte of an IEEE half.
    F8E5M2,
    /// Blocks of a quantized ggml type (`Q4_K`, ...), as a GGUF holds them: the bytes of a row
    /// are its blocks, so a tensor's size is counted in blocks, not elements
    /// ([`Dtype::bytes_for`]). Spelled as ggml names the type.
    Block(GgmlType),
}

impl Serialize for Dtype {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Dtype {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Dtype {
    /// Bytes per element; for ggml blocks 1, the unit their bytes are handled in (byte
    /// planes, chunks): use [`Dtype::bytes_for`] for sizes.
    pub fn size(self) -> usize {
        match self {
            Dtype::Block(_) => 1,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
        }
    }

    /// Bytes of a tensor of this type with `shape` (outermost first), or `None` when the size
    /// overflows or, for ggml blocks, the innermost dimension is not a whole number of blocks.
    pub fn bytes_for(self, shape: &[u64]) -> Option<u64> {
        match self {
            Dtype::Block(t) => {
                let (&row, outer) = shape.split_last()?;
                outer
                    .iter()
                    .try_fold(t.row_bytes(row)?, |a, &d| a.checked_mul(d))
            }
            _ => shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))?
                .checked_mul(self.size() as u64),
        }
    }

    /// The dtype a GGUF tensor of type `t` is stored as (`None` for types gmat cannot hold).
    pub fn from_ggml(t: GgmlType) -> Option<Dtype> {
        Some(match t {
            GgmlType::F32 => Dtype::F32,
            GgmlType::F16 => Dtype::F16,
            GgmlType::BF16 => Dtype::BF16,
            GgmlType::F64 => Dtype::F64,
            GgmlType::I8 => Dtype::I8,
            GgmlType::I16 => Dtype::I16,
            GgmlType::I32 => Dtype::I32,
            GgmlType::I64 => Dtype::I64,
            t if t.is_quantized() => Dtype::Block(t),
            _ => return None,
        })
    }

    /// The ggml type of a tensor stored as this dtype, for the types a GGUF can hold as they
    /// are.
    pub fn ggml_type(self) -> Option<GgmlType> {
        Some(match self {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            Dtype::F64 => GgmlType::F64,
            Dtype::I8 => GgmlType::I8,
            Dtype::I16 => GgmlType::I16,
            Dtype::I32 => GgmlType::I32,
            Dtype::I64 => GgmlType::I64,
            Dtype::Block(t) => t,
            _ => return None,
        })
    }

    /// The safetensors spelling (ggml's name for ggml blocks).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Block(t) => t.name(),
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
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
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
            Dtype::F16 => {
                // `half`'s slice conversion runs eight values per F16C instruction where the
                // CPU has it (detected at run time); f16 to f32 is exact on every path.
                use half::slice::HalfFloatSliceExt;
                let mut bits = [half::f16::ZERO; 256];
                for (d, c) in dst.chunks_mut(256).zip(bytes.chunks(512)) {
                    let h = &mut bits[..d.len()];
                    for (b, p) in h.iter_mut().zip(c.chunks_exact(2)) {
                        *b = half::f16::from_bits(u16::from_le_bytes([p[0], p[1]]));
                    }
                    h.convert_to_f32_slice(d);
                }
            }
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
            Dtype::F8E4M3 => {
                let table = f8_e4m3_table();
                conv!(1, |c| table[c[0] as usize])
            }
            Dtype::F8E5M2 => conv!(1, |c| f16_bits_to_f32((c[0] as u16) << 8)),
            Dtype::Block(t) => {
                // whole blocks: ggml's to_float (`dequantize_row_*`) of each
                let bs = t.block_size();
                let whole = bytes.len() / t.type_size();
                out.resize(start + whole * bs, 0.0);
                if let Some(codec) = crate::quant::codec(t) {
                    codec.dequantize_row(&bytes[..whole * t.type_size()], &mut out[start..]);
                }
            }
        }
    }
}

/// `float8_e4m3fn` → f32 for every byte: sign, 4 exponent bits (bias 7), 3 mantissa bits;
/// exponent 0 is subnormal (`m/8 · 2^-6`), `S.1111.111` is NaN, there are no infinities (the
/// OCP FP8 format torch implements). Every value is exact in f32.
fn f8_e4m3_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0f32; 256];
        for (b, v) in t.iter_mut().enumerate() {
            let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
            let (e, m) = ((b >> 3) & 0xf, (b & 7) as f32);
            *v = if e == 0xf && b & 7 == 7 {
                f32::NAN
            } else if e == 0 {
                sign * m / 8.0 * 2f32.powi(-6)
            } else {
                sign * (1.0 + m / 8.0) * 2f32.powi(e as i32 - 7)
            };
        }
        t
    })
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
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            other => match other.parse::<GgmlType>() {
                Ok(t) if t.is_quantized() => Dtype::Block(t),
                _ => {
                    return Err(format!(
                        "dtype {other} is not supported (gmat stores F64, F32, F16, BF16, F8_E4M3, \
                         F8_E5M2, integer tensors and quantized ggml blocks)"
                    ))
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_values_are_torchs() {
        // float8_e4m3fn: values read from torch (`torch.arange(256, dtype=uint8)
        // .view(torch.float8_e4m3fn).float()`): 0x01 = 2^-9, 0x7e = 448, 0x7f = NaN, 0x80 = -0.
        let mut out = Vec::new();
        Dtype::F8E4M3.extend_f32(&[0x00, 0x01, 0x08, 0x38, 0x7e, 0xfe, 0x80], &mut out);
        assert_eq!(
            out,
            [0.0, 2f32.powi(-9), 2f32.powi(-6), 1.0, 448.0, -448.0, -0.0]
        );
        assert!(out[6].is_sign_negative());
        out.clear();
        Dtype::F8E4M3.extend_f32(&[0x7f, 0xff], &mut out);
        assert!(out.iter().all(|v| v.is_nan()));
        // float8_e5m2: 0x7c = inf, 0x01 = 2^-16, 0x3c = 1
        out.clear();
        Dtype::F8E5M2.extend_f32(&[0x7c, 0x01, 0x3c], &mut out);
        assert_eq!(out, [f32::INFINITY, 2f32.powi(-16), 1.0]);
        assert_eq!("F8_E4M3".parse::<Dtype>(), Ok(Dtype::F8E4M3));
    }

    #[test]
    fn converts_each_dtype_to_f32() {
        let mut out = Vec::new();
        Dtype::BF16.extend_f32(&[0x80, 0x3f, 0x00, 0xc0], &mut out);
        Dtype::F16.extend_f32(&[0x00, 0x3c], &mut out);
        Dtype::I8.extend_f32(&[0xff], &mut out);
        Dtype::F64.extend_f32(&0.5f64.to_le_bytes(), &mut out);
        assert_eq!(out, vec![1.0, -2.0, 1.0, -1.0, 0.5]);
        assert!("F8_E8M0".parse::<Dtype>().is_err());
        assert_eq!("BF16".parse::<Dtype>(), Ok(Dtype::BF16));
    }

    /// The batched F16 path (F16C where present) gives the bits of the one-value conversion
    /// for every f16, NaN payloads included, also when a run ends mid-batch.
    #[test]
    fn every_f16_converts_as_one_value_does() {
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        for cut in [bytes.len(), bytes.len() - 2 * 37] {
            let mut out = vec![7.0f32];
            Dtype::F16.extend_f32(&bytes[..cut], &mut out);
            assert_eq!(out.len(), 1 + cut / 2);
            for (h, v) in (0..=u16::MAX).zip(&out[1..]) {
                assert_eq!(v.to_bits(), f16_bits_to_f32(h).to_bits(), "f16 {h:#06x}");
            }
        }
    }
}
