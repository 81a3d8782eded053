//! Per-architecture knowledge, shaped like llama.cpp's converter: one module per model family
//! under [`models`], each implementing [`ArchSpec`], whose default methods are the converter's
//! `TextModel` behaviour ([`text_model`]), over gguf-py's data tables ([`tensor_names`],
//! [`name_map`]).
//!
//! An architecture decides, from names, shapes and config.json only: which stored tensors
//! become which GGUF tensors and how ([`tensors`], [`transform`]: views, splits, expert
//! stacks, value operations, generated tensors), which metadata keys it writes
//! (`set_gguf_parameters`) and which vocabulary reader it uses (`set_vocab`, [`tokenizer`]).
//! The export plan records those decisions; the pipeline executes them while streaming.
//! Adding an architecture is one new file in `models/` and one line in [`models::ARCHES`].

pub mod auto_config;
pub mod dequant;
pub mod hparams;
pub mod kv;
pub mod lora;
pub mod metadata;
pub mod mmproj_model;
pub mod models;
pub mod name_map;
pub mod projectors;
pub mod tensor_names;
pub mod tensors;
pub mod text_model;
pub mod tokenizer;
pub mod transform;

use anyhow::{bail, Context, Result};

use crate::gguf::GgmlType;
pub use auto_config::{ConfigClass, ConfigFile};
pub use hparams::Hparams;
pub use kv::Kv;
pub use name_map::NameMap;
pub use tensor_names::TensorKind;
pub use tensors::{Data, OutTensor, Piece, SourceTensor, TensorSink};
pub use tokenizer::ModelDir;

/// What an architecture's methods may read: the converter's `self` (hyper-parameters, model
/// folder, tensor name map, block count, file type).
#[derive(Clone, Copy)]
pub struct Cx<'a> {
    /// `self.hparams`: config.json with `text_config` merged for a text model; the
    /// `vision_config` for a projector.
    pub hp: &'a Hparams,
    /// config.json with `text_config` merged (a projector's `n_embd_text` comes from it).
    pub text: &'a Hparams,
    /// The model folder (config.json and tokenizer files): the store root.
    pub dir: &'a std::path::Path,
    /// The tokenizer and side files, parsed once.
    pub md: &'a ModelDir,
    /// `self.tensor_map`.
    pub names: &'a NameMap,
    /// `self.block_count`.
    pub block_count: u64,
    /// `general.file_type` of the output.
    pub file_type: u32,
}

impl Cx<'_> {
    /// The block count as the uint32 GGUF stores.
    pub fn block_count_u32(&self) -> Result<u32> {
        u32::try_from(self.block_count).context("block count does not fit in 32 bits")
    }
}

/// Which base class a converter class derives from: the defaults of [`ArchSpec`] are that
/// class's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `TextModel`: a language model GGUF (`general.type` "model").
    Text,
    /// `MmprojModel`: a multimodal projector GGUF (`general.architecture` "clip",
    /// `general.type` "mmproj"), written next to the text model for llama.cpp's mtmd tools.
    Mmproj,
}

/// One converter model class (`conversion/<family>.py`), as gmat reproduces it. The default
/// methods are those of its base class ([`ArchSpec::kind`]): `TextModel` ([`text_model`]) or
/// `MmprojModel` ([`mmproj_model`]).
pub trait ArchSpec: Sync {
    /// `model_arch`: the GGUF architecture name (`general.architecture`).
    fn gguf_arch(&self) -> &'static str;

