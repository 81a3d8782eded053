#!/usr/bin/env python3
"""Builds an openai/gpt-oss-20b- or gpt-oss-120b-shaped HF model folder as SPARSE files: the real
model's config, tensor names, shapes and dtypes (BF16 attention, router, embeddings and biases;
expert weights as MXFP4 `_blocks` + `_scales` in U8), safetensors headers and shards with an
index, and all-zero data that takes no disk.

    python3 bench/make_sparse_gpt_oss.py OUT_DIR [20b|120b] [TOKENIZER_DIR]

For measuring gmat on the real model's layout without the download (bench/gpt_oss_replica.sh).
Dimensions from the models' config.json: hidden 2880, 64 query heads and 8 KV heads of 64,
expert FFN 2880, vocabulary 201088, untied lm_head, sliding window 128 on every other layer,
YaRN x32 over 4096; 20b: 24 layers, 32 experts; 120b: 36 layers, 128 experts; both top-4.
TOKENIZER_DIR (tools/make_o200k_tokenizer.py's output) gives gpt-oss's own tokenizer; without
it the reference kit's GPT-2 BPE (deepseek2-tiny) is used, padded to the vocabulary.
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sparse import write_sparse_shards  # noqa: E402

KIT = os.path.join(HERE, "..", "..", "shared", "reference", "models", "deepseek2-tiny", "hf")
SIZES = {"20b": dict(layers=24, experts=32, shards=3), "120b": dict(layers=36, experts=128, shards=15)}
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB = 2880, 64, 8, 64, 2880, 201088


def tensors(layers, experts):
    """name -> (shape, dtype), sorted by name as in OpenAI's checkpoint."""
    t = {"model.embed_tokens.weight": ([VOCAB, HIDDEN], "BF16"), "model.norm.weight": ([HIDDEN], "BF16"),
         "lm_head.weight": ([VOCAB, HIDDEN], "BF16")}
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ([HIDDEN], "BF16")
        t[p + "post_attention_layernorm.weight"] = ([HIDDEN], "BF16")
        for name, rows, cols in (("q_proj", q, HIDDEN), ("k_proj", kv, HIDDEN), ("v_proj", kv, HIDDEN),
                                 ("o_proj", HIDDEN, q)):
            t[p + f"self_attn.{name}.weight"] = ([rows, cols], "BF16")
            t[p + f"self_attn.{name}.bias"] = ([rows], "BF16")
        t[p + "self_attn.sinks"] = ([HEADS], "BF16")
        t[p + "mlp.router.weight"] = ([experts, HIDDEN], "BF16")
        t[p + "mlp.router.bias"] = ([experts], "BF16")
        for name, rows, cols in (("gate_up_proj", 2 * FFN, HIDDEN), ("down_proj", HIDDEN, FFN)):
            t[p + f"mlp.experts.{name}_blocks"] = ([experts, rows, cols // 32, 16], "U8")
            t[p + f"mlp.experts.{name}_scales"] = ([experts, rows, cols // 32], "U8")
            t[p + f"mlp.experts.{name}_bias"] = ([experts, rows], "BF16")
    return dict(sorted(t.items()))


def config(layers, experts):
    return {
        "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
        "eos_token_id": 200002, "experts_per_token": 4, "head_dim": HEAD_DIM, "hidden_act": "silu",
        "hidden_size": HIDDEN, "initial_context_length": 4096, "initializer_range": 0.02,
        "intermediate_size": FFN,
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": HEADS,
        "num_experts_per_tok": 4, "num_hidden_layers": layers, "num_key_value_heads": KV_HEADS,
        "num_local_experts": experts, "output_router_logits": False, "pad_token_id": 199999,
        "quantization_config": {
            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"],
            "quant_method": "mxfp4"},
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                         "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": False},
        "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
        "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0", "use_cache": True,
        "vocab_size": VOCAB,
    }


def main():
    out = sys.argv[1]
    size = SIZES[sys.argv[2] if len(sys.argv) > 2 else "20b"]
    tokdir = sys.argv[3] if len(sys.argv) > 3 else KIT
    spec = tensors(size["layers"], size["experts"])
    shapes = {n: s for n, (s, _) in spec.items()}
    dtypes = {n: d for n, (_, d) in spec.items()}
    total, files = write_sparse_shards(out, shapes, size["shards"], metadata={"format": "pt"}, dtypes=dtypes)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config(size["layers"], size["experts"]), f, indent=2)
    for n in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copyfile(os.path.join(tokdir, n), os.path.join(out, n))
    print(f"{out}: {len(spec)} tensors, {total / 2**30:.1f} GiB apparent, {files} sparse shards")


if __name__ == "__main__":
    main()
