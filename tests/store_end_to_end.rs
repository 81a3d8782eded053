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
    assert!(!out.exists() && !p("after.gguf.partial").exists());
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
    assert!(e.contains("its own base store"), "{e}");
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