    /// The HF classes (`architectures[0]`) registered for this class.
    fn hf_classes(&self) -> &'static [&'static str];

    /// The base class.
    fn kind(&self) -> ModelKind {
        ModelKind::Text
    }

    /// `filter_tensors`: the name the converter uses for a stored tensor, `None` to skip it.
    fn filter_tensor(&self, name: &str) -> Option<String> {
        match self.kind() {
            ModelKind::Text => text_model::filter_tensor(name),
            ModelKind::Mmproj => mmproj_model::filter_tensor(name),
        }
    }

    /// `modify_tensors`: the GGUF tensors one source tensor becomes.
    fn modify_tensor(&self, cx: &Cx, t: &SourceTensor, out: &mut TensorSink) -> Result<()> {
        let _ = cx;
        out.map_whole(t)
    }

    /// `generate_extra_tensors`: tensors computed from config.json or repacked from the
    /// (filtered) source tensors, written first (and the keys some families add meanwhile).
    fn extra_tensors(
        &self,
        cx: &Cx,
        sources: &[SourceTensor],
        kv: &mut Kv,
    ) -> Result<Vec<OutTensor>> {
        let _ = (cx, sources, kv);
        Ok(Vec::new())
    }

    /// `dequant_model`: quantized checkpoints dequantized before `modify_tensors`.
    fn dequant_model(&self, cx: &Cx, tensors: Vec<SourceTensor>) -> Result<Vec<SourceTensor>> {
        dequant::dequant_model(cx.hp, tensors)
    }

    /// `set_gguf_parameters`: the architecture's metadata keys (and `general.file_type`).
    fn set_gguf_parameters(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        match self.kind() {
            ModelKind::Text => text_model::set_gguf_parameters(cx, kv),
            ModelKind::Mmproj => mmproj_model::set_gguf_parameters(cx, kv),
        }
    }

    /// `set_vocab`: the `tokenizer.*` keys (projectors have none).
    fn set_vocab(&self, cx: &Cx, kv: &mut Kv) -> Result<()> {
        match self.kind() {
            ModelKind::Text => tokenizer::set_vocab_gpt2(cx.md, cx.hp.json(), kv),
            ModelKind::Mmproj => Ok(()),
        }
    }

    /// `tensor_force_quant`: a type the class imposes on a tensor (`None`: the file type's),
    /// given the source name, the GGUF name and the output file type's `general.file_type`.
    fn force_type(&self, name: &str, gguf_name: &str, file_type: u32) -> Option<GgmlType> {
        match self.kind() {
            ModelKind::Text => None,
            ModelKind::Mmproj => mmproj_model::force_type(name, gguf_name, file_type),
        }
    }

    /// The transformers configuration classes of this class's checkpoints, transcribed
    /// ([`auto_config`]): the defaults and normalisations of config.json the converter sees.
    fn config_classes(&self) -> &'static [&'static ConfigClass] {
        &[]
    }

    /// `ModelBase.load_hparams`: config.json as the converter sees it, through transformers'
    /// `AutoConfig` (the configuration class of its `model_type`, looked up among every
    /// module's [`ArchSpec::config_classes`], as transformers' `CONFIG_MAPPING` does), or the
    /// raw JSON when transformers cannot load it.
    fn config_defaults(&self, file: &ConfigFile) -> Result<serde_json::Value> {
        Ok(auto_config::load_hparams(file, &all_config_classes())?.0)
    }

    /// `self.hparams` of the class, from config.json with [`ArchSpec::config_defaults`]
    /// applied: the merged text config for a text model; a projector's vision config (as the
    /// class adjusts it).
    fn hparams(&self, file: &ConfigFile) -> Result<Hparams> {
        let view = self.config_defaults(file)?;
        match self.kind() {
            ModelKind::Text => Hparams::from_view(&view, file),
            ModelKind::Mmproj => mmproj_model::vision_hparams(&view, file),
        }
    }

    /// `self.block_count`.
    fn block_count(&self, hp: &Hparams) -> Result<u64> {
        match self.kind() {
            ModelKind::Text => block_count(hp),
            ModelKind::Mmproj => mmproj_model::block_count(hp),
        }
    }
}

/// Every transcribed transformers configuration class, text models' and projectors'.
pub fn all_config_classes() -> Vec<&'static ConfigClass> {
    models::ARCHES
        .iter()
        .chain(projectors::PROJECTORS)
        .flat_map(|a| a.config_classes().iter().copied())
        .collect()
}

