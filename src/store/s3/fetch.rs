//! Reading an object forward with ranged GETs, several blocks ahead of the reader and in
//! parallel, so that the network round trips overlap decoding. Memory is bounded by the blocks
//! covering the current read plus [`AHEAD`] blocks; a read that jumps elsewhere drops them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use object_store::{GetOptions, GetRange, ObjectStore};

use super::Bucket;

/// Bytes per ranged GET.
pub const BLOCK: u64 = 4 << 20;
/// Blocks requested ahead of the last read.
pub const AHEAD: usize = 3;
/// Objects up to this size are read in one request.
const WHOLE: u64 = 2 * BLOCK;

enum Block {
    Pending(tokio::task::JoinHandle<object_store::Result<Bytes>>),
    Ready(Bytes),
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
}

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
        Ok(Block::Pending(super::spawn(async move {
            s3.get_opts(&path, opts).await?.bytes().await
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
        // Keep only blocks from the one holding `start` on; a jump backwards or past what was
        // requested starts over there.
        while let Some((s, _)) = st.blocks.get(1) {
            if *s <= start {
                st.blocks.pop_front();
            } else {
                break;
            }
        }
        let covered = st.blocks.front().is_some_and(|(s, _)| *s <= start) && start < st.next;
        if !covered {
            st.blocks.clear();
            st.next = start;
        }
        let block = if self.size <= WHOLE { self.size } else { BLOCK };
        let until = end.saturating_add(AHEAD as u64 * block).min(self.size);
        while st.next < until {
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

    /// Bytes `start..end` of the object.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(end.saturating_sub(start) as usize);
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
        if let Ok(mut st) = self.state.lock() {
            for (_, b) in st.blocks.drain(..) {
                if let Block::Pending(h) = b {
                    h.abort();
                }
            }
            st.next = 0;
        }
    }
}

impl Drop for RemoteBytes {
    fn drop(&mut self) {
        self.reset();
    }
}
