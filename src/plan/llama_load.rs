//! llama.cpp's model loader (`llama_model_base::load_hparams`, each architecture's
//! `load_arch_hparams` / `load_arch_tensors`, `llama_model_loader::check_tensor_dims` and
//! `done_getting_tensors`, and the `GGML_ASSERT`s of the graphs `llama-simple` builds), run on a
//! planned text-model file: the metadata it requires and the tensor shapes it derives from that
//! metadata.
//!
//! The converter writes whatever config.json and its configuration class's defaults say, even
//! when that contradicts the tensors (remove `hidden_size` from a config.json and transformers'
//! default 4096 arrives); llama.cpp then refuses the file. gmat refuses it instead of writing it,
//! naming the metadata (and through it the config.json keys) and the tensor that disagree.
//! Only the architectures gmat writes are modelled, and only the checks their files can fail.

use std::collections::{HashMap, HashSet};

use crate::gguf::Value;

/// Why llama.cpp refuses a file: its message, and the metadata keys the failed check read.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub message: String,
    pub keys: Vec<String>,
}

type Res<T> = Result<T, Refusal>;

fn refuse<T>(message: impl Into<String>, keys: &[String]) -> Res<T> {
    Err(Refusal {
        message: message.into(),
        keys: keys.to_vec(),
    })
}

/// A number llama.cpp derives from metadata, with the keys it came from.
#[derive(Clone, Debug)]
struct P {
    v: i64,
    keys: Vec<String>,
}

impl P {
    fn c(v: i64) -> P {
        P { v, keys: vec![] }
    }
    fn with(&self, other: &P, v: i64) -> P {
        let mut keys = self.keys.clone();
        for k in &other.keys {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        P { v, keys }
    }
    fn mul(&self, o: &P) -> P {
        self.with(o, self.v.wrapping_mul(o.v))
    }
    fn add(&self, o: &P) -> P {
        self.with(o, self.v.wrapping_add(o.v))
    }
    fn sub(&self, o: &P) -> P {
        self.with(o, self.v.wrapping_sub(o.v))
    }
    /// C++ integer division (0 when dividing by 0 would crash: the caller checks first).
    fn div(&self, o: &P) -> P {
        self.with(o, if o.v == 0 { 0 } else { self.v / o.v })
    }
}

/// The planned file as the loader reads it.
struct Loader<'a> {
    arch: &'a str,
    kv: HashMap<&'a str, &'a Value>,
    tensors: HashMap<&'a str, &'a [u64]>,
    created: HashSet<String>,
    /// Keys that decide which tensors a layer has (deepseek2's leading dense blocks).
    context: Vec<String>,
}

impl<'a> Loader<'a> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    /// `ml.get_key(kid, x, required)` for an integer.
    fn u32(&self, suffix: &str, required: bool) -> Res<Option<P>> {
        let k = self.key(suffix);
        match self.kv.get(k.as_str()) {
            Some(Value::U32(n)) => Ok(Some(P {
                v: i64::from(*n),
                keys: vec![k],
            })),
            Some(Value::I32(n)) => Ok(Some(P {
                v: i64::from(*n),
                keys: vec![k],
            })),
            Some(Value::Array(_, a)) if !a.is_empty() => {
                // get_key_or_arr: the first layer's value (gmat writes no per-layer arrays)
                let v = match &a[0] {
                    Value::U32(n) => i64::from(*n),
                    Value::I32(n) => i64::from(*n),
                    _ => return refuse(format!("key {k} has wrong type"), &[k]),
                };
                Ok(Some(P { v, keys: vec![k] }))
            }
            Some(_) => refuse(format!("key {k} has wrong type"), &[k]),
            None if required => refuse(format!("key not found in model: {k}"), &[k]),
            None => Ok(None),
        }
    }

    /// An optional key, else `default` (which then also names the absent key).
    fn u32_or(&self, suffix: &str, default: P) -> Res<P> {
        Ok(match self.u32(suffix, false)? {
            Some(p) => p,
            None => P {
                v: default.v,
                keys: dedup([vec![self.key(suffix)], default.keys].concat()),
            },
        })
    }

    /// A required float key.
    fn f32_req(&self, suffix: &str) -> Res<()> {
        let k = self.key(suffix);
        match self.kv.get(k.as_str()) {
            Some(Value::F32(_)) => Ok(()),
            Some(_) => refuse(format!("key {k} has wrong type"), &[k]),
            None => refuse(format!("key not found in model: {k}"), &[k]),
        }
    }

    /// `create_tensor(name, ne, flags)`: whether the tensor is there.
    fn create(&mut self, name: &str, ne: &[P], required: bool) -> Res<bool> {
        if !required && ne.iter().any(|d| d.v <= 0) {
            return Ok(false);
        }
        let Some(dims) = self.tensors.get(name) else {
            if required {
                // a layer the file does not have: the block count; else the sizes
                let keys: Vec<String> = if name.starts_with("blk.") {
                    [vec![self.key("block_count")], self.context.clone()].concat()
                } else {
                    ne.iter().flat_map(|d| d.keys.clone()).collect()
                };
                return refuse(
                    format!("check_tensor_dims: tensor '{name}' not found"),
                    &dedup(keys),
                );
            }
            return Ok(false);
        };
        let ok = (0..4).all(|i| {
            let have = dims.get(i).copied().unwrap_or(1) as i64;
            match ne.get(i) {
                Some(d) => d.v == have,
                None => have == 1,
            }
        });
        if !ok {
            let expected: Vec<String> = ne.iter().map(|d| d.v.to_string()).collect();
            let got: Vec<String> = dims.iter().map(u64::to_string).collect();
            // the keys of the dimensions that disagree
            let keys: Vec<String> = ne
                .iter()
                .enumerate()
                .filter(|(i, d)| dims.get(*i).map(|&h| h as i64) != Some(d.v))
                .flat_map(|(_, d)| d.keys.clone())
                .collect();
            return refuse(
                format!(
                    "check_tensor_dims: tensor '{name}' has wrong shape; expected {}, got {}",
                    expected.join(", "),
                    got.join(", ")
                ),
                &dedup(keys),
            );
        }
        self.created.insert(name.to_string());
        Ok(true)
    }

    fn req(&mut self, name: &str, ne: &[P]) -> Res<bool> {
        self.create(name, ne, true)
    }

    fn opt(&mut self, name: &str, ne: &[P]) -> Res<bool> {
        self.create(name, ne, false)
    }

    /// `create_tensor_qkv(layer, bid, n_embd, n_embd_q, n_embd_k, n_embd_v, flags)`.
    fn qkv(&mut self, i: i64, e: &P, q: &P, k: &P, v: &P, required: bool) -> Res<()> {
        let qkv = q.add(k).add(v);
        if self.opt(
            &format!("blk.{i}.attn_qkv.weight"),
            &[e.clone(), qkv.clone()],
        )? {
            if !self.opt(&format!("blk.{i}.attn_qkv.bias"), &[qkv])? {
                self.opt(&format!("blk.{i}.attn_q.bias"), std::slice::from_ref(q))?;
                self.opt(&format!("blk.{i}.attn_k.bias"), std::slice::from_ref(k))?;
                self.opt(&format!("blk.{i}.attn_v.bias"), std::slice::from_ref(v))?;
            }
        } else {
            self.create(
                &format!("blk.{i}.attn_q.weight"),
                &[e.clone(), q.clone()],
                required,
            )?;
            self.create(
                &format!("blk.{i}.attn_k.weight"),
                &[e.clone(), k.clone()],
                required,
            )?;
            self.create(
                &format!("blk.{i}.attn_v.weight"),
                &[e.clone(), v.clone()],
                required,
            )?;
            self.opt(&format!("blk.{i}.attn_q.bias"), std::slice::from_ref(q))?;
            self.opt(&format!("blk.{i}.attn_k.bias"), std::slice::from_ref(k))?;
            self.opt(&format!("blk.{i}.attn_v.bias"), std::slice::from_ref(v))?;
        }
        Ok(())
    }

    /// `done_getting_tensors`: every tensor of the file must have been used.
    fn done(&self) -> Res<()> {
        let n = self.tensors.len();
        let used = self.created.len();
        if used < n {
            let mut unused: Vec<&str> = self
                .tensors
                .keys()
                .copied()
                .filter(|t| !self.created.contains(*t))
                .collect();
            unused.sort_unstable();
            return refuse(
                format!(
                    "done_getting_tensors: wrong number of tensors; expected {n}, got {used} (unused: {})",
                    unused.join(", ")
                ),
                &[self.key("block_count")],
            );
        }
        Ok(())
    }
}

