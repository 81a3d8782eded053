//! `gmat schema`, `gmat completions` and `gmat man`: the JSON Schemas of the two config files
//! (for editors to validate and complete them), shell completions and the man page, all
//! generated from the same definitions the program reads and parses with.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::config::{ExportConfig, ImportConfig};

/// Which config file a schema describes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConfigKind {
    /// import_config.json (`gmat import --config`).
    Import,
    /// export_config.json (`gmat export --config`).
    Export,
}

impl ConfigKind {
    /// The file name `--generate-config` writes the schema under, beside the config.
    pub fn schema_file_name(self) -> &'static str {
        match self {
            ConfigKind::Import => "gmat-import-config.schema.json",
            ConfigKind::Export => "gmat-export-config.schema.json",
        }
    }
}

/// The JSON Schema (draft 2020-12) of a config file, pretty-printed.
pub fn schema_text(kind: ConfigKind) -> Result<String> {
    let schema = match kind {
        ConfigKind::Import => schemars::schema_for!(ImportConfig),
        ConfigKind::Export => schemars::schema_for!(ExportConfig),
    };
    let mut json = serde_json::to_value(&schema)?;
    if let Some(props) = json
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        // the one key a config may carry besides its own: the pointer to this schema
        props.insert(
            "$schema".into(),
            serde_json::json!({"type": "string", "description": "The JSON Schema of this file."}),
        );
    }
    allow_comment_keys(&mut json);
    Ok(serde_json::to_string_pretty(&json)? + "\n")
}

/// Keys starting with `_` are comments in gmat's configs (removed before reading), so every
/// closed object of the schema lets them through.
fn allow_comment_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
                map.insert("patternProperties".into(), serde_json::json!({"^_": {}}));
            }
            map.values_mut().for_each(allow_comment_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(allow_comment_keys),
        _ => {}
    }
}

/// `gmat schema import|export [-o FILE]`.
pub fn schema(kind: ConfigKind, output: Option<&Path>) -> Result<()> {
    let text = schema_text(kind)?;
    match output {
        Some(p) => crate::fsio::write_atomic(p, text.as_bytes())
            .with_context(|| format!("cannot write {}", p.display())),
        None => write_stdout(text.as_bytes()),
    }
}

/// Writes the schema beside a generated config and returns the `$schema` value that points at
/// it (relative, so the pair can move together).
pub fn write_schema_beside(config: &Path, kind: ConfigKind) -> Result<String> {
    let dir = crate::fsio::parent_dir(config);
    let path = dir.join(kind.schema_file_name());
    schema(kind, Some(&path))?;
    Ok(format!("./{}", kind.schema_file_name()))
}

/// `json` (an object) with `"$schema": schema` as its first key.
pub fn with_schema_first(json: serde_json::Value, schema: String) -> serde_json::Value {
    match json {
        serde_json::Value::Object(rest) => {
            let mut map = serde_json::Map::new();
            map.insert("$schema".into(), serde_json::Value::String(schema));
            map.extend(rest);
            serde_json::Value::Object(map)
        }
        other => other,
    }
}

/// `gmat completions SHELL`.
pub fn completions(shell: Shell) -> Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "gmat", &mut buf);
    write_stdout(&buf)
}

/// `gmat man [--dir DIR]`: the man page (roff) of gmat on standard output, or gmat.1 and one
/// page per command (gmat-export.1, ...) written into DIR.
pub fn man(dir: Option<&Path>) -> Result<()> {
    let cmd = Cli::command();
    let render = |c: clap::Command| -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        Ok(buf)
    };
    let Some(dir) = dir else {
        return write_stdout(&render(cmd)?);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pages = vec![("gmat.1".to_string(), render(cmd.clone())?)];
    for sub in cmd.get_subcommands() {
        let name = format!("gmat-{}", sub.get_name());
        pages.push((format!("{name}.1"), render(sub.clone().name(name))?));
    }
    for (file, bytes) in pages {
        let path = dir.join(&file);
        crate::fsio::write_atomic(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .context("cannot write to standard output")?;
    out.flush().context("cannot write to standard output")
}
