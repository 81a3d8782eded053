//! Where a store lives: a local folder (the default), or a prefix in an S3-compatible bucket
//! (`s3://bucket/prefix/model.gmat`). Command-line paths stay `PathBuf`s; a path spelled as an
//! `s3://` URL names a bucket location instead of a folder.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The URL scheme of a store in object storage.
pub const S3_SCHEME: &str = "s3://";

/// A store's place.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    Local(PathBuf),
    S3(S3Location),
}

/// A key prefix in a bucket: the objects of a store are `<key>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct S3Location {
    pub bucket: String,
    /// The prefix without leading or trailing `/` (empty: the bucket's root).
    pub key: String,
}

impl S3Location {
    /// The object key of `name` (a path relative to the store, `/`-separated).
    pub fn object(&self, name: &str) -> String {
        if self.key.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.key)
        }
    }

    /// The location `rel` (a `/`-separated relative path, `..` allowed) names from this one.
    pub fn join(&self, rel: &str) -> Result<S3Location> {
        let mut parts: Vec<&str> = self.key.split('/').filter(|p| !p.is_empty()).collect();
        for p in rel.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        bail!("{rel} leads out of the bucket {}", self.bucket);
                    }
                }
                p => parts.push(p),
            }
        }
        Ok(S3Location {
            bucket: self.bucket.clone(),
            key: parts.join("/"),
        })
    }

    /// `to` relative to this location when both are in the same bucket (`../base/model.gmat`),
    /// else its full URL.
    pub fn relative(&self, to: &S3Location) -> String {
        if self.bucket != to.bucket {
            return Location::S3(to.clone()).to_string();
        }
        let f: Vec<&str> = self.key.split('/').filter(|p| !p.is_empty()).collect();
        let t: Vec<&str> = to.key.split('/').filter(|p| !p.is_empty()).collect();
        let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
        let mut out: Vec<&str> = vec![".."; f.len() - common];
        out.extend(&t[common..]);
        if out.is_empty() {
            ".".into()
        } else {
            out.join("/")
        }
    }
}

impl Location {
    /// Reads a command-line path: `s3://bucket/prefix` is a bucket location, anything else a
    /// local path.
    pub fn parse(path: &Path) -> Result<Location> {
        let Some(s) = path.to_str().filter(|s| s.starts_with(S3_SCHEME)) else {
            return Ok(Location::Local(path.to_path_buf()));
        };
        let rest = &s[S3_SCHEME.len()..];
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            bail!("{s}: {bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, dots and hyphens)");
        }
        let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
        if parts.iter().any(|p| *p == "." || *p == "..") {
            bail!("{s}: a bucket location cannot contain . or .. parts");
        }
        Ok(Location::S3(S3Location {
            bucket: bucket.to_string(),
            key: parts.join("/"),
        }))
    }

    /// Whether `path` is spelled as a bucket location.
    pub fn is_remote(path: &Path) -> bool {
        path.to_str().is_some_and(|s| s.starts_with(S3_SCHEME))
    }

    /// The location `name` under this one.
    pub fn child(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::S3(s) => Location::S3(S3Location {
                bucket: s.bucket.clone(),
                key: s.object(name),
            }),
        }
    }

    /// The local folder, if the store is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(s) if s.key.is_empty() => write!(f, "{S3_SCHEME}{}", s.bucket),
            Location::S3(s) => write!(f, "{S3_SCHEME}{}/{}", s.bucket, s.key),
        }
    }
}

/// S3's bucket naming rules (the common subset every S3-compatible store accepts).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(s: &str) -> S3Location {
        match Location::parse(Path::new(s)).unwrap() {
            Location::S3(l) => l,
            l => panic!("{l} is local"),
        }
    }

    #[test]
    fn parses_urls_and_paths() {
        let l = s3("s3://models/team/llama/");
        assert_eq!(
            (l.bucket.as_str(), l.key.as_str()),
            ("models", "team/llama")
        );
        assert_eq!(l.object("metadata.json"), "team/llama/metadata.json");
        assert_eq!(s3("s3://models").object("x"), "x");
        assert_eq!(
            Location::parse(Path::new("./out/model.gmat")).unwrap(),
            Location::Local(PathBuf::from("./out/model.gmat"))
        );
        for bad in ["s3://", "s3://A_B/x", "s3://ab", "s3://bucket/a/../b"] {
            assert!(Location::parse(Path::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            Location::S3(s3("s3://models//a//b")).to_string(),
            "s3://models/a/b"
        );
    }

    #[test]
    fn relative_locations_round_trip() {
        let ft = s3("s3://mb1/ft/model.gmat");
        let base = s3("s3://mb1/base/model.gmat");
        let rel = ft.relative(&base);
        assert_eq!(rel, "../../base/model.gmat");
        assert_eq!(ft.join(&rel).unwrap(), base);
        let other = s3("s3://nb1/base/model.gmat");
        assert_eq!(ft.relative(&other), "s3://nb1/base/model.gmat");
        assert!(s3("s3://mb1/a").join("../../x").is_err());
    }
}
