//! Reading an object by byte ranges.
//!
//! * A window of frames is streamed by one ranged GET and handed out frame by frame as it
//!   arrives ([`RemoteBytes::read_segments`]), so that a frame decodes while the next is on the
//!   way and only the frame being received is held. Reading ahead is the tensor reader's job:
//!   it decodes the next window while the current one is used
//!   ([`crate::store::reader::TensorReader::with_window`]), so the network overlaps the work
//!   without a second layer of buffers.
//! * Small reads (a file's header and chunk index) go through blocks of [`BLOCK`] bytes kept
//!   for the next small read, so that opening a tensor costs one round trip. A read that jumps
//!   elsewhere drops them. Any other read of at least [`DIRECT`] bytes is fetched straight into
//!   the caller's buffer by parallel ranged GETs of up to [`GET_PART`] bytes each.
//!
//! Responses are streamed into buffers the reading thread allocated (blocks come from a small
//! pool), never collected into fresh allocations on the I/O threads: memory freed on another
//! thread than the one that allocated it stays in that thread's malloc arena, and resident
//! memory grew far past what was in use (bench/s3.sh measured a bucket export at 2.4x the
//! peak memory of one from disk before, 1.1x after).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use object_store::{GetOptions, GetRange, ObjectStore};

use super::Bucket;
use crate::store::buffer_pool::BufferPool;

/// Bytes per ranged GET of a small read: a file's header and the chunk index of a tensor of up
/// to 8 GiB in one request. No block is requested ahead: frames are streamed
/// ([`RemoteBytes::read_segments`]), so small reads are a file's header and index, which the
/// first block holds (a block ahead was a wasted request per tensor).
pub const BLOCK: u64 = 64 << 10;
/// Reads of at least this many bytes are fetched straight into the caller's buffer.
pub const DIRECT: u64 = 1 << 20;
/// Bytes per ranged GET of a direct read (the parts run in parallel): a large header and index.
/// Frames are streamed instead, one GET per window ([`RemoteBytes::read_segments`]).
pub const GET_PART: u64 = 8 << 20;
/// Objects up to this size are read in one request.
const WHOLE: u64 = 2 * BLOCK;

/// Block and segment buffers kept for reuse: enough for the reads of a few readers at once, each
/// at most a window of frames.
static BUFFERS: BufferPool = BufferPool::new(12, 16 << 20);

/// An empty buffer for a block or a read, reused when one is free.
pub(crate) fn take_buffer() -> Vec<u8> {
    let mut b = BUFFERS.take();
    b.clear();
    b
}

/// Gives `buf` back for reuse.
pub(crate) fn give_back(buf: Vec<u8>) {
    BUFFERS.give(buf);
}

enum Block {
    Pending(tokio::task::JoinHandle<object_store::Result<Vec<u8>>>),
    Ready(Vec<u8>),
}

struct Ahead {
    /// Blocks in order, each `(start, block)`, covering `first..next` without gaps.
    blocks: VecDeque<(u64, Block)>,
    next: u64,
}

/// A remote object read by byte ranges; see the module documentation.
pub struct RemoteBytes {
    bucket: Arc<Bucket>,
    key: String,
    size: u64,
    state: Mutex<Ahead>,
    /// The GET of the window expected next ([`RemoteBytes::read_segments`]), and its range.
    opened: Mutex<Option<(Range<u64>, Opened)>>,
}

/// A GET started ahead: its response's headers, the body still to read.
type Opened = tokio::task::JoinHandle<object_store::Result<object_store::GetResult>>;

impl RemoteBytes {
    /// The object `key` of `size` bytes (the size the manifest records, or a listing's).
    pub fn new(bucket: Arc<Bucket>, key: String, size: u64) -> RemoteBytes {
        RemoteBytes {
            bucket,
            key,
            size,
            state: Mutex::new(Ahead {
                blocks: VecDeque::new(),
                next: 0,
            }),
            opened: Mutex::new(None),
        }
    }

    /// The object's size.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The object's URL, for messages.
    pub fn url(&self) -> String {
        self.bucket.url(&self.key)
    }

    fn request(&self, start: u64, end: u64) -> Result<Block> {
        let s3 = self.bucket.s3.clone();
        let path = self.bucket.path(&self.key)?;
        let opts = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        // The buffer is allocated here, on the reading thread, not on an I/O thread (see the
        // module documentation).
        let mut buf = take_buffer();
        buf.reserve_exact((end - start) as usize);
        Ok(Block::Pending(super::spawn(async move {
            let mut stream = s3.get_opts(&path, opts).await?.into_stream();
            while let Some(part) = stream.try_next().await? {
                buf.extend_from_slice(&part);
            }
            Ok(buf)
        })))
    }

