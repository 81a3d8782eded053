#!/usr/bin/env python3
"""Quantization throughput, gmat vs the real ggml, on the same machine, data and row counts.

    bench/quant_bench.sh [--reps 5] [--seconds 0.6] [--threads N] [--types Q4_K,IQ4_XS,...]

(the .sh builds the example and runs this with the reference venv's python).

Data: one random normal f32 matrix (4096 columns, seeded, scaled like LLM weights) and one
importance vector (positive, uneven, every 53rd column zero, as llama-imatrix gives for unused
inputs), written once to a temp dir. Both sides quantize the first R rows of it; R is chosen per
case from a short ggml calibration run so one single-threaded ggml measurement takes about
--seconds; fast types, for which all 4096 rows take less, quantize them P times over
(P "passes", the same on both sides), so slow and fast types are timed equally long.

gmat: target/release/examples/quant_bench (examples/quant_bench.rs): `quantize_rows` on one
thread, then rayon over rows on N threads, like the export pipeline.

ggml: libggml-base.so of the reference build through ctypes (shared/reference/ggml_quant_oracle.py),
`ggml_quantize_chunk`, exactly the function llama-quantize calls (the reference build compiles
ggml-quants.c with -O3 for plain x86-64, like gmat's default target). Single thread: one call over
all R rows. All threads: N Python threads take chunks of rows from a shared counter and call
ggml_quantize_chunk on each (ctypes releases the GIL during the call), as llama-quantize's
workers do (llama_tensor_quantize_impl; it uses 4-row chunks at 4096 columns, here chunks are
max(4, R/(16 N)) rows so the per-call Python overhead stays negligible for the fast types).

Each repetition runs gmat (1T, then allT) and then ggml (1T, then allT) back to back; the table
shows medians over --reps repetitions. Single-threaded throughput is measured in CPU time of
the quantizing thread by default (--clock cpu: /proc/thread-self/schedstat for gmat,
time.thread_time() for ggml), which stays meaningful on a machine shared with other jobs;
--clock wall uses wall time. All-threads throughput is wall time. MB/s is 10^6 bytes of f32
input per second. Every case also checks that gmat's bytes equal ggml's (SHA-256), so the
benchmark doubles as a large differential test; a mismatch is reported and makes the script
exit non-zero.
"""
import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# the oracle lives in the steering repo's shared/reference, next to the checkout (or a worktree)
for d in (os.environ.get("GMAT_ORACLE_DIR", ""), os.path.join(HERE, "..", "..", "shared", "reference"),
          os.path.join(HERE, "..", "..", "..", "shared", "reference")):
    if d and os.path.exists(os.path.join(d, "ggml_quant_oracle.py")):
        sys.path.insert(0, d)
        break
from ggml_quant_oracle import Oracle  # noqa: E402

COLS = 4096
MAX_ROWS = 4096
# Every type gmat writes.
TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S",
         "IQ1_S", "IQ1_M", "MXFP4", "NVFP4", "Q1_0", "Q2_0"]
