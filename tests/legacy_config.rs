//! Configs written for the original GMAT format: each of its encoder keys gets one message
//! saying what gmat does instead (a note for tuning keys, which are ignored; an error naming
//! the replacement for importance settings), not serde's bare "unknown field".

mod common;

use common::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn original_format_keys_get_one_message_each() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("example/tiny_llm");
    let store = dir.path().join("store");
    let import_cfg = dir.path().join("import.json");
    std::fs::write(
        &import_cfg,
        r#"{"source_format": "safetensors", "block_format": "log8", "trellis_lambda": 0.3}"#,
    )
    .unwrap();
    let out = gmat_ok(&[
        "import",
        "-q",
        "-m",
        s(&example),
        "-c",
        s(&import_cfg),
        "-o",
        s(&store),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("block_format is ignored: the gmat store is lossless"),
        "{err}"
    );
    assert!(
        err.contains("trellis_lambda is ignored: gmat quantizes each ggml type"),
        "{err}"
    );

    // Tuning keys change nothing: the GGUF equals the converter + llama-quantize golden.
    let cfg = dir.path().join("export.json");
    std::fs::write(
        &cfg,
        r#"{"target_format": "gguf", "scale_optimization": true, "block_size": 64,
            "quantization": {"default_type": "Q8_0", "trellis": true}}"#,
    )
    .unwrap();
    let gguf = dir.path().join("q8.gguf");
    let out = gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "-c",
        s(&cfg),
        "-o",
        s(&gguf),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["scale_optimization", "block_size", "quantization.trellis"] {
        assert!(err.contains(&format!("{key} is ignored: ")), "{key}: {err}");
    }
    assert_parity(&gguf, &repo().join("testdata/example/tiny_llm-q8_0.gguf"));

    // Importance settings would be dropped silently: refused, naming the replacement.
    std::fs::write(
        &cfg,
        r#"{"quantization": {"default_type": "Q4_K_M", "importance_matrix": "imp.dat"},
            "use_importance": true}"#,
    )
    .unwrap();
    let out2 = dir.path().join("imp.gguf");
    let e = gmat_err(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "-c",
        s(&cfg),
        "-o",
        s(&out2),
    ]);
    assert!(
        e.contains("quantization.importance_matrix: gmat takes importance data")
            && e.contains("use_importance: ")
            && e.contains("quantization.imatrix")
            && !e.contains("unknown field"),
        "{e}"
    );
    assert!(!out2.exists());
}
