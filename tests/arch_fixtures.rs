//! Every architecture family on the small fixtures of testdata/arch (made by
//! tools/make_arch_fixtures.py with the reference converter and llama-quantize): each fixture's
//! HF folder is assembled here (config and side files, the shared tokenizer, model.safetensors
//! from tensors.json with the deterministic generator), imported and exported by the real
//! binary at the reference's file types, and every GGUF is compared with the digest of the
//! reference's in expected.json. Needs neither ../shared nor Python.
//!
//! Key and tensor order are checked against the converter's files; llama-quantize re-sorts
//! tensors and appends `general.quantization_version` and `general.file_type`, and gmat keeps
//! the converter's order there (the compatibility contract is per key and per tensor name).

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Files of a fixture folder that are not part of the HF model folder.
const NOT_HF: &[&str] = &["fixture.json", "tensors.json", "expected.json", "README.md"];

/// Outputs known to differ from their reference: (fixture, output label, the exact differences,
/// why). Anything else that differs fails, and so does a listed output that stops differing.
const KNOWN_FAILURES: &[(&str, &str, &[&str], &str)] = &[
    (
        "bert-mean",
        "Q8_0-convert",
        &["tensor dims differ: token_types.weight: ours [32] | reference [32, 1]"],
        TWO_Q8_0_ROUTES,
    ),
    (
        "qwen2moe-shared",
        "Q8_0-convert",
        &[
            "tensor dims differ: blk.0.ffn_gate_inp_shexp.weight: ours [32] | reference [32, 1]",
            "tensor dims differ: blk.1.ffn_gate_inp_shexp.weight: ours [32] | reference [32, 1]",
        ],
        TWO_Q8_0_ROUTES,
    ),
];

/// Fixtures whose reference files llama.cpp cannot load, which gmat refuses instead of writing
/// (issue 18: a config that contradicts the tensors): (fixture, what gmat's error must say, why).
const REFUSED: &[(&str, &str, &str)] = &[(
    "gemma3-trim",
    "tensor 'token_embd.weight' has wrong shape; expected 32, 30522, got 32, 75",
    "the converter trims token_embd to the tokenizer's 75 entries but pads the token list to \
     config.json's vocab_size 30522; llama.cpp's loader refuses that shape (and this fixture's \
     WordPiece vocabulary written as gpt2 has no merges, so llama-simple refuses it earlier)",
)];

/// Why gmat's Q8_0 cannot match both reference routes.
const TWO_Q8_0_ROUTES: &str = "the converter's --outtype q8_0 keeps a [1, n] tensor's outer \
    dimension of size 1, llama-quantize drops it (ggml_n_dims); gmat's Q8_0 follows \
    llama-quantize, as its compatibility contract says for every quantized type";

fn arch_dir() -> PathBuf {
    repo().join("testdata/arch")
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(arch_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.file_name().unwrap() != "tokenizers")
        .collect();
    v.sort();
    v
}

