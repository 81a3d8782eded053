#!/usr/bin/env python3
"""Makes a "fine-tune" of a HF safetensors model for bench/run.sh: a copy in which the tensors of
every even-numbered layer and the token embedding are changed (the lowest mantissa bit of every
BF16/F16 value flipped) and all other tensors are byte-identical, so that about half the bytes
are shared with the base.

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


def changed(name):
    m = re.search(r"\.layers\.(\d+)\.", name)
    if m:
        return int(m.group(1)) % 2 == 0
    return "embed_tokens" in name


def main():
    base, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    n_changed = n_total = 0
    for fn in sorted(os.listdir(base)):
        src, dst = os.path.join(base, fn), os.path.join(out, fn)
        if not fn.endswith(".safetensors"):
            if os.path.isfile(src):
                shutil.copyfile(src, dst)
            continue
        with open(src, "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(hlen))
            start = 8 + hlen
        shutil.copyfile(src, dst)
        with open(dst, "r+b") as f:
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                a, b = info["data_offsets"]
                n_total += b - a
                if not changed(name) or info["dtype"] not in ("BF16", "F16"):
                    continue
                f.seek(start + a)
                v = np.frombuffer(f.read(b - a), dtype="<u2") ^ np.uint16(1)
                f.seek(start + a)
                f.write(v.tobytes())
                n_changed += b - a
    print(f"fine-tune in {out}: {n_changed / max(n_total, 1):.0%} of the tensor bytes changed")


if __name__ == "__main__":
    main()