    /// Bytes `start..end` of the object, appended to `out`.
    pub fn read_into(&self, start: u64, end: u64, out: &mut Vec<u8>) -> Result<()> {
        if start > end || end > self.size {
            anyhow::bail!(
                "{}: bytes {start}..{end} are outside its {} bytes (truncated object?)",
                self.url(),
                self.size
            );
        }
        if start == end {
            return Ok(());
        }
        let mut st = self
            .state
            .lock()
            .map_err(|_| anyhow!("the reader of {} is poisoned", self.url()))?;
        if end - start >= DIRECT {
            st.blocks.drain(..).for_each(recycle);
            st.next = 0;
            drop(st);
            return self.fetch_into(start, end, out);
        }
        // Keep only blocks from the one holding `start` on; a jump backwards or past what was
        // requested starts over there.
        while let Some((s, _)) = st.blocks.get(1) {
            if *s <= start {
                if let Some(b) = st.blocks.pop_front() {
                    recycle(b);
                }
            } else {
                break;
            }
        }
        let covered = st.blocks.front().is_some_and(|(s, _)| *s <= start) && start < st.next;
        if !covered {
            st.blocks.drain(..).for_each(recycle);
            st.next = start;
        }
        let block = if self.size <= WHOLE { self.size } else { BLOCK };
        while st.next < end {
            let s = st.next;
            let e = (s + block).min(self.size);
            let b = self.request(s, e)?;
            st.blocks.push_back((s, b));
            st.next = e;
        }
        let mut failed = None;
        for (s, b) in st.blocks.iter_mut() {
            let s = *s;
            if s >= end {
                break;
            }
            if let Block::Pending(h) = b {
                let got = super::block_on(h)
                    .map_err(|e| anyhow!("the read of {} stopped: {e}", self.url()))
                    .and_then(|r| r.with_context(|| format!("cannot read {}", self.url())));
                match got {
                    Ok(bytes) => *b = Block::Ready(bytes),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let Block::Ready(bytes) = b else {
                continue;
            };
            let e = s + bytes.len() as u64;
            if e <= start {
                continue;
            }
            let (from, to) = (start.max(s) - s, end.min(e) - s);
            out.extend_from_slice(&bytes[from as usize..to as usize]);
        }
        if let Some(e) = failed {
            // Nothing kept: a later read asks again.
            drop(st);
            self.reset();
            return Err(e);
        }
        Ok(())
    }

    /// Bytes `start..end` appended to `out`, fetched by parallel ranged GETs writing straight
    /// into it.
    fn fetch_into(&self, start: u64, end: u64, out: &mut Vec<u8>) -> Result<()> {
        let at = out.len();
        out.resize(at + (end - start) as usize, 0);
        let path = self.bucket.path(&self.key)?;
        let s3 = &self.bucket.s3;
        let parts = out[at..]
            .chunks_mut(GET_PART as usize)
            .enumerate()
            .map(|(i, dst)| {
                let s = start + i as u64 * GET_PART;
                let range = s..s + dst.len() as u64;
                let path = &path;
                async move {
                    let opts = GetOptions {
                        range: Some(GetRange::Bounded(range.clone())),
                        ..GetOptions::default()
                    };
                    let mut stream = s3.get_opts(path, opts).await?.into_stream();
                    let mut pos = 0usize;
                    while let Some(piece) = stream.try_next().await? {
                        let Some(to) = dst.get_mut(pos..pos + piece.len()) else {
                            return Ok(Err(range));
                        };
                        to.copy_from_slice(&piece);
                        pos += piece.len();
                    }
                    Ok::<_, object_store::Error>(if pos == dst.len() { Ok(()) } else { Err(range) })
                }
            });
        let got = super::block_on(futures::future::try_join_all(parts));
        let got = got.with_context(|| format!("cannot read {}", self.url()));
        let bad = got.map(|r| r.into_iter().find_map(|p| p.err()));
        match bad {
            Ok(None) => Ok(()),
            Ok(Some(range)) => {
                out.truncate(at);
                anyhow::bail!(
                    "{} answered bytes {range:?} with another length (changed or truncated object?)",
                    self.url()
                )
            }
            Err(e) => {
                out.truncate(at);
                Err(e)
            }
        }
    }

    /// Streams the bytes from `start` on in one ranged GET, cut into consecutive segments of
    /// `lens` bytes, and hands each to `each` (with its index) as soon as it has arrived: a
    /// window of frames decodes frame by frame while the rest of it is on the way, and only the
    /// segment being received is held, never the window ([`Segments`]).
    ///
    /// `then`: where the window expected next ends (it starts where this one ends). Its GET is
    /// sent now and its body left unread until that window is asked for: the server sends what
    /// the socket's buffers hold meanwhile — memory of the kernel, not of gmat — so the round
    /// trip and the server's first reads overlap this window's decoding. A request for another
    /// range drops it.
    pub fn read_segments(
        &self,
        start: u64,
        lens: &[usize],
        then: Option<u64>,
        mut each: impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let total = lens.iter().map(|&l| l as u64).sum::<u64>();
        let end = start.saturating_add(total);
        if end > self.size {
            anyhow::bail!(
                "{}: bytes {start}..{end} are outside its {} bytes (truncated object?)",
                self.url(),
                self.size
            );
        }
        let mut seg = Segments::new(lens);
        if total > 0 {
            let opened = match self.take_opened() {
                Some((r, h)) if r == (start..end) => h,
                other => {
                    if let Some((_, h)) = other {
                        h.abort();
                    }
                    self.open(start..end)?
                }
            };
            if let Some(next) = then.filter(|&e| e > end && e <= self.size) {
                let h = self.open(end..next)?;
                if let Ok(mut o) = self.opened.lock() {
                    *o = Some((end..next, h));
                }
            }
            let mut stream = super::block_on(opened)
                .map_err(|e| anyhow!("the read of {} stopped: {e}", self.url()))?
                .with_context(|| format!("cannot read {}", self.url()))?
                .into_stream();
            while let Some(piece) = super::block_on(stream.try_next())
                .with_context(|| format!("cannot read {}", self.url()))?
            {
                if !seg.push(&piece, &mut each)? {
                    anyhow::bail!(
                        "{} answered bytes {start}..{end} with more bytes (changed object?)",
                        self.url()
                    );
                }
            }
        }
        seg.finish(&mut each)?;
        if !seg.is_done() {
            anyhow::bail!(
                "{} answered bytes {start}..{end} with fewer bytes (changed or truncated object?)",
                self.url()
            );
        }
        Ok(())
    }

    /// Sends the GET of bytes `range` (on the S3 runtime: it runs while this thread works).
    fn open(&self, range: Range<u64>) -> Result<Opened> {
        let s3 = self.bucket.s3.clone();
        let path = self.bucket.path(&self.key)?;
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        Ok(super::spawn(async move { s3.get_opts(&path, opts).await }))
    }

    fn take_opened(&self) -> Option<(Range<u64>, Opened)> {
        self.opened.lock().ok().and_then(|mut o| o.take())
    }

    /// Bytes `start..end` of the object, in a pooled buffer ([`give_back`] it when done).
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<u8>> {
        let mut v = take_buffer();
        v.reserve_exact(end.saturating_sub(start) as usize);
        self.read_into(start, end, &mut v)?;
        if v.len() as u64 != end - start {
            anyhow::bail!(
                "{} ends early: {} of {} bytes at {start}",
                self.url(),
                v.len(),
                end - start
            );
        }
        Ok(v)
    }

    fn reset(&self) {
        if let Some((_, h)) = self.take_opened() {
            h.abort();
        }
        if let Ok(mut st) = self.state.lock() {
            st.blocks.drain(..).for_each(recycle);
            st.next = 0;
        }
    }
}

/// Cuts a stream of pieces of any size into segments of given lengths (see
/// [`RemoteBytes::read_segments`]). A segment that lies whole inside a piece is handed out from
/// it without a copy; one split across pieces is gathered in a pooled buffer first.
pub(crate) struct Segments<'l> {
    lens: &'l [usize],
    /// The segment being received.
    at: usize,
    partial: Vec<u8>,
}

impl<'l> Segments<'l> {
    pub(crate) fn new(lens: &'l [usize]) -> Segments<'l> {
        Segments {
            lens,
            at: 0,
            partial: Vec::new(),
        }
    }

    /// Takes in the next piece of the stream, handing out the segments it completes. False if
    /// the piece holds bytes past the last segment.
    pub(crate) fn push(
        &mut self,
        mut piece: &[u8],
        each: &mut impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<bool> {
        while !piece.is_empty() {
            self.finish(each)?;
            let Some(&len) = self.lens.get(self.at) else {
                return Ok(false);
            };
            let want = len - self.partial.len();
            if self.partial.is_empty() && piece.len() >= want {
                each(self.at, &piece[..want])?;
                self.at += 1;
            } else {
                if self.partial.capacity() == 0 {
                    self.partial = take_buffer();
                }
                // Room for the whole segment at once: growing by doubling would leave the
                // smaller blocks behind in the heap.
                self.partial.reserve_exact(len);
                self.partial
                    .extend_from_slice(&piece[..want.min(piece.len())]);
                if self.partial.len() == len {
                    each(self.at, &self.partial)?;
                    self.partial.clear();
                    self.at += 1;
                }
            }
            piece = &piece[want.min(piece.len())..];
        }
        Ok(true)
    }

    /// Hands out the empty segments that come next (they need no bytes).
    pub(crate) fn finish(
        &mut self,
        each: &mut impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        while self.partial.is_empty() && self.lens.get(self.at) == Some(&0) {
            each(self.at, &[])?;
            self.at += 1;
        }
        Ok(())
    }

    /// Whether every segment was handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.at == self.lens.len()
    }
}

impl Drop for Segments<'_> {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.partial));
    }
}

/// A block no longer needed: its buffer back to the pool, or its request stopped.
fn recycle((_, b): (u64, Block)) {
    match b {
        Block::Ready(buf) => give_back(buf),
        Block::Pending(h) => h.abort(),
    }
}

impl Drop for RemoteBytes {
    fn drop(&mut self) {
        self.reset();
    }
}
