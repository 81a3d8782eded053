//! A GGUF file as an import source: one file, or a split set (`NAME-00001-of-0000N.gguf`, as
//! `llama-gguf-split` writes it). Every file is checked by the strict GGUF reader (counts,
//! bounds, alignment, tensor layout, as ggml's `gguf_init_from_file` checks them) and the set
//! against its `split.*` keys, before any tensor is touched. Tensors are kept in the file's
//! order with their ggml types: floats and integers as their dtype, quantized tensors as their
//! ggml blocks ([`Dtype::Block`]), and the metadata (every key/value pair of the first file, the
//! tokenizer arrays included) is kept for export.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use super::dtype::Dtype;
use super::safetensors::{SafetensorsFile, SafetensorsTensor};
use crate::gguf::{Value, DEFAULT_ALIGNMENT, MAGIC};

/// The keys `llama-gguf-split` adds to every shard (`LLM_KV_SPLIT_*`, llama-arch.cpp); the
/// model's own metadata is the first shard's without them, as llama-quantize and
/// `llama-gguf-split --merge` read it.
pub const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];

/// An opened GGUF model.
pub struct GgufModel {
    /// The files, in shard order, with their tensors in file order.
    pub files: Vec<SafetensorsFile>,
    /// The metadata: the first file's key/value pairs in order (without the `split.*` keys of a
    /// split set).
    pub metadata: Vec<(String, Value)>,
}

/// Whether `path` is a GGUF file: a `.gguf` name or the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == MAGIC
}

/// The shard paths of a split set if `path` names one of its files
/// (`PREFIX-0000K-of-0000N.gguf`, `llama_split_path`'s pattern), in order.
pub fn split_paths(path: &Path) -> Option<Vec<PathBuf>> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    // PREFIX-%05d-of-%05d
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = head.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(count) || !digits(no) {
        return None;
    }
    let n: usize = count.parse().ok()?;
    if n == 0 {
        return None;
    }
    Some(
        (1..=n)
            .map(|i| path.with_file_name(format!("{prefix}-{i:05}-of-{n:05}.gguf")))
            .collect(),
    )
}

