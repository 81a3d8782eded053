//! Shared helpers for the end-to-end tests: running the real binary, writing tiny models, and a
//! GGUF parity check that mirrors `../shared/reference/gguf_parity.py`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gmat::gguf::{GgufFile, Value};

/// Keys that are cosmetic (model-card fields and names) or gmat's own provenance; every other
/// key must match the reference (the list of the reference README).
pub const IGNORED_KEY_PATTERN: &str = r"^general\.(name|basename|finetune|version|quantized_by|license.*|tags|languages|datasets|base_model.*|url|repo_url|description|author|organization)$|^gmat\.";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference kit of small HF models with the converter's GGUFs (`../shared` beside the
/// clone, as in CI, or `$GMAT_REFERENCE_MODELS`), or `None` after printing that `test` is
/// skipped: a user's clone has no kit, and the same checks run on `testdata/` fixtures.
pub fn kit(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("GMAT_REFERENCE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/reference/models"));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped {test}: needs the reference kit at {} (shared/reference/models beside the \
             clone, or set GMAT_REFERENCE_MODELS)",
            p.display()
        );
        None
    }
}

/// Runs gmat with `args`.
pub fn gmat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gmat"))
        .args(args)
        .output()
        .expect("gmat runs")
}

/// Runs gmat with extra environment variables and panics unless it succeeds.
pub fn gmat_ok_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_gmat"))
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
