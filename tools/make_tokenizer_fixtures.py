#!/usr/bin/env python3
"""Writes testdata/tokenizer-files/: tiny models whose tokenizers ship as people ship them
(vocab.json + merges.txt without tokenizer.json, added_tokens.json, chat templates in their
own files), checked by tests/tokenizer_files.rs without Python or the reference kit.

    source ~/.cache/gmat-ref/env.sh
    $REF_PY tools/make_tokenizer_fixtures.py

Never run in CI. For each fixture it
  1. trains a byte-level BPE of 300 tokens (256 byte symbols + 44 merges) with the
     `tokenizers` package on TRAIN_TEXT and saves vocab.json + merges.txt;
  2. writes the fixture's tokenizer_config.json / added_tokens.json / chat template files;
  3. builds a tiny Qwen2ForCausalLM (vocab 304) with transformers and rewrites its weights
     with make_arch_fixtures.py's deterministic generator (tests/common `fixture_values`);
  4. runs the reference convert_hf_to_gguf.py (b11312) with --outtype bf16. A 300-token
     vocabulary cannot reproduce any pre-tokenizer hash of llama.cpp's table, so the
     converter's `get_vocab_base_pre` is replaced by one returning PRE (as users patch it
     for a tokenizer it does not know); gmat's test passes `--pre-tokenizer PRE` likewise.
     Everything else -- AutoTokenizer building the fast tokenizer from the two files, the
     vocabulary, token types, merges, special ids, chat template -- is the reference's own;
  5. writes <fixture>/: the side files, tensors.json, expected.json (make_arch_fixtures.py's
     digest of every metadata key and tensor of the reference GGUF) and README.md.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_arch_fixtures as maf  # noqa: E402

OUT = os.path.join(maf.ROOT, "testdata", "tokenizer-files")
PRE = "qwen2"
VOCAB = 304
TRAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Hello world, hello tokenizers! 123 456 7890. "
    "A model's tokenizer ships as vocab.json and merges.txt. "
) * 20

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def added_decoder():
    return {
        str(300 + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                       "single_word": False, "special": True}
        for i, t in enumerate(SPECIALS)
    }


FIXTURES = [
    {
        "name": "qwen2-vocab-merges",
        "what": "Qwen2Tokenizer as vocab.json + merges.txt (no tokenizer.json): AutoTokenizer "
                "converts the slow tokenizer (Qwen2Converter); added tokens from "
                "tokenizer_config.json added_tokens_decoder; chat template in chat_template.jinja",
        "tokenizer_config": {
            "tokenizer_class": "Qwen2Tokenizer", "added_tokens_decoder": added_decoder(),
            "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
            "unk_token": None, "clean_up_tokenization_spaces": False, "errors": "replace",
            "model_max_length": 512, "split_special_tokens": False,
        },
        "files": {"chat_template.jinja": TEMPLATE},
    },
    {
        "name": "gpt2-added-tokens-json",
        "what": "GPT2Tokenizer as vocab.json + merges.txt (GPT2Converter); added tokens from "
                "added_tokens.json (no added_tokens_decoder in tokenizer_config.json); chat "
                "template in chat_template.json",
        "tokenizer_config": {
            "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
            "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "model_max_length": 512,
            "add_prefix_space": False,
        },
        "files": {
            "added_tokens.json": json.dumps({t: 300 + i for i, t in enumerate(SPECIALS)}),
            "chat_template.json": json.dumps({"chat_template": TEMPLATE}),
        },
    },
]

CONFIG = {
    "model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    "max_position_embeddings": 512, "tie_word_embeddings": False, "rms_norm_eps": 1e-6,
    "bos_token_id": 300, "eos_token_id": 302,
}

CONVERT_PATCHED = """
import sys, runpy
sys.argv = sys.argv[1:]
sys.path.insert(0, {src!r})
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def train(dst):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([TRAIN_TEXT], vocab_size=300, min_frequency=2, show_progress=False)
    assert tok.get_vocab_size() == 300, tok.get_vocab_size()
    tok.save_model(dst)


def make(fx, work):
    hf = os.path.join(work, fx["name"])
    fx_model = {"class": "Qwen2ForCausalLM", "dtype": "bfloat16", "config": CONFIG}
    os.makedirs(hf)
    tensors = maf.build_model(fx_model, hf)
    train(hf)
    with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
        json.dump(fx["tokenizer_config"], f, indent=2)
    for name, text in fx["files"].items():
        with open(os.path.join(hf, name), "w") as f:
            f.write(text)
    conv = os.environ["REF_CONVERT"].split()
    script = os.path.join(work, "convert_patched.py")
    src = os.path.dirname(conv[-1])
    with open(script, "w") as f:
        f.write(CONVERT_PATCHED.format(src=src, pre=PRE))
    gguf_path = os.path.join(work, fx["name"] + ".gguf")
    subprocess.run([conv[0], script, conv[-1], hf, "--outtype", "bf16", "--outfile", gguf_path],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = os.path.join(OUT, fx["name"])
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    keep = ["config.json", "vocab.json", "merges.txt", "tokenizer_config.json"] + list(fx["files"])
    for name in keep:
        shutil.copy(os.path.join(hf, name), os.path.join(out, name))
    maf.dump(os.path.join(out, "tensors.json"), tensors)
    maf.dump(os.path.join(out, "expected.json"), {"pre_tokenizer": PRE, **maf.digest(gguf_path)})
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(f"# {fx['name']}\n\n{fx['what']}.\n\nMade by `tools/make_tokenizer_fixtures.py` "
                f"(its docstring says how); `expected.json` is the digest of the GGUF that "
                f"llama.cpp b11312's convert_hf_to_gguf.py wrote with `--outtype bf16`, its "
                f"pre-tokenizer name fixed to `{PRE}` (the tiny vocabulary's hash is in no "
                f"table). Weights: `tensors.json` + the deterministic generator.\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for fx in FIXTURES:
            make(fx, work)
            print("wrote", fx["name"])


if __name__ == "__main__":
    main()
