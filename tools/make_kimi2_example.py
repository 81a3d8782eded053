#!/usr/bin/env python3
"""Writes example/kimi2/hf/ (a tiny Kimi-VL-shaped model) and testdata/kimi2/expected.json (the
reference llama.cpp's output for it).

    source ~/.cache/gmat-ref/env.sh          # the llama.cpp reference (b11312)
    $REF_PY tools/make_kimi2_example.py

Never run in CI: it needs torch, the reference convert_hf_to_gguf.py ($REF_CONVERT),
llama-quantize (on PATH) and the reference kit's GPT-2 tokenizer
(../shared/reference/models/kimivl-tiny/hf).

The model has moonshotai/Kimi-VL-A3B-Instruct's layout (`KimiVLForConditionalGeneration`:
a DeepSeek-V3-style MoE text model under `language_model.`, the MoonViT vision tower under
`vision_tower.`, the projector under `multi_modal_projector.`) with tiny, deliberately
different dimensions from the kit's kimivl-tiny: hidden 16, 26 layers (llama.cpp's deepseek2
loader treats 26/27 layers as the "lite" MLA without q_lora), 2 heads (qk_nope 8 + qk_rope 8,
v 8), kv_lora_rank 16, layer 0 dense (FFN 48), layers 1-25 MoE with 8 routed experts top-2
and 1 shared expert (expert FFN 16); vision hidden 16, 4 blocks, 2 heads, FFN 32, patch 14,
64x64 learned positions. Weights: torch.manual_seed(0), N(0, 0.05^2), norm weights
1 + 0.1 N(0,1), biases 0.02 N(0,1), all bfloat16. Tokenizer: the GPT-2 BPE vocabulary of the
kit (tokenizer.json, tokenizer_config.json), chat_template.jinja and preprocessor_config.json
as Kimi-VL ships them.

Reference outputs, digested as tools/make_arch_fixtures.py digests them (tests/kimi2_example.rs
compares gmat's files with the digests): the converter's text GGUF (`--outtype bf16`) and
projector (`--mmproj --outtype f16`), and llama-quantize Q4_K_M of the text GGUF.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))

KIT = os.path.normpath(os.path.join(ROOT, "..", "shared", "reference", "models", "kimivl-tiny", "hf"))
HF = os.path.join(ROOT, "example", "kimi2", "hf")
EXPECTED = os.path.join(ROOT, "testdata", "kimi2", "expected.json")

TEXT = dict(
    hidden_size=16, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=26,
    num_attention_heads=2, num_key_value_heads=2, qk_nope_head_dim=8, qk_rope_head_dim=8,
    v_head_dim=8, kv_lora_rank=16, q_lora_rank=None, n_routed_experts=8, num_experts_per_tok=2,
    n_shared_experts=1, first_k_dense_replace=1, vocab_size=50257,
)
VISION = dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
              patch_size=14, pos=64)


def config(t=TEXT, v=VISION, tie=True):
    """Kimi-VL's config.json (keys as moonshotai ships them) for the given dimensions."""
    return {
        "architectures": ["KimiVLForConditionalGeneration"],
        "auto_map": {
            "AutoConfig": "configuration_kimi_vl.KimiVLConfig",
            "AutoModel": "modeling_kimi_vl.KimiVLForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_kimi_vl.KimiVLForConditionalGeneration",
        },
        "ignore_index": -100,
        "media_placeholder_token_id": 50256,
        "model_type": "kimi_vl",
        "pad_token_id": 0,
        "text_config": {
            "attention_bias": False, "attention_dropout": 0.0, "aux_loss_alpha": 0.001,
            "bos_token_id": 50256, "eos_token_id": 50256, "ep_size": 1,
            "first_k_dense_replace": t["first_k_dense_replace"], "hidden_act": "silu",
            "hidden_size": t["hidden_size"], "initializer_range": 0.02,
            "intermediate_size": t["intermediate_size"], "kv_lora_rank": t["kv_lora_rank"],
            "max_position_embeddings": 131072, "model_type": "deepseek_v3",
            "moe_intermediate_size": t["moe_intermediate_size"], "moe_layer_freq": 1,
            "n_group": 1, "n_routed_experts": t["n_routed_experts"],
            "n_shared_experts": t["n_shared_experts"], "norm_topk_prob": True,
            "num_attention_heads": t["num_attention_heads"],
            "num_experts_per_tok": t["num_experts_per_tok"],
            "num_hidden_layers": t["num_hidden_layers"],
            "num_key_value_heads": t["num_key_value_heads"], "num_nextn_predict_layers": 0,
            "pad_token_id": 50256, "pretraining_tp": 1, "q_lora_rank": None,
            "qk_nope_head_dim": t["qk_nope_head_dim"], "qk_rope_head_dim": t["qk_rope_head_dim"],
            "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 800000.0,
            "routed_scaling_factor": 2.446, "scoring_func": "sigmoid", "seq_aux": True,
            "tie_word_embeddings": tie, "topk_group": 1, "topk_method": "noaux_tc",
            "torch_dtype": "bfloat16", "use_cache": True, "v_head_dim": t["v_head_dim"],
            "vocab_size": t["vocab_size"],
        },
        "torch_dtype": "bfloat16",
        "transformers_version": "4.50.3",
        "vision_config": {
            "hidden_size": v["hidden_size"], "init_pos_emb_height": v["pos"],
            "init_pos_emb_width": v["pos"], "intermediate_size": v["intermediate_size"],
            "merge_kernel_size": [2, 2], "model_type": "moonvit",
            "num_attention_heads": v["num_attention_heads"],
            "num_hidden_layers": v["num_hidden_layers"], "patch_size": v["patch_size"],
            "torch_dtype": "bfloat16",
        },
        "vocab_size": t["vocab_size"],
    }


