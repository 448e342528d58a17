#!/usr/bin/env bash
# bench/connect.sh — what replay costs through an HTTPS_PROXY tunnel (CONNECT, TLS
# terminated by apisim) against plain replay, and what a TLS handshake costs.
#
# usage: bench/connect.sh [BUILD_DIR]      (default: build-bench beside this directory)
#
# One recording holds the floor's 1 KiB GET /bench, marked as https://bench.test (so a
# proxied request finds it; a plain one matches any host). bench/connect.c then sends, one
# after the other, on one connection each:
#   plain    N requests straight to `apisim replay` (http, kept alive)
#   plain-fresh  M requests straight to it, each on a new connection (what the front, which
#            accepts every connection and hands plain HTTP to the daemon, costs per connection)
#   tunnel   N requests through one kept-alive CONNECT tunnel (one handshake, then HTTP/1.1
#            inside TLS), trusting apisim's CA
#   fresh    M requests, each on a new connection: CONNECT + a full TLS handshake + 1 request
# For each: client wall time and server CPU (utime+stime of every thread, /proc/PID/stat) per
# request, and the tunnel's ratio to plain. Prints figures; asserts nothing about time.
#   BENCH_CONNECT_N=20000  BENCH_CONNECT_FRESH=500  BENCH_ROUNDS=3 (the median is printed)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(realpath -m "${1:-$ROOT/build-bench}")
N=${BENCH_CONNECT_N:-20000}
FRESH=${BENCH_CONNECT_FRESH:-500}
ROUNDS=${BENCH_ROUNDS:-3}
CLK_TCK=$(getconf CLK_TCK)
die() { echo "bench: $*" >&2; exit 1; }

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j2 --target apisim apisim_floor apisim_connect_bench \
    >"$BUILD/bench-build.log" 2>&1 || die "build failed: see $BUILD/bench-build.log"
APISIM=$BUILD/apisim
CLIENT=$BUILD/bench/apisim_connect_bench

T=$(mktemp -d /tmp/apisim-bench-connect.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
export APISIM_CA_DIR=$T/ca

# start NAME CMD... : sets SRV_PID and SRV_URL from the "listening on" line.
start() {
    local name=$1 line
    shift
    mkfifo "$T/$name.fifo"
    "$@" >"$T/$name.fifo" 2>"$T/$name.err" &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    exec 3<"$T/$name.fifo"
    IFS= read -r -t 60 line <&3 || die "$name did not start: $(cat "$T/$name.err")"
    cat <&3 >/dev/null &
    exec 3<&-
    SRV_URL=${line#listening on }
}
stop() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

start floor "$BUILD/bench/apisim_floor"
FLOOR_PID=$SRV_PID
start record "$APISIM" record --upstream "$SRV_URL" --db "$T/rec.db" --listen 127.0.0.1:0
curl -sf --noproxy '*' "$SRV_URL/bench" -o /dev/null || die "record does not answer"
stop "$SRV_PID"
stop "$FLOOR_PID"
sqlite3 "$T/rec.db" "UPDATE exchanges SET scheme = 'https', authority = 'bench.test'"
CA=$("$APISIM" ca)

start replay "$APISIM" replay --db "$T/rec.db" --listen 127.0.0.1:0
RP=$SRV_PID RURL=$SRV_URL

# run KIND COUNT ARGS... : prints "wall_us_per_req cpu_us_per_req"
run() {
    local kind=$1 n=$2 c0 c1 out wall
    shift 2
    c0=$(cpu_ticks "$RP")
    out=$("$CLIENT" "$@") || die "$kind: $out"
    c1=$(cpu_ticks "$RP")
    wall=$(sed 's/.*wall_us=//' <<<"$out")
    awk -v w="$wall" -v n="$n" -v t=$((c1 - c0)) -v hz="$CLK_TCK" \
        'BEGIN { printf "%.1f %.1f\n", w / n, t * 1e6 / hz / n }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for kind in plain plain-fresh tunnel fresh; do : >"$T/$kind.wall"; : >"$T/$kind.cpu"; done
for ((r = 0; r < ROUNDS; r++)); do # interleaved, so all see the same background load
    read -r w c <<<"$(run plain "$N" "$RURL/bench" "$N")"
    echo "$w" >>"$T/plain.wall"; echo "$c" >>"$T/plain.cpu"
    read -r w c <<<"$(run plain-fresh "$FRESH" "$RURL/bench" "$FRESH" --fresh)"
    echo "$w" >>"$T/plain-fresh.wall"; echo "$c" >>"$T/plain-fresh.cpu"
    read -r w c <<<"$(run tunnel "$N" https://bench.test/bench "$N" --proxy "$RURL" --cacert "$CA")"
    echo "$w" >>"$T/tunnel.wall"; echo "$c" >>"$T/tunnel.cpu"
    read -r w c <<<"$(run fresh "$FRESH" https://bench.test/bench "$FRESH" --proxy "$RURL" \
        --cacert "$CA" --fresh)"
    echo "$w" >>"$T/fresh.wall"; echo "$c" >>"$T/fresh.cpu"
done
stop "$RP"

echo "apisim bench connect: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg); median of $ROUNDS rounds"
printf '%-12s %10s %14s %18s\n' kind requests wall_us/req server_cpu_us/req
for kind in plain plain-fresh tunnel fresh; do
    n=$N
    case $kind in *fresh) n=$FRESH ;; esac
    printf '%-12s %10s %14s %18s\n' "$kind" "$n" "$(median <"$T/$kind.wall")" \
        "$(median <"$T/$kind.cpu")"
done
pw=$(median <"$T/plain.wall") pc=$(median <"$T/plain.cpu")
tw=$(median <"$T/tunnel.wall") tc=$(median <"$T/tunnel.cpu")
fw=$(median <"$T/fresh.wall") fc=$(median <"$T/fresh.cpu")
awk -v pw="$pw" -v pc="$pc" -v tw="$tw" -v tc="$tc" -v fw="$fw" -v fc="$fc" 'BEGIN {
    printf "tunnel/plain per request: wall %.2fx, server cpu %.2fx (target <= 1.5x)\n",
        tw / pw, (pc > 0 ? tc / pc : 0)
    printf "a handshake (CONNECT + TLS, new connection) costs %.0f us wall, %.0f us server cpu\n",
        fw - tw, fc - tc
}'