/// The projector class of a vision-language model, if gmat has one for its HF class
/// (`convert_hf_to_gguf.py --mmproj` picks it the same way).
pub fn detect_projector(hp: &Hparams) -> Option<&'static dyn ArchSpec> {
    let class = hp.origin_hf_arch()?;
    projectors::PROJECTORS
        .iter()
        .copied()
        .find(|a| a.hf_classes().contains(&class))
}

/// The architecture of a model, from config.json's `architectures`; an unsupported one is an
/// error that lists what is supported.
pub fn detect(hp: &Hparams) -> Result<&'static dyn ArchSpec> {
    let Some(class) = hp.hf_architecture() else {
        bail!("config.json has no \"architectures\" list, so the model's architecture is unknown");
    };
    match models::ARCHES
        .iter()
        .find(|a| a.hf_classes().contains(&class))
    {
        Some(a) => Ok(*a),
        None => {
            let mut known: Vec<&str> = models::ARCHES
                .iter()
                .flat_map(|a| a.hf_classes().iter().copied())
                .collect();
            known.sort_unstable();
            bail!(
                "architecture {class} is not supported (supported: {})",
                known.join(", ")
            )
        }
    }
}

/// The architecture whose GGUF name is `name`.
pub fn by_gguf_name(name: &str) -> Option<&'static dyn ArchSpec> {
    models::ARCHES
        .iter()
        .copied()
        .find(|a| a.gguf_arch() == name)
}

/// `TextModel.block_count`.
pub fn block_count(hp: &Hparams) -> Result<u64> {
    hp.req_u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
}

/// `prepare_tensors`: every output tensor of the model, in the converter's order
/// (generated tensors first, then each source tensor's outputs as `modify_tensors` yields
/// them). `sources` are the stored tensors in store order, with their stored names.
pub fn convert_tensors(
    spec: &dyn ArchSpec,
    cx: &Cx,
    sources: &[SourceTensor],
    kv: &mut Kv,
) -> Result<Vec<OutTensor>> {
    // index_tensors: filter_tensors at load time, a later duplicate name replacing the value
    let mut filtered: Vec<SourceTensor> = Vec::with_capacity(sources.len());
    let mut position: std::collections::HashMap<String, usize> = Default::default();
    for s in sources {
        let Some(name) = spec.filter_tensor(&s.name) else {
            continue;
        };
        let t = SourceTensor::new(s.index, name, s.dtype, s.shape.clone());
        match position.get(&t.name) {
            Some(&at) => filtered[at] = t,
            None => {
                position.insert(t.name.clone(), filtered.len());
                filtered.push(t);
            }
        }
    }
    let filtered = spec.dequant_model(cx, filtered)?;
    let mut out = spec.extra_tensors(cx, &filtered, kv)?;
    let mut sink = TensorSink::new(cx.names);
    for t in &filtered {
        // "we don't need these"
        if t.name.ends_with(".attention.masked_bias")
            || t.name.ends_with(".attention.bias")
            || t.name.ends_with(".rotary_emb.inv_freq")
        {
            continue;
        }
        spec.modify_tensor(cx, t, &mut sink).with_context(|| {
            let stored = sources.iter().find(|s| s.index == t.index);
            format!(
                "tensor {}",
                stored.map_or(t.name.as_str(), |s| s.name.as_str())
            )
        })?;
    }
    out.extend(sink.finish()?);
    Ok(out)
}

/// The `tokenizer.*` keys `set_vocab` writes for the model folder `dir` (tests and tools).
pub fn vocab_metadata(
    spec: &dyn ArchSpec,
    dir: &std::path::Path,
    hp: &Hparams,
) -> Result<Vec<(String, crate::gguf::Value)>> {
    let names = NameMap::new(spec.gguf_arch(), 0)?;
    let md = ModelDir::new(dir);
    let cx = Cx {
        hp,
        text: hp,
        dir,
        md: &md,
        names: &names,
        block_count: 0,
        file_type: 0,
    };
    let mut kv = Kv::default();
    spec.set_vocab(&cx, &mut kv)?;
    Ok(kv.into_vec())
}
