//! Bad input: one clear error, exit code 1, and no output that looks valid.

mod common;

use common::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn tiny_model(dir: &std::path::Path) -> std::path::PathBuf {
    let m = dir.join("m");
    std::fs::create_dir_all(&m).unwrap();
    let example = repo().join("example/tiny_llm");
    copy_side_files(&example, &m);
    std::fs::copy(
        example.join("model.safetensors"),
        m.join("model.safetensors"),
    )
    .unwrap();
    m
}

#[test]
fn missing_config_json() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    std::fs::remove_file(m.join("config.json")).unwrap();
    let e = gmat_err(&["import", "--model", s(&m), "-o", s(&d.path().join("o"))]);
    assert!(e.contains("config.json"), "{e}");
    assert!(!d.path().join("o/model.gmat/metadata.json").exists());
}

#[test]
fn truncated_safetensors() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    let f = m.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 1000]).unwrap();
    let e = gmat_err(&["import", "--model", s(&m), "-o", s(&d.path().join("o"))]);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    assert!(!d.path().join("o/model.gmat/metadata.json").exists());
}

#[test]
fn header_offsets_past_the_file() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    write_safetensors(
        &m.join("model.safetensors"),
        &[("x".into(), "F32".into(), vec![4], vec![0; 16])],
    );
    // Rewrite the header so the tensor claims 64 bytes while the file holds 16.
    let h = br#"{"x":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}}"#;
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h);
    out.extend_from_slice(&[0; 16]);
    std::fs::write(m.join("model.safetensors"), out).unwrap();
    let e = gmat_err(&["import", "--model", s(&m), "-o", s(&d.path().join("o"))]);
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(!d.path().join("o/model.gmat/metadata.json").exists());
}

#[test]
fn import_config_target_that_is_not_a_uuid() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    let cfg = d.path().join("import.json");
    std::fs::write(
        &cfg,
        r#"{"tensor_map": [{"source": "lm_head.weight", "target": "../../etc/x"}]}"#,
    )
    .unwrap();
    let e = gmat_err(&[
        "import",
        "--model",
        s(&m),
        "--config",
        s(&cfg),
        "-o",
        s(&d.path().join("o")),
    ]);
    assert!(e.contains("../../etc/x") && e.contains("not a UUID"), "{e}");
    assert!(
        !d.path().join("etc").exists() && !d.path().join("o/model.gmat/metadata.json").exists()
    );
}

#[test]
fn unknown_type_in_export_config() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "-o",
        s(&d.path().join("st")),
    ]);
    let cfg = d.path().join("export.json");
    std::fs::write(&cfg, r#"{"quantization": {"default_type": "Q9_K"}}"#).unwrap();
    let out = d.path().join("o.gguf");
    let e = gmat_err(&[
        "export",
        "--model",
        s(&d.path().join("st")),
        "--config",
        s(&cfg),
        "-o",
        s(&out),
    ]);
    assert!(e.contains("Q9_K") && e.contains("default_type"), "{e}");
    std::fs::write(
        &cfg,
        r#"{"quantization": {"per_tensor": {"output.weight": "Q9"}}}"#,
    )
    .unwrap();
    let e = gmat_err(&[
        "export",
        "--model",
        s(&d.path().join("st")),
        "--config",
        s(&cfg),
        "-o",
        s(&out),
    ]);
    assert!(e.contains("output.weight") && e.contains("Q9"), "{e}");
    std::fs::write(&cfg, r#"{"quantisation": {}}"#).unwrap();
    let e = gmat_err(&[
        "export",
        "--model",
        s(&d.path().join("st")),
        "--config",
        s(&cfg),
        "-o",
        s(&out),
    ]);
    assert!(e.contains("quantisation"), "{e}");
    assert!(!out.exists());
}

#[test]
fn corrupted_store_and_nan_weights_leave_no_output() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    // NaN in a weight: the export names the tensor and writes nothing.
    let mut tensors = read_safetensors(&m.join("model.safetensors"));
    let t = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.1.mlp.down_proj.weight")
        .unwrap();
    t.3[10] = 0xc0;
    t.3[11] = 0x7f; // bf16 0x7fc0 = NaN
    write_safetensors(&m.join("model.safetensors"), &tensors);
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "-o",
        s(&d.path().join("st")),
    ]);
    let out = d.path().join("o.gguf");
    let e = gmat_err(&[
        "export",
        "--model",
        s(&d.path().join("st")),
        "--type",
        "Q8_0",
        "-o",
        s(&out),
    ]);
    assert!(
        e.contains("model.layers.1.mlp.down_proj.weight") && e.contains("NaN"),
        "{e}"
    );
    assert!(!out.exists() && !d.path().join("o.gguf.partial").exists());
    // A flipped byte in a stored tensor: the content hash catches it.
    let m2 = tiny_model(&d.path().join("b"));
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m2),
        "-o",
        s(&d.path().join("st2")),
    ]);
    let tdir = d.path().join("st2/model.gmat/tensors");
    let victim = std::fs::read_dir(&tdir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let e = gmat_err(&["export", "--model", s(&d.path().join("st2")), "-o", s(&out)]);
    assert!(e.contains("corrupt"), "{e}");
    assert!(!out.exists());
}

#[test]
fn unsupported_architecture_is_named_before_any_output() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    let cfg = m.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("LlamaForCausalLM", "MambaForCausalLM")).unwrap();
    // The store is architecture-agnostic: import keeps the model as it is.
    let st = d.path().join("st");
    gmat_ok(&["import", "-q", "--model", s(&m), "-o", s(&st)]);
    let out = d.path().join("out.gguf");
    let cfg_out = d.path().join("x.json");
    for extra in [
        &[][..],
        &["--dry-run"][..],
        &["--generate-config", s(&cfg_out)][..],
    ] {
        let mut args = vec!["export", "--model", s(&st), "--type", "Q8_0", "-o", s(&out)];
        args.extend_from_slice(extra);
        let e = gmat_err(&args);
        assert!(
            e.contains("MambaForCausalLM is not supported")
                && e.contains("LlamaForCausalLM")
                && e.contains("Gemma3ForCausalLM")
                && e.contains("BertModel"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "one message: {e}");
    }
    assert!(!out.exists());
    assert!(!cfg_out.exists());
}
