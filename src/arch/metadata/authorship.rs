//! gguf-py's `Metadata.load` and `Metadata.set_gguf_meta_model`: the sampling defaults and the
//! authorship keys (`general.name`, `basename`, `finetune`, `license`, `base_model.N.*`, `tags`,
//! ...) the converter gathers from the model card (README.md front matter), config.json's
//! `_name_or_path`, the model folder's name, generation_config.json, the `--metadata` override
//! file and `--model-name`, in that order of precedence from lowest to highest.

use std::sync::OnceLock;

use anyhow::{bail, Result};
use indexmap::IndexMap;
use regex::Regex;
use serde_json::{Map, Value as Json};

use super::model_id::{id_to_title, model_id_components, ModelIdParts};
use crate::gguf::{Value, ValueType};

/// Where the converter's metadata comes from, besides the store's side files.
#[derive(Clone, Debug, Default)]
pub struct MetadataSources<'a> {
    /// The model card's front matter (empty without a README.md).
    pub card: Map<String, Json>,
    /// config.json.
    pub hf_params: Option<&'a Json>,
    /// generation_config.json.
    pub generation: Option<&'a Json>,
    /// The name of the folder the model was imported from (the converter's `dir_model.name`).
    pub folder_name: &'a str,
    /// The `--metadata` file / the export config's `metadata` object: GGUF key -> value.
    pub overrides: Map<String, Json>,
    /// `--model-name`.
    pub model_name: Option<&'a str>,
    /// Parameter count of the output (gguf-py's `total_params`).
    pub total_params: i64,
}

/// gguf-py's `Metadata`: attribute name -> value, `None` (absent) or set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelMetadata {
    fields: IndexMap<&'static str, Json>,
}

/// Model card keys read into attributes, in `apply_metadata_heuristic`'s order (the first that
/// is present wins, since a set attribute is not replaced).
const CARD_KEYS: &[(&str, &str)] = &[
    // llama.cpp's own convention
    ("name", "name"),
    ("author", "author"),
    ("version", "version"),
    ("organization", "organization"),
    ("description", "description"),
    ("finetune", "finetune"),
    ("basename", "basename"),
    ("size_label", "size_label"),
    ("source_url", "url"),
    ("source_doi", "doi"),
    ("source_uuid", "uuid"),
    ("source_repo_url", "repo_url"),
    // llama.cpp's HF-style convention
    ("name", "model_name"),
    ("author", "model_author"),
    ("version", "model_version"),
    ("organization", "model_organization"),
    ("description", "model_description"),
    ("finetune", "model_finetune"),
    ("basename", "model_basename"),
    ("size_label", "model_size_label"),
    ("source_url", "model_url"),
    ("source_doi", "model_doi"),
    ("source_uuid", "model_uuid"),
    ("source_repo_url", "model_repo_url"),
    // seen in the wild (TheBloke's cards)
    ("name", "model_name"),
    ("author", "model_creator"),
    ("basename", "model_type"),
    // read after base models and datasets in gguf-py; they touch different attributes
    ("license", "license"),
    ("license_name", "license_name"),
    ("license_link", "license_link"),
];

/// generation_config.json keys -> attributes (`Metadata.load`).
const GENERATION_KEYS: &[(&str, &str)] = &[
    ("sampling_sequence", "sequence"),
    ("sampling_top_k", "top_k"),
    ("sampling_top_p", "top_p"),
    ("sampling_min_p", "min_p"),
    ("sampling_xtc_probability", "xtc_probability"),
    ("sampling_xtc_threshold", "xtc_threshold"),
    ("sampling_temp", "temperature"),
    ("sampling_penalty_last_n", "penalty_last_n"),
    ("sampling_penalty_repeat", "penalty_repeat"),
    ("sampling_mirostat", "mirostat"),
    ("sampling_mirostat_tau", "mirostat_tau"),
    ("sampling_mirostat_eta", "mirostat_eta"),
];

/// How an attribute is written (`set_gguf_meta_model`, gguf-py's `add_*` types).
#[derive(Clone, Copy)]
enum Kind {
    Str,
    I32,
    F32,
    License,
    Entries,
    StrArray,
}

