# Sourced by the scale checks: `step NAME COMMAND...` runs COMMAND with its output in $W/NAME.log
# and prints its wall time, CPU time and peak RSS (GNU time).
step() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$W/time.txt" "$@" > "$W/$name.log" 2>&1 \
    || { echo "$name failed, see $W/$name.log"; return 1; }
  read -r wall user sys rss < "$W/time.txt"
  printf "%-34s wall %8.2f s  cpu %8.2f s  peak RSS %8.1f MiB\n" "$name" "$wall" \
    "$(echo "$user + $sys" | bc)" "$(echo "$rss / 1024" | bc -l)"
}
