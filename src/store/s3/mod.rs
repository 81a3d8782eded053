//! Stores in S3-compatible object storage (AWS S3, Garage, MinIO, Ceph RGW), through the
//! `object_store` crate.
//!
//! gmat is synchronous (rayon); `object_store` is async. This module owns a small tokio runtime
//! and blocks on it, so the rest of the code calls plain functions. Reads run ahead of the
//! reader on the runtime ([`fetch`]), uploads stream tensor files as multipart uploads
//! ([`upload`]), and an import holds a lock object ([`lock`]).
//!
//! Credentials, region and endpoint come from the standard AWS environment variables and
//! profile files ([`config`]), never from gmat's config files.

pub mod config;
pub mod fetch;
pub mod lock;
#[cfg(test)]
mod tests;
pub mod upload;

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use crate::store::location::S3Location;

/// The runtime every S3 request runs on: two worker threads are plenty for I/O.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // Building a runtime fails only when the OS refuses threads: nothing to recover.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gmat-s3")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the S3 I/O threads: {e}"))
    })
}

/// Runs `f` on the S3 runtime and waits for it (from any thread outside the runtime).
pub fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// Starts `f` on the S3 runtime without waiting.
pub fn spawn<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(f)
}

/// What gmat needs of a client: object operations, and multipart uploads whose parts it numbers
/// itself ([`upload`]). `object_store`'s S3 client; its in-memory store in unit tests.
pub trait Backend: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> Backend for T {}

/// One bucket, with its client (shared by every store in it).
pub struct Bucket {
    pub name: String,
    pub(crate) s3: Arc<dyn Backend>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.name)
    }
}

/// The client of `bucket`, built once per process.
pub fn bucket(name: &str) -> Result<Arc<Bucket>> {
    static CLIENTS: Mutex<Option<HashMap<String, Arc<Bucket>>>> = Mutex::new(None);
    let mut clients = CLIENTS
        .lock()
        .map_err(|_| anyhow!("the S3 client table is poisoned"))?;
    let map = clients.get_or_insert_with(HashMap::new);
    if let Some(b) = map.get(name) {
        return Ok(b.clone());
    }
    let s3 = config::client(name)?;
    let b = Arc::new(Bucket {
        name: name.to_string(),
        s3: Arc::new(s3),
    });
    map.insert(name.to_string(), b.clone());
    Ok(b)
}

/// Whether a put replaced nothing or found the object already there (`PutMode::Create`).
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    Yes,
    AlreadyExists,
}

impl Bucket {
    /// A bucket held in memory, for unit tests of the readers and writers.
    #[cfg(test)]
    pub fn in_memory(name: &str) -> Arc<Bucket> {
        Arc::new(Bucket {
            name: name.into(),
            s3: Arc::new(object_store::memory::InMemory::new()),
        })
    }

    /// The full URL of `key`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    pub(crate) fn path(&self, key: &str) -> Result<ObjectPath> {
        ObjectPath::parse(key)
            .with_context(|| format!("{} is not a valid object key", self.url(key)))
    }

    /// The whole object, or `None` if there is none.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let p = self.path(key)?;
        let s3 = self.s3.clone();
        let r = block_on(async move {
            match s3.get(&p).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        r.with_context(|| format!("cannot read {}", self.url(key)))
    }

    /// Bytes `range` of the object (an error if it is shorter).
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let p = self.path(key)?;
        let want = range.end - range.start;
        let b = block_on(self.s3.get_range(&p, range.clone()))
            .with_context(|| format!("cannot read bytes {range:?} of {}", self.url(key)))?;
        if b.len() as u64 != want {
            anyhow::bail!(
                "{} ends early: {} bytes instead of {want} at {}",
                self.url(key),
                b.len(),
                range.start
            );
        }
        Ok(b)
    }

    /// The object's size and version, or `None` if there is none.
    pub fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let p = self.path(key)?;
        match block_on(self.s3.head(&p)) {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot look up {}", self.url(key))),
        }
    }

    /// Writes a small object in one request (atomic: readers see the old or the new object).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let p = self.path(key)?;
        block_on(self.s3.put(&p, PutPayload::from(bytes)))
            .with_context(|| format!("cannot write {}", self.url(key)))?;
        Ok(())
    }

    /// Writes `bytes` only if no object `key` exists (a conditional put; servers without
    /// conditional writes overwrite: callers read back what they wrote, see [`lock`]).
    pub fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<Created> {
        let p = self.path(key)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match block_on(self.s3.put_opts(&p, PutPayload::from(bytes), opts)) {
            Ok(_) => Ok(Created::Yes),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(e).with_context(|| format!("cannot write {}", self.url(key))),
        }
    }

    /// Deletes `key` (no error if it is already gone).
    pub fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match block_on(self.s3.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", self.url(key))),
        }
    }

    /// Every object under `prefix/` (recursively).
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let p = self.path(prefix)?;
        let s3 = self.s3.clone();
        block_on(async move { s3.list(Some(&p)).try_collect::<Vec<_>>().await })
            .with_context(|| format!("cannot list {}/", self.url(prefix)))
    }
}

/// The bucket and key of an object of a store at `loc`.
pub fn object(loc: &S3Location, name: &str) -> Result<(Arc<Bucket>, String)> {
    Ok((bucket(&loc.bucket)?, loc.object(name)))
}
