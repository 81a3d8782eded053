#!/usr/bin/env bash
# Regenerates every file of testdata/imatrix/ except calibration.txt and README.md, with the
# reference llama.cpp build (b11312, commit 0c1e57098). Run from the repository root:
#   KIT=/work/shared/reference/models testdata/imatrix/make_fixtures.sh
set -euo pipefail
source /root/.cache/gmat-ref/env.sh
KIT=${KIT:-../shared/reference/models}
D=testdata/imatrix
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1. importance matrices: both formats from the same deterministic run (one thread, 3 chunks of 128)
for m in llama-tiny mixtral-tiny; do
  for fmt in gguf dat; do
    (cd $D && llama-imatrix -m "$KIT/$m/expected/$m-bf16.gguf" -f calibration.txt \
       -o $m.imatrix.$fmt --output-format $fmt --chunks 3 -c 128 -b 128 -t 1 --no-ppl --seed 1 \
       >/dev/null 2>&1)
  done
done

# 2. llama-quantize with each imatrix (paths relative to the repository root, as the tests load them)
q() { # out imatrix model ftype [extra args...]
  local out=$1 im=$2 model=$3 ftype=$4; shift 4
  llama-quantize --pure "$@" --imatrix "$im" "$KIT/$model/expected/$model-bf16.gguf" "$TMP/$out.gguf" "$ftype" 2 \
    >"$TMP/$out.log" 2>&1
}
q lt-q4k-gguf    $D/llama-tiny.imatrix.gguf   llama-tiny   Q4_K_M
q lt-q4k-dat     $D/llama-tiny.imatrix.dat    llama-tiny   Q4_K_M
q lt-iq4xs-gguf  $D/llama-tiny.imatrix.gguf   llama-tiny   IQ4_XS
q lt-incl-attn_q $D/llama-tiny.imatrix.gguf   llama-tiny   Q4_K_M --include-weights attn_q --include-weights blk.0.
q lt-excl-ffn    $D/llama-tiny.imatrix.gguf   llama-tiny   Q4_K_M --exclude-weights ffn
q mx-q4k-gguf    $D/mixtral-tiny.imatrix.gguf mixtral-tiny Q4_K_M
q mx-q4k-dat     $D/mixtral-tiny.imatrix.dat  mixtral-tiny Q4_K_M
q mx-iq4xs-gguf  $D/mixtral-tiny.imatrix.gguf mixtral-tiny IQ4_XS

# 3. expected.json: normalised values (computed independently in Python) and llama-quantize's output
"$REF_PY" $D/make_expected.py "$TMP" > $D/expected.json
