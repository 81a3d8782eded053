//! Shared helpers for the end-to-end tests: running the real binary, writing tiny models, and a
//! GGUF parity check that mirrors `../shared/reference/gguf_parity.py`.
#![allow(dead_code)]

pub mod garage;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gmat::gguf::{GgufFile, Value};

/// Keys that are cosmetic (model-card fields and names) or gmat's own provenance; every other
/// key must match the reference (the list of the reference README).
pub const IGNORED_KEY_PATTERN: &str = r"^gmat\.";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[allow(unused_imports)]
pub use gmat::testkit::kit;

/// Runs gmat with `args`.
///
/// The quantized-tensor cache is off (`GMAT_CACHE_SIZE=0`) unless a test turns it on with its
/// own environment: a warm cache would skip reading the store, which the corruption tests rely
/// on, and tests must not write into the user's cache folder.
pub fn gmat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gmat"))
        .env("GMAT_CACHE_SIZE", "0")
        .args(args)
        .output()
        .expect("gmat runs")
}

/// Runs gmat with extra environment variables and panics unless it succeeds.
pub fn gmat_ok_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_gmat"))
        .env("GMAT_CACHE_SIZE", "0")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("gmat runs");
    assert!(
        out.status.success(),
        "gmat {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs gmat and panics with its stderr unless it succeeds.
pub fn gmat_ok(args: &[&str]) -> Output {
    let out = gmat(args);
    assert!(
        out.status.success(),
        "gmat {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs gmat, expects exit code 1 and returns stderr.
pub fn gmat_err(args: &[&str]) -> String {
    let out = gmat(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "gmat {:?} should fail with exit code 1",
        args
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Compares two GGUF files like gguf_parity.py: same keys (minus ignored ones) with the same
/// types and values, same tensor names, types, shapes and bytes. Returns the differences.
pub fn parity(ours: &Path, theirs: &Path) -> Vec<String> {
    let ignore = regex::Regex::new(IGNORED_KEY_PATTERN).unwrap();
    let a = GgufFile::open(ours).unwrap();
    let b = GgufFile::open(theirs).unwrap();
    let mut diffs = Vec::new();
    let keys = |f: &GgufFile| -> std::collections::BTreeMap<String, Value> {
        f.metadata
            .iter()
            .filter(|(k, _)| !ignore.is_match(k))
            .cloned()
            .collect()
    };
    let (ka, kb) = (keys(&a), keys(&b));
    for (k, v) in &ka {
        match kb.get(k) {
            None => diffs.push(format!("key only in ours: {k}")),
            Some(w) if w != v => diffs.push(format!("key differs: {k}: ours {v} | theirs {w}")),
            _ => {}
        }
    }
    for k in kb.keys().filter(|k| !ka.contains_key(*k)) {
        diffs.push(format!("key only in theirs: {k}"));
    }
    for t in &a.tensors {
        match b.tensor(&t.name) {
            None => diffs.push(format!("tensor only in ours: {}", t.name)),
            Some(u) if u.ggml_type != t.ggml_type => diffs.push(format!(
                "type differs: {}: {} vs {}",
                t.name, t.ggml_type, u.ggml_type
            )),
            Some(u) if u.dims != t.dims => diffs.push(format!("shape differs: {}", t.name)),
            Some(u) if a.tensor_data(t) != b.tensor_data(u) => {
                diffs.push(format!("data differs: {}", t.name))
            }
            _ => {}
        }
    }
    for u in &b.tensors {
        if a.tensor(&u.name).is_none() {
            diffs.push(format!("tensor only in theirs: {}", u.name));
        }
    }
    diffs
}

/// Asserts parity, listing the first differences.
pub fn assert_parity(ours: &Path, theirs: &Path) {
    let d = parity(ours, theirs);
    assert!(
        d.is_empty(),
        "{} differs from {}:\n{}",
        ours.display(),
        theirs.display(),
        d[..d.len().min(20)].join("\n")
    );
}

/// Writes a safetensors file from (name, dtype, shape, bytes), in the given order.
pub fn write_safetensors(path: &Path, tensors: &[(String, String, Vec<u64>, Vec<u8>)]) {
    gmat::source::safetensors::write_file(path, tensors).unwrap();
}

/// Reads every tensor of a safetensors file as (name, dtype, shape, bytes).
pub fn read_safetensors(path: &Path) -> Vec<(String, String, Vec<u64>, Vec<u8>)> {
    let buf = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&buf[8..8 + n]).unwrap();
    let mut out = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let off = info["data_offsets"].as_array().unwrap();
        let (s, e) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        let shape = info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        out.push((
            name,
            info["dtype"].as_str().unwrap().to_string(),
            shape,
            buf[8 + n + s..8 + n + e].to_vec(),
        ));
    }
    out
}

/// Copies the small side files (config, tokenizer) of an HF folder.
pub fn copy_side_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".safetensors") && !name.ends_with(".index.json") {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

/// The deterministic tensor values of the arch fixtures (tools/make_arch_fixtures.py
/// `fixture_bits` is the Python twin; keep both identical): `n` little-endian values of the
/// safetensors dtype `dtype` for the tensor `name`.
///
/// Seed: FNV-1a 64 of the name's UTF-8 bytes (1 if that is 0). Per element, xorshift64*
/// (`x ^= x >> 12; x ^= x << 25; x ^= x >> 27; r = x * 0x2545F4914F6CDD1D`), then with
/// `sign = r >> 63`, `e = (r >> 59) & 7`: BF16 bits `sign << 15 | (119 + e) << 7 | (r >> 32) & 0x7f`,
/// F16 bits `sign << 15 | (7 + e) << 10 | (r >> 32) & 0x3ff`, F32 bits = the BF16 bits << 16,
/// F8_E4M3 bits `sign << 7 | (e % 6 + 4) << 3 | (r >> 32) & 7` (never NaN), U8 (MXFP4 codes)
/// `(r >> 32) & 0xff`, or `119 + e` for a tensor named `*_scales` (E8M0 exponents).
/// All finite, magnitudes about 2^-8 .. 2^0 (F8_E4M3: 2^-3 .. 2^3).
pub fn fixture_values(name: &str, dtype: &str, n: usize) -> Vec<u8> {
    let mut x = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    if x == 0 {
        x = 1;
    }
    let width = match dtype {
        "F8_E4M3" | "U8" => 1,
        "BF16" | "F16" => 2,
        "F32" => 4,
        _ => panic!("{name}: no fixture generator for dtype {dtype}"),
    };
    let mut out = Vec::with_capacity(n * width);
    for _ in 0..n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let sign = (r >> 63) & 1;
        let e = (r >> 59) & 7;
        let bf16 = (sign << 15 | (119 + e) << 7 | (r >> 32) & 0x7f) as u16;
        match dtype {
            "BF16" => out.extend_from_slice(&bf16.to_le_bytes()),
            "F32" => out.extend_from_slice(&((bf16 as u32) << 16).to_le_bytes()),
            "F8_E4M3" => out.push((sign << 7 | (e % 6 + 4) << 3 | (r >> 32) & 7) as u8),
            // MXFP4 checkpoints: E8M0 scales near 2^0, any 4-bit codes
            "U8" if name.ends_with("_scales") => out.push((119 + e) as u8),
            "U8" => out.push(((r >> 32) & 0xff) as u8),
            _ => {
                let f16 = (sign << 15 | (7 + e) << 10 | (r >> 32) & 0x3ff) as u16;
                out.extend_from_slice(&f16.to_le_bytes())
            }
        }
    }
    out
}

/// gguf-py's `GGUFValueType` name of a metadata value type.
pub fn value_type_name(t: gmat::gguf::ValueType) -> &'static str {
    use gmat::gguf::ValueType as T;
    match t {
        T::U8 => "UINT8",
        T::I8 => "INT8",
        T::U16 => "UINT16",
        T::I16 => "INT16",
        T::U32 => "UINT32",
        T::I32 => "INT32",
        T::F32 => "FLOAT32",
        T::Bool => "BOOL",
        T::String => "STRING",
        T::Array => "ARRAY",
        T::U64 => "UINT64",
        T::I64 => "INT64",
        T::F64 => "FLOAT64",
    }
}

/// The canonical bytes of an array's items for its digest: each as GGUF stores it (numbers
/// little-endian in their own width, bool one byte, string u64 LE byte length + UTF-8 bytes).
fn canonical_item(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(..) => panic!("nested arrays are not digested"),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One GGUF reduced to what the arch fixtures compare (tools/make_arch_fixtures.py `digest` is
/// the Python twin): every metadata key with its value type name and value (an array as
/// `{"type", "len", "sha256"}` of its canonical bytes), every tensor with its ggml type id, dims
/// (ggml order) and the sha256 of its data; both in file order.
pub struct GgufDigest {
    pub metadata: Vec<(String, String, serde_json::Value)>,
    pub tensors: Vec<(String, u32, Vec<u64>, String)>,
}

/// The digest of the GGUF file `path`.
pub fn gguf_digest(path: &Path) -> GgufDigest {
    let f = GgufFile::open(path).unwrap();
    let metadata = f
        .metadata
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::Array(t, items) => {
                    let mut bytes = Vec::new();
                    for item in items {
                        canonical_item(item, &mut bytes);
                    }
                    serde_json::json!({"type": value_type_name(*t), "len": items.len(), "sha256": sha256_hex(&bytes)})
                }
                Value::U8(x) => (*x).into(),
                Value::I8(x) => (*x).into(),
                Value::U16(x) => (*x).into(),
                Value::I16(x) => (*x).into(),
                Value::U32(x) => (*x).into(),
                Value::I32(x) => (*x).into(),
                Value::U64(x) => (*x).into(),
                Value::I64(x) => (*x).into(),
                Value::F32(x) => (*x as f64).into(),
                Value::F64(x) => (*x).into(),
                Value::Bool(x) => (*x).into(),
                Value::String(s) => s.clone().into(),
            };
            (k.clone(), value_type_name(v.value_type()).to_string(), value)
        })
        .collect();
    let tensors = f
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.ggml_type.id(),
                t.dims.clone(),
                sha256_hex(f.tensor_data(t)),
            )
        })
        .collect();
    GgufDigest { metadata, tensors }
}

