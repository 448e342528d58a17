#!/usr/bin/env bash
# A/B of two apisim binaries in record mode, in the same run, alternating: each pair runs
# A then B behind the bench floor (bench/floor.c) as the upstream, a 1 s warm-up then
# `wrk -c CONNS -d SECS` on GET /bench (1 KiB answer), and reads the recorder's CPU from
# /proc/PID/stat and /proc/PID/task/*/stat. Prints each run and the medians:
#   cpu     the recorder's CPU µs per exchange (all threads)     up   the upstream's
#   direct  the upstream's CPU µs per request hit directly, by the same wrk run just before
#           (up/direct: the issue's "upstream CPU through record against direct", per pair)
#   writer  the store's writer thread                             rps  requests/s
#   loops   the upstream event loops (threads "upstream-loop"; older binaries: the threads
#           after the checkpointer that are neither libmicrohttpd's nor the writer)
#   mhd     libmicrohttpd's workers
# Usage: bench/record_ab.sh BIN_A BIN_B [PAIRS=5] [CONNS=32] [SECS=4]
#        FLOOR=path/to/apisim_floor (default: build-bench/bench/apisim_floor)
# Needs wrk and sqlite3. The machine should be otherwise idle; on a shared one, compare the
# pairs (each A against the B run right after it), not single runs.
set -euo pipefail
A=$1 B=$2 PAIRS=${3:-5} CONNS=${4:-32} SECS=${5:-4}
FLOOR=${FLOOR:-build-bench/bench/apisim_floor}
WT=$((CONNS < 2 ? CONNS : 2))
. "$(dirname "$0")/record_lib.sh"
ticks() { awk '{print $14 + $15}' "$1"; }

one() { # TAG BIN
  local tag=$1 bin=$2
  rm -f "$T"/rec.db*
  "$FLOOR" >"$T/floor.out" 2>&1 &
  FP=$!
  local furl rurl
  furl=$(wait_listening "$T/floor.out")
  local d0 d1 dout dn
  wrk -t"$WT" -c"$CONNS" -d1s "$furl/bench" >/dev/null
  d0=$(ticks /proc/$FP/stat)
  dout=$(wrk -t"$WT" -c"$CONNS" -d"${SECS}s" "$furl/bench")
  d1=$(ticks /proc/$FP/stat)
  dn=$(echo "$dout" | awk '/requests in/ {print $1}')
  "$bin" record --upstream "$furl" --db "$T/rec.db" --listen 127.0.0.1:0 >"$T/rec.out" 2>"$T/rec.err" &
  RP=$!
  rurl=$(wait_listening "$T/rec.out")
  wrk -t"$WT" -c"$CONNS" -d1s "$rurl/bench" >/dev/null
  declare -A t0
  local t
  for t in /proc/$RP/task/*; do t0[$t]=$(ticks "$t/stat"); done
  local c0 f0 c1 f1 out n rps
  c0=$(ticks /proc/$RP/stat) f0=$(ticks /proc/$FP/stat)
  out=$(wrk -t"$WT" -c"$CONNS" -d"${SECS}s" "$rurl/bench")
  c1=$(ticks /proc/$RP/stat) f1=$(ticks /proc/$FP/stat)
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local writer=0 loops=0 mhd=0 i=0 d name
  for t in $(ls -d /proc/$RP/task/* | sort -t/ -k5 -n); do
    d=$(($(ticks "$t/stat") - ${t0[$t]:-0}))
    name=$(cat "$t/comm")
    i=$((i + 1))
    if [ "$name" = MHD-worker ]; then mhd=$((mhd + d))
    elif [ "$i" -eq 2 ]; then writer=$d
    elif [ "$name" = upstream-loop ] || { [ "$i" -ge 4 ] && [ "$name" != MHD-worker ]; }; then
      loops=$((loops + d))
    fi
  done
  kill "$RP"; wait "$RP" 2>/dev/null || true; RP=""
  kill "$FP"; wait "$FP" 2>/dev/null || true; FP=""
  awk -v tag="$tag" -v n="$n" -v rps="$rps" -v c=$((c1 - c0)) -v f=$((f1 - f0)) \
    -v w="$writer" -v l="$loops" -v m="$mhd" -v hz="$(getconf CLK_TCK)" \
    -v d=$((d1 - d0)) -v dn="$dn" 'BEGIN {
      k = 1e6 / hz / n
      printf "%s cpu %.1f up %.1f direct %.1f up/direct %.2f writer %.1f loops %.1f mhd %.1f rps %.0f\n",
        tag, c * k, f * k, d * 1e6 / hz / dn, (f * k) / (d * 1e6 / hz / dn), w * k, l * k, m * k, rps }' | tee -a "$T/runs"
}

for _ in $(seq "$PAIRS"); do
  one A "$A"
  one B "$B"
done
python3 - "$T/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    runs.setdefault(f[0], []).append(dict(zip(f[1::2], map(float, f[2::2]))))
for tag in sorted(runs):
    keys = runs[tag][0]
    print(f"median {tag}", " ".join(
        f"{k} {statistics.median(r[k] for r in runs[tag]):.{2 if '/' in k else 1}f}"
        for k in keys), f"({len(runs[tag])} runs)")
PY
