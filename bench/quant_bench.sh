#!/usr/bin/env bash
# Quantization throughput, gmat vs the real ggml (see bench/quant_bench.py for what is measured):
#   bench/quant_bench.sh [--reps N] [--seconds S] [--threads N] [--types Q4_K,IQ4_XS,...]
# Byte-for-byte check against ggml on large awkward inputs (bench/quant_diff.py):
#   bench/quant_bench.sh diff [--rows N] [--seed S] [--types ...]
# Needs the reference build (~/.cache/gmat-ref, see its env.sh). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source "${GMAT_REF:-$HOME/.cache/gmat-ref}/env.sh"
cargo build --release --quiet --example quant_bench
exe="${CARGO_TARGET_DIR:-target}/release/examples/quant_bench"
if [ "${1:-}" = diff ]; then
    shift
    exec "$REF_PY" bench/quant_diff.py --gmat "$exe" "$@"
fi
exec "$REF_PY" bench/quant_bench.py --gmat "$exe" "$@"
