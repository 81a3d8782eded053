//! Content hashes of decoded tensor bytes: `blake3:<hex>` (a leaf: the source, the store and
//! export all name tensors by it).

use anyhow::{bail, Result};

/// The prefix naming the hash function in manifests and tensor headers.
pub const PREFIX: &str = "blake3:";

/// Hash of `bytes` in manifest form. Large inputs hash on all cores.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    if bytes.len() > 1 << 20 {
        h.update_rayon(bytes);
    } else {
        h.update(bytes);
    }
    format!("{PREFIX}{}", h.finalize().to_hex())
}

/// Manifest form of a finished hash.
pub fn format(h: blake3::Hash) -> String {
    format!("{PREFIX}{}", h.to_hex())
}

/// Checks that `s` is a well-formed hash string.
pub fn validate(s: &str) -> Result<()> {
    match s.strip_prefix(PREFIX) {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
        _ => bail!("malformed content hash {s:?} (expected blake3:<64 hex digits>)"),
    }
}
