#!/usr/bin/env bash
# End-to-end benchmark: gmat vs llama.cpp's converter + llama-quantize on the same machine, in
# one run. Needs the reference (../shared/reference/setup.sh --full; then it sources env.sh).
#
#   bash bench/run.sh [WORKDIR]        (default WORKDIR: /tmp/gmat-bench)
#
# BENCH_MODEL_ARGS sets the generated model's shape (bench/make_bench_model.py options; use a new
# WORKDIR per shape), e.g. a 2.8B-parameter model of Llama-3.2-3B's layer shapes (5.6 GB BF16,
# about 25 GB of disk for all outputs):
#   BENCH_MODEL_ARGS="--layers 28 --hidden 3072 --ffn 8192 --heads 24 --kv-heads 8" \
#     bash bench/run.sh /tmp/gmat-bench-3b
# BENCH_GMAT_ONLY=1 runs gmat's steps only (for models too large for the reference's extra BF16
# copy on the disk at hand), e.g. Llama-3-8B's layer shapes (7.0B parameters, 14 GB BF16):
#   BENCH_GMAT_ONLY=1 BENCH_MODEL_ARGS="--layers 32 --hidden 4096 --ffn 14336 --heads 32 --kv-heads 8" \
#     bash bench/run.sh /tmp/gmat-bench-8b
#
# Generates a ~1 GB BF16 llama-shaped model in 3 shards, then times, each with wall time, CPU
# time (user+sys) and peak RSS (/usr/bin/time):
#   gmat import; gmat export Q8_0; gmat export Q4_K_M (if gmat supports it);
#   convert_hf_to_gguf.py --outtype bf16 + llama-quantize Q4_K_M; convert_hf_to_gguf.py --outtype q8_0;
#   llama-quantize Q8_0 from the BF16 GGUF
# and prints ratios. Figures are measured here, never asserted.
#
# Then gmat's reuse cases (the quantized-tensor cache lives in $W/cache for the run; the exports
# above fill it, as a first export does):
#   re-export Q4_K_M after changing one tensor's type, vs a full Q4_K_M export (--no-cache),
#   and the disk's floor for it: `cat` of the cache entries it reads into one file, fsynced;
#   export of a fine-tune sharing half its tensors with the base (bench/make_finetune.py,
#   imported with --base) after the base was exported, vs the same export with --no-cache;
#   Q4_K_M,Q5_K_M,Q6_K,Q8_0 in one pass vs four separate exports (both --no-cache).
# and budget profiles (issue 19), each against the plain Q4_K_M export (--no-cache):
#   a first targeted export (--target-size 90% of the Q4_K_M file, a cold cache of its own, so
#   every candidate type of every tensor is measured), then a second target (80%) on the same
#   model, which reuses the measurements.
# BENCH_REUSE_ONLY=1 skips everything but these cases (and the import they need). BENCH_REPS=3
# times every step three times and reports the median (see run below).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${1:-/tmp/gmat-bench}
REF=${GMAT_REF:-$HOME/.cache/gmat-ref}
[ -f "$REF/env.sh" ] || { echo "run ../shared/reference/setup.sh --full first" >&2; exit 1; }
. "$REF/env.sh"
GMAT=$ROOT/target/release/gmat
[ -x "$GMAT" ] || (cd "$ROOT" && cargo build --release --locked)
mkdir -p "$W"
M=$W/bench-llama
# shellcheck disable=SC2086 # BENCH_MODEL_ARGS is a list of options
[ -f "$M/config.json" ] || $REF_PY "$HERE/make_bench_model.py" "$M" ${BENCH_MODEL_ARGS:-}
RES=$W/results.tsv
: > "$RES"
if [ -n "${BENCH_REUSE_ONLY:-}" ]; then BENCH_GMAT_ONLY=1; fi
# The run's own cache: never the user's, and cold at the start.
export GMAT_CACHE_DIR=$W/cache
rm -rf "$GMAT_CACHE_DIR"

