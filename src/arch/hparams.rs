//! A model's hyper-parameters as `convert_hf_to_gguf.py` sees them: config.json with
//! `text_config` merged into the top level (`TextModel.__init__`), read with `find_hparam`
//! (the first of several spellings that is present), and the `rope_parameters` table the
//! converter assembles.

use anyhow::{bail, Result};
use serde_json::{Map, Value as Json};

use super::auto_config::ConfigFile;

/// A model's config.json, with `text_config` merged into the top level as the converter does.
#[derive(Clone, Debug)]
pub struct Hparams {
    json: Json,
    /// The converter's view before the merge (`ModelBase.load_hparams`), for
    /// `origin_hf_arch` and keys the merge shadows.
    raw: Json,
    /// config.json as the model folder has it (each class builds its own view from it).
    file: ConfigFile,
}

impl Hparams {
    /// Wraps a parsed config.json read as it is (no configuration class's defaults):
    /// `{**hparams, **hparams["text_config"]}`.
    pub fn new(config: &Json) -> Result<Hparams> {
        Hparams::from_view(config, &ConfigFile::new(config.clone()))
    }

    /// Wraps the converter's view of `file` (`ModelBase.load_hparams`), merged as
    /// `{**hparams, **hparams["text_config"]}`.
    pub fn from_view(config: &Json, file: &ConfigFile) -> Result<Hparams> {
        let Some(obj) = config.as_object() else {
            bail!("config.json is not a JSON object");
        };
        let mut json = obj.clone();
        if let Some(Json::Object(text)) = obj.get("text_config") {
            for (k, v) in text {
                json.insert(k.clone(), v.clone());
            }
        }
        Ok(Hparams {
            json: Json::Object(json),
            raw: config.clone(),
            file: file.clone(),
        })
    }

    /// The merged parameters as JSON (what the vocabulary code reads).
    pub fn json(&self) -> &Json {
        &self.json
    }

    /// The converter's view of config.json before the `text_config` merge.
    pub fn raw(&self) -> &Json {
        &self.raw
    }

    /// config.json as the model folder has it, and the folder's path.
    pub fn file(&self) -> &ConfigFile {
        &self.file
    }

    fn map(&self) -> &Map<String, Json> {
        self.json.as_object().expect("Hparams holds an object")
    }

