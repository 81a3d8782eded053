#!/usr/bin/env python3
"""Writes golden vectors for gmat's quantizer tests with the REAL ggml (llama.cpp b11312).

    source ~/.cache/gmat-ref/env.sh
    $REF_PY tools/make_quant_golden.py [TYPE ...]        # default: every type the oracle knows

For each type it writes testdata/quant/<TYPE>.golden: a list of cases, each an input matrix of
awkward and ordinary rows, optionally importance weights, the bytes ggml_quantize_chunk gives
(exactly what llama-quantize calls per tensor) and ggml's to_float of those bytes. The oracle is
../shared/reference/ggml_quant_oracle.py (ctypes on libggml-base.so); nothing here is computed by
gmat. Inputs are seeded, so re-running gives the same files.

File format (little endian), repeated until EOF:
    u32 name_len, name (utf-8)   case name, e.g. "gauss-imatrix"
    u32 n_rows, u32 n_per_row, u8 has_imatrix
    f32[n_rows*n_per_row]        input
    f32[n_per_row]               importance weights (only if has_imatrix)
    u32 n_bytes, u8[n_bytes]     ggml's quantized bytes
    f32[n_rows*n_per_row]        ggml's to_float of those bytes
"""
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "reference"))
from ggml_quant_oracle import Oracle  # noqa: E402

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S",
         "IQ1_S", "IQ1_M", "F16", "BF16", "MXFP4", "NVFP4", "Q1_0", "Q2_0"]
N_PER_ROW = 512  # two super-blocks of 256, sixteen blocks of 32
# Types whose ggml quantizer ignores importance weights, written compactly: the rows together with
# and without weights (the weights must change nothing), then rows of their scale edge cases, with
# no single-row repeats.
COMPACT = {"MXFP4", "NVFP4", "Q1_0", "Q2_0"}


def rows(rng, n):
    """Ordinary and awkward rows, each n long."""
    g = rng.standard_normal(n).astype(np.float32) * 0.05
    out = {
        "gauss": g,
        "zeros": np.zeros(n, np.float32),
        "constant": np.full(n, 0.37, np.float32),
        "negative-constant": np.full(n, -1.25, np.float32),
        "outlier": np.where(np.arange(n) == 77, np.float32(90.0), g).astype(np.float32),
        "subnormal": (rng.standard_normal(n) * 1e-39).astype(np.float32),
        "tiny": (rng.standard_normal(n) * 1e-7).astype(np.float32),
        "ternary": rng.integers(-1, 2, n).astype(np.float32),
        "uniform-wide": rng.uniform(-100, 100, n).astype(np.float32),
        "half-zero": np.where(np.arange(n) % 2 == 0, g, 0).astype(np.float32),
        "sparse": np.where(rng.uniform(size=n) < 0.03, rng.standard_normal(n), 0).astype(np.float32),
        "heavy-tail": (rng.standard_t(2, n) * 0.02).astype(np.float32),
    }
    return out


def edge_rows(rng, n):
    """Scale edge cases of the MXFP4/NVFP4/Q1_0/Q2_0 conversions, each n long: block maxima
    where the E8M0 exponent wraps (2^-126 <= amax < 2^-125) or log2f rounds up to the next power
    of two, UE4M3 subnormal, saturating and rounding scales, ties between E2M1 codes, NaN and
    infinities."""
    g = rng.standard_normal(n).astype(np.float32)
    e = 2.0 ** np.arange(-8, 8)  # the code values of each power-of-two scale, and midpoints
    k = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0.5, 1.5, 2.5, 3.5, 5, 7, 10], np.float64)
    ties = (k[None, :] * e[:, None]).ravel()
    ties = np.concatenate([ties, -ties])
    nonfinite = g.copy()
    nonfinite[5::37] = np.inf
    nonfinite[11::41] = -np.inf
    nonfinite[17::43] = np.nan
    nonfinite[64:128] = np.nan  # a whole NaN block of 64 (and half a Q1_0 block)
    return {
        "e8m0-wrap": (g * 2.0 ** -128).astype(np.float32) + np.float32(2.0 ** -126) * (np.arange(n) % 32 == 0),
        "below-power-of-two": np.where(np.arange(n) % 32 == 3,
                                       np.float32(np.nextafter(np.float32(2.0 ** 100), np.float32(0))),
                                       g * 1e29).astype(np.float32),
        "ue4m3-ranges": (g * 10.0 ** ((np.arange(n) // 16) % 16 - 10.0)).astype(np.float32),
        "code-ties": np.resize(ties, n).astype(np.float32),
        "nonfinite": nonfinite.astype(np.float32),
    }


def main():
    o = Oracle()
    types = sys.argv[1:] or TYPES
    outdir = os.path.join(HERE, "..", "testdata", "quant")
    os.makedirs(outdir, exist_ok=True)
    for t in types:
        rng = np.random.default_rng(20261126)
        named = rows(rng, N_PER_ROW)
        x = np.stack(list(named.values()))
        # the imatrix: positive, uneven, a few zero columns (llama-imatrix gives those for unused inputs)
        w = (rng.uniform(0.0, 4.0, N_PER_ROW) ** 2).astype(np.float32)
        w[::53] = 0.0
        cases = []
        if t in COMPACT:
            cases.append(("all-rows", x, None))
            cases.append(("all-rows-imatrix", x, w))
            for name, r in edge_rows(rng, N_PER_ROW).items():
                cases.append((name, r[None, :], None))
            write(o, t, outdir, cases)
            continue
        if not o.requires_imatrix(t):
            cases.append(("all-rows", x, None))
        cases.append(("all-rows-imatrix", x, w))
        # a single row per awkward kind, with imatrix, so a failure names the kind
        for name, r in named.items():
            cases.append((name + "-imatrix", r[None, :], w))
            if not o.requires_imatrix(t):
                cases.append((name, r[None, :], None))
        write(o, t, outdir, cases)


def write(o, t, outdir, cases):
    path = os.path.join(outdir, f"{t}.golden")
    with open(path, "wb") as f:
        for name, m, imx in cases:
            blob = o.quantize(t, m, imatrix=imx)
            y = o.dequantize(t, blob, m.shape).astype(np.float32)
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb)
            f.write(struct.pack("<IIB", m.shape[0], m.shape[1], imx is not None))
            f.write(m.astype("<f4").tobytes())
            if imx is not None:
                f.write(imx.astype("<f4").tobytes())
            f.write(struct.pack("<I", len(blob)) + blob)
            f.write(y.astype("<f4").tobytes())
    print(f"{t}: {len(cases)} cases -> {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
