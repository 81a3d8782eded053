//! Streaming a tensor file into an object as it is encoded.
//!
//! A tensor file starts with its header and chunk index, which are known only once every frame
//! is encoded. S3 multipart uploads take their parts in any order and join them by part
//! number, so the body (frames, or raw bytes) is uploaded as parts 2, 3, ... while it is made,
//! and part 1 (header, index and the body's first [`FIRST`] bytes, kept back so that part 1
//! meets S3's 5 MiB minimum) last. The object appears under its name, complete, only when the
//! upload is completed; an upload that fails or is dropped is aborted. A file smaller than
//! [`FIRST`] is one plain PUT. Memory: the held-back start plus a part being filled plus
//! [`IN_FLIGHT`] parts on the wire.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use object_store::multipart::PartId;
use object_store::{MultipartId, PutPayload};

use super::Bucket;

/// The body's bytes kept for part 1 (S3's minimum part size is 5 MiB).
pub const FIRST: usize = 6 << 20;
/// Bytes per further part.
pub const PART: usize = 8 << 20;
/// Parts uploading at once per object.
const IN_FLIGHT: usize = 2;

/// One object being uploaded; see the module documentation.
pub struct Upload {
    bucket: Arc<Bucket>,
    key: String,
    first: Vec<u8>,
    current: Vec<u8>,
    /// Once the body outgrows `first`: the multipart upload, and its parts 2.. (index 1..).
    multipart: Option<MultipartId>,
    parts: Vec<PartId>,
    pending: Vec<(usize, tokio::task::JoinHandle<object_store::Result<PartId>>)>,
    written: u64,
    done: bool,
}

impl Upload {
    pub fn new(bucket: Arc<Bucket>, key: String) -> Upload {
        Upload {
            bucket,
            key,
            first: Vec::new(),
            current: Vec::new(),
            multipart: None,
            parts: Vec::new(),
            pending: Vec::new(),
            written: 0,
            done: false,
        }
    }

    fn url(&self) -> String {
        self.bucket.url(&self.key)
    }

    /// Appends `bytes` to the body.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.written += bytes.len() as u64;
        if self.first.len() < FIRST {
            let n = (FIRST - self.first.len()).min(bytes.len());
            self.first.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        while !bytes.is_empty() {
            let n = (PART - self.current.len()).min(bytes.len());
            self.current.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.current.len() == PART {
                let part = std::mem::take(&mut self.current);
                self.send(part)?;
            }
        }
        Ok(())
    }

    /// Bytes of the body written so far.
    pub fn body_len(&self) -> u64 {
        self.written
    }

    fn send(&mut self, part: Vec<u8>) -> Result<()> {
        let path = self.bucket.path(&self.key)?;
        if self.multipart.is_none() {
            let s3 = self.bucket.s3.clone();
            let p = path.clone();
            let id = super::block_on(async move { s3.create_multipart(&p).await })
                .with_context(|| format!("cannot start uploading {}", self.url()))?;
            self.multipart = Some(id);
        }
        let Some(id) = self.multipart.clone() else {
            return Err(anyhow!("no multipart upload"));
        };
        // Part index 0 is the header part, sent last.
        let idx = 1 + self.parts.len() + self.pending.len();
        let s3 = self.bucket.s3.clone();
        let h =
            super::spawn(async move { s3.put_part(&path, &id, idx, PutPayload::from(part)).await });
        self.pending.push((idx, h));
        while self.pending.len() > IN_FLIGHT {
            self.wait_one()?;
        }
        Ok(())
    }

    fn wait_one(&mut self) -> Result<()> {
        let (idx, h) = self.pending.remove(0);
        let part = super::block_on(h)
            .map_err(|e| anyhow!("the upload of {} stopped: {e}", self.url()))?
            .with_context(|| format!("cannot upload part {} of {}", idx + 1, self.url()))?;
        debug_assert_eq!(idx, 1 + self.parts.len());
        self.parts.push(part);
        Ok(())
    }

    /// Completes the object as `prefix` followed by the body, and returns its size.
    pub fn finish(mut self, prefix: &[u8]) -> Result<u64> {
        let size = prefix.len() as u64 + self.written;
        let mut head = Vec::with_capacity(prefix.len() + self.first.len());
        head.extend_from_slice(prefix);
        head.extend_from_slice(&self.first);
        self.first = Vec::new();
        let Some(id) = self.multipart.clone() else {
            // No part went up yet: the whole file is in memory (under FIRST + PART), one PUT.
            head.append(&mut self.current);
            self.done = true;
            self.bucket.put(&self.key, head)?;
            return Ok(size);
        };
        if !self.current.is_empty() {
            let last = std::mem::take(&mut self.current);
            self.send(last)?;
        }
        while !self.pending.is_empty() {
            self.wait_one()?;
        }
        let path = self.bucket.path(&self.key)?;
        let s3 = self.bucket.s3.clone();
        let (p, i) = (path.clone(), id.clone());
        let first =
            super::block_on(async move { s3.put_part(&p, &i, 0, PutPayload::from(head)).await })
                .with_context(|| format!("cannot upload part 1 of {}", self.url()))?;
        let mut parts = vec![first];
        parts.append(&mut self.parts);
        let s3 = self.bucket.s3.clone();
        super::block_on(async move { s3.complete_multipart(&path, &id, parts).await })
            .with_context(|| format!("cannot complete the upload of {}", self.url()))?;
        self.done = true;
        Ok(size)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Failed or abandoned: abort, so that no parts linger in the bucket (best effort; a
        // killed process leaves them to the bucket's lifecycle rule, see the wiki).
        for (_, h) in self.pending.drain(..) {
            h.abort();
        }
        if let (Some(id), Ok(path)) = (self.multipart.take(), self.bucket.path(&self.key)) {
            let s3 = self.bucket.s3.clone();
            let _ = super::block_on(async move { s3.abort_multipart(&path, &id).await });
        }
    }
}
