//! Budget profiles (`--target-size`, `--target-bpw`) on the real binary: the file never exceeds
//! its budget, a budget below the smallest reachable size is one clear error and no file, the
//! generated config reproduces the targeted file byte for byte without searching, the user's
//! fixed types stay fixed, and `--report` describes what was written.
//!
//! Two models: example/tiny_llm (rows of 128 and 384 values: only the legacy 32-value types
//! fit, as llama.cpp's fallbacks) and a llama of the same shape with rows of 256 and 512 built
//! here (K-quants fit), so both kinds of candidate sets are searched.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A store of example/tiny_llm in `dir`.
fn tiny_store(dir: &Path) -> PathBuf {
    let example = repo().join("example/tiny_llm");
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(dir)]);
    dir.join("model.gmat")
}

/// A store of a two-layer llama with hidden size 256 (tiny_llm's tokenizer), in `dir`.
fn wide_store(dir: &Path) -> PathBuf {
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    let example = repo().join("example/tiny_llm");
    for f in [
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        std::fs::copy(example.join(f), hf.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(example.join("config.json")).unwrap()).unwrap();
    config["hidden_size"] = 256.into();
    config["intermediate_size"] = 512.into();
    config["head_dim"] = 64.into();
    std::fs::write(hf.join("config.json"), config.to_string()).unwrap();
    let (h, f, v, kv) = (256u64, 512u64, 3000u64, 128u64);
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, h]),
        ("lm_head.weight".into(), vec![v, h]),
        ("model.norm.weight".into(), vec![h]),
    ];
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        shapes.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![h, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![f, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![f, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, f]),
        ]);
    }
    let tensors: Vec<(String, String, Vec<u64>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product::<u64>() as usize;
            let data = fixture_values(&name, "BF16", n);
            (name, "BF16".to_string(), shape, data)
        })
        .collect();
    write_safetensors(&hf.join("model.safetensors"), &tensors);
    let out = dir.join("store");
    gmat_ok(&["import", "-q", "--model", s(&hf), "-o", s(&out)]);
    out.join("model.gmat")
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .len()
}

/// Exports of `store` at several budgets between the smallest and the largest reachable size:
/// none is over, and a larger budget never gives a larger error.
fn budgets_are_kept(store: &Path, dir: &Path) {
    let q8 = dir.join("q8.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(store),
        "--type",
        "Q8_0",
        "-o",
        s(&q8),
    ]);
    let big = size(&q8);
    let mut last_error = f64::INFINITY;
    for pct in [62u64, 70, 80, 90, 100] {
        let budget = big * pct / 100;
        let out = dir.join(format!("t{pct}.gguf"));
        let report = dir.join(format!("t{pct}.json"));
        let args = [
            "export",
            "-q",
            "-m",
            s(store),
            "--target-size",
            &budget.to_string(),
            "--report",
            s(&report),
            "-o",
            s(&out),
        ];
        let r = gmat(&args);
        if !r.status.success() {
            let err = String::from_utf8_lossy(&r.stderr);
            assert!(
                err.contains("cannot be reached") && err.contains("smallest"),
                "{pct}%: {err}"
            );
            assert!(!out.exists());
            continue;
        }
        assert!(size(&out) <= budget, "{pct}%: {} > {budget}", size(&out));
        let rep: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(rep["file_bytes"].as_u64().unwrap(), size(&out));
        let e = rep["total_error"].as_f64().unwrap();
        assert!(
            e <= last_error * (1.0 + 1e-9),
            "{pct}%: error {e} > {last_error}"
        );
        last_error = e;
    }
    assert!(last_error.is_finite(), "no budget was reachable");
}

#[test]
fn budgets_are_never_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    budgets_are_kept(
        &tiny_store(&dir.path().join("tiny")),
        &dir.path().join("tiny"),
    );
    let wide = dir.path().join("wide");
    budgets_are_kept(&wide_store(&wide), &wide);
}

#[test]
fn too_small_a_budget_names_the_smallest_reachable_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = tiny_store(dir.path());
    let out = dir.path().join("x.gguf");
    let err = gmat_err(&[
        "export",
        "-m",
        s(&store),
        "--target-size",
        "100KB",
        "-o",
        s(&out),
    ]);
    assert!(
        err.contains("100000") || err.contains("97.66 KiB"),
        "names the target: {err}"
    );
    assert!(err.contains("the smallest this model can be"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!out.exists());
    let err = gmat_err(&[
        "export",
        "-m",
        s(&store),
        "--target-bpw",
        "1.0",
        "-o",
        s(&out),
    ]);
    assert!(err.contains("bits per weight"), "{err}");
    assert!(!out.exists());
}

