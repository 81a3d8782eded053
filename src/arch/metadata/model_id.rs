//! gguf-py's reading of a model id ("org/Name-7B-Instruct-v0.2") into the parts the converter
//! writes as `general.name`, `general.basename`, `general.finetune`, `general.version` and
//! `general.size_label` (`Metadata.get_model_id_components`, `Metadata.id_to_title` in
//! gguf-py/gguf/metadata.py of llama.cpp b11312). The heuristics are the converter's, quirks
//! included, since the point is the same keys.

use std::sync::OnceLock;

use regex::Regex;

/// The parts of a model id; `None` where gguf-py's heuristic finds nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelIdParts {
    /// The id without its organisation ("Name-7B-Instruct-v0.2"), or the whole id when it has
    /// spaces (then nothing else is read from it).
    pub full_name: Option<String>,
    pub org: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Basename,
    SizeLabel,
    Finetune,
    Version,
    Type,
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("static regex"))
}

/// `get_model_id_components(model_id, total_params)`; `total_params` is negative for LoRA
/// adapters, as in gguf-py.
pub fn model_id_components(model_id: &str, total_params: i64) -> ModelIdParts {
    static VERSION: OnceLock<Regex> = OnceLock::new();
    static QTYPE: OnceLock<Regex> = OnceLock::new();
    static SIZE: OnceLock<Regex> = OnceLock::new();
    static FINETUNE: OnceLock<Regex> = OnceLock::new();
    if model_id.contains(' ') {
        // a human sentence: a name only
        return ModelIdParts {
            full_name: Some(model_id.into()),
            ..Default::default()
        };
    }
    let (org, full) = match model_id.split_once('/') {
        Some((o, f)) => (Some(o), f),
        None => (None, model_id),
    };
    let org = org.filter(|o| !o.starts_with('.'));
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    let mut kinds: Vec<Vec<Kind>> = vec![Vec::new(); parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if re(&VERSION, r"(?i)^(v|iter)?\d+([.]\d+)*$").is_match(&part) {
            kinds[i].push(Kind::Version);
        } else if re(&QTYPE, r"(?i)^(i?q\d(_\w)*|b?fp?(16|32))$").is_match(&part) {
            kinds[i].push(Kind::Type);
            parts[i] = part.to_uppercase();
        } else if i > 0
            && re(
                &SIZE,
                r"(?i)^((([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?)|small|mini|medium|large|x?xl)$",
            )
            .is_match(&part)
        {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            // bloom-7b1 notation: "7b1" -> "7.1b"
            if p.last().is_some_and(|c| c.is_numeric()) && p.len() >= 2 {
                let (b, d) = (p[p.len() - 2], p[p.len() - 1]);
                p.truncate(p.len() - 2);
                p.extend(['.', d, b]);
            }
            if p.len() > 1 && p[p.len() - 2].is_numeric() && "kmbt".contains(p[p.len() - 1]) {
                let last = p.len() - 1;
                p[last] = p[last].to_ascii_uppercase();
            }
            if total_params != 0 {
                if let Some(label) = label_params(&p) {
                    let tp = total_params as f64;
                    let too_small = total_params < 0 && label < (total_params.abs() / 8) as f64;
                    let far = total_params > 0
                        && (label - tp).abs() > (7 * total_params).div_euclid(8) as f64;
                    if too_small || far {
                        // likely a context length
                        kinds[i].push(Kind::Finetune);
                        let last = p.len() - 1;
                        p[last] = p[last].to_lowercase().next().unwrap_or(p[last]);
                    }
                }
            }
            if kinds[i].is_empty() {
                kinds[i].push(Kind::SizeLabel);
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && re(&FINETUNE, r"(?i)^(chat|instruct|vision|lora)$").is_match(&part) {
            if total_params < 0 && part.eq_ignore_ascii_case("lora") {
                kinds[i].push(Kind::Type);
            } else {
                kinds[i].push(Kind::Finetune);
            }
        }
    }
    // word size labels ("small") give way to a numeric one
    let numeric_size = parts
        .iter()
        .zip(&kinds)
        .any(|(p, k)| k.contains(&Kind::SizeLabel) && p.chars().any(|c| c.is_numeric()));
    if numeric_size {
        for (p, k) in parts.iter().zip(kinds.iter_mut()) {
            if k.contains(&Kind::SizeLabel) && p.chars().all(char::is_alphabetic) {
                k.retain(|x| *x != Kind::SizeLabel);
            }
        }
    }
    let mut at_start = true;
    for (p, k) in parts.iter().zip(kinds.iter_mut()) {
        let alpha_first = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((k.is_empty() && alpha_first) || k.contains(&Kind::Version)) {
            k.push(Kind::Basename);
        } else {
            at_start = false;
            if k.is_empty() {
                k.push(Kind::Finetune);
            }
        }
    }
    // a trailing version is not part of the basename
    for k in kinds.iter_mut().rev() {
        if k.contains(&Kind::Basename) && k.len() > 1 {
            k.retain(|x| *x != Kind::Basename);
        } else {
            break;
        }
    }
    let join = |want: Kind, unless: Option<Kind>, dedup: bool| {
        let mut out: Vec<&str> = Vec::new();
        for (p, k) in parts.iter().zip(&kinds) {
            if k.contains(&want) && !unless.is_some_and(|u| k.contains(&u)) {
                if dedup && out.contains(&p.as_str()) {
                    continue;
                }
                out.push(p);
            }
        }
        (!out.is_empty()).then(|| out.join("-"))
    };
    let mut basename = join(Kind::Basename, None, false);
    let size_label = join(Kind::SizeLabel, None, true);
    let finetune = join(Kind::Finetune, None, false);
    let version = join(Kind::Version, Some(Kind::Basename), false);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        // too ambiguous
        basename = None;
    }
    ModelIdParts {
        full_name: Some(full.into()),
        org: org.map(String::from),
        basename,
        finetune,
        version,
        size_label,
    }
}

/// `float(part[:-1]) * pow(1000, " KMBT".find(part[-1]))`, or `None` where Python's float()
/// raises.
fn label_params(p: &[char]) -> Option<f64> {
    let (last, num) = p.split_last()?;
    let num: String = num.iter().collect();
    let value = python_float(&num)?;
    let exp = " KMBT".find(*last).map_or(-1, |i| i as i32);
    Some(value * 1000f64.powi(exp))
}

/// Python's `float(str)` for the strings a size part can hold.
fn python_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.contains('_') {
        return None;
    }
    t.parse::<f64>().ok()
}

