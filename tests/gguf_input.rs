//! End-to-end: a GGUF as the import source (`gmat import --model file.gguf`, split sets too),
//! exported back as it was, to other float types, and requantized, checked against the files
//! llama.cpp's own tools write (`testdata/gguf-input/SHA256SUMS`, made by
//! `tools/gguf-input-golden.sh`: the converter, llama-quantize, llama-gguf-split).
//!
//! The reference files carry no `gmat.*` keys; gmat's files do (its provenance). A file is
//! compared by the hash of its bytes with the `gmat.*` keys taken out of the header: the rest of
//! the file, every other key and every tensor byte included, must be the reference's exactly.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use gmat::gguf::{GgufFile, GgufHeader};
use sha2::{Digest, Sha256};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The reference hashes, by file name.
fn golden() -> HashMap<String, String> {
    let text = std::fs::read_to_string(repo().join("testdata/gguf-input/SHA256SUMS")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, n)| (n.to_string(), h.to_string()))
        .collect()
}

/// SHA-256 of the file with its `gmat.*` keys removed (the header written again without them,
/// the data section as it is).
fn sha_without_gmat_keys(p: &Path) -> String {
    let f = GgufFile::open(p).unwrap();
    let bytes = std::fs::read(p).unwrap();
    let h = GgufHeader {
        metadata: f
            .metadata
            .iter()
            .filter(|(k, _)| !k.starts_with("gmat."))
            .cloned()
            .collect(),
        tensors: f.tensors.clone(),
    };
    let mut out = h.to_bytes();
    out.extend_from_slice(&bytes[f.data_offset as usize..]);
    format!("{:x}", Sha256::digest(&out))
}

fn assert_golden(ours: &Path, name: &str, golden: &HashMap<String, String>) {
    let want = golden
        .get(name)
        .unwrap_or_else(|| panic!("no reference hash for {name}"));
    assert_eq!(
        &sha_without_gmat_keys(ours),
        want,
        "{} is not the reference's {name}",
        ours.display()
    );
}

fn same_bytes(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// Imports `gguf` into `dir/name` and returns the store folder.
fn import(gguf: &Path, dir: &Path, name: &str) -> PathBuf {
    let store = dir.join(name);
    gmat_ok(&["import", "-q", "--model", s(gguf), "-o", s(&store)]);
    store
}

/// Round trip, float types, requantization of one GGUF `input` whose reference files are named
/// `stem-TYPE.gguf` in the golden list.
fn check_model(input: &Path, stem: &str, dir: &Path, golden: &HashMap<String, String>) {
    let store = import(input, dir, stem);
    // as imported: the same file, byte for byte
    let back = dir.join(format!("{stem}-back.gguf"));
    gmat_ok(&["export", "-q", "-m", s(&store), "-o", s(&back)]);
    same_bytes(&back, input);
    // to other types, all in one pass: llama-quantize's files
    let tpl = dir.join(format!("{stem}-{{type}}.gguf"));
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--type",
        "Q8_0,Q4_K_M,F16",
        "-o",
        s(&tpl),
    ]);
    for t in ["Q8_0", "Q4_K_M", "F16"] {
        assert_golden(
            &dir.join(format!("{stem}-{t}.gguf")),
            &format!("{stem}-{t}.gguf"),
            golden,
        );
    }
    // a quantized GGUF: kept as it is, refused to requantize, requantized when allowed
    let q8 = dir.join(format!("{stem}-Q8_0.gguf"));
    let q8_store = import(&q8, dir, &format!("{stem}-q8"));
    let back = dir.join(format!("{stem}-q8-back.gguf"));
    gmat_ok(&["export", "-q", "-m", s(&q8_store), "-o", s(&back)]);
    same_bytes(&back, &q8);
    let q4 = dir.join(format!("{stem}-Q8_0-Q4_0.gguf"));
    let err = gmat_err(&[
        "export",
        "-q",
        "-m",
        s(&q8_store),
        "--type",
        "Q4_0",
        "-o",
        s(&q4),
    ]);
    assert!(
        err.contains("requantizing from type Q8_0 is disabled")
            && err.contains("--allow-requantize"),
        "{err}"
    );
    assert!(!q4.exists(), "a refused export leaves no file");
    let out = gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&q8_store),
        "--type",
        "Q4_0",
        "--allow-requantize",
        "-o",
        s(&q4),
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("warning: requantizing"), "{log}");
    assert_golden(&q4, &format!("{stem}-Q8_0-Q4_0.gguf"), golden);
}

#[test]
fn tiny_llm_gguf_round_trips_and_requantizes_like_llama_quantize() {
    let golden = golden();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The GGUF a user has: the converter's BF16 file of example/tiny_llm (gmat's export of it
    // is that file plus gmat's keys, checked here against the converter's hash).
    let hf = d.join("hf");
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&repo().join("example/tiny_llm")),
        "-o",
        s(&hf),
    ]);
    let input = d.join("tiny_llm-BF16.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&hf),
        "--type",
        "BF16",
        "-o",
        s(&input),
    ]);
    assert_golden(&input, "tiny_llm-BF16.gguf", &golden);
    check_model(&input, "tiny_llm", d, &golden);
}

