//! LoRA adapters end to end, with the real binary, against what the reference made
//! (testdata/lora/, tools/make_lora_fixtures.py):
//! - `gmat export --lora` writes the same file, byte for byte, as llama.cpp b11312's
//!   `convert_lora_to_gguf.py` for every output type it offers;
//! - `gmat import --lora --base` stores exactly the weights PEFT's `merge_and_unload` makes, as
//!   deltas against the base.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{gmat_err, gmat_ok, kit, repo};
use gmat::store::{Holding, Store};
use sha2::{Digest, Sha256};

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("testdata/lora"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("adapter_config.json").is_file())
        .collect();
    v.sort();
    v
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where our GGUF differs from the reference digest: per tensor, and the metadata keys.
fn explain(ours: &Path, expected: &serde_json::Value) -> String {
    let f = gmat::gguf::GgufFile::open(ours).unwrap();
    let mut out = Vec::new();
    let want = expected["tensors"].as_object().unwrap();
    for t in &f.tensors {
        let bytes = f.tensor_data(t);
        match want.get(&t.name) {
            None => out.push(format!("extra tensor {}", t.name)),
            Some(w) => {
                if w["sha256"].as_str() != Some(&sha256(bytes))
                    || w["type"].as_str() != Some(t.ggml_type.name())
                {
                    out.push(format!(
                        "tensor {}: {} vs {}",
                        t.name,
                        t.ggml_type.name(),
                        w["type"]
                    ));
                }
            }
        }
    }
    if f.tensors.len() != want.len() {
        out.push(format!("{} tensors vs {}", f.tensors.len(), want.len()));
    }
    let keys: Vec<&str> = f.metadata.iter().map(|(k, _)| k.as_str()).collect();
    out.push(format!("our keys: {keys:?}"));
    out.join("\n")
}

#[test]
fn export_lora_equals_convert_lora_to_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cases();
    assert!(cases.len() >= 4, "testdata/lora has the adapter fixtures");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let expected = json(&case.join("expected.json"));
        for (ty, key) in [
            ("F32", "f32"),
            ("F16", "f16"),
            ("BF16", "bf16"),
            ("Q8_0", "q8_0"),
        ] {
            let out = tmp.path().join(format!("{name}-{key}.gguf"));
            let base = case.join("base");
            let mut args = vec![
                "export",
                "--model",
                base.to_str().unwrap(),
                "--lora",
                case.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "-q",
            ];
            if ty != "F32" {
                // F32 is the default, as the converter's --outtype
                args.extend(["--type", ty]);
            }
            gmat_ok(&args);
            let got = sha256(&std::fs::read(&out).unwrap());
            let want = &expected[key];
            assert_eq!(
                Some(got.as_str()),
                want["file_sha256"].as_str(),
                "{name} {ty}: not the converter's file\n{}",
                explain(&out, want)
            );
        }
    }
}

#[test]
fn export_lora_refuses_what_it_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let case = repo().join("testdata/lora/llama-qkv");
    let base = case.join("base");
    let out = tmp.path().join("x.gguf");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "export",
            "--model",
            base.to_str().unwrap(),
            "--lora",
            case.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        gmat_err(&a)
    };
    let e = run(&["--type", "Q4_K_M"]);
    assert!(e.contains("F32, F16, BF16 or Q8_0"), "{e}");
    let e = run(&["--imatrix", "x.dat"]);
    assert!(
        e.contains("--imatrix does not apply to a LoRA adapter"),
        "{e}"
    );
    assert!(!out.exists());

    // an adapter whose weights do not pair up
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(
        case.join("adapter_config.json"),
        bad.join("adapter_config.json"),
    )
    .unwrap();
    gmat::source::safetensors::write_file(
        &bad.join("adapter_model.safetensors"),
        &[(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "F32",
            vec![2, 256],
            vec![0u8; 2 * 256 * 4],
        )],
    )
    .unwrap();
    let e = gmat_err(&[
        "export",
        "--model",
        base.to_str().unwrap(),
        "--lora",
        bad.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        e.contains("q_proj.lora_A.weight has no lora_B partner"),
        "{e}"
    );
    assert!(!out.exists());
}

/// The SHA-256 of every tensor of a store, by name.
fn store_hashes(root: &Path) -> BTreeMap<String, (String, Holding)> {
    let store = Store::open(root).unwrap();
    store
        .manifest
        .tensors
        .iter()
        .map(|e| {
            let bytes = store.reader(e).unwrap().read_all().unwrap();
            (e.name.clone(), (sha256(&bytes), e.holding()))
        })
        .collect()
}

