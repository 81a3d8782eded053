//! Split output: shard names and split keys as llama-gguf-split writes them, metadata only in the
//! first shard, and the shards together holding exactly the unsplit file's tensors.

mod common;

use common::*;
use gmat::gguf::{GgufFile, Value};

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn shards_hold_the_unsplit_file() {
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
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&d("st")),
        "--type",
        "Q8_0",
        "-o",
        s(&d("full.gguf")),
    ]);
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&d("st")),
        "--type",
        "Q8_0",
        "--shard-max-tensors",
        "8",
        "-o",
        s(&d("m.gguf")),
    ]);
    let full = GgufFile::open(&d("full.gguf")).unwrap();
    let names: Vec<_> = (1..=3)
        .map(|i| d(&format!("m-{i:05}-of-00003.gguf")))
        .collect();
    assert!(!d("m.gguf").exists() && !d("m-00001-of-00004.gguf").exists());
    let mut seen = 0;
    for (i, p) in names.iter().enumerate() {
        let f = GgufFile::open(p).unwrap();
        assert_eq!(f.get("split.no"), Some(&Value::U16(i as u16)));
        assert_eq!(f.get("split.count"), Some(&Value::U16(3)));
        assert_eq!(f.get("split.tensors.count"), Some(&Value::I32(21)));
        let non_split = f
            .metadata
            .iter()
            .filter(|(k, _)| !k.starts_with("split."))
            .count();
        if i == 0 {
            assert_eq!(non_split, full.metadata.len());
        } else {
            assert_eq!(non_split, 0, "metadata belongs in the first shard only");
        }
        assert!(f.tensors.len() <= 8);
        for t in &f.tensors {
            let u = full.tensor(&t.name).unwrap();
            assert_eq!((u.ggml_type, &u.dims), (t.ggml_type, &t.dims));
            assert_eq!(f.tensor_data(t), full.tensor_data(u), "{}", t.name);
            seen += 1;
        }
    }
    assert_eq!(seen, full.tensors.len());
    // A size limit (decimal units, as llama-gguf-split) gives shards too.
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&d("st")),
        "--type",
        "BF16",
        "--shard-size",
        "1M",
        "-o",
        s(&d("b.gguf")),
    ]);
    assert!(d("b-00001-of-00003.gguf").exists() && d("b-00003-of-00003.gguf").exists());
}
