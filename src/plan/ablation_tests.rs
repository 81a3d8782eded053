//! The config ablation fixtures (`testdata/config-ablation`, written by
//! `bench/parity_configs.py fixtures` from the reference converter): for every edited
//! config.json, gmat's hyper-parameter metadata must change from the kit's as the converter's
//! did, and where the converter refused or wrote a file llama.cpp refuses, gmat must refuse.
//! Needs neither `../shared` nor Python: the tensors are the fixture's names and shapes, and the
//! tokenizer steps (not part of a config ablation) are left out.

use std::path::Path;

use serde_json::{Map, Value as Json};

use super::llama_load;
use crate::arch::tokenizer::ModelDir;
use crate::arch::{self, ConfigFile, Cx, Hparams, Kv, ModelKind, NameMap, SourceTensor};
use crate::gguf::{Value, ValueType};
use crate::source::Dtype;

/// What gmat makes of a case without its tokenizer: the architecture's metadata (keys under
/// `<arch>.`), or the first refusal.
fn metadata(
    config: &Json,
    path: &str,
    sources: &[SourceTensor],
    n_tokens: Option<u64>,
    dir: &Path,
) -> anyhow::Result<Map<String, Json>> {
    let file = ConfigFile {
        json: config.clone(),
        path: path.into(),
    };
    let spec = arch::detect(&Hparams::new(&file.json)?)?;
    let hp = spec.hparams(&file)?;
    let block_count = spec.block_count(&hp)?;
    let names = NameMap::new(spec.gguf_arch(), block_count as usize)?;
    let md = ModelDir::new(dir);
    let cx = Cx {
        hp: &hp,
        text: &hp,
        dir,
        md: &md,
        names: &names,
        block_count,
        file_type: 0,
    };
    let mut kv = Kv::for_arch(spec.gguf_arch());
    kv.set(
        "general.architecture",
        Value::String(spec.gguf_arch().into()),
    );
    let out = arch::convert_tensors(spec, &cx, sources, &mut kv)?;
    spec.set_gguf_parameters(&cx, &mut kv)?;
    let mut md_vec = kv.into_vec();
    if let (Some(n), ModelKind::Text) = (n_tokens, spec.kind()) {
        md_vec.push((
            "tokenizer.ggml.tokens".into(),
            Value::Array(
                ValueType::String,
                vec![Value::String(String::new()); n as usize],
            ),
        ));
        if spec.gguf_arch() == "bert" {
            // written by BertModel.set_vocab: type_vocab_size, 1 when absent
            let n = hp.u32_or("type_vocab_size", 1)?;
            md_vec.push(("tokenizer.ggml.token_type_count".into(), Value::U32(n)));
        }
        let shapes: Vec<(String, Vec<u64>)> = out
            .iter()
            .map(|t| (t.name.clone(), t.shape.iter().rev().copied().collect()))
            .collect();
        if let Err(r) = llama_load::check(&md_vec, &shapes) {
            // the export's own message, naming the keys the failed check read and where
            // config.json gave them (or did not)
            anyhow::bail!("{}", super::explain_refusal(&r, &md_vec, &hp));
        }
    }
    let prefix = format!("{}.", spec.gguf_arch());
    Ok(md_vec
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k, value_json(&v)))
        .collect())
}

/// A metadata value as the fixtures hold it (gguf-py's `contents()`, floats through f32).
fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(n) => Json::from(*n),
        Value::I8(n) => Json::from(*n),
        Value::U16(n) => Json::from(*n),
        Value::I16(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::I32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::F32(f) => Json::from(f64::from(*f)),
        Value::F64(f) => Json::from(*f),
        Value::Bool(b) => Json::from(*b),
        Value::String(s) => Json::from(s.clone()),
        Value::Array(_, a) => Json::Array(a.iter().map(value_json).collect()),
    }
}

/// The fixture's metadata (base with the case's delta), values only, under `prefix`.
fn expected(base: &Map<String, Json>, delta: &Json, prefix: &str) -> Map<String, Json> {
    let mut m = base.clone();
    if let Some(set) = delta["set"].as_object() {
        for (k, v) in set {
            m.insert(k.clone(), v.clone());
        }
    }
    if let Some(del) = delta["del"].as_array() {
        for k in del.iter().filter_map(Json::as_str) {
            m.shift_remove(k);
        }
    }
    m.into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k, v[1].clone()))
        .collect()
}

fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => a == b,
    }
}

