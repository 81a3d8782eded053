//! Golden tests: for every model of the developer kit, `tokenizer_metadata(hf/)` must equal
//! every `tokenizer.*` key of the converter's GGUF (same keys, order, types and values).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::gguf::{GgufFile, Value};

/// The `tokenizer.*` keys the architecture named `arch` writes for the model folder `dir`.
fn tokenizer_metadata(
    dir: &Path,
    arch: &str,
    config: &serde_json::Value,
) -> anyhow::Result<Vec<(String, Value)>> {
    let Some(spec) = crate::arch::by_gguf_name(arch) else {
        anyhow::bail!("GGUF architecture {arch:?} is not supported");
    };
    crate::arch::vocab_metadata(spec, dir, &crate::arch::Hparams::new(config)?)
}

fn config(dir: &Path) -> serde_json::Value {
    let p = dir.join("config.json");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A readable description of the first difference between two values.
fn diff(a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Array(ta, xa), Value::Array(tb, xb)) => {
            if ta != tb {
                return Some(format!("element type {ta:?} vs {tb:?}"));
            }
            if xa.len() != xb.len() {
                return Some(format!("length {} vs {}", xa.len(), xb.len()));
            }
            xa.iter()
                .zip(xb)
                .enumerate()
                .find(|(_, (x, y))| x != y)
                .map(|(i, (x, y))| format!("[{i}]: {x:?} vs {y:?}"))
        }
        _ if a.value_type() != b.value_type() => {
            Some(format!("type {:?} vs {:?}", a.value_type(), b.value_type()))
        }
        _ if a != b => Some(format!("{a} vs {b}")),
        _ => None,
    }
}

fn check_model(name: &str, arch: &str) {
    let Some(kit) = crate::testkit::kit(&format!("tokenizer keys of {name}")) else {
        return;
    };
    let root = kit.join(name);
    let gguf_path = root.join("expected").join(format!("{name}-bf16.gguf"));
    compare(&root.join("hf"), arch, &gguf_path);
}

/// `tokenizer_metadata(hf, arch)` must equal the `tokenizer.*` keys of `gguf_path`.
fn compare(hf: &Path, arch: &str, gguf_path: &Path) {
    let name = hf.display();
    let expected = GgufFile::open(gguf_path).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        expected.get("general.architecture").and_then(Value::as_str),
        Some(arch),
        "{name}"
    );
    let want: Vec<&(String, Value)> = expected
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect();

    let t = Instant::now();
    let got = tokenizer_metadata(hf, arch, &config(hf)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    eprintln!("{name}: tokenizer metadata in {:?}", t.elapsed());

    let got_keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got_keys, want_keys, "{name}: key set/order");
    for ((k, g), (_, w)) in got.iter().zip(want) {
        if let Some(d) = diff(g, w) {
            panic!("{name}: {k}: ours vs converter: {d}");
        }
    }
}

/// Extra golden cases outside the kit: every subfolder of `$GMAT_TOKENIZER_CASES` holding the
/// HF tokenizer files, `arch` (the GGUF architecture) and `expected.gguf` (the converter's
/// `--vocab-only` output). Run with `cargo test --lib tokenizer::tests::extra -- --ignored`.
#[test]
#[ignore]
fn extra_cases() {
    let Some(root) = std::env::var_os("GMAT_TOKENIZER_CASES") else {
        panic!("set GMAT_TOKENIZER_CASES to a folder of cases");
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.gguf").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let arch = std::fs::read_to_string(dir.join("arch")).unwrap_or_else(|e| panic!("{e}"));
        compare(&dir, arch.trim(), &dir.join("expected.gguf"));
    }
}

#[test]
fn kit_llama_tiny() {
    check_model("llama-tiny", "llama");
}

#[test]
fn kit_llama_bpe_tiny() {
    check_model("llama-bpe-tiny", "llama");
}

#[test]
fn kit_qwen2_tiny() {
    check_model("qwen2-tiny", "qwen2");
}