/// `Metadata.id_to_title`: words of a lower-case id title-cased unless they are a version or
/// start with a digit ("qwen3moe-tiny" -> "Qwen3Moe Tiny", "llama-v2" -> "Llama v2").
pub fn id_to_title(s: &str) -> String {
    static KEEP: OnceLock<Regex> = OnceLock::new();
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            if python_islower(w) && !re(&KEEP, r"^(v\d+(?:\.\d+)*|\d.*)$").is_match(w) {
                python_title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_cased(c: char) -> bool {
    c.is_lowercase() || c.is_uppercase()
}

/// `str.islower()`: some cased character, and none upper case.
fn python_islower(w: &str) -> bool {
    w.chars().any(is_cased) && !w.chars().any(char::is_uppercase)
}

/// `str.title()`: a cased character after an uncased one (or first) upper-cased, the others
/// lower-cased.
fn python_title(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    let mut prev_cased = false;
    for c in w.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = is_cased(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(id: &str, total: i64) -> [Option<String>; 6] {
        let p = model_id_components(id, total);
        [
            p.full_name,
            p.org,
            p.basename,
            p.finetune,
            p.version,
            p.size_label,
        ]
    }

    fn s(x: &str) -> Option<String> {
        Some(x.into())
    }

    // Expected values: gguf-py's Metadata.get_model_id_components and id_to_title of b11312,
    // run over the ids of gguf-py/tests/test_metadata.py and a few of our own.
    #[test]
    fn components_match_gguf_py() {
        let cases: &[(&str, i64, [Option<String>; 6])] = &[
            (
                "Mistral/Mixtral-8x7B-Instruct-v0.1",
                0,
                [
                    s("Mixtral-8x7B-Instruct-v0.1"),
                    s("Mistral"),
                    s("Mixtral"),
                    s("Instruct"),
                    s("v0.1"),
                    s("8x7B"),
                ],
            ),
            (
                "Mixtral-8x7B-Instruct-v0.1",
                0,
                [
                    s("Mixtral-8x7B-Instruct-v0.1"),
                    None,
                    s("Mixtral"),
                    s("Instruct"),
                    s("v0.1"),
                    s("8x7B"),
                ],
            ),
            (
                "Mixtral-8x7B-Instruct",
                0,
                [
                    s("Mixtral-8x7B-Instruct"),
                    None,
                    s("Mixtral"),
                    s("Instruct"),
                    None,
                    s("8x7B"),
                ],
            ),
            (
                "Mixtral-8x7B-v0.1",
                0,
                [
                    s("Mixtral-8x7B-v0.1"),
                    None,
                    s("Mixtral"),
                    None,
                    s("v0.1"),
                    s("8x7B"),
                ],
            ),
            (
                "Mixtral-8x7B",
                0,
                [s("Mixtral-8x7B"), None, s("Mixtral"), None, None, s("8x7B")],
            ),
            (
                "Mixtral-v0.1",
                0,
                [s("Mixtral-v0.1"), None, s("Mixtral"), None, s("v0.1"), None],
            ),
            ("Mixtral", 0, [s("Mixtral"), None, None, None, None, None]),
            (
                "NousResearch/Meta-Llama-3-8B",
                0,
                [
                    s("Meta-Llama-3-8B"),
                    s("NousResearch"),
                    s("Meta-Llama-3"),
                    None,
                    None,
                    s("8B"),
                ],
            ),
            (
                "Qwen1.5-MoE-A2.7B-Chat",
                0,
                [
                    s("Qwen1.5-MoE-A2.7B-Chat"),
                    None,
                    s("Qwen1.5-MoE"),
                    s("Chat"),
                    None,
                    s("A2.7B"),
                ],
            ),
            (
                "Qwen2-57B-A14B-Instruct",
                0,
                [
                    s("Qwen2-57B-A14B-Instruct"),
                    None,
                    s("Qwen2"),
                    s("Instruct"),
                    None,
                    s("57B-A14B"),
                ],
            ),
            (
                "microsoft/Phi-3-mini-4k-instruct",
                4000000000,
                [
                    s("Phi-3-mini-4k-instruct"),
                    s("microsoft"),
                    s("Phi-3"),
                    s("4k-instruct"),
                    None,
                    s("mini"),
                ],
            ),
            (
                "delphi-suite/stories-llama2-50k",
                50000,
                [
                    s("stories-llama2-50k"),
                    s("delphi-suite"),
                    s("stories-llama2"),
                    None,
                    None,
                    s("50K"),
                ],
            ),
            (
                "DeepSeek-Coder-V2-Lite-Instruct",
                0,
                [
                    s("DeepSeek-Coder-V2-Lite-Instruct"),
                    None,
                    s("DeepSeek-Coder-V2-Lite"),
                    s("Instruct"),
                    None,
                    None,
                ],
            ),
            (
                "crestf411/daybreak-kunoichi-2dpo-7b",
                0,
                [
                    s("daybreak-kunoichi-2dpo-7b"),
                    s("crestf411"),
                    s("daybreak-kunoichi"),
                    s("2dpo"),
                    None,
                    s("7B"),
                ],
            ),
            (
                "Qwen2-0.5B-Instruct",
                0,
                [
                    s("Qwen2-0.5B-Instruct"),
                    None,
                    s("Qwen2"),
                    s("Instruct"),
                    None,
                    s("0.5B"),
                ],
            ),
            (
                "smallcloudai/Refact-1_6B-fim",
                0,
                [
                    s("Refact-1_6B-fim"),
                    s("smallcloudai"),
                    s("Refact"),
                    s("fim"),
                    None,
                    s("1.6B"),
                ],
            ),
            (
                "UCLA-AGI/Gemma-2-9B-It-SPPO-Iter3",
                0,
                [
                    s("Gemma-2-9B-It-SPPO-Iter3"),
                    s("UCLA-AGI"),
                    s("Gemma-2"),
                    s("It-SPPO"),
                    s("Iter3"),
                    s("9B"),
                ],
            ),
            (
                "NousResearch/Hermes-2-Theta-Llama-3-8B",
                0,
                [
                    s("Hermes-2-Theta-Llama-3-8B"),
                    s("NousResearch"),
                    s("Hermes-2-Theta-Llama-3"),
                    None,
                    None,
                    s("8B"),
                ],
            ),
            (
                "SeaLLMs/SeaLLMs-v3-7B-Chat",
                0,
                [
                    s("SeaLLMs-v3-7B-Chat"),
                    s("SeaLLMs"),
                    s("SeaLLMs-v3"),
                    s("Chat"),
                    None,
                    s("7B"),
                ],
            ),
            (
                "internlm/internlm2_5-7b-chat-1m",
                7000000000,
                [
                    s("internlm2_5-7b-chat-1m"),
                    s("internlm"),
                    s("internlm2_5"),
                    s("chat-1m"),
                    None,
                    s("7B"),
                ],
            ),
            (
                "pszemraj/jamba-900M-v0.13-KIx2",
                0,
                [
                    s("jamba-900M-v0.13-KIx2"),
                    s("pszemraj"),
                    s("jamba"),
                    s("KIx2"),
                    s("v0.13"),
                    s("900M"),
                ],
            ),
            (
                "state-spaces/mamba-2.8b-hf",
                0,
                [
                    s("mamba-2.8b-hf"),
                    s("state-spaces"),
                    s("mamba"),
                    s("hf"),
                    None,
                    s("2.8B"),
                ],
            ),
            (
                "abacaj/llama-161M-100B",
                161000000,
                [
                    s("llama-161M-100B"),
                    s("abacaj"),
                    s("llama"),
                    s("100b"),
                    None,
                    s("161M"),
                ],
            ),
            (
                "SparseLLM/relu-100B",
                1340000000,
                [
                    s("relu-100B"),
                    s("SparseLLM"),
                    s("relu"),
                    s("100b"),
                    None,
                    None,
                ],
            ),
            (
                "bigscience/bloom-7b1-petals",
                0,
                [
                    s("bloom-7b1-petals"),
                    s("bigscience"),
                    s("bloom"),
                    s("petals"),
                    None,
                    s("7.1B"),
                ],
            ),
            (
                "MaziyarPanahi/GreenNode-mini-7B-multilingual-v1olet-Mistral-7B-Instruct-v0.1",
                0,
                [
                    s("GreenNode-mini-7B-multilingual-v1olet-Mistral-7B-Instruct-v0.1"),
                    s("MaziyarPanahi"),
                    s("GreenNode-mini"),
                    s("multilingual-v1olet-Mistral-Instruct"),
                    s("v0.1"),
                    s("7B"),
                ],
            ),
            (
                "mistralai/Mistral-Nemo-Instruct-2407",
                0,
                [
                    s("Mistral-Nemo-Instruct-2407"),
                    s("mistralai"),
                    s("Mistral-Nemo"),
                    s("Instruct"),
                    s("2407"),
                    None,
                ],
            ),
            (
                "deepseek-ai/DeepSeek-V2-Chat-0628",
                0,
                [
                    s("DeepSeek-V2-Chat-0628"),
                    s("deepseek-ai"),
                    s("DeepSeek-V2"),
                    s("Chat"),
                    s("0628"),
                    None,
                ],
            ),
            (
                "OpenGVLab/Mini-InternVL-Chat-2B-V1-5",
                0,
                [
                    s("Mini-InternVL-Chat-2B-V1-5"),
                    s("OpenGVLab"),
                    s("Mini-InternVL"),
                    s("Chat"),
                    s("V1-5"),
                    s("2B"),
                ],
            ),
            (
                "jondurbin/bagel-dpo-2.8b-v0.2",
                0,
                [
                    s("bagel-dpo-2.8b-v0.2"),
                    s("jondurbin"),
                    s("bagel-dpo"),
                    None,
                    s("v0.2"),
                    s("2.8B"),
                ],
            ),
            (
                "voxmenthe/SFR-Iterative-DPO-LLaMA-3-8B-R-unquantized",
                0,
                [
                    s("SFR-Iterative-DPO-LLaMA-3-8B-R-unquantized"),
                    s("voxmenthe"),
                    s("SFR-Iterative-DPO-LLaMA-3"),
                    s("R-unquantized"),
                    None,
                    s("8B"),
                ],
            ),
            (
                "microsoft/Florence-2-base",
                0,
                [s("Florence-2-base"), s("microsoft"), None, None, None, None],
            ),
            (
                "mistralai/-Mistral--Nemo-Base-2407-",
                0,
                [
                    s("-Mistral--Nemo-Base-2407-"),
                    s("mistralai"),
                    s("Mistral-Nemo-Base"),
                    None,
                    s("2407"),
                    None,
                ],
            ),
            (
                "Llama-3-Instruct-abliteration-LoRA-8B",
                0,
                [
                    s("Llama-3-Instruct-abliteration-LoRA-8B"),
                    None,
                    s("Llama-3"),
                    s("Instruct-abliteration-LoRA"),
                    None,
                    s("8B"),
                ],
            ),
            (
                "Llama-3-Instruct-abliteration-LoRA-8B",
                -1234,
                [
                    s("Llama-3-Instruct-abliteration-LoRA-8B"),
                    None,
                    s("Llama-3"),
                    s("Instruct-abliteration"),
                    None,
                    s("8B"),
                ],
            ),
            (
                "gpt-oss-tiny-o200k",
                0,
                [s("gpt-oss-tiny-o200k"), None, None, None, None, None],
            ),
            (
                "qwen3moe-tiny",
                0,
                [s("qwen3moe-tiny"), None, None, None, None, None],
            ),
            (
                "llama-tiny",
                0,
                [s("llama-tiny"), None, None, None, None, None],
            ),
            ("tiny_llm", 0, [s("tiny_llm"), None, None, None, None, None]),
            (
                "../gpt-oss-tiny",
                0,
                [s("gpt-oss-tiny"), None, None, None, None, None],
            ),
            (
                "Hello World",
                0,
                [s("Hello World"), None, None, None, None, None],
            ),
            (
                "Qwen/Qwen3-0.6B",
                600000000,
                [
                    s("Qwen3-0.6B"),
                    s("Qwen"),
                    s("Qwen3"),
                    None,
                    None,
                    s("0.6B"),
                ],
            ),
            (
                "meta-llama/Llama-3.2-1B-Instruct",
                1235814400,
                [
                    s("Llama-3.2-1B-Instruct"),
                    s("meta-llama"),
                    s("Llama-3.2"),
                    s("Instruct"),
                    None,
                    s("1B"),
                ],
            ),
            (
                "google/gemma-3-270m-it",
                268098176,
                [
                    s("gemma-3-270m-it"),
                    s("google"),
                    s("gemma-3"),
                    s("it"),
                    None,
                    s("270M"),
                ],
            ),
        ];
        for (id, total, want) in cases {
            assert_eq!(&parts(id, *total), want, "{id} ({total} parameters)");
        }
    }

    #[test]
    fn titles_match_gguf_py() {
        for (id, want) in [
            ("qwen3moe-tiny", "Qwen3Moe Tiny"),
            ("gpt-oss-tiny-o200k", "Gpt Oss Tiny O200K"),
            ("llama-tiny", "Llama Tiny"),
            ("tiny_llm", "Tiny_Llm"),
            ("Mistral-7B-v0.1", "Mistral 7B v0.1"),
            ("phi-3-mini", "Phi 3 Mini"),
            ("deepseek-v2-lite", "Deepseek v2 Lite"),
            ("bert-base-uncased", "Bert Base Uncased"),
            ("all-MiniLM-L6-v2", "All MiniLM L6 v2"),
            ("don't-stop", "Don'T Stop"),
            ("kimi-vl-a3b-instruct", "Kimi Vl A3B Instruct"),
            ("3b-model", "3b Model"),
            ("v2-x", "v2 X"),
        ] {
            assert_eq!(id_to_title(id), want, "{id}");
        }
    }
}
