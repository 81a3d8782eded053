//! `--metadata`, `--model-name` and `--override-kv` on the real binary: the keys land where the
//! converter and llama-quantize put them, a generated config carries them so that exporting it
//! reproduces the file, and bad values are refused before anything is written.

mod common;

use common::*;
use gmat::gguf::{GgufFile, Value};

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn keys(path: &std::path::Path) -> Vec<(String, Value)> {
    GgufFile::open(path).unwrap().metadata
}

#[test]
fn metadata_file_model_name_and_override_kv() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("example/tiny_llm");
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(dir.path())]);
    let store = dir.path().join("model.gmat");
    let md = dir.path().join("metadata.json");
    std::fs::write(
        &md,
        r#"{"general.author": "Jane Doe", "general.license": "apache-2.0",
            "general.tags": ["tiny", "test"],
            "general.base_models": [{"name": "Base", "organization": "Org"}]}"#,
    )
    .unwrap();
    let out = dir.path().join("q8.gguf");
    let common_args = [
        "--metadata",
        s(&md),
        "--model-name",
        "Tiny Test",
        "--override-kv",
        "llama.context_length=int:4096",
        "--override-kv",
        "general.description=str:made by a test",
    ];
    let mut args = vec![
        "export",
        "-q",
        "--model",
        s(&store),
        "--type",
        "Q8_0",
        "-o",
        s(&out),
    ];
    args.extend(common_args);
    gmat_ok(&args);
    let kv = keys(&out);
    let get = |k: &str| kv.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("general.name"), Some(Value::String("Tiny Test".into())));
    assert_eq!(
        get("general.author"),
        Some(Value::String("Jane Doe".into()))
    );
    assert_eq!(
        get("general.license"),
        Some(Value::String("apache-2.0".into()))
    );
    assert_eq!(get("general.base_model.count"), Some(Value::U32(1)));
    assert_eq!(
        get("general.base_model.0.organization"),
        Some(Value::String("Org".into()))
    );
    assert!(matches!(get("general.tags"), Some(Value::Array(_, t)) if t.len() == 2));
    // llama-quantize: int overrides as u32, each override moved to the end, in order
    assert_eq!(get("llama.context_length"), Some(Value::U32(4096)));
    let names: Vec<&str> = kv
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !k.starts_with("gmat."))
        .collect();
    assert_eq!(
        &names[names.len() - 2..],
        ["llama.context_length", "general.description"]
    );
    // authorship keys sit where the converter writes them: after general.name
    let pos = |k: &str| names.iter().position(|n| *n == k).unwrap();
    assert!(pos("general.name") < pos("general.author"));
    assert!(pos("general.author") < pos("general.license"));

    // the generated config carries all of it, and reproduces the file byte for byte
    let cfg = dir.path().join("export_config.json");
    let mut gen = vec![
        "export",
        "-q",
        "--model",
        s(&store),
        "--type",
        "Q8_0",
        "--generate-config",
        s(&cfg),
    ];
    gen.extend(common_args);
    gmat_ok(&gen);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("\"override_kv\"") && text.contains("Jane Doe"),
        "{text}"
    );
    let again = dir.path().join("again.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&store),
        "--config",
        s(&cfg),
        "-o",
        s(&again),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn bad_metadata_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("example/tiny_llm");
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(dir.path())]);
    let store = dir.path().join("model.gmat");
    let out = dir.path().join("out.gguf");
    let export = |extra: &[&str]| {
        let mut a = vec![
            "export",
            "-q",
            "--model",
            s(&store),
            "--type",
            "Q8_0",
            "-o",
            s(&out),
        ];
        a.extend(extra);
        gmat_err(&a)
    };
    let err = export(&["--override-kv", "general.author=text:x"]);
    assert!(err.contains("invalid type for KV override"), "{err}");
    let err = export(&["--override-kv", "x=bool:maybe"]);
    assert!(err.contains("invalid boolean"), "{err}");
    let md = dir.path().join("md.json");
    std::fs::write(&md, r#"{"general.autor": "typo"}"#).unwrap();
    let err = export(&["--metadata", s(&md)]);
    assert!(err.contains("general.autor"), "{err}");
    std::fs::write(&md, r#"["not", "an", "object"]"#).unwrap();
    let err = export(&["--metadata", s(&md)]);
    assert!(err.contains("expected a JSON object"), "{err}");
    assert!(!out.exists());
}