/// Whether two metadata values of type `ty` are equal; floats are compared in their own width
/// (a JSON float parser need not be correctly rounded, so the f64 of a FLOAT32 value is
/// rounded to f32 first and a FLOAT64 value may differ in its last bit).
fn same_value(ty: &str, ours: &serde_json::Value, theirs: &serde_json::Value) -> bool {
    match (ty, ours.as_f64(), theirs.as_f64()) {
        ("FLOAT32", Some(a), Some(b)) => (a as f32).to_bits() == (b as f32).to_bits(),
        ("FLOAT64", Some(a), Some(b)) => a.to_bits().abs_diff(b.to_bits()) <= 1,
        _ => ours == theirs,
    }
}

/// The differences between `ours` and an expected digest (`{"metadata": [...], "tensors":
/// [...]}` as tools/make_arch_fixtures.py writes it), keys matching [`IGNORED_KEY_PATTERN`]
/// left out on both sides. With `check_order`, the order of keys and of tensors must match
/// too (once everything else does).
pub fn digest_diffs(
    ours: &GgufDigest,
    expected: &serde_json::Value,
    check_order: bool,
) -> Vec<String> {
    let ignore = regex::Regex::new(IGNORED_KEY_PATTERN).unwrap();
    let mut diffs = Vec::new();
    let theirs_meta: Vec<(String, String, serde_json::Value)> = expected["metadata"]
        .as_array()
        .expect("expected.json: metadata list")
        .iter()
        .map(|m| {
            (
                m[0].as_str().unwrap().to_string(),
                m[1].as_str().unwrap().to_string(),
                m[2].clone(),
            )
        })
        .filter(|m| !ignore.is_match(&m.0))
        .collect();
    let ours_meta: Vec<_> = ours
        .metadata
        .iter()
        .filter(|m| !ignore.is_match(&m.0))
        .collect();
    for (k, ty, v) in &ours_meta {
        match theirs_meta.iter().find(|m| &m.0 == k) {
            None => diffs.push(format!("key only in ours: {k} = {ty} {v}")),
            Some((_, t2, _)) if t2 != ty => {
                diffs.push(format!("key type differs: {k}: ours {ty} | reference {t2}"))
            }
            Some((_, _, v2)) if !same_value(ty, v, v2) => {
                diffs.push(format!("key differs: {k}: ours {v} | reference {v2}"))
            }
            _ => {}
        }
    }
    for (k, ty, v) in &theirs_meta {
        if !ours_meta.iter().any(|m| &m.0 == k) {
            diffs.push(format!("key only in the reference: {k} = {ty} {v}"));
        }
    }
    if diffs.is_empty() && check_order {
        let a: Vec<&str> = ours_meta.iter().map(|m| m.0.as_str()).collect();
        let b: Vec<&str> = theirs_meta.iter().map(|m| m.0.as_str()).collect();
        if a != b {
            diffs.push(format!(
                "metadata key order differs: ours {a:?} | reference {b:?}"
            ));
        }
    }

    let theirs_t: Vec<(String, u64, Vec<u64>, String)> = expected["tensors"]
        .as_array()
        .expect("expected.json: tensors list")
        .iter()
        .map(|t| {
            (
                t[0].as_str().unwrap().to_string(),
                t[1].as_u64().unwrap(),
                t[2].as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
                t[3].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let n_before = diffs.len();
    for (name, ty, dims, sha) in &ours.tensors {
        match theirs_t.iter().find(|t| &t.0 == name) {
            None => diffs.push(format!(
                "tensor only in ours: {name} (type {ty}, dims {dims:?})"
            )),
            Some(t) if t.1 != *ty as u64 => diffs.push(format!(
                "tensor type differs: {name}: ours {ty} | reference {}",
                t.1
            )),
            Some(t) if &t.2 != dims => diffs.push(format!(
                "tensor dims differ: {name}: ours {dims:?} | reference {:?}",
                t.2
            )),
            Some(t) if &t.3 != sha => diffs.push(format!("tensor data differs: {name}")),
            _ => {}
        }
    }
    for t in &theirs_t {
        if !ours.tensors.iter().any(|o| o.0 == t.0) {
            diffs.push(format!(
                "tensor only in the reference: {} (type {}, dims {:?})",
                t.0, t.1, t.2
            ));
        }
    }
    if diffs.len() == n_before && check_order {
        let a: Vec<&str> = ours.tensors.iter().map(|t| t.0.as_str()).collect();
        let b: Vec<&str> = theirs_t.iter().map(|t| t.0.as_str()).collect();
        if a != b {
            diffs.push(format!(
                "tensor order differs: ours {a:?} | reference {b:?}"
            ));
        }
    }
    diffs
}

/// The kit model's `hf/` folder as the converter saw it: through a symlink named after the model
/// (`DIR/NAME -> kit/NAME/hf`), the way the kit's expected files were made, so that
/// `general.name` (from the folder's name) is the expected file's.
#[cfg(unix)]
#[allow(dead_code)] // not every test binary uses it
pub fn kit_model_folder(kit: &Path, name: &str, dir: &Path) -> PathBuf {
    let link = dir.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(kit.join(name).join("hf"), &link).unwrap();
    }
    link
}
