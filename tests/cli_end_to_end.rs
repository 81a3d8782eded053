//! End-to-end: the real binary on the example model and on the reference kit, checked against
//! GGUFs written by llama.cpp's own converter and llama-quantize.

mod common;

use common::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn example_bf16_and_q8_0_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("example/tiny_llm");
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(dir.path())]);
    let store = dir.path().join("model.gmat");
    for (t, golden) in [
        ("BF16", "tiny_llm-bf16.gguf"),
        ("Q8_0", "tiny_llm-q8_0.gguf"),
    ] {
        let out = dir.path().join(format!("{t}.gguf"));
        gmat_ok(&[
            "export",
            "-q",
            "--model",
            s(&store),
            "--type",
            t,
            "-o",
            s(&out),
        ]);
        assert_parity(&out, &repo().join("testdata/example").join(golden));
    }
}

/// Every kit model of a supported family, exported at the type the converter wrote it in.
#[test]
fn kit_models_match_the_converter() {
    let Some(kit) = kit("converter parity of the kit models") else {
        return;
    };
    for (name, ty) in [
        ("llama-tiny", "BF16"),
        ("llama-bpe-tiny", "BF16"),
        ("qwen2-tiny", "BF16"),
        ("qwen3-tiny", "BF16"),
        ("mixtral-tiny", "BF16"),
        ("qwen3moe-tiny", "BF16"),
        ("gemma2-tiny", "BF16"),
        ("gemma3-tiny", "BF16"),
        ("phi3-tiny", "BF16"),
        ("deepseek2-tiny", "BF16"),
        ("kimivl-tiny", "BF16"),
        ("deepseek3-fp8-tiny", "BF16"),
        ("bert-tiny", "F32"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let hf = kit_model_folder(&kit, name, dir.path());
        gmat_ok(&["import", "-q", "--model", s(&hf), "-o", s(dir.path())]);
        let out = dir.path().join("out.gguf");
        gmat_ok(&[
            "export",
            "-q",
            "--model",
            s(dir.path()),
            "--type",
            ty,
            "-o",
            s(&out),
        ]);
        let expected = kit
            .join(name)
            .join("expected")
            .join(format!("{name}-{}.gguf", ty.to_lowercase()));
        assert_parity(&out, &expected);
    }
}

#[test]
fn shard_order_does_not_change_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("example/tiny_llm");
    // named as the example, so that general.name (from the folder name) is the golden's
    let sharded = dir.path().join("sharded").join("tiny_llm");
    copy_side_files(&example, &sharded);
    // Two shards, tensors reversed and interleaved between them, plus the index.
    let mut tensors = read_safetensors(&example.join("model.safetensors"));
    tensors.reverse();
    let (a, b): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let a: Vec<_> = a.into_iter().map(|x| x.1).collect();
    let b: Vec<_> = b.into_iter().map(|x| x.1).collect();
    let (f1, f2) = (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    );
    write_safetensors(&sharded.join(f1), &b);
    write_safetensors(&sharded.join(f2), &a);
    let mut map = serde_json::Map::new();
    for (t, f) in a.iter().map(|t| (t, f2)).chain(b.iter().map(|t| (t, f1))) {
        map.insert(t.0.clone(), f.into());
    }
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": map})).unwrap(),
    )
    .unwrap();
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&sharded),
        "-o",
        s(&dir.path().join("st")),
    ]);
    let out = dir.path().join("sharded.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&dir.path().join("st")),
        "--type",
        "BF16",
        "-o",
        s(&out),
    ]);
    assert_parity(&out, &repo().join("testdata/example/tiny_llm-bf16.gguf"));
}

#[test]
fn generated_configs_reproduce_the_default_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let example = repo().join("example/tiny_llm");
    let out = gmat_ok(&[
        "import",
        "--model",
        s(&example),
        "--generate-config",
        s(&d("import.json")),
    ]);
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.contains("tensors:        21") && stats.contains("BF16: 21"),
        "{stats}"
    );
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&example),
        "--config",
        s(&d("import.json")),
        "-o",
        s(&d("st")),
    ]);
    gmat_ok(&[
        "export",
        "--model",
        s(&d("st")),
        "--type",
        "Q8_0",
        "--generate-config",
        s(&d("export.json")),
    ]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d("export.json")).unwrap()).unwrap();
    assert_eq!(cfg["quantization"]["default_type"], "Q8_0");
    assert_eq!(
        cfg["quantization"]["per_tensor"].as_object().unwrap().len(),
        21
    );
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&d("st")),
        "--config",
        s(&d("export.json")),
        "-o",
        s(&d("q8.gguf")),
    ]);
    assert_parity(
        &d("q8.gguf"),
        &repo().join("testdata/example/tiny_llm-q8_0.gguf"),
    );
}

