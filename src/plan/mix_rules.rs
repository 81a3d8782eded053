//! llama-quantize's per-tensor type selection: which ggml type every tensor of a model gets
//! under a file type (`Q4_K_M`, ...) and the user's overrides.
//!
//! A port of the reference build (llama.cpp b11312, `src/llama-quant.cpp`):
//! `tensor_get_category`, `tensor_allows_quantization`, `init_quantize_state_counters`,
//! `llama_tensor_get_type` (the `--token-embedding-type`, `--output-tensor-type`,
//! `--tensor-type` and `--pure` precedence), `llama_tensor_get_type_impl` (the mixes, with the
//! `n_attention_wv` / `n_ffn_down` / ... counters and `use_more_bits`), `tensor_type_fallback`
//! ([`super::type_rules::fallback`]) and `tensor_requires_imatrix`; plus the model facts
//! llama.cpp reads from the GGUF (`llama_model::load_hparams`, the per-architecture
//! `LLM_TYPE_70B` decision).
//!
//! As in `llama_model_quantize_impl`, tensors are visited in `weight_name_comparer` order
//! ([`quantize_order`]: layer number, then name), which is the order the counters advance in,
//! whatever the order of the input list.

use std::cmp::Ordering;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use regex::Regex;

use super::file_type::{FileType, Ftype as F};
use super::type_rules::fallback;
use crate::gguf::Value;
use crate::quant::GgmlType;

use GgmlType as G;

/// `tensor_category`: llama-quantize's broad tensor roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

/// Exact names, then substrings, in the order `tensor_get_category` tests them.
const CATEGORY_NAMES: &[(&str, Category)] = &[
    ("output.weight", Category::Output),
    ("token_embd.weight", Category::TokenEmbd),
    ("per_layer_token_embd.weight", Category::TokenEmbd),
];
const CATEGORY_SUBSTRINGS: &[(&str, Category)] = &[
    ("attn_qkv.weight", Category::AttnQkv),
    ("attn_kv_b.weight", Category::AttnKvB),
    ("attn_v.weight", Category::AttnV),
    ("attn_k.weight", Category::AttnK),
    ("attn_q.weight", Category::AttnQ),
    ("attn_output.weight", Category::AttnOutput),
    ("ffn_up", Category::FfnUp),
    ("ffn_gate", Category::FfnGate),
    ("ffn_down", Category::FfnDown),
];

/// `tensor_get_category`.
pub fn category(name: &str) -> Category {
    if let Some((_, c)) = CATEGORY_NAMES.iter().find(|(n, _)| *n == name) {
        return *c;
    }
    CATEGORY_SUBSTRINGS
        .iter()
        .find(|(s, _)| name.contains(s))
        .map_or(Category::Other, |(_, c)| *c)
}