# BENCH_REPS=N runs every step N times and keeps the run of median wall time (this VM's
# steps vary by 10-25% from run to run, the reference's as much as gmat's).
# Steps that start from a given cache state reset it before each run: BEFORE (untimed) removes
# the whole cache, or with `since_mark` the entries the step itself wrote.
REPS=${BENCH_REPS:-1}
BEFORE=""
# (The entries present are listed, not marked by time: gmat renews a used entry's mtime once it
# is an hour old, so on a long run a time mark would take the base's entries for new ones.)
# since_mark DIR for a step run with another cache folder.
since_mark() {
  MARKED=${1:-$GMAT_CACHE_DIR}
  (cd "$MARKED" && find . -type f | sort) > "$W/cache-mark"
  BEFORE='(cd "$MARKED" && find . -type f | sort | comm -13 "$W/cache-mark" - | xargs -r rm -f)'
}
run() { # name, command...
  local name=$1; shift
  local rows=()
  for _ in $(seq "$REPS"); do
    [ -z "$BEFORE" ] || eval "$BEFORE"
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -f "%e %U %S %M" -o "$W/time.txt" "$@" > "$W/$name.log" 2>&1 || { echo "$name failed, see $W/$name.log"; return 1; }
    read -r wall user sys rss < "$W/time.txt"
    rows+=("$wall $(echo "$user + $sys" | bc) $rss")
  done
  read -r wall cpu rss < <(printf "%s\n" "${rows[@]}" | sort -n | sed -n "$(( (REPS + 1) / 2 ))p")
  printf "%s\t%s\t%s\t%s\n" "$name" "$wall" "$cpu" "$rss" >> "$RES"
  local spread=""
  [ "$REPS" -gt 1 ] && spread="  (of $REPS: $(printf "%s\n" "${rows[@]}" | cut -d" " -f1 | sort -n | paste -sd" "))"
  printf "%-34s wall %7.2f s  cpu %7.2f s  peak RSS %8.1f MiB%s\n" "$name" "$wall" "$cpu" "$(echo "$rss / 1024" | bc -l)" "$spread"
}

