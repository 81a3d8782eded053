#!/usr/bin/env python3
"""Makes a "fine-tune" of a HF safetensors model for bench/run.sh: a copy that shares half its
tensors with the base (issue 15's case). Every other tensor of each layer is changed (the lowest
mantissa bit of every BF16/F16 value flipped), alternating from layer to layer, and the token
embedding; all other tensors are byte-identical. On the bench model that is 51 of 102 tensors
and 49% of the bytes changed. (Until 2026-11 the even-numbered layers and the embedding were
changed: 55 tensors and 54% of the bytes, so the fine-tune shared less than half.)

    python3 bench/make_finetune.py BASE_DIR OUT_DIR

Needs numpy. Side files (config, tokenizer, index) are copied as they are.
"""
import json
import os
import re
import shutil
import struct
import sys

import numpy as np


def changer(names):
    """Returns whether a tensor is changed: in layer i, the k-th kind of layer tensor (in name
    order) when i + k is even; outside the layers, the token embedding."""
    layer = re.compile(r"\.layers\.(\d+)\.(.+)$")
    kinds = sorted({m.group(2) for m in map(layer.search, names) if m})

    def changed(name):
        m = layer.search(name)
        if m:
            return (int(m.group(1)) + kinds.index(m.group(2))) % 2 == 0
        return "embed_tokens" in name

    return changed


def header_of(path):
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(hlen)), 8 + hlen


def main():
    base, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    shards = sorted(fn for fn in os.listdir(base) if fn.endswith(".safetensors"))
    headers = {fn: header_of(os.path.join(base, fn)) for fn in shards}
    changed = changer([n for h, _ in headers.values() for n in h if n != "__metadata__"])
    n_changed = n_total = t_changed = t_total = 0
    for fn in sorted(os.listdir(base)):
        src, dst = os.path.join(base, fn), os.path.join(out, fn)
        if fn not in headers:
            if os.path.isfile(src):
                shutil.copyfile(src, dst)
            continue
        header, start = headers[fn]
        shutil.copyfile(src, dst)
        with open(dst, "r+b") as f:
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                a, b = info["data_offsets"]
                n_total += b - a
                t_total += 1
                if not changed(name) or info["dtype"] not in ("BF16", "F16"):
                    continue
                f.seek(start + a)
                v = np.frombuffer(f.read(b - a), dtype="<u2") ^ np.uint16(1)
                f.seek(start + a)
                f.write(v.tobytes())
                n_changed += b - a
                t_changed += 1
    print(
        f"fine-tune in {out}: {t_changed} of {t_total} tensors and "
        f"{n_changed / max(n_total, 1):.1%} of the tensor bytes changed"
    )


if __name__ == "__main__":
    main()
