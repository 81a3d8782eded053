//! The `general.*` keys `convert_hf_to_gguf.py` writes (`Metadata.load`,
//! `Metadata.set_gguf_meta_model`, gguf-py's `size_label`), with the GGUF value types
//! gguf-py's `GGUFWriter.add_*` methods use.

use serde_json::Value as Json;

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

/// A human name for `general.name`, from a model folder name ("llama-tiny" → "Llama Tiny").
pub fn display_name(folder: &str) -> String {
    folder
        .split(['-', '_', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Metadata.load` + `set_type` + `set_gguf_meta_model`: the `general.*` keys written before
/// the architecture's parameters (architecture, type, sampling defaults from
/// generation_config.json, name, size label), in the converter's order.
pub fn general_keys(
    kv: &mut Kv,
    arch: &str,
    general_type: &str,
    md: &ModelDir,
    name: &str,
    params: &ParamCount,
) {
    kv.set("general.architecture", Value::String(arch.into()));
    kv.set("general.type", Value::String(general_type.into()));
    // Metadata.load_generation_config: an unreadable file counts as absent.
    let gen = md.json("generation_config.json").ok().flatten();
    if let Some(gen) = gen.as_deref() {
        let get = |k: &str| gen.get(k).filter(|v| !v.is_null());
        if let Some(Json::String(s)) = get("sequence") {
            kv.set("general.sampling.sequence", Value::String(s.clone()));
        }
        let int = |k: &str| get(k).and_then(Json::as_i64).map(|n| Value::I32(n as i32));
        let float = |k: &str| get(k).and_then(Json::as_f64).map(|x| Value::F32(x as f32));
        let items: [(&str, Option<Value>); 11] = [
            ("top_k", int("top_k")),
            ("top_p", float("top_p")),
            ("min_p", float("min_p")),
            ("xtc_probability", float("xtc_probability")),
            ("xtc_threshold", float("xtc_threshold")),
            ("temp", float("temperature")),
            ("penalty_last_n", int("penalty_last_n")),
            (
                "penalty_repeat",
                if gen.get("penalty_repeat").is_some() {
                    float("penalty_repeat")
                } else {
                    float("repetition_penalty")
                },
            ),
            ("mirostat", int("mirostat")),
            ("mirostat_tau", float("mirostat_tau")),
            ("mirostat_eta", float("mirostat_eta")),
        ];
        for (k, v) in items {
            if let Some(v) = v {
                kv.set(&format!("general.sampling.{k}"), v);
            }
        }
    }
    kv.set("general.name", Value::String(name.into()));
    if params.total > 0 {
        kv.set("general.size_label", Value::String(params.size_label()));
    }
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

    #[test]
    fn display_name_title_cases_folder_names() {
        assert_eq!(display_name("llama-tiny"), "Llama Tiny");
        assert_eq!(display_name("tiny_llm"), "Tiny Llm");
    }
}
