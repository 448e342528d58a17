#!/usr/bin/env bash
# Replay against the floor in alternating rounds, for ratios that a drifting machine does
# not skew: bench/run.sh measures the floor once, minutes before the scale recordings, and
# on 2 shared cores the floor's own CPU per request moves by a quarter between runs.
#
# Starts the floor (bench/floor.c) and `BIN replay --db DB` once; each round then runs wrk
# on the floor, on DB's hot exchange (GET HOT, default /bench) and, with
# RANDOM_KEYS="PREFIX LO HI", on a random one (GET PREFIX<n>, n from LO to HI), at one
# connection (server and wrk pinned to different cores) and at CONNS; CPU per request is the
# server's utime+stime over the run.
# Prints each round's CPU per request and ratios, then the median of each ratio.
#
# With OTHER=BIN2, a second replay (another build) is measured in the same rounds, the two
# taking turns to go first, and its ratios are printed beside BIN's (as hot-other,
# random-other): an A/B of two builds against one floor.
#
# Usage: bench/replay_pairs.sh BIN DB [ROUNDS=5] [SECS=3] [CONNS=32]
#        HOT=/bench RANDOM_KEYS="/item/ 2 1000000" FLOOR=build-bench/bench/apisim_floor OTHER=
# A recording of a million exchanges, as bench/run.sh makes it:
#   BENCH_ONLY=scale BENCH_SCALE_SIZES=1000000 BENCH_TMP=/tmp/b BENCH_KEEP=1 \
#     bash bench/run.sh build-bench      (then DB is /tmp/b/scale-1M.db)
# Needs wrk and taskset (util-linux).
set -euo pipefail
BIN=$1 DB=$2 ROUNDS=${3:-5} SECS=${4:-3} CONNS=${5:-32}
HOT=${HOT:-/bench} RANDOM_KEYS=${RANDOM_KEYS:-} OTHER=${OTHER:-}
FLOOR=${FLOOR:-build-bench/bench/apisim_floor}
. "$(dirname "$0")/record_lib.sh"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (one for the server, one for wrk)" >&2; exit 1; }

RANDOM_LUA=$(dirname "$0")/random.lua

# cpu PID CONNS URL [random PREFIX LO HI] : the server's CPU µs per request over one run.
cpu() {
  local pid=$1 conns=$2 url=$3 args=()
  local wrk=(wrk -t2 -c"$conns")
  shift 3
  if [ "${1:-}" = random ]; then args=(-s "$RANDOM_LUA" "$url/" -- "$2" "$3" "$4"); else args=("$url"); fi
  if [ "$conns" = 1 ]; then
    taskset -a -cp 1 "$pid" >/dev/null
    wrk=(taskset -c 0 wrk -t1 -c1)
  fi
  local c0 c1 out n
  c0=$(ticks "$pid")
  out=$("${wrk[@]}" -d"${SECS}s" "${args[@]}")
  c1=$(ticks "$pid")
  [ "$conns" = 1 ] && taskset -a -cp 0-1 "$pid" >/dev/null
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'
}

# Read once, so that random lookups find the file in the page cache (as in bench/run.sh,
# where the recordings were just written): the figures are CPU, not disk.
cat "$DB" >/dev/null
"$FLOOR" >"$T/floor.out" 2>&1 &
FP=$!
FURL=$(wait_listening "$T/floor.out")
"$BIN" replay --db "$DB" --listen 127.0.0.1:0 >"$T/replay.out" 2>"$T/replay.err" &
RP=$!
RURL=$(wait_listening "$T/replay.out")
if [ -n "$OTHER" ]; then
  "$OTHER" replay --db "$DB" --listen 127.0.0.1:0 >"$T/other.out" 2>"$T/other.err" &
  OP=$!
  OURL=$(wait_listening "$T/other.out")
fi
# Warm-up, unmeasured: each reader's cache.
wrk -t2 -c"$CONNS" -d1s "$FURL/bench" >/dev/null
for url in "$RURL" ${OTHER:+"$OURL"}; do
  wrk -t2 -c"$CONNS" -d1s "$url$HOT" >/dev/null
  # shellcheck disable=SC2086
  [ -z "$RANDOM_KEYS" ] || wrk -t2 -c"$CONNS" -d2s -s "$RANDOM_LUA" "$url/" -- $RANDOM_KEYS >/dev/null
done

# replay_runs NAME PID URL : one round of NAME's runs, as "hot H1 HN [random R1 RN]" (the
# names suffixed by NAME unless it is empty).
replay_runs() {
  local sfx=${1:+-$1} pid=$2 url=$3 h1 hn r1 rn
  h1=$(cpu "$pid" 1 "$url$HOT") hn=$(cpu "$pid" "$CONNS" "$url$HOT")
  printf 'hot%s %s %s' "$sfx" "$h1" "$hn"
  if [ -n "$RANDOM_KEYS" ]; then
    # shellcheck disable=SC2086
    r1=$(cpu "$pid" 1 "$url" random $RANDOM_KEYS) rn=$(cpu "$pid" "$CONNS" "$url" random $RANDOM_KEYS)
    printf ' random%s %s %s' "$sfx" "$r1" "$rn"
  fi
}

for r in $(seq "$ROUNDS"); do
  f1=$(cpu "$FP" 1 "$FURL/bench") fn=$(cpu "$FP" "$CONNS" "$FURL/bench")
  if [ -z "$OTHER" ]; then
    runs=$(replay_runs "" "$RP" "$RURL")
  elif [ $((r % 2)) = 1 ]; then
    runs="$(replay_runs "" "$RP" "$RURL") $(replay_runs other "$OP" "$OURL")"
  else
    o=$(replay_runs other "$OP" "$OURL")
    runs="$(replay_runs "" "$RP" "$RURL") $o"
  fi
  line="round $r floor $f1 $fn $runs"
  echo "$line" | tee -a "$T/rounds" | awk '{
    printf "round %s  floor %s / %s µs", $2, $4, $5
    for (i = 6; i < NF; i += 3)
      printf "  %s %s / %s (%.2f / %.2f)", $i, $(i + 1), $(i + 2), $(i + 1) / $4, $(i + 2) / $5
    printf "\n" }'
done
echo "replay's RSS at the end: $(awk '/VmRSS/ {print $2}' "/proc/$RP/status") KiB"
[ -z "$OTHER" ] || echo "the other's: $(awk '/VmRSS/ {print $2}' "/proc/$OP/status") KiB"
python3 - "$T/rounds" "$CONNS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
# round R floor F1 FN hot H1 HN [random R1 RN] [hot-other H1 HN [random-other R1 RN]]
for i in range(5, len(rows[0]), 3):
    name = rows[0][i]
    at1 = statistics.median(float(r[i + 1]) / float(r[3]) for r in rows)
    atn = statistics.median(float(r[i + 2]) / float(r[4]) for r in rows)
    print(f"median {name} against the floor: {at1:.2f} at 1 connection, {atn:.2f} at {sys.argv[2]}"
          f" ({len(rows)} rounds)")
PY
