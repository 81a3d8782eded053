//! A strict GGUF reader: every length and offset is checked against the file before use.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use super::value::{Value, ValueType};
use super::writer::TensorInfo;
use super::GgmlType;
use super::{align_up, DEFAULT_ALIGNMENT, MAGIC};

/// Upper bound on counts read from a header, so a corrupt count fails fast instead of
/// allocating without limit.
const MAX_COUNT: u64 = 1 << 28;

/// A memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// The data alignment (`general.alignment`, else 32).
    pub alignment: u64,
    map: Mmap,
}

impl GgufFile {
    /// Opens and validates `path`.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = crate::fsio::open_input(path)?;
        // SAFETY: the map is read-only; gmat never writes files it is reading.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        let parsed =
            parse(&map).with_context(|| format!("{} is not a valid GGUF file", path.display()))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: parsed.0,
            metadata: parsed.1,
            tensors: parsed.2,
            data_offset: parsed.3,
            alignment: parsed.4,
            map,
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        let len = t.n_bytes().unwrap_or(0) as usize;
        &self.map[start..start + len]
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            bail!(
                "unexpected end of file at byte {} (wanted {n} more bytes)",
                self.pos
            );
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn count(&mut self, what: &str) -> Result<u64> {
        let n = self.u64()?;
        if n > MAX_COUNT || n as usize > self.buf.len() {
            bail!("{what} {n} is larger than the file allows");
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.count("string length")? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).context("string is not UTF-8")
    }
    fn value(&mut self, t: ValueType, depth: u32) -> Result<Value> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.u8()?),
            ValueType::I8 => Value::I8(self.u8()? as i8),
            ValueType::U16 => Value::U16(self.u16()?),
            ValueType::I16 => Value::I16(self.u16()? as i16),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(self.u32()? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32()?)),
            ValueType::Bool => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("bool value {b} is neither 0 nor 1"),
            },
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(self.u64()? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64()?)),
            ValueType::Array => {
                if depth > 4 {
                    bail!("arrays nested too deeply");
                }
                let elem = self.value_type()?;
                let n = self.count("array length")?;
                let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
    fn value_type(&mut self) -> Result<ValueType> {
        let id = self.u32()?;
        ValueType::from_id(id).with_context(|| format!("unknown value type {id}"))
    }
}

type Parsed = (u32, Vec<(String, Value)>, Vec<TensorInfo>, u64, u64);

/// `GGML_MAX_NAME` (ggml.h): tensor names are held in 64 bytes with the terminating zero.
const MAX_NAME: usize = 64;

