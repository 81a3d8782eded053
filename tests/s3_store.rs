//! End-to-end: stores in a bucket of a real single-node Garage (tests/common/garage.rs), through
//! the real binary. Exports from the bucket must be byte-identical to exports from the same
//! model's local store; a fine-tune against a base in the bucket shares the base's objects; an
//! import killed midway refuses readers, refuses a second writer while alive, and resumes.
//! Without the garage binary these tests skip, saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::garage::Garage;
use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs gmat against the node; panics unless it succeeds.
fn ok(g: &Garage, args: &[&str]) -> std::process::Output {
    let env = g.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    gmat_ok_env(args, &env)
}

/// Runs gmat against the node; expects exit code 1 and returns stderr.
fn fails(g: &Garage, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gmat"))
        .env("GMAT_CACHE_SIZE", "0")
        .envs(g.env())
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "gmat {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn export(g: &Garage, store: &str, t: &str, out: &Path) -> Vec<u8> {
    ok(
        g,
        &["export", "-q", "--model", store, "--type", t, "-o", s(out)],
    );
    std::fs::read(out).unwrap()
}

/// A llama of `layers` layers, hidden size 1408, vocabulary 3000 (the example tokenizer's): the embedding and output
/// matrices (8.4 MB of BF16 each) are larger than an upload's first part, so they go up as
/// multipart uploads, and larger than an export window.
fn make_model(dir: &Path, name: &str, layers: u64, seed: u32) -> PathBuf {
    let example = repo().join("example/tiny_llm");
    let m = dir.join(name);
    copy_side_files(&example, &m);
    let (h, f, heads, kv, hd, vocab) = (1408u64, 512u64, 11u64, 1u64, 128u64, 3000u64);
    let cfg_path = m.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    for (k, v) in [
        ("hidden_size", h),
        ("intermediate_size", f),
        ("num_attention_heads", heads),
        ("num_key_value_heads", kv),
        ("head_dim", hd),
        ("num_hidden_layers", layers),
    ] {
        cfg[k] = v.into();
    }
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let mut x = 0x2545_f491u32 ^ seed;
    let mut bf16 = |n: u64, scale: f32, offset: f32| -> Vec<u8> {
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
    let mut tensors = Vec::new();
    let mut t = |name: String, shape: Vec<u64>, norm: bool| {
        let n = shape.iter().product();
        let bytes = if norm {
            bf16(n, 0.2, 1.0)
        } else {
            bf16(n, 0.08, 0.0)
        };
        tensors.push((name, "BF16".to_string(), shape, bytes));
    };
    t("model.embed_tokens.weight".into(), vec![vocab, h], false);
    for l in 0..layers {
        let p = format!("model.layers.{l}.");
        t(format!("{p}input_layernorm.weight"), vec![h], true);
        t(
            format!("{p}self_attn.q_proj.weight"),
            vec![heads * hd, h],
            false,
        );
        t(
            format!("{p}self_attn.k_proj.weight"),
            vec![kv * hd, h],
            false,
        );
        t(
            format!("{p}self_attn.v_proj.weight"),
            vec![kv * hd, h],
            false,
        );
        t(
            format!("{p}self_attn.o_proj.weight"),
            vec![h, heads * hd],
            false,
        );
        t(format!("{p}post_attention_layernorm.weight"), vec![h], true);
        t(format!("{p}mlp.gate_proj.weight"), vec![f, h], false);
        t(format!("{p}mlp.up_proj.weight"), vec![f, h], false);
        t(format!("{p}mlp.down_proj.weight"), vec![h, f], false);
    }
    t("model.norm.weight".into(), vec![h], true);
    t("lm_head.weight".into(), vec![vocab, h], false);
    write_safetensors(&m.join("model.safetensors"), &tensors);
    m
}

/// A fine-tune of `model`: every weight but the embeddings nudged in its low mantissa bits.
fn make_finetune(model: &Path, dir: &Path) -> PathBuf {
    let ft = dir.join("ft-hf");
    copy_side_files(model, &ft);
    let mut tensors = read_safetensors(&model.join("model.safetensors"));
    let mut x = 0x9e37_79b9u32;
    for (name, _, _, bytes) in tensors.iter_mut() {
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
fn stores_in_a_garage_bucket_export_the_same_bytes_as_local_stores() {
    let Some(g) = Garage::start("stores_in_a_garage_bucket_export_the_same_bytes_as_local_stores")
    else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let model = make_model(d.path(), "hf", 1, 0);
    gmat_ok(&["import", "-q", "--model", s(&model), "-o", s(&p("local"))]);
    let out = ok(&g, &["import", "--model", s(&model), "-o", &g.url("zstd")]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("into s3://gmat-test/zstd/model.gmat"), "{msg}");
    ok(
        &g,
        &[
            "import",
            "-q",
            "--encoding",
            "raw",
            "--model",
            s(&model),
            "-o",
            &g.url("raw"),
        ],
    );
    // The objects of a store: manifest, side files, one per tensor; no lock left.
    let objects = g.list("zstd/model.gmat");
    let names: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.contains(&"zstd/model.gmat/metadata.json"),
        "{names:?}"
    );
    assert!(names.contains(&"zstd/model.gmat/config.json"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with(".gmat-lock")),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.contains("/tensors/")).count(),
        12,
        "{names:?}"
    );

    for t in ["BF16", "Q8_0", "Q4_K_M"] {
        let local = export(&g, s(&p("local")), t, &p(&format!("local-{t}.gguf")));
        for store in ["zstd", "raw"] {
            // The store's folder URL and its model.gmat URL both open it.
            let url = if store == "raw" {
                g.url("raw/model.gmat")
            } else {
                g.url(store)
            };
            let remote = export(&g, &url, t, &p(&format!("{store}-{t}.gguf")));
            assert!(
                local == remote,
                "{t} from {url} differs from the local store's"
            );
        }
    }
    for store in ["zstd", "raw"] {
        let out = ok(&g, &["verify", &g.url(store)]);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains("every content hash matches"), "{msg}");
    }
    let out = ok(&g, &["inspect", &g.url("zstd")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("store:   s3://gmat-test/zstd/model.gmat"),
        "{text}"
    );

    // A fine-tune against the base in the same bucket: shared tensors are references to the
    // base's objects, the rest deltas; exports equal the local fine-tune's.
    let ft = make_finetune(&model, d.path());
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&ft),
        "--base",
        s(&p("local/model.gmat")),
        "-o",
        s(&p("local-ft")),
    ]);
    let out = ok(
        &g,
        &[
            "import",
            "--model",
            s(&ft),
            "--base",
            &g.url("zstd/model.gmat"),
            "-o",
            &g.url("ft"),
        ],
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("shared") && msg.contains("deltas"), "{msg}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&g.get("ft/model.gmat/metadata.json").unwrap()).unwrap();
    assert_eq!(manifest["base"]["path"], "../../zstd/model.gmat");
    let enc = |e: &str| {
        manifest["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["encoding"] == e)
            .count()
    };
    assert_eq!(enc("base_ref"), 1, "the embedding is shared");
    assert!(enc("xor_zstd") > 0);
    let ft_objects = g.list("ft/model.gmat/tensors");
    assert_eq!(
        ft_objects.len(),
        manifest["tensors"].as_array().unwrap().len() - enc("base_ref"),
        "no object is copied for a shared tensor: {ft_objects:?}"
    );
    for t in ["BF16", "Q8_0"] {
        let local = export(&g, s(&p("local-ft")), t, &p(&format!("local-ft-{t}.gguf")));
        let remote = export(&g, &g.url("ft"), t, &p(&format!("ft-{t}.gguf")));
        assert!(local == remote, "{t} of the fine-tune differs");
    }
    ok(&g, &["verify", "-q", &g.url("ft")]);
    let out = ok(&g, &["inspect", &g.url("ft")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("base_ref") && text.contains("present, unchanged"),
        "{text}"
    );

    // A damaged object: verify names the tensor; export refuses.
    let entry = manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["encoding"] == "xor_zstd")
        .unwrap();
    let key = format!(
        "ft/model.gmat/tensors/{}.gmat",
        entry["uuid"].as_str().unwrap()
    );
    let good = g.get(&key).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 10] ^= 0x40;
    g.put(&key, bad);
    let err = fails(&g, &["verify", "-q", &g.url("ft")]);
    assert!(
        err.contains(entry["name"].as_str().unwrap())
            && err.contains("s3://gmat-test/ft/model.gmat"),
        "{err}"
    );
    g.put(&key, good);
    ok(&g, &["verify", "-q", &g.url("ft")]);

    // Not a store; a fine-tune in a bucket cannot depend on a local base.
    let err = fails(&g, &["inspect", &g.url("nothing")]);
    assert!(
        err.contains("s3://gmat-test/nothing is not a gmat store"),
        "{err}"
    );
    let err = fails(
        &g,
        &[
            "import",
            "-q",
            "--model",
            s(&ft),
            "--base",
            s(&p("local/model.gmat")),
            "-o",
            &g.url("ft2"),
        ],
    );
    assert!(err.contains("cannot depend on a local base store"), "{err}");
}

