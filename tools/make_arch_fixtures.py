#!/usr/bin/env python3
"""Writes testdata/arch/: one small fixture per architecture shape, checked by
tests/arch_fixtures.rs without Python, the reference kit or any weights in the repository.

    source ~/.cache/gmat-ref/env.sh          # the llama.cpp reference (b11312)
    $REF_PY tools/make_arch_fixtures.py [NAME ...]   # default: every fixture in FIXTURES

Never run in CI: it needs torch, transformers 4.57.6, the reference convert_hf_to_gguf.py
($REF_CONVERT) and llama-quantize (on PATH).

For each fixture of the FIXTURES table it
  1. builds a tiny HF model with transformers from a config dict (`from_config` of the listed
     class, in the listed dtype) and saves it with `save_pretrained(safe_serialization=True)`;
  2. rewrites model.safetensors with the same names, dtypes, shapes, order and metadata, but
     every tensor's values drawn from the deterministic generator below (plus the fixture's
     `extra_tensors`, e.g. an MTP layer the converter must drop);
  3. copies in the shared tokenizer (testdata/arch/tokenizers/<name>/) and side files
     (sentence-transformers pooling configs);
  4. runs the reference route of gmat's compatibility contract (wiki/Home.md) through a
     symlink named after the fixture: `convert_hf_to_gguf.py LINK --outtype <source dtype>`
     (bf16, f16 or f32; an F16 fixture also gets `--outtype bf16`), then `llama-quantize` of
     that file to Q8_0 and Q4_K_M and `llama-quantize --pure` to Q6_K; and the converter's own
     `--outtype q8_0` ("Q8_0-convert");
  5. writes testdata/arch/<name>/: config.json (as saved), other side files, fixture.json
     (tokenizer, class, dtype, what it exercises), tensors.json ([name, dtype, shape] in
     file-data order), expected.json (a digest of each reference GGUF, below) and README.md.

Deterministic generator (tests/common/mod.rs `fixture_values` is the Rust twin; keep both
identical). Per tensor: seed = FNV-1a 64 of the tensor name's UTF-8 bytes (offset basis
0xcbf29ce484222325, prime 0x100000001b3), 1 if that is 0. Per element, advance xorshift64*
(x ^= x >> 12; x ^= x << 25; x ^= x >> 27; r = x * 0x2545F4914F6CDD1D mod 2^64) and take
sign = r >> 63, e = (r >> 59) & 7:
    BF16 bits = sign << 15 | (119 + e) << 7  | ((r >> 32) & 0x7f)
    F16 bits  = sign << 15 | (7 + e) << 10   | ((r >> 32) & 0x3ff)
    F32 bits  = (BF16 bits) << 16
All finite, magnitudes about 2^-8 .. 2^0. Norm weights and biases get the same treatment.

Digest (expected.json `outputs.<label>`; tests/common/mod.rs `gguf_digest` is the Rust twin):
  metadata: [[key, type, value], ...] in file order; type is the GGUF value type name
            (UINT8 .. FLOAT64, BOOL, STRING, ARRAY); scalars and strings verbatim; an array is
            {"type": element type name, "len": n, "sha256": hex} over its canonical bytes: each
            element as GGUF stores it (numbers little-endian in their own width, bool one byte,
            string u64 LE byte length + UTF-8 bytes).
  tensors:  [[name, ggml type id, dims (ggml order), sha256 hex of the data bytes], ...] in
            file order.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
OUT = os.path.join(ROOT, "testdata", "arch")
TOKDIR = os.path.join(OUT, "tokenizers")
KIT = os.path.normpath(os.path.join(ROOT, "..", "shared", "reference", "models"))
SPM_SOURCE = os.path.join(ROOT, "example", "tiny_llm")
BERT_SOURCE = os.path.join(KIT, "bert-tiny", "hf")

M64 = (1 << 64) - 1

# ---------------------------------------------------------------------------------------------
# the generator


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def fixture_u64(name: str, n: int) -> np.ndarray:
    x = fnv1a64(name.encode("utf-8")) or 1
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        x ^= x >> 12
        x ^= (x << 25) & M64
        x ^= x >> 27
        out[i] = (x * 0x2545F4914F6CDD1D) & M64
    return out


def fixture_bits(name: str, dtype: str, n: int) -> bytes:
    """The little-endian bytes of n values of `dtype` (safetensors name) for tensor `name`."""
    r = fixture_u64(name, n)
    sign = (r >> np.uint64(63)) & np.uint64(1)
    e = (r >> np.uint64(59)) & np.uint64(7)
    hi = r >> np.uint64(32)
    if dtype in ("BF16", "F32"):
        bits = (sign << np.uint64(15)) | ((np.uint64(119) + e) << np.uint64(7)) | (hi & np.uint64(0x7F))
        if dtype == "BF16":
            return bits.astype("<u2").tobytes()
        return (bits << np.uint64(16)).astype("<u4").tobytes()
    if dtype == "F16":
        bits = (sign << np.uint64(15)) | ((np.uint64(7) + e) << np.uint64(10)) | (hi & np.uint64(0x3FF))
        return bits.astype("<u2").tobytes()
    if dtype == "U8":
        # MXFP4 checkpoints: E8M0 scales near 2^0, any 4-bit codes
        if name.endswith("_scales"):
            return (np.uint64(119) + e).astype("u1").tobytes()
        return (hi & np.uint64(0xFF)).astype("u1").tobytes()
    if dtype == "F8_E4M3":
        bits = (sign << np.uint64(7)) | ((e % np.uint64(6) + np.uint64(4)) << np.uint64(3)) | (hi & np.uint64(7))
        return bits.astype("u1").tobytes()
    raise SystemExit(f"{name}: no generator for dtype {dtype}")


# ---------------------------------------------------------------------------------------------
# the fixtures

SPM_VOCAB = 3000
BERT_VOCAB = 30522

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

FIXTURES = [
    {
        "name": "llama-gqa-bias",
        "class": "LlamaForCausalLM",
        "tokenizer": "spm",
        "exercises": "Llama with GQA (4 q / 2 kv heads), q/k/v/o biases (attention_bias: the Q/K "
        "permutation of 1-D tensors), untied output, Llama-3 RoPE scaling (generated rope_freqs), "
        "n_ff 256 (K-quants on ffn_down)",
        "config": dict(
            model_type="llama", vocab_size=SPM_VOCAB, hidden_size=64, intermediate_size=256,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            attention_bias=True, tie_word_embeddings=False, rope_theta=500000.0,
            max_position_embeddings=131072, rope_scaling=LLAMA3_ROPE, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2,
        ),
    },
    {
        "name": "mixtral-moe",
        "class": "MixtralForCausalLM",
        "tokenizer": "spm",
        "exercises": "Mixtral: 4 experts (w1/w2/w3 stacked per layer), top-2 router, 2 layers",
        "config": dict(
            model_type="mixtral", vocab_size=SPM_VOCAB, hidden_size=64, intermediate_size=96,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False,
            max_position_embeddings=4096, rope_theta=1000000.0, bos_token_id=1, eos_token_id=2,
        ),
    },
    {
        "name": "qwen2-bias",
        "class": "Qwen2ForCausalLM",
        "tokenizer": "spm",
        "exercises": "Qwen2 with q/k/v biases, untied output, a SentencePiece vocabulary "
        "(_set_vocab_sentencepiece_or_gpt2 takes the SentencePiece branch) without tokenizer.json "
        "(special tokens from tokenizer_config.json only)",
        "omit": ["tokenizer.json"],
        "config": dict(
            model_type="qwen2", vocab_size=SPM_VOCAB, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            tie_word_embeddings=False, max_position_embeddings=4096, rope_theta=1000000.0,
            bos_token_id=1, eos_token_id=2,
        ),
    },
    {
        "name": "qwen3-tied",
        "class": "Qwen3ForCausalLM",
        "tokenizer": "spm",
        "exercises": "Qwen3, tied embeddings, Q/K norms, head_dim 32 != hidden/heads (16)",
        "config": dict(
            model_type="qwen3", vocab_size=SPM_VOCAB, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            tie_word_embeddings=True, max_position_embeddings=4096, rope_theta=1000000.0,
            bos_token_id=1, eos_token_id=2,
        ),
    },
    {
        "name": "qwen2moe-shared",
        "class": "Qwen2MoeForCausalLM",
        "tokenizer": "wordpiece",
        "exercises": "Qwen2-MoE: 4 routed experts stacked per layer, a shared expert and its "
        "sigmoid gate (shared_expert_gate), expert and shared FFN lengths, q/k/v biases, "
        "a BPE-path (AutoTokenizer) vocabulary with id gaps",
        "config": dict(
            model_type="qwen2_moe", vocab_size=BERT_VOCAB, hidden_size=32, intermediate_size=64,
            moe_intermediate_size=32, shared_expert_intermediate_size=48,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1,
            tie_word_embeddings=False, max_position_embeddings=4096, rope_theta=1000000.0,
            bos_token_id=101, eos_token_id=102,
        ),
    },
    {
        "name": "qwen3moe-untied",
        "class": "Qwen3MoeForCausalLM",
        "tokenizer": "wordpiece",
        "exercises": "Qwen3-MoE: 4 experts, untied output, Q/K norms, norm_topk_prob",
        "config": dict(
            model_type="qwen3_moe", vocab_size=BERT_VOCAB, hidden_size=32, intermediate_size=64,
            moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
            norm_topk_prob=True, decoder_sparse_step=1, tie_word_embeddings=False,
            max_position_embeddings=4096, rope_theta=1000000.0,
            bos_token_id=101, eos_token_id=102,
        ),
    },
    {
        "name": "gemma2",
        "class": "Gemma2ForCausalLM",
        "tokenizer": "spm",
        "exercises": "Gemma 2: norm + 1 in bf16, soft-capping keys, sliding window, post norms",
        "config": dict(
            model_type="gemma2", vocab_size=SPM_VOCAB, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=4096, sliding_window=512, query_pre_attn_scalar=16,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
    },
    {
        "name": "gemma3-padvocab",
        "class": "Gemma3ForCausalLM",
        "tokenizer": "spm",
        "exercises": "Gemma 3 whose embed_tokens has 3072 rows for a 3000-piece SentencePiece "
        "model: the converter pads the token list with [PAD{i}] up to vocab_size, so n_vocab_real "
        "is 3072 and nothing is trimmed; local RoPE base, Q/K norms",
        "config": dict(
            model_type="gemma3_text", vocab_size=3072, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=4096, sliding_window=256, query_pre_attn_scalar=16,
            rope_local_base_freq=10000.0, rope_theta=1000000.0,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
    },
    {
        "name": "gemma3-f16",
        "class": "Gemma3ForCausalLM",
        "tokenizer": "spm",
        "dtype": "float16",
        "exercises": "Gemma 3 stored in F16: norm + 1 in f16 arithmetic, exported as F16 and as "
        "BF16 (f16 values rounded to bf16), quantized types from the F16 intermediate",
        "config": dict(
            model_type="gemma3_text", vocab_size=SPM_VOCAB, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=4096, sliding_window=256, query_pre_attn_scalar=16,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
    },
    {
        "name": "gemma3-trim",
        "class": "Gemma3ForCausalLM",
        "tokenizer": "wordpiece",
        "exercises": "Gemma 3 without tokenizer.model: _set_vocab_gpt2, and token_embd trimmed "
        "to len(tokenizer.json model.vocab) + len(added_tokens) rows (the converter's n_vocab_real)",
        "config": dict(
            model_type="gemma3_text", vocab_size=BERT_VOCAB, hidden_size=32, intermediate_size=64,
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=4096, sliding_window=256, query_pre_attn_scalar=16,
            bos_token_id=101, eos_token_id=102, pad_token_id=0,
        ),
    },
    {
        "name": "gemma3-vlm",
        "class": "Gemma3ForConditionalGeneration",
        "tokenizer": "spm",
        "exercises": "Gemma3ForConditionalGeneration: text_config merged, language_model. prefix, "
        "vision tower and projector dropped",
        "config": dict(
            model_type="gemma3",
            text_config=dict(
                model_type="gemma3_text", vocab_size=SPM_VOCAB, hidden_size=64,
                intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                sliding_window=256, query_pre_attn_scalar=16,
            ),
            vision_config=dict(
                model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14,
            ),
            mm_tokens_per_image=4, boi_token_index=1, eoi_token_index=2, image_token_index=2999,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
    },
    {
        "name": "phi3-longrope",
        "class": "Phi3ForCausalLM",
        "tokenizer": "spm",
        "exercises": "Phi-3 with LongRoPE (original context 512 < 4096): rope_factors_long/short "
        "tensors and rope.scaling.attn_factor; partial_rotary_factor 0.5 (rope dims 8); fused "
        "qkv and gate_up; sliding window",
        "config": dict(
            model_type="phi3", vocab_size=SPM_VOCAB, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=4096, original_max_position_embeddings=512,
            partial_rotary_factor=0.5, sliding_window=2047, tie_word_embeddings=False,
            rope_scaling={
                "type": "longrope",
                "long_factor": [1.0, 1.25, 2.5, 7.75],
                "short_factor": [1.0, 1.0625, 1.125, 1.5],
            },
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
    },
    {
        "name": "deepseek3-mla",
        "class": "DeepseekV3ForCausalLM",
        "tokenizer": "wordpiece",
        "exercises": "DeepSeek-V3 (bf16, not FP8): q_lora_rank (q_a/q_b with norm), MLA kv_b split, "
        "first_k_dense_replace 1, sigmoid scoring with e_score_correction_bias, n_group/topk_group, "
        "shared expert, YaRN with mscale_all_dim, untied; MTP tensors of layer 2 "
        "(== num_hidden_layers) in the file are dropped",
        "config": dict(
            model_type="deepseek_v3", vocab_size=BERT_VOCAB, hidden_size=32, intermediate_size=64,
            moe_intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16,
            qk_rope_head_dim=8, v_head_dim=16, head_dim=8, n_routed_experts=4, n_shared_experts=1,
            num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1,
            routed_scaling_factor=2.5, norm_topk_prob=True, scoring_func="sigmoid",
            topk_method="noaux_tc", num_nextn_predict_layers=1, tie_word_embeddings=False,
            max_position_embeddings=16384, rope_theta=10000.0,
            rope_scaling={
                "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
                "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
            },
            bos_token_id=101, eos_token_id=102,
        ),
        # multi-token-prediction layer 2 (== num_hidden_layers): the converter skips it
        "extra_tensors": [
            ("model.layers.2.enorm.weight", [32]),
            ("model.layers.2.hnorm.weight", [32]),
            ("model.layers.2.eh_proj.weight", [32, 64]),
            ("model.layers.2.self_attn.q_a_proj.weight", [24, 32]),
            ("model.layers.2.mlp.experts.0.down_proj.weight", [32, 16]),
            ("model.layers.2.shared_head.norm.weight", [32]),
        ],
    },
    {
        "name": "deepseek3-fp8-blocks",
        "class": "DeepseekV3ForCausalLM",
        "tokenizer": "wordpiece",
        "exercises": "DeepSeek-V3 shipped as FP8 (F8_E4M3 Linear weights with F32 weight_scale_inv, "
        "quantization_config fp8 with 16x16 blocks): dequantized with partial edge blocks in both "
        "directions (72-row FFN, 24-row q_a/kv_a/experts), before the kv_b split and the expert "
        "stacks; quantized types through the BF16 intermediate",
        "fp8": {"block": [16, 16]},
        "config": dict(
            model_type="deepseek_v3", vocab_size=BERT_VOCAB, hidden_size=32, intermediate_size=72,
            moe_intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16,
            qk_rope_head_dim=8, v_head_dim=16, head_dim=8, n_routed_experts=4, n_shared_experts=1,
            num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1,
            routed_scaling_factor=2.5, norm_topk_prob=True, scoring_func="sigmoid",
            topk_method="noaux_tc", tie_word_embeddings=True,
            max_position_embeddings=16384, rope_theta=10000.0,
            bos_token_id=101, eos_token_id=102,
        ),
    },
    {
        "name": "gpt-oss-mxfp4",
        "class": "GptOssForCausalLM",
        "tokenizer": "wordpiece",
        "exercises": "gpt-oss shipped as OpenAI ships it: MXFP4 experts (gate_up_proj/down_proj "
        "_blocks + _scales) repacked into ggml MXFP4 without requantizing (gate/up interleaved "
        "rows split), expert biases split even/odd, attention sinks, router with bias, "
        "alternating sliding-window layers, YaRN; float files written as MXFP4_MOE",
        "mxfp4": True,
        "config": dict(
            model_type="gpt_oss", vocab_size=BERT_VOCAB, hidden_size=64, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            num_local_experts=4, num_experts_per_tok=2, sliding_window=32,
            layer_types=["sliding_attention", "full_attention"], max_position_embeddings=4096,
            rope_theta=150000.0,
            rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                          "truncate": False, "original_max_position_embeddings": 4096},
            tie_word_embeddings=False, bos_token_id=101, eos_token_id=102, pad_token_id=0,
        ),
    },
    {
        "name": "gpt-oss-bf16",
        "class": "GptOssForCausalLM",
        "tokenizer": "wordpiece",
        "exercises": "gpt-oss with BF16 experts (a fine-tune saved by transformers): "
        "gate_up_proj [experts, hidden, 2 ff] transposed and split into even (gate) and odd (up) "
        "rows, down_proj transposed, biases split even/odd, attention sinks",
        "config": dict(
            model_type="gpt_oss", vocab_size=BERT_VOCAB, hidden_size=64, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            num_local_experts=4, num_experts_per_tok=2, sliding_window=32,
            layer_types=["sliding_attention", "full_attention"], max_position_embeddings=4096,
            rope_theta=150000.0,
            rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                          "truncate": False, "original_max_position_embeddings": 4096},
            tie_word_embeddings=False, bos_token_id=101, eos_token_id=102, pad_token_id=0,
        ),
    },
    {
        "name": "bert-mlm-cls",
        "class": "BertForMaskedLM",
        "tokenizer": "wordpiece",
        "dtype": "float32",
        "exercises": "BertForMaskedLM in F32: cls.predictions.* dropped, bert. prefix removed, "
        "CLS pooling from 1_Pooling/config.json, WordPiece phantom-space vocabulary with id gaps",
        "config": dict(
            model_type="bert", vocab_size=BERT_VOCAB, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=128,
            type_vocab_size=2, pad_token_id=0,
        ),
        "pooling": {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
    },
    {
        "name": "bert-mean",
        "class": "BertModel",
        "tokenizer": "wordpiece",
        "dtype": "float32",
        "exercises": "BertModel in F32 with its pooler (dropped), mean pooling, 1 token type",
        "config": dict(
            model_type="bert", vocab_size=BERT_VOCAB, hidden_size=32, intermediate_size=64,
            num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=64,
            type_vocab_size=1, pad_token_id=0,
        ),
        "pooling": {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True},
    },
]

# What each output is: (label, gmat export arguments, how the reference made it). The
# compatibility contract (wiki/Home.md): float types as `convert_hf_to_gguf.py --outtype`,
# quantized types as llama-quantize applied to `--outtype <source dtype>`. Q8_0 is also
# compared with the converter's own `--outtype q8_0` ("Q8_0-convert"), except for FP8 checkpoints:
# there the converter's q8_0 quantizes the f32 dequantized values while llama-quantize reads the
# BF16 file, and gmat's Q8_0 follows llama-quantize.
def outputs(src, fx=None):
    lo = src.lower()
    outs = [(src, ["--type", src], f"convert_hf_to_gguf.py --outtype {lo}")]
    if src == "F16":
        outs.append(("BF16", ["--type", "BF16"], "convert_hf_to_gguf.py --outtype bf16"))
    outs += [
        ("Q8_0", ["--type", "Q8_0"], f"llama-quantize <{lo}> Q8_0"),
        ("Q8_0-convert", ["--type", "Q8_0"], "convert_hf_to_gguf.py --outtype q8_0"),
        ("Q4_K_M", ["--type", "Q4_K_M"], f"llama-quantize <{lo}> Q4_K_M"),
        ("Q6_K-pure", ["--type", "Q6_K", "--pure"], f"llama-quantize --pure <{lo}> Q6_K"),
    ]
    if fx is not None and ("fp8" in fx or fx.get("mxfp4")):
        outs = [o for o in outs if o[0] != "Q8_0-convert"]
    if fx is not None and fx.get("mxfp4"):
        # MXFP4 experts stay MXFP4 in the converter's float files (written as MXFP4_MOE);
        # llama-quantize refuses to requantize them unless --allow-requantize. Its default
        # outtype (f16) and llama-quantize's MXFP4_MOE (experts copied) are checked too.
        outs = [
            (label, args + ["--allow-requantize"], how.replace("llama-quantize", "llama-quantize --allow-requantize"))
            if how.startswith("llama-quantize") else (label, args, how)
            for label, args, how in outs
        ]
        outs.insert(1, ("F16", ["--type", "F16"], "convert_hf_to_gguf.py --outtype f16"))
        outs.append(("MXFP4_MOE", ["--type", "MXFP4_MOE"], f"llama-quantize <{lo}> MXFP4_MOE"))
    return outs


# ---------------------------------------------------------------------------------------------
# tokenizers

CHKTXT = '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'

SPM_FILES = ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
WORDPIECE_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def make_tokenizers():
    """spm: example/tiny_llm's SentencePiece model. wordpiece: the kit's BERT WordPiece
    tokenizer cut down to the pieces the converter's pre-tokenizer check (chktxt) uses plus the
    special tokens, each keeping its id: the chktxt hash (jina-v2-en) is unchanged and the file is
    a few KB; the converter fills the id gaps with [PAD{i}] (UNUSED)."""
    from transformers import AutoTokenizer

    spm = os.path.join(TOKDIR, "spm")
    os.makedirs(spm, exist_ok=True)
    for f in SPM_FILES:
        if f == "tokenizer.json":
            # minified (98 KB instead of 258 KB); the same JSON value
            with open(os.path.join(SPM_SOURCE, f), encoding="utf-8") as src:
                tj = json.load(src)
            with open(os.path.join(spm, f), "w", encoding="utf-8") as dst:
                json.dump(tj, dst, ensure_ascii=False, separators=(",", ":"))
                dst.write("\n")
        else:
            shutil.copyfile(os.path.join(SPM_SOURCE, f), os.path.join(spm, f))

    wp = os.path.join(TOKDIR, "wordpiece")
    os.makedirs(wp, exist_ok=True)
    full = AutoTokenizer.from_pretrained(BERT_SOURCE)
    ids = full.encode(CHKTXT)
    keep = set(ids) | {0, 100, 101, 102, 103}
    with open(os.path.join(BERT_SOURCE, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["model"]["vocab"] = {t: i for t, i in tj["model"]["vocab"].items() if i in keep}
    with open(os.path.join(wp, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for f in WORDPIECE_FILES[1:]:
        shutil.copyfile(os.path.join(BERT_SOURCE, f), os.path.join(wp, f))
    cut = AutoTokenizer.from_pretrained(wp)
    assert cut.encode(CHKTXT) == ids, "the cut WordPiece vocabulary tokenizes chktxt differently"
    with open(os.path.join(TOKDIR, "README.md"), "w") as f:
        f.write(TOKENIZERS_README)


TOKENIZERS_README = """# Tokenizers shared by the arch fixtures

