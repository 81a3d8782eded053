//! Reading hyper-parameters from config.json the way `convert_hf_to_gguf.py` does
//! (`find_hparam`: the first of several spellings that is present).

use anyhow::{bail, Result};
use serde_json::Value as Json;

/// A model's config.json, with `text_config` merged into the top level as the converter does.
pub struct Hparams {
    json: serde_json::Map<String, Json>,
}

impl Hparams {
    /// Wraps a parsed config.json.
    pub fn new(config: &Json) -> Result<Hparams> {
        let Some(obj) = config.as_object() else {
            bail!("config.json is not a JSON object");
        };
        let mut json = obj.clone();
        if let Some(Json::Object(text)) = obj.get("text_config") {
            for (k, v) in text {
                json.insert(k.clone(), v.clone());
            }
        }
        Ok(Hparams { json })
    }

    /// The raw value of the first of `keys` present and not null.
    pub fn find(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter()
            .find_map(|k| self.json.get(*k).filter(|v| !v.is_null()))
    }

    fn key_of(&self, keys: &[&str]) -> String {
        keys.iter()
            .find(|k| self.json.contains_key(**k))
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
            None => bail!(
                "config.json has no {} (needed for this architecture)",
                keys.join(" / ")
            ),
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

    /// A boolean parameter, if present.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.json.get(key).and_then(Json::as_bool)
    }

    /// A string parameter, if present.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Json::as_str)
    }

    /// The first entry of `architectures`.
    pub fn hf_architecture(&self) -> Option<&str> {
        self.json
            .get("architectures")?
            .as_array()?
            .first()?
            .as_str()
    }

    /// RoPE parameters as the converter gathers them: `rope_parameters` or `rope_scaling`, with
    /// the global `rope_theta` mirrored in when absent, and `type` accepted for `rope_type`.
    pub fn rope_parameters(&self) -> serde_json::Map<String, Json> {
        let mut p = match self.find(&["rope_parameters", "rope_scaling"]) {
            Some(Json::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        if let Some(Json::Object(full)) = p.get("full_attention") {
            return full.clone();
        }
        if !p.contains_key("rope_theta") {
            if let Some(t) = self.find(&[
                "global_rope_theta",
                "rope_global_theta",
                "rope_theta_global",
                "rope_theta",
                "rotary_emb_base",
            ]) {
                p.insert("rope_theta".into(), t.clone());
            }
        }
        if !p.contains_key("rope_type") {
            if let Some(t) = p.get("type").cloned() {
                p.insert("rope_type".into(), t);
            }
        }
        if !p.contains_key("original_max_position_embeddings") {
            if let Some(t) = self.find(&["original_max_position_embeddings"]) {
                p.insert("original_max_position_embeddings".into(), t.clone());
            }
        }
        p
    }
}
