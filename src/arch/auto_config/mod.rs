//! The converter's view of config.json.
//!
//! `convert_hf_to_gguf.py` does not read config.json as JSON: `ModelBase.load_hparams` loads
//! it with `AutoConfig.from_pretrained(dir, trust_remote_code=False).to_dict()`, so a key the
//! file omits arrives with its configuration class's default (`LlamaConfig.head_dim =
//! hidden_size // num_attention_heads`, default `rope_theta`, `tie_word_embeddings`, ...), some
//! values are normalised (`torch_dtype` becomes `dtype`, `rope_scaling.type` is copied to
//! `rope_type`, Phi-3's `su` becomes `longrope`), and the base class adds its own keys
//! (`PretrainedConfig`: `id2label`, generation defaults, `_name_or_path` = the folder path,
//! `transformers_version` = the installed version). Only when that load raises (a
//! `model_type` transformers does not know, remote code, a value its `__init__` cannot take)
//! does the converter read the raw JSON.
//!
//! gmat follows the transformers release of the reference converter, 4.57.6: this module is
//! its `AutoConfig` and `PretrainedConfig` (`configuration_utils.py`, `configuration_auto.py`,
//! `modeling_rope_utils.rope_config_validation`); each architecture module transcribes the
//! configuration classes of its checkpoints as [`ConfigClass`]es
//! ([`super::ArchSpec::config_classes`]), and [`super::ArchSpec::hparams`] builds the class's
//! hyper-parameters from [`load_hparams`]'s view before anything reads them.

mod config_mapping;
pub mod py;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value as Json};

pub use config_mapping::CONFIG_MAPPING;
use py::{raise, Py, Raised};

/// The transformers release whose configuration classes gmat transcribes (that of the
/// reference converter).
pub const TRANSFORMERS_VERSION: &str = "4.57.6";

/// config.json as the model folder has it, and the folder's path as the user named it (what
/// the converter was given: transformers records it as `_name_or_path`, and matches model
/// types against it when config.json has no `model_type`).
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    pub json: Json,
    pub path: String,
}

impl ConfigFile {
    /// A config.json without a known folder path.
    pub fn new(json: Json) -> ConfigFile {
        ConfigFile {
            json,
            path: String::new(),
        }
    }
}

/// One transformers configuration class, transcribed: its `model_type` (the `CONFIG_MAPPING`
/// key), `attribute_map`, and `__init__` ([`Init`]).
pub struct ConfigClass {
    /// The Python class name.
    pub name: &'static str,
    pub model_type: &'static str,
    /// `attribute_map`: attributes stored under another name.
    pub attribute_map: &'static [(&'static str, &'static str)],
    /// `__init__(self, **config_dict)`.
    pub init: fn(&mut Init) -> Py<()>,
}

impl std::fmt::Debug for ConfigClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A configuration object under construction: the keyword arguments not yet bound (`**kwargs`)
/// and the attributes set so far (`self.__dict__`).
pub struct Init {
    kwargs: Map<String, Json>,
    attrs: Map<String, Json>,
    attribute_map: &'static [(&'static str, &'static str)],
}

/// A class's named parameters, bound from the keyword arguments or their defaults.
pub struct Args(Map<String, Json>);

impl Args {
    /// The bound value of a parameter (`null` for a parameter the class does not have).
    pub fn get(&self, name: &str) -> Json {
        self.0.get(name).cloned().unwrap_or(Json::Null)
    }
}

impl Init {
    /// Binds the class's named parameters: a parameter config.json gives (even as null) takes
    /// that value, the others their default.
    pub fn args(&mut self, params: &[(&str, Json)]) -> Args {
        let mut a = Map::new();
        for (name, default) in params {
            let v = self
                .kwargs
                .shift_remove(*name)
                .unwrap_or_else(|| default.clone());
            a.insert((*name).to_string(), v);
        }
        Args(a)
    }

    /// `self.name = args.name` for each name.
    pub fn set_args(&mut self, a: &Args, names: &[&str]) {
        for n in names {
            self.set(n, a.get(n));
        }
    }