#[test]
fn per_tensor_overrides_and_excluded_tensors_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let example = repo().join("example/tiny_llm");
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(&d("st"))]);
    std::fs::write(
        d("export.json"),
        r#"{"_comment": "test", "quantization": {"default_type": "Q8_0",
            "per_tensor": {"blk.0.attn_q.weight": "F16", "model.layers.1.mlp.up_proj.weight": "BF16"}}}"#,
    )
    .unwrap();
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&d("st")),
        "--config",
        s(&d("export.json")),
        "-o",
        s(&d("o.gguf")),
    ]);
    let f = gmat::gguf::GgufFile::open(&d("o.gguf")).unwrap();
    assert_eq!(
        f.tensor("blk.0.attn_q.weight").unwrap().ggml_type.name(),
        "F16"
    );
    assert_eq!(
        f.tensor("blk.1.ffn_up.weight").unwrap().ggml_type.name(),
        "BF16"
    );
    assert_eq!(
        f.tensor("blk.1.attn_q.weight").unwrap().ggml_type.name(),
        "Q8_0"
    );
}

#[test]
fn output_bytes_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&repo().join("example/tiny_llm")),
        "-o",
        s(&d("st")),
    ]);
    for t in ["Q4_K", "IQ4_XS"] {
        let mut files = Vec::new();
        for threads in ["1", "2", "3"] {
            let out = d(&format!("{t}-{threads}.gguf"));
            gmat_ok_env(
                &[
                    "export",
                    "-q",
                    "--model",
                    s(&d("st")),
                    "--type",
                    t,
                    "--pure",
                    "-o",
                    s(&out),
                ],
                &[("RAYON_NUM_THREADS", threads)],
            );
            files.push(std::fs::read(&out).unwrap());
        }
        assert!(
            files.windows(2).all(|w| w[0] == w[1]),
            "{t}: output differs between thread counts"
        );
    }
}

/// A vision-language model exports its text GGUF and, beside it, its projector GGUF
/// (`convert_hf_to_gguf.py --mmproj`), both identical to the converter's.
#[test]
fn kit_vision_projector_matches_the_converter() {
    let Some(kit) = kit("mmproj parity of kimivl-tiny") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hf = kit_model_folder(&kit, "kimivl-tiny", dir.path());
    gmat_ok(&["import", "-q", "--model", s(&hf), "-o", s(dir.path())]);
    let out = dir.path().join("kimi.gguf");
    let dry = gmat_ok(&[
        "export",
        "--model",
        s(dir.path()),
        "--type",
        "BF16",
        "-o",
        s(&out),
        "--dry-run",
    ]);
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.contains("vision projector -> ") && dry.contains("v.blk.0.attn_q.weight"),
        "{dry}"
    );
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(dir.path()),
        "--type",
        "BF16",
        "-o",
        s(&out),
    ]);
    let expected = kit.join("kimivl-tiny/expected");
    assert_parity(&out, &expected.join("kimivl-tiny-bf16.gguf"));
    let mmproj = dir.path().join("mmproj-kimivl-tiny-F16.gguf");
    assert!(
        mmproj.is_file(),
        "the projector is written beside the output"
    );
    assert_parity(&mmproj, &expected.join("mmproj-kimivl-tiny-f16.gguf"));
    // --no-mmproj writes the text model only; other types are refused with a message
    let only = dir.path().join("only.gguf");
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(dir.path()),
        "--type",
        "Q8_0",
        "-o",
        s(&only),
        "--no-mmproj",
    ]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before + 1);
    let e = gmat_err(&[
        "export",
        "--model",
        s(dir.path()),
        "--type",
        "Q8_0",
        "-o",
        s(&only),
        "--mmproj-type",
        "Q4_K_M",
    ]);
    assert!(e.contains("projector") && e.contains("Q4_K_M"), "{e}");
}
