//! gguf-py's `TensorNameMap` for one architecture: HF tensor names → (kind, GGUF name).
//!
//! Built exactly as `TensorNameMap.__init__` (gguf/tensor_mapping.py) builds its dict from the
//! tables in [`super::tensor_names`]: only the architecture's own kinds (`MODEL_TENSORS[arch]`)
//! take part, so `post_attention_layernorm` resolves to FFN_NORM in llama and to ATTN_POST_NORM
//! in gemma2; an HF name listed by two of those kinds goes to the later one (dict assignment);
//! block names exist for blocks `0..n_blocks` only; every GGUF name also maps to itself.

use std::collections::HashMap;

use anyhow::{bail, Result};

use super::tensor_names::{TensorKind, ARCH_BLOCK_NAMES, BLOCK_NAMES, GLOBAL_NAMES, MODEL_TENSORS};

/// The kinds of a GGUF architecture (`MODEL_TENSORS[arch]`).
pub fn model_tensors(arch: &str) -> Option<&'static [TensorKind]> {
    MODEL_TENSORS
        .iter()
        .find(|(a, _)| *a == arch)
        .map(|(_, kinds)| *kinds)
}

/// A resolved name: the kind and the GGUF name (with the suffix, when one was tried).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub kind: TensorKind,
    pub name: String,
}

/// `TensorNameMap` of one architecture and block count.
pub struct NameMap {
    arch: &'static str,
    kinds: &'static [TensorKind],
    map: HashMap<String, (TensorKind, String)>,
}

impl NameMap {
    /// `gguf.get_tensor_name_map(arch, n_blocks)`.
    pub fn new(arch: &'static str, n_blocks: usize) -> Result<NameMap> {
        let Some(kinds) = model_tensors(arch) else {
            bail!("gguf-py has no tensor table for architecture {arch:?}");
        };
        let mut map = HashMap::new();
        for (kind, names) in GLOBAL_NAMES {
            if !kinds.contains(kind) {
                continue;
            }
            let gguf = kind.gguf_base().to_string();
            map.insert(gguf.clone(), (*kind, gguf.clone()));
            for n in *names {
                map.insert((*n).to_string(), (*kind, gguf.clone()));
            }
        }
        let block_rows = block_rows(arch);
        for bid in 0..n_blocks {
            let b = bid.to_string();
            for (kind, names) in &block_rows {
                if !kinds.contains(kind) {
                    continue;
                }
                let gguf = kind.gguf_base().replace("{bid}", &b);
                map.insert(gguf.clone(), (*kind, gguf.clone()));
                for n in *names {
                    map.insert(n.replace("{bid}", &b), (*kind, gguf.clone()));
                }
            }
        }
        Ok(NameMap { arch, kinds, map })
    }

    /// The architecture's kinds.
    pub fn kinds(&self) -> &'static [TensorKind] {
        self.kinds
    }

    /// Whether the architecture has tensors of `kind`.
    pub fn has(&self, kind: TensorKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// `get_type_and_name(key, try_suffixes)`: the name as it is, else without one of the
    /// suffixes (which is put back on the GGUF name).
    pub fn get(&self, key: &str, try_suffixes: &[&str]) -> Option<Mapped> {
        if let Some((kind, name)) = self.map.get(key) {
            return Some(Mapped {
                kind: *kind,
                name: name.clone(),
            });
        }
        try_suffixes.iter().find_map(|suffix| {
            let base = key.strip_suffix(suffix)?;
            let (kind, name) = self.map.get(base)?;
            Some(Mapped {
                kind: *kind,
                name: format!("{name}{suffix}"),
            })
        })
    }

    /// `ModelBase.map_tensor_name`: `.weight`/`.bias` tried, and an unmappable name an error.
    pub fn map(&self, key: &str) -> Result<Mapped> {
        match self.get(key, &[".weight", ".bias"]) {
            Some(m) => Ok(m),
            None => bail!(
                "cannot map tensor {key:?} to a GGUF name for architecture {}",
                self.arch
            ),
        }
    }

    /// `format_tensor_name(kind, bid, suffix)`.
    pub fn format(&self, kind: TensorKind, bid: Option<usize>, suffix: &str) -> Result<String> {
        if !self.has(kind) {
            bail!("architecture {} has no tensor {kind:?}", self.arch);
        }
        let base = kind.gguf_base();
        Ok(match bid {
            Some(b) => base.replace("{bid}", &b.to_string()),
            None if base.contains("{bid}") => bail!("tensor {kind:?} needs a block number"),
            None => base.to_string(),
        } + suffix)
    }

    /// `match_model_tensor_name(name, kind, bid, suffix)`.
    pub fn is(&self, name: &str, kind: TensorKind, bid: Option<usize>, suffix: &str) -> bool {
        let base = kind.gguf_base();
        if !self.has(kind) || base.contains("{bid}") != bid.is_some() {
            return false;
        }
        let want = match bid {
            Some(b) => base.replace("{bid}", &b.to_string()),
            None => base.to_string(),
        };
        name.strip_suffix(suffix) == Some(want.as_str())
    }
}

