#!/usr/bin/env bash
# gpt-oss at its real size without the download: a replica with the real config, tensor names,
# shapes, dtypes (MXFP4 experts as `_blocks`/`_scales`) and shards but all-zero data in sparse
# files (bench/make_sparse_gpt_oss.py) goes through import and export. Each step's wall time,
# CPU time and peak RSS are printed; the outputs are measured and deleted.
#
#   bash bench/gpt_oss_replica.sh [WORKDIR] [20b|120b] [TOKENIZER_DIR]
#
# TOKENIZER_DIR: tools/make_o200k_tokenizer.py's output (gpt-oss's own tokenizer); without it
# the reference kit's GPT-2 BPE is used. Needs a release build (made if missing) and free disk
# for the largest output (20b: ~13 GB; 120b: ~61 GB). With REF=1 the reference converter
# (setup.sh --full) converts the same replica for comparison.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${1:-/tmp/gmat-gpt-oss}
SIZE=${2:-20b}
TOK=${3:-}
GMAT=$ROOT/target/release/gmat
[ -x "$GMAT" ] || (cd "$ROOT" && cargo build --release --locked)
mkdir -p "$W"
M=$W/gpt-oss-$SIZE
[ -f "$M/config.json" ] || python3 "$HERE/make_sparse_gpt_oss.py" "$M" "$SIZE" $TOK
echo "model: $M ($(du -sh --apparent-size "$M" | cut -f1) apparent, $(du -sh "$M" | cut -f1) on disk, $(ls "$M"/*.safetensors | wc -l) shards)"

. "$HERE/step.sh"

rm -rf "$W/store"
step "gmat import" "$GMAT" import -q --model "$M" -o "$W/store"
echo "store: $(du -sh "$W/store" | cut -f1) on disk, $(ls "$W/store/model.gmat/tensors" | wc -l) tensor files"
# BF16 is what the converter's default writes for gpt-oss (file type MXFP4_MOE: MXFP4 experts
# repacked, the rest in BF16); MXFP4_MOE is llama-quantize's mix over it.
for t in BF16 MXFP4_MOE; do
  step "gmat export $t" "$GMAT" export -q --model "$W/store" --type "$t" -o "$W/gpt-oss-$t.gguf"
  echo "  $(ls -l "$W/gpt-oss-$t.gguf" | awk '{printf "%s %.2f GiB", $9, $5/2^30}')"
  rm -f "$W/gpt-oss-$t.gguf"
done
if [ "${REF:-0}" = 1 ]; then
  . "${GMAT_REF:-$HOME/.cache/gmat-ref}/env.sh"
  # shellcheck disable=SC2086
  step "convert (default outtype)" $REF_CONVERT "$M" --outfile "$W/ref.gguf"
  echo "  $(ls -l "$W/ref.gguf" | awk '{printf "%s %.2f GiB", $9, $5/2^30}')"
  rm -f "$W/ref.gguf"
fi
