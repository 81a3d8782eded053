//! End-to-end: the real binary with compressed stores, fine-tunes stored against a base, and
//! `gmat inspect` / `gmat verify`. Exports must be byte-identical whatever the storage.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn export(store: &Path, t: &str, out: &Path) {
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(store),
        "--type",
        t,
        "-o",
        s(out),
    ]);
}

fn same_file(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// A fine-tune of the example model: every weight but the embeddings nudged in its low
/// mantissa bits (as a small relative update does in BF16); the embeddings untouched.
fn make_finetune(dir: &Path, seed: u8) -> PathBuf {
    let example = repo().join("example/tiny_llm");
    let ft = dir.join(format!("ft{seed}-hf"));
    copy_side_files(&example, &ft);
    let mut tensors = read_safetensors(&example.join("model.safetensors"));
    let mut x = 0x9e37_79b9u32 ^ seed as u32;
    for (name, dtype, _, bytes) in tensors.iter_mut() {
        assert_eq!(dtype, "BF16");
        if name.contains("embed_tokens") {
            continue;
        }
        for v in bytes.iter_mut().step_by(2) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v ^= (x & 3) as u8;
        }
    }
    write_safetensors(&ft.join("model.safetensors"), &tensors);
    ft
}

#[test]
fn compressed_and_delta_stores_export_byte_identical_files() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let example = repo().join("example/tiny_llm");
    gmat_ok(&[
        "import",
        "-q",
        "--encoding",
        "raw",
        "--model",
        s(&example),
        "-o",
        s(&p("raw")),
    ]);
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(&p("zstd"))]);
    let ft = make_finetune(d.path(), 1);
    gmat_ok(&[
        "import",
        "-q",
        "--encoding",
        "raw",
        "--model",
        s(&ft),
        "-o",
        s(&p("ft-raw")),
    ]);
    let out = gmat_ok(&[
        "import",
        "--model",
        s(&ft),
        "--base",
        s(&p("zstd/model.gmat")),
        "-o",
        s(&p("ft")),
    ]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("shared") && msg.contains("deltas"), "{msg}");

    // Raw and zstd stores, fine-tune alone and as deltas: the same GGUF bytes.
    for t in ["BF16", "Q8_0"] {
        let f = |n: &str| p(&format!("{n}-{t}.gguf"));
        export(&p("raw"), t, &f("raw"));
        export(&p("zstd"), t, &f("zstd"));
        same_file(&f("raw"), &f("zstd"));
        export(&p("ft-raw"), t, &f("ft-raw"));
        export(&p("ft"), t, &f("ft"));
        same_file(&f("ft-raw"), &f("ft"));
        assert!(std::fs::read(f("raw")).unwrap() != std::fs::read(f("ft")).unwrap());
    }
    assert_parity(
        &p("zstd-BF16.gguf"),
        &repo().join("testdata/example/tiny_llm-bf16.gguf"),
    );

    // The stores are smaller than their sources; the fine-tune much smaller still.
    let size = |store: &str| -> u64 {
        std::fs::read_dir(p(store).join("model.gmat/tensors"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let src = std::fs::metadata(example.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(size("zstd") < src * 4 / 5, "{} vs {src}", size("zstd"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("ft/model.gmat/metadata.json")).unwrap()).unwrap();
    let own: u64 = manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["encoding"] == "xor_zstd")
        .map(|t| t["stored_bytes"].as_u64().unwrap())
        .sum();
    assert!(own > 0 && own < src / 3, "{own} vs {src}");

    // inspect shows the table and totals; verify passes.
    let out = gmat_ok(&["inspect", s(&p("ft"))]);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "model.layers.0.self_attn.q_proj.weight",
        "xor_zstd",
        "(linked)",
        "raw:",
        "stored:",
        "shared:",
        "deltas:",
        "present, unchanged",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    for store in ["raw", "zstd", "ft"] {
        gmat_ok(&["verify", "-q", s(&p(store))]);
    }

    // Deleting the fine-tune leaves the base exporting the same bytes.
    std::fs::remove_dir_all(p("ft")).unwrap();
    export(&p("zstd"), "BF16", &p("again.gguf"));
    same_file(&p("again.gguf"), &p("raw-BF16.gguf"));
    gmat_ok(&["verify", "-q", s(&p("zstd"))]);
}

#[test]
fn a_changed_or_missing_base_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let base_hf = make_finetune(d.path(), 7);
    gmat_ok(&["import", "-q", "--model", s(&base_hf), "-o", s(&p("base"))]);
    let ft = make_finetune(d.path(), 8);
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&ft),
        "--base",
        s(&p("base")),
        "-o",
        s(&p("ft")),
    ]);
    export(&p("ft"), "Q8_0", &p("before.gguf"));

    // The base re-imported from other weights.
    let changed = make_finetune(d.path(), 9);
    gmat_ok(&["import", "-q", "--model", s(&changed), "-o", s(&p("base"))]);
    let out = p("after.gguf");
    let e = gmat_err(&[
        "export",
        "-q",
        "--model",
        s(&p("ft")),
        "--type",
        "Q8_0",
        "-o",
        s(&out),
    ]);
    assert!(
        e.contains("base store") && e.contains("has changed") && e.contains("base/model.gmat"),
        "{e}"
    );
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gmat-tmp") || n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "temporary or lock files left: {left:?}");
    let e = gmat_err(&["verify", s(&p("ft"))]);
    assert!(
        e.contains("verify failed at tensor") && e.contains("has changed"),
        "{e}"
    );
    let text = String::from_utf8_lossy(&gmat_ok(&["inspect", s(&p("ft"))]).stdout).into_owned();
    assert!(text.contains("CHANGED"), "{text}");

    // The base gone.
    std::fs::remove_dir_all(p("base")).unwrap();
    let e = gmat_err(&[
        "export",
        "-q",
        "--model",
        s(&p("ft")),
        "--type",
        "Q8_0",
        "-o",
        s(&out),
    ]);
    assert!(
        e.contains("base store") && e.contains("cannot be opened"),
        "{e}"
    );
    let text = String::from_utf8_lossy(&gmat_ok(&["inspect", s(&p("ft"))]).stdout).into_owned();
    assert!(text.contains("MISSING"), "{text}");

    // A fine-tune cannot be written into its own base.
    gmat_ok(&["import", "-q", "--model", s(&base_hf), "-o", s(&p("base"))]);
    let e = gmat_err(&[
        "import",
        "-q",
        "--model",
        s(&ft),
        "--base",
        s(&p("base")),
        "-o",
        s(&p("base")),
    ]);
    assert!(
        e.contains("overlaps the base store") && e.contains("base/model.gmat"),
        "{e}"
    );
}

