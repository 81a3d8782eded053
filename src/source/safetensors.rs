//! Memory-mapped safetensors files, validated strictly before any tensor is touched.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use safetensors::SafeTensors;

use super::dtype::Dtype;

/// One tensor inside a safetensors file.
#[derive(Clone, Debug)]
pub struct SafetensorsTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Byte range of the data within the file.
    pub range: Range<usize>,
}

/// An open safetensors file.
pub struct SafetensorsFile {
    pub path: PathBuf,
    /// Tensors sorted by name: the order `convert_hf_to_gguf.py` visits them in (a GGUF's in
    /// its own order).
    pub tensors: Vec<SafetensorsTensor>,
    map: Mmap,
}

impl SafetensorsFile {
    /// Maps and validates `path`: header length and JSON, dtypes, shapes against byte counts,
    /// offsets contiguous and inside the file (the safetensors crate's checks), and nothing left
    /// over at the end.
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let file = crate::fsio::open_input(path)?;
        // SAFETY: read-only map of a file gmat does not modify; a file changed underneath us is
        // caught by the content hash recorded at import.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        let tensors = parse_header(&map)
            .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            tensors,
            map,
        })
    }

    /// A mapped weight file of another format whose tensors the caller has checked to lie
    /// inside it (a GGUF's data section: [`super::gguf_model`]).
    pub(crate) fn mapped(path: &Path, map: Mmap, tensors: Vec<SafetensorsTensor>) -> Self {
        SafetensorsFile {
            path: path.to_path_buf(),
            tensors,
            map,
        }
    }

    /// Gives back the resident pages of a byte range of the file once consumed.
    pub fn release(&self, range: Range<usize>) {
        crate::mapped::release(&self.map, range);
    }

    /// Content hash of a tensor's bytes, releasing pages as it goes.
    pub fn hash(&self, t: &SafetensorsTensor) -> String {
        crate::content_hash::format(crate::mapped::hash_releasing(&self.map, t.range.clone()))
    }

    /// The raw little-endian bytes of a tensor.
    pub fn data(&self, t: &SafetensorsTensor) -> &[u8] {
        &self.map[t.range.clone()]
    }
}

/// Validates the header of the safetensors file `buf` and lists its tensors, sorted by name.
pub fn parse_header(buf: &[u8]) -> Result<Vec<SafetensorsTensor>> {
    if let Some(name) = duplicate_name(buf) {
        bail!("tensor {name} is listed twice in its header");
    }
    let (header_len, meta) =
        SafeTensors::read_metadata(buf).map_err(|e| anyhow!("{}", describe(&e, buf.len())))?;
    let data_start = 8 + header_len;
    let mut tensors = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype: Dtype = format!("{:?}", info.dtype)
            .parse()
            .map_err(|e: String| anyhow!("tensor {name}: {e}"))?;
        let (s, e) = info.data_offsets;
        let range = data_start
            .checked_add(s)
            .zip(data_start.checked_add(e))
            .filter(|(s, e)| s <= e && *e <= buf.len())
            .with_context(|| format!("tensor {name} runs past the end of the file"))?;
        tensors.push(SafetensorsTensor {
            name,
            dtype,
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            range: range.0..range.1,
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tensors)
}

/// The first name listed twice in a safetensors header (which the safetensors crate would
/// silently collapse, then report as bad offsets), if the header is readable JSON.
pub fn duplicate_name(buf: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Dup;
    impl<'de> Visitor<'de> for Dup {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<IgnoredAny>()?;
                if !seen.insert(k.clone()) {
                    return Ok(Some(k));
                }
            }
            Ok(None)
        }
    }
    let n = usize::try_from(u64::from_le_bytes(buf.get(..8)?.try_into().ok()?)).ok()?;
    let header = buf.get(8..8usize.checked_add(n)?)?;
    let mut de = serde_json::Deserializer::from_slice(header);
    de.deserialize_map(Dup).ok().flatten()
}

/// Writes a safetensors file of (name, dtype, shape, bytes) tensors, data in the given order.
/// Used to build test models and fixtures.
pub fn write_file<N: AsRef<str>, D: AsRef<str>>(
    path: &Path,
    tensors: &[(N, D, Vec<u64>, Vec<u8>)],
) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.as_ref().to_string(),
            serde_json::json!({"dtype": dtype.as_ref(), "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&header)?;
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out)
}

fn describe(e: &safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => format!("file of {file_len} bytes is too small to hold a header"),
        E::InvalidHeaderLength => {
            "the header length runs past the end of the file (truncated?)".into()
        }
        E::MetadataIncompleteBuffer => {
            "tensor data offsets do not match the file size (truncated or padded file)".into()
        }
        E::InvalidOffset(name) => {
            format!("tensor {name} has data offsets outside the data section")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) {
        write_file(path, tensors).unwrap();
    }

    #[test]
    fn reads_sorted_tensors_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        write_safetensors(
            &p,
            &[
                (
                    "b",
                    "F32",
                    vec![2],
                    [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                ("a", "BF16", vec![1], vec![0x80, 0x3f]),
            ],
        );
        let f = SafetensorsFile::open(&p).unwrap();
        assert_eq!(
            f.tensors
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(f.data(&f.tensors[0]), &[0x80, 0x3f]);
        assert_eq!(f.tensors[1].dtype, Dtype::F32);
    }

    #[test]
    fn rejects_truncated_and_out_of_range_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        write_safetensors(&p, &[("a", "F32", vec![4], vec![0; 16])]);
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() - 4]).unwrap();
        let e = format!("{:#}", SafetensorsFile::open(&p).err().unwrap());
        assert!(e.contains("m.safetensors") && e.contains("offsets"), "{e}");
        std::fs::write(&p, &full[..5]).unwrap();
        assert!(SafetensorsFile::open(&p).is_err());
        // header claims more bytes than the file has
        let mut bad = full.clone();
        bad[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&p, &bad).unwrap();
        assert!(SafetensorsFile::open(&p).is_err());
        // offsets past the data
        let h = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,64]}}"#;
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h);
        out.extend_from_slice(&[0; 16]);
        std::fs::write(&p, &out).unwrap();
        assert!(SafetensorsFile::open(&p).is_err());
    }
}