def tensors(t=TEXT, v=VISION, tie=True):
    """name -> shape of Kimi-VL's tensors, in the names' sorted order (safetensors writes them
    sorted)."""
    d, heads = t["hidden_size"], t["num_attention_heads"]
    qk = t["qk_nope_head_dim"] + t["qk_rope_head_dim"]
    out = {"language_model.model.embed_tokens.weight": [t["vocab_size"], d],
           "language_model.model.norm.weight": [d]}
    if not tie:
        out["language_model.lm_head.weight"] = [t["vocab_size"], d]
    for b in range(t["num_hidden_layers"]):
        p = f"language_model.model.layers.{b}."
        out[p + "input_layernorm.weight"] = [d]
        out[p + "post_attention_layernorm.weight"] = [d]
        out[p + "self_attn.q_proj.weight"] = [heads * qk, d]
        out[p + "self_attn.kv_a_proj_with_mqa.weight"] = [t["kv_lora_rank"] + t["qk_rope_head_dim"], d]
        out[p + "self_attn.kv_a_layernorm.weight"] = [t["kv_lora_rank"]]
        out[p + "self_attn.kv_b_proj.weight"] = [heads * (t["qk_nope_head_dim"] + t["v_head_dim"]), t["kv_lora_rank"]]
        out[p + "self_attn.o_proj.weight"] = [d, heads * t["v_head_dim"]]
        if b < t["first_k_dense_replace"]:
            ff = t["intermediate_size"]
            out[p + "mlp.gate_proj.weight"] = [ff, d]
            out[p + "mlp.up_proj.weight"] = [ff, d]
            out[p + "mlp.down_proj.weight"] = [d, ff]
            continue
        ff = t["moe_intermediate_size"]
        out[p + "mlp.gate.weight"] = [t["n_routed_experts"], d]
        out[p + "mlp.gate.e_score_correction_bias"] = [t["n_routed_experts"]]
        for x in range(t["n_routed_experts"]):
            out[p + f"mlp.experts.{x}.gate_proj.weight"] = [ff, d]
            out[p + f"mlp.experts.{x}.up_proj.weight"] = [ff, d]
            out[p + f"mlp.experts.{x}.down_proj.weight"] = [d, ff]
        sff = ff * t["n_shared_experts"]
        out[p + "mlp.shared_experts.gate_proj.weight"] = [sff, d]
        out[p + "mlp.shared_experts.up_proj.weight"] = [sff, d]
        out[p + "mlp.shared_experts.down_proj.weight"] = [d, sff]
    vd, vff = v["hidden_size"], v["intermediate_size"]
    for b in range(v["num_hidden_layers"]):
        p = f"vision_tower.encoder.blocks.{b}."
        for n in ("norm0", "norm1"):
            out[p + n + ".weight"] = [vd]
            out[p + n + ".bias"] = [vd]
        out[p + "wqkv.weight"] = [3 * vd, vd]
        out[p + "wqkv.bias"] = [3 * vd]
        out[p + "wo.weight"] = [vd, vd]
        out[p + "wo.bias"] = [vd]
        out[p + "mlp.fc0.weight"] = [vff, vd]
        out[p + "mlp.fc0.bias"] = [vff]
        out[p + "mlp.fc1.weight"] = [vd, vff]
        out[p + "mlp.fc1.bias"] = [vd]
    out["vision_tower.encoder.final_layernorm.weight"] = [vd]
    out["vision_tower.encoder.final_layernorm.bias"] = [vd]
    out["vision_tower.patch_embed.pos_emb.weight"] = [v["pos"], v["pos"], vd]
    out["vision_tower.patch_embed.proj.weight"] = [vd, 3, v["patch_size"], v["patch_size"]]
    out["vision_tower.patch_embed.proj.bias"] = [vd]
    merged = vd * 4  # 2x2 patch merge
    out["multi_modal_projector.pre_norm.weight"] = [vd]
    out["multi_modal_projector.pre_norm.bias"] = [vd]
    out["multi_modal_projector.linear_1.weight"] = [merged, merged]
    out["multi_modal_projector.linear_1.bias"] = [merged]
    out["multi_modal_projector.linear_2.weight"] = [t["hidden_size"], merged]
    out["multi_modal_projector.linear_2.bias"] = [t["hidden_size"]]
    return dict(sorted(out.items()))


