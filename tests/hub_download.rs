//! The download path of `gmat import --model ORG/NAME` against a stand-in for the Hub on a
//! local port (no network): the repo's file list from `/api/models/ORG/NAME/revision/REV`,
//! files from `/ORG/NAME/resolve/REV/FILE` with the headers the Hub sends (`ETag`,
//! `X-Repo-Commit`, `Content-Range` for `Range` requests), and its error codes
//! (`X-Error-Code: GatedRepo` / `RepoNotFound`). Checks what lands in the cache (blobs,
//! snapshot symlinks, refs/main), that a `.part` file is resumed, and the error messages.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use sha2::{Digest, Sha256};

const COMMIT: &str = "3333333333333333333333333333333333333333";
const FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Serves `files` as repo `org/tiny_llm` at main; `org/gated` answers 401 GatedRepo for files;
/// anything else is 404 RepoNotFound. Returns the base URL and the log of `Range` headers.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("range") {
                        range = Some(v.trim().to_string());
                    }
                }
            }
            let reply = |status: &str, headers: &[(&str, String)], body: &[u8]| {
                let mut h = format!(
                    "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    h.push_str(&format!("{k}: {v}\r\n"));
                }
                h.push_str("\r\n");
                let mut out = h.into_bytes();
                out.extend_from_slice(body);
                out
            };
            let resp = if path == "/api/models/org/tiny_llm/revision/main" {
                let siblings: Vec<serde_json::Value> = files
                    .keys()
                    .map(|f| serde_json::json!({"rfilename": f}))
                    .collect();
                let body = serde_json::json!({"sha": COMMIT, "siblings": siblings}).to_string();
                reply(
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    body.as_bytes(),
                )
            } else if let Some(f) = path.strip_prefix("/org/tiny_llm/resolve/main/") {
                let data = &files[f];
                let start: usize = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split('-').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let end = if range.as_deref().is_some_and(|r| r.ends_with("-0")) {
                    1
                } else {
                    data.len()
                };
                log2.lock()
                    .unwrap()
                    .push(format!("{f} {}", range.clone().unwrap_or_default()));
                let headers = [
                    ("ETag", format!("\"{}\"", sha(data))),
                    ("X-Repo-Commit", COMMIT.to_string()),
                    (
                        "Content-Range",
                        format!("bytes {start}-{}/{}", end.max(1) - 1, data.len()),
                    ),
                ];
                reply("206 Partial Content", &headers, &data[start.min(end)..end])
            } else if path.starts_with("/api/models/org/gated/") {
                let body = serde_json::json!({"sha": COMMIT, "siblings": [{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}]}).to_string();
                reply("200 OK", &[], body.as_bytes())
            } else if path.starts_with("/org/gated/") {
                reply(
                    "401 Unauthorized",
                    &[
                        ("X-Error-Code", "GatedRepo".into()),
                        (
                            "X-Error-Message",
                            "Access to model org/gated is restricted.".into(),
                        ),
                    ],
                    b"",
                )
            } else {
                reply(
                    "401 Unauthorized",
                    &[("X-Error-Code", "RepoNotFound".into())],
                    b"",
                )
            };
            let _ = stream.write_all(&resp);
        }
    });
    (url, log)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gmat"))
        .env("GMAT_CACHE_SIZE", "0")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HOME")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn downloads_into_the_hub_layout_and_resumes() {
    let example = repo().join("example/tiny_llm");
    let files: HashMap<String, Vec<u8>> = FILES
        .iter()
        .map(|f| (f.to_string(), std::fs::read(example.join(f)).unwrap()))
        .collect();
    let (url, log) = serve(files.clone());
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("hub");
    let repo_dir = cache.join("models--org--tiny_llm");
    // An interrupted earlier download: the first 1000 bytes of the weights.
    let weights = &files["model.safetensors"];
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::write(
        repo_dir
            .join("blobs")
            .join(format!("{}.part", sha(weights))),
        &weights[..1000],
    )
    .unwrap();
    let env = [("HF_HUB_CACHE", s(&cache)), ("HF_ENDPOINT", url.as_str())];
    let out = d.path().join("out");
    let o = run(&["import", "-q", "-m", "org/tiny_llm", "-o", s(&out)], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The cache as huggingface_hub lays it out.
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    for f in FILES {
        let link = repo_dir.join("snapshots").join(COMMIT).join(f);
        let target = std::fs::read_link(&link).unwrap();
        assert!(
            target.starts_with("../../blobs"),
            "{f}: {}",
            target.display()
        );
        assert_eq!(std::fs::read(&link).unwrap(), files[*f], "{f}");
    }
    assert!(
        log.lock()
            .unwrap()
            .contains(&"model.safetensors bytes=1000-".to_string()),
        "{:?}",
        log.lock().unwrap()
    );
    let gguf = d.path().join("a.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        s(&out),
        "--type",
        "BF16",
        "-o",
        s(&gguf),
    ]);
    assert_parity(&gguf, &repo().join("testdata/example/tiny_llm-bf16.gguf"));

    // A second run finds everything cached: no file is fetched again.
    let before = log.lock().unwrap().len();
    let o = run(
        &[
            "import",
            "-q",
            "-m",
            "org/tiny_llm",
            "-o",
            s(&d.path().join("out2")),
        ],
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(log.lock().unwrap().len(), before);

    // Gated and missing repos.
    let o = run(
        &["import", "-m", "org/gated", "-o", s(&d.path().join("g"))],
        &env,
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        e.contains("gated") && e.contains("HF_TOKEN") && e.contains("huggingface-cli login"),
        "{e}"
    );
    let o = run(
        &["import", "-m", "org/none", "-o", s(&d.path().join("n"))],
        &env,
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        e.contains("no such repo on the Hub") && e.contains("org/none"),
        "{e}"
    );
}
