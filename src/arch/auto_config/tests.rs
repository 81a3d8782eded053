use super::*;

use crate::arch::all_config_classes;

fn view(json: Json, path: &str) -> (Json, Loaded) {
    load_hparams(
        &ConfigFile {
            json,
            path: path.into(),
        },
        &all_config_classes(),
    )
    .unwrap()
}

#[test]
fn llama_defaults_arrive_for_omitted_keys() {
    let (v, how) = view(
        json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
               "hidden_size": 256, "num_attention_heads": 8, "torch_dtype": "float"}),
        "models/llama-tiny/",
    );
    assert_eq!(how, Loaded::Class("LlamaConfig"));
    assert_eq!(v["head_dim"], json!(32));
    assert_eq!(v["num_key_value_heads"], json!(8));
    assert_eq!(v["rope_theta"], json!(10000.0));
    assert_eq!(v["rms_norm_eps"], json!(1e-6));
    assert_eq!(v["tie_word_embeddings"], json!(false));
    assert_eq!(v["dtype"], json!("float32"));
    assert!(v.get("torch_dtype").is_none());
    assert_eq!(v["_name_or_path"], json!("models/llama-tiny"));
    assert_eq!(v["transformers_version"], json!(TRANSFORMERS_VERSION));
    assert_eq!(v["id2label"], json!({"0": "LABEL_0", "1": "LABEL_1"}));
    assert_eq!(v["max_length"], json!(20));
}

#[test]
fn legacy_rope_type_is_copied_and_a_failed_load_reads_raw_json() {
    let (v, _) = view(
        json!({"model_type": "qwen2", "rope_scaling": {"type": "linear", "factor": 2.0}}),
        "",
    );
    assert_eq!(v["rope_scaling"]["rope_type"], json!("linear"));
    // a linear rope_scaling without a factor: rope_config_validation raises
    let raw = json!({"model_type": "qwen2", "rope_scaling": {"type": "linear"}});
    let (v, how) = view(raw.clone(), "");
    assert!(matches!(how, Loaded::RawJson(_)));
    assert_eq!(v, raw);
    // unknown model types and remote code read raw JSON too
    let raw = json!({"model_type": "kimi_vl", "auto_map": {"AutoConfig": "x.Y"}});
    assert_eq!(view(raw.clone(), "").0, raw);
}

#[test]
fn a_model_type_without_a_transcribed_class_is_refused() {
    let file = ConfigFile::new(json!({"model_type": "granite"}));
    let e = load_hparams(&file, &all_config_classes()).unwrap_err();
    assert!(e.to_string().contains("GraniteConfig"), "{e}");
}

#[test]
fn no_model_type_matches_the_folder_path() {
    let (_, how) = view(json!({"hidden_size": 64}), "kit/c001/llama-tiny");
    assert_eq!(how, Loaded::Class("LlamaConfig"));
    let (_, how) = view(json!({"hidden_size": 64}), "kit/c001/xyz");
    assert!(matches!(how, Loaded::RawJson(_)));
}

#[test]
fn gemma3_nests_its_text_and_vision_configs() {
    let (v, _) = view(
        json!({"model_type": "gemma3", "text_config": {"hidden_size": 64,
               "num_hidden_layers": 2}, "image_token_id": 7}),
        "",
    );
    assert_eq!(v["text_config"]["model_type"], json!("gemma3_text"));
    assert_eq!(v["text_config"]["head_dim"], json!(256));
    assert_eq!(
        v["text_config"]["layer_types"],
        json!(["sliding_attention", "sliding_attention"])
    );
    assert!(v["text_config"].get("transformers_version").is_none());
    assert_eq!(v["vision_config"]["image_size"], json!(224));
    assert_eq!(v["image_token_index"], json!(7));
}

/// The converter's view of every ablated config.json of the fixtures (`testdata/config-ablation`,
/// written by `bench/parity_configs.py fixtures` from transformers 4.57.6 itself).
#[test]
fn every_ablation_case_gives_the_converters_view() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/config-ablation");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    let mut failures = Vec::new();
    let mut n = 0;
    for f in files {
        let doc: Json = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let base_view = doc["base_view"].as_object().unwrap();
        for case in doc["cases"].as_array().unwrap() {
            let Some(delta) = case.get("view").filter(|v| !v.is_null()) else {
                continue;
            };
            n += 1;
            let config = crate::testkit::apply_ops(&doc["config"], &case["ops"]);
            let mut expected = base_view.clone();
            for (k, v) in delta["set"].as_object().unwrap() {
                expected.insert(k.clone(), v.clone());
            }
            for k in delta["del"].as_array().unwrap() {
                expected.shift_remove(k.as_str().unwrap());
            }
            let file = ConfigFile {
                json: config,
                path: case["path"].as_str().unwrap().into(),
            };
            let got = match load_hparams(&file, &all_config_classes()) {
                Ok((v, _)) => v,
                Err(e) => {
                    failures.push(format!("{} {}: {e}", doc["model"], case["desc"]));
                    continue;
                }
            };
            let got = got.as_object().unwrap();
            let mut diffs = Vec::new();
            for (k, v) in &expected {
                match got.get(k) {
                    None => diffs.push(format!("missing {k}")),
                    Some(g) if g != v => diffs.push(format!("{k}: {g} vs {v}")),
                    _ => {}
                }
            }
            for k in got.keys() {
                if !expected.contains_key(k) {
                    diffs.push(format!("extra {k}"));
                }
            }
            if !diffs.is_empty() {
                failures.push(format!(
                    "{} {}: {}",
                    doc["model"],
                    case["desc"],
                    diffs.join("; ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} views differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