Written by `tools/make_arch_fixtures.py`; a fixture names one in its `fixture.json`
(`"tokenizer"`), and its files are copied into the HF folder beside config.json.

- `spm/`: the 3000-piece SentencePiece BPE model (byte fallback) of `example/tiny_llm`
  (tokenizer.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json;
  tokenizer.json minified, the same JSON value). tokenizer.json matters: without it the
  converter's SpecialVocab writes no `tokenizer.ggml.unknown_token_id` and no
  `add_sep_token`, so it is kept; a fixture can leave it out (`"omit"` in fixture.json) to
  check that path too.
- `wordpiece/`: the BERT WordPiece tokenizer (uncased, 30522 ids) of the reference kit's
  bert-tiny, cut down to the 65 pieces that the converter's pre-tokenizer check string (chktxt)
  tokenizes into plus the 5 special tokens (70 ids), each keeping its id. Greedy longest-match over a
  subset that keeps every piece used gives the same ids, so the pre-tokenizer hash (`jina-v2-en`)
  is unchanged; the converter's `get_vocab_base` writes `[PAD{i}]` (type UNUSED) for every
  missing id. Used by the families whose converter class takes only an AutoTokenizer/BPE
  vocabulary (qwen2moe, qwen3moe, deepseek2), by bert, and by the Gemma 3 tokenizer.json path.