/// `block_mappings_cfg` with the architecture's `arch_block_mappings_cfg` applied the way
/// `dict.update` applies it.
fn block_rows(arch: &str) -> Vec<(TensorKind, &'static [&'static str])> {
    let mut rows: Vec<(TensorKind, &'static [&'static str])> = BLOCK_NAMES.to_vec();
    if let Some((_, extra)) = ARCH_BLOCK_NAMES.iter().find(|(a, _)| *a == arch) {
        for (kind, names) in *extra {
            match rows.iter_mut().find(|(k, _)| k == kind) {
                Some(row) => row.1 = names,
                None => rows.push((*kind, names)),
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use TensorKind as K;

    #[test]
    fn names_resolve_among_the_architectures_own_kinds() {
        let llama = NameMap::new("llama", 2).unwrap();
        let gemma2 = NameMap::new("gemma2", 2).unwrap();
        let m = llama
            .map("model.layers.1.post_attention_layernorm.weight")
            .unwrap();
        assert_eq!(
            (m.kind, m.name.as_str()),
            (K::FfnNorm, "blk.1.ffn_norm.weight")
        );
        let m = gemma2
            .map("model.layers.1.post_attention_layernorm.weight")
            .unwrap();
        assert_eq!(
            (m.kind, m.name.as_str()),
            (K::AttnPostNorm, "blk.1.post_attention_norm.weight")
        );
        assert_eq!(
            llama
                .map("model.layers.0.self_attn.k_proj.bias")
                .unwrap()
                .name,
            "blk.0.attn_k.bias"
        );
        assert_eq!(llama.map("lm_head.weight").unwrap().name, "output.weight");
        // GGUF names map to themselves; blocks past n_blocks do not exist.
        assert_eq!(llama.map("blk.0.attn_q.weight").unwrap().kind, K::AttnQ);
        assert!(llama.map("model.layers.2.self_attn.q_proj.weight").is_err());
        // gemma2 has no output tensor at all.
        assert!(gemma2.map("lm_head.weight").is_err());
        assert!(NameMap::new("no-such-arch", 1).is_err());
    }

    #[test]
    fn formats_and_matches_like_gguf_py() {
        let m = NameMap::new("qwen2moe", 4).unwrap();
        assert_eq!(
            m.format(K::FfnGateInpShexp, Some(3), ".weight").unwrap(),
            "blk.3.ffn_gate_inp_shexp.weight"
        );
        assert!(m.is(
            "blk.3.ffn_gate_exps.weight",
            K::FfnGateExp,
            Some(3),
            ".weight"
        ));
        assert!(!m.is("blk.3.ffn_gate_exps.weight", K::FfnGateExp, None, ".weight"));
        assert!(m.format(K::AttnQNorm, Some(0), ".weight").is_err());
    }
}
