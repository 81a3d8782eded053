//! Splitting an export into `NAME-00001-of-0000N.gguf` shards the way `llama-gguf-split` does
//! (tools/gguf-split/gguf-split.cpp of the reference build): tensors stay in plan order; a new
//! shard starts when the next tensor's padded data would push the current shard past the size
//! limit, or every N tensors; all metadata goes in the first shard; every shard carries
//! `split.no` (u16), `split.tensors.count` (i32) and `split.count` (u16), in that order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::ExportPlan;
use crate::gguf::{align_up, GgufHeader, Value, DEFAULT_ALIGNMENT};

/// How to split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitLimits {
    /// Maximum bytes of (padded) tensor data per shard (`--split-max-size`).
    pub max_bytes: Option<u64>,
    /// Maximum tensors per shard (`--split-max-tensors`).
    pub max_tensors: Option<usize>,
}

impl SplitLimits {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.max_bytes.is_some() || self.max_tensors.is_some()
    }
}

/// Parses a size like llama-gguf-split: `500M`, `2G` (decimal units), or plain bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('M' | 'm') => (&t[..t.len() - 1], 1_000_000u64),
        Some('G' | 'g') => (&t[..t.len() - 1], 1_000_000_000u64),
        Some('K' | 'k') => (&t[..t.len() - 1], 1_000u64),
        _ => (t, 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * mul),
        _ => bail!("shard size {s:?} is not a positive size (examples: 2G, 500M, 1000000)"),
    }
}

/// One output file.
pub struct Shard {
    pub path: PathBuf,
    /// Indices into `plan.tensors`.
    pub tensors: Vec<usize>,
    /// The header with this shard's metadata and tensor infos (offsets relative to the shard).
    pub header: GgufHeader,
}

/// The shard a tensor goes to, for each tensor.
pub fn assign(sizes: &[u64], limits: SplitLimits) -> Vec<usize> {
    let mut shard = 0;
    let mut current = 0u64;
    let n = sizes.len();
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let padded = align_up(size, DEFAULT_ALIGNMENT);
            let next = current + padded;
            let split = match (limits.max_bytes, limits.max_tensors) {
                (Some(max), _) => next > max,
                (None, Some(k)) => i > 0 && i < n && i % k.max(1) == 0,
                (None, None) => false,
            };
            if split && i > 0 {
                shard += 1;
                current = padded;
            } else {
                current = next;
            }
            shard
        })
        .collect()
}

/// `-00001-of-00003.gguf` names, as `llama_split_path` makes them.
pub fn shard_path(out: &Path, i: usize, n: usize) -> PathBuf {
    let s = out.to_string_lossy();
    let prefix = s.strip_suffix(".gguf").unwrap_or(&s);
    PathBuf::from(format!("{prefix}-{:05}-of-{:05}.gguf", i + 1, n))
}

/// Splits a plan into shards (one shard, named `out`, without split keys when no limit is set).
pub fn shards(plan: &ExportPlan, out: &Path, limits: SplitLimits) -> Result<Vec<Shard>> {
    if !limits.is_set() {
        return Ok(vec![Shard {
            path: out.to_path_buf(),
            tensors: (0..plan.tensors.len()).collect(),
            header: plan.header(),
        }]);
    }
    let sizes: Vec<u64> = plan.tensors.iter().map(|t| t.n_bytes).collect();
    let which = assign(&sizes, limits);
    let n = which.last().map(|s| s + 1).unwrap_or(1);
    if n > u16::MAX as usize {
        bail!("{n} shards is more than GGUF split keys can count");
    }
    let mut out_shards = Vec::with_capacity(n);
    for i in 0..n {
        let mut header = GgufHeader::default();
        if i == 0 {
            header.metadata = plan.metadata.clone();
        }
        // gguf-split.cpp sets split.count to a placeholder, then to the shard count once
        // known: gguf's set_val removes a key and appends it, so split.count comes last.
        header
            .metadata
            .push(("split.no".into(), Value::U16(i as u16)));
        header.metadata.push((
            "split.tensors.count".into(),
            Value::I32(plan.tensors.len() as i32),
        ));
        header
            .metadata
            .push(("split.count".into(), Value::U16(n as u16)));
        let tensors: Vec<usize> = (0..plan.tensors.len()).filter(|&t| which[t] == i).collect();
        for &t in &tensors {
            let pt = &plan.tensors[t];
            header.push_tensor(pt.name.clone(), pt.dims.clone(), pt.ggml_type);
        }
        out_shards.push(Shard {
            path: shard_path(out, i, n),
            tensors,
            header,
        });
    }
    Ok(out_shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_splits_like_gguf_split() {
        // 100-byte tensors pad to 128; a 300-byte limit holds two per shard.
        assert_eq!(
            assign(
                &[100, 100, 100, 100, 100],
                SplitLimits {
                    max_bytes: Some(300),
                    max_tensors: None
                }
            ),
            [0, 0, 1, 1, 2]
        );
        // a tensor larger than the limit still gets a shard of its own
        assert_eq!(
            assign(
                &[1000, 10, 10],
                SplitLimits {
                    max_bytes: Some(300),
                    max_tensors: None
                }
            ),
            [0, 1, 1]
        );
        assert_eq!(
            assign(
                &[1, 1, 1, 1, 1],
                SplitLimits {
                    max_bytes: None,
                    max_tensors: Some(2)
                }
            ),
            [0, 0, 1, 1, 2]
        );
        assert_eq!(assign(&[1, 1], SplitLimits::default()), [0, 0]);
    }

    #[test]
    fn names_and_sizes() {
        assert_eq!(
            shard_path(Path::new("/x/m.gguf"), 0, 3),
            PathBuf::from("/x/m-00001-of-00003.gguf")
        );
        assert_eq!(parse_size("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("500M").unwrap(), 500_000_000);
        assert!(parse_size("-1").is_err() && parse_size("G").is_err());
    }
}