fn dedup(keys: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// The hyper-parameters `llama_model_base::load_hparams` reads for every architecture.
struct H {
    n_embd: P,
    n_layer: P,
    n_head: P,
    n_head_kv: P,
    n_ff: P,
    n_expert: P,
    n_expert_used: P,
    head_k: P,
    head_v: P,
    n_rot: P,
    n_ctx: P,
    n_vocab: P,
}

/// llama.cpp refuses to load the file: the message it gives and the metadata keys the failed
/// check read. `tensors` are the planned tensors' names and ggml dimensions.
pub fn check(metadata: &[(String, Value)], tensors: &[(String, Vec<u64>)]) -> Result<(), Refusal> {
    let kv: HashMap<&str, &Value> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let Some(Value::String(arch)) = kv.get("general.architecture") else {
        return Ok(());
    };
    if !matches!(
        arch.as_str(),
        "llama"
            | "qwen2"
            | "qwen3"
            | "qwen2moe"
            | "qwen3moe"
            | "gemma2"
            | "gemma3"
            | "phi3"
            | "deepseek2"
            | "bert"
            | "gpt-oss"
    ) {
        return Ok(());
    }
    let mut l = Loader {
        arch,
        kv,
        tensors: tensors
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect(),
        created: HashSet::new(),
        context: Vec::new(),
    };
    let h = load_hparams(&l)?;
    match arch.as_str() {
        "llama" => llama(&mut l, &h)?,
        "qwen2" | "qwen2moe" | "qwen3" | "qwen3moe" => qwen(&mut l, &h)?,
        "gemma2" | "gemma3" => gemma(&mut l, &h)?,
        "phi3" => phi3(&mut l, &h)?,
        "deepseek2" => deepseek2(&mut l, &h)?,
        "bert" => bert(&mut l, &h)?,
        "gpt-oss" => gpt_oss(&mut l, &h)?,
        _ => {}
    }
    l.done()
}

/// `llama_model_base::load_hparams` and the per-architecture required keys.
fn load_hparams(l: &Loader) -> Res<H> {
    let n_ctx = l.u32("context_length", true)?.unwrap_or(P::c(0));
    let n_embd = l.u32("embedding_length", true)?.unwrap_or(P::c(0));
    let n_layer_all = l.u32("block_count", true)?.unwrap_or(P::c(0));
    if n_layer_all.v <= 0 || n_layer_all.v > 512 {
        return refuse(
            "GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS) failed",
            &n_layer_all.keys,
        );
    }
    let nextn = l.u32_or("nextn_predict_layers", P::c(0))?;
    if nextn.v > n_layer_all.v {
        return refuse(
            "GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all) failed",
            &n_layer_all.with(&nextn, 0).keys,
        );
    }
    let n_layer = n_layer_all.sub(&nextn);
    let n_expert = l.u32_or("expert_count", P::c(0))?;
    let n_expert_used = l.u32_or("expert_used_count", P::c(0))?;
    let groups = l.u32_or("expert_group_count", P::c(0))?;
    let group_used = l.u32_or("expert_group_used_count", P::c(0))?;
    let assert = |ok: bool, what: &str, keys: &[&P]| -> Res<()> {
        if ok {
            return Ok(());
        }
        let keys: Vec<String> = keys.iter().flat_map(|p| p.keys.clone()).collect();
        refuse(format!("GGML_ASSERT({what}) failed"), &dedup(keys))
    };
    assert(
        n_expert.v <= 1024,
        "hparams.n_expert <= LLAMA_MAX_EXPERTS",
        &[&n_expert],
    )?;
    assert(
        n_expert_used.v <= n_expert.v,
        "n_expert_used_max <= hparams.n_expert",
        &[&n_expert_used, &n_expert],
    )?;
    if n_expert.v > 0 {
        assert(
            n_expert_used.v > 0,
            "n_expert_used_max > 0",
            &[&n_expert_used],
        )?;
        assert(
            groups.v < n_expert.v,
            "hparams.n_expert_groups < hparams.n_expert",
            &[&groups, &n_expert],
        )?;
        if groups.v > 1 {
            assert(
                n_expert.v % groups.v == 0,
                "hparams.n_expert % hparams.n_expert_groups == 0",
                &[&n_expert, &groups],
            )?;
            assert(group_used.v > 0, "hparams.n_group_used > 0", &[&group_used])?;
            assert(
                group_used.v < groups.v,
                "hparams.n_group_used < hparams.n_expert_groups",
                &[&group_used, &groups],
            )?;
        }
    } else {
        assert(
            n_expert_used.v == 0,
            "n_expert_used_max == 0",
            &[&n_expert_used],
        )?;
        assert(groups.v == 0, "hparams.n_expert_groups == 0", &[&groups])?;
    }
    let n_ff = l.u32_or("feed_forward_length", P::c(0))?;
    let n_head = l.u32_or("attention.head_count", P::c(0))?;
    let n_head_kv = l.u32_or("attention.head_count_kv", n_head.clone())?;
    let (head_k, head_v, n_rot) = if n_head.v > 0 {
        let d = n_embd.div(&n_head);
        let head_k = l.u32_or("attention.key_length", d.clone())?;
        let head_v = l.u32_or("attention.value_length", d)?;
        let n_rot = l.u32_or("rope.dimension_count", head_k.clone())?;
        if l.arch == "llama" && n_rot.v != head_k.v {
            return refuse(
                format!("invalid n_rot: {}, expected {}", n_rot.v, head_k.v),
                &n_rot.with(&head_k, 0).keys,
            );
        }
        (head_k, head_v, n_rot)
    } else {
        (P::c(0), P::c(0), P::c(0))
    };
    // per-architecture keys llama.cpp requires
    match l.arch {
        "bert" => l.f32_req("attention.layer_norm_epsilon")?,
        _ => l.f32_req("attention.layer_norm_rms_epsilon")?,
    }
    let n_vocab = match l.kv.get("tokenizer.ggml.tokens") {
        Some(Value::Array(_, a)) => P {
            v: a.len() as i64,
            keys: vec!["tokenizer.ggml.tokens".into()],
        },
        _ => P::c(0),
    };
    Ok(H {
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        n_ff,
        n_expert,
        n_expert_used,
        head_k,
        head_v,
        n_rot,
        n_ctx,
        n_vocab,
    })
}

/// The graph's `GGML_ASSERT(n_embd_head == hparams.n_embd_head_k())` and
/// `GGML_ASSERT(n_embd_head == n_rot)` (llama, qwen2/3 and their MoE variants).
fn graph_heads(h: &H, rot: bool) -> Res<()> {
    if h.head_v.v != h.head_k.v {
        return refuse(
            "GGML_ASSERT(n_embd_head == hparams.n_embd_head_k()) failed",
            &h.head_v.with(&h.head_k, 0).keys,
        );
    }
    if rot && h.head_v.v != h.n_rot.v {
        return refuse(
            "GGML_ASSERT(n_embd_head == n_rot) failed",
            &h.head_v.with(&h.n_rot, 0).keys,
        );
    }
    Ok(())
}

fn output(l: &mut Loader, h: &H, output_required: bool) -> Res<()> {
    let e = &h.n_embd;
    let v = &h.n_vocab;
    l.req("token_embd.weight", &[e.clone(), v.clone()])?;
    l.req("output_norm.weight", std::slice::from_ref(e))?;
    if output_required {
        l.req("output.weight", &[e.clone(), v.clone()])?;
    } else {
        l.opt("output.weight", &[e.clone(), v.clone()])?;
    }
    Ok(())
}

fn llama(l: &mut Loader, h: &H) -> Res<()> {
    output(l, h, false)?;
    let (e, ff) = (&h.n_embd, &h.n_ff);
    let q = h.head_k.mul(&h.n_head);
    let kg = h.head_k.mul(&h.n_head_kv);
    let vg = h.head_v.mul(&h.n_head_kv);
    let longrope = matches!(
        l.kv.get(l.key("rope.scaling.type").as_str()),
        Some(Value::String(s)) if s == "longrope"
    );
    let half_rot = h.n_rot.div(&P::c(2));
    for i in 0..h.n_layer.v {
        l.req(
            &format!("blk.{i}.attn_norm.weight"),
            std::slice::from_ref(e),
        )?;
        l.qkv(i, e, &q, &kg, &vg, true)?;
        l.req(
            &format!("blk.{i}.attn_output.weight"),
            &[q.clone(), e.clone()],
        )?;
        l.opt(
            &format!("blk.{i}.attn_output.bias"),
            std::slice::from_ref(e),
        )?;
        l.req(&format!("blk.{i}.ffn_norm.weight"), std::slice::from_ref(e))?;
        let rope = if longrope {
            ["rope_factors_long.weight", "rope_factors_short.weight"].as_slice()
        } else {
            ["rope_freqs.weight"].as_slice()
        };
        for r in rope {
            l.opt(r, std::slice::from_ref(&half_rot))?;
        }
        if h.n_expert.v == 0 {
            l.req(
                &format!("blk.{i}.ffn_gate.weight"),
                &[e.clone(), ff.clone()],
            )?;
            l.req(
                &format!("blk.{i}.ffn_down.weight"),
                &[ff.clone(), e.clone()],
            )?;
            l.req(&format!("blk.{i}.ffn_up.weight"), &[e.clone(), ff.clone()])?;
            l.opt(&format!("blk.{i}.ffn_gate.bias"), std::slice::from_ref(ff))?;
            l.opt(&format!("blk.{i}.ffn_down.bias"), std::slice::from_ref(e))?;
            l.opt(&format!("blk.{i}.ffn_up.bias"), std::slice::from_ref(ff))?;
        } else {
            let x = &h.n_expert;
            l.req(
                &format!("blk.{i}.ffn_gate_inp.weight"),
                &[e.clone(), x.clone()],
            )?;
            l.opt(
                &format!("blk.{i}.ffn_gate_exps.weight"),
                &[e.clone(), ff.clone(), x.clone()],
            )?;
            l.req(
                &format!("blk.{i}.ffn_down_exps.weight"),
                &[ff.clone(), e.clone(), x.clone()],
            )?;
            l.req(
                &format!("blk.{i}.ffn_up_exps.weight"),
                &[e.clone(), ff.clone(), x.clone()],
            )?;
        }
    }
    graph_heads(h, true)
}

/// `expert_feed_forward_length`, else `n_ff / n_expert_used`.
fn n_ff_exp(l: &Loader, h: &H) -> Res<P> {
    match l.u32("expert_feed_forward_length", false)? {
        Some(p) if p.v != 0 => Ok(p),
        _ => Ok(h.n_ff.div(&h.n_expert_used)),
    }
}

fn qwen(l: &mut Loader, h: &H) -> Res<()> {
    let arch = l.arch.to_string();
    let qwen3 = arch.starts_with("qwen3");
    let moe = arch.ends_with("moe");
    // qwen2moe's output is required, the others fall back to token_embd
    output(l, h, arch == "qwen2moe")?;
    if arch == "qwen2" {
        l.opt("output.bias", std::slice::from_ref(&h.n_vocab))?;
    }
    let e = &h.n_embd;
    let (q, kg) = if qwen3 {
        (h.head_k.mul(&h.n_head), h.head_v.mul(&h.n_head_kv))
    } else {
        (e.clone(), h.head_v.mul(&h.n_head_kv))
    };
    let ff = &h.n_ff;
    for i in 0..h.n_layer.v {
        l.req(
            &format!("blk.{i}.attn_norm.weight"),
            std::slice::from_ref(e),
        )?;
        l.qkv(i, e, &q, &kg, &kg, true)?;
        l.req(
            &format!("blk.{i}.attn_output.weight"),
            &[q.clone(), e.clone()],
        )?;
        if qwen3 {
            l.req(
                &format!("blk.{i}.attn_k_norm.weight"),
                std::slice::from_ref(&h.head_k),
            )?;
            l.req(
                &format!("blk.{i}.attn_q_norm.weight"),
                std::slice::from_ref(&h.head_k),
            )?;
        }
        l.req(&format!("blk.{i}.ffn_norm.weight"), std::slice::from_ref(e))?;
        if !moe {
            l.req(
                &format!("blk.{i}.ffn_gate.weight"),
                &[e.clone(), ff.clone()],
            )?;
            l.req(
                &format!("blk.{i}.ffn_down.weight"),
                &[ff.clone(), e.clone()],
            )?;
            l.req(&format!("blk.{i}.ffn_up.weight"), &[e.clone(), ff.clone()])?;
            continue;
        }
        let x = &h.n_expert;
        l.req(
            &format!("blk.{i}.ffn_gate_inp.weight"),
            &[e.clone(), x.clone()],
        )?;
        let name = arch.to_uppercase();
        if x.v == 0 {
            return refuse(format!("n_expert must be > 0 for {name}"), &x.keys);
        }
        if h.n_expert_used.v == 0 {
            return refuse(
                format!("n_expert_used must be > 0 for {name}"),
                &h.n_expert_used.keys,
            );
        }
        let fe = n_ff_exp(l, h)?;
        l.req(
            &format!("blk.{i}.ffn_gate_exps.weight"),
            &[e.clone(), fe.clone(), x.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_down_exps.weight"),
            &[fe.clone(), e.clone(), x.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_up_exps.weight"),
            &[e.clone(), fe.clone(), x.clone()],
        )?;
        if arch == "qwen2moe" {
            let sh = match l.u32("expert_shared_feed_forward_length", false)? {
                Some(p) if p.v != 0 => p,
                _ => ff.clone(),
            };
            l.req(
                &format!("blk.{i}.ffn_gate_inp_shexp.weight"),
                std::slice::from_ref(e),
            )?;
            l.req(
                &format!("blk.{i}.ffn_gate_shexp.weight"),
                &[e.clone(), sh.clone()],
            )?;
            l.req(
                &format!("blk.{i}.ffn_down_shexp.weight"),
                &[sh.clone(), e.clone()],
            )?;
            l.req(
                &format!("blk.{i}.ffn_up_shexp.weight"),
                &[e.clone(), sh.clone()],
            )?;
        }
    }
    graph_heads(h, true)
}

fn gemma(l: &mut Loader, h: &H) -> Res<()> {
    let gemma3 = l.arch == "gemma3";
    // gemma2's output is always token_embd (duplicated); gemma3's may be a tensor of its own
    output(l, h, false)?;
    if !gemma3 {
        l.created.remove("output.weight");
    }
    let e = &h.n_embd;
    let q = h.head_k.mul(&h.n_head);
    let kg = h.head_k.mul(&h.n_head_kv);
    let vg = h.head_v.mul(&h.n_head_kv);
    let ff = &h.n_ff;
    for i in 0..h.n_layer.v {
        l.req(
            &format!("blk.{i}.attn_norm.weight"),
            std::slice::from_ref(e),
        )?;
        l.qkv(i, e, &q, &kg, &vg, true)?;
        l.req(
            &format!("blk.{i}.attn_output.weight"),
            &[q.clone(), e.clone()],
        )?;
        l.req(
            &format!("blk.{i}.post_attention_norm.weight"),
            std::slice::from_ref(e),
        )?;
        if gemma3 {
            l.req(
                &format!("blk.{i}.attn_k_norm.weight"),
                std::slice::from_ref(&h.head_k),
            )?;
            l.req(
                &format!("blk.{i}.attn_q_norm.weight"),
                std::slice::from_ref(&h.head_k),
            )?;
        }
        l.req(&format!("blk.{i}.ffn_norm.weight"), std::slice::from_ref(e))?;
        l.req(
            &format!("blk.{i}.ffn_gate.weight"),
            &[e.clone(), ff.clone()],
        )?;
        l.req(&format!("blk.{i}.ffn_up.weight"), &[e.clone(), ff.clone()])?;
        l.req(
            &format!("blk.{i}.ffn_down.weight"),
            &[ff.clone(), e.clone()],
        )?;
        l.req(
            &format!("blk.{i}.post_ffw_norm.weight"),
            std::slice::from_ref(e),
        )?;
    }
    Ok(())
}

fn phi3(l: &mut Loader, h: &H) -> Res<()> {
    output(l, h, false)?;
    let e = &h.n_embd;
    let g = h.head_v.mul(&h.n_head_kv);
    let ff = &h.n_ff;
    let half_rot = h.n_rot.div(&P::c(2));
    for i in 0..h.n_layer.v {
        l.req(
            &format!("blk.{i}.attn_norm.weight"),
            std::slice::from_ref(e),
        )?;
        l.qkv(i, e, e, &g, &g, false)?;
        l.req(
            &format!("blk.{i}.attn_output.weight"),
            &[e.clone(), e.clone()],
        )?;
        l.req(&format!("blk.{i}.ffn_norm.weight"), std::slice::from_ref(e))?;
        l.req(
            &format!("blk.{i}.ffn_down.weight"),
            &[ff.clone(), e.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_up.weight"),
            &[e.clone(), P::c(2).mul(ff)],
        )?;
        l.opt("rope_factors_long.weight", std::slice::from_ref(&half_rot))?;
        l.opt("rope_factors_short.weight", std::slice::from_ref(&half_rot))?;
    }
    graph_heads(h, false)
}

fn deepseek2(l: &mut Loader, h: &H) -> Res<()> {
    let n_vocab_kv = l.u32("vocab_size", false)?.unwrap_or(h.n_vocab.clone());
    let lite = matches!(h.n_layer.v, 26 | 27) || (h.n_layer.v == 48 && n_vocab_kv.v == 128_256);
    let dense_lead = l.u32_or("leading_dense_block_count", P::c(0))?;
    // a lite model's q_lora_rank is not read (0: attn_q, whatever the key says)
    let q_lora = if lite {
        P::c(0)
    } else {
        // required only because the layer count does not make it a lite model: name that too
        l.u32("attention.q_lora_rank", true)
            .map_err(|mut r| {
                r.keys.extend(h.n_layer.keys.iter().cloned());
                r
            })?
            .unwrap_or(P::c(0))
    };
    let kv_lora = l.u32("attention.kv_lora_rank", true)?.unwrap_or(P::c(0));
    let k_mla = l.u32_or("attention.key_length_mla", P::c(0))?;
    let v_mla = l.u32_or("attention.value_length_mla", P::c(0))?;
    let ff_exp = l
        .u32("expert_feed_forward_length", true)?
        .unwrap_or(P::c(0));
    let n_shared = l.u32("expert_shared_count", true)?.unwrap_or(P::c(0));
    let is_mla = k_mla.v != 0 && v_mla.v != 0;
    let (k_mla, v_mla) = if is_mla {
        (k_mla, v_mla)
    } else {
        (h.head_k.clone(), h.head_v.clone())
    };
    let rope = h.n_rot.clone();
    let nope = k_mla.sub(&rope);
    if nope.v < 1 {
        return refuse("GGML_ASSERT(n_embd_head_qk_nope >= 1) failed", &nope.keys);
    }
    output(l, h, false)?;
    l.context = dense_lead.keys.clone();
    let (e, x, ff) = (&h.n_embd, &h.n_expert, &h.n_ff);
    for i in 0..h.n_layer.v {
        l.req(
            &format!("blk.{i}.attn_norm.weight"),
            std::slice::from_ref(e),
        )?;
        if q_lora.v > 0 {
            l.req(
                &format!("blk.{i}.attn_q_a_norm.weight"),
                std::slice::from_ref(&q_lora),
            )?;
        }
        l.req(
            &format!("blk.{i}.attn_kv_a_norm.weight"),
            std::slice::from_ref(&kv_lora),
        )?;
        if q_lora.v > 0 {
            l.req(
                &format!("blk.{i}.attn_q_a.weight"),
                &[e.clone(), q_lora.clone()],
            )?;
            l.req(
                &format!("blk.{i}.attn_q_b.weight"),
                &[q_lora.clone(), h.n_head.mul(&k_mla)],
            )?;
        } else {
            l.req(
                &format!("blk.{i}.attn_q.weight"),
                &[e.clone(), h.n_head.mul(&k_mla)],
            )?;
        }
        l.req(
            &format!("blk.{i}.attn_kv_a_mqa.weight"),
            &[e.clone(), kv_lora.add(&rope)],
        )?;
        if is_mla {
            l.req(
                &format!("blk.{i}.attn_k_b.weight"),
                &[nope.clone(), kv_lora.clone(), h.n_head.clone()],
            )?;
            l.req(
                &format!("blk.{i}.attn_v_b.weight"),
                &[kv_lora.clone(), v_mla.clone(), h.n_head.clone()],
            )?;
        } else {
            l.req(
                &format!("blk.{i}.attn_kv_b.weight"),
                &[kv_lora.clone(), h.n_head.mul(&nope.add(&v_mla))],
            )?;
        }
        l.req(
            &format!("blk.{i}.attn_output.weight"),
            &[h.n_head.mul(&v_mla), e.clone()],
        )?;
        l.req(&format!("blk.{i}.ffn_norm.weight"), std::slice::from_ref(e))?;
        if i < dense_lead.v {
            l.req(
                &format!("blk.{i}.ffn_gate.weight"),
                &[e.clone(), ff.clone()],
            )?;
            l.req(
                &format!("blk.{i}.ffn_down.weight"),
                &[ff.clone(), e.clone()],
            )?;
            l.req(&format!("blk.{i}.ffn_up.weight"), &[e.clone(), ff.clone()])?;
            continue;
        }
        l.req(
            &format!("blk.{i}.ffn_gate_inp.weight"),
            &[e.clone(), x.clone()],
        )?;
        l.opt(
            &format!("blk.{i}.exp_probs_b.bias"),
            std::slice::from_ref(x),
        )?;
        if x.v == 0 {
            return refuse("n_expert must be > 0", &x.with(&dense_lead, 0).keys);
        }
        if h.n_expert_used.v == 0 {
            return refuse("n_expert_used must be > 0", &h.n_expert_used.keys);
        }
        l.req(
            &format!("blk.{i}.ffn_down_exps.weight"),
            &[ff_exp.clone(), e.clone(), x.clone()],
        )?;
        // create_tensor_gate_up_exps: fused, else gate and up
        let fused = l.opt(
            &format!("blk.{i}.ffn_gate_up_exps.weight"),
            &[e.clone(), ff_exp.mul(&P::c(2)), x.clone()],
        )?;
        if !fused {
            l.req(
                &format!("blk.{i}.ffn_gate_exps.weight"),
                &[e.clone(), ff_exp.clone(), x.clone()],
            )?;
            l.req(
                &format!("blk.{i}.ffn_up_exps.weight"),
                &[e.clone(), ff_exp.clone(), x.clone()],
            )?;
        }
        let sh = ff_exp.mul(&n_shared);
        l.req(
            &format!("blk.{i}.ffn_gate_shexp.weight"),
            &[e.clone(), sh.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_down_shexp.weight"),
            &[sh.clone(), e.clone()],
        )?;
        l.req(&format!("blk.{i}.ffn_up_shexp.weight"), &[e.clone(), sh])?;
    }
    Ok(())
}

/// `llama_model_openai_moe::load_arch_hparams` and `load_arch_tensors` (models/openai-moe.cpp).
fn gpt_oss(l: &mut Loader, h: &H) -> Res<()> {
    let fe = l
        .u32("expert_feed_forward_length", true)?
        .unwrap_or(P::c(0));
    l.u32("attention.sliding_window", true)?;
    output(l, h, true)?;
    let (e, x) = (&h.n_embd, &h.n_expert);
    let q = h.n_head.mul(&h.n_rot);
    let kv = h.n_head_kv.mul(&h.n_rot);
    for i in 0..h.n_layer.v {
        l.req(
            &format!("blk.{i}.attn_norm.weight"),
            std::slice::from_ref(e),
        )?;
        l.req(
            &format!("blk.{i}.post_attention_norm.weight"),
            std::slice::from_ref(e),
        )?;
        l.qkv(i, e, &q, &kv, &kv, true)?;
        l.req(
            &format!("blk.{i}.attn_output.weight"),
            &[q.clone(), e.clone()],
        )?;
        l.req(
            &format!("blk.{i}.attn_sinks.weight"),
            std::slice::from_ref(&h.n_head),
        )?;
        l.req(
            &format!("blk.{i}.ffn_gate_inp.weight"),
            &[e.clone(), x.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_gate_exps.weight"),
            &[e.clone(), fe.clone(), x.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_down_exps.weight"),
            &[fe.clone(), e.clone(), x.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_up_exps.weight"),
            &[e.clone(), fe.clone(), x.clone()],
        )?;
        l.req(
            &format!("blk.{i}.attn_output.bias"),
            std::slice::from_ref(e),
        )?;
        l.req(
            &format!("blk.{i}.ffn_gate_inp.bias"),
            std::slice::from_ref(x),
        )?;
        l.req(
            &format!("blk.{i}.ffn_gate_exps.bias"),
            &[fe.clone(), x.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_down_exps.bias"),
            &[e.clone(), x.clone()],
        )?;
        l.req(
            &format!("blk.{i}.ffn_up_exps.bias"),
            &[fe.clone(), x.clone()],
        )?;
    }
    Ok(())
}

fn bert(l: &mut Loader, h: &H) -> Res<()> {
    let types = match l.kv.get("tokenizer.ggml.token_type_count") {
        Some(Value::U32(n)) => P {
            v: i64::from(*n),
            keys: vec!["tokenizer.ggml.token_type_count".into()],
        },
        _ => P::c(0),
    };
    if types.v == 0 {
        return refuse("bert model needs to define token type count", &types.keys);
    }
    let e = &h.n_embd;
    l.req("token_embd.weight", &[e.clone(), h.n_vocab.clone()])?;
    l.opt("token_types.weight", &[e.clone(), types])?;
    l.req("position_embd.weight", &[e.clone(), h.n_ctx.clone()])?;
    l.opt("cls.weight", &[e.clone(), e.clone()])?;
    l.opt("cls.bias", std::slice::from_ref(e))?;
    let n_cls = match l.kv.get(l.key("classifier.output_labels").as_str()) {
        Some(Value::Array(_, a)) if !a.is_empty() => P {
            v: a.len() as i64,
            keys: vec![l.key("classifier.output_labels")],
        },
        _ => P::c(0),
    };
    l.opt("cls.output.weight", &[e.clone(), n_cls.clone()])?;
    l.opt("cls.output.bias", &[n_cls])?;
    l.req("token_embd_norm.weight", std::slice::from_ref(e))?;
    l.req("token_embd_norm.bias", std::slice::from_ref(e))?;
    let g = h.head_v.mul(&h.n_head_kv);
    let ff = &h.n_ff;
    for i in 0..h.n_layer.v {
        l.qkv(i, e, e, &g, &g, true)?;
        l.req(
            &format!("blk.{i}.attn_output.weight"),
            &[e.clone(), e.clone()],
        )?;
        l.opt(
            &format!("blk.{i}.attn_output.bias"),
            std::slice::from_ref(e),
        )?;
        l.req(
            &format!("blk.{i}.attn_output_norm.weight"),
            std::slice::from_ref(e),
        )?;
        l.req(
            &format!("blk.{i}.attn_output_norm.bias"),
            std::slice::from_ref(e),
        )?;
        l.req(&format!("blk.{i}.ffn_up.weight"), &[e.clone(), ff.clone()])?;
        l.opt(&format!("blk.{i}.ffn_up.bias"), std::slice::from_ref(ff))?;
        l.req(
            &format!("blk.{i}.ffn_down.weight"),
            &[ff.clone(), e.clone()],
        )?;
        l.opt(&format!("blk.{i}.ffn_down.bias"), std::slice::from_ref(e))?;
        l.req(
            &format!("blk.{i}.layer_output_norm.weight"),
            std::slice::from_ref(e),
        )?;
        l.req(
            &format!("blk.{i}.layer_output_norm.bias"),
            std::slice::from_ref(e),
        )?;
    }
    graph_heads(h, false)
}

/// The config.json keys a metadata key is written from.
pub enum ConfigKeys {
    /// `find_hparam` spellings: the first one present is used.
    FirstOf(&'static [&'static str]),
    /// Every key contributes.
    All(&'static [&'static str]),
}

/// The config.json keys the converter writes a metadata key from (`find_hparam`'s spellings
/// and the families' own), for naming them when llama.cpp would refuse the file.
pub fn config_keys(arch: &str, gguf_key: &str) -> ConfigKeys {
    use ConfigKeys::{All, FirstOf};
    if gguf_key == "tokenizer.ggml.tokens" {
        return FirstOf(&["vocab_size"]);
    }
    if gguf_key == "tokenizer.ggml.token_type_count" {
        return FirstOf(&["type_vocab_size"]);
    }
    let suffix = gguf_key.split_once('.').map_or(gguf_key, |(_, s)| s);
    match (arch, suffix) {
        (_, "context_length") => FirstOf(&[
            "max_position_embeddings",
            "n_ctx",
            "n_positions",
            "max_length",
            "max_sequence_length",
            "model_max_length",
        ]),
        (_, "embedding_length") => FirstOf(&["hidden_size", "n_embd", "dim"]),
        (_, "feed_forward_length") => FirstOf(&[
            "prefix_dense_intermediate_size",
            "dense_intermediate_size",
            "intermediate_size",
            "n_inner",
            "hidden_dim",
        ]),
        (_, "block_count") => FirstOf(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"]),
        (_, "attention.sliding_window") => FirstOf(&["sliding_window"]),
        (_, "attention.head_count") => FirstOf(&["num_attention_heads", "n_head", "n_heads"]),
        (_, "attention.head_count_kv") => {
            FirstOf(&["num_key_value_heads", "n_kv_heads", "n_head_kv"])
        }
        ("deepseek2", "attention.key_length") => All(&["kv_lora_rank", "qk_rope_head_dim"]),
        ("deepseek2", "attention.value_length") => All(&["kv_lora_rank"]),
        (_, "attention.key_length" | "attention.value_length") => FirstOf(&["head_dim"]),
        (_, "attention.key_length_mla") => All(&["qk_nope_head_dim", "qk_rope_head_dim"]),
        (_, "attention.value_length_mla") => All(&["v_head_dim"]),
        (_, "attention.q_lora_rank") => All(&["q_lora_rank"]),
        (_, "attention.kv_lora_rank") => All(&["kv_lora_rank"]),
        (_, "attention.layer_norm_rms_epsilon") => FirstOf(&["rms_norm_eps", "norm_eps"]),
        (_, "attention.layer_norm_epsilon") => {
            FirstOf(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])
        }
        ("deepseek2", "rope.dimension_count") => All(&["qk_rope_head_dim"]),
        ("phi3", "rope.dimension_count") => All(&[
            "hidden_size",
            "num_attention_heads",
            "partial_rotary_factor",
        ]),
        (_, "rope.dimension_count") => All(&["head_dim", "hidden_size", "num_attention_heads"]),
        (_, "expert_count") => FirstOf(&["num_local_experts", "num_experts", "n_routed_experts"]),
        (_, "expert_used_count") => FirstOf(&[
            "num_experts_per_tok",
            "num_experts_per_token",
            "top_k_experts",
        ]),
        (_, "expert_group_count") => FirstOf(&["n_group"]),
        (_, "expert_group_used_count") => FirstOf(&["topk_group"]),
        (_, "expert_feed_forward_length") => {
            FirstOf(&["moe_intermediate_size", "intermediate_size"])
        }
        (_, "expert_shared_feed_forward_length") => FirstOf(&["shared_expert_intermediate_size"]),
        (_, "expert_shared_count") => FirstOf(&["n_shared_experts"]),
        (_, "leading_dense_block_count") => All(&["first_k_dense_replace"]),
        (_, "vocab_size") => FirstOf(&["vocab_size"]),
        _ => All(&[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::ValueType;

    type File = (Vec<(String, Value)>, Vec<(String, Vec<u64>)>);

    /// A two-layer llama file that loads: 64 wide, 4 heads (2 for K/V), 100 tokens.
    fn llama() -> File {
        let md = vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("llama.context_length".into(), Value::U32(128)),
            ("llama.embedding_length".into(), Value::U32(64)),
            ("llama.block_count".into(), Value::U32(2)),
            ("llama.feed_forward_length".into(), Value::U32(128)),
            ("llama.attention.head_count".into(), Value::U32(4)),
            ("llama.attention.head_count_kv".into(), Value::U32(2)),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                Value::F32(1e-6),
            ),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(ValueType::String, vec![Value::String("t".into()); 100]),
            ),
        ];
        let mut t: Vec<(String, Vec<u64>)> = vec![
            ("token_embd.weight".into(), vec![64, 100]),
            ("output_norm.weight".into(), vec![64]),
        ];
        for i in 0..2 {
            for (n, d) in [
                ("attn_norm", vec![64]),
                ("attn_q", vec![64, 64]),
                ("attn_k", vec![64, 32]),
                ("attn_v", vec![64, 32]),
                ("attn_output", vec![64, 64]),
                ("ffn_norm", vec![64]),
                ("ffn_gate", vec![64, 128]),
                ("ffn_down", vec![128, 64]),
                ("ffn_up", vec![64, 128]),
            ] {
                t.push((format!("blk.{i}.{n}.weight"), d));
            }
        }
        (md, t)
    }

    fn set(md: &mut [(String, Value)], key: &str, v: Value) {
        for (k, old) in md.iter_mut() {
            if k == key {
                *old = v.clone();
            }
        }
    }

    #[test]
    fn a_consistent_file_loads() {
        let (md, t) = llama();
        assert_eq!(check(&md, &t), Ok(()));
    }

    #[test]
    fn a_wrong_width_names_the_tensor_the_shapes_and_the_key() {
        let (mut md, t) = llama();
        set(&mut md, "llama.embedding_length", Value::U32(4096));
        let r = check(&md, &t).unwrap_err();
        assert!(r.message.contains("'token_embd.weight'"), "{}", r.message);
        assert!(
            r.message.contains("expected 4096, 100, got 64, 100"),
            "{}",
            r.message
        );
        assert_eq!(r.keys, vec!["llama.embedding_length".to_string()]);
    }

    #[test]
    fn missing_and_extra_layers_and_tensors_are_refused() {
        let (mut md, t) = llama();
        set(&mut md, "llama.block_count", Value::U32(3));
        let r = check(&md, &t).unwrap_err();
        assert!(
            r.message.contains("'blk.2.attn_norm.weight' not found"),
            "{}",
            r.message
        );
        assert_eq!(r.keys, vec!["llama.block_count".to_string()]);

        let (mut md, t) = llama();
        set(&mut md, "llama.block_count", Value::U32(1));
        let r = check(&md, &t).unwrap_err();
        assert!(
            r.message.contains("wrong number of tensors"),
            "{}",
            r.message
        );

        let (md, mut t) = llama();
        t.retain(|(n, _)| n != "output_norm.weight");
        let r = check(&md, &t).unwrap_err();
        assert!(
            r.message.contains("'output_norm.weight' not found"),
            "{}",
            r.message
        );
    }

    #[test]
    fn head_counts_and_expert_counts_are_checked() {
        let (mut md, t) = llama();
        set(&mut md, "llama.attention.head_count_kv", Value::U32(4));
        let r = check(&md, &t).unwrap_err();
        assert!(
            r.message
                .contains("'blk.0.attn_k.weight' has wrong shape; expected 64, 64, got 64, 32"),
            "{}",
            r.message
        );
        assert!(r
            .keys
            .contains(&"llama.attention.head_count_kv".to_string()));

        let (mut md, t) = llama();
        md.push(("llama.expert_count".into(), Value::U32(2)));
        md.push(("llama.expert_used_count".into(), Value::U32(3)));
        let r = check(&md, &t).unwrap_err();
        assert!(
            r.message.contains("n_expert_used_max <= hparams.n_expert"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_zero_size_tensor_is_a_wrong_shape() {
        let (md, mut t) = llama();
        t[1].1 = vec![0];
        let r = check(&md, &t).unwrap_err();
        assert!(
            r.message
                .contains("'output_norm.weight' has wrong shape; expected 64, got 0"),
            "{}",
            r.message
        );
    }
}