fn read_json(p: &Path) -> serde_json::Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Copies `from` into `to` recursively, leaving out top-level files named in `skip`.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if skip.contains(&name.as_str()) {
            continue;
        }
        if p.is_dir() {
            copy_tree(&p, &to.join(&name), &[]);
        } else {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

/// The HF folder of fixture `fx`, written into `hf`.
fn assemble(fx: &Path, hf: &Path) {
    let meta = read_json(&fx.join("fixture.json"));
    copy_tree(fx, hf, NOT_HF);
    let tok = meta["tokenizer"].as_str().expect("fixture.json: tokenizer");
    let mut skip: Vec<&str> = vec!["README.md"];
    if let Some(omit) = meta["omit"].as_array() {
        skip.extend(omit.iter().map(|f| f.as_str().unwrap()));
    }
    copy_tree(&arch_dir().join("tokenizers").join(tok), hf, &skip);
    let tensors: Vec<(String, String, Vec<u64>, Vec<u8>)> = read_json(&fx.join("tensors.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t[0].as_str().unwrap().to_string();
            let dtype = t[1].as_str().unwrap().to_string();
            let shape: Vec<u64> = t[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            let n = shape.iter().product::<u64>() as usize;
            let data = fixture_values(&name, &dtype, n);
            (name, dtype, shape, data)
        })
        .collect();
    write_safetensors(&hf.join("model.safetensors"), &tensors);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Imports fixture `fx` and checks every expected output; returns the failures, one line
/// each (with up to a dozen differences).
fn check(fx: &Path) -> Vec<String> {
    let name = fx.file_name().unwrap().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join(name);
    assemble(fx, &hf);
    let store = dir.path().join("store");
    let out = gmat(&["import", "-q", "--model", s(&hf), "-o", s(&store)]);
    if !out.status.success() {
        return vec![format!(
            "{name}: import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let expected = read_json(&fx.join("expected.json"));
    let mut failures = Vec::new();
    for (label, exp) in expected["outputs"].as_object().unwrap() {
        let known = KNOWN_FAILURES.iter().find(|k| k.0 == name && k.1 == label);
        let gguf = dir.path().join(format!("{label}.gguf"));
        let mut args = vec!["export", "-q", "--model", s(&store), "-o", s(&gguf)];
        args.extend(
            exp["gmat_export"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap()),
        );
        let out = gmat(&args);
        let check_order = exp["reference"]
            .as_str()
            .unwrap()
            .starts_with("convert_hf_to_gguf.py");
        if let Some(r) = REFUSED.iter().find(|r| r.0 == name) {
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !err.contains(r.1) {
                failures.push(format!(
                    "{name} {label}: gmat must refuse ({}) with {:?}; it gave {}: {err}",
                    r.2, r.1, out.status
                ));
            }
            continue;
        }
        let diffs = if out.status.success() {
            digest_diffs(&gguf_digest(&gguf), exp, check_order)
        } else {
            vec![format!(
                "export failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )]
        };
        match (diffs.is_empty(), known) {
            (true, None) => {}
            (true, Some(k)) => failures.push(format!(
                "{name} {label}: listed as a known failure ({}) but matches the reference now",
                k.3
            )),
            (false, Some(k)) if diffs.iter().map(String::as_str).eq(k.2.iter().copied()) => {}
            (false, _) => failures.push(format!(
                "{name} {label} ({} differences):\n    {}",
                diffs.len(),
                diffs[..diffs.len().min(12)].join("\n    ")
            )),
        }
    }
    failures
}

#[test]
fn every_arch_fixture_matches_the_reference() {
    let all = fixtures();
    assert!(
        all.len() >= 10,
        "expected the arch fixtures in {}",
        arch_dir().display()
    );
    // two workers: the fixtures are small, the binary runs are what takes time
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(fx) = all.get(i) else { break };
                let f = check(fx);
                failures.lock().unwrap().extend(f);
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} fixture outputs differ from the reference:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_generator_matches_its_python_twin() {
    // values printed by tools/make_arch_fixtures.py `fixture_bits`
    let hex = |b: Vec<u8>| -> String { b.iter().map(|x| format!("{x:02x}")).collect() };
    assert_eq!(
        hex(fixture_values("model.embed_tokens.weight", "BF16", 4)),
        "7c3fcbbc4cbc43bd"
    );
    assert_eq!(hex(fixture_values("a", "F16", 4)), "c0342f1cb1b2d8ac");
    assert_eq!(
        hex(fixture_values("x", "F32", 4)),
        "0000d1be00005cbf000097be0000fd3e"
    );
    assert_eq!(hex(fixture_values("", "BF16", 4)), "3e3d78bffe3d7b3e");
}

/// A BPE tokenizer whose hash llama.cpp's table does not know is refused with the way out named;
/// `--pre-tokenizer` names the pre-tokenizer, and with the original one the output equals the
/// reference's file but for the changed normalizer flag (the vocabulary lists do not depend on
/// how text is split).
#[test]
fn unknown_pre_tokenizers_are_refused_and_can_be_named() {
    let fx = arch_dir().join("qwen2moe-shared");
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("qwen2moe-shared");
    assemble(&fx, &hf);
    // no lower-casing: the check string tokenizes differently, so the hash is unknown
    let tj = hf.join("tokenizer.json");
    let text = std::fs::read_to_string(&tj).unwrap();
    let changed = text.replacen("\"lowercase\": true", "\"lowercase\": false", 1);
    assert_ne!(
        text,
        changed,
        "expected a lowercase normalizer in {}",
        tj.display()
    );
    std::fs::write(&tj, changed).unwrap();
    let store = dir.path().join("store");
    gmat_ok(&["import", "-q", "--model", s(&hf), "-o", s(&store)]);
    let gguf = dir.path().join("out.gguf");
    let export = |extra: &[&str]| {
        let mut a = vec![
            "export",
            "-q",
            "--model",
            s(&store),
            "--type",
            "BF16",
            "-o",
            s(&gguf),
        ];
        a.extend(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let args = export(&[]);
    let err = gmat_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("not recognized") && err.contains("--pre-tokenizer"),
        "{err}"
    );
    assert!(!gguf.exists());
    let args = export(&["--pre-tokenizer", "no-such-name"]);
    let err = gmat_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("no-such-name") && err.contains("llama-bpe"),
        "{err}"
    );
    let args = export(&["--pre-tokenizer", "jina-v2-en"]);
    gmat_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let expected = read_json(&fx.join("expected.json"));
    let diffs = digest_diffs(&gguf_digest(&gguf), &expected["outputs"]["BF16"], true);
    // the one change made to the tokenizer is the one difference
    assert_eq!(
        diffs,
        ["key differs: tokenizer.ggml.normalizer.lowercase: ours false | reference true"]
    );
}
