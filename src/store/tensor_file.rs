//! One stored tensor: `tensors/<uuid>.gmat`.
//!
//! Layout: `b"GMAT"`, u32 format version, u32 header length, a JSON header describing the
//! tensor (so a file is meaningful on its own), zero padding to a 64-byte boundary, then the
//! payload. Files are written to a temporary name and renamed, so a file with the final name is
//! always complete.
//!
//! Payloads by encoding:
//! * `raw`: the tensor's bytes as they are.
//! * `zstd`: the chunk index — one little-endian u64 per chunk, the end offset of the chunk's
//!   frame counted from the end of the index — then one zstd frame per chunk of `chunk_bytes`
//!   decoded bytes (the last may be shorter), coded as described in [`super::codec`].
//! * `xor_zstd`: like `zstd`, but the frames code the XOR of the tensor's bytes with those of the
//!   base tensor named in the header (`base`: its uuid and content hash).

use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::codec::{self, Planes, Xor, CHUNK_BYTES, MAX_CHUNK_BYTES};
use super::commit::{Commit, CommitNow};
use super::hash;
use crate::source::Dtype;

const MAGIC: &[u8; 4] = b"GMAT";
const VERSION: u32 = 1;
const ALIGN: usize = 64;
/// Far more than any real header; bounds what a corrupt length can make us read.
const MAX_HEADER: usize = 1 << 20;
/// Chunks encoded or decoded at once: bounds the memory of one tensor in flight.
pub const BATCH_CHUNKS: usize = 16;

/// How a tensor's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The source bytes as they are.
    Raw,
    /// Byte planes + zstd, in independent chunks.
    Zstd,
    /// The XOR of the bytes with a base tensor's, then byte planes + zstd.
    XorZstd,
    /// No file of its own: the content is a base store's tensor (manifest only).
    BaseRef,
}

impl Encoding {
    /// The name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Zstd => "zstd",
            Encoding::XorZstd => "xor_zstd",
            Encoding::BaseRef => "base_ref",
        }
    }

    /// Whether the payload is chunked (has a chunk index).
    pub fn is_chunked(self) -> bool {
        matches!(self, Encoding::Zstd | Encoding::XorZstd)
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor of the base store that a tensor depends on or shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseTensor {
    pub uuid: Uuid,
    /// Content hash of the base tensor's decoded bytes.
    pub hash: String,
}

/// The self-describing header of a tensor file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorHeader {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub encoding: Encoding,
    pub raw_bytes: u64,
    pub hash: String,
    /// Decoded bytes per chunk (chunked encodings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
    /// The base tensor an `xor_zstd` payload is a delta against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseTensor>,
}

impl TensorHeader {
    /// Checks that the fields agree with each other (not with any payload).
    pub fn validate(&self) -> Result<()> {
        hash::validate(&self.hash)?;
        let expect = self.dtype.bytes_for(&self.shape);
        if expect != Some(self.raw_bytes) {
            bail!(
                "header says {} bytes but shape {:?} of {} needs {:?}",
                self.raw_bytes,
                self.shape,
                self.dtype,
                expect
            );
        }
        match (self.encoding, self.chunk_bytes, &self.base) {
            (Encoding::Raw, None, None) => {}
            (Encoding::Zstd, Some(c), None) | (Encoding::XorZstd, Some(c), Some(_)) => {
                if c == 0 || c > MAX_CHUNK_BYTES || !c.is_multiple_of(self.dtype.size() as u64) {
                    bail!(
                        "chunk size {c} is not a positive multiple of the {} element size up to {MAX_CHUNK_BYTES}",
                        self.dtype
                    );
                }
            }
            (Encoding::BaseRef, ..) => bail!("encoding base_ref has no tensor file"),
            (e, c, b) => bail!(
                "encoding {e} with chunk_bytes {c:?} and base {:?} is inconsistent",
                b.as_ref().map(|b| b.uuid)
            ),
        }
        if let Some(b) = &self.base {
            hash::validate(&b.hash).context("base tensor hash")?;
        }
        Ok(())
    }

    /// Number of chunks of a chunked payload.
    pub fn chunk_count(&self) -> usize {
        match self.chunk_bytes {
            Some(c) if c > 0 => self.raw_bytes.div_ceil(c) as usize,
            _ => 0,
        }
    }
}

fn header_bytes(header: &TensorHeader) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(header)?;
    let mut head = Vec::with_capacity(ALIGN + json.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(json.len() as u32).to_le_bytes());
    head.extend_from_slice(&json);
    head.resize(head.len().div_ceil(ALIGN) * ALIGN, 0);
    Ok(head)
}