impl GgufModel {
    /// Opens `path`, and every other file of its split set when it names one.
    pub fn open(path: &Path) -> Result<GgufModel> {
        let paths = match split_paths(path) {
            Some(p) => {
                if let Some(missing) = p.iter().find(|p| !p.is_file()) {
                    bail!(
                        "{} is part of a split GGUF of {} files, but {} is missing",
                        path.display(),
                        p.len(),
                        missing.display()
                    );
                }
                p
            }
            None => vec![path.to_path_buf()],
        };
        let mut files = Vec::new();
        let mut metadata = Vec::new();
        let split = paths.len() > 1 || split_paths(path).is_some();
        let mut total = 0usize;
        let mut declared_total = None;
        for (i, p) in paths.iter().enumerate() {
            let (file, kv) = open_file(p)?;
            if split {
                let (no, count, tensors) = split_keys(&kv).with_context(|| {
                    format!(
                        "{} is named as shard {} of {} of a split GGUF",
                        p.display(),
                        i + 1,
                        paths.len()
                    )
                })?;
                if no as usize != i || count as usize != paths.len() {
                    bail!(
                        "{}: split.no = {no} and split.count = {count}, but its name makes it \
                         shard {} of {} (split.no counts from 0)",
                        p.display(),
                        i + 1,
                        paths.len()
                    );
                }
                match declared_total {
                    None => declared_total = Some(tensors),
                    Some(t) if t != tensors => bail!(
                        "{}: split.tensors.count = {tensors}, but the first shard says {t}",
                        p.display()
                    ),
                    _ => {}
                }
            }
            total += file.tensors.len();
            if i == 0 {
                metadata = kv
                    .into_iter()
                    .filter(|(k, _)| !split || !SPLIT_KEYS.contains(&k.as_str()))
                    .collect();
            }
            files.push(file);
        }
        if let Some(t) = declared_total {
            if t as usize != total {
                bail!(
                    "split GGUF {}: split.tensors.count = {t}, but its {} files hold {total} \
                     tensors",
                    paths[0].display(),
                    paths.len()
                );
            }
        }
        let mut seen = std::collections::HashMap::new();
        for f in &files {
            for t in &f.tensors {
                if let Some(first) = seen.insert(t.name.as_str(), &f.path) {
                    bail!(
                        "tensor {} is in both {} and {}",
                        t.name,
                        first.display(),
                        f.path.display()
                    );
                }
            }
        }
        if !metadata
            .iter()
            .any(|(k, v)| k == "general.architecture" && matches!(v, Value::String(_)))
        {
            bail!(
                "{} has no general.architecture string: not a model GGUF llama.cpp can load",
                paths[0].display()
            );
        }
        Ok(GgufModel { files, metadata })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Maps and checks one GGUF file; its tensors as byte ranges of the file.
fn open_file(path: &Path) -> Result<(SafetensorsFile, Vec<(String, Value)>)> {
    let file = crate::fsio::open_input(path)?;
    // SAFETY: read-only map of a file gmat does not modify; a file changed underneath us is
    // caught by the content hash recorded at import.
    let map =
        unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
    let bad = || format!("{} is not a valid GGUF file", path.display());
    let (_version, metadata, infos, data_offset, alignment) =
        crate::gguf::reader::parse(&map).with_context(bad)?;
    if alignment != DEFAULT_ALIGNMENT {
        bail!(
            "{}: key general.alignment is {alignment}; gmat writes GGUFs with the default \
             alignment of {DEFAULT_ALIGNMENT} only",
            path.display()
        );
    }
    let mut tensors = Vec::with_capacity(infos.len());
    for t in infos {
        let dtype = Dtype::from_ggml(t.ggml_type).with_context(|| {
            format!(
                "{}: tensor {} has type {}, which gmat cannot store",
                path.display(),
                t.name,
                t.ggml_type
            )
        })?;
        // checked by the reader: the data lies inside the file
        let start = (data_offset + t.offset) as usize;
        let len = t.n_bytes().unwrap_or(0) as usize;
        tensors.push(SafetensorsTensor {
            shape: t.dims.iter().rev().copied().collect(),
            name: t.name,
            dtype,
            range: start..start + len,
        });
    }
    Ok((SafetensorsFile::mapped(path, map, tensors), metadata))
}

/// A shard's `split.no`, `split.count` (u16) and `split.tensors.count` (i32, as
/// llama-gguf-split writes them).
fn split_keys(kv: &[(String, Value)]) -> Result<(u16, u16, i32)> {
    let get = |k: &str| kv.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let u16_of = |k: &str| match get(k) {
        Some(Value::U16(v)) => Ok(*v),
        Some(v) => bail!("key {k} is {v:?}, expected a u16"),
        None => bail!("key {k} is missing"),
    };
    let tensors = match get("split.tensors.count") {
        Some(Value::I32(v)) if *v >= 0 => *v,
        Some(v) => bail!("key split.tensors.count is {v:?}, expected a non-negative i32"),
        None => bail!("key split.tensors.count is missing"),
    };
    Ok((u16_of("split.no")?, u16_of("split.count")?, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, GgufHeader};

    fn write(path: &Path, kv: Vec<(String, Value)>, tensors: &[(&str, Vec<u64>, GgmlType)]) {
        let mut h = GgufHeader {
            metadata: kv,
            tensors: Vec::new(),
        };
        for (n, d, t) in tensors {
            h.push_tensor(n.to_string(), d.clone(), *t);
        }
        let mut bytes = h.to_bytes();
        let n = bytes.len();
        bytes.resize(n + h.data_size() as usize, 0);
        for (i, b) in bytes[n..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        std::fs::write(path, bytes).unwrap();
    }

    fn arch() -> (String, Value) {
        ("general.architecture".into(), Value::String("llama".into()))
    }

    #[test]
    fn split_names() {
        let p = split_paths(Path::new("/a/m-Q4-00002-of-00003.gguf")).unwrap();
        assert_eq!(p[0], Path::new("/a/m-Q4-00001-of-00003.gguf"));
        assert_eq!(p[2], Path::new("/a/m-Q4-00003-of-00003.gguf"));
        assert!(split_paths(Path::new("/a/m.gguf")).is_none());
        assert!(split_paths(Path::new("/a/m-1-of-2.gguf")).is_none());
    }

    #[test]
    fn opens_a_file_with_block_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        write(
            &p,
            vec![arch()],
            &[
                ("a", vec![256, 2], GgmlType::Q4_K),
                ("b", vec![3], GgmlType::F32),
            ],
        );
        let m = GgufModel::open(&p).unwrap();
        let t = &m.files[0].tensors;
        assert_eq!(t[0].name, "a");
        assert_eq!(t[0].dtype, Dtype::Block(GgmlType::Q4_K));
        assert_eq!(t[0].shape, vec![2, 256]);
        assert_eq!(t[0].range.len(), 288);
        assert_eq!(t[1].shape, vec![3]);
        assert!(is_gguf(&p));
    }

    #[test]
    fn split_sets_are_checked_against_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let shard = |i: u16, n: u16, total: i32, with_arch: bool| {
            let mut kv = Vec::new();
            if with_arch {
                kv.push(arch());
            }
            kv.push(("split.no".into(), Value::U16(i)));
            kv.push(("split.count".into(), Value::U16(n)));
            kv.push(("split.tensors.count".into(), Value::I32(total)));
            kv
        };
        let p1 = dir.path().join("m-00001-of-00002.gguf");
        let p2 = dir.path().join("m-00002-of-00002.gguf");
        write(&p1, shard(0, 2, 2, true), &[("a", vec![4], GgmlType::F32)]);
        write(&p2, shard(1, 2, 2, false), &[("b", vec![4], GgmlType::F16)]);
        let m = GgufModel::open(&p2).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.metadata, vec![arch()]);
        // a wrong total names the key
        write(&p2, shard(1, 2, 3, false), &[("b", vec![4], GgmlType::F16)]);
        let e = format!("{:#}", GgufModel::open(&p1).err().unwrap());
        assert!(e.contains("split.tensors.count"), "{e}");
        std::fs::remove_file(&p2).unwrap();
        let e = format!("{:#}", GgufModel::open(&p1).err().unwrap());
        assert!(e.contains("is missing"), "{e}");
    }

    #[test]
    fn bad_headers_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        write(
            &p,
            vec![arch(), ("general.alignment".into(), Value::U32(64))],
            &[("a", vec![4], GgmlType::F32)],
        );
        // room for the data at the 64-byte alignment the key announces
        let mut b = std::fs::read(&p).unwrap();
        b.resize(b.len() + 64, 0);
        std::fs::write(&p, b).unwrap();
        let e = format!("{:#}", GgufModel::open(&p).err().unwrap());
        assert!(
            e.contains("m.gguf") && e.contains("general.alignment"),
            "{e}"
        );
        write(&p, vec![arch(), arch()], &[("a", vec![4], GgmlType::F32)]);
        let e = format!("{:#}", GgufModel::open(&p).err().unwrap());
        assert!(e.contains("duplicate key") && e.contains("m.gguf"), "{e}");
        write(&p, vec![], &[("a", vec![4], GgmlType::F32)]);
        let e = format!("{:#}", GgufModel::open(&p).err().unwrap());
        assert!(e.contains("general.architecture"), "{e}");
    }
}