impl Category {
    /// `category_is_attn_v`: tensors as sensitive as attn_v.
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// Name parts `tensor_allows_quantization` never quantizes (besides 1-D tensors and names that
/// do not end in `weight`).
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Whole names never quantized (`LLM_TENSOR_POS_EMBD` and `LLM_TENSOR_TOKEN_TYPES`).
const NEVER_QUANTIZED_NAMES: &[&str] = &["position_embd.weight", "token_types.weight"];

/// Further name parts kept for architecture `glm5-next`.
const NEVER_QUANTIZED_GLM5_NEXT: &[&str] = &[
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
];

/// `ggml_n_dims`: the number of dimensions, not counting outer dimensions of size 1.
pub fn ggml_n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization`. `quantize_output` is false under `--leave-output-tensor`.
pub fn allows_quantization(arch: &str, name: &str, dims: &[u64], quantize_output: bool) -> bool {
    ggml_n_dims(dims) >= 2
        && name.ends_with("weight")
        && (quantize_output || name != "output.weight")
        && !NEVER_QUANTIZED.iter().any(|s| name.contains(s))
        && !NEVER_QUANTIZED_NAMES.contains(&name)
        && !(arch == "glm5-next" && NEVER_QUANTIZED_GLM5_NEXT.iter().any(|s| name.contains(s)))
}

/// `sscanf(name, "blk.%d.", &layer)`: the block number a name starts with.
fn block_number(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?.trim_start();
    let digits_end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(rest.len(), |(i, _)| i);
    rest[..digits_end].parse().ok()
}

/// `llama_model_loader::weight_name_comparer`: layer number (-1 outside blocks), then name.
fn compare_names(a: &str, b: &str) -> Ordering {
    let la = block_number(a).unwrap_or(-1);
    let lb = block_number(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// The order llama-quantize visits (and writes) tensors in: indices into `names`.
pub fn quantize_order<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| compare_names(names[a], names[b]));
    order
}

/// What llama-quantize knows about the model (from its GGUF metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub arch: String,
    /// `block_count` (`hparams.n_layer_all`).
    pub n_layer: u32,
    /// `attention.head_count` of layer 0.
    pub n_head: u32,
    /// `attention.head_count_kv` of layer 0 (defaults to `n_head`).
    pub n_head_kv: u32,
    /// `expert_count` (0 without experts).
    pub n_expert: u32,
    /// `model.type == LLM_TYPE_70B`.
    pub is_70b: bool,
}

impl ModelFacts {
    /// Facts from hyper-parameters; the 70B flag as the architecture's `load_arch_hparams` sets it.
    pub fn new(arch: &str, n_layer: u32, n_head: u32, n_head_kv: u32, n_expert: u32) -> Self {
        ModelFacts {
            arch: arch.to_string(),
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
            is_70b: is_llm_type_70b(arch, n_layer, n_head, n_head_kv, n_expert),
        }
    }

    /// Reads the keys llama.cpp's loader reads from GGUF metadata.
    pub fn from_gguf_metadata(metadata: &[(String, Value)]) -> Result<Self> {
        let get = |k: &str| metadata.iter().find(|(mk, _)| mk == k).map(|(_, v)| v);
        let arch = match get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            _ => bail!("metadata has no general.architecture"),
        };
        let num = |k: &str| -> Result<Option<u32>> {
            let key = format!("{arch}.{k}");
            Ok(match get(&key) {
                None => None,
                Some(Value::U32(n)) => Some(*n),
                Some(Value::I32(n)) if *n >= 0 => Some(*n as u32),
                Some(v) => bail!("metadata key {key} is {v:?}; expected an unsigned integer"),
            })
        };
        let n_layer = num("block_count")?.context("metadata has no block_count")?;
        let n_head = num("attention.head_count")?.unwrap_or(0);
        let n_head_kv = num("attention.head_count_kv")?.unwrap_or(n_head);
        let n_expert = num("expert_count")?.unwrap_or(0);
        Ok(ModelFacts::new(&arch, n_layer, n_head, n_head_kv, n_expert))
    }

    /// `hparams.n_gqa()` of layer 0.
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }
}

/// Whether `load_arch_hparams` of `arch` gives `LLM_TYPE_70B` (the only model type the mixes
/// look at).
pub fn is_llm_type_70b(
    arch: &str,
    n_layer: u32,
    n_head: u32,
    n_head_kv: u32,
    n_expert: u32,
) -> bool {
    match arch {
        "llama" => n_expert != 8 && n_layer == 80 && n_head != n_head_kv,
        "qwen2" | "deci" | "olmo" => n_layer == 80,
        "jais2" => n_layer == 68,
        _ => false,
    }
}

/// One `--tensor-type REGEX=TYPE` rule: the first rule whose regex is found in a tensor's name
/// gives it TYPE (still subject to the shape fallback), in place of the mix rules.
#[derive(Clone, Debug)]
pub struct TensorTypeRule {
    /// The pattern, lower-cased as llama-quantize does.
    pub pattern: String,
    regex: Regex,
    pub ty: GgmlType,
}

impl TensorTypeRule {
    /// A rule from a pattern (lower-cased, then compiled) and a type.
    pub fn new(pattern: &str, ty: GgmlType) -> Result<Self> {
        let pattern = pattern.to_lowercase();
        let regex = Regex::new(&pattern)
            .with_context(|| format!("tensor type pattern {pattern:?} is not a valid regex"))?;
        Ok(TensorTypeRule { pattern, regex, ty })
    }

    /// Whether the rule names this tensor (`std::regex_search`: anywhere in the name).
    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

impl FromStr for TensorTypeRule {
    type Err = String;
    /// `REGEX=TYPE`, split at the first `=` (`parse_tensor_type` in tools/quantize).
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, ty) = s
            .split_once('=')
            .ok_or_else(|| format!("malformed tensor type '{s}' (expected REGEX=TYPE)"))?;
        if name.is_empty() {
            return Err(format!("missing tensor name in '{s}'"));
        }
        if ty.is_empty() {
            return Err(format!("missing quantization type in '{s}'"));
        }
        let ty: GgmlType = ty.parse()?;
        TensorTypeRule::new(name, ty).map_err(|e| format!("{e:#}"))
    }
}

/// llama-quantize's options that change tensor types: one definition for the command line,
/// the export command and the plan.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TypeOptions {
    /// Give every quantizable tensor the file type's own type (like llama-quantize --pure).
    #[arg(long)]
    pub pure: bool,
    /// ggml type of output.weight (and of tied token embeddings), as llama-quantize
    /// --output-tensor-type.
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<GgmlType>,
    /// ggml type of token_embd.weight, as llama-quantize --token-embedding-type.
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<GgmlType>,
    /// Give tensors whose GGUF name contains a match of REGEX (lower-cased) this ggml type;
    /// repeatable, first match wins; quantized file types only; as llama-quantize --tensor-type.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub tensor_types: Vec<TensorTypeRule>,
    /// Keep output.weight unquantized, as llama-quantize --leave-output-tensor.
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Let tensors that are already quantized (gpt-oss's MXFP4 experts, the tensors of a store
    /// imported from a quantized GGUF) be dequantized and quantized to another type, as
    /// llama-quantize --allow-requantize (this can severely reduce quality compared to
    /// quantizing from 16 or 32 bit).
    #[arg(long)]
    pub allow_requantize: bool,
}

/// The type options together with whether an importance matrix is given (which changes a few
/// IQ3_XXS/IQ4/Q4_0/Q5_0 choices and lifts the refusals).
#[derive(Clone, Debug, Default)]
pub struct MixOptions {
    pub types: TypeOptions,
    pub has_imatrix: bool,
}

impl std::ops::Deref for MixOptions {
    type Target = TypeOptions;
    fn deref(&self) -> &TypeOptions {
        &self.types
    }
}

impl MixOptions {
    fn first_rule(&self, name: &str) -> Option<&TensorTypeRule> {
        self.tensor_types.iter().find(|r| r.matches(name))
    }
}

/// One tensor of the converter's (unquantized) output.
#[derive(Clone, Copy, Debug)]
pub struct TensorDesc<'a> {
    /// GGUF name.
    pub name: &'a str,
    /// ggml order: `dims[0]` is the row length.
    pub dims: &'a [u64],
    /// Its type in the unquantized file (kept by tensors that are not quantized).
    pub ty: GgmlType,
}

/// The type llama-quantize gives every tensor (same order as `tensors`).
pub fn select_types(
    model: &ModelFacts,
    tensors: &[TensorDesc],
    ft: FileType,
    opts: &MixOptions,
) -> Result<Vec<GgmlType>> {
    let mut qs = QuantState::new(model, ft, opts, tensors);
    let mut out: Vec<GgmlType> = tensors.iter().map(|t| t.ty).collect();
    for i in quantize_order(tensors.iter().map(|t| t.name)) {
        out[i] = qs
            .tensor_type(&tensors[i])
            .with_context(|| format!("tensor {}", tensors[i].name))?;
    }
    Ok(out)
}

/// `tensor_requires_imatrix`: types llama-quantize refuses to produce without an importance
/// matrix.
pub fn requires_imatrix(name: &str, ty: GgmlType, ft: FileType) -> bool {
    if CATEGORY_NAMES.iter().any(|(n, _)| *n == name) {
        return false; // token embeddings and output
    }
    match ty {
        G::IQ3_XXS | G::IQ2_XXS | G::IQ2_XS | G::IQ2_S | G::IQ1_M | G::IQ1_S => true,
        G::Q2_K => ft.ftype == F::Q2_K_S,
        _ => false,
    }
}

/// llama-quantize's refusal without an imatrix: the first quantized tensor (in quantize order)
/// whose type needs one.
pub fn check_imatrix(
    model: &ModelFacts,
    tensors: &[TensorDesc],
    types: &[GgmlType],
    ft: FileType,
    opts: &MixOptions,
) -> Result<()> {
    if opts.has_imatrix {
        return Ok(());
    }
    for i in quantize_order(tensors.iter().map(|t| t.name)) {
        let t = &tensors[i];
        if allows_quantization(&model.arch, t.name, t.dims, !opts.leave_output_tensor)
            && requires_imatrix(t.name, types[i], ft)
        {
            bail!(
                "file type {ft} needs an importance matrix: tensor {} would be {} \
                 (llama-quantize refuses this without --imatrix too); give an importance \
                 matrix with --imatrix FILE (made by llama-imatrix), choose another file type, \
                 or give such tensors another type",
                t.name,
                types[i]
            );
        }
    }
    Ok(())
}

/// llama-quantize's refusal to requantize: the first tensor (in quantize order) that is already
/// quantized in the converter's file (`types_in`) and would get another type, unless
/// `--allow-requantize`.
pub fn check_requantize(
    tensors: &[TensorDesc],
    types: &[GgmlType],
    opts: &MixOptions,
) -> Result<()> {
    if opts.allow_requantize {
        return Ok(());
    }
    for i in quantize_order(tensors.iter().map(|t| t.name)) {
        let t = &tensors[i];
        if t.ty.is_quantized() && types[i] != t.ty {
            bail!(
                "tensor {} is {} in the converter's file and would become {}: requantizing from \
                 type {} is disabled, as in llama-quantize; keep it {} (file type MXFP4_MOE for \
                 MXFP4 experts) or allow it with --allow-requantize",
                t.name,
                t.ty,
                types[i],
                t.ty,
                t.ty
            );
        }
    }
    Ok(())
}

/// `use_more_bits`: the first and last eighth of layers and every third one between.
fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// `quantize_state_impl`: the counters the mixes use.
struct QuantState<'a> {
    model: &'a ModelFacts,
    ft: FileType,
    opts: &'a MixOptions,
    n_attention_wv: i64,
    n_ffn_down: i64,
    n_ffn_gate: i64,
    n_ffn_up: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
    has_tied_embeddings: bool,
}

impl<'a> QuantState<'a> {
    /// `init_quantize_state_counters`.
    fn new(
        model: &'a ModelFacts,
        ft: FileType,
        opts: &'a MixOptions,
        tensors: &[TensorDesc],
    ) -> Self {
        let cats = || tensors.iter().map(|t| category(t.name));
        let n_layer = i64::from(model.n_layer);
        QuantState {
            model,
            ft,
            opts,
            n_attention_wv: cats().filter(|c| c.is_attn_v()).count() as i64,
            n_ffn_down: n_layer,
            n_ffn_gate: n_layer,
            n_ffn_up: n_layer,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            has_tied_embeddings: !cats().any(|c| c == Category::Output),
        }
    }

    /// Whether the file type is one of `names`.
    /// `llama_tensor_get_type`: the options' precedence, then the mix, then the fallback.
    fn tensor_type(&mut self, t: &TensorDesc) -> Result<GgmlType> {
        let opts = self.opts;
        if !allows_quantization(&self.model.arch, t.name, t.dims, !opts.leave_output_tensor) {
            return Ok(t.ty);
        }
        let cat = category(t.name);
        if let Some(ty) = opts.token_embedding_type {
            // per_layer_token_embd follows --token-embedding-type unless a --tensor-type names it
            let named =
                t.name == "per_layer_token_embd.weight" && opts.first_rule(t.name).is_some();
            if cat == Category::TokenEmbd && !named {
                return Ok(ty);
            }
        }
        if let (Some(ty), Category::Output) = (opts.output_tensor_type, cat) {
            return Ok(ty);
        }
        let mut new_type = self.ft.default_type;
        if new_type.is_quantized() {
            let manual = opts.first_rule(t.name);
            if let Some(rule) = manual {
                new_type = rule.ty;
            } else if !opts.pure {
                new_type = self.mix_type(new_type, t, cat)?;
            }
            new_type = fallback(t.dims[0], new_type)?;
        }
        Ok(new_type)
    }

    /// `llama_tensor_get_type_impl`: the file type's mix for one tensor.
    fn mix_type(&mut self, new_type: GgmlType, t: &TensorDesc, cat: Category) -> Result<GgmlType> {
        let arch = self.model.arch.as_str();
        if arch == "glm5-next"
            && ["attn_q_a", "attn_q_b", "nextn.eh_proj"]
                .iter()
                .any(|s| t.name.contains(s))
            && !matches!(new_type, G::F32 | G::BF16 | G::F16)
        {
            return Ok(G::Q8_0);
        }
        Ok(
            if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
                self.output_type(new_type, t)
            } else if self.ft.is(&[F::MXFP4_MOE]) {
                self.mxfp4_moe_type(t, cat)
            } else if cat == Category::TokenEmbd {
                self.token_embd_type(new_type)
            } else if self.ft.is(&[
                F::IQ2_XXS,
                F::IQ2_XS,
                F::IQ1_S,
                F::IQ2_S,
                F::IQ2_M,
                F::IQ1_M,
            ]) {
                self.very_low_bit_type(new_type, cat)
            } else if cat.is_attn_v() {
                // (the reference's later ATTENTION_QKV branch is unreachable: QKV is attn_v-like)
                self.attn_v_type(new_type)
            } else {
                match cat {
                    Category::AttnK => self.attn_k_type(new_type),
                    Category::AttnQ => self.attn_q_type(new_type),
                    Category::FfnDown => self.ffn_down_type(new_type, t)?,
                    Category::AttnOutput => self.attn_output_type(new_type),
                    Category::FfnGate | Category::FfnUp => {
                        self.ffn_gate_up_type(new_type, t, cat)?
                    }
                    _ => new_type,
                }
            },
        )
    }

    /// output.weight, and tied token embeddings.
    // branches kept one for one with the reference, in its order
    #[allow(clippy::if_same_then_else)]
    fn output_type(&self, new_type: GgmlType, t: &TensorDesc) -> GgmlType {
        if let Some(ty) = self.opts.output_tensor_type {
            return ty;
        }
        let nx = t.dims[0];
        if self.ft.is(&[F::MXFP4_MOE]) {
            G::Q8_0
        } else if self.model.arch == "falcon" || !nx.is_multiple_of(new_type.block_size() as u64) {
            G::Q8_0
        } else if self.ft.is(&[
            F::IQ2_XXS,
            F::IQ2_XS,
            F::IQ3_XXS,
            F::IQ1_S,
            F::IQ2_S,
            F::IQ2_M,
            F::IQ1_M,
        ]) {
            G::Q5_K
        } else if new_type != G::Q8_0 {
            G::Q6_K
        } else {
            new_type
        }
    }

    /// MXFP4_MOE: experts MXFP4, everything else Q8_0.
    fn mxfp4_moe_type(&self, t: &TensorDesc, cat: Category) -> GgmlType {
        let bailing = self.model.arch == "bailingmoe3";
        let bailing_expert =
            bailing && matches!(cat, Category::FfnUp | Category::FfnGate | Category::FfnDown);
        let ne2 = t.dims.get(2).copied().unwrap_or(1);
        if ne2 > 1 && (!bailing || bailing_expert) {
            G::MXFP4
        } else {
            G::Q8_0
        }
    }

    /// Untied token embeddings.
    fn token_embd_type(&self, new_type: GgmlType) -> GgmlType {
        if let Some(ty) = self.opts.token_embedding_type {
            ty
        } else if self.ft.is(&[F::IQ2_XXS, F::IQ2_XS, F::IQ1_S, F::IQ1_M]) {
            G::Q2_K
        } else if self.ft.is(&[F::IQ2_S, F::IQ2_M, F::IQ3_XXS]) {
            G::IQ3_S
        } else if self.ft.is(&[F::TQ1_0, F::TQ2_0, F::Q2_0]) {
            G::Q4_K
        } else {
            new_type
        }
    }

    /// The IQ1/IQ2 file types.
    fn very_low_bit_type(&mut self, new_type: GgmlType, cat: Category) -> GgmlType {
        let n_expert = self.model.n_expert;
        let iq2_s_or_m = self.ft.is(&[F::IQ2_S, F::IQ2_M]);
        if cat.is_attn_v() {
            self.i_attention_wv += 1;
            if self.model.n_gqa() >= 4 || n_expert >= 4 {
                G::Q4_K
            } else if iq2_s_or_m {
                G::IQ3_S
            } else {
                G::Q2_K
            }
        } else if n_expert == 8 && cat == Category::AttnK {
            G::Q4_K
        } else if cat == Category::FfnDown {
            let low = self.i_ffn_down < self.n_ffn_down / 8;
            self.i_ffn_down += 1;
            match (low, iq2_s_or_m) {
                (true, true) => G::IQ3_S,
                (true, false) => G::Q2_K,
                _ => new_type,
            }
        } else if cat == Category::AttnOutput {
            if n_expert == 8 {
                G::Q5_K
            } else if self.ft.is(&[F::IQ1_S, F::IQ1_M]) {
                G::IQ2_XXS
            } else if iq2_s_or_m {
                G::IQ3_S
            } else {
                new_type
            }
        } else {
            new_type
        }
    }

    /// attn_v (and attn_qkv, attn_kv_b).
    // branches kept one for one with the reference, in its order
    #[allow(clippy::if_same_then_else)]
    fn attn_v_type(&mut self, new_type: GgmlType) -> GgmlType {
        let gqa = self.model.n_gqa();
        let (i, n) = (self.i_attention_wv, self.n_attention_wv);
        let mut ty = if self.ft.is(&[F::Q2_K]) {
            if gqa >= 4 {
                G::Q4_K
            } else {
                G::Q3_K
            }
        } else if self.ft.is(&[F::Q2_K_S]) && gqa >= 4 {
            G::Q4_K
        } else if self.ft.is(&[F::IQ3_XXS]) {
            if gqa >= 4 {
                G::Q4_K
            } else if !self.opts.has_imatrix {
                G::IQ3_S
            } else {
                G::IQ3_XXS
            }
        } else if self.ft.is(&[F::IQ3_XS, F::IQ3_S]) && gqa >= 4 {
            G::Q4_K
        } else if self.ft.is(&[F::IQ3_M]) {
            G::Q4_K
        } else if self.ft.is(&[F::Q3_K_M]) {
            if i < 2 {
                G::Q5_K
            } else {
                G::Q4_K
            }
        } else if self.ft.is(&[F::Q3_K_L]) {
            G::Q5_K
        } else if self.ft.is(&[F::IQ4_NL, F::IQ4_XS]) && gqa >= 4 {
            G::Q5_K
        } else if self.ft.is(&[F::Q4_K_M, F::Q5_K_M]) && use_more_bits(i, n) {
            G::Q6_K
        } else if self.ft.is(&[F::Q4_K_S]) && i < 4 {
            G::Q5_K
        } else {
            new_type
        };
        if self.model.is_70b && matches!(ty, G::Q3_K | G::Q4_K) {
            // 8 heads share attn_v in the 70B models: more bits cost little
            ty = G::Q5_K;
        }
        if self.model.n_expert == 8 {
            ty = G::Q8_0;
        }
        self.i_attention_wv += 1;
        ty
    }

    fn attn_k_type(&self, new_type: GgmlType) -> GgmlType {
        if self.model.n_expert == 8 {
            G::Q8_0
        } else {
            self.attn_q_type(new_type)
        }
    }

    fn attn_q_type(&self, new_type: GgmlType) -> GgmlType {
        if self.ft.is(&[F::IQ3_XS]) {
            G::IQ3_XXS
        } else if self.ft.is(&[F::IQ3_XXS]) {
            G::IQ2_S
        } else {
            new_type
        }
    }

    /// `layer_info`: the layer of a FFN tensor; with experts, parsed from the name.
    fn layer_info(&self, counter: i64, n_layer: i64, name: &str) -> Result<(i64, i64)> {
        if self.model.n_expert.max(1) > 1 {
            let Some(i_layer) = block_number(name) else {
                bail!("Failed to determine layer for tensor {name}");
            };
            if i_layer < 0 || i_layer >= n_layer {
                bail!("Bad layer {i_layer} for tensor {name}. Must be in [0, {n_layer})");
            }
            return Ok((i_layer, n_layer));
        }
        Ok((counter, n_layer))
    }

    fn ffn_down_type(&mut self, new_type: GgmlType, t: &TensorDesc) -> Result<GgmlType> {
        let (i, n) = self.layer_info(self.i_ffn_down, self.n_ffn_down, t.name)?;
        let falcon = self.model.arch == "falcon";
        let more = use_more_bits(i, n);
        let imatrix = self.opts.has_imatrix;
        let ty = if self.ft.is(&[F::Q2_K]) {
            G::Q3_K
        } else if self.ft.is(&[F::Q2_K_S]) {
            if i < n / 8 {
                G::Q4_K
            } else {
                new_type
            }
        } else if self.ft.is(&[F::IQ3_XXS]) && !imatrix {
            if i < n / 8 {
                G::Q4_K
            } else {
                G::Q3_K
            }
        } else if self.ft.is(&[F::Q3_K_M]) {
            if i < n / 16 {
                G::Q5_K
            } else if !falcon || more {
                G::Q4_K
            } else {
                G::Q3_K
            }
        } else if self.ft.is(&[F::IQ3_M]) && (i < n / 8 || (self.model.n_expert == 8 && more)) {
            G::Q4_K
        } else if self.ft.is(&[F::Q3_K_L]) {
            if falcon {
                G::Q4_K
            } else {
                G::Q5_K
            }
        } else if self.ft.is(&[F::Q4_K_M]) {
            if falcon {
                if i < n / 16 {
                    G::Q6_K
                } else if more {
                    G::Q5_K
                } else {
                    G::Q4_K
                }
            } else if more {
                G::Q6_K
            } else {
                new_type
            }
        } else if i < n / 8 && self.ft.is(&[F::IQ4_NL, F::IQ4_XS]) && !imatrix {
            G::Q5_K
        } else if self.ft.is(&[F::Q5_K_M]) && more {
            G::Q6_K
        } else if self.ft.is(&[F::Q4_K_S]) && !falcon && i < n / 8 {
            G::Q5_K
        } else if self.ft.is(&[F::Q4_0, F::Q5_0]) && imatrix && i < n / 8 {
            // guards the first ffn_down layers, only with an imatrix
            if self.ft.is(&[F::Q4_0]) {
                G::Q4_1
            } else {
                G::Q5_1
            }
        } else {
            new_type
        };
        self.i_ffn_down += 1;
        Ok(ty)
    }

    fn attn_output_type(&self, new_type: GgmlType) -> GgmlType {
        if self.model.arch == "falcon" {
            return if self.ft.is(&[F::Q3_K_L]) {
                G::Q4_K
            } else {
                new_type
            };
        }
        if self.model.n_expert == 8 {
            return if self.ft.is(&[
                F::Q2_K,
                F::IQ3_XS,
                F::IQ3_XXS,
                F::Q3_K_S,
                F::Q3_K_M,
                F::IQ4_NL,
                F::Q4_K_S,
                F::Q4_K_M,
                F::IQ3_S,
                F::IQ3_M,
                F::IQ4_XS,
            ]) {
                G::Q5_K
            } else {
                new_type
            };
        }
        /// (file type, attn_output type) for models without 8 experts.
        const TABLE: &[(&str, GgmlType)] = &[
            ("Q2_K", G::Q3_K),
            ("IQ3_XXS", G::IQ3_S),
            ("Q3_K_M", G::Q4_K),
            ("Q3_K_L", G::Q5_K),
            ("IQ3_M", G::Q4_K),
        ];
        TABLE
            .iter()
            .find(|(f, _)| *f == self.ft.name)
            .map_or(new_type, |(_, t)| *t)
    }

    /// ffn_gate and ffn_up: IQ3_XS drops the middle layers to IQ3_XXS.
    fn ffn_gate_up_type(
        &mut self,
        new_type: GgmlType,
        t: &TensorDesc,
        cat: Category,
    ) -> Result<GgmlType> {
        let (counter, n) = if cat == Category::FfnGate {
            (self.i_ffn_gate, self.n_ffn_gate)
        } else {
            (self.i_ffn_up, self.n_ffn_up)
        };
        let (i, n) = self.layer_info(counter, n, t.name)?;
        let ty = if self.ft.is(&[F::IQ3_XS]) && i >= n / 8 && i < 7 * n / 8 {
            G::IQ3_XXS
        } else {
            new_type
        };
        if cat == Category::FfnGate {
            self.i_ffn_gate += 1;
        } else {
            self.i_ffn_up += 1;
        }
        Ok(ty)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::arch::name_map::model_tensors;
    use crate::arch::{Cx, Hparams, Kv, ModelDir, NameMap, TensorKind};
    use crate::plan::type_rules::converter_type;

    fn mix(types: TypeOptions) -> MixOptions {
        MixOptions {
            types,
            has_imatrix: false,
        }
    }

    fn ft(name: &str) -> FileType {
        name.parse().unwrap()
    }

    /// A tensor list the way the converter writes it: GGUF names (gguf-py's table), ggml dims
    /// (`dims[0]` is the row length) and the converter's type for a BF16 output.
    struct Model {
        arch: &'static str,
        names: Vec<String>,
        dims: Vec<Vec<u64>>,
        tys: Vec<GgmlType>,
    }

    impl Model {
        fn new(arch: &'static str) -> Model {
            Model {
                arch,
                names: Vec::new(),
                dims: Vec::new(),
                tys: Vec::new(),
            }
        }

        /// Appends tensor `kind` (of block `bid`) with `suffix` (`weight`, `bias`); the kind
        /// must be one of the architecture's (`MODEL_TENSORS`).
        fn add(&mut self, kind: TensorKind, bid: Option<u64>, suffix: &str, dims: Vec<u64>) {
            assert!(
                model_tensors(self.arch).unwrap().contains(&kind),
                "{kind:?} is not a {} tensor",
                self.arch
            );
            let base = kind.gguf_base();
            let name = match bid {
                Some(b) => format!("{}.{suffix}", base.replace("{bid}", &b.to_string())),
                None => format!("{base}.{suffix}"),
            };
            self.tys
                .push(converter_type(&name, dims.len(), kind, G::BF16));
            self.names.push(name);
            self.dims.push(dims);
        }

        fn descs(&self) -> Vec<TensorDesc<'_>> {
            self.names
                .iter()
                .zip(&self.dims)
                .zip(&self.tys)
                .map(|((n, d), t)| TensorDesc {
                    name: n,
                    dims: d,
                    ty: *t,
                })
                .collect()
        }
    }

    struct Shape {
        n_embd: u64,
        n_ff: u64,
        n_vocab: u64,
        n_layer: u64,
        n_head: u64,
        n_head_kv: u64,
        head_dim: u64,
        qk_norm: bool,
        has_output: bool,
    }

    /// A llama/qwen3 model in converter order (token_embd, blocks in HF order, output_norm,
    /// output), which is not llama-quantize's order: the rules must sort.
    fn build_model(s: &Shape) -> Model {
        use TensorKind as K;
        let mut m = Model::new(if s.qk_norm { "qwen3" } else { "llama" });
        let (q, kv) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
        m.add(K::TokenEmbd, None, "weight", vec![s.n_embd, s.n_vocab]);
        for b in 0..s.n_layer {
            let mut t = |k: K, d: Vec<u64>| m.add(k, Some(b), "weight", d);
            t(K::AttnNorm, vec![s.n_embd]);
            t(K::AttnQ, vec![s.n_embd, q]);
            t(K::AttnK, vec![s.n_embd, kv]);
            t(K::AttnV, vec![s.n_embd, kv]);
            t(K::AttnOut, vec![q, s.n_embd]);
            if s.qk_norm {
                t(K::AttnQNorm, vec![s.head_dim]);
                t(K::AttnKNorm, vec![s.head_dim]);
            }
            t(K::FfnNorm, vec![s.n_embd]);
            t(K::FfnGate, vec![s.n_embd, s.n_ff]);
            t(K::FfnUp, vec![s.n_embd, s.n_ff]);
            t(K::FfnDown, vec![s.n_ff, s.n_embd]);
        }
        m.add(K::OutputNorm, None, "weight", vec![s.n_embd]);
        if s.has_output {
            m.add(K::Output, None, "weight", vec![s.n_embd, s.n_vocab]);
        }
        m
    }

    /// What gmat's plan derives for a model: its architecture's `set_gguf_parameters` on
    /// `config` (config.json), read back with [`ModelFacts::from_gguf_metadata`]; and the
    /// metadata, to compare with a snapshot's header.
    fn converter_facts(config: serde_json::Value) -> (ModelFacts, Vec<(String, Value)>) {
        let hp = Hparams::new(&config).unwrap();
        let spec = crate::arch::detect(&hp).unwrap();
        let block_count = crate::arch::block_count(&hp).unwrap();
        let names = NameMap::new(spec.gguf_arch(), block_count as usize).unwrap();
        let dir = std::path::Path::new("/nonexistent-model-folder");
        let md = ModelDir::new(dir);
        let cx = Cx {
            hp: &hp,
            text: &hp,
            dir,
            md: &md,
            names: &names,
            block_count,
            file_type: 32, // MOSTLY_BF16
        };
        let mut kv = Kv::for_arch(spec.gguf_arch());
        kv.set(
            "general.architecture",
            Value::String(spec.gguf_arch().into()),
        );
        spec.set_gguf_parameters(&cx, &mut kv).unwrap();
        let metadata = kv.into_vec();
        (ModelFacts::from_gguf_metadata(&metadata).unwrap(), metadata)
    }

    /// DeepSeek-V3.1's config.json (deepseek-ai/DeepSeek-V3.1): its shape, attention, MoE and
    /// rope keys (not auto_map, quantization_config or the token ids).
    fn deepseek_v3_1_config() -> serde_json::Value {
        serde_json::json!({
            "architectures": ["DeepseekV3ForCausalLM"],
            "first_k_dense_replace": 3,
            "hidden_size": 7168,
            "intermediate_size": 18432,
            "kv_lora_rank": 512,
            "max_position_embeddings": 163840,
            "model_type": "deepseek_v3",
            "moe_intermediate_size": 2048,
            "n_group": 8,
            "n_routed_experts": 256,
            "n_shared_experts": 1,
            "norm_topk_prob": true,
            "num_attention_heads": 128,
            "num_experts_per_tok": 8,
            "num_hidden_layers": 61,
            "num_key_value_heads": 128,
            "num_nextn_predict_layers": 1,
            "q_lora_rank": 1536,
            "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64,
            "rms_norm_eps": 1e-06,
            "rope_scaling": {
                "beta_fast": 32,
                "beta_slow": 1,
                "factor": 40,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
                "original_max_position_embeddings": 4096,
                "type": "yarn"
            },
            "rope_theta": 10000,
            "routed_scaling_factor": 2.5,
            "scoring_func": "sigmoid",
            "tie_word_embeddings": false,
            "topk_group": 4,
            "topk_method": "noaux_tc",
            "v_head_dim": 128,
            "vocab_size": 129280
        })
    }

    /// gemma-3-4b-it's config.json (google/gemma-3-4b-it): its text_config leaves the head
    /// counts, head_dim and vocab_size at their defaults (the converter's: 8, 4, 256).
    fn gemma_3_4b_it_config() -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Gemma3ForConditionalGeneration"],
            "boi_token_index": 255999,
            "eoi_token_index": 256000,
            "eos_token_id": [1, 106],
            "image_token_index": 262144,
            "mm_tokens_per_image": 256,
            "model_type": "gemma3",
            "text_config": {
                "hidden_size": 2560,
                "intermediate_size": 10240,
                "model_type": "gemma3_text",
                "num_hidden_layers": 34,
                "rope_scaling": { "factor": 8.0, "rope_type": "linear" },
                "sliding_window": 1024
            },
            "vision_config": {
                "hidden_size": 1152,
                "image_size": 896,
                "intermediate_size": 4304,
                "model_type": "siglip_vision_model",
                "num_attention_heads": 16,
                "num_hidden_layers": 27,
                "patch_size": 14,
                "vision_use_head": false
            }
        })
    }

    /// `DeepseekV2Model`'s tensors for a DeepSeek-V3-style config: MLA attention (`kv_b_proj`
    /// split into `attn_k_b`, transposed, and `attn_v_b`, both 3-D), `first_k_dense_replace`
    /// dense layers, then MoE layers (router, `e_score_correction` bias, stacked experts, shared
    /// expert); multi-token-prediction layers dropped. Blocks in order, each block's tensors in
    /// its HF names' order.
    fn build_deepseek2(hp: &Hparams) -> Model {
        use TensorKind as K;
        let u = |k: &str| hp.req_u64(&[k]).unwrap();
        let (n_embd, n_layer, n_head) = (
            u("hidden_size"),
            u("num_hidden_layers"),
            u("num_attention_heads"),
        );
        let (q_lora, kv_lora) = (u("q_lora_rank"), u("kv_lora_rank"));
        let (nope, rope, v_head) = (
            u("qk_nope_head_dim"),
            u("qk_rope_head_dim"),
            u("v_head_dim"),
        );
        let (n_ff, n_ff_exp) = (u("intermediate_size"), u("moe_intermediate_size"));
        let (n_expert, n_shared) = (u("n_routed_experts"), u("n_shared_experts"));
        let n_vocab = u("vocab_size");
        let mut m = Model::new("deepseek2");
        m.add(K::TokenEmbd, None, "weight", vec![n_embd, n_vocab]);
        for b in 0..n_layer {
            let mut t = |k: K, s: &str, d: Vec<u64>| m.add(k, Some(b), s, d);
            t(K::AttnNorm, "weight", vec![n_embd]);
            if b < u("first_k_dense_replace") {
                t(K::FfnDown, "weight", vec![n_ff, n_embd]);
                t(K::FfnGate, "weight", vec![n_embd, n_ff]);
                t(K::FfnUp, "weight", vec![n_embd, n_ff]);
            } else {
                t(K::FfnDownExp, "weight", vec![n_ff_exp, n_embd, n_expert]);
                t(K::FfnGateExp, "weight", vec![n_embd, n_ff_exp, n_expert]);
                t(K::FfnUpExp, "weight", vec![n_embd, n_ff_exp, n_expert]);
                t(K::FfnExpProbsB, "bias", vec![n_expert]);
                t(K::FfnGateInp, "weight", vec![n_embd, n_expert]);
                let n_ff_sh = n_ff_exp * n_shared;
                t(K::FfnDownShexp, "weight", vec![n_ff_sh, n_embd]);
                t(K::FfnGateShexp, "weight", vec![n_embd, n_ff_sh]);
                t(K::FfnUpShexp, "weight", vec![n_embd, n_ff_sh]);
            }
            t(K::FfnNorm, "weight", vec![n_embd]);
            t(K::AttnKvANorm, "weight", vec![kv_lora]);
            t(K::AttnKvAMqa, "weight", vec![n_embd, kv_lora + rope]);
            t(K::AttnKB, "weight", vec![nope, kv_lora, n_head]);
            t(K::AttnVB, "weight", vec![kv_lora, v_head, n_head]);
            t(K::AttnOut, "weight", vec![n_head * v_head, n_embd]);
            t(K::AttnQANorm, "weight", vec![q_lora]);
            t(K::AttnQA, "weight", vec![n_embd, q_lora]);
            t(K::AttnQB, "weight", vec![q_lora, n_head * (nope + rope)]);
        }
        m.add(K::OutputNorm, None, "weight", vec![n_embd]);
        m.add(K::Output, None, "weight", vec![n_embd, n_vocab]);
        m
    }

    /// `Gemma3Model`'s tensors of the text model: four norms per block, q/k norms, tied
    /// embeddings (no output.weight); `n_vocab` is the tokenizer's (the converter trims the
    /// embedding's out-of-vocabulary rows).
    fn build_gemma3(hp: &Hparams, n_vocab: u64) -> Model {
        use TensorKind as K;
        let u = |k: &str, default: u64| hp.u64(&[k]).unwrap().unwrap_or(default);
        let (n_embd, n_ff, n_layer) = (
            u("hidden_size", 0),
            u("intermediate_size", 0),
            u("num_hidden_layers", 0),
        );
        // Gemma3TextConfig's defaults, which the converter also assumes
        let (n_head, n_head_kv, head_dim) = (
            u("num_attention_heads", 8),
            u("num_key_value_heads", 4),
            u("head_dim", 256),
        );
        let (q, kv) = (n_head * head_dim, n_head_kv * head_dim);
        let mut m = Model::new("gemma3");
        m.add(K::TokenEmbd, None, "weight", vec![n_embd, n_vocab]);
        for b in 0..n_layer {
            let mut t = |k: K, d: Vec<u64>| m.add(k, Some(b), "weight", d);
            t(K::AttnNorm, vec![n_embd]);
            t(K::FfnDown, vec![n_ff, n_embd]);
            t(K::FfnGate, vec![n_embd, n_ff]);
            t(K::FfnUp, vec![n_embd, n_ff]);
            t(K::AttnPostNorm, vec![n_embd]);
            t(K::FfnPostNorm, vec![n_embd]);
            t(K::FfnPreNorm, vec![n_embd]);
            t(K::AttnKNorm, vec![head_dim]);
            t(K::AttnK, vec![n_embd, kv]);
            t(K::AttnOut, vec![q, n_embd]);
            t(K::AttnQNorm, vec![head_dim]);
            t(K::AttnQ, vec![n_embd, q]);
            t(K::AttnV, vec![n_embd, kv]);
        }
        m.add(K::OutputNorm, None, "weight", vec![n_embd]);
        m
    }

    /// gpt-oss-120b's shape (openai/gpt-oss-120b config.json): hidden 2880, 36 layers, 64
    /// heads of 64, 8 KV heads, 128 experts of intermediate 2880, vocabulary 201088.
    struct GptOssShape {
        n_embd: u64,
        n_layer: u64,
        n_head: u64,
        n_head_kv: u64,
        head_dim: u64,
        n_expert: u64,
        n_ff_exp: u64,
        n_vocab: u64,
    }

    /// `GptOssModel`'s tensors as llama.cpp names them (gguf-py `MODEL_TENSORS[GPT_OSS]`,
    /// conversion/gpt_oss.py): biased q/k/v/output projections, attention sinks, the router with
    /// its bias, and the stacked gate/up/down experts with per-expert biases. gmat has no gpt-oss
    /// architecture module, so the list is built here, in converter order.
    fn build_gpt_oss(s: &GptOssShape) -> Model {
        use TensorKind as K;
        let mut m = Model::new("gpt-oss");
        let (q, kv) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
        m.add(K::TokenEmbd, None, "weight", vec![s.n_embd, s.n_vocab]);
        for b in 0..s.n_layer {
            let mut t = |k: K, suffix: &str, d: Vec<u64>| m.add(k, Some(b), suffix, d);
            t(K::AttnNorm, "weight", vec![s.n_embd]);
            t(K::AttnQ, "weight", vec![s.n_embd, q]);
            t(K::AttnQ, "bias", vec![q]);
            t(K::AttnK, "weight", vec![s.n_embd, kv]);
            t(K::AttnK, "bias", vec![kv]);
            t(K::AttnV, "weight", vec![s.n_embd, kv]);
            t(K::AttnV, "bias", vec![kv]);
            t(K::AttnOut, "weight", vec![q, s.n_embd]);
            t(K::AttnOut, "bias", vec![s.n_embd]);
            t(K::AttnSinks, "weight", vec![s.n_head]);
            t(K::AttnPostNorm, "weight", vec![s.n_embd]);
            t(K::FfnGateInp, "weight", vec![s.n_embd, s.n_expert]);
            t(K::FfnGateInp, "bias", vec![s.n_expert]);
            t(
                K::FfnDownExp,
                "weight",
                vec![s.n_ff_exp, s.n_embd, s.n_expert],
            );
            t(K::FfnDownExp, "bias", vec![s.n_embd, s.n_expert]);
            t(
                K::FfnGateExp,
                "weight",
                vec![s.n_embd, s.n_ff_exp, s.n_expert],
            );
            t(K::FfnGateExp, "bias", vec![s.n_ff_exp, s.n_expert]);
            t(
                K::FfnUpExp,
                "weight",
                vec![s.n_embd, s.n_ff_exp, s.n_expert],
            );
            t(K::FfnUpExp, "bias", vec![s.n_ff_exp, s.n_expert]);
        }
        m.add(K::OutputNorm, None, "weight", vec![s.n_embd]);
        m.add(K::Output, None, "weight", vec![s.n_embd, s.n_vocab]);
        m
    }

    struct Section {
        ft: String,
        default_type: String,
        overrides: Vec<(String, String)>,
    }

    /// `parse_snapshot_file` of tests/test-quant-type-selection.cpp, plus the header numbers.
    fn parse_snapshot(text: &str) -> (HashMap<String, u64>, Vec<Section>) {
        let mut header = HashMap::new();
        let mut sections: Vec<Section> = Vec::new();
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("# n_embd=") {
                for kv in format!("n_embd={h}").split(", ") {
                    let (k, v) = kv.split_once('=').unwrap();
                    header.insert(k.to_string(), v.parse().unwrap());
                }
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let (name, default_type) = rest.split_once(']').unwrap();
                sections.push(Section {
                    ft: name.to_string(),
                    default_type: default_type.trim_start().to_string(),
                    overrides: Vec::new(),
                });
                continue;
            }
            let (name, ty) = line.rsplit_once(' ').unwrap();
            let section = sections.last_mut().expect("tensor line before any section");
            section.overrides.push((name.to_string(), ty.to_string()));
        }
        (header, sections)
    }

    /// The header numbers `gguf_fetch_model_meta` reads from a GGUF (`n_vocab` is
    /// token_embd.weight's row count), from gmat's metadata and tensor list.
    fn header_of(metadata: &[(String, Value)], m: &Model) -> HashMap<String, u64> {
        let arch = m.arch;
        let mut h = HashMap::new();
        for (key, name) in [
            ("embedding_length", "n_embd"),
            ("feed_forward_length", "n_ff"),
            ("block_count", "n_layer"),
            ("attention.head_count", "n_head"),
            ("attention.head_count_kv", "n_head_kv"),
            ("expert_count", "n_expert"),
        ] {
            let key = format!("{arch}.{key}");
            // the last write of a key is the one the GGUF keeps
            if let Some((_, v)) = metadata.iter().rev().find(|(k, _)| *k == key) {
                let Value::U32(n) = v else {
                    panic!("{key} is {v:?}")
                };
                h.insert(name.to_string(), u64::from(*n));
            }
        }
        let embd = m.names.iter().position(|n| n == "token_embd.weight");
        h.insert("n_vocab".into(), m.dims[embd.unwrap()][1]);
        h
    }

    /// One snapshot table and the model it is checked on.
    struct SnapshotCase {
        file: &'static str,
        text: &'static str,
        facts: ModelFacts,
        model: Model,
        /// The header numbers as gmat's converter would write them, where the model is built
        /// from config.json rather than from the header.
        converter_header: Option<HashMap<String, u64>>,
    }

    /// llama.cpp's own expected types (tests/snapshots of the reference build) for the models
    /// of the architectures gmat supports: every tensor under every file type section.
    #[test]
    fn matches_llama_cpp_quant_type_snapshots() {
        // llama and qwen3 models, from the header numbers. head_dim is not in the header; all
        // three use 128 (their config.json).
        let dense: &[(&str, &str, &str, u64, bool)] = &[
            (
                "qwen3-0.6b",
                include_str!("../../testdata/quant-snapshots/qwen3-0.6b.schema"),
                "qwen3",
                128,
                true,
            ),
            (
                "qwen3-14b",
                include_str!("../../testdata/quant-snapshots/qwen3-14b.schema"),
                "qwen3",
                128,
                true,
            ),
            (
                "meta-llama-3.1-70b-instruct",
                include_str!("../../testdata/quant-snapshots/meta-llama-3.1-70b-instruct.schema"),
                "llama",
                128,
                false,
            ),
        ];
        let mut cases: Vec<SnapshotCase> = Vec::new();
        for &(file, text, arch, head_dim, qk_norm) in dense {
            let (h, _) = parse_snapshot(text);
            let shape = Shape {
                n_embd: h["n_embd"],
                n_ff: h["n_ff"],
                n_vocab: h["n_vocab"],
                n_layer: h["n_layer"],
                n_head: h["n_head"],
                n_head_kv: h["n_head_kv"],
                head_dim,
                qk_norm,
                has_output: true,
            };
            let facts = ModelFacts::new(
                arch,
                shape.n_layer as u32,
                shape.n_head as u32,
                shape.n_head_kv as u32,
                h.get("n_expert").copied().unwrap_or(0) as u32,
            );
            cases.push(SnapshotCase {
                file,
                text,
                facts,
                model: build_model(&shape),
                converter_header: None,
            });
        }
        // deepseek2 and gemma3, from config.json through gmat's converter metadata; the header
        // (what llama.cpp's converter wrote) must agree with it
        let config = deepseek_v3_1_config();
        let (facts, metadata) = converter_facts(config.clone());
        let model = build_deepseek2(&Hparams::new(&config).unwrap());
        cases.push(SnapshotCase {
            file: "deepseek-v3.1",
            text: include_str!("../../testdata/quant-snapshots/deepseek-v3.1.schema"),
            facts,
            converter_header: Some(header_of(&metadata, &model)),
            model,
        });
        let config = gemma_3_4b_it_config();
        let (facts, metadata) = converter_facts(config.clone());
        // tokenizer.model's 262144 pieces: the converter trims the 262208-row embedding to them
        let model = build_gemma3(&Hparams::new(&config).unwrap(), 262_144);
        cases.push(SnapshotCase {
            file: "gemma-3-4b-it",
            text: include_str!("../../testdata/quant-snapshots/gemma-3-4b-it.schema"),
            facts,
            converter_header: Some(header_of(&metadata, &model)),
            model,
        });
        // gpt-oss, from its config.json; the header's n_ff is the expert width, and its n_vocab
        // is 0 (the GGUF llama.cpp read holds no vocabulary count it uses)
        let gpt_oss = GptOssShape {
            n_embd: 2880,
            n_layer: 36,
            n_head: 64,
            n_head_kv: 8,
            head_dim: 64,
            n_expert: 128,
            n_ff_exp: 2880,
            n_vocab: 201_088,
        };
        let text = include_str!("../../testdata/quant-snapshots/gpt-oss-120b.schema");
        let (h, _) = parse_snapshot(text);
        assert_eq!(
            [h["n_embd"], h["n_ff"], h["n_layer"], h["n_expert"]],
            [
                gpt_oss.n_embd,
                gpt_oss.n_ff_exp,
                gpt_oss.n_layer,
                gpt_oss.n_expert
            ]
        );
        cases.push(SnapshotCase {
            file: "gpt-oss-120b",
            text,
            facts: ModelFacts::new(
                "gpt-oss",
                gpt_oss.n_layer as u32,
                gpt_oss.n_head as u32,
                gpt_oss.n_head_kv as u32,
                gpt_oss.n_expert as u32,
            ),
            model: build_gpt_oss(&gpt_oss),
            converter_header: None,
        });

        let mut failures = Vec::new();
        let (mut n_checked, mut n_sections) = (0usize, 0usize);
        for c in &cases {
            let (file, facts) = (c.file, &c.facts);
            let (h, sections) = parse_snapshot(c.text);
            assert!(sections.len() >= 30, "{file}: {} sections", sections.len());
            if let Some(ch) = &c.converter_header {
                assert_eq!(
                    ch, &h,
                    "{file}: gmat's converter metadata vs the snapshot header"
                );
            }
            assert_eq!(facts.arch, c.model.arch, "{file}");
            assert_eq!(u64::from(facts.n_layer), h["n_layer"], "{file}");
            assert_eq!(u64::from(facts.n_head), h["n_head"], "{file}");
            assert_eq!(u64::from(facts.n_head_kv), h["n_head_kv"], "{file}");
            assert_eq!(
                u64::from(facts.n_expert),
                h.get("n_expert").copied().unwrap_or(0),
                "{file}"
            );
            assert_eq!(facts.is_70b, file.contains("70b"), "{file}");
            let descs = c.model.descs();
            let arch = facts.arch.as_str();
            for s in &sections {
                n_sections += 1;
                let f: FileType =
                    s.ft.parse()
                        .unwrap_or_else(|e| panic!("{file}: section [{}]: {e}", s.ft));
                let default_type: GgmlType = s.default_type.parse().unwrap();
                assert_eq!(f.default_type, default_type, "{file} [{}]", s.ft);
                let types = match select_types(facts, &descs, f, &MixOptions::default()) {
                    Ok(t) => t,
                    Err(e) => {
                        failures.push(format!("{file} [{}]: {e:#}", s.ft));
                        continue;
                    }
                };
                let expected: HashMap<&str, GgmlType> = s
                    .overrides
                    .iter()
                    .map(|(n, t)| (n.as_str(), t.parse().unwrap()))
                    .collect();
                let mut n_found = 0;
                for (t, got) in descs.iter().zip(&types) {
                    let want = if allows_quantization(arch, t.name, t.dims, true) {
                        n_checked += 1;
                        match expected.get(t.name) {
                            Some(e) => {
                                n_found += 1;
                                *e
                            }
                            None => default_type,
                        }
                    } else {
                        t.ty
                    };
                    if *got != want {
                        failures.push(format!(
                            "{file} [{}] {}: expected {want}, got {got}",
                            s.ft, t.name
                        ));
                    }
                }
                if n_found != expected.len() {
                    failures.push(format!(
                        "{file} [{}]: snapshot lists {} tensors, {n_found} exist",
                        s.ft,
                        expected.len()
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
        eprintln!(
            "quant snapshots: {n_checked} tensor types checked in {n_sections} file type sections"
        );
        // quantizable tensors per model, in each of the 33 sections: the llama/qwen3 models
        // 7 per layer (q, k, v, output, gate, up, down) + token_embd and output; deepseek-v3.1
        // 9 per dense layer (q_a, q_b, kv_a_mqa, k_b, v_b, output, gate, up, down) and 12 per
        // MoE layer (the six attention ones, gate/up/down _exps and _shexp) + token_embd and
        // output; gemma-3-4b-it 7 per layer + token_embd (tied); gpt-oss-120b 7 per layer (q, k,
        // v, output, gate/up/down _exps) + token_embd and output
        let per_section =
            (28 + 40 + 80) * 7 + 3 * 2 + (3 * 9 + (61 - 3) * 12 + 2) + (34 * 7 + 1) + (36 * 7 + 2);
        assert_eq!(n_checked, 33 * per_section);
    }

    fn tiny(n_layer: u64, has_output: bool) -> Model {
        build_model(&Shape {
            n_embd: 256,
            n_ff: 768,
            n_vocab: 1000,
            n_layer,
            n_head: 8,
            n_head_kv: 2,
            head_dim: 32,
            qk_norm: false,
            has_output,
        })
    }

    fn type_of(m: &Model, types: &[GgmlType], name: &str) -> GgmlType {
        types[m.names.iter().position(|n| n == name).unwrap()]
    }

    #[test]
    fn counters_follow_layer_order_not_list_order() {
        let m = tiny(16, true);
        let facts = ModelFacts::new("llama", 16, 8, 2, 0);
        let forward =
            select_types(&facts, &m.descs(), ft("Q4_K_M"), &MixOptions::default()).unwrap();
        let mut rev = m.descs();
        rev.reverse();
        let mut backward =
            select_types(&facts, &rev, ft("Q4_K_M"), &MixOptions::default()).unwrap();
        backward.reverse();
        assert_eq!(forward, backward);
        // use_more_bits(i, 16): 0, 1, 4, 7, 10, 13, 14, 15
        let q6: Vec<u64> = (0..16)
            .filter(|b| type_of(&m, &forward, &format!("blk.{b}.ffn_down.weight")) == G::Q6_K)
            .collect();
        assert_eq!(q6, [0, 1, 4, 7, 10, 13, 14, 15]);
        let order = quantize_order(m.names.iter().map(String::as_str));
        let sorted: Vec<&str> = order.iter().map(|&i| m.names[i].as_str()).collect();
        assert_eq!(sorted[0], "output.weight");
        assert_eq!(sorted[3], "blk.0.attn_k.weight");
        assert!(
            sorted.iter().position(|n| n.starts_with("blk.9."))
                < sorted.iter().position(|n| n.starts_with("blk.10."))
        );
    }

    #[test]
    fn manual_rules_win_and_skip_the_counters() {
        let m = tiny(4, true);
        let facts = ModelFacts::new("llama", 4, 8, 2, 0);
        let opts = mix(TypeOptions {
            tensor_types: vec![
                "BLK\\.0\\.attn_v=Q8_0".parse().unwrap(),
                "attn_v=q4_0".parse().unwrap(),
            ],
            ..TypeOptions::default()
        });
        let types = select_types(&facts, &m.descs(), ft("Q3_K_M"), &opts).unwrap();
        assert_eq!(type_of(&m, &types, "blk.0.attn_v.weight"), G::Q8_0);
        assert_eq!(type_of(&m, &types, "blk.1.attn_v.weight"), G::Q4_0);
        let opts = mix(TypeOptions {
            tensor_types: vec!["blk\\.0\\.attn_v=q8_0".parse().unwrap()],
            ..TypeOptions::default()
        });
        let types = select_types(&facts, &m.descs(), ft("Q3_K_M"), &opts).unwrap();
        // blk.0 did not advance i_attention_wv: blk.1 and blk.2 are the first two
        let v: Vec<GgmlType> = (0..4)
            .map(|b| type_of(&m, &types, &format!("blk.{b}.attn_v.weight")))
            .collect();
        assert_eq!(v, [G::Q8_0, G::Q5_K, G::Q5_K, G::Q4_K]);
        // a manual type still falls back when rows do not fit its blocks
        let m = build_model(&Shape {
            n_embd: 96,
            n_ff: 192,
            n_vocab: 100,
            n_layer: 1,
            n_head: 2,
            n_head_kv: 2,
            head_dim: 48,
            qk_norm: false,
            has_output: true,
        });
        let opts = mix(TypeOptions {
            tensor_types: vec!["ffn_up=q6_k".parse().unwrap()],
            ..TypeOptions::default()
        });
        let facts = ModelFacts::new("llama", 1, 2, 2, 0);
        let types = select_types(&facts, &m.descs(), ft("Q8_0"), &opts).unwrap();
        assert_eq!(type_of(&m, &types, "blk.0.ffn_up.weight"), G::Q8_0);
    }

    #[test]
    fn output_and_token_embedding_options() {
        let facts = ModelFacts::new("llama", 2, 8, 2, 0);
        // tied: token_embd is treated as the output tensor
        let m = tiny(2, false);
        let opts = mix(TypeOptions {
            output_tensor_type: Some(G::Q8_0),
            ..TypeOptions::default()
        });
        let types = select_types(&facts, &m.descs(), ft("Q4_K_M"), &opts).unwrap();
        assert_eq!(type_of(&m, &types, "token_embd.weight"), G::Q8_0);
        let types = select_types(&facts, &m.descs(), ft("Q4_0"), &MixOptions::default()).unwrap();
        assert_eq!(type_of(&m, &types, "token_embd.weight"), G::Q6_K);
        // untied
        let m = tiny(2, true);
        let opts = mix(TypeOptions {
            output_tensor_type: Some(G::Q5_0),
            token_embedding_type: Some(G::Q2_K),
            tensor_types: vec![
                "output=f32".parse().unwrap(),
                "token_embd=f32".parse().unwrap(),
            ],
            ..TypeOptions::default()
        });
        let types = select_types(&facts, &m.descs(), ft("Q4_K_M"), &opts).unwrap();
        assert_eq!(type_of(&m, &types, "output.weight"), G::Q5_0);
        assert_eq!(type_of(&m, &types, "token_embd.weight"), G::Q2_K);
        // --leave-output-tensor keeps the unquantized type, and the model is still untied
        let opts = mix(TypeOptions {
            leave_output_tensor: true,
            ..TypeOptions::default()
        });
        let types = select_types(&facts, &m.descs(), ft("Q4_0"), &opts).unwrap();
        assert_eq!(type_of(&m, &types, "output.weight"), G::BF16);
        assert_eq!(type_of(&m, &types, "token_embd.weight"), G::Q4_0);
        // --pure: one type (except the options)
        let opts = mix(TypeOptions {
            pure: true,
            ..TypeOptions::default()
        });
        let types = select_types(&facts, &m.descs(), ft("Q4_K_M"), &opts).unwrap();
        assert_eq!(type_of(&m, &types, "output.weight"), G::Q4_K);
        assert_eq!(type_of(&m, &types, "blk.0.attn_norm.weight"), G::F32);
    }

    #[test]
    fn one_and_two_bit_file_types() {
        let facts = ModelFacts::new("llama", 2, 8, 2, 0);
        let m = tiny(2, true);
        let descs = m.descs();
        // Q2_0 gives untied token embeddings Q4_K, as TQ1_0 and TQ2_0 do
        let types = select_types(&facts, &descs, ft("Q2_0"), &MixOptions::default()).unwrap();
        assert_eq!(type_of(&m, &types, "token_embd.weight"), G::Q4_K);
        assert_eq!(type_of(&m, &types, "output.weight"), G::Q6_K);
        assert_eq!(type_of(&m, &types, "blk.1.ffn_down.weight"), G::Q2_0);
        let types = select_types(&facts, &descs, ft("Q1_0"), &MixOptions::default()).unwrap();
        assert_eq!(type_of(&m, &types, "token_embd.weight"), G::Q1_0);
        assert_eq!(type_of(&m, &types, "output.weight"), G::Q6_K);
        assert_eq!(type_of(&m, &types, "blk.0.attn_v.weight"), G::Q1_0);
        // rows of 160: Q2_0 falls back to Q4_0, Q1_0 has no fallback (llama-quantize throws)
        let m = build_model(&Shape {
            n_embd: 160,
            n_ff: 512,
            n_vocab: 1000,
            n_layer: 2,
            n_head: 5,
            n_head_kv: 1,
            head_dim: 32,
            qk_norm: false,
            has_output: true,
        });
        let pure = mix(TypeOptions {
            pure: true,
            ..TypeOptions::default()
        });
        let types = select_types(&facts, &m.descs(), ft("Q2_0"), &pure).unwrap();
        assert_eq!(type_of(&m, &types, "blk.0.attn_q.weight"), G::Q4_0);
        assert_eq!(type_of(&m, &types, "blk.0.ffn_down.weight"), G::Q2_0);
        let e = select_types(&facts, &m.descs(), ft("Q1_0"), &pure).unwrap_err();
        assert!(
            format!("{e:#}").contains("no tensor type fallback is defined for type Q1_0"),
            "{e:#}"
        );
    }

    #[test]
    fn imatrix_refusals() {
        let m = tiny(2, true);
        let facts = ModelFacts::new("llama", 2, 8, 2, 0);
        let descs = m.descs();
        for (name, refused) in [
            ("Q2_K_S", true),
            ("IQ3_XXS", true),
            ("IQ2_M", true),
            ("Q2_K", false),
            ("IQ3_M", false),
            ("IQ3_S", false),
        ] {
            let f = ft(name);
            let types = select_types(&facts, &descs, f, &MixOptions::default()).unwrap();
            let r = check_imatrix(&facts, &descs, &types, f, &MixOptions::default());
            assert_eq!(r.is_err(), refused, "{name}");
        }
    }

    #[test]
    fn model_facts_and_rule_parsing() {
        assert!(ModelFacts::new("llama", 80, 64, 8, 0).is_70b);
        assert!(!ModelFacts::new("llama", 80, 64, 64, 0).is_70b);
        assert!(ModelFacts::new("qwen2", 80, 64, 64, 0).is_70b);
        assert!(!ModelFacts::new("qwen3", 80, 64, 8, 0).is_70b);
        let md = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("llama.block_count".to_string(), Value::U32(80)),
            ("llama.attention.head_count".to_string(), Value::U32(64)),
        ];
        let f = ModelFacts::from_gguf_metadata(&md).unwrap();
        assert_eq!((f.n_head_kv, f.n_expert, f.is_70b), (64, 0, false));
        assert!("attn_q".parse::<TensorTypeRule>().is_err());
        assert!("=q8_0".parse::<TensorTypeRule>().is_err());
        assert!("attn_q=".parse::<TensorTypeRule>().is_err());
        assert!("attn_q=q9".parse::<TensorTypeRule>().is_err());
        assert!("attn_(q=q8_0".parse::<TensorTypeRule>().is_err());
        let r: TensorTypeRule = "ATTN_Q=q8_0".parse().unwrap();
        assert!(r.matches("blk.3.attn_q.weight") && r.ty == G::Q8_0);
        assert_eq!(ggml_n_dims(&[64, 1]), 1);
        assert!(allows_quantization(
            "llama",
            "blk.0.attn_q.weight",
            &[64, 64],
            true
        ));
        assert!(!allows_quantization(
            "llama",
            "blk.0.attn_q.weight",
            &[64, 1],
            true
        ));
        assert!(!allows_quantization(
            "llama",
            "blk.0.attn_norm.weight",
            &[64, 64],
            true
        ));
        assert!(!allows_quantization(
            "llama",
            "blk.0.ffn_gate_inp.weight",
            &[64, 8],
            true
        ));
        assert!(!allows_quantization(
            "llama",
            "output.weight",
            &[64, 64],
            false
        ));
        assert!(!allows_quantization(
            "llama",
            "rope_freqs.weight",
            &[64],
            true
        ));
        assert!(!allows_quantization(
            "llama",
            "blk.0.attn_q.bias",
            &[64, 64],
            true
        ));
        assert_eq!(block_number("blk.12.ffn_down.weight"), Some(12));
        assert_eq!(block_number("output.weight"), None);
    }

    #[test]
    fn types_that_require_an_imatrix() {
        let q4: FileType = "Q4_K_M".parse().unwrap();
        let q2ks: FileType = "Q2_K_S".parse().unwrap();
        for t in [
            GgmlType::IQ1_S,
            GgmlType::IQ1_M,
            GgmlType::IQ2_XXS,
            GgmlType::IQ2_XS,
            GgmlType::IQ2_S,
            GgmlType::IQ3_XXS,
        ] {
            assert!(requires_imatrix("blk.0.attn_q.weight", t, q4), "{t}");
            for exempt in [
                "token_embd.weight",
                "per_layer_token_embd.weight",
                "output.weight",
            ] {
                assert!(!requires_imatrix(exempt, t, q4), "{t} {exempt}");
            }
        }
        assert!(requires_imatrix(
            "blk.0.ffn_up.weight",
            GgmlType::Q2_K,
            q2ks
        ));
        assert!(!requires_imatrix("blk.0.ffn_up.weight", GgmlType::Q2_K, q4));
        for t in [
            GgmlType::IQ3_S,
            GgmlType::IQ4_XS,
            GgmlType::Q3_K,
            GgmlType::Q4_0,
        ] {
            assert!(!requires_imatrix("blk.0.ffn_up.weight", t, q4), "{t}");
        }
    }
}
