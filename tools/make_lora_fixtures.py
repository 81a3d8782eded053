#!/usr/bin/env python3
"""Make the LoRA adapter fixtures of testdata/lora/ with the reference Python packages.

Run with `$REF_PY` of `~/.cache/gmat-ref/env.sh` (torch, transformers 4.57.6, peft 0.17.1, and
llama.cpp b11312's gguf-py and convert_lora_to_gguf.py), never in CI:

    $REF_PY tools/make_lora_fixtures.py [--kit /work/shared/reference/models] [--out testdata/lora]

For each case below, over a kit model (`<kit>/<model>/hf`):

1. A PEFT LoRA adapter (`get_peft_model` + `save_pretrained`): the listed target modules, rank r and
   lora_alpha, every lora_A and lora_B weight drawn from a seeded normal distribution (PEFT's own
   initialisation leaves lora_B zero, which would make every delta vanish), saved in the listed
   dtype. Written to `<out>/<case>/` (adapter_config.json, adapter_model.safetensors, and PEFT's
   README.md model card; base_model_name_or_path and the card's base model are rewritten to the
   kit model's name so the files do not depend on this machine).
2. The base model's config.json, copied to `<out>/<case>/base/` (the converter's `--base` needs only
   the config); for the cases of MERGE_BASE also `base/model.safetensors` holding the kit model's
   weights that the adapter adapts (only those, as stored), a base small enough to check in,
   and `base-f32/`, `base-f16/`: the same weights loaded as float32 / float16.
3. The reference LoRA GGUFs: `convert_lora_to_gguf.py --base <out>/<case>/base --outtype T` for T in
   f32 (its default), f16, bf16 and q8_0, digested into `<out>/<case>/expected.json`:
   the SHA-256 of each whole file (gmat must write the same bytes), every metadata key with its
   value, every tensor's type, dims and SHA-256 (to say where a difference is).
4. PEFT's merge: the base loaded in its stored dtype (`dtype="auto"`),
   `PeftModel.from_pretrained(base, adapter)` (the default autocast keeps the adapter weights in
   float32), `merge_and_unload()`; the SHA-256 of every tensor of the merged state dict that the
   merge changed (and of the unchanged base tensor for comparison) go to `<out>/<case>/merged.json`;
   for MERGE_BASE cases also the same merge with the base loaded as float32 and float16
   (`merged-f32.json`, `merged-f16.json`, bases in `base-f32/`, `base-f16/`).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

CASES = [
    # name, kit model, target modules, r, alpha, adapter dtype, seed
    ("llama-qkv", "llama-tiny", ["q_proj", "k_proj", "v_proj"], 2, 4, torch.float32, 1),
    ("qwen2-all", "qwen2-tiny",
     ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 4, 8,
     torch.bfloat16, 2),
    ("qwen3-attn", "qwen3-tiny", ["q_proj", "k_proj", "o_proj"], 4, 16, torch.float32, 3),
    ("gemma3-mix", "gemma3-tiny", ["q_proj", "v_proj", "down_proj"], 4, 4, torch.bfloat16, 4),
    ("phi3-fused", "phi3-tiny", ["qkv_proj", "gate_up_proj"], 2, 2, torch.bfloat16, 5),
]

OUTTYPES = ["f32", "f16", "bf16", "q8_0"]

# cases whose base/ also gets the kit model's adapted weights (only those) as model.safetensors,
# so the merge test runs without the kit
MERGE_BASE = {"qwen3-attn"}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()


def gguf_digest(path: Path) -> dict:
    import gguf

    r = gguf.GGUFReader(path)
    meta = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        v = f.contents()
        meta[f.name] = v
    tensors = {
        t.name: {
            "type": t.tensor_type.name,
            "dims": [int(d) for d in t.shape],
            "sha256": sha(bytes(t.data.tobytes())),
        }
        for t in r.tensors
    }
    return {"file_sha256": sha(path.read_bytes()), "size": path.stat().st_size,
            "metadata": meta, "tensors": tensors}


def peft_merge(hf: Path, adapter: Path, dtype, save_base: Path | None) -> dict:
    """PEFT's merge_and_unload of `adapter` into the kit model loaded as `dtype`: the changed
    tensors' dtype and SHA-256; with `save_base`, the base weights the merge changed (as loaded,
    before the merge) go to `save_base/model.safetensors`."""
    base = AutoModelForCausalLM.from_pretrained(hf, dtype=dtype)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    before = {k: sha(tensor_bytes(v)) for k, v in base_sd.items()}
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    changed = {}
    for k, v in merged.state_dict().items():
        h = sha(tensor_bytes(v))
        if h != before.get(k):
            changed[k] = {"dtype": str(v.dtype).removeprefix("torch."), "sha256": h,
                          "base_sha256": before.get(k)}
    if save_base is not None:
        from safetensors.torch import save_file
        save_file({k: base_sd[k].contiguous() for k in changed}, save_base / "model.safetensors")
    return changed


def make_case(kit: Path, out: Path, gguf_dir, name, model, targets, r, alpha, dtype, seed):
    hf = kit / model / "hf"
    dst = out / name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    (dst / "base").mkdir()
    shutil.copy(hf / "config.json", dst / "base" / "config.json")

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in peft_model.named_parameters():
            if "lora_A" in pname or "lora_B" in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
                p.data = p.data.to(dtype)
    peft_model.save_pretrained(dst)
    acfg = json.loads((dst / "adapter_config.json").read_text())
    acfg["base_model_name_or_path"] = model
    (dst / "adapter_config.json").write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n")
    card = dst / "README.md"
    card.write_text(card.read_text().replace(str(hf), model))

    env = dict(os.environ)
    src = Path(os.environ.get("GMAT_REF", Path.home() / ".cache/gmat-ref")) / "llama.cpp-src"
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in OUTTYPES:
            o = Path(tmp) / f"{name}-{t}.gguf"
            subprocess.run([sys.executable, str(src / "convert_lora_to_gguf.py"), "--base",
                            str(dst / "base"), "--outtype", t, "--outfile", str(o), str(dst)],
                           check=True, env=env, capture_output=True)
            expected[t] = gguf_digest(o)
            if gguf_dir is not None:
                gguf_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(o, gguf_dir / o.name)
    (dst / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True,
                                                  default=str) + "\n")

    # PEFT's merge in the base's stored dtype
    changed = peft_merge(hf, dst, "auto", dst / "base" if name in MERGE_BASE else None)
    (dst / "merged.json").write_text(json.dumps(changed, indent=1, sort_keys=True) + "\n")
    if name in MERGE_BASE:
        # the same merge into F32 and F16 copies of the base weights
        for dtype, tag in [(torch.float32, "f32"), (torch.float16, "f16")]:
            (dst / f"base-{tag}").mkdir()
            shutil.copy(hf / "config.json", dst / f"base-{tag}" / "config.json")
            c = peft_merge(hf, dst, dtype, dst / f"base-{tag}")
            (dst / f"merged-{tag}.json").write_text(json.dumps(c, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {len(changed)} merged tensors, adapter "
          f"{(dst / 'adapter_model.safetensors').stat().st_size} bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kit", type=Path, default=Path("/work/shared/reference/models"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "testdata/lora")
    ap.add_argument("--only", default=None)
    ap.add_argument("--gguf-dir", type=Path, default=None,
                    help="also keep the reference GGUFs here (for gguf_parity.py)")
    a = ap.parse_args()
    for c in CASES:
        if a.only and c[0] != a.only:
            continue
        make_case(a.kit, a.out, a.gguf_dir, *c)


if __name__ == "__main__":
    main()
