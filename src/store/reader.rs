//! Reading a stored tensor's decoded bytes, whatever its encoding, in bounded windows.
//!
//! A raw tensor is served straight from its memory map. A chunked tensor is decoded on demand,
//! only the chunks covering the requested window, in parallel; moving the window forward drops
//! the chunks behind it, so memory is bounded by the window, not by the tensor. Deltas read the
//! same window of their base tensor (itself possibly a delta or a reference, in the base's own
//! base store), and references read the base tensor. Every chunk is hashed the first time it
//! is decoded in order; [`TensorReader::finish`] decodes whatever was not read and compares the
//! content hash with the manifest's.

use anyhow::{bail, Context, Result};

use super::buffer_pool::BufferPool;
use super::hash;
use super::tensor_file::{ByteSource, TensorFile, BATCH_CHUNKS};
use super::{Encoding, Store, TensorEntry};

/// Decoded bytes of one stored tensor. See the module documentation.
pub struct TensorReader<'s> {
    name: String,
    hash: String,
    len: usize,
    /// Whether [`TensorReader::finish`] checks the content hash.
    hashing: bool,
    kind: Kind<'s>,
}

enum Kind<'s> {
    Raw(Box<TensorFile>),
    Chunked(Box<Chunked<'s>>),
    Ref {
        inner: Box<TensorReader<'s>>,
        base_root: String,
    },
}

struct Chunked<'s> {
    file: TensorFile,
    /// For deltas: the base tensor's reader, and where it lives (to name it in errors).
    base: DeltaBase<'s>,
    buf: Vec<u8>,
    /// Chunks held in `buf`: `held.0..held.1`.
    held: (usize, usize),
    /// Read-ahead ([`TensorReader::with_window`]): chunks `ahead.1..ahead.2` decoded into
    /// `ahead_buf` at the offset they will have in a window starting at chunk `ahead.0` (whose
    /// first chunks, up to `ahead.1`, are still in `buf`).
    ahead_buf: Vec<u8>,
    ahead: Option<(usize, usize, usize)>,
    /// Chunks `0..hashed` have been fed to `hasher`.
    hashed: usize,
    /// Whether to hash at all (not for the base of a delta).
    hashing: bool,
    hasher: blake3::Hasher,
}

impl<'s> TensorReader<'s> {
    /// Opens `entry` of `store`. With `hashing` false, [`TensorReader::finish`] does not check
    /// the content hash (used for the base of a delta, whose result is checked instead).
    pub fn open(store: &'s Store, entry: &TensorEntry, hashing: bool) -> Result<Self> {
        let kind = match entry.encoding {
            Encoding::BaseRef => {
                let (base, b) = store.base_entry(entry)?;
                let inner = TensorReader::open(base, b, hashing).with_context(|| {
                    format!(
                        "tensor {} is read from the base store {}",
                        entry.name, base.location
                    )
                })?;
                if inner.len() as u64 != entry.raw_bytes {
                    bail!(
                        "tensor {}: its base tensor {} has another size",
                        entry.name,
                        b.name
                    );
                }
                Kind::Ref {
                    inner: Box::new(inner),
                    base_root: base.location.to_string(),
                }
            }
            Encoding::Raw | Encoding::Zstd | Encoding::XorZstd => {
                let file = store.open_tensor(entry)?;
                // A raw file in a bucket is fetched in chunks, like an encoded one.
                if file.is_raw() && file.is_mapped() {
                    return Ok(TensorReader {
                        name: entry.name.clone(),
                        hash: entry.hash.clone(),
                        len: entry.raw_bytes as usize,
                        hashing,
                        kind: Kind::Raw(Box::new(file)),
                    });
                }
                let base = if entry.encoding == Encoding::XorZstd {
                    let (bs, be) = store.base_entry(entry)?;
                    if be.raw_bytes != entry.raw_bytes {
                        bail!(
                            "tensor {} is a delta against base tensor {} of another size",
                            entry.name,
                            be.name
                        );
                    }
                    let r = TensorReader::open(bs, be, false).with_context(|| {
                        format!(
                            "tensor {} is a delta against tensor {} of the base store {}",
                            entry.name, be.name, bs.location
                        )
                    })?;
                    Some((r, bs, be))
                } else {
                    None
                };
                Kind::Chunked(Box::new(Chunked {
                    file,
                    base,
                    buf: Vec::new(),
                    held: (0, 0),
                    ahead_buf: Vec::new(),
                    ahead: None,
                    hashed: 0,
                    hashing,
                    hasher: blake3::Hasher::new(),
                }))
            }
        };
        Ok(TensorReader {
            name: entry.name.clone(),
            hash: entry.hash.clone(),
            len: entry.raw_bytes as usize,
            hashing,
            kind,
        })
    }

