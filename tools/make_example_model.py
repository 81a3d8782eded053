#!/usr/bin/env python3
"""Writes example/tiny_llm: a small Llama-architecture HF model folder for gmat's README,
tests and `make example`.

    python3 tools/make_example_model.py            # needs numpy only

Weights are random (seeded, so re-running gives the same bytes) and stored as BF16 in
model.safetensors, written the way transformers' save_pretrained lays the file out (sorted
keys, contiguous data). The tokenizer is a real SentencePiece BPE tokenizer (vocab 3000, byte
fallback), the one of the reference kit's llama-tiny (../shared/reference/models/llama-tiny/hf,
made by the steering repo's tools/ref/make_spm_tokenizer.py); its files are copied verbatim.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "example", "tiny_llm")
KIT_TOKENIZER = os.path.join(HERE, "..", "..", "shared", "reference", "models", "llama-tiny", "hf")

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 128, 384, 2, 4, 2, 3000
HEAD_DIM = HIDDEN // HEADS


def bf16_bytes(x):
    """float32 -> bf16 bytes, round to nearest even (as torch does)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return u.astype("<u2").tobytes()


def main():
    rng = np.random.default_rng(20261126)
    t = {}

    def w(name, *shape, std=0.05):
        t[name] = (rng.standard_normal(shape) * std).astype(np.float32)

    def norm(name, n):
        t[name] = (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w("model.embed_tokens.weight", VOCAB, HIDDEN)
    w("lm_head.weight", VOCAB, HIDDEN)
    norm("model.norm.weight", HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        norm(p + "input_layernorm.weight", HIDDEN)
        norm(p + "post_attention_layernorm.weight", HIDDEN)
        w(p + "self_attn.q_proj.weight", HEADS * HEAD_DIM, HIDDEN)
        w(p + "self_attn.k_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN)
        w(p + "self_attn.v_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN)
        w(p + "self_attn.o_proj.weight", HIDDEN, HEADS * HEAD_DIM)
        w(p + "mlp.gate_proj.weight", FFN, HIDDEN)
        w(p + "mlp.up_proj.weight", FFN, HIDDEN)
        w(p + "mlp.down_proj.weight", HIDDEN, FFN)

    header, blobs, off = {}, [], 0
    for name in sorted(t):
        b = bf16_bytes(t[name])
        header[name] = {"dtype": "BF16", "shape": list(t[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)

    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.05,
        "intermediate_size": FFN,
        "max_position_embeddings": 2048,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.57.6",
        "use_cache": True,
        "vocab_size": VOCAB,
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "generation_config.json"), "w") as f:
        json.dump({"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2,
                   "transformers_version": "4.57.6"}, f, indent=2)
        f.write("\n")
    for name in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        src = os.path.join(KIT_TOKENIZER, name)
        if not os.path.exists(src):
            sys.exit(f"missing {src}: the tokenizer comes from the reference kit")
        shutil.copyfile(src, os.path.join(OUT, name))
    print(f"wrote {os.path.relpath(OUT)}: {len(t)} tensors, {off} bytes of BF16 weights")


if __name__ == "__main__":
    main()