/// Writes a raw tensor file atomically and returns its size on disk.
pub fn write_raw(path: &Path, header: &TensorHeader, payload: &[u8]) -> Result<u64> {
    write_raw_releasing(path, header, payload, |_| {}, &CommitNow)
}

/// [`write_raw`], calling `written` with each payload range once it is on its way to disk (so a
/// memory-mapped source can give its pages back), and `commit` to make the file durable and
/// rename it into place.
pub fn write_raw_releasing(
    path: &Path,
    header: &TensorHeader,
    payload: &[u8],
    written: impl Fn(Range<usize>),
    commit: &dyn Commit,
) -> Result<u64> {
    let head = header_bytes(header)?;
    let (mut f, tmp) = crate::fsio::create_temp(path)?;
    let mut write = || -> Result<()> {
        f.write_all(&head)?;
        let mut pos = 0;
        while pos < payload.len() {
            let end = (pos + crate::mapped::CHUNK).min(payload.len());
            f.write_all(&payload[pos..end])?;
            written(pos..end);
            pos = end;
        }
        Ok(())
    };
    let done = write().with_context(|| format!("cannot write {}", tmp.display()));
    if let Err(e) = done {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    commit.commit(f, tmp, path.to_path_buf())?;
    Ok((head.len() + payload.len()) as u64)
}

/// Something that hands out byte ranges of a tensor: the base of a delta.
pub trait ByteSource {
    /// Bytes `start..end`.
    fn range(&mut self, start: usize, end: usize) -> Result<&[u8]>;
}

impl ByteSource for &[u8] {
    fn range(&mut self, start: usize, end: usize) -> Result<&[u8]> {
        self.get(start..end)
            .with_context(|| format!("range {start}..{end} is outside the base tensor"))
    }
}

/// Writes a chunked (`zstd` or `xor_zstd`) tensor file atomically and returns its size on disk.
/// `src` is the tensor's bytes; `base` gives the base tensor's bytes (required for `xor_zstd`;
/// asked for increasing ranges). Chunks are encoded in parallel,
/// [`BATCH_CHUNKS`] at a time, so memory stays bounded whatever the tensor's size; `written` is
/// called with each range of `src` once it is encoded (so a memory-mapped source can give its
/// pages back); `commit` makes the file durable and renames it into place.
pub fn write_chunked(
    path: &Path,
    header: &TensorHeader,
    src: &[u8],
    base: Option<&mut dyn ByteSource>,
    written: &dyn Fn(Range<usize>),
    commit: &dyn Commit,
) -> Result<u64> {
    check_chunked(header, src, base.is_some())?;
    let n = header.chunk_count();
    let head = header_bytes(header)?;
    let (f, tmp) = crate::fsio::create_temp(path)?;
    let data_start = (head.len() + 8 * n) as u64;
    let write = || -> Result<u64> {
        f.write_all_at(&head, 0)?;
        let mut at = 0u64;
        let ends = encode_frames(header, src, base, written, &mut |fr| {
            f.write_all_at(fr, data_start + at)?;
            at += fr.len() as u64;
            Ok(())
        })?;
        f.write_all_at(&index_bytes(&ends), head.len() as u64)?;
        Ok(data_start + at)
    };
    let result = write().with_context(|| format!("cannot write {}", tmp.display()));
    let size = result.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    commit.commit(f, tmp, path.to_path_buf())?;
    Ok(size)
}

/// [`write_chunked`] into an object of a bucket, streamed as it is encoded
/// ([`crate::store::s3::upload`]). Returns the object's size.
pub fn upload_chunked(
    upload: crate::store::s3::upload::Upload,
    header: &TensorHeader,
    src: &[u8],
    base: Option<&mut dyn ByteSource>,
    written: &dyn Fn(Range<usize>),
) -> Result<u64> {
    check_chunked(header, src, base.is_some())?;
    let mut upload = upload;
    let ends = encode_frames(header, src, base, written, &mut |fr| upload.write(fr))?;
    let mut prefix = header_bytes(header)?;
    prefix.extend_from_slice(&index_bytes(&ends));
    upload.finish(&prefix)
}

/// [`write_raw_releasing`] into an object of a bucket, streamed. Returns the object's size.
pub fn upload_raw(
    upload: crate::store::s3::upload::Upload,
    header: &TensorHeader,
    payload: &[u8],
    written: &dyn Fn(Range<usize>),
) -> Result<u64> {
    let mut upload = upload;
    let mut pos = 0;
    while pos < payload.len() {
        let end = (pos + crate::mapped::CHUNK).min(payload.len());
        upload.write(&payload[pos..end])?;
        written(pos..end);
        pos = end;
    }
    upload.finish(&header_bytes(header)?)
}

fn check_chunked(header: &TensorHeader, src: &[u8], has_base: bool) -> Result<()> {
    header.validate()?;
    if !header.encoding.is_chunked() || src.len() as u64 != header.raw_bytes {
        bail!("write_chunked: header does not describe a chunked payload of this size");
    }
    if (header.encoding == Encoding::XorZstd) != has_base {
        bail!("write_chunked: a base is needed for xor_zstd and only for it");
    }
    Ok(())
}

fn index_bytes(ends: &[u64]) -> Vec<u8> {
    ends.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// Encodes `src` chunk by chunk ([`BATCH_CHUNKS`] in parallel), handing each frame in order to
/// `emit`; returns the frames' end offsets (the chunk index).
fn encode_frames(
    header: &TensorHeader,
    src: &[u8],
    mut base: Option<&mut dyn ByteSource>,
    written: &dyn Fn(Range<usize>),
    emit: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Vec<u64>> {
    let cb = header.chunk_bytes.unwrap_or(CHUNK_BYTES as u64) as usize;
    let n = header.chunk_count();
    let planes = Planes::for_dtype(header.dtype);
    let mut ends = Vec::with_capacity(n);
    let mut at = 0u64;
    let mut c0 = 0;
    while c0 < n {
        let c1 = (c0 + BATCH_CHUNKS).min(n);
        let (s, e) = (c0 * cb, (c1 * cb).min(src.len()));
        let b = match base.as_mut() {
            Some(f) => Some(f.range(s, e)?),
            None => None,
        };
        let frames: Vec<Vec<u8>> = (c0..c1)
            .into_par_iter()
            .map(|c| {
                let (cs, ce) = (c * cb, ((c + 1) * cb).min(src.len()));
                codec::encode_chunk(&src[cs..ce], b.map(|b| &b[cs - s..ce - s]), planes)
            })
            .collect::<Result<_>>()?;
        for fr in frames {
            emit(&fr)?;
            at += fr.len() as u64;
            ends.push(at);
        }
        written(s..e);
        c0 = c1;
    }
    Ok(ends)
}

/// Where a tensor file's bytes are.
enum Backing {
    /// A local file, memory-mapped.
    Mapped(Mmap),
    /// An object in a bucket, read by ranges as needed.
    Remote(crate::store::s3::fetch::RemoteBytes),
}

/// An opened tensor file: validated header, chunk index and a view of the payload.
pub struct TensorFile {
    pub header: TensorHeader,
    bytes: Backing,
    size: usize,
    payload_start: usize,
    /// Chunked payloads: where the frames start, and each frame's end (relative to that). A
    /// raw payload in a bucket is read in chunks of [`CHUNK_BYTES`] too: then these are the
    /// chunks' ends in the payload.
    data_start: usize,
    ends: Vec<u64>,
    /// The chunk size of a raw payload read in chunks (remote).
    raw_chunks: Option<usize>,
}

impl TensorFile {
    /// Opens and validates a tensor file (structure only; see [`TensorFile::verify`]).
    pub fn open(path: &Path) -> Result<TensorFile> {
        let f = crate::fsio::open_input(path).context("cannot open the tensor file")?;
        // SAFETY: read-only map; tensor files are never modified after the rename.
        let map =
            unsafe { Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
        let (header, payload_start) = parse_header(&map)
            .with_context(|| format!("{} is not a valid gmat tensor file", path.display()))?;
        let payload = map.len() - payload_start;
        let mut data_start = payload_start;
        let mut ends = Vec::new();
        match header.encoding {
            Encoding::Raw if payload as u64 != header.raw_bytes => bail!(
                "{}: payload is {payload} bytes but the header says {} (truncated file?)",
                path.display(),
                header.raw_bytes
            ),
            Encoding::Zstd | Encoding::XorZstd => {
                ends = parse_index(&map[payload_start..], header.chunk_count())
                    .with_context(|| format!("{}: corrupt chunk index", path.display()))?;
                data_start = payload_start + 8 * ends.len();
            }
            _ => {}
        }
        Ok(TensorFile {
            header,
            size: map.len(),
            bytes: Backing::Mapped(map),
            payload_start,
            data_start,
            ends,
            raw_chunks: None,
        })
    }

    /// Opens and validates a tensor file stored as the object `src` (its header and chunk index
    /// are read now, the frames when decoded).
    pub fn open_remote(src: crate::store::s3::fetch::RemoteBytes) -> Result<TensorFile> {
        let url = src.url();
        let size = src.len() as usize;
        let bad = || format!("{url} is not a valid gmat tensor file");
        let fixed = src.read(0, 12.min(src.len())).with_context(bad)?;
        if fixed.len() < 12 {
            bail!(
                "{url} is not a valid gmat tensor file: {} bytes",
                fixed.len()
            );
        }
        let len = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]) as usize;
        if len > MAX_HEADER {
            bail!("{}: header length {len} is too large", bad());
        }
        let head_end = ((12 + len).div_ceil(ALIGN) * ALIGN).min(size);
        let head = src.read(0, head_end as u64).with_context(bad)?;
        let (header, payload_start) = parse_header(&head).with_context(bad)?;
        let payload = size - payload_start;
        let (data_start, ends, raw_chunks) = match header.encoding {
            Encoding::Raw => {
                if payload as u64 != header.raw_bytes {
                    bail!(
                        "{url}: payload is {payload} bytes but the header says {} (truncated object?)",
                        header.raw_bytes
                    );
                }
                let cb = CHUNK_BYTES;
                let ends = (1..=payload.div_ceil(cb))
                    .map(|i| (i * cb).min(payload) as u64)
                    .collect();
                (payload_start, ends, Some(cb))
            }
            Encoding::Zstd | Encoding::XorZstd => {
                let n = header.chunk_count();
                let index_end = payload_start.saturating_add(n.saturating_mul(8));
                if index_end > size {
                    bail!(
                        "{url}: corrupt chunk index: {n} chunks need an index of {} bytes but the payload has {payload} (truncated object?)",
                        n * 8
                    );
                }
                let index = src
                    .read(payload_start as u64, index_end as u64)
                    .with_context(bad)?;
                let ends = parse_index_of(&index, n, payload)
                    .with_context(|| format!("{url}: corrupt chunk index"))?;
                (index_end, ends, None)
            }
            e => bail!("{}: encoding {e} has no file", bad()),
        };
        Ok(TensorFile {
            header,
            size,
            bytes: Backing::Remote(src),
            payload_start,
            data_start,
            ends,
            raw_chunks,
        })
    }

    /// Whether the payload is the decoded bytes themselves.
    pub fn is_raw(&self) -> bool {
        self.header.encoding == Encoding::Raw
    }

    /// Whether the bytes are mapped from a local file (else read from a bucket on demand).
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Backing::Mapped(_))
    }

    fn map(&self) -> &[u8] {
        match &self.bytes {
            Backing::Mapped(m) => &m[..],
            Backing::Remote(_) => &[],
        }
    }

    /// The decoded tensor bytes of a mapped `raw` file, straight from the map.
    ///
    /// # Panics
    /// If the file is encoded or remote (check [`TensorFile::is_raw`] and
    /// [`TensorFile::is_mapped`]; read others with [`super::Store::reader`]).
    pub fn bytes(&self) -> &[u8] {
        assert!(
            self.is_raw() && self.is_mapped(),
            "TensorFile::bytes on a {} tensor file",
            self.header.encoding
        );
        &self.map()[self.payload_start..]
    }

    /// Gives back the resident pages of a raw payload's byte range once it has been consumed.
    pub fn release(&self, range: Range<usize>) {
        if let (true, Backing::Mapped(m)) = (self.is_raw(), &self.bytes) {
            crate::mapped::release(
                m,
                self.payload_start + range.start..self.payload_start + range.end,
            );
        }
    }

    /// Content hash of a raw payload, releasing pages as it goes.
    pub fn raw_hash(&self) -> Result<String> {
        match &self.bytes {
            Backing::Mapped(m) => Ok(hash::format(crate::mapped::hash_releasing(
                m,
                self.payload_start..m.len(),
            ))),
            Backing::Remote(_) => self.chunked_hash(),
        }
    }

    /// Size of the file on disk (or of the object).
    pub fn file_bytes(&self) -> u64 {
        self.size as u64
    }

    /// Decoded bytes per chunk (the whole tensor for mapped raw files).
    pub fn chunk_bytes(&self) -> usize {
        if let Some(c) = self.raw_chunks {
            return c;
        }
        match self.header.chunk_bytes {
            Some(c) => c as usize,
            None => self.header.raw_bytes as usize,
        }
    }

    /// Number of chunks of a chunked payload.
    pub fn chunk_count(&self) -> usize {
        self.ends.len()
    }

    /// The decoded byte range of chunks `c0..c1`.
    pub fn chunk_span(&self, c0: usize, c1: usize) -> (usize, usize) {
        let cb = self.chunk_bytes();
        let len = self.header.raw_bytes as usize;
        ((c0 * cb).min(len), (c1 * cb).min(len))
    }

    /// Where chunk `c`'s frame starts, relative to the first frame.
    fn frame_start(&self, c: usize) -> usize {
        if c == 0 {
            0
        } else {
            self.ends[c - 1] as usize
        }
    }

    /// Decodes chunks `c0..c1` into `out` (their decoded length) in parallel. `base` is the base
    /// tensor's bytes over the same range, required for `xor_zstd` files.
    pub fn decode_chunks(
        &self,
        c0: usize,
        c1: usize,
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<()> {
        self.decode_chunks_xor(c0, c1, Xor::with(base), out)
    }

    /// Decodes the chunks `c0..c1` of an `xor_zstd` file onto `out`, which holds the base
    /// tensor's bytes over the same range (so the base needs no buffer of its own).
    pub fn decode_delta_onto(&self, c0: usize, c1: usize, out: &mut [u8]) -> Result<()> {
        self.decode_chunks_xor(c0, c1, Xor::Onto, out)
    }

    fn decode_chunks_xor(&self, c0: usize, c1: usize, xor: Xor, out: &mut [u8]) -> Result<()> {
        let (s, e) = self.chunk_span(c0, c1);
        if c1 > self.chunk_count() || c0 > c1 || out.len() != e - s {
            bail!("chunk range {c0}..{c1} is outside the tensor");
        }
        let is_delta = self.header.encoding == Encoding::XorZstd;
        let has_base = !matches!(xor, Xor::None);
        if is_delta != has_base || matches!(xor, Xor::With(b) if b.len() != out.len()) {
            bail!(
                "tensor {}: decoding a {} file needs {} base bytes",
                self.header.name,
                self.header.encoding,
                if is_delta { "the" } else { "no" }
            );
        }
        match &self.bytes {
            Backing::Mapped(m) => self.decode_mapped(m, c0, c1, xor, out),
            Backing::Remote(r) => self.decode_streamed(r, c0, c1, xor, out),
        }
    }

    /// Decodes chunks `c0..c1` of a file in a bucket frame by frame as their bytes arrive (one
    /// GET for them all), so that the frames are never held together: a window of frames held
    /// whole while it decoded made a bucket export's memory 1.12x that of the same export from
    /// disk (bench/s3.sh). The frames decode one after another on this thread; the network,
    /// not decoding, sets the pace, and the other cores are busy with the caller's work.
    fn decode_streamed(
        &self,
        r: &crate::store::s3::fetch::RemoteBytes,
        c0: usize,
        c1: usize,
        xor: Xor,
        out: &mut [u8],
    ) -> Result<()> {
        let lens: Vec<usize> = (c0..c1)
            .map(|c| self.frame_start(c + 1) - self.frame_start(c))
            .collect();
        let planes = Planes::for_dtype(self.header.dtype);
        let cb = self.chunk_bytes();
        let mut dsts = out.chunks_mut(cb);
        let start = (self.data_start + self.frame_start(c0)) as u64;
        // Reading goes forward a window at a time: the next window is likely as many chunks.
        let c2 = (c1 + (c1 - c0)).min(self.chunk_count());
        let then = (c2 > c1).then(|| (self.data_start + self.frame_start(c2)) as u64);
        r.read_segments(start, &lens, then, |i, frame| {
            let c = c0 + i;
            let dst = dsts
                .next()
                .with_context(|| format!("tensor {}: chunk {c} has no room", self.header.name))?;
            if self.is_raw() {
                // A raw payload read in chunks: the "frames" are the bytes.
                if dst.len() != frame.len() {
                    bail!("tensor {}: chunk {c} has another length", self.header.name);
                }
                dst.copy_from_slice(frame);
                return Ok(());
            }
            self.decode_frame(c, frame, xor.part(i * cb..i * cb + dst.len()), planes, dst)
        })
    }

    /// Decodes chunks `c0..c1` of a local file from its map into `out` (checked by
    /// [`TensorFile::decode_chunks_xor`]) in parallel.
    fn decode_mapped(
        &self,
        map: &Mmap,
        c0: usize,
        c1: usize,
        xor: Xor,
        out: &mut [u8],
    ) -> Result<()> {
        let frames =
            &map[self.data_start + self.frame_start(c0)..self.data_start + self.frame_start(c1)];
        if self.is_raw() {
            // A raw payload read in chunks: the "frames" are the bytes.
            out.copy_from_slice(frames);
            return Ok(());
        }
        let planes = Planes::for_dtype(self.header.dtype);
        let cb = self.chunk_bytes();
        let first = self.frame_start(c0);
        out.par_chunks_mut(cb)
            .enumerate()
            .try_for_each(|(i, dst)| {
                let c = c0 + i;
                let x = xor.part(i * cb..i * cb + dst.len());
                let frame = &frames[self.frame_start(c) - first..self.frame_start(c + 1) - first];
                self.decode_frame(c, frame, x, planes, dst)
            })?;
        // Reading goes forward: hand the decoded frames' pages back, so that resident memory
        // does not grow with the tensor (a 70B model's embedding is 1.4 GB compressed).
        if c1 > c0 {
            let s = self.frame_start(c0);
            let e = self.ends[c1 - 1] as usize;
            crate::mapped::release(map, self.data_start + s..self.data_start + e);
        }
        Ok(())
    }

    /// Decodes chunk `c`'s compressed `frame` into `dst`, naming the tensor and chunk if it is
    /// corrupt: the one place both decode paths (map and bucket) decode a frame.
    fn decode_frame(
        &self,
        c: usize,
        frame: &[u8],
        xor: Xor,
        planes: Planes,
        dst: &mut [u8],
    ) -> Result<()> {
        codec::decode_chunk_xor(frame, xor, planes, dst)
            .with_context(|| format!("tensor {} is corrupt: chunk {c}", self.header.name))
    }

    /// The content hash of a payload decoded chunk by chunk (`zstd`, or remote `raw`).
    fn chunked_hash(&self) -> Result<String> {
        let mut h = blake3::Hasher::new();
        let mut buf = Vec::new();
        let mut c0 = 0;
        while c0 < self.chunk_count() {
            let c1 = (c0 + BATCH_CHUNKS).min(self.chunk_count());
            let (s, e) = self.chunk_span(c0, c1);
            buf.resize(e - s, 0);
            self.decode_chunks(c0, c1, None, &mut buf)?;
            h.update_rayon(&buf);
            c0 = c1;
        }
        Ok(format!("{}{}", hash::PREFIX, h.finalize().to_hex()))
    }

    /// Re-hashes the decoded bytes and compares with `expected`. `xor_zstd` files need their
    /// base: verify them through [`super::Store::reader`].
    pub fn verify(&self, expected: &str) -> Result<()> {
        let got = match self.header.encoding {
            Encoding::Raw => self.raw_hash()?,
            Encoding::Zstd => self.chunked_hash()?,
            e => bail!(
                "tensor {}: a {e} file is verified through its store",
                self.header.name
            ),
        };
        if got != expected || self.header.hash != expected {
            bail!(
                "tensor {} is corrupt: content hash {got} does not match the recorded {expected}",
                self.header.name
            );
        }
        Ok(())
    }
}

pub(crate) fn parse_header(buf: &[u8]) -> Result<(TensorHeader, usize)> {
    if buf.len() < 12 || &buf[..4] != MAGIC {
        bail!("bad magic");
    }
    let version = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if version != VERSION {
        bail!("unsupported tensor file version {version}");
    }
    let len = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    if len > MAX_HEADER || 12 + len > buf.len() {
        bail!("header length {len} runs past the end of the file");
    }
    let header: TensorHeader =
        serde_json::from_slice(&buf[12..12 + len]).context("bad header JSON")?;
    header.validate()?;
    let payload_start = (12 + len).div_ceil(ALIGN) * ALIGN;
    if payload_start > buf.len() {
        bail!("file ends inside the header padding");
    }
    Ok((header, payload_start))
}

/// Reads and checks a chunk index of `n` entries at the start of `payload`: frame ends must be
/// non-decreasing, every frame non-empty, and the last end must be the end of the file.
pub(crate) fn parse_index(payload: &[u8], n: usize) -> Result<Vec<u64>> {
    let index_len = n
        .checked_mul(8)
        .filter(|&l| l <= payload.len())
        .with_context(|| {
            format!(
                "{n} chunks need an index of {} bytes but the payload has {} (truncated file?)",
                n.saturating_mul(8),
                payload.len()
            )
        })?;
    parse_index_of(&payload[..index_len], n, payload.len())
}

/// [`parse_index`] from the index bytes alone (`n` × 8) and the payload's length, so that a
/// remote file's index is checked without holding its frames.
pub(crate) fn parse_index_of(index: &[u8], n: usize, payload_len: usize) -> Result<Vec<u64>> {
    if index.len() != n.saturating_mul(8) || index.len() > payload_len {
        bail!(
            "{n} chunks need an index of {} bytes but the payload has {payload_len} (truncated file?)",
            n.saturating_mul(8)
        );
    }
    let data_len = (payload_len - index.len()) as u64;
    let mut ends = Vec::with_capacity(n);
    let mut prev = 0u64;
    for (i, e) in index.chunks_exact(8).enumerate() {
        let end = u64::from_le_bytes(e.try_into().unwrap_or([0xFF; 8]));
        if end <= prev || end > data_len {
            bail!(
                "chunk {i} ends at {end}, after the previous end {prev} and within {data_len} bytes of frames expected (truncated or corrupt file?)"
            );
        }
        ends.push(end);
        prev = end;
    }
    if prev != data_len {
        bail!("the frames end at {prev} but the file holds {data_len} bytes of frames (truncated or corrupt file?)");
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload: &[u8], encoding: Encoding) -> TensorHeader {
        TensorHeader {
            name: "w".into(),
            dtype: Dtype::BF16,
            shape: vec![payload.len() as u64 / 2],
            encoding,
            raw_bytes: payload.len() as u64,
            hash: hash::content_hash(payload),
            chunk_bytes: encoding.is_chunked().then_some(4096),
            base: None,
        }
    }

    fn payloads() -> Vec<Vec<u8>> {
        let mut s = 0x1234_5678u32;
        let mut random = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as u8
        };
        vec![
            vec![],
            vec![1u8, 2],
            vec![0u8; 10_000],
            vec![0x3Fu8; 8192],
            (0..=255u8).cycle().take(10_000).collect::<Vec<_>>(),
            (0..20_002).map(|_| random()).collect(),
        ]
    }

    fn write(p: &Path, h: &TensorHeader, payload: &[u8]) -> u64 {
        match h.encoding {
            Encoding::Raw => write_raw(p, h, payload).unwrap(),
            _ => write_chunked(p, h, payload, None, &|_| {}, &CommitNow).unwrap(),
        }
    }

    fn decode_all(f: &TensorFile) -> Vec<u8> {
        let mut out = vec![0u8; f.header.raw_bytes as usize];
        f.decode_chunks(0, f.chunk_count(), None, &mut out).unwrap();
        out
    }

    #[test]
    fn write_read_verify_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gmat");
        for encoding in [Encoding::Raw, Encoding::Zstd] {
            for payload in payloads() {
                let h = header(&payload, encoding);
                let size = write(&p, &h, &payload);
                assert_eq!(size, std::fs::metadata(&p).unwrap().len());
                let f = TensorFile::open(&p).unwrap();
                assert_eq!(f.header, h);
                if encoding == Encoding::Raw {
                    assert_eq!(f.bytes(), &payload[..]);
                } else {
                    assert_eq!(f.chunk_count(), payload.len().div_ceil(4096));
                    assert_eq!(decode_all(&f), payload);
                }
                f.verify(&h.hash).unwrap();
            }
        }
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn xor_files_need_their_base() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gmat");
        let base: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let src: Vec<u8> = base
            .iter()
            .enumerate()
            .map(|(i, &b)| if i % 10 == 0 { b ^ 3 } else { b })
            .collect();
        let mut h = header(&src, Encoding::XorZstd);
        h.base = Some(BaseTensor {
            uuid: Uuid::nil(),
            hash: hash::content_hash(&base),
        });
        assert!(write_chunked(&p, &h, &src, None, &|_| {}, &CommitNow).is_err());
        struct Recorder<'a>(&'a [u8], Vec<(usize, usize)>);
        impl ByteSource for Recorder<'_> {
            fn range(&mut self, s: usize, e: usize) -> Result<&[u8]> {
                self.1.push((s, e));
                Ok(&self.0[s..e])
            }
        }
        let mut rec = Recorder(&base, Vec::new());
        write_chunked(&p, &h, &src, Some(&mut rec), &|_| {}, &CommitNow).unwrap();
        assert_eq!(rec.1, [(0, 10_000)]);
        let f = TensorFile::open(&p).unwrap();
        let mut out = vec![0u8; src.len()];
        assert!(f.decode_chunks(0, 3, None, &mut out).is_err());
        f.decode_chunks(0, 3, Some(&base), &mut out).unwrap();
        assert_eq!(out, src);
        // A partial range decodes alone.
        let mut mid = vec![0u8; 4096];
        f.decode_chunks(1, 2, Some(&base[4096..8192]), &mut mid)
            .unwrap();
        assert_eq!(mid, src[4096..8192]);
        // Decoded onto the base's bytes already in the buffer: the same result.
        let mut onto = base[4096..].to_vec();
        f.decode_delta_onto(1, 3, &mut onto).unwrap();
        assert_eq!(onto, src[4096..]);
        assert!(f.decode_delta_onto(0, 3, &mut [0u8; 4]).is_err());
        // A plain file has no base to decode onto.
        let q = d.path().join("plain.gmat");
        write_chunked(
            &q,
            &header(&src, Encoding::Zstd),
            &src,
            None,
            &|_| {},
            &CommitNow,
        )
        .unwrap();
        let plain = TensorFile::open(&q).unwrap();
        assert!(plain.decode_delta_onto(0, 3, &mut out).is_err());
        assert!(f
            .verify(&h.hash)
            .unwrap_err()
            .to_string()
            .contains("through its store"));
    }

    #[test]
    fn corruption_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gmat");
        let payload = vec![7u8; 64];
        let h = header(&payload, Encoding::Raw);
        write_raw(&p, &h, &payload).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let e = TensorFile::open(&p)
            .unwrap()
            .verify(&h.hash)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("corrupt"), "{e}");
        std::fs::write(&p, &bytes[..n - 3]).unwrap();
        assert!(TensorFile::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("truncated"));
        std::fs::write(&p, b"GMAT\x01\0\0\0\xff\xff\xff\x00").unwrap();
        assert!(TensorFile::open(&p).is_err());
    }

    fn open_err(p: &Path) -> String {
        format!("{:#}", TensorFile::open(p).err().expect("open fails"))
    }

    #[test]
    fn corrupt_chunked_files_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gmat");
        let payload: Vec<u8> = (0..20_000u32).map(|i| ((i * i) >> 3) as u8).collect();
        let h = header(&payload, Encoding::Zstd);
        write_chunked(&p, &h, &payload, None, &|_| {}, &CommitNow).unwrap();
        let good = std::fs::read(&p).unwrap();
        let f = TensorFile::open(&p).unwrap();
        let index_at = f.payload_start;
        let n = f.chunk_count();
        assert_eq!(n, 5);
        drop(f);
        // Truncated frames, truncated index.
        std::fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(
            open_err(&p).contains("corrupt chunk index"),
            "{}",
            open_err(&p)
        );
        std::fs::write(&p, &good[..index_at + 12]).unwrap();
        assert!(open_err(&p).contains("truncated"), "{}", open_err(&p));
        // Index entries out of order, or past the end.
        for (entry, value) in [(1, 0u64), (0, u64::MAX), (2, 1)] {
            let mut b = good.clone();
            let at = index_at + 8 * entry;
            b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            std::fs::write(&p, &b).unwrap();
            assert!(
                open_err(&p).contains("corrupt chunk index"),
                "{}",
                open_err(&p)
            );
        }
        // A garbled frame opens (the index is intact) but fails to decode or to verify.
        let mut b = good.clone();
        let last = b.len() - 40;
        b[last] ^= 0x55;
        std::fs::write(&p, &b).unwrap();
        let f = TensorFile::open(&p).unwrap();
        assert!(f.verify(&h.hash).is_err());
        // Header inconsistencies.
        for bad in [
            r#""chunk_bytes":4096"#.replace("4096", "0"),
            r#""chunk_bytes":4096"#.replace("4096", "4095"),
            r#""chunk_bytes":4096"#.replace("4096", "99999999999"),
        ] {
            let s =
                String::from_utf8_lossy(&good[12..index_at]).replace(r#""chunk_bytes":4096"#, &bad);
            let json = s.trim_end_matches('\0');
            let mut h2 = b"GMAT\x01\0\0\0".to_vec();
            h2.extend_from_slice(&(json.len() as u32).to_le_bytes());
            h2.extend_from_slice(json.as_bytes());
            h2.resize(index_at.max(h2.len().div_ceil(64) * 64), 0);
            h2.extend_from_slice(&good[index_at..]);
            std::fs::write(&p, &h2).unwrap();
            assert!(open_err(&p).contains("chunk size"), "{}", open_err(&p));
        }
    }
}
