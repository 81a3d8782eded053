//! One cache entry: a tensor's output bytes behind a small header.
//!
//! ```text
//! magic "GMATQC01" | result key (32) | payload length u64 LE | BLAKE3 of the payload (32) | payload
//! ```
//! The key in the header guards against a file landing under the wrong name; the payload hash is
//! checked while the bytes are copied out ([`EntryReader`]), so a damaged entry is noticed before
//! the export finishes and the tensor is quantized again instead. Entries are written under a
//! unique temporary name and renamed into place ([`EntryWriter`]), so a reader never sees half
//! of one, and two exports writing the same entry at once both leave a complete file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use super::key::ResultKey;

pub const MAGIC: &[u8; 8] = b"GMATQC01";
pub const HEADER_BYTES: usize = 8 + 32 + 8 + 32;

/// A used entry's modification time is renewed only when older than this: eviction needs the
/// order of use to the hour, not to the second, and each renewal is an inode update that the
/// export's final `fsync` of its folder must write to the file system's journal.
pub const RENEW_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Reads an entry's payload in order, hashing it; [`EntryReader::verify`] says whether it was
/// intact.
pub struct EntryReader {
    file: File,
    path: PathBuf,
    expect_hash: [u8; 32],
    remaining: u64,
    hasher: blake3::Hasher,
}

impl EntryReader {
    /// Opens the entry at `path` when its header matches `key` and `len` payload bytes; `None`
    /// when there is no usable entry (missing, short, another key or size).
    pub fn open(path: &Path, key: &ResultKey, len: u64) -> Option<EntryReader> {
        let mut file = File::open(path).ok()?;
        let mut h = [0u8; HEADER_BYTES];
        file.read_exact(&mut h).ok()?;
        let stored_len = u64::from_le_bytes(h[40..48].try_into().ok()?);
        if &h[..8] != MAGIC || h[8..40] != key.0 || stored_len != len {
            return None;
        }
        let on_disk = file.metadata().ok()?.len();
        if on_disk != HEADER_BYTES as u64 + len {
            return None;
        }
        Some(EntryReader {
            file,
            path: path.to_path_buf(),
            expect_hash: h[48..80].try_into().ok()?,
            remaining: len,
            hasher: blake3::Hasher::new(),
        })
    }

    /// Fills `buf` with the next `n` payload bytes.
    pub fn read_next(&mut self, n: usize, buf: &mut Vec<u8>) -> Result<()> {
        if n as u64 > self.remaining {
            bail!(
                "cache entry {} is shorter than expected",
                self.path.display()
            );
        }
        // Read into the buffer's spare room: no zero-filling of bytes about to be overwritten.
        buf.clear();
        buf.reserve_exact(n);
        let got = (&mut self.file)
            .take(n as u64)
            .read_to_end(buf)
            .with_context(|| format!("cannot read cache entry {}", self.path.display()))?;
        if got != n {
            bail!(
                "cache entry {} is shorter than its header says",
                self.path.display()
            );
        }
        // The copy of a cached export waits on this thread; the other cores are idle then.
        if n >= 1 << 20 {
            self.hasher.update_rayon(buf);
        } else {
            self.hasher.update(buf);
        }
        self.remaining -= n as u64;
        Ok(())
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether the payload read matched the recorded hash (and all of it was read). A good
    /// entry's modification time is renewed when older than [`RENEW_AFTER`]: eviction drops
    /// the least recently used first.
    pub fn verify(self) -> bool {
        let ok = self.remaining == 0 && *self.hasher.finalize().as_bytes() == self.expect_hash;
        if ok {
            let now = std::time::SystemTime::now();
            let stale = self
                .file
                .metadata()
                .and_then(|m| m.modified())
                .map_or(true, |t| {
                    now.duration_since(t).is_ok_and(|age| age > RENEW_AFTER)
                });
            if stale {
                let _ = self.file.set_modified(now);
            }
        }
        ok
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes an entry's payload in order under a temporary name; [`EntryWriter::commit`] writes the
/// header and renames it into place. Dropped without a commit, the temporary file is removed.
pub struct EntryWriter {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    key: ResultKey,
    expect_len: u64,
    len: u64,
    hasher: blake3::Hasher,
}

/// Makes temporary names unique within the process (the pid makes them unique across).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl EntryWriter {
    pub fn create(dest: PathBuf, key: ResultKey, expect_len: u64) -> Result<EntryWriter> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dest.with_extension(format!("tmp.{}.{n}", std::process::id()));
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&tmp)
            .with_context(|| format!("cannot create cache entry {}", tmp.display()))?;
        // The header is written last: until then the file cannot pass for an entry.
        file.write_all(&[0u8; HEADER_BYTES])
            .with_context(|| format!("cannot write cache entry {}", tmp.display()))?;
        Ok(EntryWriter {
            file: Some(file),
            tmp,
            dest,
            key,
            expect_len,
            len: 0,
            hasher: blake3::Hasher::new(),
        })
    }

    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(f) = self.file.as_mut() else {
            bail!("cache entry {} is already closed", self.tmp.display());
        };
        f.write_all(bytes)
            .with_context(|| format!("cannot write cache entry {}", self.tmp.display()))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Writes the header and moves the entry into place.
    pub fn commit(mut self) -> Result<()> {
        // Checked while the file is held: on an error, dropping removes the temporary file.
        if self.len != self.expect_len {
            bail!(
                "cache entry {}: {} bytes written, {} expected",
                self.tmp.display(),
                self.len,
                self.expect_len
            );
        }
        let Some(file) = self.file.take() else {
            bail!("cache entry {} is already closed", self.tmp.display());
        };
        let mut h = Vec::with_capacity(HEADER_BYTES);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&self.key.0);
        h.extend_from_slice(&self.len.to_le_bytes());
        h.extend_from_slice(self.hasher.finalize().as_bytes());
        if let Err(e) = file.write_all_at(&h, 0) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(anyhow::Error::new(e)
                .context(format!("cannot write cache entry {}", self.tmp.display())));
        }
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            anyhow::Error::new(e).context(format!(
                "cannot move cache entry {} into place",
                self.dest.display()
            ))
        })
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
