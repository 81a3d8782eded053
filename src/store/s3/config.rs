//! The S3 client's settings: the standard AWS environment variables first (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL`, ...), then the profile files (`~/.aws/credentials`, `~/.aws/config`,
//! or `AWS_SHARED_CREDENTIALS_FILE`/`AWS_CONFIG_FILE`, profile `AWS_PROFILE` or `default`).
//! A self-hosted store's endpoint can also be given with `--s3-endpoint` (or `GMAT_S3_ENDPOINT`),
//! which wins over both. Nothing comes from gmat's own config files: credentials stay where
//! every other S3 tool looks for them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, RetryConfig};

/// The endpoint given on the command line (`--s3-endpoint`), set once at start-up.
static ENDPOINT: OnceLock<String> = OnceLock::new();

/// Sets the endpoint of the S3-compatible server for this run (`--s3-endpoint`).
pub fn set_endpoint(url: String) {
    let _ = ENDPOINT.set(url);
}

/// The environment variable that names an endpoint like `--s3-endpoint`.
pub const ENDPOINT_ENV: &str = "GMAT_S3_ENDPOINT";

/// Requests that fail on the way (connection reset, 5xx, throttling) are retried this many times
/// with exponential backoff (0.1 s doubling up to 10 s), for at most [`RETRY_TIMEOUT`]; errors
/// the server means (403, 404, a bad request) fail at once.
const RETRIES: usize = 8;
const RETRY_TIMEOUT: Duration = Duration::from_secs(120);

/// The client of one bucket.
pub fn client(bucket: &str) -> Result<AmazonS3> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let profile = Profile::load();
    if env("AWS_ACCESS_KEY_ID").is_none() {
        if let (Some(id), Some(secret)) = (
            profile.get("aws_access_key_id"),
            profile.get("aws_secret_access_key"),
        ) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = profile.get("aws_session_token") {
                b = b.with_token(t);
            }
        }
    }
    if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
        if let Some(r) = profile.get("region") {
            b = b.with_region(r);
        }
    }
    let endpoint = ENDPOINT
        .get()
        .cloned()
        .or_else(|| env(ENDPOINT_ENV))
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| profile.get("endpoint_url"));
    if let Some(e) = endpoint {
        // A self-hosted store on the local network commonly speaks plain HTTP.
        if e.starts_with("http://") {
            b = b.with_allow_http(true);
        }
        b = b.with_endpoint(e);
    }
    b = b.with_retry(RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    });
    b.build()
        .with_context(|| format!("cannot set up the S3 client for bucket {bucket} (credentials and endpoint come from AWS_* variables or ~/.aws)"))
}

/// The keys of one profile of the AWS shared credentials and config files.
#[derive(Debug, Default)]
struct Profile(HashMap<String, String>);

impl Profile {
    fn load() -> Profile {
        let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let file = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let mut p = Profile::default();
        // The credentials file's values win over the config file's, as in the AWS CLI.
        for (path, section) in [
            (file("AWS_CONFIG_FILE", "config"), config_section(&name)),
            (
                file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
                name.clone(),
            ),
        ] {
            let Some(text) = path.and_then(|p| crate::fsio::read_small_text(&p).ok()) else {
                continue;
            };
            p.0.extend(parse_section(&text, &section));
        }
        p
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned().filter(|v| !v.is_empty())
    }
}

/// The config file names profiles `[profile NAME]`, except `[default]`.
fn config_section(name: &str) -> String {
    if name == "default" {
        name.into()
    } else {
        format!("profile {name}")
    }
}

/// The `key = value` lines of `[section]` in an INI-style AWS file.
fn parse_section(text: &str, section: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = s.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_sections() {
        let creds = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[team]\n# c\naws_access_key_id = T\n";
        let d = parse_section(creds, "default");
        assert_eq!(d.get("aws_access_key_id").map(String::as_str), Some("A"));
        assert_eq!(
            d.get("aws_secret_access_key").map(String::as_str),
            Some("B")
        );
        assert_eq!(
            parse_section(creds, "team")
                .get("aws_access_key_id")
                .map(String::as_str),
            Some("T")
        );
        let config = "[profile team]\nregion = garage\nendpoint_url = http://localhost:3900\n";
        let t = parse_section(config, &config_section("team"));
        assert_eq!(t.get("region").map(String::as_str), Some("garage"));
        assert!(parse_section(config, &config_section("default")).is_empty());
    }
}