    /// `self.name = value` (through `attribute_map`).
    pub fn set(&mut self, name: &str, value: Json) {
        let key = self
            .attribute_map
            .iter()
            .find(|(from, _)| *from == name)
            .map_or(name, |(_, to)| *to);
        self.attrs.insert(key.to_string(), value);
    }

    /// `self.name`, which raises `AttributeError` when it was never set.
    pub fn attr(&self, name: &str) -> Py<&Json> {
        self.attrs
            .get(name)
            .ok_or_else(|| Raised(format!("AttributeError: no attribute {name}")))
    }

    /// `getattr(self, name, None)`.
    pub fn attr_or_null(&self, name: &str) -> Json {
        self.attrs.get(name).cloned().unwrap_or(Json::Null)
    }

    /// `kwargs.get(name)` (a keyword argument left for the base class).
    pub fn kwarg(&self, name: &str) -> Option<&Json> {
        self.kwargs.get(name)
    }

    /// `PretrainedConfig.__init__(**named, **kwargs)` (configuration_utils.py): the base
    /// class's parameters and defaults, its normalisations (`torch_dtype` → `dtype`,
    /// `id2label` keys as integers, two dummy labels when there are none), the generation
    /// defaults, and every other keyword argument set as an attribute.
    pub fn base(&mut self, named: &[(&str, Json)]) -> Py<()> {
        for (k, v) in named {
            self.kwargs.insert((*k).to_string(), v.clone());
        }
        let a = self.args(&[
            ("output_hidden_states", json!(false)),
            ("output_attentions", json!(false)),
            ("return_dict", json!(true)),
            ("torchscript", json!(false)),
            ("dtype", Json::Null),
            ("pruned_heads", Json::Null),
            ("tie_word_embeddings", json!(true)),
            ("chunk_size_feed_forward", json!(0)),
            ("is_encoder_decoder", json!(false)),
            ("is_decoder", json!(false)),
            ("cross_attention_hidden_size", Json::Null),
            ("add_cross_attention", json!(false)),
            ("tie_encoder_decoder", json!(false)),
            ("architectures", Json::Null),
            ("finetuning_task", Json::Null),
            ("id2label", Json::Null),
            ("label2id", Json::Null),
            ("num_labels", Json::Null),
            ("task_specific_params", Json::Null),
            ("problem_type", Json::Null),
            ("tokenizer_class", Json::Null),
            ("prefix", Json::Null),
            ("bos_token_id", Json::Null),
            ("pad_token_id", Json::Null),
            ("eos_token_id", Json::Null),
            ("sep_token_id", Json::Null),
            ("decoder_start_token_id", Json::Null),
        ]);
        for k in ["label2id", "id2label"] {
            if !matches!(a.get(k), Json::Null | Json::Object(_)) {
                return raise(format!("ValueError: Argument {k} should be a dictionary."));
            }
        }
        let problem = a.get("problem_type");
        if !problem.is_null()
            && ![
                "regression",
                "single_label_classification",
                "multi_label_classification",
            ]
            .iter()
            .any(|p| problem.as_str() == Some(p))
        {
            return raise("ValueError: The config parameter `problem_type` was not understood");
        }
        // BC for the `torch_dtype` argument: `dtype` wins when both are given
        let mut dtype = a.get("dtype");
        let torch_dtype = self
            .kwargs
            .shift_remove("torch_dtype")
            .unwrap_or(Json::Null);
        if !torch_dtype.is_null() && dtype.is_null() {
            dtype = torch_dtype;
        }
        // `getattr(torch, dtype)`; `to_dict` writes the torch dtype back as its name
        if let Json::String(s) = &dtype {
            dtype = Json::String(torch_dtype_name(s)?.to_string());
        }
        self.set_args(&a, &["return_dict", "output_hidden_states", "torchscript"]);
        self.set("dtype", dtype);
        self.set("_output_attentions", a.get("output_attentions"));
        let pruned = a.get("pruned_heads");
        self.set(
            "pruned_heads",
            if pruned.is_null() { json!({}) } else { pruned },
        );
        self.set_args(
            &a,
            &[
                "tie_word_embeddings",
                "chunk_size_feed_forward",
                "is_encoder_decoder",
                "is_decoder",
                "cross_attention_hidden_size",
                "add_cross_attention",
                "tie_encoder_decoder",
                "architectures",
                "finetuning_task",
                "id2label",
                "label2id",
                "task_specific_params",
                "problem_type",
            ],
        );
        match a.get("id2label") {
            Json::Object(m) => {
                // keys are always strings in JSON: `{int(key): value}`
                let mut out = Map::new();
                for (k, v) in m {
                    let Ok(i) = k.trim().parse::<i128>() else {
                        return raise(format!("ValueError: invalid literal for int(): {k:?}"));
                    };
                    out.insert(i.to_string(), v);
                }
                self.set("id2label", Json::Object(out));
            }
            _ => {
                let n = a.get("num_labels");
                let n = if n.is_null() { json!(2) } else { n };
                let n = py::range_len(&n)?;
                self.set(
                    "id2label",
                    Json::Object(
                        (0..n)
                            .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
                            .collect(),
                    ),
                );
                self.set(
                    "label2id",
                    Json::Object((0..n).map(|i| (format!("LABEL_{i}"), json!(i))).collect()),
                );
            }
        }
        self.set_args(
            &a,
            &[
                "tokenizer_class",
                "prefix",
                "bos_token_id",
                "pad_token_id",
                "eos_token_id",
                "sep_token_id",
                "decoder_start_token_id",
            ],
        );
        // retrocompatibility: the generation parameters
        for (k, default) in generation_defaults() {
            let v = self.kwargs.shift_remove(k).unwrap_or(default);
            self.set(k, v);
        }
        let name = self.kwargs.shift_remove("name_or_path");
        self.set(
            "_name_or_path",
            json!(name.map_or(String::new(), |v| py::str(&v))),
        );
        self.kwargs.shift_remove("_commit_hash");
        self.kwargs.shift_remove("attn_implementation");
        let version = self.kwargs.shift_remove("transformers_version");
        self.set("transformers_version", version.unwrap_or(Json::Null));
        // additional attributes without default values
        for (k, v) in std::mem::take(&mut self.kwargs) {
            match k.as_str() {
                "_attn_implementation" => {} // a property: kept out of to_dict
                "use_return_dict" => {
                    return raise(format!("AttributeError: can't set attribute {k}"))
                }
                _ => self.set(&k, v),
            }
        }
        for k in ["tf_legacy_loss", "use_bfloat16"] {
            if !self.attrs.contains_key(k) {
                self.set(k, json!(false));
            }
        }
        Ok(())
    }