/// Attribute, GGUF key, kind: `set_gguf_meta_model`'s order, which is the file's key order. The
/// override file uses the same keys (plus `general.base_models` / `general.datasets` for the
/// lists of entries).
const WRITE_ORDER: &[(&str, &str, Kind)] = &[
    ("sampling_sequence", "general.sampling.sequence", Kind::Str),
    ("sampling_top_k", "general.sampling.top_k", Kind::I32),
    ("sampling_top_p", "general.sampling.top_p", Kind::F32),
    ("sampling_min_p", "general.sampling.min_p", Kind::F32),
    (
        "sampling_xtc_probability",
        "general.sampling.xtc_probability",
        Kind::F32,
    ),
    (
        "sampling_xtc_threshold",
        "general.sampling.xtc_threshold",
        Kind::F32,
    ),
    ("sampling_temp", "general.sampling.temp", Kind::F32),
    (
        "sampling_penalty_last_n",
        "general.sampling.penalty_last_n",
        Kind::I32,
    ),
    (
        "sampling_penalty_repeat",
        "general.sampling.penalty_repeat",
        Kind::F32,
    ),
    ("sampling_mirostat", "general.sampling.mirostat", Kind::I32),
    (
        "sampling_mirostat_tau",
        "general.sampling.mirostat_tau",
        Kind::F32,
    ),
    (
        "sampling_mirostat_eta",
        "general.sampling.mirostat_eta",
        Kind::F32,
    ),
    ("name", "general.name", Kind::Str),
    ("author", "general.author", Kind::Str),
    ("version", "general.version", Kind::Str),
    ("organization", "general.organization", Kind::Str),
    ("finetune", "general.finetune", Kind::Str),
    ("basename", "general.basename", Kind::Str),
    ("description", "general.description", Kind::Str),
    ("quantized_by", "general.quantized_by", Kind::Str),
    ("size_label", "general.size_label", Kind::Str),
    ("license", "general.license", Kind::License),
    ("license_name", "general.license.name", Kind::Str),
    ("license_link", "general.license.link", Kind::Str),
    ("url", "general.url", Kind::Str),
    ("doi", "general.doi", Kind::Str),
    ("uuid", "general.uuid", Kind::Str),
    ("repo_url", "general.repo_url", Kind::Str),
    ("source_url", "general.source.url", Kind::Str),
    ("source_doi", "general.source.doi", Kind::Str),
    ("source_uuid", "general.source.uuid", Kind::Str),
    ("source_repo_url", "general.source.repo_url", Kind::Str),
    ("base_models", "general.base_model", Kind::Entries),
    ("datasets", "general.dataset", Kind::Entries),
    ("tags", "general.tags", Kind::StrArray),
    ("languages", "general.languages", Kind::StrArray),
];

/// Keys of a base-model or dataset entry, in the order they are written.
const ENTRY_KEYS: &[&str] = &[
    "name",
    "author",
    "version",
    "organization",
    "description",
    "url",
    "doi",
    "uuid",
    "repo_url",
];

/// The keys `--metadata` understands, for its error message.
fn override_keys() -> Vec<String> {
    let mut keys: Vec<String> = WRITE_ORDER
        .iter()
        .filter(|(_, _, kind)| !matches!(kind, Kind::Entries))
        .map(|(_, k, _)| k.to_string())
        .collect();
    keys.extend(["general.base_models".into(), "general.datasets".into()]);
    keys
}

impl ModelMetadata {
    fn get(&self, attr: &str) -> Option<&Json> {
        self.fields.get(attr).filter(|v| !v.is_null())
    }

    fn is_unset(&self, attr: &str) -> bool {
        self.get(attr).is_none()
    }

    fn set(&mut self, attr: &'static str, v: Json) {
        self.fields.insert(attr, v);
    }

    fn set_if_unset(&mut self, attr: &'static str, v: Option<String>) {
        if let Some(v) = v {
            if self.is_unset(attr) {
                self.set(attr, Json::String(v));
            }
        }
    }

