//! `gmat export --imatrix` against llama-quantize --imatrix: every tensor's type and SHA-256, and
//! the quantize.imatrix.* keys, from testdata/imatrix/expected.json (written from the real
//! llama-quantize output by testdata/imatrix/make_fixtures.sh).

mod common;

use common::*;
use gmat::gguf::{GgufFile, Value};
use sha2::{Digest, Sha256};

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn imatrix_exports_match_llama_quantize() {
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("testdata/imatrix/expected.json")).unwrap(),
    )
    .unwrap();
    // (case, model, imatrix, file type, extra flags) as in make_fixtures.sh (all --pure)
    let cases: [(&str, &str, &str, &str, &[&str]); 8] = [
        (
            "lt-q4k-gguf",
            "llama-tiny",
            "llama-tiny.imatrix.gguf",
            "Q4_K_M",
            &[],
        ),
        (
            "lt-q4k-dat",
            "llama-tiny",
            "llama-tiny.imatrix.dat",
            "Q4_K_M",
            &[],
        ),
        (
            "lt-iq4xs-gguf",
            "llama-tiny",
            "llama-tiny.imatrix.gguf",
            "IQ4_XS",
            &[],
        ),
        (
            "lt-incl-attn_q",
            "llama-tiny",
            "llama-tiny.imatrix.gguf",
            "Q4_K_M",
            &["--include-weights", "attn_q", "--include-weights", "blk.0."],
        ),
        (
            "lt-excl-ffn",
            "llama-tiny",
            "llama-tiny.imatrix.gguf",
            "Q4_K_M",
            &["--exclude-weights", "ffn"],
        ),
        (
            "mx-q4k-gguf",
            "mixtral-tiny",
            "mixtral-tiny.imatrix.gguf",
            "Q4_K_M",
            &[],
        ),
        (
            "mx-q4k-dat",
            "mixtral-tiny",
            "mixtral-tiny.imatrix.dat",
            "Q4_K_M",
            &[],
        ),
        (
            "mx-iq4xs-gguf",
            "mixtral-tiny",
            "mixtral-tiny.imatrix.gguf",
            "IQ4_XS",
            &[],
        ),
    ];
    let Some(kit) = kit("llama-quantize --imatrix parity") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for model in ["llama-tiny", "mixtral-tiny"] {
        gmat_ok(&[
            "import",
            "-q",
            "--model",
            s(&kit.join(model).join("hf")),
            "-o",
            s(&dir.path().join(model)),
        ]);
    }
    for (case, model, imatrix, ft, extra) in cases {
        let out = dir.path().join(format!("{case}.gguf"));
        let im = format!("testdata/imatrix/{imatrix}");
        let store = dir.path().join(model);
        let mut args = vec![
            "export",
            "-q",
            "--model",
            s(&store),
            "--type",
            ft,
            "--pure",
            "--imatrix",
            &im,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", s(&out)]);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gmat"))
            .env("GMAT_CACHE_SIZE", "0")
            .args(&args)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let f = GgufFile::open(&out).unwrap();
        let exp = &expected["quantize"][case];
        let tensors = exp["tensors"].as_object().unwrap();
        assert_eq!(tensors.len(), f.tensors.len(), "{case}");
        for t in &f.tensors {
            let e = &tensors[&t.name];
            assert_eq!(
                t.ggml_type.name(),
                e["type"].as_str().unwrap(),
                "{case} {}",
                t.name
            );
            let sha = format!("{:x}", Sha256::digest(f.tensor_data(t)));
            assert_eq!(
                sha,
                e["sha256"].as_str().unwrap(),
                "{case}: bytes of {} differ from llama-quantize",
                t.name
            );
        }
        for kv in exp["metadata"].as_array().unwrap() {
            let (key, value) = (kv[0].as_str().unwrap(), &kv[2]);
            let got = f.get(key).unwrap_or_else(|| panic!("{case}: no {key}"));
            let ok = match got {
                Value::String(x) => value.as_str() == Some(x.as_str()),
                Value::U32(x) => value.as_u64() == Some(*x as u64),
                _ => false,
            };
            assert!(ok, "{case}: {key} = {got}, llama-quantize wrote {value}");
        }
    }
}