#[test]
fn verify_names_the_first_corrupt_tensor() {
    let d = tempfile::tempdir().unwrap();
    let example = repo().join("example/tiny_llm");
    let st = d.path().join("st");
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(&st)]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.join("model.gmat/metadata.json")).unwrap())
            .unwrap();
    let t = manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|t| t["raw_bytes"].as_u64().unwrap())
        .unwrap();
    let (name, uuid) = (t["name"].as_str().unwrap(), t["uuid"].as_str().unwrap());
    let f = st.join(format!("model.gmat/tensors/{uuid}.gmat"));
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 200] ^= 0x04;
    std::fs::write(&f, bytes).unwrap();
    let e = gmat_err(&["verify", s(&st)]);
    assert!(e.contains(name) && e.contains("corrupt"), "{e}");
    // A truncated file: its chunk index no longer matches.
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
    let e = gmat_err(&["verify", s(&st)]);
    assert!(e.contains(name) && e.contains("chunk index"), "{e}");
}

#[test]
fn store_subcommands_have_help_with_examples() {
    for cmd in ["inspect", "verify", "import"] {
        let out = gmat_ok(&[cmd, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd}: {text}");
    }
    let out = gmat_ok(&["import", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--encoding") && text.contains("--base"),
        "{text}"
    );
}

/// A one-layer llama whose embedding and output matrices (3000 x 1408 BF16, 8.4 MB each) are
/// larger than export's window of rows, so that they are read in two windows that cut the
/// store's 1 MiB chunks in the middle, with read-ahead and the next tensor's preload.
fn make_wide_model(dir: &Path) -> PathBuf {
    let example = repo().join("example/tiny_llm");
    let m = dir.join("wide-hf");
    copy_side_files(&example, &m);
    let (h, f, heads, kv, hd) = (1408u64, 256u64, 11u64, 1u64, 128u64);
    let cfg_path = m.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    for (k, v) in [
        ("hidden_size", h),
        ("intermediate_size", f),
        ("num_attention_heads", heads),
        ("num_key_value_heads", kv),
        ("head_dim", hd),
        ("num_hidden_layers", 1),
    ] {
        cfg[k] = v.into();
    }
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let mut x = 0x2545_f491u32;
    let mut bf16 = |shape: Vec<u64>, scale: f32, offset: f32| -> Vec<u8> {
        let n: u64 = shape.iter().product();
        (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let v = offset + scale * ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5);
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect()
    };
    let mut t = |name: &str, shape: Vec<u64>, norm: bool| {
        let bytes = if norm {
            bf16(shape.clone(), 0.2, 1.0)
        } else {
            bf16(shape.clone(), 0.08, 0.0)
        };
        (name.to_string(), "BF16".to_string(), shape, bytes)
    };
    let p = "model.layers.0.";
    let tensors = vec![
        t("model.embed_tokens.weight", vec![3000, h], false),
        t(&format!("{p}input_layernorm.weight"), vec![h], true),
        t(
            &format!("{p}self_attn.q_proj.weight"),
            vec![heads * hd, h],
            false,
        ),
        t(
            &format!("{p}self_attn.k_proj.weight"),
            vec![kv * hd, h],
            false,
        ),
        t(
            &format!("{p}self_attn.v_proj.weight"),
            vec![kv * hd, h],
            false,
        ),
        t(
            &format!("{p}self_attn.o_proj.weight"),
            vec![h, heads * hd],
            false,
        ),
        t(
            &format!("{p}post_attention_layernorm.weight"),
            vec![h],
            true,
        ),
        t(&format!("{p}mlp.gate_proj.weight"), vec![f, h], false),
        t(&format!("{p}mlp.up_proj.weight"), vec![f, h], false),
        t(&format!("{p}mlp.down_proj.weight"), vec![h, f], false),
        t("model.norm.weight", vec![h], true),
        t("lm_head.weight", vec![3000, h], false),
    ];
    write_safetensors(&m.join("model.safetensors"), &tensors);
    m
}

#[test]
fn tensors_larger_than_a_window_export_the_same_bytes_from_every_store_and_thread_count() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let model = make_wide_model(d.path());
    for enc in ["raw", "zstd"] {
        gmat_ok(&[
            "import",
            "-q",
            "--encoding",
            enc,
            "--model",
            s(&model),
            "-o",
            s(&p(enc)),
        ]);
    }
    for t in ["BF16", "Q8_0", "Q4_K_M"] {
        let mut files = Vec::new();
        for (enc, threads) in [("raw", "2"), ("zstd", "1"), ("zstd", "2"), ("zstd", "3")] {
            let out = p(&format!("{enc}-{threads}-{t}.gguf"));
            gmat_ok_env(
                &[
                    "export",
                    "-q",
                    "--model",
                    s(&p(enc)),
                    "--type",
                    t,
                    "-o",
                    s(&out),
                ],
                &[("RAYON_NUM_THREADS", threads)],
            );
            files.push((out.clone(), std::fs::read(&out).unwrap()));
        }
        for w in files.windows(2) {
            assert!(
                w[0].1 == w[1].1,
                "{} and {} differ",
                w[0].0.display(),
                w[1].0.display()
            );
        }
    }
    // The BF16 export holds the source's embedding bytes exactly (read through two windows).
    let src = read_safetensors(&model.join("model.safetensors"));
    let embed = &src
        .iter()
        .find(|t| t.0 == "model.embed_tokens.weight")
        .unwrap()
        .3;
    let gguf = gmat::gguf::GgufFile::open(&p("zstd-1-BF16.gguf")).unwrap();
    let info = gguf
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert!(
        gguf.tensor_data(info) == &embed[..],
        "token_embd differs from the source"
    );
}
