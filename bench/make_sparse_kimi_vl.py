#!/usr/bin/env python3
"""Builds a moonshotai/Kimi-VL-A3B-Instruct-shaped HF model folder as SPARSE files: the real
model's config keys, tensor names, shapes and dtype (BF16), safetensors headers and 7 shards
with an index, and all-zero data that takes no disk (the data region is made with truncate).

    python3 bench/make_sparse_kimi_vl.py OUT_DIR

For measuring gmat on the real model's layout without a 31 GB download
(bench/kimi_vl_replica.sh, example/kimi2/README.md). Dimensions (Kimi-VL-A3B-Instruct's
config.json): text hidden 2048, 27 layers (layer 0 dense, FFN 11264), 16 heads (MLA: qk_nope
128 + qk_rope 64, v 128, kv_lora_rank 512, no q_lora), 64 routed experts top-6 and 2 shared
(expert FFN 1408), vocab 163840, untied lm_head; MoonViT hidden 1152, 27 blocks, 16 heads, FFN
4304, patch 14, 64x64 positions; projector 4608 -> 4608 -> 2048. Tokenizer: the reference kit's
GPT-2 BPE (kimivl-tiny), padded to the vocabulary, since Kimi's own is tiktoken-based.
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from make_kimi2_example import config, tensors  # noqa: E402
from sparse import write_sparse_shards  # noqa: E402

KIT = os.path.join(HERE, "..", "..", "shared", "reference", "models", "kimivl-tiny", "hf")
TEXT = dict(
    hidden_size=2048, intermediate_size=11264, moe_intermediate_size=1408, num_hidden_layers=27,
    num_attention_heads=16, num_key_value_heads=16, qk_nope_head_dim=128, qk_rope_head_dim=64,
    v_head_dim=128, kv_lora_rank=512, q_lora_rank=None, n_routed_experts=64,
    num_experts_per_tok=6, n_shared_experts=2, first_k_dense_replace=1, vocab_size=163840,
)
VISION = dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16,
              intermediate_size=4304, patch_size=14, pos=64)
SHARDS = 7


def main():
    out = sys.argv[1]
    shapes = tensors(TEXT, VISION, tie=False)
    total, files = write_sparse_shards(out, shapes, SHARDS, metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config(TEXT, VISION, tie=False), f, indent=2)
    for n in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json"]:
        shutil.copyfile(os.path.join(KIT, n), os.path.join(out, n))
    print(f"{out}: {total / 2 / 1e9:.2f}B parameters, {len(shapes)} tensors, "
          f"{total / 2**30:.1f} GiB apparent, {files} sparse shards")


if __name__ == "__main__":
    main()