#[test]
fn split_gguf_imports_whole_and_splits_again_like_gguf_split() {
    let golden = golden();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hf = d.join("hf");
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&repo().join("example/tiny_llm")),
        "-o",
        s(&hf),
    ]);
    let input = d.join("tiny_llm-BF16.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&hf),
        "--type",
        "BF16",
        "-o",
        s(&input),
    ]);
    let store = import(&input, d, "one");
    // the imported file split as llama-gguf-split --split-max-tensors 8 splits it
    let split = d.join("split");
    std::fs::create_dir(&split).unwrap();
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--shard-max-tensors",
        "8",
        "-o",
        s(&split.join("tiny_llm-BF16-split.gguf")),
    ]);
    for i in 1..=3 {
        let name = format!("tiny_llm-BF16-split-{i:05}-of-00003.gguf");
        assert_golden(&split.join(&name), &name, &golden);
    }
    // the split set imported (through any of its files) is the unsplit model
    let from_split = import(
        &split.join("tiny_llm-BF16-split-00002-of-00003.gguf"),
        d,
        "from-split",
    );
    let back = d.join("back.gguf");
    gmat_ok(&["export", "-q", "-m", s(&from_split), "-o", s(&back)]);
    same_bytes(&back, &input);
    // a missing shard is named
    std::fs::remove_file(split.join("tiny_llm-BF16-split-00003-of-00003.gguf")).unwrap();
    let err = gmat_err(&[
        "import",
        "-q",
        "--model",
        s(&split.join("tiny_llm-BF16-split-00001-of-00003.gguf")),
        "-o",
        s(&d.join("broken")),
    ]);
    assert!(err.contains("00003-of-00003.gguf is missing"), "{err}");
}

#[test]
fn bad_gguf_input_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hf = d.join("hf");
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&repo().join("example/tiny_llm")),
        "-o",
        s(&hf),
    ]);
    let good = d.join("m.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&hf),
        "--type",
        "Q8_0",
        "-o",
        s(&good),
    ]);
    let bytes = std::fs::read(&good).unwrap();
    let bad = d.join("bad.gguf");
    // truncated data
    std::fs::write(&bad, &bytes[..bytes.len() - 100]).unwrap();
    let err = gmat_err(&["import", "-q", "--model", s(&bad), "-o", s(&d.join("x"))]);
    assert!(
        err.contains("bad.gguf") && err.contains("past the end of the file"),
        "{err}"
    );
    assert!(!d.join("x/model.gmat/metadata.json").exists());
    // a key count larger than the file
    let mut b = bytes.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    let err = gmat_err(&["import", "-q", "--model", s(&bad), "-o", s(&d.join("x"))]);
    assert!(
        err.contains("bad.gguf") && err.contains("key/value count"),
        "{err}"
    );
    // converter options do not apply to a GGUF-sourced store
    let store = import(&good, d, "g");
    let err = gmat_err(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--model-name",
        "x",
        "-o",
        s(&d.join("o.gguf")),
    ]);
    assert!(err.contains("--override-kv"), "{err}");
    // --override-kv applies as llama-quantize applies it
    let o = d.join("o.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--override-kv",
        "general.name=str:Renamed",
        "-o",
        s(&o),
    ]);
    let f = GgufFile::open(&o).unwrap();
    assert_eq!(
        f.get("general.name").and_then(|v| v.as_str()),
        Some("Renamed")
    );
    // a damaged metadata file is caught
    let md = store.join("model.gmat/gguf_metadata.gguf");
    let mut m = std::fs::read(&md).unwrap();
    let n = m.len();
    m[n - 40] ^= 1;
    std::fs::write(&md, &m).unwrap();
    let err = gmat_err(&["export", "-q", "-m", s(&store), "-o", s(&d.join("p.gguf"))]);
    assert!(
        err.contains("gguf_metadata.gguf") && err.contains("damaged"),
        "{err}"
    );
}

/// Every kit model's converter GGUF: imported, exported back identical, to Q8_0, Q4_K_M, F16
/// as llama-quantize writes them, and its Q8_0 file requantized to Q4_0 with
/// --allow-requantize.
#[test]
fn kit_converter_ggufs_round_trip_and_match_llama_quantize() {
    let Some(kit) = kit("GGUF-input parity of the kit's converter files") else {
        return;
    };
    let golden = golden();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&kit).unwrap() {
        let m = entry.unwrap().path();
        let name = m.file_name().unwrap().to_string_lossy().into_owned();
        let expected = m.join("expected");
        let Some(input) = [
            expected.join(format!("{name}-bf16.gguf")),
            expected.join(format!("{name}-f32.gguf")),
        ]
        .into_iter()
        .find(|p| p.is_file()) else {
            continue;
        };
        if !golden.contains_key(&format!("{name}-Q8_0.gguf")) {
            continue;
        }
        let d = dir.path().join(&name);
        std::fs::create_dir(&d).unwrap();
        check_model(&input, &name, &d, &golden);
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} kit models checked");
}