#[test]
fn the_generated_config_reproduces_the_targeted_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = wide_store(dir.path());
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    let cfg = dir.path().join("budget.json");
    let target = ["--target-bpw", "5.0"];
    let mut args = vec!["export", "-q", "-m", s(&store), "-o", s(&a)];
    args.extend(target);
    gmat_ok(&args);
    let mut args = vec![
        "export",
        "-q",
        "-m",
        s(&store),
        "--generate-config",
        s(&cfg),
    ];
    args.extend(target);
    gmat_ok(&args);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"_error:blk.0.ffn_down.weight\""), "{text}");
    assert!(text.contains("\"_target\""), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        json["quantization"].get("target").is_none(),
        "the search is not repeated: {text}"
    );
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--config",
        s(&cfg),
        "-o",
        s(&b),
    ]);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "exporting the generated config must give the same bytes"
    );
    // the same budget from the config file
    let c = dir.path().join("c.gguf");
    let cfg2 = dir.path().join("target.json");
    std::fs::write(&cfg2, r#"{"quantization": {"target": {"bpw": 5.0}}}"#).unwrap();
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--config",
        s(&cfg2),
        "-o",
        s(&c),
    ]);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&c).unwrap());
}

#[test]
fn fixed_types_stay_fixed_and_candidates_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let store = wide_store(dir.path());
    let out = dir.path().join("x.gguf");
    let report = dir.path().join("r.json");
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        r#"{"quantization": {"target": {"bpw": 5.0, "candidates": ["Q3_K", "Q4_K", "Q5_K"]},
            "per_tensor": {"blk.1.attn_v.weight": "Q8_0"}}}"#,
    )
    .unwrap();
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--config",
        s(&cfg),
        "--output-tensor-type",
        "Q6_K",
        "--report",
        s(&report),
        "-o",
        s(&out),
    ]);
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(rep["bits_per_weight"].as_f64().unwrap() <= 5.0);
    for t in rep["tensors"].as_array().unwrap() {
        let (name, ty) = (t["name"].as_str().unwrap(), t["type"].as_str().unwrap());
        match name {
            "blk.1.attn_v.weight" => assert_eq!(ty, "Q8_0"),
            "output.weight" => assert_eq!(ty, "Q6_K"),
            n if n.ends_with("norm.weight") => assert_eq!(ty, "F32"),
            _ => assert!(["Q3_K", "Q4_K", "Q5_K"].contains(&ty), "{name}: {ty}"),
        }
        assert!(t["error"].as_f64().is_some(), "{name} has a measured error");
    }
}

#[test]
fn target_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = tiny_store(dir.path());
    let out = dir.path().join("x.gguf");
    let err = gmat_err(&[
        "export",
        "-m",
        s(&store),
        "--target-size",
        "big",
        "-o",
        s(&out),
    ]);
    assert!(
        err.contains("--target-size") && err.contains("big"),
        "{err}"
    );
    let err = gmat_err(&[
        "export",
        "-m",
        s(&store),
        "--target-bpw",
        "4",
        "--type",
        "Q4_K_M,Q8_0",
        "-o",
        s(&out),
    ]);
    assert!(err.contains("one file"), "{err}");
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        r#"{"quantization": {"target": {"bpw": 4, "candidates": ["Q9_K"]}}}"#,
    )
    .unwrap();
    let err = gmat_err(&[
        "export",
        "-m",
        s(&store),
        "--config",
        s(&cfg),
        "-o",
        s(&out),
    ]);
    assert!(err.contains("Q9_K"), "{err}");
    assert!(!out.exists());
}

/// A store imported from a float GGUF is searched the same way, over llama-quantize's plans of
/// that GGUF: budgets are kept and the generated config reproduces the file.
#[test]
fn a_store_imported_from_a_float_gguf_is_targeted_too() {
    let dir = tempfile::tempdir().unwrap();
    let hf_store = wide_store(dir.path());
    let f32_gguf = dir.path().join("wide-F32.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&hf_store),
        "--type",
        "F32",
        "-o",
        s(&f32_gguf),
    ]);
    let g = dir.path().join("from-gguf");
    gmat_ok(&["import", "-q", "--model", s(&f32_gguf), "-o", s(&g)]);
    let store = g.join("model.gmat");
    budgets_are_kept(&store, &g);

    let a = g.join("a.gguf");
    let b = g.join("b.gguf");
    let cfg = g.join("budget.json");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--target-bpw",
        "5.0",
        "-o",
        s(&a),
    ]);
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--target-bpw",
        "5.0",
        "--generate-config",
        s(&cfg),
    ]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"_error:blk.0.ffn_down.weight\""), "{text}");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&store),
        "--config",
        s(&cfg),
        "-o",
        s(&b),
    ]);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "exporting the generated config must give the same bytes"
    );
}
