//! Models named by a Hugging Face Hub repo id (`Qwen/Qwen3-0.6B`): found in the local HF cache,
//! and what is missing downloaded into it, so `gmat import --model ORG/NAME` behaves as
//! `transformers`/`huggingface-cli` do and shares their cache.
//!
//! The cache layout is huggingface_hub's (`file_download.py`): `HUB/models--ORG--NAME/` holds
//! `blobs/<etag>` (the file contents), `snapshots/<commit>/<file>` (symlinks to the blobs) and
//! `refs/<revision>` (a text file holding the commit hash a branch or tag pointed at when last
//! downloaded). A revision that is a 40-hex commit hash names its snapshot folder directly.
//!
//! Downloads go through the `hf-hub` crate (Hugging Face's own Rust client, blocking `ureq`
//! API with rustls), which writes that layout, resumes `.part` files of an interrupted download
//! and shows a progress bar per file. A local path that exists always wins over a repo id.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::hf_folder::{is_plain_name, parse_weight_map, SIDE_FILES};

/// The index of sharded safetensors weights.
const INDEX_FILE: &str = "model.safetensors.index.json";

/// The environment the Hub client reads, as huggingface_hub's `constants.py` reads it.
#[derive(Clone, Debug, Default)]
pub struct HubEnv {
    /// The cache folder holding `models--ORG--NAME` folders.
    pub cache: PathBuf,
    /// Where `huggingface-cli login` keeps the token.
    pub token_path: PathBuf,
    /// `HF_TOKEN` (or the legacy `HUGGING_FACE_HUB_TOKEN`), else the token file's contents.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set to a true value.
    pub offline: bool,
    /// `HF_ENDPOINT`: another Hub (a mirror or a private Hub).
    pub endpoint: Option<String>,
}

impl HubEnv {
    /// Reads the process environment.
    pub fn from_process() -> HubEnv {
        HubEnv::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Builds the environment from a variable lookup (testable without touching the process):
    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`; token from `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else
    /// `HF_HOME/token`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> HubEnv {
        let home_cache = || -> PathBuf {
            match var("XDG_CACHE_HOME") {
                Some(x) => PathBuf::from(x),
                None => var("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache"),
            }
        };
        let hf_home = var("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home_cache().join("huggingface"));
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_path = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                std::fs::read_to_string(&token_path)
                    .ok()
                    .map(|t| t.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        // huggingface_hub's `_is_true`.
        let is_true = |k: &str| {
            var(k).is_some_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.to_uppercase().as_str()))
        };
        HubEnv {
            cache,
            token_path,
            token,
            offline: is_true("HF_HUB_OFFLINE") || is_true("TRANSFORMERS_OFFLINE"),
            endpoint: var("HF_ENDPOINT").map(|e| e.trim_end_matches('/').to_string()),
        }
    }
}

/// Where `--model` points once resolved.
#[derive(Clone, Debug)]
pub struct ResolvedModel {
    /// The folder (or file) to open.
    pub path: PathBuf,
    /// For a repo id, the repo's name (`Qwen3-0.6B`): the model's display name, since the
    /// snapshot folder is named by a commit hash.
    pub repo_name: Option<String>,
}

/// Whether `s` is a valid Hub repo id (huggingface_hub `validate_repo_id`: `[ORG/]NAME` of
/// word characters, `-` and `.`, the name at most 96 characters, no `--` or `..`).
pub fn is_repo_id(s: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            // `\b` at both ends of the regex: the first and last characters are word characters.
            && p.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && p.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    };
    if s.contains("--") || s.contains("..") {
        return false;
    }
    match s.split_once('/') {
        Some((org, name)) => part_ok(org) && part_ok(name) && name.len() <= 96,
        None => part_ok(s) && s.len() <= 96,
    }
}

/// Resolves `--model`: an existing path as it is; otherwise a repo id through the HF cache
/// (downloading what is missing unless offline). `revision` (branch, tag or commit hash) only
/// applies to a repo id.
pub fn resolve(model: &Path, revision: Option<&str>, quiet: bool) -> Result<ResolvedModel> {
    resolve_with(model, revision, quiet, &HubEnv::from_process())
}