#[test]
fn kit_qwen3_tiny() {
    check_model("qwen3-tiny", "qwen3");
}

#[test]
fn kit_mixtral_tiny() {
    check_model("mixtral-tiny", "llama");
}

#[test]
fn kit_gemma2_tiny() {
    check_model("gemma2-tiny", "gemma2");
}

#[test]
fn kit_phi3_tiny() {
    check_model("phi3-tiny", "phi3");
}

#[test]
fn kit_qwen3moe_tiny() {
    check_model("qwen3moe-tiny", "qwen3moe");
}

#[test]
fn kit_gemma3_tiny() {
    check_model("gemma3-tiny", "gemma3");
}

#[test]
fn kit_deepseek2_tiny() {
    check_model("deepseek2-tiny", "deepseek2");
}

#[test]
fn kit_kimivl_tiny() {
    check_model("kimivl-tiny", "deepseek2");
}

#[test]
fn kit_bert_tiny() {
    let Some(kit) = crate::testkit::kit("tokenizer keys of bert-tiny") else {
        return;
    };
    let root = kit.join("bert-tiny");
    compare(
        &root.join("hf"),
        "bert",
        &root.join("expected/bert-tiny-f32.gguf"),
    );
}

// ---- error cases (self-contained: no kit needed) ----

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn err(dir: &Path, arch: &str) -> String {
    let cfg = config(dir);
    match tokenizer_metadata(dir, arch, &cfg) {
        Ok(kv) => panic!("expected an error, got {} keys", kv.len()),
        Err(e) => format!("{e:#}"),
    }
}

/// GPT-2's byte-to-unicode table (`bytes_to_unicode`).
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec!['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    out
}

/// A byte-level BPE with no merges: every byte is one token, a pre-tokenizer no model uses.
fn write_bytes_bpe(dir: &Path) {
    let vocab: serde_json::Map<String, serde_json::Value> = byte_chars()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), serde_json::json!(i)))
        .collect();
    let tj = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    });
    write(dir, "tokenizer.json", tj.to_string().as_bytes());
    write(
        dir,
        "tokenizer_config.json",
        br#"{"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}"#,
    );
    write(
        dir,
        "config.json",
        br#"{"vocab_size": 257, "model_type": "qwen2"}"#,
    );
}