    /// A raw value, `None` when the key is absent or null.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.map().get(key).filter(|v| !v.is_null())
    }

    /// Whether the key is present (even as null): `key in self.hparams`.
    pub fn contains(&self, key: &str) -> bool {
        self.map().contains_key(key)
    }

    /// Sets a parameter (the converter mutates `self.hparams` in a few places).
    pub fn set(&mut self, key: &str, value: Json) {
        if let Json::Object(m) = &mut self.json {
            m.insert(key.to_string(), value);
        }
    }

    /// `find_hparam(keys, optional=True)`: the value of the first of `keys` that is present,
    /// `None` if that value is null or none is present.
    pub fn find(&self, keys: &[&str]) -> Option<&Json> {
        let m = self.map();
        keys.iter().find_map(|k| m.get(*k)).filter(|v| !v.is_null())
    }

    fn key_of(&self, keys: &[&str]) -> String {
        keys.iter()
            .find(|k| self.contains(k))
            .unwrap_or(&keys[0])
            .to_string()
    }

    /// An unsigned integer parameter, if present.
    pub fn u64(&self, keys: &[&str]) -> Result<Option<u64>> {
        match self.find(keys) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => Ok(Some(n)),
                None => bail!(
                    "config.json: {} = {v} is not a non-negative integer",
                    self.key_of(keys)
                ),
            },
        }
    }

    /// A required unsigned integer parameter.
    pub fn req_u64(&self, keys: &[&str]) -> Result<u64> {
        match self.u64(keys)? {
            Some(n) => Ok(n),
            None => bail!("{}", self.missing(keys)),
        }
    }

    /// A u32 parameter (GGUF writes these as uint32).
    pub fn u32(&self, keys: &[&str]) -> Result<Option<u32>> {
        match self.u64(keys)? {
            None => Ok(None),
            Some(n) => match u32::try_from(n) {
                Ok(v) => Ok(Some(v)),
                Err(_) => bail!(
                    "config.json: {} = {n} does not fit in 32 bits",
                    self.key_of(keys)
                ),
            },
        }
    }

    /// A required u32 parameter.
    pub fn req_u32(&self, keys: &[&str]) -> Result<u32> {
        match self.u32(keys)? {
            Some(n) => Ok(n),
            None => bail!("{}", self.missing(keys)),
        }
    }

    /// Why a required parameter is not there: absent, or present as null.
    fn missing(&self, keys: &[&str]) -> String {
        match keys.iter().find(|k| self.contains(k)) {
            Some(k) => format!("config.json: {k} is null (needed for this architecture)"),
            None => format!(
                "config.json has no {} (needed for this architecture)",
                keys.join(" / ")
            ),
        }
    }

    /// `hparams.get(key, default)` as a u32: the default when the key is absent; a key present
    /// as null is an error (the converter would write None, which gguf-py cannot pack).
    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32> {
        if !self.contains(key) {
            return Ok(default);
        }
        match self.u32(&[key])? {
            Some(n) => Ok(n),
            None => bail!("config.json: {key} is null (the converter cannot write it)"),
        }
    }

    /// `hparams.get(key, default)` as a float (see [`Hparams::u32_or`]).
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        if !self.contains(key) {
            return Ok(default);
        }
        match self.f64(&[key])? {
            Some(n) => Ok(n),
            None => bail!("config.json: {key} is null (the converter cannot write it)"),
        }
    }

    /// A float parameter, if present.
    pub fn f64(&self, keys: &[&str]) -> Result<Option<f64>> {
        match self.find(keys) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) => Ok(Some(n)),
                None => bail!("config.json: {} = {v} is not a number", self.key_of(keys)),
            },
        }
    }

    /// A required float parameter.
    pub fn req_f64(&self, keys: &[&str]) -> Result<f64> {
        match self.f64(keys)? {
            Some(n) => Ok(n),
            None => bail!("{}", self.missing(keys)),
        }
    }

    /// A boolean parameter, if present.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Json::as_bool)
    }

    /// A string parameter, if present.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Json::as_str)
    }

    /// `origin_hf_arch`: the first entry of config.json's own `architectures`.
    pub fn origin_hf_arch(&self) -> Option<&str> {
        self.raw.get("architectures")?.as_array()?.first()?.as_str()
    }

    /// `get_model_architecture` for a text model: `text_config.architectures[0]` when present,
    /// else `architectures[0]`.
    pub fn hf_architecture(&self) -> Option<&str> {
        let first = |v: &Json| -> Option<String> {
            Some(
                v.get("architectures")?
                    .as_array()?
                    .first()?
                    .as_str()?
                    .to_string(),
            )
        };
        let from_text = self.raw.get("text_config").and_then(first).is_some();
        let v = if from_text {
            self.raw.get("text_config")?
        } else {
            &self.raw
        };
        v.get("architectures")?.as_array()?.first()?.as_str()
    }

    /// `TextModel.__init__`'s `rope_parameters`: `rope_parameters` or `rope_scaling`, with the
    /// global parameters mirrored in when the table has no per-attention-type entries.
    pub fn rope_parameters(&self) -> Map<String, Json> {
        // `hparams.get("rope_parameters", hparams.get("rope_scaling")) or {}`
        let table = if self.contains("rope_parameters") {
            self.get("rope_parameters")
        } else {
            self.get("rope_scaling")
        };
        let mut p = match table {
            Some(Json::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if p.contains_key("full_attention") || p.contains_key("sliding_attention") {
            return p;
        }
        let rope_theta = self
            .find(&[
                "global_rope_theta",
                "rope_global_theta",
                "rope_theta_global",
                "rope_theta",
                "rotary_emb_base",
            ])
            .cloned();
        let local_rope_theta = self
            .find(&[
                "local_rope_theta",
                "rope_local_theta",
                "rope_theta_local",
                "swa_rope_theta",
                "rope_local_base_freq",
            ])
            .cloned();
        let partial = self
            .find(&["partial_rotary_factor", "rope_pct", "rope_percent"])
            .cloned();
        let orig_ctx = self.find(&["original_max_position_embeddings"]).cloned();
        if let Some(t) = local_rope_theta {
            let mut m = Map::new();
            m.insert("rope_theta".into(), t);
            p.insert("sliding_attention".into(), Json::Object(m));
        }
        if let (false, Some(t)) = (p.contains_key("rope_theta"), rope_theta) {
            p.insert("rope_theta".into(), t);
        }
        if !p.contains_key("rope_type") {
            if let Some(t) = p.get("type").filter(|v| !v.is_null()).cloned() {
                p.insert("rope_type".into(), t);
            }
        }
        if let (false, Some(f)) = (p.contains_key("partial_rotary_factor"), partial) {
            p.insert("partial_rotary_factor".into(), f);
        }
        if let (false, Some(n)) = (p.contains_key("original_max_position_embeddings"), orig_ctx) {
            p.insert("original_max_position_embeddings".into(), n);
        }
        p
    }

    /// `rope_parameters.get("full_attention", rope_parameters)`: the table global layers use.
    pub fn full_attention_rope(&self) -> Map<String, Json> {
        let p = self.rope_parameters();
        match p.get("full_attention") {
            Some(Json::Object(full)) => full.clone(),
            _ => p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn find_takes_the_first_present_key_even_if_null() {
        let hp = Hparams::new(&json!({"num_local_experts": null, "num_experts": 8})).unwrap();
        assert_eq!(hp.u64(&["num_local_experts", "num_experts"]).unwrap(), None);
        assert_eq!(hp.u64(&["num_experts"]).unwrap(), Some(8));
    }

    #[test]
    fn text_config_is_merged_and_the_class_comes_from_it_when_named() {
        let hp = Hparams::new(&json!({
            "architectures": ["KimiVLForConditionalGeneration"],
            "hidden_size": 1,
            "text_config": {"hidden_size": 32}
        }))
        .unwrap();
        assert_eq!(hp.u64(&["hidden_size"]).unwrap(), Some(32));
        assert_eq!(hp.hf_architecture(), Some("KimiVLForConditionalGeneration"));
        let hp = Hparams::new(&json!({
            "architectures": ["X"], "text_config": {"architectures": ["Y"]}
        }))
        .unwrap();
        assert_eq!(hp.hf_architecture(), Some("Y"));
        assert_eq!(hp.origin_hf_arch(), Some("X"));
    }

    #[test]
    fn rope_parameters_mirror_the_global_keys() {
        let hp = Hparams::new(&json!({
            "rope_theta": 1e6, "rope_local_base_freq": 1e4,
            "rope_scaling": {"type": "linear", "factor": 8.0}
        }))
        .unwrap();
        let p = hp.rope_parameters();
        assert_eq!(p["rope_type"], "linear");
        assert_eq!(p["rope_theta"], 1e6);
        assert_eq!(p["sliding_attention"]["rope_theta"], 1e4);
    }
}
