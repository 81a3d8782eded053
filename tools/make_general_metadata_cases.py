#!/usr/bin/env python3
"""Runs the reference converter on llama-tiny copies with model cards, _name_or_path, --metadata
and --model-name, and records the general.* keys it writes (testdata/general-metadata/).

    source ~/.cache/gmat-ref/env.sh && $REF_PY tools/make_general_metadata_cases.py
"""
import json, os, shutil, subprocess, sys
sys.path.insert(0, os.path.expanduser('~/.cache/gmat-ref/llama.cpp-src/gguf-py'))
import gguf
KIT = '/work/shared/reference/models/llama-tiny/hf'
OUT = '/tmp/meta-cases'
CASES = [
    dict(case="card-and-folder", folder="Meta-Llama-3-8B-Instruct-v0.2",
         readme="---\nlicense: apache-2.0\nlanguage:\n- en\n- fr\ntags:\n- text-generation\n- llama\npipeline_tag: text-generation\nbase_model: meta-llama/Meta-Llama-3-8B\ndatasets:\n- HuggingFaceH4/ultrachat_200k\n- https://huggingface.co/datasets/foo/bar\n---\n# Model\n"),
    dict(case="name-or-path", folder="tiny_llm", name_or_path="acme/Widget-1.5-Chat-7B",
         readme="---\nmodel_name: Widget Chat\nmodel_creator: ACME Labs\nlicense:\n- mit\n- cc-by-4.0\nlicense_name: widget-license\nlicense_link: https://example.com/license\nbase_model:\n- https://huggingface.co/acme/Widget-Base-1.5\n- name: Custom Base\n  organization: Elsewhere\n  version: '2'\nlanguage: en\n---\n"),
    dict(case="override-file", folder="my-model-v3-4.6M", readme="---\nlicense: other\nauthor: Card Author\nversion: v9\n---\n",
         metadata={"general.name": "Override Name", "general.author": "Jane Doe", "general.description": "A tiny test model",
                   "general.tags": ["a", "b"], "general.base_models": [{"name": "Base One", "repo_url": "https://example.com/one"}],
                   "general.quantized_by": "gmat tests", "general.url": "https://example.com"},
         model_name=None),
    dict(case="model-name", folder="qwen3moe-tiny", readme=None, model_name="Explicit Name"),
]
conv = os.environ["REF_CONVERT"].split()
res = []
for c in CASES:
    d = os.path.join(OUT, c["case"], c["folder"])
    shutil.rmtree(os.path.join(OUT, c["case"]), ignore_errors=True)
    shutil.copytree(KIT, d)
    if c.get("readme"):
        open(os.path.join(d, "README.md"), "w").write(c["readme"])
    if c.get("name_or_path"):
        cfg = json.load(open(os.path.join(d, "config.json")))
        cfg["_name_or_path"] = c["name_or_path"]
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    args = conv + [d, "--outtype", "bf16", "--outfile", os.path.join(OUT, c["case"], "out.gguf")]
    if c.get("metadata"):
        mp = os.path.join(OUT, c["case"], "metadata.json")
        json.dump(c["metadata"], open(mp, "w"), indent=2)
        args += ["--metadata", mp]
    if c.get("model_name"):
        args += ["--model-name", c["model_name"]]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = gguf.GGUFReader(os.path.join(OUT, c["case"], "out.gguf"))
    total = sum(int(t.n_elements) for t in r.tensors)
    keys = []
    for k, f in r.fields.items():
        if not k.startswith("general.") or k in ("general.architecture", "general.type", "general.file_type", "general.quantization_version"):
            continue
        t = gguf.GGUFValueType(f.types[0]).name
        keys.append([k, t, f.contents()])
    res.append(dict(case=c["case"], folder=c["folder"], total_params=total, readme=c.get("readme"),
                    name_or_path=c.get("name_or_path"), metadata=c.get("metadata"), model_name=c.get("model_name"),
                    expected=keys))
    print(c["case"], keys)
json.dump(res, open(os.path.join(OUT, "cases.json"), "w"), indent=1)