    /// Decoded size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tensor has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole tensor without decoding, when it is stored raw (in this store or, for a
    /// reference, in the base).
    pub fn as_slice(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::Raw(f) => Some(f.bytes()),
            Kind::Ref { inner, .. } => inner.as_slice(),
            Kind::Chunked(_) => None,
        }
    }

    /// The decoded bytes `start..end`. Windows may go anywhere, but reading forward (each window
    /// starting at or after the previous one's start) decodes every chunk once.
    pub fn window(&mut self, start: usize, end: usize) -> Result<&[u8]> {
        if start > end || end > self.len {
            bail!(
                "tensor {}: range {start}..{end} is outside its {} bytes",
                self.name,
                self.len
            );
        }
        match &mut self.kind {
            Kind::Raw(f) => Ok(&f.bytes()[start..end]),
            Kind::Ref { inner, .. } => inner.window(start, end),
            Kind::Chunked(c) => {
                if start == end {
                    return Ok(&[]);
                }
                let cb = c.file.chunk_bytes();
                let (c0, c1) = (start / cb, end.div_ceil(cb));
                c.load(c0, c1, true)?;
                let off = c.held.0 * cb;
                Ok(&c.buf[start - off..end - off])
            }
        }
    }

    /// Puts the decoded bytes `start..end` in `out` (of that length). A reader that does not
    /// hash decodes a window on its chunk boundaries straight into `out`, holding no buffer of
    /// its own: that is how a delta reads its base, whose bytes the delta is then XORed onto.
    pub fn read_into(&mut self, start: usize, end: usize, out: &mut [u8]) -> Result<()> {
        if out.len() != end.saturating_sub(start) {
            bail!(
                "tensor {}: {} bytes asked into a buffer of {}",
                self.name,
                end.saturating_sub(start),
                out.len()
            );
        }
        let (len, hashing) = (self.len, self.hashing);
        match &mut self.kind {
            Kind::Ref { inner, .. } => return inner.read_into(start, end, out),
            Kind::Chunked(c) if !hashing && start < end && end <= len => {
                let cb = c.file.chunk_bytes();
                let (c0, c1) = (start / cb, end.div_ceil(cb));
                if c.file.chunk_span(c0, c1) == (start, end) {
                    return decode_into(&c.file, &mut c.base, c0, c1, out);
                }
            }
            _ => {}
        }
        // A raw tensor, a reader that hashes, a window off the chunk boundaries: a copy.
        out.copy_from_slice(self.window(start, end)?);
        Ok(())
    }

    /// Calls `f` with the decoded bytes `start..end` (like [`TensorReader::window`]) while, on
    /// the other cores, `side` runs and, for encoded tensors, the chunks of `next` (the window
    /// the caller will ask for next) are decoded and the new chunks hashed, so that decoding and
    /// hashing overlap the caller's work. `side` lets a caller prepare something else meanwhile
    /// (the next tensor's first window: [`TensorReader::preload`]).
    pub fn with_window<R: Send>(
        &mut self,
        start: usize,
        end: usize,
        next: Option<(usize, usize)>,
        side: impl FnOnce() + Send,
        f: impl FnOnce(&[u8]) -> R + Send,
    ) -> Result<R> {
        let len = self.len;
        let Kind::Chunked(c) = &mut self.kind else {
            if let Kind::Ref { inner, .. } = &mut self.kind {
                return inner.with_window(start, end, next, side, f);
            }
            let bytes = self.window(start, end)?;
            return Ok(rayon::join(|| f(bytes), side).0);
        };
        let next = next.filter(|&(s, e)| s < e && e <= len);
        if start > end || end > len || start == end {
            let bytes = self.window(start, end)?;
            return Ok(rayon::join(|| f(bytes), side).0);
        }
        let cb = c.file.chunk_bytes();
        c.load(start / cb, end.div_ceil(cb), false)?;
        let off = c.held.0 * cb;
        let Chunked {
            file,
            base,
            buf,
            held,
            ahead_buf,
            ahead,
            hashed,
            hashing,
            hasher,
        } = &mut **c;
        let bytes = &buf[start - off..end - off];
        // The chunks to hash now (they continue the hashed prefix), and to decode ahead: only
        // for a window that starts inside or right after this one and needs new chunks.
        let to_hash = (*hashing && held.0 <= *hashed && *hashed < held.1)
            .then(|| &buf[(*hashed - held.0) * cb..file.chunk_span(held.0, held.1).1 - off]);
        let read_ahead = next
            .map(|(s, e)| (s / cb, e.div_ceil(cb)))
            .map(|(n0, n1)| (n0, n0.max(held.1), n1))
            .filter(|&(n0, a0, n1)| held.0 <= n0 && n0 <= held.1 && a0 < n1);
        let (r, pre) = rayon::join(
            || f(bytes),
            || -> Result<()> {
                rayon::join(side, || {
                    if let Some(b) = to_hash {
                        hasher.update(b);
                    }
                });
                let Some((n0, a0, n1)) = read_ahead else {
                    return Ok(());
                };
                let (s, e) = file.chunk_span(a0, n1);
                let at = (a0 - n0) * cb;
                grow(ahead_buf, at + (e - s));
                decode_into(file, base, a0, n1, &mut ahead_buf[at..at + (e - s)])
            },
        );
        if to_hash.is_some() {
            *hashed = held.1;
        }
        // A failed read-ahead is dropped: the next load decodes again and reports the error.
        *ahead = match (pre, read_ahead) {
            (Ok(()), Some((n0, a0, n1))) => Some((n0, a0, n1)),
            _ => None,
        };
        Ok(r)
    }

    /// Decodes (and hashes) the window `start..end` now, so that a later
    /// [`TensorReader::with_window`] on it starts at once. Errors are left for that call to
    /// report. Raw tensors need nothing.
    pub fn preload(&mut self, start: usize, end: usize) {
        match &mut self.kind {
            Kind::Raw(_) => {}
            Kind::Ref { inner, .. } => inner.preload(start, end),
            Kind::Chunked(c) => {
                if start < end && end <= self.len {
                    let cb = c.file.chunk_bytes();
                    let _ = c.load(start / cb, end.div_ceil(cb), true);
                }
            }
        }
    }

    /// Gives back the resident pages of a raw tensor's byte range once consumed (encoded
    /// tensors hold only their window in memory anyway).
    pub fn release(&self, start: usize, end: usize) {
        match &self.kind {
            Kind::Raw(f) => f.release(start..end),
            Kind::Ref { inner, .. } => inner.release(start, end),
            Kind::Chunked(_) => {}
        }
    }

    /// Checks the content hash, decoding the chunks that were never read in order. Returns a
    /// clear error naming the tensor (and, for a delta whose base is at fault, the base store).
    pub fn finish(mut self) -> Result<()> {
        if !self.hashing {
            return Ok(());
        }
        // The chunks never read in order, a batch at a time with the next batch decoded (and,
        // from a bucket, fetched) while this one is hashed.
        if let Kind::Chunked(c) = &self.kind {
            let (cb, n, len) = (c.file.chunk_bytes(), c.file.chunk_count(), self.len);
            let span = |c0: usize| (c0 * cb, ((c0 + BATCH_CHUNKS).min(n) * cb).min(len));
            let mut c0 = c.hashed;
            while c0 < n {
                let (s, e) = span(c0);
                let c1 = (c0 + BATCH_CHUNKS).min(n);
                let next = (c1 < n).then(|| span(c1));
                self.with_window(s, e, next, || {}, |_| ())?;
                c0 = c1;
            }
        }
        let got = match self.kind {
            Kind::Raw(f) => f.raw_hash()?,
            Kind::Ref { inner, base_root } => {
                return inner.finish().with_context(|| {
                    format!(
                        "tensor {} is read from the base store {base_root}",
                        self.name
                    )
                })
            }
            Kind::Chunked(mut c) => {
                let n = c.file.chunk_count();
                while c.hashed < n {
                    let c0 = c.hashed;
                    c.load(c0, (c0 + BATCH_CHUNKS).min(n), true)?;
                }
                let got = format!("{}{}", hash::PREFIX, c.hasher.finalize().to_hex());
                if got != self.hash {
                    if let Some((_, bs, be)) = &c.base {
                        // A delta decodes wrong if its file or its base is corrupt: say which.
                        let base_check = TensorReader::open(bs, be, true).and_then(|r| r.finish());
                        if let Err(e) = base_check {
                            bail!(
                                "tensor {} is a delta against tensor {} of the base store {}, which is corrupt: {e:#}",
                                self.name,
                                be.name,
                                bs.location
                            );
                        }
                    }
                }
                got
            }
        };
        if got != self.hash {
            bail!(
                "tensor {} is corrupt: content hash {got} does not match the recorded {}",
                self.name,
                self.hash
            );
        }
        Ok(())
    }

    /// The whole decoded tensor, hash-checked (small tensors, tests).
    pub fn read_all(mut self) -> Result<Vec<u8>> {
        let v = self.window(0, self.len)?.to_vec();
        self.finish()?;
        Ok(v)
    }
}

