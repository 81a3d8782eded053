#!/usr/bin/env python3
"""Builds a Llama-3-70B-shaped HF model folder as SPARSE files: real names, shapes, dtypes and
safetensors headers, all-zero data that takes no disk (the data region is made with truncate).

    python3 bench/make_sparse_model.py OUT_DIR [--layers 80] [--shards 30]

For checking that gmat's memory stays flat at 70B scale without a 140 GB download
(bench/sparse70b.sh). Tokenizer files are copied from the reference kit's llama-tiny (vocab
3000); config.json says vocab_size 128256 like the real model, which the tokenizer pads.
"""
import argparse
import json
import os
import shutil

from sparse import write_sparse_shards

HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.path.join(HERE, "..", "..", "shared", "reference", "models", "llama-tiny", "hf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=80)
    ap.add_argument("--shards", type=int, default=30)
    a = ap.parse_args()
    hidden, ffn, heads, kv, vocab = 8192, 28672, 64, 8, 128256
    hd = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
              "model.norm.weight": (hidden,)}
    for i in range(a.layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * hd, hidden), p + "self_attn.k_proj.weight": (kv * hd, hidden),
            p + "self_attn.v_proj.weight": (kv * hd, hidden), p + "self_attn.o_proj.weight": (hidden, heads * hd),
            p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
            p + "mlp.down_proj.weight": (hidden, ffn)})
    total, files = write_sparse_shards(a.out, {n: shapes[n] for n in sorted(shapes)}, a.shards)
    cfg = {"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
           "hidden_size": hidden, "intermediate_size": ffn, "max_position_embeddings": 131072,
           "model_type": "llama", "num_attention_heads": heads, "num_hidden_layers": a.layers,
           "num_key_value_heads": kv, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
           "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
           "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": vocab}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for n in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copyfile(os.path.join(KIT, n), os.path.join(a.out, n))
    print(f"{a.out}: {total / 2 / 1e9:.1f}B parameters, {total / 2**30:.1f} GiB apparent, {files} sparse shards")


if __name__ == "__main__":
    main()
