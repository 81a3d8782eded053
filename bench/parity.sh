#!/usr/bin/env bash
# Byte parity of gmat against the reference llama.cpp on every kit model, printed as
# gguf_parity.py summary lines. Needs ../shared/reference/setup.sh (and --full for F32/F16,
# which run the converter).
#
#   bash bench/parity.sh [WORKDIR]      (default /tmp/gmat-parity)
#
# BF16 (F32 for float32 models): against the kit's expected/<name>-*.gguf (converter output).
# F32/F16/Q8_0: against convert_hf_to_gguf.py --outtype f32/f16/q8_0 (when the converter is
# installed).
# Quantized file types: against llama-quantize <expected bf16> out TYPE, and with --pure against
# llama-quantize --pure. Types llama-quantize refuses are reported as such.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${1:-/tmp/gmat-parity}
REF=${GMAT_REF:-$HOME/.cache/gmat-ref}
. "$REF/env.sh" || { echo "run ../shared/reference/setup.sh first" >&2; exit 1; }
GMAT=${GMAT:-$ROOT/target/release/gmat}
KIT=$ROOT/../shared/reference/models
IGN=(--ignore-key '^gmat\.')
FILE_TYPES=${FILE_TYPES:-"Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS TQ1_0 TQ2_0 IQ3_XXS IQ3_XS IQ3_S IQ3_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ1_S IQ1_M Q1_0 Q2_0 MXFP4_MOE"}
PURE_TYPES=${PURE_TYPES:-"Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS TQ1_0 TQ2_0 IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S IQ1_S IQ1_M Q1_0 Q2_0 MXFP4_MOE"}
MODELS=${MODELS:-"llama-tiny llama-bpe-tiny qwen2-tiny qwen3-tiny mixtral-tiny qwen3moe-tiny gemma2-tiny gemma3-tiny phi3-tiny deepseek2-tiny kimivl-tiny bert-tiny"}
mkdir -p "$W"
pass=0; fail=0; skipped=0
check() { # label ours theirs
  local line
  line=$($REF_PY "$ROOT/../shared/reference/gguf_parity.py" "$2" "$3" "${IGN[@]}" --quiet | tail -1)
  echo "$1: $line"
  case "$line" in IDENTICAL*) pass=$((pass + 1));; *) fail=$((fail + 1));; esac
}
for m in $MODELS; do
  # the converter's own output: BF16, or F32 for float32 models (bert-tiny)
  bf16=$KIT/$m/expected/$m-bf16.gguf; base=BF16
  [ -f "$bf16" ] || { bf16=$KIT/$m/expected/$m-f32.gguf; base=F32; }
  rm -rf "$W/$m"
  "$GMAT" import -q --model "$KIT/$m/hf" -o "$W/$m" || { echo "$m: import failed"; fail=$((fail + 1)); continue; }
  "$GMAT" export -q --model "$W/$m" --type $base -o "$W/ours.gguf" && check "$m $base" "$W/ours.gguf" "$bf16"
  if [ -n "${REF_CONVERT:-}" ] && $REF_PY -c "import torch" 2>/dev/null; then
    ln -sfn "$KIT/$m/hf" "$W/$m-link"
    for t in F32 F16 Q8_0; do
      lt=$(echo $t | tr 'A-Z' 'a-z')
      [ $t = $base ] && continue
      $REF_CONVERT "$W/$m-link" --outtype $lt --outfile "$W/ref.gguf" > "$W/conv.log" 2>&1 || { echo "$m $t: converter failed"; continue; }
      "$GMAT" export -q --model "$W/$m" --type $t -o "$W/ours.gguf" && check "$m $t (converter)" "$W/ours.gguf" "$W/ref.gguf"
    done
  fi
  for pure in "" "--pure"; do
    types=$FILE_TYPES; [ -n "$pure" ] && types=$PURE_TYPES
    for t in $types; do
      if ! llama-quantize $pure "$bf16" "$W/ref.gguf" $t 2 > "$W/q.log" 2>&1; then
        echo "$m $t $pure: llama-quantize refuses ($(grep -m1 -o 'requires an importance matrix\|failed to quantize.*' "$W/q.log"))"
        if "$GMAT" export -q --model "$W/$m" --type $t $pure -o "$W/ours.gguf" 2> "$W/g.log"; then
          echo "   but gmat wrote a file"; fail=$((fail + 1))
        else
          echo "   gmat refuses too: $(head -c 160 "$W/g.log")"; skipped=$((skipped + 1))
        fi
        continue
      fi
      if "$GMAT" export -q --model "$W/$m" --type $t $pure -o "$W/ours.gguf" 2> "$W/g.log"; then
        check "$m $t $pure" "$W/ours.gguf" "$W/ref.gguf"
      else
        echo "$m $t $pure: gmat refused: $(head -c 200 "$W/g.log")"; fail=$((fail + 1))
      fi
    done
  done
done
echo "parity: $pass identical, $fail different or failed, $skipped refused by both"
[ $fail -eq 0 ]