impl ByteSource for TensorReader<'_> {
    fn range(&mut self, start: usize, end: usize) -> Result<&[u8]> {
        self.window(start, end)
    }
}

/// Decode buffers of finished readers: a few of window size (a whole 1-D tensor's are freed).
/// Their contents are kept: a window only grows its buffer, and decoding overwrites it.
static BUFFERS: BufferPool = BufferPool::new(8, 64 << 20);

/// The base of a delta: its reader, and where it lives (to name it in errors).
type DeltaBase<'s> = Option<(TensorReader<'s>, &'s Store, &'s TensorEntry)>;

/// Decodes chunks `c0..c1` of `file` into `out`: a delta onto its base's bytes, read into `out`
/// first, so that the base needs no buffer of its own.
fn decode_into(
    file: &TensorFile,
    base: &mut DeltaBase,
    c0: usize,
    c1: usize,
    out: &mut [u8],
) -> Result<()> {
    let Some((r, bs, be)) = base else {
        return file.decode_chunks(c0, c1, None, out);
    };
    let (s, e) = file.chunk_span(c0, c1);
    r.read_into(s, e, out).with_context(|| {
        format!(
            "reading tensor {} of the base store {}",
            be.name, bs.location
        )
    })?;
    file.decode_delta_onto(c0, c1, out)
}