#[test]
fn unknown_pre_tokenizer_hash_is_an_error() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_bytes_bpe(tmp.path());
    let e = err(tmp.path(), "qwen2");
    // The hash transformers' AutoTokenizer gives for these files (computed with Python).
    assert!(
        e.contains("89a1c8edbd3d80af57c0a40175ce814b8133c8a424f8be85c1712f52041a554f"),
        "{e}"
    );
    assert!(e.contains("pre-tokenizer"), "{e}");
    assert!(
        e.contains("not recognized") && e.contains("--pre-tokenizer"),
        "{e}"
    );
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn truncated_tokenizer_model_is_an_error() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = super::spm::tests::encode(&[
        ("<unk>", 0.0, 2),
        ("<s>", 0.0, 3),
        ("</s>", 0.0, 3),
        ("\u{2581}a", -1.0, 1),
    ]);
    write(tmp.path(), "config.json", br#"{"vocab_size": 4}"#);
    write(tmp.path(), "tokenizer.model", &model);
    // The intact model works ...
    let cfg = config(tmp.path());
    let kv = tokenizer_metadata(tmp.path(), "llama", &cfg).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(kv.iter().any(|(k, v)| k == "tokenizer.ggml.tokens"
        && matches!(v, Value::Array(_, items) if items.len() == 4)));
    // ... a truncated one is an error naming the file.
    write(tmp.path(), "tokenizer.model", &model[..model.len() - 3]);
    let e = err(tmp.path(), "llama");
    assert!(e.contains("tokenizer.model"), "{e}");
    assert!(
        e.contains("runs past the end") || e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn missing_tokenizer_files_name_the_file() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(tmp.path(), "config.json", br#"{"vocab_size": 32000}"#);
    for (arch, files) in [
        ("llama", &["tokenizer.model", "tokenizer.json"][..]),
        ("qwen2", &["tokenizer.model", "tokenizer.json"][..]),
        ("qwen3", &["tokenizer.model", "tokenizer.json"][..]),
        ("gemma2", &["tokenizer.model"][..]),
        ("phi3", &["tokenizer.model"][..]),
    ] {
        let e = err(tmp.path(), arch);
        for file in files {
            let path = tmp.path().join(file);
            assert!(e.contains(&path.display().to_string()), "{arch}: {e}");
        }
        assert!(
            e.contains("not found") || e.contains("Missing") || e.contains("no tokenizer"),
            "{arch}: {e}"
        );
    }
    // A phi3 GPT2Tokenizer without tokenizer.json names that file.
    write(
        tmp.path(),
        "tokenizer_config.json",
        br#"{"tokenizer_class": "GPT2Tokenizer"}"#,
    );
    let e = err(tmp.path(), "phi3");
    assert!(
        e.contains("tokenizer.json") && e.contains("not found"),
        "{e}"
    );
}

#[test]
fn malformed_json_names_the_file() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = super::spm::tests::encode(&[("<unk>", 0.0, 2), ("a", 0.0, 1)]);
    write(tmp.path(), "config.json", br#"{"vocab_size": 2}"#);
    write(tmp.path(), "tokenizer.model", &model);
    write(tmp.path(), "tokenizer_config.json", b"{\"bos_token\": ");
    let e = err(tmp.path(), "llama");
    assert!(
        e.contains("tokenizer_config.json") && e.contains("not valid JSON"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_is_an_error() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(tmp.path(), "config.json", b"{}");
    let e = err(tmp.path(), "mamba");
    assert!(
        e.contains("\"mamba\"") && e.contains("not supported"),
        "{e}"
    );
}

#[test]
fn spm_padding_and_added_tokens() {
    // vocab_size above the pieces: [PAD{i}] placeholders; added_tokens.json and
    // added_tokens_decoder overlay with score -1000.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model =
        super::spm::tests::encode(&[("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("\u{2581}a", -2.5, 1)]);
    write(tmp.path(), "tokenizer.model", &model);
    write(tmp.path(), "config.json", br#"{"vocab_size": 6}"#);
    write(
        tmp.path(),
        "added_tokens.json",
        br#"{"<x>": 3, "<far>": 99}"#,
    );
    write(
        tmp.path(),
        "tokenizer_config.json",
        "{\"added_tokens_decoder\": {\"4\": {\"content\": \"\u{2581}\u{2581}\"}, \"5\": {\"content\": \"<|im|>\"}}}"
            .as_bytes(),
    );
    let cfg = config(tmp.path());
    let kv = tokenizer_metadata(tmp.path(), "llama", &cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("tokenizer.ggml.tokens"),
        Some(Value::strings([
            "<unk>",
            "<s>",
            "\u{2581}a",
            "<x>",
            "  ",
            "<|im|>"
        ]))
    );
    assert_eq!(
        get("tokenizer.ggml.scores"),
        Some(Value::f32s([0.0, 0.0, -2.5, -1000.0, -1000.0, -1000.0]))
    );
    assert_eq!(
        get("tokenizer.ggml.token_type"),
        Some(Value::i32s([2, 3, 1, 4, 4, 3]))
    );
    assert_eq!(
        get("tokenizer.ggml.model"),
        Some(Value::String("llama".into()))
    );
}

#[test]
fn tiktoken_vocabularies_are_refused_with_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(tmp.path(), "config.json", br#"{"vocab_size": 10}"#);
    write(tmp.path(), "tiktoken.model", b"IQ== 0\n");
    let e = err(tmp.path(), "deepseek2");
    assert!(
        e.contains("tiktoken.model") && e.contains("tokenizer.json"),
        "{e}"
    );
}
