//! Serialises a GGUF header (key/values and tensor infos) whose tensor data offsets are all
//! known in advance, so tensor data can be written in place afterwards.

use super::value::Value;
use super::GgmlType;
use super::{align_up, DEFAULT_ALIGNMENT, MAGIC, VERSION};

/// One tensor as it appears in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        // Saturating: a file's dims are checked by the reader before anything is sized by them.
        self.dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Bytes of data, or `None` if the row length does not fit the type's blocks or the size
    /// does not fit a u64.
    pub fn n_bytes(&self) -> Option<u64> {
        let row = self.ggml_type.row_bytes(*self.dims.first()?)?;
        self.dims[1..]
            .iter()
            .try_fold(row, |a, &d| a.checked_mul(d))
    }
}

/// A complete header: metadata plus tensor infos, with offsets assigned in order.
#[derive(Clone, Debug, Default)]
pub struct GgufHeader {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
}

impl GgufHeader {
    /// Appends a tensor after the previous one, aligned like gguf-py and ggml do, and returns
    /// its offset in the data section.
    pub fn push_tensor(&mut self, name: String, dims: Vec<u64>, ggml_type: GgmlType) -> u64 {
        let offset = match self.tensors.last() {
            Some(prev) => align_up(prev.offset + prev.n_bytes().unwrap_or(0), DEFAULT_ALIGNMENT),
            None => 0,
        };
        self.tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
        offset
    }

    /// Size of the data section, the last tensor padded to the alignment.
    pub fn data_size(&self) -> u64 {
        self.tensors
            .last()
            .map(|t| align_up(t.offset + t.n_bytes().unwrap_or(0), DEFAULT_ALIGNMENT))
            .unwrap_or(0)
    }

    /// The serialised header, padded so the data section starts aligned.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_str(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            write_value(&mut out, value);
        }
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        let padded = align_up(out.len() as u64, DEFAULT_ALIGNMENT) as usize;
        out.resize(padded, 0);
        out
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => write_str(out, s),
        Value::Array(elem, items) => {
            out.extend_from_slice(&(*elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                debug_assert_eq!(item.value_type(), *elem);
                write_value(out, item);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
