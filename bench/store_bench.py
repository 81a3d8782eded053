#!/usr/bin/env python3
"""Store benchmark: how small the GMAT store is, and how fast import, export and verify run,
with each encoding, on the reference kit models and on a synthetic base + fine-tune family.

    python3 bench/store_bench.py [--work DIR] [--gmat BIN] [--finetunes 4] [--rel 0.01]
                                 [--layers 4] [--hidden 2048] [--ffn 5632] [--repeat 3]

Needs numpy (the reference venv has it: ~/.cache/gmat-ref/venv/bin/python) and a release build
of gmat (default: $CARGO_TARGET_DIR/release/gmat or target/release/gmat; `cargo build --release`).
If the codec_bench example is built (`cargo build --release --example codec_bench`), single-core
codec figures are added.

The synthetic family is made the way fine-tuning changes weights: a llama-shaped BF16 base with
normal weights, and fine-tunes in which every weight w of every tensor but the token embeddings
becomes bf16(w * (1 + rel * N(0, 1))) (--rel, default 0.01: a change of about 2.5 BF16 ulps, so
most exponents and high mantissa bits stay, low mantissa bits change); the embeddings are left
untouched. Sizes are what the stores take on disk (files counted once per inode, so hard links
shared with the base count once). Times are the best of --repeat runs, wall clock, on whatever
cores the machine has (CPU count printed). Figures are measured, never asserted.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def shared_dir():
    for p in [os.environ.get("GMAT_SHARED", ""), os.path.join(ROOT, "..", "shared"), "/work/shared"]:
        if p and os.path.isdir(os.path.join(p, "reference", "models")):
            return os.path.abspath(p)
    sys.exit("cannot find shared/reference/models (set GMAT_SHARED)")


def find_gmat(arg):
    if arg:
        return arg
    for d in [os.environ.get("CARGO_TARGET_DIR", ""), os.path.join(ROOT, "target")]:
        p = os.path.join(d, "release", "gmat") if d else ""
        if p and os.access(p, os.X_OK):
            return p
    sys.exit("no release build of gmat found: cargo build --release (or pass --gmat)")


def run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{r.stderr}")
    return r


def timed(repeat, *args, fresh=None):
    """Best wall time of `repeat` runs; `fresh` (a folder) is removed before each run."""
    best = None
    for _ in range(repeat):
        if fresh:
            shutil.rmtree(fresh, ignore_errors=True)
        t = time.perf_counter()
        run(*args)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best


def timed_rounds(repeat, cmds):
    """Runs every command of `cmds` (a dict name -> argv) once per round, `repeat` rounds, the
    commands interleaved so that machine noise falls on all alike. Returns name -> (median wall
    seconds, median CPU seconds of the child)."""
    walls, cpus = {k: [] for k in cmds}, {k: [] for k in cmds}
    for _ in range(repeat):
        for k, argv in cmds.items():
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            run(*argv)
            walls[k].append(time.perf_counter() - t)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[k].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in cmds}


def disk_bytes(*dirs):
    """Bytes of the regular files under dirs, each inode counted once."""
    seen, total = set(), 0
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                st = os.stat(os.path.join(root, f))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def weights_bytes(hf):
    return sum(os.path.getsize(os.path.join(hf, f)) for f in os.listdir(hf) if f.endswith(".safetensors"))


def tensors_bytes(store):
    return disk_bytes(os.path.join(store, "model.gmat", "tensors"))


def bf16(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def bf16_to_f32(u):
    return (u.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    return header, buf, 8 + n


def write_safetensors(path, header, datas):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for d in datas:
            f.write(d)


def make_base(out, kit_llama, layers, hidden, ffn, heads=16, kv_heads=4, vocab=3000):
    os.makedirs(out, exist_ok=True)
    hd = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
              "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * hd, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * hd, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * hd, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * hd),
            p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
            p + "mlp.down_proj.weight": (hidden, ffn)})
    rng = np.random.default_rng(7)
    header, datas, off = {}, [], 0
    for n in sorted(shapes):
        s = shapes[n]
        if n.endswith("norm.weight"):
            x = 1 + 0.1 * rng.standard_normal(s)
        else:
            x = rng.standard_normal(s) * 0.02
        d = bf16(x).tobytes()
        header[n] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + len(d)]}
        off += len(d)
        datas.append(d)
    header["__metadata__"] = {"format": "pt"}
    write_safetensors(os.path.join(out, "model.safetensors"), header, datas)
    cfg = {"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "head_dim": hd,
           "hidden_act": "silu", "hidden_size": hidden, "intermediate_size": ffn,
           "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": heads,
           "num_hidden_layers": layers, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-05,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "vocab_size": vocab}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for n in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copyfile(os.path.join(kit_llama, n), os.path.join(out, n))


def make_finetune(base, out, seed, rel):
    """Every weight but the embeddings nudged by a small relative update, in BF16."""
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(base):
        if not f.endswith(".safetensors"):
            shutil.copyfile(os.path.join(base, f), os.path.join(out, f))
    rng = np.random.default_rng(1000 + seed)
    for f in sorted(os.listdir(base)):
        if not f.endswith(".safetensors"):
            continue
        header, buf, start = read_safetensors(os.path.join(base, f))
        datas = []
        for n, info in sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                              key=lambda kv: kv[1]["data_offsets"][0]):
            s, e = info["data_offsets"]
            raw = buf[start + s:start + e]
            if "embed_tokens" in n or info["dtype"] != "BF16":
                datas.append(raw)
                continue
            w = bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
            w2 = w * (1 + rel * rng.standard_normal(w.shape).astype(np.float32))
            datas.append(bf16(w2).tobytes())
        write_safetensors(os.path.join(out, f), header, datas)


def codec_bench(args_list):
    exe = os.path.join(os.path.dirname(args_list[0]), "examples", "codec_bench")
    if not os.access(exe, os.X_OK):
        return None
    return run(exe, *args_list[1:]).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/gmat-store-bench")
    ap.add_argument("--gmat")
    ap.add_argument("--finetunes", type=int, default=4)
    ap.add_argument("--rel", type=float, default=0.01)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    gmat = find_gmat(a.gmat)
    kit = os.path.join(shared_dir(), "reference", "models")
    W = a.work
    shutil.rmtree(W, ignore_errors=True)
    os.makedirs(W)
    print(f"gmat {gmat}; {os.cpu_count()} CPUs; work dir {W}\n")

    # 1. Kit models: ratio of each encoding, export byte identity and time.
    print("## Reference kit models (random-init weights)\n")
    print("| model | dtypes | source | zstd store | ratio | raw store | export BF16 raw / zstd |")
    print("|---|---|---|---|---|---|---|")
    tot_src = tot_z = 0
    for name in sorted(os.listdir(kit)):
        hf = os.path.join(kit, name, "hf")
        if not os.path.isdir(hf):
            continue
        src = weights_bytes(hf)
        dts = set()
        for f in os.listdir(hf):
            if f.endswith(".safetensors"):
                h, _, _ = read_safetensors(os.path.join(hf, f))
                dts |= {v["dtype"] for k, v in h.items() if k != "__metadata__"}
        sizes, times = {}, {}
        for enc in ["raw", "zstd"]:
            st = os.path.join(W, f"kit-{name}-{enc}")
            run(gmat, "import", "-q", "--encoding", enc, "--model", hf, "-o", st)
            sizes[enc] = tensors_bytes(st)
            out = os.path.join(W, f"kit-{name}-{enc}.gguf")
            r = subprocess.run([gmat, "export", "-q", "--model", st, "--type", "BF16", "-o", out],
                               capture_output=True, text=True)
            times[enc] = timed(a.repeat, gmat, "export", "-q", "--model", st, "--type", "BF16", "-o", out) \
                if r.returncode == 0 else None
        same = ""
        if times["raw"] is not None:
            with open(os.path.join(W, f"kit-{name}-raw.gguf"), "rb") as f1, \
                    open(os.path.join(W, f"kit-{name}-zstd.gguf"), "rb") as f2:
                same = "identical" if f1.read() == f2.read() else "DIFFERENT"
            ex = f"{times['raw']:.3f} s / {times['zstd']:.3f} s ({same})"
        else:
            ex = "(arch not exported)"
        tot_src += src
        tot_z += sizes["zstd"]
        print(f"| {name} | {','.join(sorted(dts))} | {src / 1e6:.1f} MB | {sizes['zstd'] / 1e6:.1f} MB | "
              f"{sizes['zstd'] / src:.3f} | {sizes['raw'] / 1e6:.1f} MB | {ex} |")
    print(f"| all | | {tot_src / 1e6:.1f} MB | {tot_z / 1e6:.1f} MB | {tot_z / tot_src:.3f} | | |\n")

    # 2. Synthetic family.
    fam = os.path.join(W, "family")
    base_hf = os.path.join(fam, "base-hf")
    make_base(base_hf, os.path.join(kit, "llama-tiny", "hf"), a.layers, a.hidden, a.ffn)
    fts = []
    for k in range(1, a.finetunes + 1):
        p = os.path.join(fam, f"ft{k}-hf")
        make_finetune(base_hf, p, k, a.rel)
        fts.append(p)
    src_base = weights_bytes(base_hf)
    src_family = src_base + sum(weights_bytes(p) for p in fts)
    mb = src_base / 1e6
    print(f"## Synthetic family: base {mb:.0f} MB BF16 ({a.layers} layers, hidden {a.hidden}, ffn {a.ffn}) "
          f"+ {a.finetunes} fine-tunes (rel {a.rel}, embeddings untouched)\n")
    stores = {}
    imp = {}
    for enc in ["raw", "zstd"]:
        st = os.path.join(fam, f"base-{enc}")
        imp[enc] = timed(a.repeat, gmat, "import", "-q", "--encoding", enc, "--model", base_hf, "-o", st,
                         fresh=st)
        stores[enc] = st
    ft_stores = []
    ft_times = []
    for k, p in enumerate(fts, 1):
        st = os.path.join(fam, f"ft{k}")
        ft_times.append(timed(1 if k > 1 else a.repeat, gmat, "import", "-q", "--model", p,
                              "--base", stores["zstd"], "-o", st, fresh=st))
        ft_stores.append(st)
    ft1_alone = os.path.join(fam, "ft1-alone")
    run(gmat, "import", "-q", "--model", fts[0], "-o", ft1_alone)
    base_z = tensors_bytes(stores["zstd"])
    fam_z = disk_bytes(*[os.path.join(s, "model.gmat", "tensors") for s in [stores["zstd"]] + ft_stores])
    ft_own = []
    for s in ft_stores:
        both = disk_bytes(os.path.join(stores["zstd"], "model.gmat", "tensors"), os.path.join(s, "model.gmat", "tensors"))
        ft_own.append(both - base_z)
    print("| what | source | stored | ratio |")
    print("|---|---|---|---|")
    print(f"| base alone (zstd) | {src_base / 1e6:.1f} MB | {base_z / 1e6:.1f} MB | {base_z / src_base:.3f} |")
    print(f"| one fine-tune alone (zstd, no --base) | {weights_bytes(fts[0]) / 1e6:.1f} MB | "
          f"{tensors_bytes(ft1_alone) / 1e6:.1f} MB | {tensors_bytes(ft1_alone) / weights_bytes(fts[0]):.3f} |")
    for k, b in enumerate(ft_own, 1):
        print(f"| fine-tune {k} with --base (own bytes) | {weights_bytes(fts[k - 1]) / 1e6:.1f} MB | "
              f"{b / 1e6:.1f} MB | {b / weights_bytes(fts[k - 1]):.3f} |")
    print(f"| **family: base + {a.finetunes} fine-tunes** | {src_family / 1e6:.1f} MB | {fam_z / 1e6:.1f} MB | "
          f"**{fam_z / src_family:.3f}** |\n")
    insp = run(gmat, "inspect", ft_stores[0]).stdout.strip().splitlines()
    print("`gmat inspect` of fine-tune 1, totals:\n\n```\n" + "\n".join(insp[-5:]) + "\n```\n")

    # 3. Throughput on the base (and a delta store).
    print(f"## Throughput ({os.cpu_count()} CPUs; import and verify: best of {a.repeat}, wall clock; "
          "MB = source MB)\n")
    print("| step | raw store | zstd store | fine-tune delta store |")
    print("|---|---|---|---|")
    print(f"| import | {imp['raw']:.2f} s ({mb / imp['raw']:.0f} MB/s) | {imp['zstd']:.2f} s ({mb / imp['zstd']:.0f} MB/s) | "
          f"{min(ft_times):.2f} s ({mb / min(ft_times):.0f} MB/s) |")
    verify_row = []
    for st in [stores["raw"], stores["zstd"], ft_stores[0]]:
        dt = timed(a.repeat, gmat, "verify", "-q", st)
        verify_row.append(f"{dt:.2f} s ({mb / dt:.0f} MB/s)")
    print("| verify | " + " | ".join(verify_row) + " |\n")
    # Exports: the three stores interleaved, medians; CPU is user + system time of gmat.
    rounds = max(a.repeat, 5)
    print(f"Exports, median of {rounds} interleaved rounds (wall; CPU = user + system; "
          "'vs raw' = wall / raw store's wall):\n")
    print("| export | raw store | zstd store | vs raw | delta store | vs raw |")
    print("|---|---|---|---|---|---|")
    outs = {}
    for t in ["BF16", "Q8_0", "Q4_K_M"]:
        cmds = {}
        for name, st in [("raw", stores["raw"]), ("zstd", stores["zstd"]), ("delta", ft_stores[0])]:
            outs[(name, t)] = os.path.join(fam, f"{name}-{t}.gguf")
            cmds[name] = [gmat, "export", "-q", "--model", st, "--type", t, "-o", outs[(name, t)]]
        res = timed_rounds(rounds, cmds)
        cell = lambda k: f"{res[k][0]:.2f} s, CPU {res[k][1]:.2f} s"
        print(f"| {t} | {cell('raw')} | {cell('zstd')} | {res['zstd'][0] / res['raw'][0]:.2f}x | "
              f"{cell('delta')} | {res['delta'][0] / res['raw'][0]:.2f}x |")
    print()
    for t in ["BF16", "Q8_0", "Q4_K_M"]:
        with open(outs[("raw", t)], "rb") as f1, open(outs[("zstd", t)], "rb") as f2:
            assert f1.read() == f2.read(), f"{t} export from the zstd store differs from the raw store's"
        ft_alone_out = os.path.join(fam, f"ft1-alone-{t}.gguf")
        run(gmat, "export", "-q", "--model", ft1_alone, "--type", t, "-o", ft_alone_out)
        with open(outs[("delta", t)], "rb") as f1, open(ft_alone_out, "rb") as f2:
            assert f1.read() == f2.read(), f"{t} export from the delta store differs"
    print("Exports from the zstd store are byte-identical to the raw store's; exports from the delta "
          "store are byte-identical to those of the same fine-tune imported alone.\n")

    # 4. Codec alone, one core.
    base_st = os.path.join(base_hf, "model.safetensors")
    r1 = codec_bench([gmat, base_st])
    if r1:
        r2 = codec_bench([gmat, os.path.join(fts[0], "model.safetensors"), "--base", base_st])
        print("## Codec alone, one core (examples/codec_bench)\n")
        print(f"* base, byte planes + zstd: {r1}")
        print(f"* fine-tune 1 as XOR delta against the base: {r2}")


if __name__ == "__main__":
    main()