/// Makes `buf` at least `len` bytes long, starting from a pooled buffer the first time: a
/// reader takes its buffers when it first decodes, so that the base of a delta, which decodes
/// into the delta's buffers ([`TensorReader::read_into`]), holds none.
fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.capacity() == 0 {
        *buf = BUFFERS.take();
    }
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

impl Drop for Chunked<'_> {
    fn drop(&mut self) {
        BUFFERS.give(std::mem::take(&mut self.buf));
        BUFFERS.give(std::mem::take(&mut self.ahead_buf));
    }
}

impl Chunked<'_> {
    /// Makes `buf` hold at least chunks `c0..c1`, keeping what overlaps. The buffer only grows
    /// (to the largest window asked for) and is never cleared: decoding overwrites it. With
    /// `hash` false the caller hashes the new chunks itself ([`TensorReader::with_window`]).
    fn load(&mut self, c0: usize, c1: usize, hash: bool) -> Result<()> {
        if self.held.0 <= c0 && c1 <= self.held.1 {
            return Ok(());
        }
        let cb = self.file.chunk_bytes();
        if let Some((n0, a0, a1)) = self.ahead.take() {
            if n0 == c0 && self.held.0 <= n0 && a0 <= self.held.1 && a0 < a1 {
                // Chunks n0..a0 are in `buf`: move them in front of the read-ahead, swap.
                let keep = (n0 - self.held.0) * cb..(a0 - self.held.0) * cb;
                let k = keep.len();
                self.ahead_buf[..k].copy_from_slice(&self.buf[keep]);
                std::mem::swap(&mut self.buf, &mut self.ahead_buf);
                self.held = (n0, a1);
                if hash {
                    self.hash_new();
                }
                if c1 <= a1 {
                    return Ok(());
                }
            }
        }
        let from = if self.held.0 <= c0 && c0 < self.held.1 {
            let (keep_s, keep_e) = ((c0 - self.held.0) * cb, self.held_bytes());
            self.buf.copy_within(keep_s..keep_e, 0);
            self.held.0 = c0;
            self.held.1
        } else {
            self.held = (c0, c0);
            c0
        };
        let (s, e) = self.file.chunk_span(from, c1);
        let old = self.held_bytes();
        grow(&mut self.buf, old + (e - s));
        let Chunked {
            file, base, buf, ..
        } = self;
        decode_into(file, base, from, c1, &mut buf[old..old + (e - s)])?;
        self.held.1 = c1;
        if hash {
            self.hash_new();
        }
        Ok(())
    }

    /// Feeds the held chunks not hashed yet to the hasher, if they continue the hashed prefix.
    fn hash_new(&mut self) {
        if self.hashing && self.held.0 <= self.hashed && self.hashed < self.held.1 {
            let at = (self.hashed - self.held.0) * self.file.chunk_bytes();
            self.hasher.update_rayon(&self.buf[at..self.held_bytes()]);
            self.hashed = self.held.1;
        }
    }

    /// Bytes of `buf` holding decoded chunks.
    fn held_bytes(&self) -> usize {
        let (s, e) = self.file.chunk_span(self.held.0, self.held.1);
        e - s
    }
}
