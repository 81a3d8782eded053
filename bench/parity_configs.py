#!/usr/bin/env python3
"""Config ablation parity: gmat against convert_hf_to_gguf.py on edited config.json files.

The converter does not read config.json as JSON: it loads it through transformers'
`AutoConfig.from_pretrained(dir).to_dict()`, so every key the file omits arrives with the config
class's default (falling back to the raw JSON only when that load fails). This script edits the
config.json of every kit model one key at a time and checks that gmat follows:

  cases    for each kit model and each top-level and nested key of its config.json: the key
           removed, the key set to null; and realistic variants: an old transformers_version,
           `torch_dtype` for `dtype` (and back), integer-valued floats written as integers,
           rope_scaling with `type` instead of `rope_type`, legacy rope_scaling tables.
  convert  runs the converter on each case (one Python process that imports torch once and forks
           per case), records the converter's view of config.json (ModelBase.load_hparams), a
           digest of its GGUF (every key/value, tokenizer lists hashed; every tensor's name, type,
           shape and data hash) and whether llama.cpp loads the file (llama-simple).
           While converting the kit config it records which keys of that view the converter
           reads (ReadTracker); a case whose view differs from the kit config's only in keys it
           does not read (raw token-id and Gemma 3 sliding_window keys unchanged) is not
           converted again: its result is the kit config's, marked `same_as_base`.
  views    the converter's view alone (no conversion) for the cases not converted, so that the
           fixtures check gmat's view of every case even when a run was cut short.
  gmat     imports and exports each case with gmat and judges it:
             converter writes a file llama.cpp loads   -> gmat's file must be identical
             converter refuses                         -> gmat must refuse
             converter writes a file llama.cpp refuses -> gmat must refuse
  fixtures writes testdata/config-ablation/<model>.json: the cases, the converter's view of each
           config and its metadata (no tensor data, no tokenizer lists), for `cargo test`.
  report   prints the results table.

Results are kept in OUT/<model>/results.json; a stage skips cases it already has (--redo to
repeat). Run it through `make parity-configs` (sources the reference environment, builds gmat;
ARGS="--subset" runs only the cases touching keys the converter reads, and every variant).
"""
import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORED_KEYS = re.compile(
    r"^general\.(name|basename|finetune|version|quantized_by|license.*|tags|languages|datasets"
    r"|base_model.*|url|repo_url|description|author|organization)$|^gmat\."
)
# tokenizer lists: hashed in digests, left out of fixtures
BIG_LISTS = re.compile(r"^tokenizer\.ggml\.(tokens|scores|token_type|merges)$")
OLD_TRANSFORMERS = "4.38.2"
CONVERT_TIMEOUT = 600


# ---------------------------------------------------------------------------------------------
# cases


def is_rope_model(cfg):
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    return "rope_theta" in text or "rope_scaling" in text


