//! example/kimi2: a tiny Kimi-VL-shaped model (KimiVLForConditionalGeneration) through the
//! store into its text GGUF and its vision projector GGUF, checked against the reference
//! llama.cpp's output for it (testdata/kimi2/expected.json, made by
//! tools/make_kimi2_example.py with convert_hf_to_gguf.py and llama-quantize). Needs neither
//! the reference kit nor Python.

mod common;

use common::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn kimi2_example_matches_the_reference() {
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("testdata/kimi2/expected.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("st");
    // through a folder named as the reference's was: general.name comes from the folder's name
    let hf = dir.path().join("kimi2");
    std::os::unix::fs::symlink(repo().join("example/kimi2/hf"), &hf).unwrap();
    gmat_ok(&["import", "-q", "--model", s(&hf), "-o", s(&store)]);
    let mut failures = Vec::new();
    // BF16 writes the text model and the projector (F16 by default) side by side.
    let text = dir.path().join("kimi2-BF16.gguf");
    let mmproj = dir.path().join("mmproj.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&store),
        "--type",
        "BF16",
        "-o",
        s(&text),
        "--mmproj",
        s(&mmproj),
    ]);
    let q4 = dir.path().join("kimi2-Q4_K_M.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&store),
        "--type",
        "Q4_K_M",
        "-o",
        s(&q4),
        "--no-mmproj",
    ]);
    for (label, file, converter_order) in [
        ("BF16", &text, true),
        ("mmproj-F16", &mmproj, true),
        ("Q4_K_M", &q4, false),
    ] {
        let d = digest_diffs(
            &gguf_digest(file),
            &expected["outputs"][label],
            converter_order,
        );
        if !d.is_empty() {
            failures.push(format!("{label}:\n    {}", d.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
