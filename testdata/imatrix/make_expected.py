"""Writes testdata/imatrix/expected.json (see make_fixtures.sh).

normalised: for every imatrix file, what llama-quantize's load_imatrix keeps per entry, computed
here independently of gmat: GGUF sums / lround(count) per expert (count 0 -> 1.0), legacy
values / ncall. Values are float32; `sha256` hashes their little-endian bytes.
quantize: for every llama-quantize run, the quantize.imatrix.* keys of its output (in file order,
with GGUF value types) and the type and SHA-256 of every tensor's bytes.
"""
import hashlib, json, os, struct, sys
import numpy as np
import gguf

D = "testdata/imatrix"
tmp = sys.argv[1]


def sha(a):
    return hashlib.sha256(np.asarray(a, dtype="<f4").tobytes()).hexdigest()


def entry(vals):
    vals = np.asarray(vals, dtype=np.float32)
    return {"n": int(vals.size), "sha256": sha(vals), "head": [float(x) for x in vals[:4]]}


def load_gguf(path):
    r = gguf.GGUFReader(path)
    sums, counts = {}, {}
    for t in r.tensors:
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = np.array(t.data, dtype=np.float32).reshape(-1)
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = np.array(t.data, dtype=np.float32).reshape(-1)
    assert sums.keys() == counts.keys()
    out = {}
    for name in sorted(sums):
        s, c = sums[name], counts[name]
        ne0 = s.size // c.size
        e = np.zeros(s.size, dtype=np.float32)
        for j, cnt in enumerate(c):
            n = int(np.floor(abs(float(cnt)) + 0.5)) * (1 if cnt >= 0 else -1)  # lround
            if n > 0:
                e[j * ne0:(j + 1) * ne0] = s[j * ne0:(j + 1) * ne0] / np.float32(n)
            else:
                e[j * ne0:(j + 1) * ne0] = 1.0
        out[name] = entry(e)
    f = r.fields
    ds = f["imatrix.datasets"]
    return {
        "format": "gguf",
        "datasets": [bytes(ds.parts[i]).decode() for i in ds.data],
        "chunk_count": int(f["imatrix.chunk_count"].contents()),
        "chunk_size": int(f["imatrix.chunk_size"].contents()),
        "entries": out,
    }


def load_dat(path):
    b = open(path, "rb").read()
    pos = 0

    def i32():
        nonlocal pos
        v = struct.unpack_from("<i", b, pos)[0]
        pos += 4
        return v

    out = {}
    for _ in range(i32()):
        n = i32()
        name = b[pos:pos + n].decode()
        pos += n
        ncall, nval = i32(), i32()
        v = np.frombuffer(b, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        out[name] = entry(v / np.float32(ncall) if ncall > 0 else v)
    chunks = i32()
    n = i32()
    dataset = b[pos:pos + n].decode()
    pos += n
    assert pos == len(b)
    return {"format": "legacy", "datasets": [dataset], "chunk_count": chunks, "chunk_size": 0,
            "entries": dict(sorted(out.items()))}


normalised = {}
for m in ["llama-tiny", "mixtral-tiny"]:
    normalised[f"{m}.imatrix.gguf"] = load_gguf(f"{D}/{m}.imatrix.gguf")
    normalised[f"{m}.imatrix.dat"] = load_dat(f"{D}/{m}.imatrix.dat")

TYPES = {gguf.GGUFValueType.STRING: "string", gguf.GGUFValueType.UINT32: "u32"}
quantize = {}
for fn in sorted(os.listdir(tmp)):
    if not fn.endswith(".gguf"):
        continue
    r = gguf.GGUFReader(os.path.join(tmp, fn))
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    meta = [[k, TYPES[r.fields[k].types[0]], r.fields[k].contents()]
            for k in keys if k.startswith("quantize.")]
    tensors = {t.name: {"type": t.tensor_type.name, "sha256": hashlib.sha256(bytes(t.data)).hexdigest()}
               for t in r.tensors}
    quantize[fn[: -len(".gguf")]] = {"last_keys": keys[-6:], "metadata": meta, "tensors": tensors}

json.dump({"normalised": normalised, "quantize": quantize}, sys.stdout, indent=1)
print()
