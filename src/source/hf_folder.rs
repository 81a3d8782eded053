//! A HuggingFace model folder: config.json, tokenizer files, and safetensors weights (one file or
//! shards listed by `model.safetensors.index.json`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::safetensors::{SafetensorsFile, SafetensorsTensor};

/// Files besides the weights that import copies verbatim, when present: everything the
/// converter reads to build metadata and the tokenizer.
pub const SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tiktoken.model",
    "modules.json",
    // the model card: the converter reads its front matter for the general.* keys
    "README.md",
];

const INDEX_FILE: &str = "model.safetensors.index.json";

/// An opened HF model.
pub struct HfModel {
    /// The folder holding config.json and the tokenizer files.
    pub dir: PathBuf,
    /// Parsed config.json.
    pub config: serde_json::Value,
    /// Weight files, in the order the converter reads them (sorted by file name).
    pub files: Vec<SafetensorsFile>,
    /// Side files present in `dir`, as paths relative to it (`name` or `module/name`).
    pub side_files: Vec<String>,
    /// A GGUF source's metadata (then `config` is null and there are no side files).
    pub gguf_metadata: Option<Vec<(String, crate::gguf::Value)>>,
}

/// The [`SIDE_FILES`] present in `dir`, and the `config.json` of each sentence-transformers
/// pooling module `modules.json` lists (the converter reads the pooling mode there).
fn side_files(dir: &Path) -> Result<Vec<String>> {
    let mut out: Vec<String> = SIDE_FILES
        .iter()
        .filter(|f| dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    let modules = dir.join("modules.json");
    if modules.is_file() {
        let text = crate::fsio::read_small_text(&modules)?;
        let list: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", modules.display()))?;
        for m in list.as_array().into_iter().flatten() {
            let ty = m.get("type").and_then(|v| v.as_str()).unwrap_or("");
            let Some(path) = m.get("path").and_then(|v| v.as_str()) else {
                continue;
            };
            if !ty.ends_with("Pooling") {
                continue;
            }
            if !is_plain_name(path) {
                bail!(
                    "{}: module path {path:?} is not a plain folder name",
                    modules.display()
                );
            }
            let rel = format!("{path}/config.json");
            if dir.join(&rel).is_file() {
                out.push(rel);
            }
        }
    }
    Ok(out)
}

/// A file or folder name that stays inside its folder: no separators, not `.`/`..`, not
/// hidden.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '\\']) && !s.starts_with('.')
}

/// A tensor together with the file that holds it.
pub struct SourceRef<'a> {
    pub file: &'a SafetensorsFile,
    pub tensor: &'a SafetensorsTensor,
}

impl HfModel {
    /// Opens a model folder, a single `.safetensors` file whose folder holds config.json, or a
    /// GGUF file (all files of its split set when it names one).
    pub fn open(path: &Path) -> Result<HfModel> {
        if super::gguf_model::is_gguf(path) {
            let g = super::gguf_model::GgufModel::open(path)?;
            return Ok(HfModel {
                dir: path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(".")),
                config: serde_json::Value::Null,
                files: g.files,
                side_files: Vec::new(),
                gguf_metadata: Some(g.metadata),
            });
        }
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read model path {}", path.display()))?;
        let (dir, part_paths) = if meta.is_dir() {
            (path.to_path_buf(), weight_files(path)?)
        } else {
            let dir = path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (dir, vec![path.to_path_buf()])
        };
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            bail!(
                "{} has no config.json: gmat needs the model's HF config.json beside the weights",
                dir.display()
            );
        }
        let text = crate::fsio::read_small_text(&config_path)?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", config_path.display()))?;
        if !config.is_object() {
            bail!("{} is not a JSON object", config_path.display());
        }
        let mut files = Vec::new();
        for p in &part_paths {
            files.push(SafetensorsFile::open(p)?);
        }
        let model = HfModel {
            side_files: side_files(&dir)?,
            dir,
            config,
            files,
            gguf_metadata: None,
        };
        model.check_unique_names()?;
        if meta.is_dir() {
            model.check_index()?;
        }
        Ok(model)
    }

    /// The format of the weights: `safetensors` or `gguf` (the manifest's `source.format`).
    pub fn format(&self) -> &'static str {
        if self.gguf_metadata.is_some() {
            "gguf"
        } else {
            "safetensors"
        }
    }

    /// Every tensor, files in order and names sorted within each file.
    pub fn tensors(&self) -> impl Iterator<Item = SourceRef<'_>> {
        self.files.iter().flat_map(|file| {
            file.tensors
                .iter()
                .map(move |tensor| SourceRef { file, tensor })
        })
    }

    fn check_unique_names(&self) -> Result<()> {
        let mut seen: HashMap<&str, &Path> = HashMap::new();
        for r in self.tensors() {
            if let Some(first) = seen.insert(&r.tensor.name, &r.file.path) {
                bail!(
                    "tensor {} appears in both {} and {}",
                    r.tensor.name,
                    first.display(),
                    r.file.path.display()
                );
            }
        }
        Ok(())
    }

    /// With an index file, its weight map must name exactly the tensors found in the shards.
    fn check_index(&self) -> Result<()> {
        let index = self.dir.join(INDEX_FILE);
        if !index.is_file() {
            return Ok(());
        }
        let map = read_weight_map(&index)?;
        let listed: BTreeSet<&str> = map.keys().map(String::as_str).collect();
        let found: BTreeSet<&str> = self.tensors().map(|r| r.tensor.name.as_str()).collect();
        if let Some(missing) = listed.difference(&found).next() {
            bail!(
                "{} lists tensor {missing} (in {}) but no shard holds it: missing or incomplete model files",
                index.display(),
                map[*missing]
            );
        }
        if let Some(extra) = found.difference(&listed).next() {
            bail!(
                "tensor {extra} is in a shard but not in {}",
                index.display()
            );
        }
        Ok(())
    }
}