    /// BC: `if self.rope_scaling is not None and "type" in self.rope_scaling:
    /// self.rope_scaling["rope_type"] = self.rope_scaling["type"]`.
    pub fn rope_type_from_type(&mut self) -> Py<()> {
        let rs = self.attr_or_null("rope_scaling");
        if rs.is_null() || !py::contains(&rs, "type")? {
            return Ok(());
        }
        match rs {
            Json::Object(mut m) => {
                let t = m.get("type").cloned().unwrap_or(Json::Null);
                m.insert("rope_type".into(), t);
                self.set("rope_scaling", Json::Object(m));
                Ok(())
            }
            _ => raise("TypeError: rope_scaling does not support item assignment"),
        }
    }

    /// `modeling_rope_utils.rope_config_validation(self)`: only what raises (a missing required
    /// key, a value an expression cannot take); its warnings change nothing.
    pub fn rope_config_validation(&self) -> Py<()> {
        let rs = self.attr_or_null("rope_scaling");
        if rs.is_null() {
            return Ok(());
        }
        let Json::Object(m) = &rs else {
            return raise("AttributeError: rope_scaling has no attribute 'get'");
        };
        let rope_type = match m.get("rope_type").or(m.get("type")) {
            Some(v) => v.clone(),
            None => json!("default"),
        };
        if matches!(rope_type, Json::Array(_) | Json::Object(_)) {
            return raise("TypeError: unhashable rope_type");
        }
        let Some(t) = rope_type.as_str() else {
            return Ok(()); // no validation function: a warning
        };
        let required: &[&str] = match t {
            "default" => &["rope_type"],
            "linear" | "dynamic" | "yarn" => &["rope_type", "factor"],
            "longrope" => &["rope_type", "short_factor", "long_factor"],
            "llama3" => &[
                "rope_type",
                "factor",
                "original_max_position_embeddings",
                "low_freq_factor",
                "high_freq_factor",
            ],
            _ => return Ok(()),
        };
        // _check_received_keys: "type" stands for "rope_type" only when "rope_type" is there
        let mut received: Vec<&str> = m.keys().map(String::as_str).collect();
        received.retain(|k| *k != "type");
        if let Some(k) = required.iter().find(|k| !received.contains(k)) {
            return raise(format!(
                "KeyError: Missing required keys in `rope_scaling` for 'rope_type'='{t}': {k}"
            ));
        }
        let get = |k: &str| m.get(k).cloned().unwrap_or(Json::Null);
        match t {
            "yarn" => {
                py::cmp(
                    py::or(&get("beta_fast"), &json!(32)),
                    py::or(&get("beta_slow"), &json!(1)),
                )?;
                let orig = get("original_max_position_embeddings");
                if !orig.is_null() {
                    py::truediv(self.attr("max_position_embeddings")?, &orig)?;
                }
            }
            "longrope" => {
                // getattr's default is evaluated first
                let fallback =
                    py::floordiv(self.attr("hidden_size")?, self.attr("num_attention_heads")?)?;
                let head_dim = self.attrs.get("head_dim").cloned().unwrap_or(fallback);
                let prf = self
                    .attrs
                    .get("partial_rotary_factor")
                    .cloned()
                    .unwrap_or(json!(1.0));
                py::int(&py::mul(&head_dim, &prf)?)?;
                for k in ["short_factor", "long_factor"] {
                    let v = get(k);
                    if !v.is_array() {
                        // `all(isinstance(x, ...) for x in v)` iterates it
                        if !matches!(v, Json::String(_) | Json::Object(_)) {
                            return raise(format!("TypeError: {k} is not iterable"));
                        }
                    }
                    py::len(&v)?;
                }
            }
            "llama3" => {
                py::cmp(&get("high_freq_factor"), &get("low_freq_factor"))?;
                py::cmp(
                    &get("original_max_position_embeddings"),
                    self.attr("max_position_embeddings")?,
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `configuration_utils.layer_type_validation(layer_types, num_hidden_layers)`.
    pub fn layer_type_validation(&self, layer_types: &Json, num_hidden_layers: &Json) -> Py<()> {
        const ALLOWED: &[&str] = &[
            "full_attention",
            "sliding_attention",
            "chunked_attention",
            "linear_attention",
        ];
        let ok = match layer_types {
            Json::Array(a) => a
                .iter()
                .all(|t| t.as_str().is_some_and(|s| ALLOWED.contains(&s))),
            Json::Object(m) => m.keys().all(|k| ALLOWED.contains(&k.as_str())),
            Json::String(s) => s.is_empty(),
            _ => return raise("TypeError: layer_types is not iterable"),
        };
        if !ok {
            return raise("ValueError: The `layer_types` entries must be in ALLOWED_LAYER_TYPES");
        }
        let n = py::len(layer_types)?;
        if !num_hidden_layers.is_null() && !py::eq(num_hidden_layers, &json!(n)) {
            return raise(format!(
                "ValueError: `num_hidden_layers` ({num_hidden_layers}) must be equal to the number of layer types ({n})"
            ));
        }
        Ok(())
    }

    /// A nested configuration (`text_config`, `vision_config`): `Class(**value)` for a dict,
    /// `Class()` for None, the value itself otherwise; as its `to_dict()` without
    /// `transformers_version`.
    pub fn sub_config(&self, class: &ConfigClass, value: Json) -> Py<Json> {
        let kwargs = match value {
            Json::Object(m) => m,
            Json::Null => Map::new(),
            other => return Ok(other),
        };
        let mut sub = construct(class, kwargs)?;
        sub.shift_remove("transformers_version");
        Ok(Json::Object(sub))
    }
}

/// `value if value is not None else default`.
pub fn or_none(value: Json, default: Json) -> Json {
    if value.is_null() {
        default
    } else {
        value
    }
}

/// `PretrainedConfig._get_global_generation_defaults()`.
fn generation_defaults() -> Vec<(&'static str, Json)> {
    vec![
        ("max_length", json!(20)),
        ("min_length", json!(0)),
        ("do_sample", json!(false)),
        ("early_stopping", json!(false)),
        ("num_beams", json!(1)),
        ("temperature", json!(1.0)),
        ("top_k", json!(50)),
        ("top_p", json!(1.0)),
        ("typical_p", json!(1.0)),
        ("repetition_penalty", json!(1.0)),
        ("length_penalty", json!(1.0)),
        ("no_repeat_ngram_size", json!(0)),
        ("encoder_no_repeat_ngram_size", json!(0)),
        ("bad_words_ids", Json::Null),
        ("num_return_sequences", json!(1)),
        ("output_scores", json!(false)),
        ("return_dict_in_generate", json!(false)),
        ("forced_bos_token_id", Json::Null),
        ("forced_eos_token_id", Json::Null),
        ("remove_invalid_values", json!(false)),
        ("exponential_decay_length_penalty", Json::Null),
        ("suppress_tokens", Json::Null),
        ("begin_suppress_tokens", Json::Null),
        ("num_beam_groups", json!(1)),
        ("diversity_penalty", json!(0.0)),
    ]
}

/// `str(getattr(torch, name)).split(".")[1]`: the canonical name of a torch dtype attribute
/// (`float` → `float32`, `half` → `float16`, ...); another name raises `AttributeError`.
fn torch_dtype_name(name: &str) -> Py<&'static str> {
    const DTYPES: &[(&str, &str)] = &[
        ("float32", "float32"),
        ("float", "float32"),
        ("float64", "float64"),
        ("double", "float64"),
        ("float16", "float16"),
        ("half", "float16"),
        ("bfloat16", "bfloat16"),
        ("complex32", "complex32"),
        ("chalf", "complex32"),
        ("complex64", "complex64"),
        ("cfloat", "complex64"),
        ("complex128", "complex128"),
        ("cdouble", "complex128"),
        ("uint8", "uint8"),
        ("uint16", "uint16"),
        ("uint32", "uint32"),
        ("uint64", "uint64"),
        ("int8", "int8"),
        ("int16", "int16"),
        ("short", "int16"),
        ("int32", "int32"),
        ("int", "int32"),
        ("int64", "int64"),
        ("long", "int64"),
        ("bool", "bool"),
        ("float8_e4m3fn", "float8_e4m3fn"),
        ("float8_e5m2", "float8_e5m2"),
        ("float8_e4m3fnuz", "float8_e4m3fnuz"),
        ("float8_e5m2fnuz", "float8_e5m2fnuz"),
        ("float8_e8m0fnu", "float8_e8m0fnu"),
    ];
    DTYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, canonical)| *canonical)
        .ok_or_else(|| {
            Raised(format!(
                "AttributeError: module 'torch' has no attribute {name:?}"
            ))
        })
}

/// `Class(**kwargs).to_dict()`.
fn construct(class: &ConfigClass, kwargs: Map<String, Json>) -> Py<Map<String, Json>> {
    let mut init = Init {
        kwargs,
        attrs: Map::new(),
        attribute_map: class.attribute_map,
    };
    (class.init)(&mut init)?;
    to_dict(class, init.attrs)
}

/// `PretrainedConfig.to_dict()`.
fn to_dict(class: &ConfigClass, attrs: Map<String, Json>) -> Py<Map<String, Json>> {
    let mut out = attrs;
    out.insert("model_type".into(), json!(class.model_type));
    out.insert("transformers_version".into(), json!(TRANSFORMERS_VERSION));
    let quant = out.get("quantization_config").cloned();
    remove_keys_not_serialized(&mut out, quant.is_some());
    // `self.quantization_config` as it was (a dict), or its `to_dict()`
    match quant {
        None => {}
        Some(q @ Json::Object(_)) => {
            out.insert("quantization_config".into(), q);
        }
        Some(_) => return raise("AttributeError: quantization_config has no attribute 'to_dict'"),
    }
    dict_dtype_to_str(&mut out)?;
    Ok(out)
}

/// `PretrainedConfig._remove_keys_not_serialized`, recursively into dict values.
fn remove_keys_not_serialized(d: &mut Map<String, Json>, has_quant: bool) {
    if has_quant {
        d.shift_remove("_pre_quantization_dtype");
    }
    d.shift_remove("_auto_class");
    if let Some(v) = d.shift_remove("_output_attentions") {
        d.insert("output_attentions".into(), v);
    }
    for k in [
        "_commit_hash",
        "_attn_implementation_internal",
        "base_model_tp_plan",
        "base_model_pp_plan",
    ] {
        d.shift_remove(k);
    }
    for v in d.values_mut() {
        if let Json::Object(m) = v {
            remove_keys_not_serialized(m, has_quant);
        }
    }
}

/// `PretrainedConfig.dict_dtype_to_str`: torch dtypes as names (gmat keeps those as names
/// already); what it does to other values under a `dtype` key.
fn dict_dtype_to_str(d: &mut Map<String, Json>) -> Py<()> {
    if let Some(v) = d.get_mut("dtype") {
        match v {
            Json::Null | Json::String(_) | Json::Bool(_) => {}
            Json::Number(_) if py::Num::of(v).is_some_and(|n| matches!(n, py::Num::Int(_))) => {}
            Json::Object(m) => {
                for x in m.values_mut() {
                    let s = py::str(x);
                    *x = json!(s.rsplit('.').next().unwrap_or(""));
                }
            }
            other => {
                let s = py::str(other);
                match s.split('.').nth(1) {
                    Some(p) => *other = json!(p),
                    None => return raise("IndexError: list index out of range"),
                }
            }
        }
    }
    for v in d.values_mut() {
        if let Json::Object(m) = v {
            dict_dtype_to_str(m)?;
        }
    }
    Ok(())
}

/// What `AutoConfig.from_pretrained` did with a config.json.
#[derive(Clone, Debug, PartialEq)]
pub enum Loaded {
    /// The configuration class's `to_dict()`.
    Class(&'static str),
    /// The load raised; the converter read the raw JSON.
    RawJson(String),
}

/// `ModelBase.load_hparams(dir)`: `AutoConfig.from_pretrained(dir).to_dict()` with the given
/// transcribed classes, the raw JSON when transformers raises, then the converter's renames of
/// nested text configurations. An error only when transformers would use a class gmat does not
/// transcribe (its defaults would be guesses).
pub fn load_hparams(file: &ConfigFile, classes: &[&'static ConfigClass]) -> Result<(Json, Loaded)> {
    let (mut view, how) = match auto_config(file, classes)? {
        Ok((class, m)) => (Json::Object(m), Loaded::Class(class)),
        Err(Raised(e)) => (file.json.clone(), Loaded::RawJson(e)),
    };
    if let Json::Object(m) = &mut view {
        for key in [
            "llm_config",
            "lm_config",
            "thinker_config",
            "language_config",
            "lfm",
        ] {
            if let Some(v) = m.get(key).cloned() {
                let text = if key == "thinker_config" {
                    match v.get("text_config") {
                        Some(t) => t.clone(),
                        None => bail!("config.json: thinker_config has no text_config"),
                    }
                } else {
                    v
                };
                m.insert("text_config".into(), text);
            }
        }
    }
    Ok((view, how))
}

/// `AutoConfig.from_pretrained(dir, trust_remote_code=False).to_dict()`: the outer error is
/// gmat's refusal, the inner one what transformers raises.
#[allow(clippy::type_complexity)]
fn auto_config(
    file: &ConfigFile,
    classes: &[&'static ConfigClass],
) -> Result<Py<(&'static str, Map<String, Json>)>> {
    let Json::Object(cfg) = &file.json else {
        return Ok(raise("TypeError: config.json is not a dict"));
    };
    let mut cfg = cfg.clone();
    if cfg.contains_key("configuration_files") {
        bail!("config.json names other configuration_files; gmat does not follow them");
    }
    // timm models are not saved with the model_type in the config file
    if !cfg.contains_key("model_type") && cfg.contains_key("pretrained_cfg") {
        cfg.insert("model_type".into(), json!("timm_wrapper"));
    }
    let has_remote_code = match cfg.get("auto_map") {
        None => false,
        Some(m) => match py::contains(m, "AutoConfig") {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        },
    };
    let model_type = cfg.get("model_type").cloned();
    if let Some(Json::Array(_) | Json::Object(_)) = model_type {
        return Ok(raise("TypeError: unhashable model_type"));
    }
    let known = |t: &str| CONFIG_MAPPING.iter().find(|(k, _)| *k == t);
    let has_local_code = model_type
        .as_ref()
        .and_then(Json::as_str)
        .is_some_and(|t| known(t).is_some());
    if has_remote_code && !has_local_code {
        return Ok(raise(
            "ValueError: the model's configuration is remote code (trust_remote_code=False)",
        ));
    }
    let entry = match &model_type {
        Some(t) => {
            let mut t = t.as_str().unwrap_or_default().to_string();
            // if model_type is mistral but layer_types is present, treat as ministral
            if t == "mistral" && cfg.contains_key("layer_types") {
                t = "ministral".into();
            }
            match known(&t) {
                Some(e) => e,
                None => {
                    return Ok(raise(format!(
                    "ValueError: model type {} is unknown to transformers {TRANSFORMERS_VERSION}",
                    model_type.as_ref().map_or(String::new(), py::str)
                )))
                }
            }
        }
        None => {
            // pattern matching on the folder path, longer names first
            let path = py::path_str(&file.path);
            let mut names: Vec<&(&str, &str)> = CONFIG_MAPPING.iter().collect();
            names.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
            match names.into_iter().find(|(k, _)| path.contains(k)) {
                Some(e) => e,
                None => {
                    return Ok(raise(format!(
                        "ValueError: Unrecognized model in {path}: no model_type"
                    )))
                }
            }
        }
    };
    let Some(class) = classes.iter().find(|c| c.model_type == entry.0) else {
        let mut have: Vec<&str> = classes.iter().map(|c| c.name).collect();
        have.sort_unstable();
        let how = if model_type.is_some() {
            format!("its model_type {:?}", entry.0)
        } else {
            format!(
                "the folder path {:?} (config.json has no model_type)",
                py::path_str(&file.path)
            )
        };
        bail!(
            "the converter reads config.json through transformers {TRANSFORMERS_VERSION}'s {}, chosen by {how}; \
             gmat does not transcribe that class's defaults (it has {})",
            entry.1,
            have.join(", ")
        );
    };
    let mut kwargs = cfg;
    // from_dict: `config_dict["attn_implementation"] = kwargs.pop("attn_implementation", None)`
    kwargs.insert("attn_implementation".into(), Json::Null);
    kwargs.insert("_commit_hash".into(), Json::Null);
    let mut init = Init {
        kwargs,
        attrs: Map::new(),
        attribute_map: class.attribute_map,
    };
    if let Err(e) = (class.init)(&mut init) {
        return Ok(Err(e));
    }
    // from_dict: pruned_heads keys as integers, then the name_or_path keyword argument
    match init.attrs.get("pruned_heads") {
        Some(Json::Object(m)) => {
            let mut out = Map::new();
            for (k, v) in m {
                match k.trim().parse::<i128>() {
                    Ok(i) => out.insert(i.to_string(), v.clone()),
                    Err(_) => return Ok(raise("ValueError: pruned_heads key is not an integer")),
                };
            }
            init.attrs.insert("pruned_heads".into(), Json::Object(out));
        }
        Some(_) => {
            return Ok(raise(
                "AttributeError: pruned_heads has no attribute 'items'",
            ))
        }
        None => {}
    }
    init.attrs
        .insert("_name_or_path".into(), json!(py::path_str(&file.path)));
    Ok(to_dict(class, init.attrs).map(|m| (class.name, m)))
}

#[cfg(test)]
mod tests;