def make_cases(cfg):
    """[(id, description, ops)] for one config.json. An op is ["del", path] or ["set", path, v]."""
    cases = []
    seen = set()

    def add(desc, ops):
        key = json.dumps(ops, sort_keys=True)
        if key in seen:
            return
        seen.add(key)
        cases.append({"id": f"c{len(cases):03d}", "desc": desc, "ops": ops})

    # every key removed, top level and nested
    for k, v in cfg.items():
        add(f"remove {k}", [["del", [k]]])
        if isinstance(v, dict):
            for k2 in v:
                add(f"remove {k}.{k2}", [["del", [k, k2]]])
    # every key null
    for k, v in cfg.items():
        if v is not None:
            add(f"{k} = null", [["set", [k], None]])
        if k in ("text_config", "vision_config") and isinstance(v, dict):
            for k2, v2 in v.items():
                if v2 is not None:
                    add(f"{k}.{k2} = null", [["set", [k, k2], None]])
    # an old transformers_version
    if "transformers_version" in cfg:
        add(f"transformers_version = {OLD_TRANSFORMERS}",
            [["set", ["transformers_version"], OLD_TRANSFORMERS]])
    # torch_dtype for dtype and back, at every level that has one
    for prefix, d in [([], cfg)] + [([k], v) for k, v in cfg.items() if isinstance(v, dict)]:
        if "dtype" in d and "torch_dtype" not in d:
            add(f"{'.'.join(prefix + ['torch_dtype'])} instead of dtype",
                [["del", prefix + ["dtype"]], ["set", prefix + ["torch_dtype"], d["dtype"]]])
        if "torch_dtype" in d and "dtype" not in d:
            add(f"{'.'.join(prefix + ['dtype'])} instead of torch_dtype",
                [["del", prefix + ["torch_dtype"]], ["set", prefix + ["dtype"], d["torch_dtype"]]])
    # integer-valued floats written as integers (rope_theta 10000)
    def floats(d, prefix):
        for k, v in d.items():
            if isinstance(v, float) and v.is_integer():
                yield prefix + [k], v
            elif isinstance(v, dict):
                yield from floats(v, prefix + [k])
    for path, v in floats(cfg, []):
        add(f"{'.'.join(path)} = {int(v)} (an integer)", [["set", path, int(v)]])
    # rope_scaling with `type` instead of `rope_type`
    for prefix, d in [([], cfg)] + [([k], v) for k, v in cfg.items() if k == "text_config" and isinstance(v, dict)]:
        rs = d.get("rope_scaling")
        p = prefix + ["rope_scaling"]
        if isinstance(rs, dict) and "rope_type" in rs and "type" not in rs:
            new = {("type" if k == "rope_type" else k): v for k, v in rs.items()}
            add(f"{'.'.join(p)} with type instead of rope_type", [["set", p, new]])
        if rs is None and "rope_theta" in d:
            n_ctx = d.get("max_position_embeddings") or 4096
            add(f"{'.'.join(p)} = linear (legacy type key)",
                [["set", p, {"type": "linear", "factor": 2.0}]])
            add(f"{'.'.join(p)} = yarn (legacy type key)",
                [["set", p, {"type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": max(1, n_ctx // 4)}]])
            add(f"{'.'.join(p)} = dynamic (legacy type key)",
                [["set", p, {"type": "dynamic", "factor": 2.0}]])
    # Phi-3's legacy LongRoPE spelling
    if cfg.get("model_type") == "phi3":
        n = int(cfg["hidden_size"] // cfg["num_attention_heads"] * cfg.get("partial_rotary_factor", 1.0)) // 2
        add("rope_scaling = su (legacy Phi-3 LongRoPE)",
            [["set", ["rope_scaling"], {"type": "su", "short_factor": [1.0] * n,
                                        "long_factor": [1.0 + i / n for i in range(n)]}]])
    return cases


# the keys the converter and llama.cpp's loader read for the families gmat writes: --subset runs
# only the cases that touch one of them, and every variant case (a quicker, representative run)
SUBSET_KEYS = {
    "architectures", "model_type", "text_config", "vision_config", "hidden_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta", "rope_scaling",
    "rms_norm_eps", "layer_norm_eps", "tie_word_embeddings", "sliding_window", "num_experts",
    "num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "n_routed_experts",
    "n_shared_experts", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
    "v_head_dim", "first_k_dense_replace", "type_vocab_size", "partial_rotary_factor",
    "query_pre_attn_scalar", "rope_local_base_freq", "final_logit_softcapping",
    "attn_logit_softcapping", "original_max_position_embeddings", "norm_topk_prob",
    "routed_scaling_factor", "quantization_config", "torch_dtype", "dtype",
}

NULL_SUBSET_KEYS = {"head_dim", "rope_theta", "num_key_value_heads", "rope_scaling",
                    "tie_word_embeddings", "sliding_window", "text_config", "intermediate_size"}


def in_subset(case):
    if case["id"] == "base":
        return True
    if not (case["desc"].startswith("remove ") or case["desc"].endswith(" = null")):
        return True  # a variant
    keys = [k for op in case["ops"] for k in op[1][-1:]]
    if case["desc"].endswith(" = null"):
        return any(k in NULL_SUBSET_KEYS for k in keys)
    return any(k in SUBSET_KEYS for k in keys)


def case_kind(case):
    """remove (a key removed), null (a key set to null) or variant (the realistic edits)."""
    if case["id"] == "base":
        return "base"
    if case["desc"].startswith("remove "):
        return "remove"
    if case["desc"].endswith(" = null"):
        return "null"
    return "variant"


def apply_ops(cfg, ops):
    cfg = copy.deepcopy(cfg)
    for op in ops:
        path = op[1]
        d = cfg
        for k in path[:-1]:
            d = d[k]
        if op[0] == "del":
            d.pop(path[-1], None)
        else:
            d[path[-1]] = copy.deepcopy(op[2])
    return cfg


# ---------------------------------------------------------------------------------------------
# GGUF digests


def gguf_digest(path):
    from gguf import GGUFReader
    import numpy as np

    r = GGUFReader(path)
    kv = []
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        types = [int(t) for t in f.types]
        v = f.contents() if f.types else None
        if isinstance(v, float):
            v = float(np.float32(v))
        elif isinstance(v, list):
            v = [float(np.float32(x)) if isinstance(x, float) else x for x in v]
        if BIG_LISTS.match(name) and isinstance(v, list):
            v = {"len": len(v), "sha256": hashlib.sha256(json.dumps(v).encode()).hexdigest()}
        kv.append([name, types, v])
    tensors = []
    for t in r.tensors:
        tensors.append([t.name, t.tensor_type.name, [int(x) for x in t.shape],
                        hashlib.sha256(bytes(t.data)).hexdigest()])
    return {"kv": kv, "tensors": tensors}


def compare_digests(ours, theirs):
    """Differences (list of str) between two digests, cosmetic keys ignored."""
    diffs = []
    ok = [e for e in ours["kv"] if not IGNORED_KEYS.match(e[0])]
    tk = [e for e in theirs["kv"] if not IGNORED_KEYS.match(e[0])]
    od, td = {e[0]: e for e in ok}, {e[0]: e for e in tk}
    for k in od.keys() - td.keys():
        diffs.append(f"extra key {k} = {short(od[k][2])}")
    for k in td.keys() - od.keys():
        diffs.append(f"missing key {k} = {short(td[k][2])}")
    for k in od.keys() & td.keys():
        if od[k][1:] != td[k][1:]:
            diffs.append(f"key {k}: {short(od[k][1:])} vs {short(td[k][1:])}")
    if not diffs and [e[0] for e in ok] != [e[0] for e in tk]:
        diffs.append("key order differs")
    ot, tt = {t[0]: t for t in ours["tensors"]}, {t[0]: t for t in theirs["tensors"]}
    for n in ot.keys() - tt.keys():
        diffs.append(f"extra tensor {n}")
    for n in tt.keys() - ot.keys():
        diffs.append(f"missing tensor {n}")
    for n in ot.keys() & tt.keys():
        a, b = ot[n], tt[n]
        if a[1:3] != b[1:3]:
            diffs.append(f"tensor {n}: {a[1]} {a[2]} vs {b[1]} {b[2]}")
        elif a[3] != b[3]:
            diffs.append(f"tensor {n}: data differs")
    if not diffs and [t[0] for t in ours["tensors"]] != [t[0] for t in theirs["tensors"]]:
        diffs.append("tensor order differs")
    return sorted(diffs)


def short(v, n=100):
    s = json.dumps(v)
    return s if len(s) <= n else s[: n - 3] + "..."


# ---------------------------------------------------------------------------------------------
# model folders


def outtype(model_dir):
    """The kit's reference type: bf16, f32 for float32 models."""
    exp = model_dir / "expected"
    return "f32" if any(p.name.endswith("-f32.gguf") for p in exp.glob("*.gguf")) else "bf16"


def has_mmproj(model_dir):
    return any(p.name.startswith("mmproj-") for p in (model_dir / "expected").glob("*.gguf"))


def case_dir(work, model, case):
    # the last component is the model's name: the converter derives general.name from it, and
    # transformers matches model types against the path when config.json has none
    return f"{model}/{case['id']}/{model}"


def make_case_folder(work, kit_model, model, case, cfg):
    rel = case_dir(work, model, case)
    d = work / rel
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for f in (kit_model / "hf").iterdir():
        if f.name != "config.json":
            os.symlink(f.resolve(), d / f.name)
    with open(d / "config.json", "w") as fh:
        json.dump(cfg, fh, indent=2)
    return rel


def last_error(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    for l in reversed(lines):
        if re.search(r"Error|error|Exception|assert|failed|refus", l):
            return l.strip()[:400]
    return (lines[-1].strip()[:400]) if lines else ""


# ---------------------------------------------------------------------------------------------
# stage: convert


def stage_convert(args, models):
    ref_src = Path(os.environ["GMAT_REF"]) / "llama.cpp-src"
    sys.path.insert(0, str(ref_src))
    sys.path.insert(0, str(ref_src / "gguf-py"))
    os.chdir(args.out)
    import logging  # noqa: F401
    import convert_hf_to_gguf as conv  # imports torch once
    from conversion import ModelBase, load_all_models
    from transformers import AutoConfig

    load_all_models()
    for model in models:
        kit_model = args.kit / model
        res = load_results(args.out, model)
        cfg = json.load(open(kit_model / "hf" / "config.json"))
        cases = [{"id": "base", "desc": "config.json as the kit has it", "ops": []}] + make_cases(cfg)
        res["cases"] = {c["id"]: {**res["cases"].get(c["id"], {}), **c} for c in cases}
        todo = [c for c in cases if args.redo or "convert" not in res["cases"][c["id"]]
                or (c["id"] == "base" and "reads" not in res["cases"]["base"]["convert"])
                or (args.redo_llama and res["cases"][c["id"]]["convert"]["text"].get("llama", {}).get("rc", 0) != 0)]
        if args.subset:
            todo = [c for c in todo if in_subset(c)]
        # the cases touching keys the converter reads first (a stopped run has the telling ones)
        todo.sort(key=lambda c: not in_subset(c))
        if args.kinds:
            todo = [c for c in todo if case_kind(c) in args.kinds.split(",") + ["base"]]
        if args.only:
            todo = [c for c in todo if c["id"] == "base" or args.only in c["desc"]]
        if args.limit:
            todo = todo[: args.limit]
        print(f"{model}: {len(cases)} cases, {len(todo)} to convert", flush=True)
        if todo:
            # the tokenizer's modules imported once here, not in every forked conversion
            try:
                from transformers import AutoTokenizer
                AutoTokenizer.from_pretrained(kit_model / "hf")
            except Exception:  # noqa: BLE001
                pass
        for i, case in enumerate(todo):
            t0 = time.time()
            edited = apply_ops(cfg, case["ops"])
            rel = make_case_folder(args.out, kit_model, model, case, edited)
            runs = [("text", outtype(kit_model), False)]
            if has_mmproj(kit_model):
                runs.append(("mmproj", "f16", True))
            result = {"path": rel}
            same = same_as_base(res, case, cfg, edited, Path(rel), ModelBase, AutoConfig)
            if same is not None:
                res["cases"][case["id"]]["convert"] = same
                shutil.rmtree(args.out / rel)
                save_results(args.out, model, res)
                print(f"  {case['id']} {case['desc'][:60]:<60} converter's view as the kit "
                      f"config's: its file too ({time.time() - t0:.1f}s)", flush=True)
                continue
            for label, ot, mmproj in runs:
                gguf_path = Path(rel).parent / f"conv-{label}.gguf"
                log = Path(rel).parent / f"conv-{label}.log"
                view_path = Path(rel).parent / "view.json"
                pid = os.fork()
                if pid == 0:  # child: one conversion
                    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                    signal.alarm(CONVERT_TIMEOUT)
                    code = 1
                    reads_box = []
                    try:
                        if label == "text":
                            try:
                                AutoConfig.from_pretrained(Path(rel), trust_remote_code=False).to_dict()
                                fallback = None
                            except Exception as e:  # noqa: BLE001
                                fallback = f"{type(e).__name__}: {e}"[:300]
                            view = ModelBase.load_hparams(Path(rel), False)
                            with open(view_path, "w") as fh:
                                json.dump({"fallback": fallback, "view": view}, fh, default=repr)
                            # which keys of the view the conversion reads (written at exit)
                            reads = set()
                            orig = ModelBase.load_hparams
                            ModelBase.load_hparams = staticmethod(
                                lambda *a, **k: ReadTracker(orig(*a, **k), reads))
                            reads_box.append(reads)
                        sys.argv = ["convert_hf_to_gguf.py", rel, "--outtype", ot,
                                    "--outfile", str(gguf_path)] + (["--mmproj"] if mmproj else [])
                        conv.main()
                        code = 0
                    except SystemExit as e:
                        code = e.code if isinstance(e.code, int) else 1
                    except BaseException:  # noqa: BLE001
                        traceback.print_exc()
                        code = 1
                    if reads_box:
                        with open(Path(rel).parent / "reads.json", "w") as fh:
                            json.dump(sorted(reads_box[0]), fh)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
                _, status = os.waitpid(pid, 0)
                rc = os.waitstatus_to_exitcode(status)
                text = Path(log).read_text(errors="replace")
                r = {"rc": rc}
                if rc == 0 and gguf_path.exists():
                    r["digest"] = gguf_digest(str(gguf_path))
                    if label == "text":
                        # a file equal to the kit config's (cosmetic keys aside) loads as that
                        # one does: llama.cpp is run only on files that differ
                        base = res["cases"].get("base", {}).get("convert", {}).get("text", {})
                        if (case["id"] != "base" and "digest" in base and "llama" in base
                                and not compare_digests(r["digest"], base["digest"])):
                            r["llama"] = dict(base["llama"], same_as_base=True)
                        else:
                            r["llama"] = llama_check(gguf_path)
                else:
                    r["error"] = last_error(text)
                if label == "text" and view_path.exists():
                    v = json.load(open(view_path))
                    result["view"] = v["view"]
                    result["autoconfig_error"] = v["fallback"]
                reads_path = Path(rel).parent / "reads.json"
                if label == "text" and reads_path.exists():
                    result["reads"] = json.load(open(reads_path))
                result[label] = r
                if gguf_path.exists():
                    if r.get("llama", {}).get("rc", 0) != 0:
                        # kept for diagnosis: the file llama.cpp refuses
                        gguf_path.rename(Path(rel).parent / "conv-refused-by-llama.gguf")
                    else:
                        gguf_path.unlink()
            res["cases"][case["id"]]["convert"] = result
            shutil.rmtree(args.out / rel)
            st = "ok" if result["text"]["rc"] == 0 else "REFUSED"
            if result["text"].get("llama", {}).get("rc", 0) != 0:
                st = "ok, llama.cpp REFUSES"
            print(f"  {case['id']} {case['desc'][:60]:<60} converter {st} ({time.time() - t0:.1f}s)",
                  flush=True)
            save_results(args.out, model, res)  # after every case: a run may be stopped
        save_results(args.out, model, res)


class ReadTracker(dict):
    """A dict that records which keys the converter reads (dotted paths into `reads`; `p.*`
    when it iterates or copies the whole dict at p). Nested dicts are tracked too."""

    def __init__(self, d, reads, prefix=""):
        super().__init__()
        self._reads, self._prefix = reads, prefix
        for k, v in d.items():
            dict.__setitem__(self, k, ReadTracker(v, reads, f"{prefix}{k}.") if type(v) is dict else v)

    def _r(self, k):
        self._reads.add(f"{self._prefix}{k}")

    def _all(self):
        self._reads.add(f"{self._prefix}*")

    def __getitem__(self, k):
        self._r(k)
        return dict.__getitem__(self, k)

    def get(self, k, default=None):
        self._r(k)
        return dict.get(self, k, default)

    def __contains__(self, k):
        self._r(k)
        return dict.__contains__(self, k)

    def setdefault(self, k, default=None):
        self._r(k)
        return dict.setdefault(self, k, default)

    def pop(self, k, *default):
        self._r(k)
        return dict.pop(self, k, *default)

    def __iter__(self):
        self._all()
        return dict.__iter__(self)

    def keys(self):
        self._all()
        return dict.keys(self)

    def values(self):
        self._all()
        return dict.values(self)

    def items(self):
        self._all()
        return dict.items(self)

    def __len__(self):
        self._all()
        return dict.__len__(self)

    def __eq__(self, other):
        self._all()
        return dict.__eq__(self, other)

    __hash__ = None

    def copy(self):
        self._all()
        return dict(dict.items(self))

    def __reduce_ex__(self, proto):
        self._all()
        return (dict, (dict(dict.items(self)),))


def diff_paths(a, b, prefix=""):
    """Dotted paths where two views differ (into dicts present on both sides)."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k, KeyError), b.get(k, KeyError)
        if isinstance(x, dict) and isinstance(y, dict):
            out += diff_paths(x, y, f"{prefix}{k}.")
        elif json.dumps(x, sort_keys=True, default=repr) != json.dumps(y, sort_keys=True, default=repr):
            out.append(f"{prefix}{k}")
    return out


def path_read(p, reads):
    """Whether the converter read the value at path p (or a whole dict holding it, or
    something under it)."""
    parts = p.split(".")
    for i in range(len(parts)):
        if ".".join(parts[:i] + ["*"]) in reads:
            return True
    return p in reads or any(r.startswith(p + ".") for r in reads)


def converter_view(rel, ModelBase, AutoConfig):
    """(ModelBase.load_hparams's view, why AutoConfig failed or None), as JSON."""
    try:
        AutoConfig.from_pretrained(rel, trust_remote_code=False).to_dict()
        fallback = None
    except Exception as e:  # noqa: BLE001
        fallback = f"{type(e).__name__}: {e}"[:300]
    view = ModelBase.load_hparams(rel, False)
    return json.loads(json.dumps(view, default=repr)), fallback


# config.json keys read raw besides the view: Gemma3Model's `sliding_window`
# (conversion/gemma.py, set_gguf_parameters); and for every model gguf-py's SpecialVocab reads
# the `<type>_token_id` keys (vocab.py, _try_load_from_config_json)
RAW_READS = {"gemma3": ["sliding_window"], "gemma3_text": ["sliding_window"]}


def same_as_base(res, case, cfg, edited, rel, ModelBase, AutoConfig):
    """The converter's result for a case whose view of config.json (ModelBase.load_hparams,
    `_name_or_path` aside) equals the kit config's, or None.

    The converter's output is a function of that view, the tokenizer files and the tensors
    (and, for a few classes, raw config.json keys: RAW_READS), so such a case writes the kit
    config's file (general.name aside, which comes from the folder name, the same here): the
    base case's result is recorded, marked `same_as_base`, without running it again."""
    base = res["cases"].get("base", {}).get("convert")
    if case["id"] == "base" or not base or "view" not in base or base["text"]["rc"] != 0:
        return None
    view, fallback = converter_view(rel, ModelBase, AutoConfig)
    reads = set(base.get("reads") or [])
    changed = [p for p in diff_paths(base["view"], view) if p != "_name_or_path"]
    if changed and (not base.get("reads") or any(path_read(p, reads) for p in changed)):
        return None
    raw = RAW_READS.get(cfg.get("model_type"), []) + [k for k in set(cfg) | set(edited)
                                                      if k.endswith("_token_id")]
    for k in raw:
        if json.dumps(edited.get(k)) != json.dumps(cfg.get(k)):
            return None
    if changed:
        out_note = f"changes only keys the converter does not read: {', '.join(changed)}"
    else:
        out_note = "the same view"
    out = {"path": str(rel), "view": view, "autoconfig_error": fallback, "same_as_base": out_note}
    for label in ("text", "mmproj"):
        if label in base:
            out[label] = dict(base[label], same_as_base=True)
    return out


def stage_views(args, models):
    """The converter's view alone (no conversion) for the cases not converted yet: the
    fixtures then check gmat's view of every case, and its metadata where the converter ran."""
    ref_src = Path(os.environ["GMAT_REF"]) / "llama.cpp-src"
    sys.path.insert(0, str(ref_src))
    sys.path.insert(0, str(ref_src / "gguf-py"))
    os.chdir(args.out)
    from conversion import ModelBase
    from transformers import AutoConfig

    for model in models:
        kit_model = args.kit / model
        res = load_results(args.out, model)
        cfg = json.load(open(kit_model / "hf" / "config.json"))
        cases = [{"id": "base", "desc": "config.json as the kit has it", "ops": []}] + make_cases(cfg)
        res["cases"] = {c["id"]: {**res["cases"].get(c["id"], {}), **c} for c in cases}
        n = 0
        for case in cases:
            c = res["cases"][case["id"]]
            if "convert" in c or ("view_only" in c and not args.redo):
                continue
            rel = make_case_folder(args.out, kit_model, model, case, apply_ops(cfg, case["ops"]))
            view, fallback = converter_view(Path(rel), ModelBase, AutoConfig)
            c["view_only"] = {"path": rel, "view": view, "autoconfig_error": fallback}
            shutil.rmtree(args.out / rel)
            n += 1
        save_results(args.out, model, res)
        print(f"{model}: {n} views without conversion", flush=True)


def llama_check(gguf_path):
    try:
        p = subprocess.run(["llama-simple", "-m", str(gguf_path), "-n", "1", "hi"],
                           capture_output=True, text=True, timeout=120)
        r = {"rc": p.returncode}
        if p.returncode != 0:
            why = [l.strip() for l in p.stderr.splitlines()
                   if re.search(r"error loading model|GGML_ASSERT|what\(\)|wrong shape|missing tensor"
                                r"|key not found|wrong number of tensors|failed to", l)]
            r["error"] = (why[0] if why else last_error(p.stderr))[:400]
    except subprocess.TimeoutExpired:
        r = {"rc": -1, "error": "timeout"}
    return r


# ---------------------------------------------------------------------------------------------
# stage: gmat


def stage_gmat(args, models):
    for model in models:
        kit_model = args.kit / model
        res = load_results(args.out, model)
        cfg = json.load(open(kit_model / "hf" / "config.json"))
        todo = [c for c in res["cases"].values()
                if "convert" in c and (args.redo or "gmat" not in c)
                and not (args.skip_same and c["convert"].get("same_as_base"))]
        if args.limit:
            todo = todo[: args.limit]
        print(f"{model}: {len(todo)} cases for gmat", flush=True)
        ft = "F32" if outtype(kit_model) == "f32" else "BF16"
        for case in todo:
            rel = make_case_folder(args.out, kit_model, model, case, apply_ops(cfg, case["ops"]))
            base = args.out / Path(rel).parent
            store, out, mm = base / "store", base / "gmat.gguf", base / "gmat-mmproj.gguf"
            g = {}
            p = subprocess.run([args.gmat, "import", "-q", "--model", rel, "-o", str(store)],
                               capture_output=True, text=True, cwd=args.out)
            if p.returncode == 0:
                cmd = [args.gmat, "export", "-q", "--model", str(store), "--type", ft, "-o", str(out)]
                if has_mmproj(kit_model):
                    cmd += ["--mmproj", str(mm)]
                p = subprocess.run(cmd, capture_output=True, text=True, cwd=args.out)
            g["rc"] = p.returncode
            if p.returncode != 0:
                g["error"] = p.stderr.strip()[-600:]
            else:
                g["text"] = gmat_diff(out, case["convert"].get("text", {}))
                if has_mmproj(kit_model):
                    g["mmproj"] = gmat_diff(mm, case["convert"].get("mmproj", {}))
            case["gmat"] = g
            case["verdict"] = verdict(case)
            shutil.rmtree(base)
            print(f"  {case['id']} {case['desc'][:60]:<60} {case['verdict']}", flush=True)
        save_results(args.out, model, res)


def gmat_diff(path, conv):
    if "digest" not in conv:
        return {"diffs": ["converter wrote no file"]}
    return {"diffs": compare_digests(gguf_digest(str(path)), conv["digest"])}


def verdict(case):
    c, g = case["convert"], case.get("gmat")
    if g is None:
        return "not run"
    conv_ok = c["text"]["rc"] == 0 and c.get("mmproj", {"rc": 0})["rc"] == 0
    loads = c["text"].get("llama", {}).get("rc", 0) == 0
    if not conv_ok:
        return "PASS (both refuse)" if g["rc"] != 0 else "FAIL (converter refuses, gmat writes)"
    if not loads:
        return ("PASS (llama.cpp refuses the converter's file; gmat refuses)" if g["rc"] != 0
                else "FAIL (llama.cpp refuses the converter's file; gmat writes)")
    if g["rc"] != 0:
        return "FAIL (gmat refuses)"
    diffs = g["text"]["diffs"] + g.get("mmproj", {"diffs": []})["diffs"]
    return "PASS (identical)" if not diffs else f"FAIL ({len(diffs)} differences)"


# ---------------------------------------------------------------------------------------------
# stage: fixtures


def stage_fixtures(args, models):
    dest = ROOT / "testdata" / "config-ablation"
    dest.mkdir(parents=True, exist_ok=True)
    for model in models:
        kit_model = args.kit / model
        res = load_results(args.out, model)
        cfg = json.load(open(kit_model / "hf" / "config.json"))
        base = res["cases"]["base"]["convert"]
        base_meta = fixture_meta(base["text"]["digest"])
        base_view = base["view"]
        out_cases = []
        for cid, c in sorted(res["cases"].items()):
            if cid == "base" or ("convert" not in c and "view_only" not in c):
                continue
            conv = c.get("convert") or c["view_only"]
            e = {"id": cid, "desc": c["desc"], "ops": c["ops"], "path": conv["path"]}
            e["view"] = dict_delta(base_view, conv.get("view"))
            if conv.get("autoconfig_error"):
                e["autoconfig_error"] = conv["autoconfig_error"]
            if conv.get("same_as_base"):
                # not converted again: its view (keys the converter reads) is the kit config's
                e["same_as_base"] = conv["same_as_base"]
            t = conv.get("text")
            if t is None:
                e["converter"] = "not run"
            elif t["rc"] != 0:
                e["converter"] = "refuses"
                e["error"] = t.get("error", "")
            elif t.get("llama", {}).get("rc", 0) != 0:
                e["converter"] = "llama.cpp refuses"
                e["error"] = t["llama"].get("error", "")
                e["metadata"] = dict_delta(base_meta, fixture_meta(t["digest"]))
            else:
                e["converter"] = "writes"
                e["metadata"] = dict_delta(base_meta, fixture_meta(t["digest"]))
                e["tensors"] = dict_delta(tensor_infos(base["text"]["digest"]),
                                          tensor_infos(t["digest"]))
            g = c.get("gmat")
            if g is not None:
                e["gmat"] = "refuses" if g.get("rc") else "writes"
                if g.get("rc"):
                    e["gmat_error"] = g.get("error") or ""
            out_cases.append(e)
        tensors = source_tensors(kit_model / "hf")
        doc = {
            "model": model,
            "comment": "Written by bench/parity_configs.py fixtures: the converter's view of each "
                       "edited config.json (delta from `base_view`) and its GGUF metadata (delta "
                       "from `base_metadata`, tokenizer lists left out).",
            "config": cfg,
            "base_view": base_view,
            "base_metadata": base_meta,
            "base_tensors": tensor_infos(base["text"]["digest"]),
            "source_tensors": tensors,
            "outtype": outtype(kit_model),
            "cases": out_cases,
        }
        with open(dest / f"{model}.json", "w") as fh:
            json.dump(doc, fh, indent=None, separators=(",", ":"), sort_keys=False)
            fh.write("\n")
        print(f"{model}: {len(out_cases)} cases -> {dest / (model + '.json')}")


def fixture_meta(digest):
    """key -> [types, value]: the converter's keys except cosmetic ones and tokenizer.*; the
    token list as its length only (llama.cpp's n_vocab)."""
    out = {k: [t, v] for k, t, v in digest["kv"]
           if not IGNORED_KEYS.match(k) and not k.startswith("tokenizer.")
           and not k.startswith("general.") or k in ("general.architecture", "general.file_type",
                                                      "general.type",
                                                      "general.quantization_version")}
    for k, t, v in digest["kv"]:
        if k == "tokenizer.ggml.tokens" and isinstance(v, dict):
            out[k] = [t, {"len": v["len"]}]
    return out


def tensor_infos(digest):
    return {t[0]: [t[1], t[2]] for t in digest["tensors"]}


def dict_delta(base, new):
    """{"set": {k: v}, "del": [k]} turning base into new (None when new is None)."""
    if new is None:
        return None
    # compared as JSON: 10000 and 10000.0 are equal in Python but not in the view
    d = {"set": {k: v for k, v in new.items()
                 if k not in base or json.dumps(base[k], sort_keys=True) != json.dumps(v, sort_keys=True)},
         "del": sorted(k for k in base if k not in new)}
    return d


def source_tensors(hf):
    """[name, dtype, shape] of the safetensors files, in file order."""
    import struct
    out = []
    for f in sorted(hf.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            out.append([name, info["dtype"], info["shape"]])
    return out


# ---------------------------------------------------------------------------------------------
# stage: report


def stage_report(args, models):
    total = {"cases": 0, "conv_refused": 0, "llama_refused": 0, "pass": 0, "fail": 0, "not run": 0}
    for model in models:
        res = load_results(args.out, model)
        cases = [c for cid, c in sorted(res["cases"].items()) if "convert" in c]
        n_ref = sum(1 for c in cases if c["convert"]["text"]["rc"] != 0)
        n_ll = sum(1 for c in cases if c["convert"]["text"]["rc"] == 0
                   and c["convert"]["text"].get("llama", {}).get("rc", 0) != 0)
        n_pass = sum(1 for c in cases if c.get("verdict", "").startswith("PASS"))
        n_fail = sum(1 for c in cases if c.get("verdict", "").startswith("FAIL"))
        n_nr = len(cases) - n_pass - n_fail
        print(f"{model:<20} {len(cases):4d} cases  converter refuses {n_ref:3d}  "
              f"llama.cpp refuses {n_ll:3d}  pass {n_pass:4d}  fail {n_fail:3d}  not run {n_nr}")
        for k, v in [("cases", len(cases)), ("conv_refused", n_ref), ("llama_refused", n_ll),
                     ("pass", n_pass), ("fail", n_fail), ("not run", n_nr)]:
            total[k] += v
        if args.verbose:
            for c in cases:
                if not c.get("verdict", "").startswith("PASS") or args.verbose > 1:
                    print(f"   {c['id']} {c['desc']}: {c.get('verdict', 'not run')}")
                    if c["convert"]["text"]["rc"] != 0:
                        print(f"      converter: {c['convert']['text'].get('error', '')[:200]}")
                    elif c["convert"]["text"].get("llama", {}).get("rc", 0) != 0:
                        print(f"      llama.cpp: {c['convert']['text']['llama'].get('error', '')[:200]}")
                    g = c.get("gmat", {})
                    if g.get("rc"):
                        print(f"      gmat: {g.get('error', '').splitlines()[-1][:300] if g.get('error') else ''}")
                    for part in ("text", "mmproj"):
                        for d in g.get(part, {}).get("diffs", [])[:8]:
                            print(f"      {part}: {d}")
    print(f"{'total':<20} {total['cases']:4d} cases  converter refuses {total['conv_refused']:3d}  "
          f"llama.cpp refuses {total['llama_refused']:3d}  pass {total['pass']:4d}  "
          f"fail {total['fail']:3d}  not run {total['not run']}")
    return 1 if total["fail"] else 0


# ---------------------------------------------------------------------------------------------


def load_results(out, model):
    p = out / model / "results.json"
    if p.exists():
        return json.load(open(p))
    return {"model": model, "cases": {}}


def save_results(out, model, res):
    p = out / model / "results.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(res, fh)
    tmp.replace(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="+", choices=["convert", "views", "gmat", "fixtures", "report"])
    ap.add_argument("--kit", type=Path, default=ROOT.parent / "shared" / "reference" / "models")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "parity-configs")
    ap.add_argument("--gmat", default=str(ROOT / "target" / "release" / "gmat"))
    ap.add_argument("--models", default="", help="comma-separated kit model names (default: all)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many cases per model")
    ap.add_argument("--subset", action="store_true",
                    help="only the cases touching keys the converter reads, and the variants")
    ap.add_argument("--kinds", default="",
                    help="only these kinds of cases: remove, null, variant (comma-separated)")
    ap.add_argument("--only", default="", help="only the cases whose description has this text")
    ap.add_argument("--skip-same", action="store_true",
                    help="gmat stage: leave out the cases whose converter view equals the kit "
                         "config's (gmat's view of them is checked by cargo test)")
    ap.add_argument("--redo", action="store_true", help="run cases that already have results")
    ap.add_argument("--redo-llama", action="store_true",
                    help="convert again the cases whose file llama.cpp refused")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    args = ap.parse_args()
    args.kit = args.kit.resolve()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m] or sorted(
        p.name for p in args.kit.iterdir() if (p / "hf" / "config.json").is_file())
    rc = 0
    for st in args.stages:
        rc |= {"convert": stage_convert, "views": stage_views, "gmat": stage_gmat,
               "fixtures": stage_fixtures,
               "report": stage_report}[st](args, models) or 0
    sys.exit(rc)


if __name__ == "__main__":
    main()