#[test]
fn every_ablation_case_gives_the_converters_metadata_or_refusal() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/config-ablation");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/config-ablation")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (mut n, mut failures) = (0, Vec::new());
    for f in files {
        let doc: Json = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let model = doc["model"].as_str().unwrap_or_default();
        let sources: Vec<SourceTensor> = doc["source_tensors"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let dtype: Dtype = serde_json::from_value(t[1].clone()).unwrap();
                let shape: Vec<u64> = serde_json::from_value(t[2].clone()).unwrap();
                SourceTensor::new(i, t[0].as_str().unwrap().into(), dtype, shape)
            })
            .collect();
        let base_meta = doc["base_metadata"].as_object().unwrap();
        let arch_name = base_meta["general.architecture"][1]
            .as_str()
            .unwrap()
            .to_string();
        let prefix = format!("{arch_name}.");
        let tokens = |m: &Json| m["set"]["tokenizer.ggml.tokens"][1]["len"].as_u64();
        let base_tokens = base_meta
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v[1]["len"].as_u64());
        // the kit's tokenizer files where a model's tensors need them (Gemma 3 cuts its
        // embedding rows to the vocabulary): testdata/config-ablation/<model>/
        let tok_dir = dir.join(model);
        let tok_dir = if tok_dir.is_dir() {
            tok_dir
        } else {
            Path::new("/nonexistent-config-ablation").to_path_buf()
        };
        let path = format!("{model}/base/{model}");
        let ours_base = match metadata(&doc["config"], &path, &sources, base_tokens, &tok_dir) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{model} base: {e:#}"));
                continue;
            }
        };
        let theirs_base = expected(base_meta, &Json::Null, &prefix);
        for case in doc["cases"].as_array().unwrap() {
            if case["converter"] == "not run" {
                continue; // only its view is known (checked by the auto_config test)
            }
            n += 1;
            let desc = format!(
                "{model} {} {}",
                case["id"].as_str().unwrap_or(""),
                case["desc"].as_str().unwrap_or("")
            );
            let config = crate::testkit::apply_ops(&doc["config"], &case["ops"]);
            let path = case["path"].as_str().unwrap_or_default();
            let n_tokens = case.get("metadata").and_then(tokens).or(base_tokens);
            let ours = metadata(&config, path, &sources, n_tokens, &tok_dir);
            match (case["converter"].as_str().unwrap_or(""), ours) {
                ("writes", Ok(m)) => {
                    // the converter's change from the kit's config, and gmat's, key by key
                    let theirs = expected(base_meta, &case["metadata"], &prefix);
                    let mut keys: Vec<&String> = theirs
                        .keys()
                        .chain(m.keys())
                        .chain(theirs_base.keys())
                        .collect();
                    keys.sort();
                    keys.dedup();
                    for k in keys {
                        let t_changed = !opt_same(theirs.get(k), theirs_base.get(k));
                        let o_changed = !opt_same(m.get(k), ours_base.get(k));
                        if (t_changed || o_changed) && !opt_same(m.get(k), theirs.get(k)) {
                            failures.push(format!(
                                "{desc}: {k}: gmat {:?}, converter {:?}",
                                m.get(k),
                                theirs.get(k)
                            ));
                        }
                    }
                }
                ("writes", Err(e)) => {
                    failures.push(format!("{desc}: gmat refuses, the converter writes: {e:#}"))
                }
                (_, Err(e)) => {
                    // one clear error: it names a config.json key the case edits, or the tensor
                    // that contradicts the metadata
                    let e = format!("{e:#}");
                    let edited = case["ops"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|op| {
                            let last = match &op[1] {
                                Json::Array(p) => p.last().and_then(Json::as_str),
                                p => p.as_str().and_then(|p| p.rsplit('.').next()),
                            };
                            last.map(str::to_string)
                        });
                    // a removed object (text_config) is named by the keys it held
                    let held = case["ops"].as_array().into_iter().flatten().flat_map(|op| {
                        let mut v = &doc["config"];
                        for p in op[1].as_array().into_iter().flatten() {
                            v = &v[p.as_str().unwrap_or_default()];
                        }
                        v.as_object().into_iter().flat_map(|o| o.keys().cloned())
                    });
                    let names_key = edited.chain(held).any(|k| e.contains(&k));
                    let names_tensor = e.contains(".weight") || e.contains("tensor ");
                    if !names_key && !names_tensor {
                        failures.push(format!(
                            "{desc}: gmat's refusal names neither the edited key nor a tensor: {e}"
                        ));
                    }
                }
                (what, Ok(_)) => {
                    // refusals that come from the tokenizer are out of this test's reach
                    let gmat = case["gmat_error"].as_str().unwrap_or("");
                    if !gmat.contains("tokenizer") {
                        failures.push(format!("{desc}: the converter {what}; gmat writes"));
                    }
                }
            }
        }
    }
    assert!(n > 0, "no cases in {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {n} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn opt_same(a: Option<&Json>, b: Option<&Json>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}
