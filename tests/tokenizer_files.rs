//! Tokenizers as people ship them (testdata/tokenizer-files/): vocab.json + merges.txt without
//! tokenizer.json, added_tokens.json, chat templates in chat_template.jinja / .json. Each
//! fixture's GGUF must equal the digest of the reference converter's (expected.json, made by
//! tools/make_tokenizer_fixtures.py); the kit test does the same on a full Qwen2 vocabulary.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture_dir() -> PathBuf {
    repo().join("testdata/tokenizer-files")
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The HF folder of fixture `fx` in `hf`: its side files and generated weights.
fn assemble(fx: &Path, hf: &Path) {
    std::fs::create_dir_all(hf).unwrap();
    for e in std::fs::read_dir(fx).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap();
        if !["tensors.json", "expected.json", "README.md"].contains(&name) {
            std::fs::copy(&p, hf.join(name)).unwrap();
        }
    }
    let tensors: Vec<(String, String, Vec<u64>, Vec<u8>)> = read_json(&fx.join("tensors.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t[0].as_str().unwrap().to_string();
            let dtype = t[1].as_str().unwrap().to_string();
            let shape: Vec<u64> = t[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            let data = fixture_values(&name, &dtype, shape.iter().product::<u64>() as usize);
            (name, dtype, shape, data)
        })
        .collect();
    write_safetensors(&hf.join("model.safetensors"), &tensors);
}

fn import_export(hf: &Path, work: &Path, extra: &[&str]) -> PathBuf {
    let store = work.join("store");
    gmat_ok(&["import", "-q", "--model", s(hf), "-o", s(&store)]);
    let gguf = work.join("out.gguf");
    let mut args = vec![
        "export",
        "-q",
        "-m",
        s(&store),
        "--type",
        "BF16",
        "-o",
        s(&gguf),
    ];
    args.extend(extra);
    gmat_ok(&args);
    gguf
}

#[test]
fn shipped_tokenizer_files_match_the_converter() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    assert!(
        names.len() >= 2,
        "fixtures missing in {}",
        fixture_dir().display()
    );
    let mut failures = Vec::new();
    for fx in &names {
        let dir = tempfile::tempdir().unwrap();
        // named as the reference's folder was: general.name comes from it
        let hf = dir.path().join(fx.file_name().unwrap());
        assemble(fx, &hf);
        let expected = read_json(&fx.join("expected.json"));
        let pre = expected["pre_tokenizer"].as_str().unwrap();
        let gguf = import_export(&hf, dir.path(), &["--pre-tokenizer", pre]);
        let diffs = digest_diffs(&gguf_digest(&gguf), &expected, true);
        if !diffs.is_empty() {
            failures.push(format!("{}: {diffs:#?}", fx.display()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Without --pre-tokenizer the tiny vocabulary's hash is unknown: the error gives the hash,
/// the option and the names it takes.
#[test]
fn unknown_hash_error_names_the_way_out() {
    let fx = fixture_dir().join("qwen2-vocab-merges");
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    assemble(&fx, &hf);
    let store = dir.path().join("store");
    gmat_ok(&["import", "-q", "--model", s(&hf), "-o", s(&store)]);
    let gguf = dir.path().join("out.gguf");
    let e = gmat_err(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--type",
        "BF16",
        "-o",
        s(&gguf),
    ]);
    assert!(
        e.contains("chkhsh") && e.contains("--pre-tokenizer NAME") && e.contains("qwen2, "),
        "{e}"
    );
    assert!(!gguf.exists());
}

/// A tokenizer class transformers cannot build from the two files is refused by name.
#[test]
fn other_classes_need_tokenizer_json() {
    let fx = fixture_dir().join("qwen2-vocab-merges");
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    assemble(&fx, &hf);
    let tc = hf.join("tokenizer_config.json");
    let text = std::fs::read_to_string(&tc)
        .unwrap()
        .replace("Qwen2Tokenizer", "RobertaTokenizer");
    std::fs::write(&tc, text).unwrap();
    let store = dir.path().join("store");
    gmat_ok(&["import", "-q", "--model", s(&hf), "-o", s(&store)]);
    let gguf = dir.path().join("out.gguf");
    let e = gmat_err(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--type",
        "BF16",
        "-o",
        s(&gguf),
        "--pre-tokenizer",
        "qwen2",
    ]);
    assert!(
        e.contains("RobertaTokenizer") && e.contains("tokenizer.json"),
        "{e}"
    );
}

/// The kit's Qwen2 with tokenizer.json removed (its vocab.json, merges.txt and
/// added_tokens.json kept) against the converter's GGUF of that same folder.
#[test]
fn kit_qwen2_without_tokenizer_json() {
    let Some(kit) = kit("vocab.json + merges.txt on the kit's qwen2-tiny") else {
        return;
    };
    let Ok(convert) = std::env::var("REF_CONVERT") else {
        eprintln!("skipped: $REF_CONVERT unset (source ~/.cache/gmat-ref/env.sh)");
        return;
    };
    let src = kit.join("qwen2-tiny/hf");
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("qwen2-tiny");
    std::fs::create_dir_all(&hf).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "tokenizer.json" {
            std::os::unix::fs::symlink(&p, hf.join(p.file_name().unwrap())).unwrap();
        }
    }
    let reference = dir.path().join("ref.gguf");
    let mut parts = convert.split_whitespace();
    let status = std::process::Command::new(parts.next().unwrap())
        .args(parts)
        .args([s(&hf), "--outtype", "bf16", "--outfile", s(&reference)])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let work = dir.path().join("w");
    let gguf = import_export(&hf, &work, &[]);
    assert_parity(&gguf, &reference);
}