/// Imports `base_dir`, merges `adapter` into it, and checks the merged store against PEFT's
/// `merge_and_unload` (merged.json): every merged weight's bytes, stored as a delta; every
/// other tensor shared with the base.
fn check_merge(base_dir: &Path, adapter: &Path, expected_file: &str, tmp: &Path) {
    let base = tmp.join("base");
    let merged = tmp.join("merged");
    gmat_ok(&[
        "import",
        "--model",
        base_dir.to_str().unwrap(),
        "-o",
        base.to_str().unwrap(),
        "-q",
    ]);
    gmat_ok(&[
        "import",
        "--lora",
        adapter.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
        "-q",
    ]);
    assert!(
        !merged.join(".gmat-lora-merge").exists(),
        "the staging folder is removed"
    );
    gmat_ok(&["verify", merged.to_str().unwrap(), "-q"]);
    let expected = json(&adapter.join(expected_file));
    let expected = expected.as_object().unwrap();
    let got = store_hashes(&merged);
    let before = store_hashes(&base);
    let name = format!(
        "{} {expected_file}",
        adapter.file_name().unwrap().to_string_lossy()
    );
    let mut wrong = Vec::new();
    for (tensor, (hash, holding)) in &got {
        match expected.get(tensor) {
            Some(want) => {
                if want["sha256"].as_str() != Some(hash.as_str()) {
                    wrong.push(tensor.clone());
                }
                assert_eq!(
                    *holding,
                    Holding::Delta,
                    "{name}: {tensor} is a delta against the base"
                );
            }
            None => {
                assert_eq!(
                    Some(hash),
                    before.get(tensor).map(|b| &b.0),
                    "{name}: {tensor} is unchanged"
                );
                assert!(
                    matches!(holding, Holding::Linked | Holding::Referenced),
                    "{name}: {tensor} is shared with the base ({holding:?})"
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{name}: merged weights differ from PEFT's: {wrong:?}"
    );
    for t in expected.keys() {
        assert!(got.contains_key(t), "{name}: {t} is in the merged store");
    }
}

#[test]
fn import_lora_merges_like_peft_on_the_checked_in_base() {
    // qwen3-attn's base/ holds the kit model's adapted weights (tools/make_lora_fixtures.py)
    // and F32 and F16 copies of them, merged by PEFT in those dtypes
    let case = repo().join("testdata/lora/qwen3-attn");
    for (base, expected) in [
        ("base", "merged.json"),
        ("base-f32", "merged-f32.json"),
        ("base-f16", "merged-f16.json"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        check_merge(&case.join(base), &case, expected, tmp.path());
    }
}

#[test]
fn import_lora_merges_like_peft_on_the_kit_models() {
    let Some(kit) = kit("import_lora_merges_like_peft_on_the_kit_models") else {
        return;
    };
    for case in cases() {
        let adapter_cfg = json(&case.join("adapter_config.json"));
        let model = adapter_cfg["base_model_name_or_path"].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        check_merge(
            &kit.join(model).join("hf"),
            &case,
            "merged.json",
            tmp.path(),
        );
    }
}

#[test]
fn import_lora_refuses_a_base_without_the_adapted_weights() {
    let Some(kit) = kit("import_lora_refuses_a_base_without_the_adapted_weights") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    gmat_ok(&[
        "import",
        "--model",
        kit.join("qwen2-tiny/hf").to_str().unwrap(),
        "-o",
        base.to_str().unwrap(),
        "-q",
    ]);
    let out = tmp.path().join("m");
    let e = gmat_err(&[
        "import",
        "--lora",
        repo().join("testdata/lora/llama-qkv").to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        e.contains("adapts model.layers.0.self_attn.k_proj.weight as [64, 256], but the base holds it as [32, 64]"),
        "{e}"
    );
    assert!(!out.join("model.gmat/metadata.json").exists());
    let gguf = tmp.path().join("x.gguf");
    let e = gmat_err(&[
        "export",
        "--model",
        base.to_str().unwrap(),
        "--lora",
        repo().join("testdata/lora/llama-qkv").to_str().unwrap(),
        "-o",
        gguf.to_str().unwrap(),
    ]);
    assert!(e.contains("but the base holds it as [32, 64]"), "{e}");
    assert!(!gguf.exists());
}

/// `llama-completion` of the reference build, on PATH (`source ~/.cache/gmat-ref/env.sh`).
fn llama_completion(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("llama-completion"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!(
            "skipped {test}: needs llama.cpp's llama-completion on PATH (source ~/.cache/gmat-ref/env.sh)"
        );
    }
    found
}

/// Greedy completion of "Hello" by the kit's llama-tiny GGUF, with extra arguments; the
/// generated text and llama.cpp's log.
fn complete(bin: &Path, model: &Path, extra: &[&str]) -> (String, String) {
    let out = std::process::Command::new(bin)
        .args([
            "-m",
            model.to_str().unwrap(),
            "-p",
            "Hello",
            "-n",
            "4",
            "-no-cnv",
            "--temp",
            "0",
            "-s",
            "1",
        ])
        .args(extra)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "llama-completion {extra:?} failed:\n{log}"
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), log)
}

#[test]
fn llama_cpp_applies_the_exported_lora() {
    let test = "llama_cpp_applies_the_exported_lora";
    let (Some(kit), Some(bin)) = (kit(test), llama_completion(test)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let case = repo().join("testdata/lora/llama-qkv");
    let lora = tmp.path().join("llama-qkv.gguf");
    gmat_ok(&[
        "export",
        "--model",
        case.join("base").to_str().unwrap(),
        "--lora",
        case.to_str().unwrap(),
        "-o",
        lora.to_str().unwrap(),
        "-q",
    ]);
    let model = kit.join("llama-tiny/expected/llama-tiny-bf16.gguf");
    let (plain, _) = complete(&bin, &model, &[]);
    let (adapted, log) = complete(&bin, &model, &["--lora", lora.to_str().unwrap(), "-v"]);
    assert!(
        log.contains("lora for 'blk.0.attn_q.weight'"),
        "the adapter's tensors are applied:\n{log}"
    );
    assert_ne!(plain, adapted, "the adapter changes the greedy completion");
}
