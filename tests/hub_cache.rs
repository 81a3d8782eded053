//! `gmat import --model ORG/NAME`: a model found in a Hugging Face cache folder laid out as the
//! Hub client writes it (`models--ORG--NAME/blobs/<hash>`, `snapshots/<commit>/<file>` symlinks
//! to the blobs, `refs/<branch>` holding the commit), built here from the example model. No test
//! touches the network: downloads are forbidden (`HF_HUB_OFFLINE=1`) or pointed at a closed
//! local port.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use sha2::{Digest, Sha256};

const REPO: &str = "gmat-test/tiny_llm";
const MAIN: &str = "1111111111111111111111111111111111111111";
const DEV: &str = "2222222222222222222222222222222222222222";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The files of the example model a Hub repo of it would hold.
const FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
];

/// Writes `files` of `src` into `cache` as snapshot `commit` of REPO, with blobs named by the
/// sha256 of their contents (the Hub's etag of LFS files) and relative symlinks, as
/// huggingface_hub does; `branch` (if any) is a ref to the commit.
fn add_snapshot(cache: &Path, src: &Path, commit: &str, branch: Option<&str>) {
    let repo = cache.join(format!("models--{}", REPO.replace('/', "--")));
    let blobs = repo.join("blobs");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for f in FILES {
        let bytes = std::fs::read(src.join(f)).unwrap();
        let hash: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(blobs.join(&hash), &bytes).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{hash}"), snap.join(f)).unwrap();
    }
    if let Some(b) = branch {
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join(b), commit).unwrap();
    }
}

fn example() -> PathBuf {
    repo().join("example/tiny_llm")
}

/// A cache with `main` at the example model and `dev` at a copy whose config differs.
fn cache_with_two_revisions(root: &Path) -> PathBuf {
    let cache = root.join("hub");
    add_snapshot(&cache, &example(), MAIN, Some("main"));
    let dev_src = root.join("dev-src");
    std::fs::create_dir_all(&dev_src).unwrap();
    for f in FILES {
        std::fs::copy(example().join(f), dev_src.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev_src.join("config.json")).unwrap()).unwrap();
    cfg["rms_norm_eps"] = serde_json::json!(0.000123);
    std::fs::write(dev_src.join("config.json"), cfg.to_string()).unwrap();
    add_snapshot(&cache, &dev_src, DEV, Some("dev"));
    cache
}

fn run(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gmat"));
    c.env("GMAT_CACHE_SIZE", "0")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME")
        .env_remove("HF_TOKEN")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_HUB_OFFLINE")
        .args(args)
        .envs(env.iter().copied());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    c.output().unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "gmat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn err(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "gmat should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn export_bf16(store: &Path, out: &Path) {
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(store),
        "--type",
        "BF16",
        "-o",
        s(out),
    ]);
}

fn rms_eps(gguf: &Path) -> f32 {
    let f = gmat::gguf::GgufFile::open(gguf).unwrap();
    match f.get("llama.attention.layer_norm_rms_epsilon") {
        Some(gmat::gguf::Value::F32(v)) => *v,
        other => panic!("rms eps: {other:?}"),
    }
}

#[test]
fn repo_id_from_the_cache_exports_like_the_folder() {
    let d = tempfile::tempdir().unwrap();
    let cache = cache_with_two_revisions(d.path());
    let out = d.path().join("out");
    let env = [("HF_HUB_CACHE", s(&cache)), ("HF_HUB_OFFLINE", "1")];
    ok(run(
        &["import", "-q", "-m", REPO, "-o", s(&out)],
        &env,
        None,
    ));
    let gguf = d.path().join("a.gguf");
    export_bf16(&out.join("model.gmat"), &gguf);
    // The converter's output for the example folder (testdata/example/README.md); the repo's
    // name is the model's name, as the folder's is.
    assert_parity(&gguf, &repo().join("testdata/example/tiny_llm-bf16.gguf"));
    let manifest = std::fs::read_to_string(out.join("model.gmat/metadata.json")).unwrap();
    assert!(
        manifest.contains(MAIN),
        "source path is the snapshot: {manifest}"
    );
}