/// [`resolve`] with an explicit environment.
pub fn resolve_with(
    model: &Path,
    revision: Option<&str>,
    quiet: bool,
    env: &HubEnv,
) -> Result<ResolvedModel> {
    if std::fs::symlink_metadata(model).is_ok() {
        if let Some(r) = revision {
            bail!(
                "--revision {r} applies to a Hub repo id, but {} is a local path (a local path \
                 always wins over a repo id of the same name)",
                model.display()
            );
        }
        return Ok(ResolvedModel {
            path: model.to_path_buf(),
            repo_name: None,
        });
    }
    let id = model.to_str().filter(|s| is_repo_id(s)).ok_or_else(|| {
        anyhow!(
            "cannot read model path {}: no such file or folder (nor is it a Hub repo id like \
             Qwen/Qwen3-0.6B)",
            model.display()
        )
    })?;
    let revision = revision.unwrap_or("main");
    let repo_name = id.rsplit('/').next().unwrap_or(id).to_string();
    let path = if env.offline {
        cached_snapshot(&env.cache, id, revision)?.ok_or_else(|| {
            anyhow!(
                "{id} (revision {revision}) is not in the Hugging Face cache {} and \
                 HF_HUB_OFFLINE is set, so gmat may not download it; {}",
                env.cache.display(),
                what_is_cached(&env.cache, id)
            )
        })?
    } else {
        download(env, id, revision, quiet).with_context(|| {
            format!("--model {id}: there is no local path of that name, so it was taken as a Hub repo id")
        })?
    };
    Ok(ResolvedModel {
        path,
        repo_name: Some(repo_name),
    })
}

/// `models--ORG--NAME`.
fn repo_folder(cache: &Path, id: &str) -> PathBuf {
    cache.join(format!("models--{}", id.replace('/', "--")))
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The snapshot folder of `id` at `revision` in the cache, if it is there: a commit hash names
/// its folder, a branch or tag is looked up in `refs/`.
pub fn cached_snapshot(cache: &Path, id: &str, revision: &str) -> Result<Option<PathBuf>> {
    let repo = repo_folder(cache, id);
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        if revision.split('/').any(|p| !is_plain_name(p)) {
            bail!("--revision {revision:?} is not a branch, tag or commit name");
        }
        let ref_file = repo.join("refs").join(revision);
        match std::fs::read_to_string(&ref_file) {
            Ok(t) => t.trim().to_string(),
            Err(_) => return Ok(None),
        }
    };
    if !is_commit_hash(&commit) {
        bail!(
            "{}: expected a 40-hex commit hash, found {commit:?}",
            repo.join("refs").join(revision).display()
        );
    }
    let snap = repo.join("snapshots").join(&commit);
    Ok(snap.is_dir().then_some(snap))
}

/// A hint of what the cache holds for `id` (the revisions with a ref), for offline errors.
fn what_is_cached(cache: &Path, id: &str) -> String {
    let refs = repo_folder(cache, id).join("refs");
    let mut names: Vec<String> = std::fs::read_dir(&refs)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        format!("download it first (unset HF_HUB_OFFLINE, or `huggingface-cli download {id}`)")
    } else {
        format!(
            "the cache has revisions {} (give one with --revision), or unset HF_HUB_OFFLINE to \
             download",
            names.join(", ")
        )
    }
}

/// The files of a repo gmat reads, from the repo's file list: the side files, the weights
/// (the index and the shards it names, else every top-level `model*.safetensors`), pooling
/// module configs and extra chat templates. `read` gives the text of an already fetched file
/// (the index, modules.json).
fn wanted_files(
    siblings: &BTreeSet<String>,
    mut read: impl FnMut(&str) -> Result<String>,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = SIDE_FILES
        .iter()
        .filter(|f| siblings.contains(**f))
        .map(|f| f.to_string())
        .collect();
    for f in siblings {
        if let Some(rest) = f.strip_prefix("additional_chat_templates/") {
            if is_plain_name(rest) && rest.ends_with(".jinja") {
                out.push(f.clone());
            }
        }
    }
    if siblings.contains("modules.json") {
        let text = read("modules.json")?;
        let list: serde_json::Value =
            serde_json::from_str(&text).context("modules.json is not valid JSON")?;
        for m in list.as_array().into_iter().flatten() {
            let pooling = m
                .get("type")
                .and_then(|v| v.as_str())
                .is_some_and(|t| t.ends_with("Pooling"));
            if let (true, Some(p)) = (pooling, m.get("path").and_then(|v| v.as_str())) {
                let rel = format!("{p}/config.json");
                if is_plain_name(p) && siblings.contains(&rel) {
                    out.push(rel);
                }
            }
        }
    }
    let weights: Vec<String> = if siblings.contains(INDEX_FILE) {
        let map = parse_weight_map(&read(INDEX_FILE)?).context(INDEX_FILE)?;
        let shards: BTreeSet<String> = map.into_values().collect();
        for s in &shards {
            if !is_plain_name(s) || !siblings.contains(s) {
                bail!("{INDEX_FILE} names shard {s:?}, which the repo does not have");
            }
        }
        std::iter::once(INDEX_FILE.to_string())
            .chain(shards)
            .collect()
    } else {
        siblings
            .iter()
            .filter(|f| !f.contains('/') && f.starts_with("model") && f.ends_with(".safetensors"))
            .cloned()
            .collect()
    };
    if weights.is_empty() {
        let others: Vec<&str> = siblings
            .iter()
            .filter(|f| f.ends_with(".bin") || f.ends_with(".gguf") || f.ends_with(".pth"))
            .map(String::as_str)
            .take(5)
            .collect();
        bail!(
            "the repo has no model*.safetensors weights, which is what gmat imports{}",
            if others.is_empty() {
                String::new()
            } else {
                format!(" (it has {})", others.join(", "))
            }
        );
    }
    out.extend(weights);
    Ok(out)
}

