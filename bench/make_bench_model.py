#!/usr/bin/env python3
"""Generates a llama-shaped BF16 HF model of about 1 GB in 3 safetensors shards, for bench/run.sh.

    python3 bench/make_bench_model.py OUT_DIR [--layers N] [--hidden H] [--ffn F]

Random normal weights (seeded), a real SentencePiece tokenizer copied from the reference kit
(../shared/reference/models/llama-tiny/hf), config.json and model.safetensors.index.json as
transformers' save_pretrained writes them. Needs numpy.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.path.join(HERE, "..", "..", "shared", "reference", "models", "llama-tiny", "hf")


def bf16(x):
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=11)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--shards", type=int, default=3)
    a = ap.parse_args()
    vocab, hd = 3000, a.hidden // a.heads
    shapes = {"model.embed_tokens.weight": (vocab, a.hidden), "lm_head.weight": (vocab, a.hidden),
              "model.norm.weight": (a.hidden,)}
    for i in range(a.layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (a.hidden,), p + "post_attention_layernorm.weight": (a.hidden,),
            p + "self_attn.q_proj.weight": (a.heads * hd, a.hidden),
            p + "self_attn.k_proj.weight": (a.kv_heads * hd, a.hidden),
            p + "self_attn.v_proj.weight": (a.kv_heads * hd, a.hidden),
            p + "self_attn.o_proj.weight": (a.hidden, a.heads * hd),
            p + "mlp.gate_proj.weight": (a.ffn, a.hidden), p + "mlp.up_proj.weight": (a.ffn, a.hidden),
            p + "mlp.down_proj.weight": (a.hidden, a.ffn)})
    names = sorted(shapes)
    total = sum(int(np.prod(s)) for s in shapes.values())
    per_shard = total / a.shards
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(7)
    groups, cur, acc = [], [], 0
    for n in names:
        cur.append(n)
        acc += int(np.prod(shapes[n]))
        if acc >= per_shard * (len(groups) + 1) and len(groups) < a.shards - 1:
            groups.append(cur)
            cur = []
    groups.append(cur)
    weight_map = {}
    for k, g in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        header, off = {}, 0
        for n in g:
            nbytes = int(np.prod(shapes[n])) * 2
            header[n] = {"dtype": "BF16", "shape": list(shapes[n]), "data_offsets": [off, off + nbytes]}
            off += nbytes
            weight_map[n] = fname
        header["__metadata__"] = {"format": "pt"}
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for n in g:
                if n.endswith("norm.weight"):
                    x = (1 + 0.1 * rng.standard_normal(shapes[n])).astype(np.float32)
                else:
                    x = (rng.standard_normal(shapes[n]) * 0.02).astype(np.float32)
                f.write(bf16(x))
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total * 2}, "weight_map": weight_map}, f, indent=2)
    cfg = {"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "head_dim": hd,
           "hidden_act": "silu", "hidden_size": a.hidden, "intermediate_size": a.ffn,
           "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": a.heads,
           "num_hidden_layers": a.layers, "num_key_value_heads": a.kv_heads, "rms_norm_eps": 1e-05,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": vocab}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for n in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copyfile(os.path.join(KIT, n), os.path.join(a.out, n))
    print(f"{a.out}: {total / 1e6:.0f}M parameters, {total * 2 / 2**30:.2f} GiB BF16 in {len(groups)} shards")


if __name__ == "__main__":
    main()
