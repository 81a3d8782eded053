#!/usr/bin/env bash
# Golden hashes for the GGUF-input tests (tests/gguf_input.rs), made with llama.cpp b11312's own
# tools (the reference environment: `source ~/.cache/gmat-ref/env.sh`):
#
#   tiny_llm   convert_hf_to_gguf.py example/tiny_llm --outtype bf16 (the GGUF a user has); from
#              it llama-quantize Q8_0, Q4_K_M and F16; llama-quantize --allow-requantize of the
#              Q8_0 file to Q4_0; llama-gguf-split --split-max-tensors 8 of the BF16 file.
#   kit        for every kit model's converter GGUF (../shared/reference/models/*/expected/
#              NAME-bf16.gguf, bert-tiny-f32.gguf): llama-quantize Q8_0, Q4_K_M and F16, and
#              llama-quantize --allow-requantize of that Q8_0 file to Q4_0.
#
# Writes testdata/gguf-input/SHA256SUMS (sha256sum format; names MODEL-TYPE.gguf, requantized
# files MODEL-Q8_0-Q4_0.gguf, split shards as llama-gguf-split names them). The files themselves
# are not kept: they are MBs; the tests compare what gmat writes with these hashes.
#
# Usage: tools/gguf-input-golden.sh [KIT_DIR]   (default ../shared/reference/models)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
kit=${1:-$here/../shared/reference/models}
# shellcheck disable=SC1091
source "${GMAT_REF:-$HOME/.cache/gmat-ref}/env.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$here/testdata/gguf-input/SHA256SUMS
: >"$work/sums"

quantize_all() { # SRC NAME
  local src=$1 name=$2
  for t in Q8_0 Q4_K_M F16; do
    llama-quantize "$src" "$work/$name-$t.gguf" "$t" >/dev/null 2>&1
  done
  llama-quantize --allow-requantize "$work/$name-Q8_0.gguf" "$work/$name-Q8_0-Q4_0.gguf" Q4_0 >/dev/null 2>&1
}

ln -s "$here/example/tiny_llm" "$work/tiny_llm"
(cd "$work" && $REF_CONVERT tiny_llm --outtype bf16 --outfile tiny_llm-BF16.gguf >/dev/null 2>&1)
quantize_all "$work/tiny_llm-BF16.gguf" tiny_llm
llama-gguf-split --split --split-max-tensors 8 "$work/tiny_llm-BF16.gguf" "$work/tiny_llm-BF16-split" >/dev/null 2>&1

for d in "$kit"/*/expected; do
  name=$(basename "$(dirname "$d")")
  src=$(ls "$d"/"$name"-bf16.gguf "$d"/"$name"-f32.gguf 2>/dev/null | head -n 1 || true)
  [ -n "$src" ] || continue
  quantize_all "$src" "$name"
done
(cd "$work" && sha256sum ./*.gguf | sed 's# \./# #' | sort -k 2) >"$out"
echo "wrote $out ($(wc -l <"$out") files)"