/// Parses and checks a whole GGUF file held in `buf`.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed> {
    let mut c = Cursor { buf, pos: 0 };
    if c.take(4)? != MAGIC {
        bail!("bad magic (not GGUF)");
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        bail!("unsupported GGUF version {version}");
    }
    let n_tensors = c.count("tensor count")?;
    let n_kv = c.count("key/value count")?;
    let mut metadata = Vec::with_capacity(n_kv.min(1 << 16) as usize);
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut keys = HashSet::new();
    for i in 0..n_kv {
        let key = c.string().with_context(|| format!("key {i}"))?;
        if key.is_empty() {
            bail!("key {i} is empty");
        }
        if !keys.insert(key.clone()) {
            bail!("duplicate key {key:?}");
        }
        let t = c.value_type().with_context(|| format!("key {key}"))?;
        let v = c.value(t, 0).with_context(|| format!("key {key}"))?;
        if key == "general.alignment" {
            // gguf.cpp: a u32, a power of two
            alignment = match v {
                Value::U32(a) if a.is_power_of_two() => a as u64,
                _ => bail!("key general.alignment is {v:?}; it must be a u32 power of two"),
            };
        }
        metadata.push((key, v));
    }
    let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = c.string().with_context(|| format!("tensor {i}: name"))?;
        if name.len() >= MAX_NAME {
            bail!(
                "tensor {i}: name {name:?} is {} bytes; ggml holds at most {}",
                name.len(),
                MAX_NAME - 1
            );
        }
        if !names.insert(name.clone()) {
            bail!("duplicate tensor name {name:?} (tensor {i})");
        }
        let n_dims = c.u32().with_context(|| format!("tensor {name}"))?;
        if n_dims == 0 || n_dims > 4 {
            bail!("tensor {name}: {n_dims} dimensions (GGUF holds 1 to 4)");
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = c.u64().with_context(|| format!("tensor {name}"))?;
            // gguf.cpp reads int64 dimensions and refuses negative ones
            if d > i64::MAX as u64 {
                bail!("tensor {name}: dimension {d} is negative as ggml reads it");
            }
            dims.push(d);
        }
        let tid = c.u32()?;
        let ggml_type = GgmlType::from_id(tid)
            .with_context(|| format!("tensor {name}: unknown type id {tid}"))?;
        let offset = c.u64()?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let data_offset = align_up(c.pos as u64, alignment);
    // gguf.cpp: tensor data follows the infos' order, each tensor padded to the alignment
    let mut expected_offset = 0u64;
    for t in &tensors {
        t.dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .with_context(|| format!("tensor {}: element count overflows", t.name))?;
        let bytes = t.n_bytes().with_context(|| {
            format!(
                "tensor {}: row of {} does not fit {}",
                t.name, t.dims[0], t.ggml_type
            )
        })?;
        if t.offset != expected_offset {
            bail!(
                "tensor {} has data offset {}, expected {} (ggml refuses tensors out of order or \
                 misaligned)",
                t.name,
                t.offset,
                expected_offset
            );
        }
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(bytes))
            .with_context(|| format!("tensor {}: offset overflows", t.name))?;
        if end > buf.len() as u64 {
            bail!("tensor {}: data runs past the end of the file", t.name);
        }
        expected_offset = bytes
            .checked_add(alignment - 1)
            .map(|b| b / alignment * alignment)
            .and_then(|b| b.checked_add(expected_offset))
            .with_context(|| format!("tensor {}: size overflows", t.name))?;
    }
    Ok((version, metadata, tensors, data_offset, alignment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::writer::GgufHeader;

    #[test]
    fn header_round_trips_through_reader() {
        let mut h = GgufHeader::default();
        h.metadata
            .push(("general.architecture".into(), Value::String("llama".into())));
        h.metadata.push(("llama.block_count".into(), Value::U32(4)));
        h.metadata.push(("x.f".into(), Value::F32(1e-5)));
        h.metadata.push(("x.b".into(), Value::Bool(true)));
        h.metadata
            .push(("tokenizer.ggml.tokens".into(), Value::strings(["a", "b"])));
        h.metadata.push((
            "x.nested".into(),
            Value::Array(ValueType::Array, vec![Value::i32s([1, 2])]),
        ));
        let o1 = h.push_tensor("a".into(), vec![3], GgmlType::F32);
        let o2 = h.push_tensor("b".into(), vec![32, 2], GgmlType::Q8_0);
        assert_eq!((o1, o2), (0, 32));
        let mut bytes = h.to_bytes();
        assert_eq!(bytes.len() % 32, 0);
        bytes.resize(bytes.len() + h.data_size() as usize, 7);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        std::fs::write(&p, &bytes).unwrap();
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.metadata, h.metadata);
        assert_eq!(f.tensors, h.tensors);
        assert_eq!(f.tensor_data(f.tensor("b").unwrap()).len(), 68);
    }

    #[test]
    fn truncated_file_is_rejected() {
        let mut h = GgufHeader::default();
        h.metadata.push(("k".into(), Value::String("v".into())));
        h.push_tensor("a".into(), vec![8], GgmlType::F32);
        let bytes = h.to_bytes();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        std::fs::write(&p, &bytes).unwrap(); // no data section
        let err = GgufFile::open(&p).err().unwrap();
        assert!(format!("{err:#}").contains("past the end"), "{err:#}");
        std::fs::write(&p, &bytes[..20]).unwrap();
        assert!(GgufFile::open(&p).is_err());
    }
}
