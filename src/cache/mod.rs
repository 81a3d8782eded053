//! The quantized-tensor cache: a content-addressed folder of output tensors, so that an export
//! whose tensor has the same source bytes, transform, type and importance weights as one
//! exported before (a repeated export, a profile with one type changed, a fine-tune sharing
//! tensors with its base) copies the bytes instead of quantizing again.
//!
//! Entries are named by their [`key::ResultKey`] and checked by a hash of their payload while
//! they are copied ([`entry`]). The folder is `$GMAT_CACHE_DIR`, else `$XDG_CACHE_HOME/gmat`,
//! else `~/.cache/gmat`; it is kept under a size limit by dropping the least recently used
//! entries after each export. Only block-quantized outputs are cached: plain float outputs are a
//! conversion at memory speed, and caching them would only double the disk they take.

pub mod entry;
pub mod key;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::gguf::GgmlType;
use entry::{EntryReader, EntryWriter};
use key::ResultKey;

/// The default size limit: room for several quantized profiles of a 30B-class model.
pub const DEFAULT_LIMIT: u64 = 20_000_000_000;

/// File name extension of entries.
const EXT: &str = "gq";

/// An opened cache folder.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
    /// Bytes of entries kept after [`Cache::trim`].
    limit: u64,
}

impl Cache {
    /// The cache at `dir` (created if missing), kept under `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> Result<Cache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            limit,
        })
    }

    /// The folder from the environment: `GMAT_CACHE_DIR`, `XDG_CACHE_HOME/gmat`,
    /// `HOME/.cache/gmat`; `None` when none is set.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("GMAT_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("gmat")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("gmat")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether outputs of type `t` are cached (block-quantized types only; see the module
    /// documentation).
    pub fn caches(t: GgmlType) -> bool {
        t.is_quantized()
    }

    pub fn path(&self, key: &ResultKey) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", key.hex()))
    }

    /// Whether an entry for `key` of `len` bytes looks present (its header is checked; the
    /// payload only when it is read).
    pub fn probably_has(&self, key: &ResultKey, len: u64) -> bool {
        EntryReader::open(&self.path(key), key, len).is_some()
    }

    /// The entry for `key`, when there is one of `len` payload bytes.
    pub fn get(&self, key: &ResultKey, len: u64) -> Option<EntryReader> {
        EntryReader::open(&self.path(key), key, len)
    }

    /// Asks the kernel to read `key`'s entry from disk ahead of [`Cache::get`] (a hint; see
    /// [`crate::fsio::will_need`]).
    pub fn prefetch(&self, key: &ResultKey) {
        if let Ok(f) = std::fs::File::open(self.path(key)) {
            crate::fsio::will_need(&f);
        }
    }

    /// A writer for `key`'s entry.
    pub fn put(&self, key: ResultKey, len: u64) -> Result<EntryWriter> {
        EntryWriter::create(self.path(&key), key, len)
    }

    /// Drops a damaged entry (it is written again by the export that found it).
    pub fn discard(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    /// Removes the least recently used entries (by modification time, renewed on use; see
    /// [`entry::RENEW_AFTER`]) until the folder holds at most the limit, and temporary files
    /// of writers that died more than a day ago. Returns the bytes removed.
    pub fn trim(&self) -> Result<u64> {
        let mut entries = Vec::new();
        let mut total = 0u64;
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        let mut removed = 0u64;
        for e in std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list the cache folder {}", self.dir.display()))?
        {
            let Ok(e) = e else { continue };
            let Ok(meta) = e.metadata() else { continue };
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if name.contains(".tmp.") {
                if modified < day_ago && std::fs::remove_file(&path).is_ok() {
                    removed += meta.len();
                }
                continue;
            }
            if path.extension().is_some_and(|x| x == EXT) && meta.is_file() {
                total += meta.len();
                entries.push((modified, meta.len(), path));
            }
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.limit {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                removed += len;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ResultKey {
        ResultKey([b; 32])
    }

    fn write(c: &Cache, k: ResultKey, payload: &[u8]) {
        let mut w = c.put(k, payload.len() as u64).unwrap();
        w.append(&payload[..3]).unwrap();
        w.append(&payload[3..]).unwrap();
        w.commit().unwrap();
    }

    fn read(c: &Cache, k: ResultKey, len: u64) -> Option<Vec<u8>> {
        let mut r = c.get(&k, len)?;
        let mut all = Vec::new();
        let mut buf = Vec::new();
        while r.remaining() > 0 {
            let n = r.remaining().min(4) as usize;
            r.read_next(n, &mut buf).unwrap();
            all.extend_from_slice(&buf);
        }
        r.verify().then_some(all)
    }

    #[test]
    fn a_large_entry_written_in_odd_pieces_reads_back() {
        // Pieces of odd sizes cross the 1 MiB direct-write stage and its 4 KiB blocks at
        // unaligned places (O_DIRECT is in use where the temporary folder's file system takes
        // it; a misplaced direct write fails with EINVAL).
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 30).unwrap();
        let payload: Vec<u8> = (0..(3 << 20) + 12345u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut w = c.put(key(7), payload.len() as u64).unwrap();
        for piece in payload.chunks(77_777) {
            w.append(piece).unwrap();
        }
        w.commit().unwrap();
        let size = std::fs::metadata(c.path(&key(7))).unwrap().len();
        assert_eq!(size, entry::PAYLOAD_AT + payload.len() as u64);
        let mut r = c.get(&key(7), payload.len() as u64).unwrap();
        let mut all = Vec::new();
        let mut buf = Vec::new();
        while r.remaining() > 0 {
            let n = r.remaining().min(1 << 20) as usize;
            r.read_next(n, &mut buf).unwrap();
            all.extend_from_slice(&buf);
        }
        assert!(r.verify());
        assert!(all == payload, "the payload reads back unchanged");
    }

    #[test]
    fn an_entry_reads_back_and_only_under_its_key_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 20).unwrap();
        write(&c, key(1), b"hello, cache");
        assert_eq!(read(&c, key(1), 12).as_deref(), Some(&b"hello, cache"[..]));
        assert!(c.get(&key(2), 12).is_none(), "another key");
        assert!(c.get(&key(1), 11).is_none(), "another size");
        // a file copied under another key's name is not that key's entry
        std::fs::copy(c.path(&key(1)), c.path(&key(3))).unwrap();
        assert!(c.get(&key(3), 12).is_none());
    }

    #[test]
    fn a_damaged_payload_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 20).unwrap();
        write(&c, key(1), b"hello, cache");
        let p = c.path(&key(1));
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(c.probably_has(&key(1), 12), "the header is intact");
        assert_eq!(read(&c, key(1), 12), None, "the payload is not");
    }

    #[test]
    fn an_uncommitted_entry_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 20).unwrap();
        let mut w = c.put(key(1), 4).unwrap();
        w.append(b"ab").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut w = c.put(key(1), 4).unwrap();
        w.append(b"ab").unwrap();
        assert!(w.commit().is_err(), "a short entry is refused");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn trim_drops_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let per = entry::PAYLOAD_AT + 100;
        let c = Cache::open(dir.path(), 2 * per).unwrap();
        // Older than entry::RENEW_AFTER, so that a use renews them.
        let t0 = std::time::SystemTime::now() - 3 * entry::RENEW_AFTER;
        for b in 1..=3u8 {
            write(&c, key(b), &[b; 100]);
            let f = std::fs::File::options()
                .write(true)
                .open(c.path(&key(b)))
                .unwrap();
            f.set_modified(t0 + std::time::Duration::from_secs(b as u64 * 10))
                .unwrap();
        }
        // reading entry 1 makes it the most recently used
        assert!(read(&c, key(1), 100).is_some());
        assert_eq!(c.trim().unwrap(), per);
        assert!(c.probably_has(&key(1), 100));
        assert!(!c.probably_has(&key(2), 100), "the oldest is dropped");
        assert!(c.probably_has(&key(3), 100));
    }

    #[test]
    fn a_recently_used_entry_is_not_touched_again() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 20).unwrap();
        write(&c, key(1), &[1; 100]);
        let recent = std::time::SystemTime::now() - entry::RENEW_AFTER / 2;
        let f = std::fs::File::options()
            .write(true)
            .open(c.path(&key(1)))
            .unwrap();
        f.set_modified(recent).unwrap();
        assert!(read(&c, key(1), 100).is_some());
        let m = std::fs::metadata(c.path(&key(1)))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(m, recent);
    }
}