    /// `Metadata.load` followed by the converter's `prepare_metadata` fallbacks (the folder
    /// name as the name, the computed size label).
    pub fn load(src: &MetadataSources, computed_size_label: Option<String>) -> Result<Self> {
        let mut m = ModelMetadata::default();
        m.apply_card(&src.card, src.total_params);
        if let Some(Json::String(id)) = src.hf_params.and_then(|p| p.get("_name_or_path")) {
            // only an id ("org/name"), not a path on someone's disk
            if id.matches('/').count() <= 1 {
                m.apply_id(&model_id_components(id, src.total_params));
            }
        }
        m.apply_id(&model_id_components(src.folder_name, src.total_params));

        if let Some(Json::Object(gen)) = src.generation {
            for (attr, key) in GENERATION_KEYS {
                let value = match *key {
                    "penalty_repeat" => gen.get(*key).or_else(|| gen.get("repetition_penalty")),
                    _ => gen.get(*key),
                };
                if let Some(v) = value {
                    m.set(attr, v.clone());
                }
            }
        }

        for (key, value) in &src.overrides {
            let attr = match key.as_str() {
                "general.base_models" => "base_models",
                "general.datasets" => "datasets",
                k => match WRITE_ORDER
                    .iter()
                    .find(|(_, gk, kind)| *gk == k && !matches!(kind, Kind::Entries))
                {
                    Some((attr, _, _)) => attr,
                    None => bail!(
                        "metadata override key `{key}` is not one the converter's --metadata reads \
                         (use --override-kv for other keys); known keys: {}",
                        override_keys().join(", ")
                    ),
                },
            };
            m.set(attr, value.clone());
        }
        if let Some(name) = src.model_name {
            m.set("name", Json::String(name.into()));
        }
        if m.is_unset("name") {
            m.set("name", Json::String(src.folder_name.into()));
        }
        if m.is_unset("size_label") {
            if let Some(label) = computed_size_label {
                m.set("size_label", Json::String(label));
            }
        }
        Ok(m)
    }