#[test]
fn an_interrupted_import_into_a_bucket_is_refused_to_readers_and_other_writers_and_resumes() {
    let Some(g) = Garage::start(
        "an_interrupted_import_into_a_bucket_is_refused_to_readers_and_other_writers_and_resumes",
    ) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let model = make_model(d.path(), "hf", 6, 7);
    let url = g.url("big");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gmat"))
        .envs(g.env())
        .env("RAYON_NUM_THREADS", "1")
        .args(["import", "-q", "--model", s(&model), "-o", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some tensors are up, then: readers and a second writer are refused.
    let started = Instant::now();
    while g.list("big/model.gmat/tensors").len() < 2 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the import ended ({status}) before it could be interrupted");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no upload seen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = fails(&g, &["import", "-q", "--model", s(&model), "-o", &url]);
    assert!(err.contains("another gmat import"), "{err}");
    let err = fails(&g, &["inspect", &url]);
    assert!(
        err.contains("is being written by another gmat import"),
        "{err}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Killed: no manifest, the lock left behind; readers are told to resume.
    let left = g.list("big/model.gmat");
    assert!(
        !left.iter().any(|(k, _)| k.ends_with("metadata.json")),
        "{left:?}"
    );
    assert!(
        left.iter().any(|(k, _)| k.ends_with(".gmat-lock")),
        "{left:?}"
    );
    let err = fails(
        &g,
        &[
            "export",
            "--model",
            &url,
            "--type",
            "Q8_0",
            "-o",
            s(&p("x.gguf")),
        ],
    );
    assert!(
        err.contains("unfinished import") && err.contains("resume"),
        "{err}"
    );
    assert!(!p("x.gguf").exists());

    // The same command again: takes the dead import's lock over and keeps its objects.
    let uploaded: Vec<(String, String)> = g.list("big/model.gmat/tensors").into_iter().collect();
    let out = ok(&g, &["import", "--model", s(&model), "-o", &url]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("interrupted import"), "{msg}");
    let after = g.list("big/model.gmat/tensors");
    for o in &uploaded {
        assert!(after.contains(o), "{} was uploaded again", o.0);
    }
    assert!(!g
        .list("big/model.gmat")
        .iter()
        .any(|(k, _)| k.ends_with(".gmat-lock")));
    ok(&g, &["verify", "-q", &url]);
    gmat_ok(&["import", "-q", "--model", s(&model), "-o", s(&p("local"))]);
    let local = export(&g, s(&p("local")), "Q8_0", &p("local.gguf"));
    let remote = export(&g, &url, "Q8_0", &p("remote.gguf"));
    assert!(local == remote, "the resumed store exports other bytes");

    // One command deletes a store's every object.
    let out = ok(&g, &["remove", &url]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("removed s3://gmat-test/big/model.gmat"),
        "{msg}"
    );
    assert!(g.list("big").is_empty(), "{:?}", g.list("big"));
    let err = fails(&g, &["remove", &url]);
    assert!(err.contains("is not a gmat store"), "{err}");
}