def weights():
    import torch

    torch.manual_seed(0)
    out = {}
    for name, shape in tensors().items():
        if name.endswith("norm.weight") or name.endswith(("norm0.weight", "norm1.weight")) \
                or "layernorm.weight" in name or "pre_norm.weight" in name:
            w = 1 + 0.1 * torch.randn(shape)
        elif name.endswith(".bias") or name.endswith("e_score_correction_bias"):
            w = 0.02 * torch.randn(shape)
        else:
            w = 0.05 * torch.randn(shape)
        out[name] = w.to(torch.bfloat16).contiguous()
    return out


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    from safetensors.torch import save_file

    sys.path.insert(0, HERE)
    from make_arch_fixtures import digest, versions

    shutil.rmtree(HF, ignore_errors=True)
    os.makedirs(HF)
    save_file(weights(), os.path.join(HF, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(HF, "config.json"), "w") as f:
        json.dump(config(), f, indent=2)
        f.write("\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "preprocessor_config.json"):
        shutil.copy(os.path.join(KIT, name), os.path.join(HF, name))
    convert = os.environ["REF_CONVERT"].split()
    outputs = {}
    with tempfile.TemporaryDirectory() as work:
        link = os.path.join(work, "kimi2")
        os.symlink(HF, link)
        bf16 = os.path.join(work, "text-bf16.gguf")
        mmproj = os.path.join(work, "mmproj-f16.gguf")
        q4 = os.path.join(work, "text-q4_k_m.gguf")
        run(convert + [link, "--outtype", "bf16", "--outfile", bf16])
        run(convert + [link, "--mmproj", "--outtype", "f16", "--outfile", mmproj])
        run(["llama-quantize", bf16, q4, "Q4_K_M", "2"])
        outputs["BF16"] = digest(bf16)
        outputs["mmproj-F16"] = digest(mmproj)
        outputs["Q4_K_M"] = digest(q4)
    os.makedirs(os.path.dirname(EXPECTED), exist_ok=True)
    with open(EXPECTED, "w") as f:
        json.dump({"versions": versions(), "outputs": outputs}, f, indent=1)
        f.write("\n")
    print(f"wrote {HF} and {EXPECTED}")


if __name__ == "__main__":
    main()
