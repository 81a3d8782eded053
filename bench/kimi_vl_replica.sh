#!/usr/bin/env bash
# Kimi-VL-A3B-Instruct at its real size without the 31 GB download: a replica with the real
# config, tensor names, shapes and shards but all-zero data in sparse files
# (bench/make_sparse_kimi_vl.py) goes through import and export to the text GGUF + the vision
# projector GGUF, as example/kimi2/README.md reports. Each step's wall time, CPU time and peak
# RSS are printed; the files are measured and deleted.
#
#   bash bench/kimi_vl_replica.sh [WORKDIR] [TYPES]   (default /tmp/gmat-kimi-vl, "Q4_K_M Q8_0")
#
# Needs python3 (no packages), the reference kit's kimivl-tiny tokenizer files, a release build
# (made if missing) and ~20 GB of free disk for the largest output. Zero weights quantize like
# any others but compress to almost nothing in the store: the store size here is not the real
# model's (see the README for that estimate).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${1:-/tmp/gmat-kimi-vl}
TYPES=${2:-"Q4_K_M Q8_0"}
GMAT=$ROOT/target/release/gmat
[ -x "$GMAT" ] || (cd "$ROOT" && cargo build --release --locked)
mkdir -p "$W"
M=$W/Kimi-VL-A3B-Instruct
[ -f "$M/config.json" ] || python3 "$HERE/make_sparse_kimi_vl.py" "$M"
echo "model: $M ($(du -sh --apparent-size "$M" | cut -f1) apparent, $(du -sh "$M" | cut -f1) on disk, $(ls "$M"/*.safetensors | wc -l) shards)"

. "$HERE/step.sh"

rm -rf "$W/store"
step "gmat import" "$GMAT" import -q --model "$M" -o "$W/store"
echo "store: $(du -sh "$W/store" | cut -f1) on disk, $(ls "$W/store/model.gmat/tensors" | wc -l) tensor files"
for t in BF16 $TYPES; do
  step "gmat export $t --dry-run" "$GMAT" export --model "$W/store" --type "$t" --dry-run
  grep -E "tensors, .* elements" "$W/gmat export $t --dry-run.log" | sed "s/^/  $t plan: /"
done
for t in $TYPES; do
  step "gmat export $t (+ mmproj F16)" "$GMAT" export -q --model "$W/store" --type "$t" \
    -o "$W/kimi-vl-$t.gguf" --mmproj "$W/mmproj-kimi-vl-F16.gguf"
  echo "  $(ls -l "$W/kimi-vl-$t.gguf" | awk '{printf "%s %.2f GiB", $9, $5/2^30}'), $(ls -l "$W/mmproj-kimi-vl-F16.gguf" | awk '{printf "%s %.0f MiB", $9, $5/2^20}')"
  rm -f "$W/kimi-vl-$t.gguf"
done
