//! How one source tensor is stored, wherever the store is: the decision is the same on disk
//! ([`super::import`]) and in a bucket ([`super::import_s3`]); only what a [`TensorDest`] does
//! with files differs.
//!
//! In order:
//! 1. With a base store, a tensor whose content the base already holds (its file read back whole
//!    first) is shared: linked to the base's file where the destination can do that (a hard link
//!    on the same file system), else recorded as a reference to the base's tensor.
//! 2. With a base, a tensor with the same name, dtype and shape as a base tensor is stored as the
//!    XOR with it (`xor_zstd`) when that codes smaller.
//! 3. Otherwise it is written in the import's encoding.
//!
//! In 2 and 3, a file an earlier (interrupted) run left with exactly the header this tensor
//! would get is kept if the destination vouches for its bytes ([`TensorDest::keeps`]).

use std::ops::Range;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::import::{delta_pays, header, BaseIndex, ImportOptions};
use crate::config::import_config::ImportDecision;
use crate::source::hf_folder::SourceRef;
use crate::store::tensor_file::ByteSource;
use crate::store::{BaseTensor, Encoding, TensorEntry, TensorFile, TensorHeader, TensorReader};

/// Where one tensor's file goes: a file in a store folder, or an object in a bucket.
pub(super) trait TensorDest {
    /// The file an earlier run left at this tensor's place, when there is a readable one.
    fn existing(&self) -> Option<TensorFile>;

    /// Whether an earlier run's file, whose header is the one this tensor gets, holds content
    /// `hash` and can be kept. `base` opens the base tensor a delta file is decoded against.
    fn keeps<'s>(
        &self,
        file: &TensorFile,
        hash: &str,
        base: Option<&dyn Fn() -> Result<TensorReader<'s>>>,
    ) -> Result<bool>;

    /// Shares the file of base tensor `b` (the same content as `e`) when the destination can:
    /// returns the encoding and size of the shared file, or `None` to record a reference.
    fn link_base(
        &self,
        e: &TensorEntry,
        b: &TensorEntry,
        index: &BaseIndex,
    ) -> Result<Option<(Encoding, u64)>>;

    /// The tensor is a reference to the base's: drop what an earlier run left at its place.
    fn discard_existing(&self);

    /// Writes a chunked file (`base`: the tensor a delta is taken against); returns its size.
    fn write_chunked(
        &self,
        h: &TensorHeader,
        bytes: &[u8],
        base: Option<&mut dyn ByteSource>,
        release: &(dyn Fn(Range<usize>) + Sync),
    ) -> Result<u64>;

    /// Writes a raw file; returns its size.
    fn write_raw(
        &self,
        h: &TensorHeader,
        bytes: &[u8],
        release: &(dyn Fn(Range<usize>) + Sync),
    ) -> Result<u64>;
}

/// Stores every source tensor, in parallel, each at the destination `dest_of` gives for its
/// decision; returns their manifest entries in order.
pub(super) fn store_all<D: TensorDest>(
    sources: &[(SourceRef, &ImportDecision)],
    options: &ImportOptions,
    index: Option<&BaseIndex>,
    bar: &indicatif::ProgressBar,
    dest_of: impl Fn(&ImportDecision) -> D + Sync,
) -> Result<Vec<TensorEntry>> {
    sources
        .par_iter()
        .map(|(r, d)| {
            let bytes = r.file.data(r.tensor);
            let entry = TensorEntry {
                name: r.tensor.name.clone(),
                uuid: d.uuid,
                dtype: r.tensor.dtype,
                shape: r.tensor.shape.clone(),
                encoding: options.encoding,
                raw_bytes: bytes.len() as u64,
                stored_bytes: 0,
                hash: r.file.hash(r.tensor),
                base: None,
            };
            let start = r.tensor.range.start;
            let release = |w: Range<usize>| r.file.release(start + w.start..start + w.end);
            let entry = store_tensor(entry, bytes, &dest_of(d), options, index, &release)
                .with_context(|| format!("tensor {}", r.tensor.name))?;
            bar.inc(bytes.len() as u64);
            Ok(entry)
        })
        .collect()
}

/// Stores one tensor at `dest` (or shares or references the base's) and fills in how it is
/// stored; see the module documentation.
pub(super) fn store_tensor(
    mut e: TensorEntry,
    bytes: &[u8],
    dest: &dyn TensorDest,
    options: &ImportOptions,
    index: Option<&BaseIndex>,
    release: &(dyn Fn(Range<usize>) + Sync),
) -> Result<TensorEntry> {
    let existing = dest.existing();
    if let Some(index) = index {
        if let Some(b) = index.verified_same_content(&e)? {
            e.base = Some(BaseTensor {
                uuid: b.uuid,
                hash: b.hash.clone(),
            });
            if let Some((encoding, size)) = dest.link_base(&e, b, index)? {
                e.encoding = encoding;
                e.stored_bytes = size;
                return Ok(e);
            }
            if existing.is_some() {
                drop(existing);
                dest.discard_existing();
            }
            e.encoding = Encoding::BaseRef;
            e.stored_bytes = 0;
            return Ok(e);
        }
        if let Some(&b) = index.by_name.get(e.name.as_str()) {
            if b.dtype == e.dtype && b.shape == e.shape && e.raw_bytes > 0 {
                let link = BaseTensor {
                    uuid: b.uuid,
                    hash: b.hash.clone(),
                };
                let xh = header(&e, Encoding::XorZstd, Some(link.clone()));
                let open_base = || {
                    index.store.reader(b).with_context(|| {
                        format!("base tensor {} of {}", b.name, index.store.location)
                    })
                };
                if let Some(f) = existing.as_ref().filter(|f| f.header == xh) {
                    if dest.keeps(f, &e.hash, Some(&open_base))? {
                        e.encoding = Encoding::XorZstd;
                        e.base = Some(link);
                        e.stored_bytes = f.file_bytes();
                        return Ok(e);
                    }
                }
                let mut reader = open_base()?;
                if delta_pays(bytes, &mut reader, e.dtype, options.encoding)? {
                    e.stored_bytes = dest.write_chunked(&xh, bytes, Some(&mut reader), release)?;
                    reader.finish().with_context(|| {
                        format!(
                            "the base store {} is corrupt; the delta written against it is unusable",
                            index.store.location
                        )
                    })?;
                    e.encoding = Encoding::XorZstd;
                    e.base = Some(link);
                    return Ok(e);
                }
            }
        }
    }
    let h = header(&e, options.encoding, None);
    if let Some(f) = existing.as_ref().filter(|f| f.header == h) {
        if dest.keeps(f, &e.hash, None)? {
            e.stored_bytes = f.file_bytes();
            return Ok(e);
        }
    }
    drop(existing);
    e.stored_bytes = match options.encoding {
        Encoding::Raw => dest.write_raw(&h, bytes, release)?,
        _ => dest.write_chunked(&h, bytes, None, release)?,
    };
    Ok(e)
}