/// Fetches what gmat reads of `id` at `revision` into the cache and returns the snapshot
/// folder. Without a connection to the Hub, a cached snapshot is used as it is.
fn download(env: &HubEnv, id: &str, revision: &str, quiet: bool) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let mut builder = ApiBuilder::new()
        .with_cache_dir(env.cache.clone())
        .with_token(env.token.clone())
        .with_progress(!quiet)
        .with_retries(3)
        .with_user_agent("gmat", env!("CARGO_PKG_VERSION"));
    if let Some(e) = &env.endpoint {
        builder = builder.with_endpoint(e.clone());
    }
    let api = builder
        .build()
        .map_err(|e| anyhow!("cannot set up the Hub client: {e}"))?;
    let repo = api.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = match repo.info() {
        Ok(i) => i,
        Err(e) => {
            let err = HubError::from_api(&e);
            if let HubError::Network(msg) = &err {
                if let Some(snap) = cached_snapshot(&env.cache, id, revision)? {
                    if !quiet {
                        eprintln!(
                            "note: cannot reach the Hub ({msg}); using the cached snapshot {}",
                            snap.display()
                        );
                    }
                    return Ok(snap);
                }
            }
            return Err(err.explain(id, revision, env, None));
        }
    };
    if !is_commit_hash(&info.sha) {
        bail!(
            "the Hub answered for {id} with commit {:?}, not a commit hash",
            info.sha
        );
    }
    let snap = repo_folder(&env.cache, id)
        .join("snapshots")
        .join(&info.sha);
    let siblings: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let fetch = |file: &str| -> Result<PathBuf> {
        let local = snap.join(file);
        if local.is_file() {
            return Ok(local);
        }
        repo.download(file)
            .map_err(|e| HubError::from_api(&e).explain(id, revision, env, Some(file)))
    };
    let files = wanted_files(&siblings, |f| {
        let p = fetch(f)?;
        crate::fsio::read_small_text(&p)
    })
    .with_context(|| format!("{id} (revision {revision})"))?;
    for f in &files {
        fetch(f)?;
    }
    // A branch that moved during the download leaves files under another commit's snapshot.
    if let Some(f) = files.iter().find(|f| !snap.join(f).is_file()) {
        bail!(
            "{id}: {f} is missing from {} after the download (did revision {revision} change \
             on the Hub meanwhile? run the command again)",
            snap.display()
        );
    }
    Ok(snap)
}

/// A failed Hub request, classified for the message.
enum HubError {
    /// HTTP status with the Hub's `X-Error-Code` and message, if any.
    Status(u16, Option<String>, Option<String>),
    /// No answer (DNS, connection, TLS, proxy).
    Network(String),
    /// Anything else (local I/O, a malformed answer).
    Other(String),
}

impl HubError {
    fn from_api(e: &hf_hub::api::sync::ApiError) -> HubError {
        use hf_hub::api::sync::ApiError;
        match e {
            ApiError::RequestError(r) => match r.as_ref() {
                ureq::Error::Status(code, resp) => HubError::Status(
                    *code,
                    resp.header("x-error-code").map(str::to_string),
                    resp.header("x-error-message").map(str::to_string),
                ),
                ureq::Error::Transport(t) => HubError::Network(t.to_string()),
            },
            ApiError::TooManyRetries(inner) => HubError::from_api(inner),
            other => HubError::Other(other.to_string()),
        }
    }