fn read_weight_map(index: &Path) -> Result<HashMap<String, String>> {
    let text = crate::fsio::read_small_text(index)?;
    parse_weight_map(&text).with_context(|| format!("{}", index.display()))
}

/// The `weight_map` of a `model.safetensors.index.json`: tensor name → shard file name.
pub fn parse_weight_map(text: &str) -> Result<HashMap<String, String>> {
    let json: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        bail!("no weight_map object");
    };
    map.iter()
        .map(|(k, v)| match v.as_str() {
            Some(f) => Ok((k.clone(), f.to_string())),
            None => bail!("weight_map entry {k} is not a file name"),
        })
        .collect()
}

/// The weight files of a folder, as the converter picks them: the shards named by the index
/// file, else every `model*.safetensors`; sorted by name.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    let mut names: Vec<String> = if index.is_file() {
        let map = read_weight_map(&index)?;
        let set: BTreeSet<String> = map.into_values().collect();
        for f in &set {
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                bail!(
                    "{}: shard name {f:?} must be a plain file name",
                    index.display()
                );
            }
            if !dir.join(f).is_file() {
                bail!(
                    "{} names shard {f}, which is missing from {}",
                    index.display(),
                    dir.display()
                );
            }
        }
        set.into_iter().collect()
    } else {
        let mut v = Vec::new();
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("model") && name.ends_with(".safetensors") {
                v.push(name);
            }
        }
        v
    };
    names.sort();
    if names.is_empty() {
        bail!("{} holds no model*.safetensors file", dir.display());
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::safetensors::write_file;

    fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) {
        write_file(path, tensors).unwrap();
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_shards_in_converter_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        write_safetensors(
            &d.path().join("model-00002-of-00002.safetensors"),
            &[
                ("z.b", "F32", vec![1], f32s(&[1.0])),
                ("a.b", "F32", vec![1], f32s(&[2.0])),
            ],
        );
        write_safetensors(
            &d.path().join("model-00001-of-00002.safetensors"),
            &[("m", "F32", vec![1], f32s(&[3.0]))],
        );
        std::fs::write(
            d.path().join(INDEX_FILE),
            r#"{"weight_map":{"m":"model-00001-of-00002.safetensors","a.b":"model-00002-of-00002.safetensors","z.b":"model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let m = HfModel::open(d.path()).unwrap();
        let names: Vec<_> = m.tensors().map(|r| r.tensor.name.clone()).collect();
        assert_eq!(names, ["m", "a.b", "z.b"]);
        assert_eq!(m.side_files.len(), 1);
    }

    #[test]
    fn index_must_match_shards() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        write_safetensors(
            &d.path().join("model-00001-of-00001.safetensors"),
            &[("m", "F32", vec![1], f32s(&[3.0]))],
        );
        std::fs::write(
            d.path().join(INDEX_FILE),
            r#"{"weight_map":{"m":"model-00001-of-00001.safetensors","gone":"model-00001-of-00001.safetensors"}}"#,
        )
        .unwrap();
        let e = HfModel::open(d.path()).err().unwrap().to_string();
        assert!(e.contains("gone"), "{e}");
    }

    #[test]
    fn missing_config_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        write_safetensors(
            &d.path().join("model.safetensors"),
            &[("m", "F32", vec![1], f32s(&[3.0]))],
        );
        let e = HfModel::open(d.path()).err().unwrap().to_string();
        assert!(e.contains("config.json"), "{e}");
    }
}