rm -rf "$W/store" "$W/ft-store" "$W"/*.gguf "$W/profiles"
BEFORE='rm -rf "$W/store"' run "gmat import" "$GMAT" import -q --model "$M" -o "$W/store"
if [ -z "${BENCH_REUSE_ONLY:-}" ]; then
BEFORE='rm -rf "$GMAT_CACHE_DIR"' run "gmat export Q8_0" "$GMAT" export -q --model "$W/store" --type Q8_0 -o "$W/gmat-q8_0.gguf"
if "$GMAT" export -q --model "$W/store" --type Q4_K_M --dry-run > /dev/null 2>&1; then
  BEFORE='rm -rf "$GMAT_CACHE_DIR"' run "gmat export Q4_K_M" "$GMAT" export -q --model "$W/store" --type Q4_K_M -o "$W/gmat-q4_k_m.gguf"
fi
if [ -n "${BENCH_GMAT_ONLY:-}" ]; then
  # gmat's steps only (for a model too large for the reference's extra BF16 copy on this disk).
  "$GMAT" export --model "$W/store" --type Q4_K_M --dry-run | tail -n 1
  echo "store: $(du -sh "$W/store" | cut -f1), source: $(du -sh "$M" | cut -f1)"
else
  run "convert bf16" $REF_CONVERT "$M" --outtype bf16 --outfile "$W/ref-bf16.gguf"
  run "llama-quantize Q4_K_M" llama-quantize "$W/ref-bf16.gguf" "$W/ref-q4_k_m.gguf" Q4_K_M 2
  run "llama-quantize Q8_0" llama-quantize "$W/ref-bf16.gguf" "$W/ref-q8_0.gguf" Q8_0 2
  run "convert q8_0" $REF_CONVERT "$M" --outtype q8_0 --outfile "$W/ref-conv-q8_0.gguf"
fi
fi

# --- reuse: the cache and several profiles in one pass (gmat only) ---
run "gmat export Q4_K_M --no-cache" "$GMAT" export -q --no-cache --model "$W/store" --type Q4_K_M -o "$W/full-q4_k_m.gguf"
# the base's Q4_K_M export fills the cache (already done above unless BENCH_REUSE_ONLY)
[ -f "$W/gmat-q4_k_m.gguf" ] || "$GMAT" export -q --model "$W/store" --type Q4_K_M -o "$W/gmat-q4_k_m.gguf"
# One tensor's type changed: attn_output has no place in the mix's layer counters. (An
# ffn_down override also moves the Q4_K_M rule's "more bits" layers that follow, as
# llama-quantize does: blk.3 → Q8_0 changes 5 tensors' types, timed as the second case.)
since_mark
run "gmat re-export, one type changed" "$GMAT" export -q --model "$W/store" --type Q4_K_M \
  --tensor-type 'blk\.3\.attn_output=q8_0' -o "$W/one-changed-q4_k_m.gguf"
# The disk's floor for that step: the same bytes moved by `cat`. The cache holds just the
# Q4_K_M export's entries (listed by since_mark above), which the re-export reads cold; they go
# into one file, fsynced, and like the re-export's output it is replaced from the second run on.
rm -f "$W/copy-entries.bin"
BEFORE=""
run "copy of the cached entries, fsync" sh -c 'cd "$1" && xargs cat < "$2" > "$3" && sync "$3"' copy \
  "$GMAT_CACHE_DIR" "$W/cache-mark" "$W/copy-entries.bin"
rm -f "$W/copy-entries.bin"
since_mark
run "gmat re-export, ffn_down changed" "$GMAT" export -q --model "$W/store" --type Q4_K_M \
  --tensor-type 'blk\.3\.ffn_down=q8_0' -o "$W/ffn-changed-q4_k_m.gguf"
FT=$W/bench-finetune-half
[ -f "$FT/config.json" ] || $REF_PY "$HERE/make_finetune.py" "$M" "$FT"
"$GMAT" import -q --model "$FT" --base "$W/store" -o "$W/ft-store"
BEFORE=""
run "gmat export fine-tune --no-cache" "$GMAT" export -q --no-cache --model "$W/ft-store" --type Q4_K_M -o "$W/ft-full-q4_k_m.gguf"
since_mark
run "gmat export fine-tune, base cached" "$GMAT" export -q --model "$W/ft-store" --type Q4_K_M -o "$W/ft-q4_k_m.gguf"
cmp -s "$W/ft-full-q4_k_m.gguf" "$W/ft-q4_k_m.gguf" && echo "fine-tune cached vs uncached: identical" || echo "fine-tune cached vs uncached: DIFFERENT"
for t in Q5_K_M Q6_K Q8_0; do
  run "gmat export $t --no-cache" "$GMAT" export -q --no-cache --model "$W/store" --type $t -o "$W/sep-$t.gguf"
done
mkdir -p "$W/profiles"
run "gmat export 4 profiles one pass" "$GMAT" export -q --no-cache --model "$W/store" --type Q4_K_M,Q5_K_M,Q6_K,Q8_0 -o "$W/profiles/"
same=0
for t in Q5_K_M Q6_K Q8_0; do cmp -s "$W/sep-$t.gguf" "$W/profiles/"*"-$t.gguf" && same=$((same + 1)); done
cmp -s "$W/full-q4_k_m.gguf" "$W/profiles/"*"-Q4_K_M.gguf" && same=$((same + 1))
echo "one pass vs separate exports: $same of 4 files identical"

# --- budget profiles: targeted exports, measurements in a cache of their own (cold at first) ---
q4size=$(stat -c %s "$W/full-q4_k_m.gguf")
BEFORE='rm -rf "$W/cache-target"'
GMAT_CACHE_DIR=$W/cache-target run "gmat export --target-size, first" "$GMAT" export -q --model "$W/store" \
  --target-size $((q4size * 9 / 10)) --report "$W/target1.json" -o "$W/target1.gguf"
since_mark "$W/cache-target"
GMAT_CACHE_DIR=$W/cache-target run "gmat export --target-size, second" "$GMAT" export -q --model "$W/store" \
  --target-size $((q4size * 8 / 10)) --report "$W/target2.json" -o "$W/target2.gguf"
echo "targeted files: $(stat -c %s "$W/target1.gguf") <= $((q4size * 9 / 10)), $(stat -c %s "$W/target2.gguf") <= $((q4size * 8 / 10)) bytes"

echo
get() { awk -F'\t' -v n="$1" -v c="$2" '$1==n {print $c}' "$RES"; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && printf "%.3f" "$(echo "scale=6; $1 / $2" | bc)" || echo "n/a"; }
imp=$(get "gmat import" 2); q8=$(get "gmat export Q8_0" 2); q4=$(get "gmat export Q4_K_M" 2)
cbf=$(get "convert bf16" 2); lq4=$(get "llama-quantize Q4_K_M" 2); lq8=$(get "llama-quantize Q8_0" 2); cq8=$(get "convert q8_0" 2)
[ -n "${BENCH_GMAT_ONLY:-}" ] || echo "speedups (reference wall / gmat wall):"
[ -n "$q4" ] && [ -n "$lq4" ] && echo "  HF -> Q4_K_M end to end (convert+quantize vs import+export): $(ratio "$(echo "$cbf + $lq4" | bc)" "$(echo "$imp + $q4" | bc)")x"
[ -n "$q4" ] && [ -n "$lq4" ] && echo "  new Q4_K_M profile from a store (llama-quantize vs gmat export): $(ratio "$lq4" "$q4")x"
if [ -z "${BENCH_GMAT_ONLY:-}" ]; then
  echo "  HF -> Q8_0 end to end (convert q8_0 vs import+export): $(ratio "$cq8" "$(echo "$imp + $q8" | bc)")x"
  echo "  new Q8_0 profile from a store (llama-quantize vs gmat export): $(ratio "$lq8" "$q8")x"
  echo "peak RSS (MiB): gmat import $(( $(get "gmat import" 4) / 1024 )), gmat export Q8_0 $(( $(get "gmat export Q8_0" 4) / 1024 )), converter bf16 $(( $(get "convert bf16" 4) / 1024 )), llama-quantize Q8_0 $(( $(get "llama-quantize Q8_0" 4) / 1024 ))"
fi
full=$(get "gmat export Q4_K_M --no-cache" 2); one=$(get "gmat re-export, one type changed" 2)
ftf=$(get "gmat export fine-tune --no-cache" 2); ftc=$(get "gmat export fine-tune, base cached" 2)
sep=$(echo "$full + $(get "gmat export Q5_K_M --no-cache" 2) + $(get "gmat export Q6_K --no-cache" 2) + $(get "gmat export Q8_0 --no-cache" 2)" | bc)
pass=$(get "gmat export 4 profiles one pass" 2)
echo "reuse (gmat time / gmat baseline time; targets in issue 15):"
echo "  re-export after one type change / full Q4_K_M export: $(ratio "$one" "$full") (target <= 0.10)"
copy=$(get "copy of the cached entries, fsync" 2)
echo "  its disk floor: cat of the cached entries into one file, fsync / full: $(ratio "$copy" "$full"); re-export / that copy: $(ratio "$one" "$copy")"
echo "  re-export after blk.3.ffn_down's change (5 types change) / full: $(ratio "$(get "gmat re-export, ffn_down changed" 2)" "$full")"
echo "  fine-tune sharing half with an exported base / full: $(ratio "$ftc" "$ftf") (target <= 0.60)"
echo "  4 profiles in one pass / 4 separate exports ($sep s): $(ratio "$pass" "$sep") (target <= 0.80)"
t1=$(get "gmat export --target-size, first" 2); t2=$(get "gmat export --target-size, second" 2)
echo "budget profiles (gmat time / full Q4_K_M export; targets in issue 19):"
echo "  first targeted export / Q4_K_M export: $(ratio "$t1" "$full") (target <= 2.5)"
echo "  second target on the same model / Q4_K_M export: $(ratio "$t2" "$full") (target <= 1.2)"
echo "  peak RSS (MiB): first target $(( $(get "gmat export --target-size, first" 4) / 1024 )), second $(( $(get "gmat export --target-size, second" 4) / 1024 ))"
echo "  peak RSS (MiB): full Q4_K_M $(( $(get "gmat export Q4_K_M --no-cache" 4) / 1024 )), re-export $(( $(get "gmat re-export, one type changed" 4) / 1024 )), fine-tune cached $(( $(get "gmat export fine-tune, base cached" 4) / 1024 )), 4 profiles one pass $(( $(get "gmat export 4 profiles one pass" 4) / 1024 ))"
if [ -f "$W/gmat-q4_k_m.gguf" ] && command -v llama-simple > /dev/null; then
  # The weights are random, so the text is noise: this checks that llama.cpp loads and runs it.
  if llama-simple -m "$W/gmat-q4_k_m.gguf" -n 8 "Once upon a time" > "$W/llama-simple.log" 2>&1; then
    echo "llama-simple on gmat-q4_k_m.gguf: ok, $(grep -o 'decoded [0-9]* tokens in [0-9.]* s, speed: [0-9.]* t/s' "$W/llama-simple.log" | head -1)"
  else
    echo "llama-simple on gmat-q4_k_m.gguf FAILED, see $W/llama-simple.log"
  fi
fi
for t in q8_0 q4_k_m; do
  if [ -f "$W/gmat-$t.gguf" ] && [ -f "$W/ref-$t.gguf" ]; then
    echo "parity $t: $($REF_PY "$ROOT/../shared/reference/gguf_parity.py" "$W/gmat-$t.gguf" "$W/ref-$t.gguf" --quiet \
      --ignore-key '^gmat\.' | tail -1)"
  fi
done