"""


# ---------------------------------------------------------------------------------------------
# building one fixture

def build_model(fx, hf):
    import torch
    import transformers

    dtype = getattr(torch, fx.get("dtype", "bfloat16"))
    cfg_dict = dict(fx["config"])
    model_type = cfg_dict.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg_dict)
    cls = getattr(transformers, fx["class"])
    torch.manual_seed(0)
    model = cls._from_config(config, torch_dtype=dtype)
    model.save_pretrained(hf, safe_serialization=True)
    if fx.get("mxfp4"):
        cfg_path = os.path.join(hf, "config.json")
        with open(cfg_path) as f:
            saved = json.load(f)
        saved["quantization_config"] = {
            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"],
            "quant_method": "mxfp4",
        }
        with open(cfg_path, "w") as f:
            json.dump(saved, f, indent=2, sort_keys=True)
            f.write("\n")
    if "fp8" in fx:
        # the checkpoint's quantization_config, as DeepSeek-V3's config.json has it
        cfg_path = os.path.join(hf, "config.json")
        with open(cfg_path) as f:
            saved = json.load(f)
        saved["quantization_config"] = {
            "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
            "weight_block_size": fx["fp8"]["block"],
        }
        with open(cfg_path, "w") as f:
            json.dump(saved, f, indent=2, sort_keys=True)
            f.write("\n")

    # rewrite model.safetensors: same names, dtypes, shapes, order and metadata; generated values
    path = os.path.join(hf, "model.safetensors")
    with open(path, "rb") as f:
        buf = f.read()
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    size = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1}
    st_dtype = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}[fx.get("dtype", "bfloat16")]
    for name, shape in fx.get("extra_tensors", []):
        items.append((name, {"dtype": st_dtype, "shape": shape}))
    if fx.get("mxfp4"):
        # gpt-oss as OpenAI ships it: expert weights as MXFP4 codes (`_blocks`, 16 bytes per 32
        # values) and E8M0 scales (`_scales`), biases in BF16; names sorted as in the checkpoint
        mx = []
        for name, info in items:
            if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
                e, a, b = info["shape"]  # [experts, in, out] in transformers' BF16 layout
                mx.append((name + "_blocks", {"dtype": "U8", "shape": [e, b, a // 32, 16]}))
                mx.append((name + "_scales", {"dtype": "U8", "shape": [e, b, a // 32]}))
            else:
                mx.append((name, info))
        items = sorted(mx, key=lambda kv: kv[0])
    if "fp8" in fx:
        # FP8 checkpoints as DeepSeek-V3 ships them: the Linear weights in F8_E4M3, each with
        # an F32 `<name>_scale_inv` of block scales (ceil(rows/b0) x ceil(cols/b1))
        b0, b1 = fx["fp8"]["block"]
        fp8 = []
        for name, info in items:
            if name.endswith("_proj.weight") and len(info["shape"]) == 2:
                info["dtype"] = "F8_E4M3"
                rows, cols = info["shape"]
                fp8.append((name + "_scale_inv", {"dtype": "F32", "shape": [-(-rows // b0), -(-cols // b1)]}))
        items.extend(fp8)
    tensors = []
    for name, info in items:
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        data = fixture_bits(name, info["dtype"], count)
        assert len(data) == count * size[info["dtype"]]
        tensors.append((name, info["dtype"], info["shape"], data))
    write_safetensors(path, tensors, meta)
    return [[t[0], t[1], t[2]] for t in tensors]


def write_safetensors(path, tensors, meta):
    """The layout tests/common writes (gmat::source::safetensors::write_file), plus
    __metadata__ first as save_pretrained has it."""
    header = {}
    if meta is not None:
        header["__metadata__"] = meta
    off = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for t in tensors:
            f.write(t[3])


def side_files(fx, hf):
    """Side files the converter reads besides config.json and the tokenizer."""
    if "pooling" in fx:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        with open(os.path.join(hf, "modules.json"), "w") as f:
            json.dump(modules, f, indent=2)
            f.write("\n")
        pooling = {
            "word_embedding_dimension": fx["config"]["hidden_size"],
            **fx["pooling"],
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }
        os.makedirs(os.path.join(hf, "1_Pooling"), exist_ok=True)
        with open(os.path.join(hf, "1_Pooling", "config.json"), "w") as f:
            json.dump(pooling, f, indent=2)
            f.write("\n")


def tokenizer_files(fx):
    files = SPM_FILES if fx["tokenizer"] == "spm" else WORDPIECE_FILES
    return [f for f in files if f not in fx.get("omit", [])]


def run(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        sys.exit(f"failed: {' '.join(cmd)}:\n{tail}")


def source_type(fx):
    return {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}[fx.get("dtype", "bfloat16")]


def convert(fx, work, hf):
    """The reference GGUFs: label -> path."""
    ref_convert = os.environ.get("REF_CONVERT")
    if not ref_convert:
        sys.exit("source ~/.cache/gmat-ref/env.sh first ($REF_CONVERT)")
    link = os.path.join(work, fx["name"])
    os.symlink(hf, link)
    log = os.path.join(work, "log.txt")
    src = source_type(fx)
    files = {}
    conv = ref_convert.split()
    for label, args, how in outputs(src, fx):
        files[label] = os.path.join(work, f"{label}.gguf")
        if how.startswith("convert_hf_to_gguf.py"):
            run(conv + [link, "--outtype", how.split()[-1], "--outfile", files[label]], log)
    for label, args, how in outputs(src, fx):
        if how.startswith("llama-quantize"):
            flags = [a for a in ("--pure", "--allow-requantize") if a in args]
            run(["llama-quantize"] + flags + [files[src], files[label], how.split()[-1]], log)
    return src, files


# ---------------------------------------------------------------------------------------------
# the digest

def type_name(t):
    import gguf

    return gguf.GGUFValueType(t).name


def array_digest(field):
    import gguf

    parts = field.parts
    elem = field.types[1]
    if elem == gguf.GGUFValueType.ARRAY:
        sys.exit(f"{field.name}: nested arrays are not digested")
    h = hashlib.sha256()
    for idx in field.data:
        p = parts[idx]
        if elem == gguf.GGUFValueType.STRING:
            b = bytes(p)
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        else:
            h.update(p.tobytes())
    return {"type": type_name(elem), "len": len(field.data), "sha256": h.hexdigest()}


def digest(path):
    import gguf

    r = gguf.GGUFReader(path)
    meta = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's pseudo-fields (version, counts)
        t = field.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            value = array_digest(field)
        elif t == gguf.GGUFValueType.STRING:
            value = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            v = field.parts[field.data[0]][0]
            value = bool(v) if t == gguf.GGUFValueType.BOOL else v.item()
        meta.append([name, type_name(t), value])
    tensors = []
    for t in r.tensors:
        data = r.data[t.data_offset : t.data_offset + t.n_bytes]
        tensors.append(
            [t.name, int(t.tensor_type), [int(d) for d in t.shape], hashlib.sha256(data.tobytes()).hexdigest()]
        )
    return {"metadata": meta, "tensors": tensors}


# ---------------------------------------------------------------------------------------------

def versions():
    import gguf
    import torch
    import transformers

    commit = ""
    env = os.path.join(os.environ.get("GMAT_REF", ""), "env.sh")
    if os.path.exists(env):
        with open(env) as f:
            first = f.readline().strip()
        commit = first.split("(", 1)[-1].rstrip(")") if "(" in first else first
    gguf_version = ""
    pyproject = os.path.join(os.path.dirname(gguf.__file__), "..", "pyproject.toml")
    if os.path.exists(pyproject):
        with open(pyproject) as f:
            for line in f:
                if line.startswith("version"):
                    gguf_version = line.split("=", 1)[1].strip().strip('"')
                    break
    return {
        "llama.cpp": commit,
        "gguf-py": gguf_version,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def make(fx, vers):
    name = fx["name"]
    dest = os.path.join(OUT, name)
    with tempfile.TemporaryDirectory() as work:
        hf = os.path.join(work, "hf")
        os.makedirs(hf)
        tensors = build_model(fx, hf)
        side_files(fx, hf)
        for f in tokenizer_files(fx):
            shutil.copyfile(os.path.join(TOKDIR, fx["tokenizer"], f), os.path.join(hf, f))
        ref_type, files = convert(fx, work, hf)

        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.makedirs(dest)
        skip = set(tokenizer_files(fx)) | {"model.safetensors"}
        for root, _, names in os.walk(hf):
            for f in names:
                rel = os.path.relpath(os.path.join(root, f), hf)
                if rel in skip:
                    continue
                os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                shutil.copyfile(os.path.join(root, f), os.path.join(dest, rel))
        fixture = {
            "class": fx["class"],
            "dtype": fx.get("dtype", "bfloat16"),
            "tokenizer": fx["tokenizer"],
            "exercises": fx["exercises"],
        }
        if fx.get("omit"):
            fixture["omit"] = fx["omit"]
        dump(os.path.join(dest, "fixture.json"), fixture)
        with open(os.path.join(dest, "tensors.json"), "w") as f:
            f.write("[\n" + ",\n".join(json.dumps(t) for t in tensors) + "\n]\n")
        expected = {"reference": vers, "outputs": {}}
        for label, args, how in outputs(ref_type, fx):
            d = digest(files[label])
            expected["outputs"][label] = {"gmat_export": args, "reference": how, **d}
        write_expected(os.path.join(dest, "expected.json"), expected)
        with open(os.path.join(dest, "README.md"), "w") as f:
            f.write(readme(fx, ref_type, vers))
    print(f"{name}: {len(tensors)} tensors")


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_expected(path, e):
    """One metadata key or tensor a line: small diffs when the reference changes."""
    lines = ["{", f'  "reference": {json.dumps(e["reference"])},', '  "outputs": {']
    outs = list(e["outputs"].items())
    for i, (label, o) in enumerate(outs):
        lines.append(f"    {json.dumps(label)}: {{")
        lines.append(f'      "gmat_export": {json.dumps(o["gmat_export"])},')
        lines.append(f'      "reference": {json.dumps(o["reference"])},')
        lines.append('      "metadata": [')
        lines.append(",\n".join("        " + json.dumps(m, ensure_ascii=False) for m in o["metadata"]))
        lines.append("      ],")
        lines.append('      "tensors": [')
        lines.append(",\n".join("        " + json.dumps(t) for t in o["tensors"]))
        lines.append("      ]")
        lines.append("    }" + ("," if i + 1 < len(outs) else ""))
    lines.append("  }")
    lines.append("}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def readme(fx, ref_type, vers):
    v = ", ".join(f"{k} {x}" for k, x in vers.items())
    omitted = "".join(f", without {f}" for f in fx.get("omit", []))
    outs = "; ".join(f"{label}: `{how}`" for label, _, how in outputs(ref_type, fx))
    return f"""# {fx["name"]}

