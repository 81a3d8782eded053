#!/usr/bin/env python3
"""Makes gpt-oss's tokenizer files (o200k_harmony: OpenAI's o200k_base BPE plus the harmony
special tokens) without the network beyond a package registry.

    source ~/.cache/gmat-ref/env.sh
    (cd /tmp && npm pack js-tiktoken && tar xzf js-tiktoken-*.tgz)   # o200k_base ranks
    $REF_PY tools/make_o200k_tokenizer.py /tmp/package/dist/ranks/o200k_base.js OUT

OUT gets tokenizer.json and tokenizer_config.json. The BPE vocabulary and merges come from
transformers' own tiktoken conversion (`TikTokenConverter`, the way HF's gpt-oss tokenizer.json
was made) over the ranks that the npm package `js-tiktoken` ships; the special tokens and their
ids are tiktoken's `o200k_harmony` (tiktoken_ext/openai_public.py): <|startoftext|> 199998,
<|endoftext|> 199999, <|return|> 200002, <|constrain|> 200003, <|channel|> 200005, <|start|>
200006, <|end|> 200007, <|message|> 200008, <|call|> 200012, <|endofprompt|> 200018 and
<|reserved_N|> for the other ids up to 201087 (vocabulary 201088, as gpt-oss's config.json).
The converter recognises the result as pre-tokenizer "gpt-4o" by its hash.
"""
import base64
import importlib.machinery
import json
import os
import sys
import types

HARMONY = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
    "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
    "<|message|>": 200008, "<|call|>": 200012, "<|endofprompt|>": 200018,
}
VOCAB = 201088


def read_ranks(path):
    """js-tiktoken's compressed ranks: lines of `! OFFSET tok0 tok1 ...` (base64 tokens with
    consecutive ranks from OFFSET)."""
    text = open(path, encoding="utf-8").read()
    data = json.loads(text[text.index("{"): text.rindex("}") + 1])
    ranks = {}
    for line in data["bpe_ranks"].split("\n"):
        if not line:
            continue
        parts = line.split(" ")
        offset = int(parts[1])
        for i, tok in enumerate(parts[2:]):
            ranks[base64.b64decode(tok)] = offset + i
    return data["pat_str"], ranks


def main():
    src, out = sys.argv[1], sys.argv[2]
    pattern, ranks = read_ranks(src)
    # TikTokenConverter reads ranks through tiktoken.load; hand it ours instead of a download
    load = types.ModuleType("tiktoken.load")
    load.__spec__ = importlib.machinery.ModuleSpec("tiktoken.load", None)
    load.load_tiktoken_bpe = lambda _path: ranks
    pkg = types.ModuleType("tiktoken")
    pkg.__spec__ = importlib.machinery.ModuleSpec("tiktoken", None)
    pkg.load = load
    sys.modules["tiktoken"], sys.modules["tiktoken.load"] = pkg, load
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file="o200k_base", pattern=pattern, additional_special_tokens=[]).converted()
    names = {i: f"<|reserved_{i}|>" for i in range(len(ranks), VOCAB)}
    names.update({i: t for t, i in HARMONY.items()})
    tok.add_special_tokens([AddedToken(names[i], special=True, normalized=False) for i in sorted(names)])
    for t, i in HARMONY.items():
        assert tok.token_to_id(t) == i, (t, i, tok.token_to_id(t))
    assert tok.get_vocab_size() == VOCAB
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 131072,
        # a shortened harmony template: enough for the chat-template key, not gpt-oss's full one
        "chat_template": "{% for m in messages %}<|start|>{{ m['role'] }}<|message|>"
                         "{{ m['content'] }}<|end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|start|>assistant{% endif %}",
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {out}: {VOCAB} tokens")


if __name__ == "__main__":
    main()