    /// The model card part of `apply_metadata_heuristic`.
    fn apply_card(&mut self, card: &Map<String, Json>, total_params: i64) {
        for (attr, key) in CARD_KEYS {
            if let Some(v) = card.get(*key) {
                if self.is_unset(attr) {
                    self.set(attr, v.clone());
                }
            }
        }
        for (attr, keys) in [
            (
                "base_models",
                ["base_model", "base_models", "base_model_sources"],
            ),
            ("datasets", ["datasets", "dataset", "dataset_sources"]),
        ] {
            if !keys.iter().any(|k| card.contains_key(*k)) {
                continue;
            }
            // model_card.get(a, model_card.get(b, model_card.get(c)))
            let value = keys.iter().find_map(|k| card.get(*k));
            let ids: Vec<Json> = match value {
                Some(Json::String(s)) => vec![Json::String(s.clone())],
                Some(Json::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            let mut entries = match self.fields.get(attr) {
                Some(Json::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            for id in ids {
                entries.push(match id {
                    Json::String(s) => Json::Object(entry_from_id(&s, total_params)),
                    Json::Object(o) => Json::Object(o),
                    // gguf-py logs "not in a known format" and still appends an empty entry
                    _ => Json::Object(Map::new()),
                });
            }
            self.set(attr, Json::Array(entries));
        }
        for (attr, keys) in [
            ("tags", ["tags", "pipeline_tag"]),
            ("languages", ["languages", "language"]),
        ] {
            for key in keys {
                let add: Vec<Json> = match card.get(key) {
                    Some(Json::String(s)) => vec![Json::String(s.clone())],
                    Some(Json::Array(a)) => a.clone(),
                    _ => continue,
                };
                let mut cur = match self.fields.get(attr) {
                    Some(Json::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                cur.extend(add);
                self.set(attr, Json::Array(cur));
            }
        }
    }

    /// The `_name_or_path` and folder-name parts of `apply_metadata_heuristic`.
    fn apply_id(&mut self, p: &ModelIdParts) {
        self.set_if_unset("name", p.full_name.as_deref().map(id_to_title));
        self.set_if_unset("organization", p.org.as_deref().map(id_to_title));
        self.set_if_unset("basename", p.basename.clone());
        self.set_if_unset("finetune", p.finetune.clone());
        self.set_if_unset("version", p.version.clone());
        self.set_if_unset("size_label", p.size_label.clone());
    }

    /// `set_gguf_meta_model`: the keys in the converter's order and types. A value of a type
    /// gguf-py cannot write (where the converter stops) is an error naming the key.
    pub fn gguf_keys(&self) -> Result<Vec<(String, Value)>> {
        let mut out = Vec::new();
        for (attr, key, kind) in WRITE_ORDER {
            let Some(v) = self.get(attr) else { continue };
            match kind {
                Kind::Str => out.push((key.to_string(), Value::String(string(v, key)?))),
                Kind::I32 => match v.as_i64() {
                    Some(n) if i32::try_from(n).is_ok() => {
                        out.push((key.to_string(), Value::I32(n as i32)))
                    }
                    Some(n) if n as i32 as i64 != n => {
                        bail!("{key}: {n} does not fit a 32-bit integer")
                    }
                    _ => bail!("{key} must be an integer, found {v}"),
                },
                Kind::F32 => match v.as_f64() {
                    Some(x) => out.push((key.to_string(), Value::F32(x as f32))),
                    None => bail!("{key} must be a number, found {v}"),
                },
                Kind::License => {
                    let s = match v {
                        Json::Array(items) => items
                            .iter()
                            .map(|i| string(i, key))
                            .collect::<Result<Vec<_>>>()?
                            .join(","),
                        other => string(other, key)?,
                    };
                    out.push((key.to_string(), Value::String(s)));
                }
                Kind::StrArray => {
                    let Json::Array(items) = v else {
                        bail!("{key} must be a list of strings, found {v}")
                    };
                    if items.is_empty() {
                        continue; // gguf-py's add_array skips empty lists
                    }
                    let items = items
                        .iter()
                        .map(|i| string(i, key).map(Value::String))
                        .collect::<Result<Vec<_>>>()?;
                    out.push((key.to_string(), Value::Array(ValueType::String, items)));
                }
                Kind::Entries => {
                    let Json::Array(entries) = v else {
                        bail!("{key}s must be a list of objects, found {v}")
                    };
                    out.push((format!("{key}.count"), Value::U32(entries.len() as u32)));
                    for (i, e) in entries.iter().enumerate() {
                        let Json::Object(e) = e else {
                            bail!("{key}.{i} must be an object, found {e}")
                        };
                        for field in ENTRY_KEYS {
                            if let Some(v) = e.get(*field) {
                                let k = format!("{key}.{i}.{field}");
                                out.push((k.clone(), Value::String(string(v, &k)?)));
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn string(v: &Json, key: &str) -> Result<String> {
    match v {
        Json::String(s) => Ok(s.clone()),
        other => bail!("{key} must be a string, found {other}"),
    }
}

/// A base model or dataset given by id or URL in a model card.
fn entry_from_id(id: &str, total_params: i64) -> Map<String, Json> {
    let mut e = Map::new();
    let put = |e: &mut Map<String, Json>, k: &str, v: Option<String>| {
        if let Some(v) = v {
            e.insert(k.into(), Json::String(v));
        }
    };
    if id.starts_with("http://") || id.starts_with("https://") || id.starts_with("ssh://") {
        e.insert("repo_url".into(), Json::String(id.into()));
        if id.contains("huggingface.co") {
            if let Some(hf_id) = hf_url_id(id) {
                let p = model_id_components(hf_id, total_params);
                put(&mut e, "name", p.full_name.as_deref().map(id_to_title));
                put(&mut e, "organization", p.org.as_deref().map(id_to_title));
                put(&mut e, "version", p.version);
            }
        }
    } else {
        let p = model_id_components(id, total_params);
        put(&mut e, "name", p.full_name.as_deref().map(id_to_title));
        put(&mut e, "organization", p.org.as_deref().map(id_to_title));
        put(&mut e, "version", p.version.clone());
        if let (Some(org), Some(full)) = (&p.org, &p.full_name) {
            put(
                &mut e,
                "repo_url",
                Some(format!("https://huggingface.co/{org}/{full}")),
            );
        }
    }
    e
}

/// `re.match(r"https?://huggingface.co/([^/]+/[^/]+)$", url)` (the `.` as any character, as
/// in the converter's pattern).
fn hf_url_id(url: &str) -> Option<&str> {
    static HF_URL: OnceLock<Regex> = OnceLock::new();
    let re = HF_URL.get_or_init(|| {
        Regex::new(r"^https?://huggingface.co/([^/]+/[^/]+)$").expect("static regex")
    });
    re.captures(url).and_then(|c| c.get(1)).map(|m| m.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::metadata::model_card::front_matter;
    use crate::arch::metadata::ParamCount;

    /// The converter's general.* keys for model cards, `_name_or_path`, `--metadata` and
    /// `--model-name` (testdata/general-metadata/README.md says how they were made).
    #[test]
    fn general_keys_match_the_converter() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/general-metadata/cases.json"
        );
        let cases: Vec<Json> =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        assert!(cases.len() >= 4);
        for c in &cases {
            let name = c["case"].as_str().unwrap_or("?");
            let total = c["total_params"].as_i64().expect("total_params");
            let card = match c["readme"].as_str() {
                Some(text) => front_matter(text).expect("card"),
                None => Map::new(),
            };
            let mut hf = serde_json::json!({});
            if let Some(id) = c["name_or_path"].as_str() {
                hf["_name_or_path"] = Json::String(id.into());
            }
            let overrides = match &c["metadata"] {
                Json::Object(m) => m.clone(),
                _ => Map::new(),
            };
            let src = MetadataSources {
                card,
                hf_params: Some(&hf),
                generation: None,
                folder_name: c["folder"].as_str().expect("folder"),
                overrides,
                model_name: c["model_name"].as_str(),
                total_params: total,
            };
            let p = ParamCount {
                total: total as u64,
                shared: total as u64,
                ..ParamCount::default()
            };
            let keys = ModelMetadata::load(&src, Some(p.size_label()))
                .and_then(|m| m.gguf_keys())
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let got: Vec<Json> = keys
                .iter()
                .map(|(k, v)| {
                    let (ty, val) = match v {
                        Value::String(s) => ("STRING", Json::String(s.clone())),
                        Value::U32(n) => ("UINT32", Json::from(*n)),
                        Value::Array(_, items) => (
                            "ARRAY",
                            Json::Array(
                                items
                                    .iter()
                                    .map(|i| match i {
                                        Value::String(s) => Json::String(s.clone()),
                                        other => Json::String(format!("{other:?}")),
                                    })
                                    .collect(),
                            ),
                        ),
                        other => ("OTHER", Json::String(format!("{other:?}"))),
                    };
                    serde_json::json!([k, ty, val])
                })
                .collect();
            assert_eq!(&Json::Array(got), &c["expected"], "case {name}");
        }
    }

    #[test]
    fn unknown_override_keys_and_bad_types_are_refused() {
        let mut overrides = Map::new();
        overrides.insert("general.nmae".into(), Json::String("x".into()));
        let src = MetadataSources {
            folder_name: "m",
            overrides,
            ..Default::default()
        };
        let err = ModelMetadata::load(&src, None).unwrap_err().to_string();
        assert!(err.contains("general.nmae"), "{err}");
        let mut overrides = Map::new();
        overrides.insert("general.name".into(), Json::from(3));
        let src = MetadataSources {
            folder_name: "m",
            overrides,
            ..Default::default()
        };
        let err = ModelMetadata::load(&src, None)
            .and_then(|m| m.gguf_keys())
            .unwrap_err()
            .to_string();
        assert!(err.contains("general.name must be a string"), "{err}");
    }
}