{fx["class"]} ({fx.get("dtype", "bfloat16")}), tokenizer `{fx["tokenizer"]}`
(testdata/arch/tokenizers/{fx["tokenizer"]}/{omitted}).

Exercises: {fx["exercises"]}.

Made by `$REF_PY tools/make_arch_fixtures.py {fx["name"]}` (see its docstring): the model is built
with transformers `from_config` and `save_pretrained`, its values replaced by the deterministic
generator; `tensors.json` lists the safetensors file's tensors in data order. `expected.json`
digests the reference GGUFs, made through a symlink named {fx["name"]}:
{outs}.

Reference: {v}.
"""


def write_index():
    rows = []
    for fx in FIXTURES:
        d = os.path.join(OUT, fx["name"])
        if not os.path.isdir(d):
            continue
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
        rows.append(
            f"| [{fx['name']}]({fx['name']}/README.md) | {fx['class']} | {fx.get('dtype', 'bfloat16')} "
            f"| `{fx['tokenizer']}` | {fx['exercises']} | {size / 1024:.0f} KB |"
        )
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(INDEX_README.format(rows="\n".join(rows)))


INDEX_README = """# Architecture fixtures

Small fixtures, one per architecture shape, that `tests/arch_fixtures.rs` converts with the real
binary and compares with the reference llama.cpp (b11312) — without the reference kit, Python or
any weights in the repository. Made by `tools/make_arch_fixtures.py` (its docstring has the
details; run with `$REF_PY` of `~/.cache/gmat-ref/env.sh`, never in CI).