# Types whose ggml quantizer ignores importance weights (no imatrix variant).
NO_IMATRIX = {"Q8_0", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"}


def cases(types, o):
    for t in types:
        if not o.requires_imatrix(t):
            yield t, False
        if t not in NO_IMATRIX:
            yield t, True


class Ggml:
    def __init__(self, o):
        self.o = o
        self.L = o.lib

    def run(self, t, x, rows, imx, threads, passes=1):
        """(seconds 1T, CPU seconds 1T, seconds allT, sha256 of the 1T bytes)."""
        i = self.o.type_id(t)
        L = self.L
        L.ggml_quantize_init(i)
        rb = self.o.row_size(i, COLS)
        out = np.ones(rb * rows, dtype=np.uint8)  # touched: no page faults while timing
        src = x.ctypes.data
        imp = imx.ctypes.data if imx is not None else None
        c0 = time.thread_time()
        t0 = time.perf_counter()
        for _ in range(passes):
            n = L.ggml_quantize_chunk(i, src, out.ctypes.data, 0, rows, COLS, imp)
        t1 = time.perf_counter() - t0
        c1 = time.thread_time() - c0
        assert n == out.nbytes
        sha = hashlib.sha256(out.tobytes()).hexdigest()

        outn = np.ones_like(out)
        chunk = max(4, rows // (16 * threads))
        counter = [0]
        lock = threading.Lock()

        nchunks = -(-rows // chunk)

        def work():
            while True:
                with lock:
                    k = counter[0]
                    counter[0] += 1
                if k >= nchunks * passes:
                    return
                r0 = (k % nchunks) * chunk  # chunk k % nchunks of pass k // nchunks
                n = min(chunk, rows - r0)
                L.ggml_quantize_chunk(i, src, outn.ctypes.data, r0 * COLS, n, COLS, imp)

        ths = [threading.Thread(target=work) for _ in range(threads)]
        t0 = time.perf_counter()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        tn = time.perf_counter() - t0
        assert np.array_equal(out, outn), f"ggml {t}: threaded bytes differ"
        return t1, c1, tn, sha


def run_gmat(exe, data, imx_path, t, rows, threads, passes=1):
    cmd = [exe, "--data", data, "--cols", str(COLS), "--rows", str(rows), "--type", t,
           "--threads", str(threads), "--passes", str(passes)]
    if imx_path:
        cmd += ["--imatrix", imx_path]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{p.stderr}")
    kv = dict(f.split("=", 1) for f in p.stdout.split())
    return float(kv["t1"]), float(kv["c1"]), float(kv["tall"]), kv["sha256"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gmat", required=True, help="path of the quant_bench example binary")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.6,
                    help="target wall time of one single-threaded ggml pass (sets the row count)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="single-threaded time: CPU time of the quantizing thread (default; robust "
                         "on a shared machine) or wall time. 'allT' is always wall time.")
    ap.add_argument("--no-imatrix-only", action="store_true")
    ap.add_argument("--imatrix-only", action="store_true")
    args = ap.parse_args()

    o = Oracle()
    g = Ggml(o)
    rng = np.random.default_rng(20261126)
    x = (rng.standard_normal((MAX_ROWS, COLS)) * 0.02).astype(np.float32)
    w = (rng.uniform(0.0, 4.0, COLS) ** 2).astype(np.float32)
    w[::53] = 0.0
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]

    print(f"ggml: {o.path} (ggml_quantize_chunk via ctypes); gmat: {args.gmat}")
    path = subprocess.run([args.gmat, "--simd-path"], capture_output=True, text=True)
    path = path.stdout.strip() if path.returncode == 0 else "unknown (a build without --simd-path)"
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    simd_flags = sorted(f for f in flags if f.startswith(("sse", "avx", "fma", "f16c", "asimd", "neon")))
    print(f"gmat SIMD path: {path} (GMAT_SIMD={os.environ.get('GMAT_SIMD', 'unset')}); "
          f"CPU: {' '.join(simd_flags) or 'flags unknown'}")
    print(f"data: {COLS} columns of N(0, 0.02) f32; threads for 'allT': {args.threads}; "
          f"medians of {args.reps} reps; MB/s = 1e6 input bytes (f32) per second; "
          f"1T: {args.clock} time, allT: wall time")
    hdr = (f"{'type':8} {'imatrix':7} {'rows':>8} {'gmat 1T':>9} {'ggml 1T':>9} {'ratio':>6}  "
           f"{'gmat allT':>9} {'ggml allT':>9} {'ratio':>6}  bytes")
    print(hdr)
    print("-" * len(hdr))
    bad = 0
    with tempfile.TemporaryDirectory() as td:
        data = os.path.join(td, "x.f32")
        imx_path = os.path.join(td, "w.f32")
        x.tofile(data)
        w.tofile(imx_path)
        for t, use_imx in cases(types, o):
            if (args.no_imatrix_only and use_imx) or (args.imatrix_only and not use_imx):
                continue
            imx = w if use_imx else None
            # calibrate the row count on ggml, single thread
            probe = 8
            while True:
                t1, _, _, _ = g.run(t, x, probe, imx, 1)
                if t1 > 0.05 or probe >= MAX_ROWS:
                    break
                probe = min(MAX_ROWS, probe * 4)
            rows = int(min(MAX_ROWS, max(args.threads, probe * args.seconds / t1)))
            rows -= rows % args.threads or 0
            rows = max(rows, args.threads)
            passes = max(1, round(args.seconds / (t1 * rows / probe)))
            res = {"g1": [], "gn": [], "r1": [], "rn": []}
            clock = 1 if args.clock == "cpu" else 0
            shas = set()
            ref_sha = None
            for _ in range(args.reps):
                a = run_gmat(args.gmat, data, imx_path if use_imx else None, t, rows, args.threads, passes)
                b = g.run(t, x, rows, imx, args.threads, passes)
                shas.add(a[3])
                ref_sha = b[3]
                res["g1"].append(a[clock])
                res["gn"].append(a[2])
                res["r1"].append(b[clock])
                res["rn"].append(b[2])
            mb = passes * rows * COLS * 4 / 1e6
            m = {k: mb / statistics.median(v) for k, v in res.items()}
            same = shas == {ref_sha}
            bad += not same
            rp = f"{rows}x{passes}" if passes > 1 else str(rows)
            print(f"{t:8} {'yes' if use_imx else 'no':7} {rp:>8} {m['g1']:9.1f} {m['r1']:9.1f} "
                  f"{m['g1'] / m['r1']:6.2f}  {m['gn']:9.1f} {m['rn']:9.1f} {m['gn'] / m['rn']:6.2f}  "
                  f"{'identical' if same else 'DIFFER'}", flush=True)
    if bad:
        print(f"{bad} case(s) where gmat's bytes differ from ggml's", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
