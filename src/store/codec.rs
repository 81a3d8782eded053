//! The lossless chunk codec of encoded tensor files: byte planes + zstd.
//!
//! A chunk of a tensor (a whole number of elements, [`CHUNK_BYTES`] by default) is optionally
//! XORed with the same bytes of a base tensor (deltas), then split into byte planes: element
//! `i`'s most significant byte goes to plane 0, the next to plane 1, and so on. Floats are first
//! rotated left by one bit, so that plane 0 holds exactly the exponent of a BF16 or F32 value
//! (and the 5 exponent bits of an F16 value) and the sign moves to the least significant plane.
//! Exponents of weights cluster on a few values, so plane 0 compresses well; a fine-tune's XOR
//! with its base is mostly zero in the high planes. The planes of one chunk are compressed as one
//! zstd frame. Chunks are independent, so they encode and decode in parallel and any byte range
//! of a tensor can be decoded alone.

use std::cell::RefCell;

use anyhow::{bail, Context, Result};

use crate::source::Dtype;

/// Decoded bytes per chunk (the last chunk of a tensor may be shorter). A multiple of every
/// element size and of zstd's 128 KiB block, so that each block holds one plane.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The largest chunk size a tensor file may declare: bounds the memory a corrupt header can ask
/// for.
pub const MAX_CHUNK_BYTES: u64 = 64 << 20;
/// zstd level 1 (the fast strategy) with a small window, the longest minimum match and the
/// smallest match-finder table: byte planes of weights have few real repeats, and the short
/// matches a larger table finds in the exponent plane cost more than they save — each is a
/// sequence the decoder must execute, while literals go through the much faster Huffman
/// decoder. This setting is both the fastest (on the bench model's exponent plane, decode
/// 1.1 → 1.9 GB/s, encode 320 → 580 MB/s per core against the default table) and, on weights,
/// the smallest of levels 1-12. Runs of zeros (deltas, constant tensors) still collapse.
/// Measured with bench/store_bench.py and examples/codec_bench.rs.
pub const LEVEL: i32 = 1;
const WINDOW_LOG: u32 = 14;
const MIN_MATCH: u32 = 7;
/// zstd's minimum (ZSTD_HASHLOG_MIN). Not for deltas: their planes are mostly zero runs with
/// sparse changed bits, where level 1's own table finds matches worth having (delta encode
/// 715 vs 550 MB/s, decode 1650 vs 1400 MB/s per core on bench/store_bench.py's family).
const HASH_LOG: u32 = 6;

/// How a dtype's elements are laid out in planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    /// Bytes per element = number of planes.
    pub width: usize,
    /// Rotate left by one bit first (floats: exponent into the top byte, sign to the bottom).
    pub rotate: bool,
}

impl Planes {
    /// The layout used for `dtype`.
    pub fn for_dtype(dtype: Dtype) -> Planes {
        Planes {
            width: dtype.size(),
            rotate: dtype.is_float(),
        }
    }
}

