#!/usr/bin/env bash
# Stores in a bucket against stores on disk: gmat import to and export from a local single-node
# Garage (started here in a throwaway folder, stopped at the end) vs the same on local disk,
# with wall time, CPU time and peak RSS (/usr/bin/time). Exports from both must be identical.
#
#   bash bench/s3.sh [WORKDIR]        (default WORKDIR: /tmp/gmat-bench-s3)
#
# The model: bench/make_bench_model.py (~1 GB BF16 llama; BENCH_MODEL_ARGS sets its shape), or
# BENCH_MODEL=DIR an HF folder. Needs garage (`cargo install garage --locked`; GARAGE_BIN) and
# python3 for the generator. Figures are measured here, never asserted.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${1:-/tmp/gmat-bench-s3}
GMAT=${GMAT:-$ROOT/target/release/gmat}
[ -x "$GMAT" ] || (cd "$ROOT" && cargo build --release --locked)
GARAGE=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
[ -x "$GARAGE" ] || { echo "garage is not installed: cargo install garage --locked" >&2; exit 1; }
PY=python3
REF=${GMAT_REF:-$HOME/.cache/gmat-ref}
[ -f "$REF/env.sh" ] && . "$REF/env.sh" && PY=${REF_PY:-python3}
mkdir -p "$W"
M=${BENCH_MODEL:-$W/bench-llama}
# shellcheck disable=SC2086 # BENCH_MODEL_ARGS is a list of options
[ -f "$M/config.json" ] || $PY "$HERE/make_bench_model.py" "$M" ${BENCH_MODEL_ARGS:-}

# --- a one-node Garage on free ports ---
G=$W/garage
rm -rf "$G" && mkdir -p "$G"
port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3P=$(port); RPCP=$(port); ADMP=$(port)
COMPRESSION=${GARAGE_COMPRESSION:-'"none"'}
cat > "$G/garage.toml" <<EOF
metadata_dir = "$G/meta"
data_dir = "$G/data"
db_engine = "sqlite"
replication_factor = 1
# gmat's tensor files are zstd-compressed already: Garage's own compression (zstd level 1 by
# default) would only cost its CPU, on the cores gmat uses here. GARAGE_COMPRESSION=1 measures
# the default.
compression_level = $COMPRESSION
rpc_bind_addr = "127.0.0.1:$RPCP"
rpc_public_addr = "127.0.0.1:$RPCP"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3P"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMP"
admin_token = "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
EOF
gc() { "$GARAGE" -c "$G/garage.toml" "$@"; }
"$GARAGE" -c "$G/garage.toml" server > "$G/server.log" 2>&1 &
GPID=$!
trap 'kill $GPID 2>/dev/null; wait $GPID 2>/dev/null || true' EXIT
for _ in $(seq 300); do gc status > /dev/null 2>&1 && break; sleep 0.2; done
gc layout assign -z dc1 -c 10G "$(gc node id -q | cut -d@ -f1)" > /dev/null
gc layout apply --version 1 > /dev/null
gc bucket create bench > /dev/null
KEY=$(gc key create bench-key)
gc bucket allow --read --write --owner bench --key bench-key > /dev/null
export AWS_ACCESS_KEY_ID=$(echo "$KEY" | awk '/^Key ID:/ {print $3}')
export AWS_SECRET_ACCESS_KEY=$(echo "$KEY" | awk '/^Secret key:/ {print $3}')
export AWS_REGION=garage GMAT_S3_ENDPOINT=http://127.0.0.1:$S3P GMAT_CACHE_SIZE=0

RES=$W/results.tsv
: > "$RES"
# CPU seconds the Garage server has used so far: on a small machine it shares the cores with
# gmat, so its work is part of every bucket figure.
server_cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$GPID/stat"; }
run() { # name, command...
  local name=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  local s0; s0=$(server_cpu)
  /usr/bin/time -f "%e %U %S %M" -o "$W/time.txt" "$@" > "$W/${name// /_}.log" 2>&1 || { echo "$name failed, see $W/${name// /_}.log"; return 1; }
  read -r wall user sys rss < "$W/time.txt"
  local scpu; scpu=$(echo "$(server_cpu) - $s0" | bc)
  printf "%s\t%s\t%s\t%s\t%s\n" "$name" "$wall" "$(echo "$user + $sys" | bc)" "$rss" "$scpu" >> "$RES"
  printf "%-28s wall %7.2f s  cpu %7.2f s  peak RSS %8.1f MiB  garage cpu %6.2f s\n" "$name" "$wall" "$(echo "$user + $sys" | bc)" "$(echo "$rss / 1024" | bc -l)" "$scpu"
}

rm -rf "$W/store" "$W"/*.gguf
echo "machine: $(nproc) cores, load $(cut -d" " -f1-3 /proc/loadavg)"
echo "model: $M ($(du -sh "$M" | cut -f1)); garage $("$GARAGE" --version 2>/dev/null | head -1), compression_level = $COMPRESSION"
run "import disk" "$GMAT" import -q --model "$M" -o "$W/store"
run "import garage" "$GMAT" import -q --model "$M" -o s3://bench/store
for t in Q4_K_M Q8_0 BF16; do
  run "export $t disk" "$GMAT" export -q --model "$W/store" --type "$t" -o "$W/disk-$t.gguf"
  run "export $t garage" "$GMAT" export -q --model s3://bench/store --type "$t" -o "$W/garage-$t.gguf"
  cmp "$W/disk-$t.gguf" "$W/garage-$t.gguf" || { echo "  $t: the exports differ" >&2; exit 1; }
  echo "  $t: identical files"
  rm -f "$W/disk-$t.gguf" "$W/garage-$t.gguf"
done
run "verify disk" "$GMAT" verify -q "$W/store"
run "verify garage" "$GMAT" verify -q s3://bench/store
ratio() { awk -F'\t' -v a="$1" -v b="$2" '$1==a {x=$2; rx=$4} $1==b {y=$2; ry=$4} END { if (x > 0 && rx > 0) printf "%-14s garage/disk: time %.2fx, peak RSS %.2fx\n", substr(a, 1, index(a, " disk") - 1), y / x, ry / rx }' "$RES"; }
for s in "import" "export Q4_K_M" "export Q8_0" "export BF16" "verify"; do ratio "$s disk" "$s garage"; done
