//! One cache entry: a tensor's output bytes behind a small header.
//!
//! ```text
//! magic "GMATQC02" | result key (32) | payload length u64 LE | BLAKE3 of the payload (32)
//! | zeros up to byte 4096 | payload
//! ```
//! The key in the header guards against a file landing under the wrong name; the payload hash is
//! checked while the bytes are copied out ([`EntryReader`]), so a damaged entry is noticed before
//! the export finishes and the tensor is quantized again instead. Entries are written under a
//! unique temporary name and renamed into place ([`EntryWriter`]), so a reader never sees half
//! of one, and two exports writing the same entry at once both leave a complete file.
//!
//! The payload starts on a 4 KiB boundary so that it can be written with `O_DIRECT`, straight
//! from the export's buffer to the disk: an entry is read back only by a later export, so
//! passing it through the page cache would only cost the export that writes it. On the bench
//! machine (a VM whose freed memory is costly to touch again) the buffered writes of a 300 MB
//! Q4_K_M profile's entries took 0.5-1 s of CPU away from the quantizers; direct writes cost
//! 0.03 s. Where the file system refuses `O_DIRECT` (tmpfs), entries are written as usual.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use super::key::ResultKey;

pub const MAGIC: &[u8; 8] = b"GMATQC02";
/// Bytes of the header's fields.
pub const HEADER_BYTES: usize = 8 + 32 + 8 + 32;
/// Where the payload starts: the header padded to [`ALIGN`].
pub const PAYLOAD_AT: u64 = ALIGN as u64;
/// The alignment of offsets, lengths and memory that `O_DIRECT` asks for (the largest logical
/// block size of common disks).
const ALIGN: usize = 4096;
/// Payload bytes gathered before each direct write.
const STAGE_BYTES: usize = 1 << 20;

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
    /// Hash large reads on rayon's pool (when nothing else needs it).
    parallel: bool,
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
        if on_disk != PAYLOAD_AT + len {
            return None;
        }
        file.seek(SeekFrom::Start(PAYLOAD_AT)).ok()?;
        Some(EntryReader {
            file,
            path: path.to_path_buf(),
            expect_hash: h[48..80].try_into().ok()?,
            remaining: len,
            hasher: blake3::Hasher::new(),
            parallel: false,
        })
    }

    /// Hashes large reads on all cores: for a copy that nothing else runs beside.
    pub fn hash_on_all_cores(&mut self, yes: bool) {
        self.parallel = yes;
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
        if self.parallel && n >= 1 << 20 {
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
    /// Payload bytes not written yet, in [`ALIGN`]-aligned memory.
    stage: AlignedBuffer,
    /// Payload bytes written to the file (a multiple of [`ALIGN`] until the last write).
    flushed: u64,
}

/// Makes temporary names unique within the process (the pid makes them unique across).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Opens a new file for writing, with `O_DIRECT` when the file system takes it.
fn create_direct(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create_new(true).write(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut direct = o.clone();
        direct.custom_flags(libc::O_DIRECT);
        match direct.open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            r => return r,
        }
    }
    o.open(path)
}

impl EntryWriter {
    pub fn create(dest: PathBuf, key: ResultKey, expect_len: u64) -> Result<EntryWriter> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dest.with_extension(format!("tmp.{}.{n}", std::process::id()));
        // The header is written last: until then the file cannot pass for an entry.
        let file = create_direct(&tmp)
            .with_context(|| format!("cannot create cache entry {}", tmp.display()))?;
        Ok(EntryWriter {
            file: Some(file),
            tmp,
            dest,
            key,
            expect_len,
            len: 0,
            hasher: blake3::Hasher::new(),
            stage: AlignedBuffer::new(
                STAGE_BYTES.min(expect_len.next_multiple_of(ALIGN as u64) as usize),
            ),
            flushed: 0,
        })
    }

    pub fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        if self.file.is_none() {
            bail!("cache entry {} is already closed", self.tmp.display());
        }
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            let n = self.stage.push(bytes);
            bytes = &bytes[n..];
            if self.stage.is_full() {
                self.flush_stage()?;
            }
        }
        Ok(())
    }

    /// Writes the staged bytes (zero-padded to [`ALIGN`]) at their place in the file.
    fn flush_stage(&mut self) -> Result<()> {
        let Some(f) = self.file.as_ref() else {
            bail!("cache entry {} is already closed", self.tmp.display());
        };
        f.write_all_at(self.stage.padded(), PAYLOAD_AT + self.flushed)
            .with_context(|| format!("cannot write cache entry {}", self.tmp.display()))?;
        self.flushed += self.stage.len() as u64;
        self.stage.clear();
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
        if self.stage.len() > 0 {
            self.flush_stage()?;
        }
        let hash = *self.hasher.finalize().as_bytes();
        let Some(file) = self.file.take() else {
            bail!("cache entry {} is already closed", self.tmp.display());
        };
        let mut header = [0u8; HEADER_BYTES];
        header[..8].copy_from_slice(MAGIC);
        header[8..40].copy_from_slice(&self.key.0);
        header[40..48].copy_from_slice(&self.len.to_le_bytes());
        header[48..80].copy_from_slice(&hash);
        self.stage.push(&header);
        let written = file
            .set_len(PAYLOAD_AT + self.len)
            .and_then(|()| file.write_all_at(self.stage.padded(), 0));
        if let Err(e) = written {
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

/// A buffer whose bytes start at an [`ALIGN`]-aligned address and whose capacity is a multiple
/// of it, as `O_DIRECT` writes need; filled from the start, written out zero-padded.
struct AlignedBuffer {
    memory: Vec<u8>,
    start: usize,
    capacity: usize,
    len: usize,
}

impl AlignedBuffer {
    /// Room for `capacity` bytes (rounded up to [`ALIGN`], at least one block).
    fn new(capacity: usize) -> AlignedBuffer {
        let capacity = capacity.next_multiple_of(ALIGN).max(ALIGN);
        let memory = vec![0u8; capacity + ALIGN];
        let start = memory.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuffer {
            memory,
            start,
            capacity,
            len: 0,
        }
    }

    /// Appends as much of `bytes` as fits; returns how much.
    fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.capacity - self.len);
        let at = self.start + self.len;
        self.memory[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// The bytes, zero-padded to a multiple of [`ALIGN`].
    fn padded(&mut self) -> &[u8] {
        let end = self.len.next_multiple_of(ALIGN);
        self.memory[self.start + self.len..self.start + end].fill(0);
        &self.memory[self.start..self.start + end]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