macro_rules! split_join {
    ($split:ident, $join:ident, $t:ty, $w:expr) => {
        fn $split(src: &[u8], rotate: bool, dst: &mut [u8]) {
            let n = src.len() / $w;
            let (planes, _) = dst.split_at_mut(n * $w);
            let mut outs: Vec<&mut [u8]> = planes.chunks_exact_mut(n.max(1)).collect();
            for (i, c) in src.chunks_exact($w).enumerate() {
                let mut v = <$t>::from_le_bytes(c.try_into().unwrap_or([0; $w]));
                if rotate {
                    v = v.rotate_left(1);
                }
                let b = v.to_be_bytes();
                for (p, out) in outs.iter_mut().enumerate() {
                    out[i] = b[p];
                }
            }
        }

        fn $join(planes: &[u8], rotate: bool, dst: &mut [u8]) {
            let n = dst.len() / $w;
            let ins: Vec<&[u8]> = planes[..n * $w].chunks_exact(n.max(1)).collect();
            for (i, c) in dst.chunks_exact_mut($w).enumerate() {
                let mut b = [0u8; $w];
                for (p, inp) in ins.iter().enumerate() {
                    b[p] = inp[i];
                }
                let mut v = <$t>::from_be_bytes(b);
                if rotate {
                    v = v.rotate_right(1);
                }
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
    };
}

split_join!(split4, join4, u32, 4);
split_join!(split8, join8, u64, 8);

/// BF16/F16 are the common case: a dedicated loop the compiler vectorises (eight or sixteen
/// elements per instruction on the AVX2 path: [`split`] and [`join`] compile it once per SIMD
/// path, and plain byte moves give the same bytes on every one).
#[inline(always)]
fn split2(src: &[u8], rotate: bool, dst: &mut [u8]) {
    let n = src.len() / 2;
    let (hi, lo) = dst[..2 * n].split_at_mut(n);
    for ((c, h), l) in src.chunks_exact(2).zip(hi.iter_mut()).zip(lo.iter_mut()) {
        let mut v = u16::from_le_bytes([c[0], c[1]]);
        if rotate {
            v = v.rotate_left(1);
        }
        *h = (v >> 8) as u8;
        *l = v as u8;
    }
}

#[inline(always)]
fn join2(planes: &[u8], rotate: bool, dst: &mut [u8]) {
    let n = dst.len() / 2;
    let (hi, lo) = planes[..2 * n].split_at(n);
    for ((c, &h), &l) in dst.chunks_exact_mut(2).zip(hi.iter()).zip(lo.iter()) {
        let mut v = ((h as u16) << 8) | l as u16;
        if rotate {
            v = v.rotate_right(1);
        }
        c.copy_from_slice(&v.to_le_bytes());
    }
}

/// Splits whole elements of `src` into planes in `dst` (same length).
pub fn split(src: &[u8], planes: Planes, dst: &mut [u8]) {
    debug_assert_eq!(src.len(), dst.len());
    debug_assert_eq!(src.len() % planes.width, 0);
    match planes.width {
        2 => crate::quant::simd8::dispatch!(V => split2(src, planes.rotate, dst)),
        4 => split4(src, planes.rotate, dst),
        8 => split8(src, planes.rotate, dst),
        _ => dst.copy_from_slice(src),
    }
}

/// Inverse of [`split`].
pub fn join(src: &[u8], planes: Planes, dst: &mut [u8]) {
    debug_assert_eq!(src.len(), dst.len());
    match planes.width {
        2 => crate::quant::simd8::dispatch!(V => join2(src, planes.rotate, dst)),
        4 => join4(src, planes.rotate, dst),
        8 => join8(src, planes.rotate, dst),
        _ => dst.copy_from_slice(src),
    }
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    // u64 lanes; the compiler vectorises this.
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (a, b) in (&mut d).zip(&mut s) {
        let v = u64::from_ne_bytes(a.try_into().unwrap_or([0; 8]))
            ^ u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
        a.copy_from_slice(&v.to_ne_bytes());
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a ^= b;
    }
}

fn new_compressor(delta: bool) -> Result<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(LEVEL).context("zstd init")?;
    c.set_parameter(CParameter::WindowLog(WINDOW_LOG))
        .context("zstd window")?;
    c.set_parameter(CParameter::MinMatch(MIN_MATCH))
        .context("zstd min match")?;
    if !delta {
        c.set_parameter(CParameter::HashLog(HASH_LOG))
            .context("zstd hash log")?;
    }
    Ok(c)
}

thread_local! {
    /// One compressor for plain chunks, one for deltas (they are tuned differently).
    static COMPRESSORS: RefCell<[Option<zstd::bulk::Compressor<'static>>; 2]> = const { RefCell::new([None, None]) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Encodes one chunk: XOR with `base` (same length) if given, byte planes, one zstd frame.
pub fn encode_chunk(src: &[u8], base: Option<&[u8]>, planes: Planes) -> Result<Vec<u8>> {
    if !src.len().is_multiple_of(planes.width) || base.is_some_and(|b| b.len() != src.len()) {
        bail!(
            "chunk of {} bytes does not fit the element size or its base",
            src.len()
        );
    }
    SCRATCH.with(|s| {
        let (a, b) = &mut *s.borrow_mut();
        let input = match base {
            Some(base) => {
                a.clear();
                a.extend_from_slice(src);
                xor_into(a, base);
                &a[..]
            }
            None => src,
        };
        b.resize(src.len(), 0);
        split(input, planes, b);
        let delta = base.is_some();
        COMPRESSORS.with(|c| {
            let slot = &mut c.borrow_mut()[delta as usize];
            if slot.is_none() {
                *slot = Some(new_compressor(delta)?);
            }
            let c = slot.as_mut().context("zstd init")?;
            c.compress(b).context("zstd compression failed")
        })
    })
}

/// What a decoded chunk is XORed with: nothing (a plain chunk), the base's bytes given apart,
/// or the base's bytes already in the output buffer (a delta decoded onto its base, so that the
/// base needs no buffer of its own).
#[derive(Clone, Copy)]
pub enum Xor<'a> {
    None,
    With(&'a [u8]),
    Onto,
}

impl<'a> Xor<'a> {
    /// [`Xor::With`] the given bytes, or [`Xor::None`].
    pub fn with(base: Option<&'a [u8]>) -> Self {
        base.map_or(Xor::None, Xor::With)
    }

    /// The same for the part `range` of the output: the base bytes given apart are cut to it.
    pub fn part(self, range: std::ops::Range<usize>) -> Self {
        match self {
            Xor::With(b) => Xor::With(&b[range]),
            other => other,
        }
    }
}

/// Decodes one chunk into `out` (its exact decoded length), XORing with `base` if given.
/// Any corruption of `frame` gives an error, never a panic.
pub fn decode_chunk(
    frame: &[u8],
    base: Option<&[u8]>,
    planes: Planes,
    out: &mut [u8],
) -> Result<()> {
    decode_chunk_xor(frame, Xor::with(base), planes, out)
}

/// [`decode_chunk`] with any [`Xor`]: with [`Xor::Onto`], `out` holds the base's bytes and the
/// decoded delta is XORed onto them.
pub fn decode_chunk_xor(frame: &[u8], xor: Xor, planes: Planes, out: &mut [u8]) -> Result<()> {
    if !out.len().is_multiple_of(planes.width)
        || matches!(xor, Xor::With(b) if b.len() != out.len())
    {
        bail!(
            "chunk of {} bytes does not fit the element size or its base",
            out.len()
        );
    }
    SCRATCH.with(|s| -> Result<()> {
        let (a, b) = &mut *s.borrow_mut();
        b.resize(out.len(), 0);
        let n = DECOMPRESSOR.with(|d| -> Result<usize> {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().context("zstd init")?);
            }
            let d = d.as_mut().context("zstd init")?;
            d.decompress_to_buffer(frame, &mut b[..])
                .map_err(|e| anyhow::anyhow!("zstd frame does not decode: {e}"))
        })?;
        if n != out.len() {
            bail!("chunk decodes to {n} bytes, expected {}", out.len());
        }
        match xor {
            Xor::None => join(b, planes, out),
            Xor::With(base) => {
                join(b, planes, out);
                xor_into(out, base);
            }
            Xor::Onto => {
                a.resize(out.len(), 0);
                join(b, planes, a);
                xor_into(out, a);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    fn all_dtypes() -> [Dtype; 6] {
        [
            Dtype::BF16,
            Dtype::F16,
            Dtype::F32,
            Dtype::F64,
            Dtype::I32,
            Dtype::U8,
        ]
    }

    #[test]
    fn planes_round_trip_every_width() {
        let mut r = rng(1);
        let data: Vec<u8> = (0..4096).map(|_| r() as u8).collect();
        for d in all_dtypes() {
            let p = Planes::for_dtype(d);
            for len in [0, p.width, 3 * p.width, 4096] {
                let src = &data[..len];
                let mut planes = vec![0; len];
                split(src, p, &mut planes);
                let mut back = vec![0; len];
                join(&planes, p, &mut back);
                assert_eq!(back, src, "{d} {len}");
            }
        }
    }

    /// Every SIMD path this CPU has splits and joins 2-byte planes to the same bytes.
    #[test]
    fn two_byte_planes_are_the_same_on_every_simd_path() {
        use crate::quant::simd8::{with_path, Path};
        let mut r = rng(2);
        let data: Vec<u8> = (0..8198).map(|_| r() as u8).collect();
        let run = |p: Path, rotate: bool| {
            with_path(p, || {
                let pl = Planes { width: 2, rotate };
                let mut planes = vec![0; data.len()];
                split(&data, pl, &mut planes);
                let mut back = vec![0; data.len()];
                join(&planes, pl, &mut back);
                assert!(back == data, "{} round trip", p.name());
                planes
            })
        };
        for rotate in [false, true] {
            let want = run(Path::Scalar, rotate);
            for p in Path::available() {
                assert!(run(p, rotate) == want, "{} rotate {rotate}", p.name());
            }
        }
    }

    #[test]
    fn bf16_exponents_go_to_plane_zero() {
        // 1.0 = 0x3F80: sign 0, exponent 127, mantissa 0. -2.0 = 0xC000: exponent 128.
        let src = [0x80, 0x3F, 0x00, 0xC0];
        let mut planes = [0; 4];
        split(&src, Planes::for_dtype(Dtype::BF16), &mut planes);
        assert_eq!(planes, [127, 128, 0, 1]);
    }

    #[test]
    fn chunks_round_trip_with_and_without_base() {
        let mut r = rng(2);
        for d in all_dtypes() {
            let p = Planes::for_dtype(d);
            for len in [0, p.width, 5 * p.width, 65536] {
                let src: Vec<u8> = (0..len).map(|_| r() as u8).collect();
                let base: Vec<u8> = src
                    .iter()
                    .map(|&b| if r().is_multiple_of(8) { b ^ 1 } else { b })
                    .collect();
                for b in [None, Some(&base[..])] {
                    let frame = encode_chunk(&src, b, p).unwrap();
                    let mut out = vec![0xAA; len];
                    decode_chunk(&frame, b, p, &mut out).unwrap();
                    assert_eq!(out, src, "{d} {len}");
                }
            }
        }
    }

    #[test]
    fn constant_data_compresses_and_corrupt_frames_are_errors() {
        let p = Planes::for_dtype(Dtype::BF16);
        let src = vec![0u8; CHUNK_BYTES];
        let frame = encode_chunk(&src, None, p).unwrap();
        assert!(frame.len() < 1000, "{}", frame.len());
        let mut out = vec![1u8; CHUNK_BYTES];
        decode_chunk(&frame, None, p, &mut out).unwrap();
        assert_eq!(out, src);
        // Wrong expected length, truncated and garbled frames.
        let mut short = vec![0u8; CHUNK_BYTES - 2];
        assert!(decode_chunk(&frame, None, p, &mut short).is_err());
        assert!(decode_chunk(&frame[..frame.len() - 3], None, p, &mut out).is_err());
        let mut bad = frame.clone();
        bad[0] ^= 0xFF;
        assert!(decode_chunk(&bad, None, p, &mut out).is_err());
        assert!(decode_chunk(&[], None, p, &mut out).is_err());
        assert!(encode_chunk(&[1, 2, 3], None, p).is_err());
    }
}
