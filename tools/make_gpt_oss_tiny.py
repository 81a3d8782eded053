#!/usr/bin/env python3
"""Makes a tiny gpt-oss model with MXFP4 experts in the reference kit's style (outside the
repository): OUT/gpt-oss-tiny/hf/ (an HF folder as OpenAI ships gpt-oss: BF16 attention, router
and embeddings, expert weights as MXFP4 `*_blocks` + `*_scales`, quantization_config
`mxfp4`) and OUT/gpt-oss-tiny/expected/ (the reference converter's `--outtype bf16` and default
`f16` files, and llama-quantize MXFP4_MOE of the BF16 one).

    source ~/.cache/gmat-ref/env.sh
    $REF_PY tools/make_gpt_oss_tiny.py OUT                      # OUT/gpt-oss-tiny
    $REF_PY tools/make_gpt_oss_tiny.py OUT --tokenizer TOKDIR   # OUT/gpt-oss-tiny-o200k

The weights come from tools/make_arch_fixtures.py's generator (fixture gpt-oss-mxfp4's shape:
hidden 64, 2 layers, 4 heads of 16, 2 KV heads, 4 experts top-2, FFN 64, alternating sliding
window, YaRN); the vocabulary is the kit's GPT-2 BPE (deepseek2-tiny) so that llama.cpp can run
it (`llama-simple`), vocab_size 50304. With `--tokenizer TOKDIR` (tools/make_o200k_tokenizer.py's
output: gpt-oss's own o200k_harmony tokenizer) the vocabulary is gpt-oss's, 201088 tokens. gmat's own tests use the kit-free fixture
(testdata/arch/gpt-oss-mxfp4); this folder is for checks by hand with gguf_parity.py.
"""
import copy
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_arch_fixtures as m  # noqa: E402


def main():
    tokdir = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--tokenizer" else None
    name = "gpt-oss-tiny-o200k" if tokdir else "gpt-oss-tiny"
    out = os.path.join(sys.argv[1], name)
    hf, exp = os.path.join(out, "hf"), os.path.join(out, "expected")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(hf)
    os.makedirs(exp)
    fx = copy.deepcopy(next(f for f in m.FIXTURES if f["name"] == "gpt-oss-mxfp4"))
    if tokdir:
        # gpt-oss's own ids (config.json of openai/gpt-oss-20b)
        fx["config"].update(vocab_size=201088, bos_token_id=199998, eos_token_id=200002, pad_token_id=199999)
    else:
        fx["config"].update(vocab_size=50304, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256)
    m.build_model(fx, hf)
    kit = tokdir or os.path.join(m.KIT, "deepseek2-tiny", "hf")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(kit, f), os.path.join(hf, f))
    link = os.path.join(out, "link", name)
    os.makedirs(os.path.dirname(link))
    os.symlink(hf, link)
    conv = os.environ["REF_CONVERT"].split()
    for t in ("bf16", "f16"):
        subprocess.run(conv + [link, "--outtype", t, "--outfile", os.path.join(exp, f"{name}-{t}.gguf")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["llama-quantize", os.path.join(exp, f"{name}-bf16.gguf"),
                    os.path.join(exp, f"{name}-mxfp4_moe.gguf"), "MXFP4_MOE", "2"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(os.path.dirname(link))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
