//! Single-core throughput and ratio of the store codec on real tensors.
//!
//! ```text
//! cargo run --release --example codec_bench -- MODEL.safetensors [--base BASE.safetensors]
//! ```
//! Encodes and decodes every tensor chunk by chunk on one thread (the store does this on all
//! cores, one chunk per core), and prints the stored/raw ratio and MB/s per core. With `--base`,
//! tensors are coded as XOR deltas against the base's tensor of the same name.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use gmat::source::safetensors::SafetensorsFile;
use gmat::store::codec::{decode_chunk, encode_chunk, Planes, CHUNK_BYTES};

fn main() -> Result<()> {
    let mut files = Vec::new();
    let mut base = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--base" {
            base = Some(PathBuf::from(args.next().context("--base FILE")?));
        } else {
            files.push(PathBuf::from(a));
        }
    }
    let base = base.map(|b| SafetensorsFile::open(&b)).transpose()?;
    let (mut raw, mut stored) = (0usize, 0usize);
    let (mut enc_s, mut dec_s, mut hash_s) = (0f64, 0f64, 0f64);
    for f in &files {
        let st = SafetensorsFile::open(f)?;
        for t in &st.tensors {
            let src = st.data(t);
            let b = match &base {
                Some(b) => match b.tensors.iter().find(|u| u.name == t.name) {
                    Some(u) if u.range.len() == src.len() => Some(b.data(u)),
                    _ => None,
                },
                None => None,
            };
            let planes = Planes::for_dtype(t.dtype);
            let mut frames = Vec::new();
            let t0 = Instant::now();
            for (i, c) in src.chunks(CHUNK_BYTES).enumerate() {
                let bc = b.map(|b| &b[i * CHUNK_BYTES..i * CHUNK_BYTES + c.len()]);
                frames.push(encode_chunk(c, bc, planes)?);
            }
            enc_s += t0.elapsed().as_secs_f64();
            // Touch the output first: page faults are not decoding.
            let mut out = vec![1u8; src.len()];
            let t0 = Instant::now();
            for (i, (fr, o)) in frames.iter().zip(out.chunks_mut(CHUNK_BYTES)).enumerate() {
                let bc = b.map(|b| &b[i * CHUNK_BYTES..i * CHUNK_BYTES + o.len()]);
                decode_chunk(fr, bc, planes, o)?;
            }
            dec_s += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let h = blake3::hash(&out);
            hash_s += t0.elapsed().as_secs_f64();
            anyhow::ensure!(
                out == src && h == blake3::hash(src),
                "{} does not round-trip",
                t.name
            );
            raw += src.len();
            stored += frames.iter().map(|f| f.len() + 8).sum::<usize>();
        }
    }
    let mb = raw as f64 / 1e6;
    println!(
        "raw {:.1} MB  stored {:.1} MB  ratio {:.3}  encode {:.0} MB/s/core  decode {:.0} MB/s/core  (blake3 {:.0} MB/s/core)",
        mb,
        stored as f64 / 1e6,
        stored as f64 / raw.max(1) as f64,
        mb / enc_s,
        mb / dec_s,
        mb / hash_s
    );
    Ok(())
}