    fn explain(&self, id: &str, revision: &str, env: &HubEnv, file: Option<&str>) -> anyhow::Error {
        let what = match file {
            Some(f) => format!("{f} of {id} (revision {revision})"),
            None => format!("{id} (revision {revision})"),
        };
        let token = match &env.token {
            Some(_) => {
                "the token gmat used (HF_TOKEN or the token file) has no access to it".to_string()
            }
            None => format!(
                "no token was given: set HF_TOKEN, or log in with `huggingface-cli login` \
                 (which writes {})",
                env.token_path.display()
            ),
        };
        let detail = |m: &Option<String>| m.as_ref().map(|m| format!(" ({m})")).unwrap_or_default();
        match self {
            HubError::Status(_, Some(code), msg) if code == "GatedRepo" => anyhow!(
                "{what}: the repo is gated{}: accept its conditions on the model's page on the Hub, then {}",
                detail(msg),
                if env.token.is_some() { "check that the token's account is the one that accepted them".to_string() } else { token }
            ),
            HubError::Status(_, Some(code), _) if code == "RevisionNotFound" => anyhow!(
                "{what}: no revision {revision} (check the branch, tag or commit with --revision)"
            ),
            HubError::Status(_, Some(code), _) if code == "EntryNotFound" => {
                anyhow!("{what}: the repo has no such file")
            }
            HubError::Status(401 | 404, Some(code), _) if code == "RepoNotFound" => anyhow!(
                "{what}: no such repo on the Hub, or it is private and {token}"
            ),
            HubError::Status(401 | 403, _, msg) => anyhow!(
                "{what}: access refused{} — the repo is gated or private and {token}",
                detail(msg)
            ),
            HubError::Status(404, _, msg) => anyhow!(
                "{what}: not found on the Hub{} (check the repo id and --revision)",
                detail(msg)
            ),
            HubError::Status(code, _, msg) => {
                anyhow!("{what}: the Hub answered HTTP {code}{}", detail(msg))
            }
            HubError::Network(m) => anyhow!(
                "{what}: cannot reach the Hub ({m}) and the model is not in the cache {}; \
                 check the connection (or HF_ENDPOINT / proxy settings)",
                env.cache.display()
            ),
            HubError::Other(m) => anyhow!("{what}: download failed: {m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> HubEnv {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn cache_folder_precedence() {
        assert_eq!(
            env_of(&[("HOME", "/h")]).cache,
            PathBuf::from("/h/.cache/huggingface/hub")
        );
        assert_eq!(
            env_of(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).cache,
            PathBuf::from("/x/huggingface/hub")
        );
        let e = env_of(&[("HOME", "/h"), ("HF_HOME", "/hf")]);
        assert_eq!(e.cache, PathBuf::from("/hf/hub"));
        assert_eq!(e.token_path, PathBuf::from("/hf/token"));
        assert_eq!(
            env_of(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]).cache,
            PathBuf::from("/c")
        );
    }

    #[test]
    fn token_and_offline() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("token"), "hf_file\n").unwrap();
        let home = d.path().to_str().unwrap();
        assert_eq!(
            env_of(&[("HF_HOME", home)]).token.as_deref(),
            Some("hf_file")
        );
        assert_eq!(
            env_of(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")])
                .token
                .as_deref(),
            Some("hf_env")
        );
        assert!(env_of(&[("HF_HUB_OFFLINE", "1")]).offline);
        assert!(env_of(&[("HF_HUB_OFFLINE", "yes")]).offline);
        assert!(!env_of(&[("HF_HUB_OFFLINE", "0")]).offline);
    }

    #[test]
    fn repo_ids() {
        for ok in ["Qwen/Qwen3-0.6B", "gpt2", "org_1/m.v2"] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in [
            "a/b/c", "./x", "/abs", "a--b/c", "a/..x", "a/", "-a/b", "a/b-", "",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn wanted_files_follow_the_index() {
        let sib: BTreeSet<String> = [
            "config.json",
            "tokenizer.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "pytorch_model.bin",
            "README.md",
            "additional_chat_templates/tool_use.jinja",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let files = wanted_files(&sib, |f| {
            assert_eq!(f, INDEX_FILE);
            Ok(r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#.into())
        })
        .unwrap();
        assert_eq!(
            files,
            [
                "config.json",
                "tokenizer.json",
                "README.md",
                "additional_chat_templates/tool_use.jinja",
                INDEX_FILE,
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        let bin_only: BTreeSet<String> = ["config.json", "pytorch_model.bin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = wanted_files(&bin_only, |_| unreachable!()).unwrap_err();
        assert!(e.to_string().contains("pytorch_model.bin"), "{e}");
    }

    #[test]
    fn snapshot_by_ref_or_commit() {
        let d = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo = d.path().join("models--o--m");
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        let snap = repo.join("snapshots").join(commit);
        assert_eq!(
            cached_snapshot(d.path(), "o/m", "main").unwrap(),
            Some(snap.clone())
        );
        assert_eq!(
            cached_snapshot(d.path(), "o/m", commit).unwrap(),
            Some(snap)
        );
        assert_eq!(cached_snapshot(d.path(), "o/m", "dev").unwrap(), None);
        assert!(cached_snapshot(d.path(), "o/m", "../x").is_err());
        std::fs::write(repo.join("refs/bad"), "nothex").unwrap();
        assert!(cached_snapshot(d.path(), "o/m", "bad").is_err());
    }
}
