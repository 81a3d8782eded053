//! `gmat schema`, `gmat completions`, `gmat man`, and what `--generate-config` writes for
//! editors: configs keyed by GGUF tensor name with a `$schema` pointer to a schema beside them.

mod common;

use common::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON")
}

#[test]
fn schemas_describe_every_config_key() {
    let export = json(&gmat_ok(&["schema", "export"]).stdout);
    let props = export["properties"].as_object().unwrap();
    for key in [
        "$schema",
        "target_format",
        "quantization",
        "tensor_map",
        "shard_size",
        "special_token_keys",
        "mmproj",
        "metadata",
        "override_kv",
    ] {
        assert!(props.contains_key(key), "export schema lacks {key}");
    }
    assert_eq!(export["additionalProperties"], false);
    assert_eq!(export["patternProperties"]["^_"], serde_json::json!({}));
    let import = json(&gmat_ok(&["schema", "import"]).stdout);
    assert!(import["properties"]
        .as_object()
        .unwrap()
        .contains_key("tensor_map"));
    let bad = gmat(&["schema", "neither"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither"));
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let out = String::from_utf8(gmat_ok(&["completions", shell]).stdout).unwrap();
        assert!(
            out.contains("gmat") && out.contains("generate-config"),
            "{shell}"
        );
    }
    let man = String::from_utf8(gmat_ok(&["man"]).stdout).unwrap();
    assert!(man.contains(".TH gmat 1"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    gmat_ok(&["man", "--dir", s(dir.path())]);
    let export = std::fs::read_to_string(dir.path().join("gmat-export.1")).unwrap();
    assert!(export.contains("override\\-kv"), "{export}");
}

#[test]
fn generated_configs_point_at_their_schema_and_key_tensors_by_gguf_name() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("example/tiny_llm");
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(dir.path())]);
    let store = dir.path().join("model.gmat");
    let cfg = dir.path().join("cfg").join("export_config.json");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    gmat_ok(&[
        "export",
        "--model",
        s(&store),
        "--type",
        "Q4_K_M",
        "--generate-config",
        s(&cfg),
    ]);
    let c = json(&std::fs::read(&cfg).unwrap());
    let first = c.as_object().unwrap().keys().next().unwrap().clone();
    assert_eq!(first, "$schema");
    assert_eq!(c["$schema"], "./gmat-export-config.schema.json");
    let schema =
        json(&std::fs::read(cfg.parent().unwrap().join("gmat-export-config.schema.json")).unwrap());
    assert_eq!(schema, json(&gmat_ok(&["schema", "export"]).stdout));
    let per = c["quantization"]["per_tensor"].as_object().unwrap();
    assert_eq!(per.keys().next().map(String::as_str), Some("output.weight"));
    assert!(per.contains_key("blk.0.attn_q.weight"), "{per:?}");
    // the config (with its $schema key) reproduces the export
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&store),
        "--config",
        s(&cfg),
        "-o",
        s(&a),
    ]);
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&store),
        "--type",
        "Q4_K_M",
        "-o",
        s(&b),
    ]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // the import side too
    let icfg = dir.path().join("cfg").join("import_config.json");
    gmat_ok(&[
        "import",
        "--model",
        s(&example),
        "--generate-config",
        s(&icfg),
    ]);
    let ic = json(&std::fs::read(&icfg).unwrap());
    assert_eq!(ic["$schema"], "./gmat-import-config.schema.json");
    assert!(icfg
        .parent()
        .unwrap()
        .join("gmat-import-config.schema.json")
        .is_file());
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&example),
        "--config",
        s(&icfg),
        "-o",
        s(&dir.path().join("again")),
    ]);
}