Each `<fixture>/` holds `config.json` as transformers saved it, other side files the converter
reads (generation_config.json, modules.json and 1_Pooling/config.json), `fixture.json` (HF class,
dtype, which tokenizer of `tokenizers/`, files of it left out), `tensors.json` (the
safetensors file's `[name, dtype, shape]` in data order; the values come from a deterministic
generator that the test repeats: FNV-1a of the name seeds xorshift64*), `expected.json` (a digest
of each reference GGUF: every metadata key with its type and value, arrays as length + SHA-256,
every tensor's ggml type, dims and SHA-256) and a README.

The outputs checked, per gmat's compatibility contract (wiki/Home.md): the converter's
`--outtype <source dtype>` (and `bf16` for an F16 model), `llama-quantize` of that file to Q8_0,
Q4_K_M and `--pure` Q6_K, and the converter's own `--outtype q8_0` (`Q8_0-convert`).

| fixture | HF class | dtype | tokenizer | exercises | size |
|---|---|---|---|---|---|
{rows}
"""


def main():
    import transformers

    transformers.logging.set_verbosity_error()
    names = sys.argv[1:]
    unknown = [n for n in names if n not in {f["name"] for f in FIXTURES}]
    if unknown:
        sys.exit(f"unknown fixtures: {unknown}")
    os.makedirs(OUT, exist_ok=True)
    make_tokenizers()
    vers = versions()
    for fx in FIXTURES:
        if not names or fx["name"] in names:
            make(fx, vers)
    write_index()


if __name__ == "__main__":
    main()
