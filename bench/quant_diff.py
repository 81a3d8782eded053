#!/usr/bin/env python3
"""Differential check of gmat's quantizers against the real ggml on large awkward inputs.

    source ~/.cache/gmat-ref/env.sh
    cargo build --release --example quant_bench
    $REF_PY bench/quant_diff.py --gmat $CARGO_TARGET_DIR/release/examples/quant_bench [--types ...]

The golden vectors (testdata/quant) hold a dozen short rows; this quantizes a few hundred rows
of 4096 in which every group of 16 values is drawn from a different kind (zeros, constants,
gaussians at scales from subnormal to 1e30, sparse, ternary, lone outliers, ...), so blocks and
sub-blocks of one super-block take different paths through the searches, with no importance
weights, with ordinary ones and with ones that are zero over whole blocks (types whose ggml
quantizer ignores the weights get one weighted run, which must give the same bytes). It compares the
SHA-256 of gmat's bytes (examples/quant_bench.rs) with ggml's (ggml_quantize_chunk via ctypes).
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import numpy as np

# quant_bench finds the oracle (shared/reference/ggml_quant_oracle.py) for both scripts.
from quant_bench import NO_IMATRIX, TYPES, Oracle  # noqa: E402

COLS = 4096


def awkward(rng, rows, top):
    """top: log10 of the largest scale (the IQ searches abort in ggml when squared errors
    overflow f32, so they get smaller values)."""
    n_groups = rows * COLS // 16
    kind = rng.integers(0, 12, n_groups)
    scale = (10.0 ** rng.uniform(-42, top, n_groups)).astype(np.float64)
    g = rng.standard_normal((n_groups, 16))
    out = np.empty((n_groups, 16), np.float64)
    c = rng.standard_normal(n_groups)[:, None] * scale[:, None]
    out[:] = g * 0.02                                                   # 0: weights-like
    out[kind == 1] = 0.0                                                # zeros
    out[kind == 2] = np.broadcast_to(c, (n_groups, 16))[kind == 2]      # constant
    out[kind == 3] = (g * scale[:, None])[kind == 3]                    # any scale
    sp = g * (rng.uniform(size=g.shape) < 0.1)
    out[kind == 4] = sp[kind == 4]                                      # sparse
    out[kind == 5] = rng.integers(-1, 2, g.shape)[kind == 5]            # ternary
    one = np.zeros_like(g)
    one[np.arange(n_groups), rng.integers(0, 16, n_groups)] = 1.0
    out[kind == 6] = (one * c)[kind == 6]                               # lone value
    out[kind == 7] = np.abs(g * 0.02)[kind == 7]                        # all positive
    out[kind == 8] = -np.abs(g * 0.02)[kind == 8]                       # all negative
    out[kind == 9] = (g * 0.02 + one * 50)[kind == 9]                   # outlier
    out[kind == 10] = (rng.standard_t(2, g.shape) * 0.02)[kind == 10]   # heavy tail
    out[kind == 11] = np.round(g * 4)[kind == 11] / 4                   # coarse grid (ties)
    x = out.reshape(rows, COLS)
    # a few whole rows of one kind
    x[0] = 0.0
    x[1] = 0.37
    x[2] = rng.standard_normal(COLS) * 1e-39
    x[3] = rng.standard_normal(COLS) * 10.0 ** top
    return np.clip(x, -3e38, 3e38).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gmat", required=True)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    o = Oracle()
    rng = np.random.default_rng(args.seed)
    xs = {30: awkward(rng, args.rows, 30), 6: awkward(rng, args.rows, 6)}
    w1 = (rng.uniform(0.0, 4.0, COLS) ** 2).astype(np.float32)
    w1[::53] = 0.0
    w2 = (10.0 ** rng.uniform(-8, 3, COLS)).astype(np.float32)
    for b in rng.choice(COLS // 16, 40, replace=False):
        w2[16 * b:16 * b + 16] = 0.0
    w2[:256] = 0.0
    bad = 0
    with tempfile.TemporaryDirectory() as td:
        paths = {}
        for top, x in xs.items():
            paths[top] = os.path.join(td, f"x{top}.f32")
            x.tofile(paths[top])
        imx = {}
        for name, w in (("w1", w1), ("w2", w2)):
            imx[name] = (os.path.join(td, name + ".f32"), w)
            w.tofile(imx[name][0])
        for t in [s.strip().upper() for s in args.types.split(",") if s.strip()]:
            variants = [] if o.requires_imatrix(t) else [None]
            # types that ignore importance weights get one weighted run: ggml may still take
            # another path with them (Q1_0 and Q2_0 quantize row by row), the bytes must not change
            variants += ["w1"] if t in NO_IMATRIX else ["w1", "w2"]
            top = 6 if t.startswith("IQ") and t not in ("IQ4_NL", "IQ4_XS") else 30
            x, data = xs[top], paths[top]
            for v in variants:
                cmd = [args.gmat, "--data", data, "--cols", str(COLS), "--rows", str(args.rows),
                       "--type", t, "--threads", "2"]
                if v:
                    cmd += ["--imatrix", imx[v][0]]
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode:
                    print(f"{t:8} {v or '-':3} gmat failed: {p.stderr.strip()[-300:]}")
                    bad += 1
                    continue
                mine = dict(f.split("=", 1) for f in p.stdout.split())["sha256"]
                ref = hashlib.sha256(o.quantize(t, x, imatrix=imx[v][1] if v else None)).hexdigest()
                ok = mine == ref
                bad += not ok
                print(f"{t:8} {v or '-':3} {'identical' if ok else 'DIFFER'}", flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
