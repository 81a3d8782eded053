//! `quantization.per_tensor`: the export config's last word on tensor types.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use indexmap::IndexMap;
use regex::Regex;

use super::{PlannedTensor, TensorSource};
use crate::gguf::GgmlType;

/// `quantization.per_tensor`: the type of chosen tensors, overriding the file type's mix and
/// the command-line type options. A key is
/// * a stored tensor's UUID, a GGUF tensor name or a source (HF) tensor name (compared without
///   regard to case), or
/// * `re:REGEX`: a regular expression (Rust `regex` syntax, case-sensitive) searched for
///   anywhere in the GGUF tensor name, e.g. `"re:^blk\\.[0-9]\\.ffn_down": "Q6_K"` in JSON.
///   Like llama-quantize's `--tensor-type`, it only applies to tensors llama-quantize may
///   quantize (not to norms, biases, routers or 1-D tensors).
///
/// An exact key beats every `re:` key; among `re:` keys the first that matches, in the order
/// they appear in the config file, wins. A key that matches no tensor is an error.
pub struct PerTensor {
    rules: Vec<PerTensorRule>,
    used: std::cell::RefCell<HashSet<String>>,
}

struct PerTensorRule {
    key: String,
    regex: Option<Regex>,
    ty: GgmlType,
}

impl PerTensor {
    pub fn new(map: &IndexMap<String, String>) -> Result<PerTensor> {
        let mut rules = Vec::new();
        for (k, v) in map {
            let ty: GgmlType = v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("quantization.per_tensor[{k:?}]: {e}"))?;
            let regex = match k.strip_prefix("re:") {
                Some(re) => Some(Regex::new(re).with_context(|| {
                    format!("quantization.per_tensor[{k:?}]: not a valid regular expression")
                })?),
                None => None,
            };
            rules.push(PerTensorRule {
                key: k.clone(),
                regex,
                ty,
            });
        }
        Ok(PerTensor {
            rules,
            used: Default::default(),
        })
    }

    /// The type for `t`; `re:` keys are tried only if `quantizable`.
    pub fn find(&self, t: &PlannedTensor, quantizable: bool) -> Option<GgmlType> {
        let mut keys: Vec<String> = vec![t.name.clone()];
        if let TensorSource::Stored(pieces) = &t.source {
            for p in pieces {
                keys.push(p.entry.uuid.to_string());
                keys.push(p.entry.name.clone());
            }
        }
        let exact = self
            .rules
            .iter()
            .find(|r| r.regex.is_none() && keys.iter().any(|x| x.eq_ignore_ascii_case(&r.key)));
        let hit = exact.or_else(|| {
            if !quantizable {
                return None;
            }
            self.rules
                .iter()
                .find(|r| r.regex.as_ref().is_some_and(|re| re.is_match(&t.name)))
        })?;
        self.used.borrow_mut().insert(hit.key.clone());
        Some(hit.ty)
    }

    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        if let Some(r) = self.rules.iter().find(|r| !used.contains(&r.key)) {
            bail!(
                "quantization.per_tensor key {:?} matches no tensor (use a UUID, a GGUF name, a source name or re:REGEX)",
                r.key
            );
        }
        Ok(())
    }
}
