//! One stored tensor: `tensors/<uuid>.gmat`.
//!
//! Layout: `b"GMAT"`, u32 format version, u32 header length, a JSON header describing the
//! tensor (so a file is meaningful on its own), zero padding to a 64-byte boundary, then the
//! payload. Files are written to a temporary name and renamed, so a file with the final name is
//! always complete.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::hash;
use crate::source::Dtype;

const MAGIC: &[u8; 4] = b"GMAT";
const VERSION: u32 = 1;
const ALIGN: usize = 64;
/// Far more than any real header; bounds what a corrupt length can make us read.
const MAX_HEADER: usize = 1 << 20;

/// How a payload encodes the tensor's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The source bytes as they are.
    Raw,
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
}

/// Writes a raw tensor file atomically and returns its size on disk.
pub fn write_raw(path: &Path, header: &TensorHeader, payload: &[u8]) -> Result<u64> {
    write_raw_releasing(path, header, payload, |_| {})
}

/// [`write_raw`], calling `written` with each payload range once it is on its way to disk (so a
/// memory-mapped source can give its pages back).
pub fn write_raw_releasing(
    path: &Path,
    header: &TensorHeader,
    payload: &[u8],
    written: impl Fn(std::ops::Range<usize>),
) -> Result<u64> {
    let json = serde_json::to_vec(header)?;
    let mut head = Vec::with_capacity(ALIGN + json.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(json.len() as u32).to_le_bytes());
    head.extend_from_slice(&json);
    head.resize(head.len().div_ceil(ALIGN) * ALIGN, 0);
    let tmp = path.with_extension("gmat.partial");
    let write = || -> Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&head)?;
        let mut pos = 0;
        while pos < payload.len() {
            let end = (pos + crate::mapped::CHUNK).min(payload.len());
            f.write_all(&payload[pos..end])?;
            written(pos..end);
            pos = end;
        }
        f.sync_data()?;
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    Ok((head.len() + payload.len()) as u64)
}

/// An opened tensor file: validated header and a view of the payload.
pub struct TensorFile {
    pub header: TensorHeader,
    map: Mmap,
    payload_start: usize,
}

impl TensorFile {
    /// Opens and validates a tensor file (structure only; see [`TensorFile::verify`]).
    pub fn open(path: &Path) -> Result<TensorFile> {
        let f = File::open(path)
            .with_context(|| format!("cannot open tensor file {}", path.display()))?;
        // SAFETY: read-only map; tensor files are never modified after the rename.
        let map =
            unsafe { Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
        let (header, payload_start) = parse_header(&map)
            .with_context(|| format!("{} is not a valid gmat tensor file", path.display()))?;
        let payload = map.len() - payload_start;
        match header.encoding {
            Encoding::Raw if payload as u64 != header.raw_bytes => bail!(
                "{}: payload is {payload} bytes but the header says {} (truncated file?)",
                path.display(),
                header.raw_bytes
            ),
            _ => {}
        }
        Ok(TensorFile {
            header,
            map,
            payload_start,
        })
    }

    /// The decoded tensor bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.payload_start..]
    }

    /// Gives back the resident pages of a payload byte range once it has been consumed.
    pub fn release(&self, range: std::ops::Range<usize>) {
        crate::mapped::release(
            &self.map,
            self.payload_start + range.start..self.payload_start + range.end,
        );
    }

    /// Re-hashes the decoded bytes and compares with `expected`.
    pub fn verify(&self, expected: &str) -> Result<()> {
        let got = hash::format(crate::mapped::hash_releasing(
            &self.map,
            self.payload_start..self.map.len(),
        ));
        if got != expected || self.header.hash != expected {
            bail!(
                "tensor {} is corrupt: content hash {got} does not match the recorded {expected}",
                self.header.name
            );
        }
        Ok(())
    }
}

fn parse_header(buf: &[u8]) -> Result<(TensorHeader, usize)> {
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
    hash::validate(&header.hash)?;
    let n: Option<u64> = header.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let expect = n.and_then(|n| n.checked_mul(header.dtype.size() as u64));
    if expect != Some(header.raw_bytes) {
        bail!(
            "header says {} bytes but shape {:?} of {} needs {:?}",
            header.raw_bytes,
            header.shape,
            header.dtype,
            expect
        );
    }
    let payload_start = (12 + len).div_ceil(ALIGN) * ALIGN;
    if payload_start > buf.len() {
        bail!("file ends inside the header padding");
    }
    Ok((header, payload_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload: &[u8]) -> TensorHeader {
        TensorHeader {
            name: "w".into(),
            dtype: Dtype::BF16,
            shape: vec![payload.len() as u64 / 2],
            encoding: Encoding::Raw,
            raw_bytes: payload.len() as u64,
            hash: hash::content_hash(payload),
        }
    }

    #[test]
    fn write_read_verify_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gmat");
        for payload in [
            vec![],
            vec![1u8, 2],
            (0..=255u8).cycle().take(10_000).collect::<Vec<_>>(),
        ] {
            let h = header(&payload);
            write_raw(&p, &h, &payload).unwrap();
            let f = TensorFile::open(&p).unwrap();
            assert_eq!(f.bytes(), &payload[..]);
            assert_eq!(f.header, h);
            f.verify(&h.hash).unwrap();
        }
        assert!(!d.path().join("x.gmat.partial").exists());
    }

    #[test]
    fn corruption_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gmat");
        let payload = vec![7u8; 64];
        let h = header(&payload);
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
}
