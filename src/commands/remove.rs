//! `gmat remove STORE`: deletes a store — every object of a store in a bucket, or a store
//! folder — including what an interrupted import left behind (tensors, no manifest). It takes
//! the writer's lock first, so a store an import is writing is refused, and an interrupted
//! import's lock is taken over. Only a store is deleted: a prefix or folder holding neither a
//! manifest nor an import's lock is refused.

use std::path::Path;

use anyhow::{bail, Result};

use crate::pipeline::progress::human_bytes;
use crate::store::s3;
use crate::store::{Location, MANIFEST, TENSOR_DIR};

/// Runs the command.
pub fn run(path: &Path, quiet: bool) -> Result<()> {
    match Location::parse(path)? {
        Location::Local(p) => remove_folder(&p, quiet),
        Location::S3(loc) => {
            let bucket = s3::bucket(&loc.bucket)?;
            for cand in [loc.clone(), loc.join("model.gmat")?] {
                let is_store = bucket.head(&cand.object(MANIFEST))?.is_some()
                    || bucket.head(&cand.object(s3::lock::LOCK))?.is_some();
                if !is_store {
                    continue;
                }
                let url = Location::S3(cand.clone()).to_string();
                let lock = s3::lock::acquire(bucket.clone(), &cand.key, &url)?;
                // The manifest first: from then on no reader takes the rest for a store.
                bucket.delete(&cand.object(MANIFEST))?;
                let lock_key = cand.object(s3::lock::LOCK);
                let (mut n, mut bytes) = (0usize, 0u64);
                for m in bucket.list(&cand.key)? {
                    let key = m.location.to_string();
                    if key != lock_key {
                        bucket.delete(&key)?;
                        n += 1;
                        bytes += m.size;
                    }
                }
                lock.release()?;
                if !quiet {
                    eprintln!("removed {url}: {n} objects ({})", human_bytes(bytes));
                }
                return Ok(());
            }
            bail!(
                "{} is not a gmat store (no {MANIFEST} and no import's lock); nothing removed",
                Location::S3(loc)
            )
        }
    }
}

fn remove_folder(path: &Path, quiet: bool) -> Result<()> {
    let root = [path.to_path_buf(), path.join("model.gmat")]
        .into_iter()
        .find(|r| {
            r.join(MANIFEST).is_file()
                || (r.join(TENSOR_DIR).is_dir() && crate::fsio::store_lock_path(r).is_file())
        });
    let Some(root) = root else {
        bail!(
            "{} is not a gmat store (no {MANIFEST}); nothing removed",
            path.display()
        );
    };
    let lock = crate::fsio::lock_store_exclusive(&root)?;
    std::fs::remove_dir_all(&root)
        .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", root.display()))?;
    drop(lock);
    if !quiet {
        eprintln!("removed {}", root.display());
    }
    Ok(())
}
