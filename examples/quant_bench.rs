//! Quantization throughput of gmat's codecs, for `bench/quant_bench.py` (which runs the real
//! ggml on the same data and prints the comparison).
//!
//!     quant_bench --data X.f32 --cols N --rows R --type Q4_K [--imatrix W.f32] [--threads T]
//!                 [--passes P]
//!     quant_bench --simd-path
//!
//! `X.f32` is a raw little-endian f32 matrix with `N` columns (at least `R` rows; the first `R`
//! are quantized); `W.f32` holds `N` importance weights. Quantizes the rows `P` times (default 1;
//! the times cover all passes) on one thread
//! (`quantize_rows`, what a single export worker does) and once with rayon over rows on `T`
//! threads (default: all cores), like the export pipeline, after an untimed warm-up row (grid
//! tables are built on first use). Prints one line of `key=value` pairs: the wall times in
//! seconds (`t1`, `tall`), the CPU time of the single-threaded pass (`c1`, from
//! /proc/thread-self/schedstat; equal to `t1` where that is unavailable), input MB/s (10^6
//! bytes of f32 input per second) and the SHA-256 of the quantized bytes, which must equal
//! ggml's.

use gmat::quant::{codec, quantize_rows, GgmlType};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::time::Instant;

fn read_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// CPU time of the calling thread in seconds (Linux schedstat), if available.
fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 * 1e-9)
}

fn main() {
    let mut data = None;
    let mut imatrix_path = None;
    let mut cols = 0usize;
    let mut rows = 0usize;
    let mut ty = None;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut passes = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--data" => data = Some(val()),
            "--imatrix" => imatrix_path = Some(val()),
            "--cols" => cols = val().parse().expect("--cols"),
            "--rows" => rows = val().parse().expect("--rows"),
            "--type" => ty = Some(val().parse::<GgmlType>().expect("--type")),
            "--threads" => threads = val().parse().expect("--threads"),
            "--passes" => passes = val().parse().expect("--passes"),
            // the SIMD path the quantizers take here (GMAT_SIMD or the CPU's best), then exit
            "--simd-path" => {
                println!(
                    "{}",
                    gmat::quant::simd_path().unwrap_or_else(|e| panic!("{e}"))
                );
                return;
            }
            _ => panic!("unknown argument {a}"),
        }
    }
    let t = ty.expect("--type");
    let data = read_f32(&data.expect("--data"));
    assert!(
        cols > 0 && rows > 0 && data.len() >= rows * cols,
        "bad --rows/--cols"
    );
    let src = &data[..rows * cols];
    let imatrix = imatrix_path.map(|p| read_f32(&p));
    if let Some(w) = &imatrix {
        assert_eq!(w.len(), cols, "imatrix needs one weight per column");
    }
    let imatrix = imatrix.as_deref();
    let c = codec(t).unwrap_or_else(|| panic!("gmat has no codec for {t}"));
    let row_bytes = t.row_bytes(cols as u64).expect("cols fit the block size") as usize;

    // Warm-up (lazy grid tables), untimed.
    let mut warm = vec![0u8; row_bytes];
    c.quantize_row(&src[..cols], imatrix, &mut warm);

    // Non-zero fill: the pages are touched before timing (no page faults inside).
    let mut out1 = vec![1u8; rows * row_bytes];
    let c0 = thread_cpu_seconds();
    let t0 = Instant::now();
    for _ in 0..passes {
        quantize_rows(c, src, cols, imatrix, &mut out1);
    }
    let t1 = t0.elapsed().as_secs_f64();
    let c1 = match (c0, thread_cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => t1,
    };

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let mut outn = vec![1u8; rows * row_bytes];
    let t0 = Instant::now();
    pool.install(|| {
        for _ in 0..passes {
            outn.par_chunks_mut(row_bytes)
                .zip(src.par_chunks(cols))
                .for_each(|(d, s)| c.quantize_row(s, imatrix, d));
        }
    });
    let tn = t0.elapsed().as_secs_f64();
    assert!(out1 == outn, "{t}: single- and multi-threaded bytes differ");

    let mb = (passes * rows * cols * 4) as f64 / 1e6;
    let sha = Sha256::digest(&out1);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "type={t} imatrix={} rows={rows} cols={cols} passes={passes} threads={threads} t1={t1:.6} c1={c1:.6} \
         tall={tn:.6} mbps1={:.3} mbpscpu1={:.3} mbpsall={:.3} sha256={hex} simd={}",
        imatrix.is_some() as u8,
        mb / t1,
        mb / c1,
        mb / tn,
        gmat::quant::simd_path().unwrap_or("?")
    );
}
