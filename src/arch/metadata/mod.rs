//! The `general.*` keys `convert_hf_to_gguf.py` writes (`Metadata.load`,
//! `Metadata.set_gguf_meta_model`, gguf-py's `size_label`), with the GGUF value types
//! gguf-py's `GGUFWriter.add_*` methods use.

mod authorship;
mod model_card;
pub mod model_id;

use anyhow::Result;
use serde_json::Value as Json;

use authorship::{MetadataSources, ModelMetadata};

use super::kv::Kv;
use super::tokenizer::ModelDir;
use crate::gguf::Value;

/// Parameter counts of the output tensors, for `general.size_label`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamCount {
    pub total: u64,
    pub shared: u64,
    pub expert: u64,
    pub expert_count: u64,
}

impl ParamCount {
    /// Adds one output tensor, as gguf-py's `get_total_parameter_count` does.
    pub fn add(
        &mut self,
        name: &str,
        shape_outer_first: &[u64],
        n_expert_tensors: &mut u64,
        expert_sum: &mut u64,
    ) {
        let size: u64 = shape_outer_first.iter().product();
        if name.contains("_exps.") && shape_outer_first.len() >= 3 {
            let count = shape_outer_first[if name.contains(".bias") {
                shape_outer_first.len() - 2
            } else {
                shape_outer_first.len() - 3
            }];
            self.expert += size / count.max(1);
            *expert_sum += count;
            *n_expert_tensors += 1;
        } else {
            self.shared += size;
        }
        self.total += size;
        self.expert_count = expert_sum.checked_div(*n_expert_tensors).unwrap_or(0);
    }

    /// gguf-py's `size_label`: "4.6M", "10M", "8x7.2B".
    pub fn size_label(&self) -> String {
        if self.expert_count > 0 {
            format!(
                "{}x{}",
                self.expert_count,
                rounded_notation(self.shared + self.expert, 2)
            )
        } else {
            rounded_notation(self.total, 2)
        }
    }
}

/// gguf-py's `model_weight_count_rounded_notation`.
fn rounded_notation(n: u64, min_digits: usize) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    // Python's round() rounds half to even; str() of the int, leading zeros stripped.
    let int_digits = format!("{}", scaled.round_ties_even() as u64);
    let int_digits = int_digits.trim_start_matches('0').len();
    let fix = min_digits.saturating_sub(int_digits);
    format!("{scaled:.fix$}{suffix}")
}

/// What the user adds to the converter's metadata: its `--metadata` file (or the export
/// config's `metadata` object) and `--model-name`, and the folder the model was imported from.
#[derive(Clone, Debug, Default)]
pub struct MetadataInput {
    /// The source folder's name, which the converter reads as a model id.
    pub folder_name: String,
    /// GGUF key -> value, as the converter's `--metadata` file.
    pub overrides: serde_json::Map<String, Json>,
    /// `--model-name`.
    pub model_name: Option<String>,
}

/// `Metadata.load` + `set_type` + `set_gguf_meta_model`: the `general.*` keys written before
/// the architecture's parameters (architecture, type, sampling defaults, name and authorship,
/// size label), in the converter's order.
pub fn general_keys(
    kv: &mut Kv,
    arch: &str,
    general_type: &str,
    md: &ModelDir,
    input: &MetadataInput,
    params: &ParamCount,
) -> Result<()> {
    let total = i64::try_from(params.total).unwrap_or(i64::MAX);
    let label = (params.total > 0).then(|| params.size_label());
    general_keys_with_total(kv, arch, general_type, md, input, total, label)
}

/// [`general_keys`] given the parameter total the converter's heuristics see and the size
/// label: a LoRA adapter's total is negative (gguf-py's `get_total_parameter_count` negates it
/// as "likely not exact") and it has no label.
pub fn general_keys_with_total(
    kv: &mut Kv,
    arch: &str,
    general_type: &str,
    md: &ModelDir,
    input: &MetadataInput,
    total: i64,
    label: Option<String>,
) -> Result<()> {
    kv.set("general.architecture", Value::String(arch.into()));
    kv.set("general.type", Value::String(general_type.into()));
    // gguf-py: a model card, config or generation config that cannot be read counts as absent
    let card = match md.text("README.md").ok().flatten() {
        Some(text) => model_card::front_matter(&text)?,
        None => Default::default(),
    };
    let config = md.json("config.json").ok().flatten();
    let generation = md.json("generation_config.json").ok().flatten();
    let sources = MetadataSources {
        card,
        hf_params: config.as_deref(),
        generation: generation.as_deref(),
        folder_name: &input.folder_name,
        overrides: input.overrides.clone(),
        model_name: input.model_name.as_deref(),
        total_params: total,
    };
    let metadata = ModelMetadata::load(&sources, label)?;
    for (k, v) in metadata.gguf_keys()? {
        kv.set(&k, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels_match_gguf_py() {
        let p = |total| ParamCount {
            total,
            shared: total,
            expert: 0,
            expert_count: 0,
        };
        assert_eq!(p(4_550_000).size_label(), "4.5M");
        assert_eq!(p(4_556_032).size_label(), "4.6M");
        // 9.82M rounds to 10, which has two digits already: no decimals (qwen2-tiny is "10M").
        assert_eq!(p(9_820_000).size_label(), "10M");
        assert_eq!(p(9_960_000).size_label(), "10M");
        assert_eq!(p(1_950_000).size_label(), "1.9M");
        assert_eq!(p(7_240_000_000).size_label(), "7.2B");
        assert_eq!(p(999_000).size_label(), "999K");
        let moe = ParamCount {
            total: 0,
            shared: 1_000_000,
            expert: 1_700_000,
            expert_count: 4,
        };
        assert_eq!(moe.size_label(), "4x2.7M");
    }
}
