"""Sparse safetensors shards for the scale checks: real names, shapes and headers, all-zero data
that takes no disk (the data region is made with truncate)."""
import json
import os
import struct


def write_sparse_shards(out, shapes, shards, dtype="BF16", metadata=None, dtypes=None):
    """Writes `shapes` (name -> shape, in file order) as `shards` sparse safetensors files plus
    model.safetensors.index.json; every tensor is `dtype` unless `dtypes` (name -> dtype) says
    otherwise; returns (total bytes, number of files)."""
    widths = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1, "F8_E4M3": 1}
    dtypes = {n: (dtypes or {}).get(n, dtype) for n in shapes}
    names = list(shapes)
    size = {}
    for n in names:
        count = 1
        for d in shapes[n]:
            count *= d
        size[n] = widths[dtypes[n]] * count
    total = sum(size.values())
    os.makedirs(out, exist_ok=True)
    per, groups, cur, acc = total / shards, [], [], 0
    for n in names:
        cur.append(n)
        acc += size[n]
        if acc >= per * (len(groups) + 1) and len(groups) < shards - 1:
            groups.append(cur)
            cur = []
    groups.append(cur)
    wm = {}
    for k, g in enumerate(groups):
        fn = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        header, off = ({"__metadata__": metadata} if metadata else {}), 0
        for n in g:
            header[n] = {"dtype": dtypes[n], "shape": list(shapes[n]), "data_offsets": [off, off + size[n]]}
            off += size[n]
            wm[n] = fn
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        path = os.path.join(out, fn)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
        os.truncate(path, 8 + len(h) + off)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=1)
    return total, len(groups)