#[test]
fn hf_home_and_revisions() {
    let d = tempfile::tempdir().unwrap();
    cache_with_two_revisions(d.path());
    // HF_HOME/hub is the cache when HF_HUB_CACHE is unset.
    let env = [("HF_HOME", s(d.path())), ("HF_HUB_OFFLINE", "1")];
    for (rev, eps) in [("dev", 0.000123f32), (DEV, 0.000123), (MAIN, 1e-5)] {
        let out = d.path().join(format!("out-{rev}"));
        ok(run(
            &["import", "-q", "-m", REPO, "--revision", rev, "-o", s(&out)],
            &env,
            None,
        ));
        let gguf = out.join("x.gguf");
        export_bf16(&out.join("model.gmat"), &gguf);
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(example().join("config.json")).unwrap()).unwrap();
        let want = if eps == 1e-5 {
            cfg["rms_norm_eps"].as_f64().unwrap() as f32
        } else {
            eps
        };
        assert_eq!(rms_eps(&gguf), want, "revision {rev}");
    }
}

#[test]
fn offline_misses_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let cache = cache_with_two_revisions(d.path());
    let env = [("HF_HUB_CACHE", s(&cache)), ("HF_HUB_OFFLINE", "1")];
    let out = d.path().join("out");
    let e = err(run(
        &["import", "-m", "nobody/nothing", "-o", s(&out)],
        &env,
        None,
    ));
    assert!(
        e.contains("nobody/nothing") && e.contains("HF_HUB_OFFLINE") && e.contains(s(&cache)),
        "{e}"
    );
    let e = err(run(
        &["import", "-m", REPO, "--revision", "v9", "-o", s(&out)],
        &env,
        None,
    ));
    assert!(e.contains("revision v9") && e.contains("dev, main"), "{e}");
    assert!(!out.join("model.gmat").exists());
    // Neither a path nor a repo id.
    let e = err(run(
        &["import", "-m", "./no/such/dir", "-o", s(&out)],
        &env,
        None,
    ));
    assert!(e.contains("no such file or folder"), "{e}");
}

#[test]
fn unreachable_hub_falls_back_to_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let cache = cache_with_two_revisions(d.path());
    // A closed port: the request fails to connect, as without a network.
    let env = [
        ("HF_HUB_CACHE", s(&cache)),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
    ];
    let out = d.path().join("out");
    let o = ok(run(&["import", "-m", REPO, "-o", s(&out)], &env, None));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("cannot reach the Hub"), "{stderr}");
    let e = err(run(
        &["import", "-m", "nobody/nothing", "-o", s(&out)],
        &env,
        None,
    ));
    assert!(
        e.contains("cannot reach the Hub") && e.contains("nobody/nothing"),
        "{e}"
    );
}

#[test]
fn a_local_path_wins_over_a_repo_id() {
    let d = tempfile::tempdir().unwrap();
    let cache = cache_with_two_revisions(d.path());
    // ./gmat-test/tiny_llm holds the dev variant; the cache's main is the example.
    let local = d.path().join(REPO);
    std::fs::create_dir_all(&local).unwrap();
    let dev = cache
        .join("models--gmat-test--tiny_llm/snapshots")
        .join(DEV);
    for f in FILES {
        std::fs::copy(dev.join(f), local.join(f)).unwrap();
    }
    let env = [("HF_HUB_CACHE", s(&cache)), ("HF_HUB_OFFLINE", "1")];
    ok(run(
        &["import", "-q", "-m", REPO, "-o", "out"],
        &env,
        Some(d.path()),
    ));
    let gguf = d.path().join("x.gguf");
    export_bf16(&d.path().join("out/model.gmat"), &gguf);
    assert_eq!(rms_eps(&gguf), 0.000123);
    let e = err(run(
        &["import", "-m", REPO, "--revision", "main", "-o", "out2"],
        &env,
        Some(d.path()),
    ));
    assert!(e.contains("--revision") && e.contains("local path"), "{e}");
}
