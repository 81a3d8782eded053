#!/usr/bin/env bash
# Scale check without a 140 GB download: a Llama-3-70B-shaped model (real names, shapes and
# safetensors headers; all-zero data in sparse files, so it takes almost no disk) is imported,
# then planned for export; each step's wall time, CPU time and peak RSS are printed.
#
#   bash bench/sparse70b.sh [WORKDIR] [TYPE]      (default /tmp/gmat-sparse70b, Q4_K_M)
#
# Needs python3 (no packages) and a release build (made if missing). The store of zeros is small
# (zstd), so the whole check needs well under 1 GB of disk. Figures are measured, not asserted.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${1:-/tmp/gmat-sparse70b}
TYPE=${2:-Q4_K_M}
GMAT=$ROOT/target/release/gmat
[ -x "$GMAT" ] || (cd "$ROOT" && cargo build --release --locked)
mkdir -p "$W"
M=$W/llama-70b-sparse
[ -f "$M/config.json" ] || python3 "$HERE/make_sparse_model.py" "$M"
echo "model: $M ($(du -sh --apparent-size "$M" | cut -f1) apparent, $(du -sh "$M" | cut -f1) on disk)"

. "$HERE/step.sh"

rm -rf "$W/store"
step "gmat import" "$GMAT" import -q --model "$M" -o "$W/store"
step "gmat export $TYPE --dry-run" "$GMAT" export --model "$W/store" --type "$TYPE" --dry-run
echo "store: $(du -sh "$W/store" | cut -f1) on disk"
echo "plan: $(tail -n 1 "$W/gmat export $TYPE --dry-run.log")"
