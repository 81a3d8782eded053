//! HF tensor names → GGUF tensor names, as data.
//!
//! Transcribed from gguf-py's `gguf/tensor_mapping.py` (`TensorNameMap`) and
//! `gguf/constants.py` (`TENSOR_NAMES`) of the reference build, restricted to the HF layouts of
//! the architectures gmat supports. `{bid}` is the block (layer) number, `{xid}` an expert number.

use std::sync::OnceLock;

use regex::Regex;

/// What a GGUF tensor is, for the type rules and transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    TokenEmbd,
    Output,
    OutputNorm,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    AttnQNorm,
    AttnKNorm,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    FfnGateInp,
    FfnGateExps,
    FfnUpExps,
    FfnDownExps,
    RopeFreqs,
}

impl TensorKind {
    /// GGUF base name (without `.weight`/`.bias`), `{bid}` for the block number.
    pub fn gguf_base(self) -> &'static str {
        use TensorKind::*;
        match self {
            TokenEmbd => "token_embd",
            Output => "output",
            OutputNorm => "output_norm",
            AttnNorm => "blk.{bid}.attn_norm",
            AttnQ => "blk.{bid}.attn_q",
            AttnK => "blk.{bid}.attn_k",
            AttnV => "blk.{bid}.attn_v",
            AttnOutput => "blk.{bid}.attn_output",
            AttnQNorm => "blk.{bid}.attn_q_norm",
            AttnKNorm => "blk.{bid}.attn_k_norm",
            FfnNorm => "blk.{bid}.ffn_norm",
            FfnGate => "blk.{bid}.ffn_gate",
            FfnUp => "blk.{bid}.ffn_up",
            FfnDown => "blk.{bid}.ffn_down",
            FfnGateInp => "blk.{bid}.ffn_gate_inp",
            FfnGateExps => "blk.{bid}.ffn_gate_exps",
            FfnUpExps => "blk.{bid}.ffn_up_exps",
            FfnDownExps => "blk.{bid}.ffn_down_exps",
            RopeFreqs => "rope_freqs",
        }
    }
}

/// (HF name without suffix, kind). Experts use `{xid}`; the converter stacks them.
pub const HF_NAMES: &[(&str, TensorKind)] = &[
    ("model.embed_tokens", TensorKind::TokenEmbd),
    ("lm_head", TensorKind::Output),
    ("model.norm", TensorKind::OutputNorm),
    ("model.layers.{bid}.input_layernorm", TensorKind::AttnNorm),
    ("model.layers.{bid}.self_attn.q_proj", TensorKind::AttnQ),
    ("model.layers.{bid}.self_attn.k_proj", TensorKind::AttnK),
    ("model.layers.{bid}.self_attn.v_proj", TensorKind::AttnV),
    (
        "model.layers.{bid}.self_attn.o_proj",
        TensorKind::AttnOutput,
    ),
    ("model.layers.{bid}.self_attn.q_norm", TensorKind::AttnQNorm),
    ("model.layers.{bid}.self_attn.k_norm", TensorKind::AttnKNorm),
    (
        "model.layers.{bid}.post_attention_layernorm",
        TensorKind::FfnNorm,
    ),
    ("model.layers.{bid}.mlp.gate_proj", TensorKind::FfnGate),
    ("model.layers.{bid}.mlp.up_proj", TensorKind::FfnUp),
    ("model.layers.{bid}.mlp.down_proj", TensorKind::FfnDown),
    (
        "model.layers.{bid}.block_sparse_moe.gate",
        TensorKind::FfnGateInp,
    ),
    (
        "model.layers.{bid}.block_sparse_moe.experts.{xid}.w1",
        TensorKind::FfnGateExps,
    ),
    (
        "model.layers.{bid}.block_sparse_moe.experts.{xid}.w3",
        TensorKind::FfnUpExps,
    ),
    (
        "model.layers.{bid}.block_sparse_moe.experts.{xid}.w2",
        TensorKind::FfnDownExps,
    ),
];

/// Source tensors the converter drops without mapping them.
pub const SKIPPED_SUFFIXES: &[&str] = &[
    ".attention.masked_bias",
    ".attention.bias",
    ".rotary_emb.inv_freq",
];

/// A matched HF name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameMatch {
    pub kind: TensorKind,
    pub bid: Option<usize>,
    pub xid: Option<usize>,
    /// `.weight` or `.bias`.
    pub suffix: &'static str,
}

impl NameMatch {
    /// The GGUF name of the (stacked, for experts) tensor.
    pub fn gguf_name(&self) -> String {
        let base = self.kind.gguf_base();
        let base = match self.bid {
            Some(b) => base.replace("{bid}", &b.to_string()),
            None => base.to_string(),
        };
        format!("{base}{}", self.suffix)
    }
}

fn patterns() -> &'static [(Regex, TensorKind)] {
    static P: OnceLock<Vec<(Regex, TensorKind)>> = OnceLock::new();
    P.get_or_init(|| {
        HF_NAMES
            .iter()
            .map(|(pat, kind)| {
                let re = regex::escape(pat)
                    .replace(r"\{bid\}", r"(?P<bid>\d+)")
                    .replace(r"\{xid\}", r"(?P<xid>\d+)");
                (
                    Regex::new(&format!("^{re}$")).expect("HF_NAMES patterns are valid"),
                    *kind,
                )
            })
            .collect()
    })
}

/// Matches an HF tensor name (with `.weight` or `.bias`) against the table.
pub fn match_hf_name(name: &str) -> Option<NameMatch> {
    let (base, suffix) = if let Some(b) = name.strip_suffix(".weight") {
        (b, ".weight")
    } else if let Some(b) = name.strip_suffix(".bias") {
        (b, ".bias")
    } else {
        return None;
    };
    patterns().iter().find_map(|(re, kind)| {
        let c = re.captures(base)?;
        let num = |k: &str| c.name(k).and_then(|m| m.as_str().parse::<usize>().ok());
        Some(NameMatch {
            kind: *kind,
            bid: num("bid"),
            xid: num("xid"),
            suffix,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_llama_qwen_and_mixtral_names() {
        let m = match_hf_name("model.layers.11.self_attn.q_proj.weight").unwrap();
        assert_eq!(m.gguf_name(), "blk.11.attn_q.weight");
        assert_eq!(
            match_hf_name("model.layers.0.self_attn.k_proj.bias")
                .unwrap()
                .gguf_name(),
            "blk.0.attn_k.bias"
        );
        assert_eq!(
            match_hf_name("lm_head.weight").unwrap().gguf_name(),
            "output.weight"
        );
        assert_eq!(
            match_hf_name("model.norm.weight").unwrap().gguf_name(),
            "output_norm.weight"
        );
        assert_eq!(
            match_hf_name("model.layers.1.self_attn.k_norm.weight")
                .unwrap()
                .gguf_name(),
            "blk.1.attn_k_norm.weight"
        );
        let e = match_hf_name("model.layers.1.block_sparse_moe.experts.3.w2.weight").unwrap();
        assert_eq!(
            (e.kind, e.bid, e.xid),
            (TensorKind::FfnDownExps, Some(1), Some(3))
        );
        assert_eq!(e.gguf_name(), "blk.1.ffn_down_exps.weight");
        assert!(match_hf_name("model.layers.0.self_attn.q_proj.scales").is_none());
        assert!(match_hf_name("model.layers.x.mlp.up_proj.weight").is_none());
    }
}
