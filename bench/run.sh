#!/usr/bin/env bash
# bench/run.sh — apisim's performance benchmark, in one run, on loopback.
#
# usage: bench/run.sh [BUILD_DIR]        (default: build-bench beside this directory)
#
# Measures, side by side with wrk: the floor (bench/floor.c, a bare libmicrohttpd server
# answering a fixed 1 KiB JSON body), `apisim replay` answering the same body from a
# recording, `apisim mock` answering it from a stub, and `apisim record` in front of the
# floor, beside nginx as a reverse proxy with upstream keep-alive in front of the same floor
# (when nginx is installed: apt-get install nginx-light). Then record mode's added time to
# first byte, the upstream's CPU per request direct / through nginx / through record, the
# TIME_WAIT sockets record leaves, the latency model's overhead, and replay of recordings of
# 2k, 100k and 1M exchanges and of 1 GiB. Prints figures; asserts nothing about time.
# See bench/README.md for what each figure means.
#
# Tunables (environment):
#   BENCH_SECONDS=5          each measured wrk run
#   BENCH_WARMUP_SECONDS=1   unmeasured wrk run before the measured ones
#   BENCH_CONNECTIONS=32     connections of the loaded runs (wrk -t2)
#   BENCH_TTFB_SAMPLES=200   sequential requests for the time-to-first-byte medians
#   BENCH_SCALE_SIZES="2000 100000 1000000"   exchanges in the scale recordings
#   BENCH_BIG_EXCHANGES=1024 BENCH_BIG_BODY_KIB=1024   the 1 GiB recording (0: none)
#   BENCH_ONLY=all|floor|scale   floor: measure the floor alone (no apisim needed); scale: the
#                            floor, replay of the one-exchange recording and the scale part
#   BENCH_PIN=same          1-connection runs: same = server and wrk pinned to one core (steady
#                            figures), cross = on different cores, none = where the scheduler puts them
#   BENCH_SKIP_SCALE=0       1: skip the scale recordings
#   BENCH_TMP=DIR            work directory (default: a fresh mktemp -d, removed at exit)
#   BENCH_KEEP=0             1: keep the work directory (databases, server logs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(realpath -m "${1:-$ROOT/build-bench}")
SECS=${BENCH_SECONDS:-5}
WARMUP=${BENCH_WARMUP_SECONDS:-1}
CONNS=${BENCH_CONNECTIONS:-32}
TTFB_N=${BENCH_TTFB_SAMPLES:-200}
SCALE_SIZES=${BENCH_SCALE_SIZES:-2000 100000 1000000}
BIG_N=${BENCH_BIG_EXCHANGES:-1024}
BIG_KIB=${BENCH_BIG_BODY_KIB:-1024}
ONLY=${BENCH_ONLY:-all}
SKIP_SCALE=${BENCH_SKIP_SCALE:-0}
PIN=${BENCH_PIN:-same}
NCPU=$(nproc)
if [ "$NCPU" -lt 2 ] || ! command -v taskset >/dev/null; then
    PIN=none
fi
KEEP=${BENCH_KEEP:-0}
CLK_TCK=$(getconf CLK_TCK)

die() {
    echo "bench: $*" >&2
    exit 1
}
note() { echo "bench: $*" >&2; }

# --- tools and build --------------------------------------------------------------------

if ! command -v wrk >/dev/null; then
    note "wrk is missing: installing it with apt-get"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y wrk >/dev/null || die "cannot install wrk (apt-get install wrk)"
fi
for tool in curl sqlite3 awk; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install $tool)"
done

targets=(apisim_floor)
[ "$ONLY" = floor ] || targets+=(apisim apisim_writer_bench apisim_lookup_bench)
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    note "configuring a Release build in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
else
    # Configured again: a build directory made before a target was added knows nothing of it.
    cmake -S "$ROOT" -B "$BUILD" >/dev/null
fi
btype=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
[ "$btype" = Release ] || note "warning: $BUILD is a '$btype' build, not Release"
cmake --build "$BUILD" -j2 --target "${targets[@]}" >"$BUILD/bench-build.log" 2>&1 ||
    die "build failed: see $BUILD/bench-build.log"
FLOOR_BIN=$BUILD/bench/apisim_floor
APISIM=$BUILD/apisim

if [ -n "${BENCH_TMP:-}" ]; then
    T=$BENCH_TMP
    mkdir -p "$T"
else
    T=$(mktemp -d /tmp/apisim-bench.XXXXXX)
fi

# --- servers ----------------------------------------------------------------------------

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then
        note "work directory kept: $T"
    elif [ -z "${BENCH_TMP:-}" ]; then
        rm -rf "$T"
    fi
}
trap cleanup EXIT

# start_server NAME CMD... : starts a server whose first stdout line is
# "listening on http://HOST:PORT"; sets SRV_PID, SRV_URL and SRV_START_MS (spawn to that
# line, in ms). stdout goes on to $T/NAME.out, stderr to $T/NAME.err.
start_server() {
    local name=$1 line t0 t1
    shift
    rm -f "$T/$name.fifo"
    mkfifo "$T/$name.fifo"
    t0=$EPOCHREALTIME
    "$@" >"$T/$name.fifo" 2>"$T/$name.err" &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    exec 3<"$T/$name.fifo"
    if ! IFS= read -r -t 60 line <&3; then
        exec 3<&-
        cat "$T/$name.err" >&2
        die "$name did not print its listening line: $*"
    fi
    t1=$EPOCHREALTIME
    cat <&3 >"$T/$name.out" &
    exec 3<&-
    case $line in
    "listening on http://"*) SRV_URL=${line#listening on } ;;
    *) die "$name printed '$line' instead of its listening line" ;;
    esac
    SRV_START_MS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }')
}

# stop_server PID : SIGTERM, then wait (SIGKILL after 20 s).
stop_server() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "pid $pid ignored SIGTERM for 20 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# A process and its children (nginx's master and workers; apisim has none).
family() {
    echo "$1"
    cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | sed '/^$/d'
}
# CPU ticks (user + system, every thread) of a process and its children so far.
cpu_ticks() {
    local p t=0
    for p in $(family "$1"); do
        t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$t"
}
# A free port on 127.0.0.1, for a server that cannot be told port 0 (nginx).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# A /proc/PID/status field in KiB (VmRSS, VmHWM).
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# wrk's done() prints one line of figures, so nothing depends on its human output.
cat >"$T/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
EOF
# Same, with each request for a random path PREFIX..N in LO..HI (wrk ... -- PREFIX LO HI).
cp "$ROOT/bench/random.lua" "$T/random.lua"
sed -n '/^done/,$p' "$T/report.lua" >>"$T/random.lua"

# run_wrk PID URL THREADS CONNS SECONDS [random PREFIX LO HI] : one wrk run against URL;
# sets W_REQ, W_RPS, W_P50, W_P99 (µs), W_ERR and W_CPU (server CPU µs per request), and
# W_UP_CPU: when UP_PID names the upstream behind a proxy, its CPU µs per request in the run.
UP_PID=""
run_wrk() {
    local pid=$1 url=$2 threads=$3 conns=$4 secs=$5 script=$T/report.lua args=() c0 c1 u0 u1 out line
    if [ "${6:-}" = random ]; then
        script=$T/random.lua
        args=(-- "$7" "$8" "$9")
    fi
    local wrk=(wrk)
    if [ "$conns" = 1 ] && [ "$PIN" != none ]; then
        # One connection is served by one thread: pinning makes the figure steady (the
        # scheduler otherwise flips between same-core and cross-core hand-offs, 2-3x apart).
        for p in $(family "$pid"); do taskset -a -cp $((NCPU - 1)) "$p" >/dev/null; done
        if [ "$PIN" = same ]; then wrk=(taskset -c $((NCPU - 1)) wrk); else wrk=(taskset -c 0 wrk); fi
    fi
    c0=$(cpu_ticks "$pid")
    [ -z "$UP_PID" ] || u0=$(cpu_ticks "$UP_PID")
    out=$("${wrk[@]}" -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$script" "$url" \
        "${args[@]}") || die "wrk failed against $url"
    c1=$(cpu_ticks "$pid")
    [ -z "$UP_PID" ] || u1=$(cpu_ticks "$UP_PID")
    if [ "${wrk[0]}" != wrk ]; then
        for p in $(family "$pid"); do taskset -a -cp 0-$((NCPU - 1)) "$p" >/dev/null; done
    fi
    line=$(grep '^BENCH ' <<<"$out") || die "wrk printed no figures: $out"
    local requests duration_us p50_us p99_us errors
    read -r requests duration_us p50_us p99_us errors <<<"$(sed 's/^BENCH //; s/[a-z0-9_]*=//g' <<<"$line")"
    W_REQ=$requests
    W_P50=$p50_us
    W_P99=$p99_us
    W_ERR=$errors
    W_RPS=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", r * 1e6 / d }')
    W_CPU=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v r="$requests" \
        'BEGIN { printf "%.1f", r ? t * 1e6 / hz / r : 0 }')
    W_UP_CPU=-
    [ -z "$UP_PID" ] || W_UP_CPU=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v r="$requests" \
        'BEGIN { printf "%.1f", r ? t * 1e6 / hz / r : 0 }')
    [ "$errors" -eq 0 ] || note "warning: $errors errors or non-2xx answers from $url"
}

# measure NAME PID URL [random PREFIX LO HI] : warm-up, 1 connection, CONNS connections;
# stores the figures in R_<field>[NAME].
declare -A WRITER
declare -A R_UP_N R_RPS R_P50_1 R_P99_1 R_P50_N R_P99_N R_CPU_1 R_CPU_N R_HWM R_ERR R_REQ R_ALL
measure() {
    local name=$1 pid=$2 url=$3
    shift 3
    note "measuring $name ($url)"
    local warm=0
    if [ "$WARMUP" != 0 ]; then
        run_wrk "$pid" "$url" 2 "$CONNS" "$WARMUP" "$@"
        warm=$W_REQ
    fi
    run_wrk "$pid" "$url" 1 1 "$SECS" "$@"
    R_P50_1[$name]=$W_P50 R_P99_1[$name]=$W_P99 R_CPU_1[$name]=$W_CPU
    local err=$W_ERR req=$W_REQ
    run_wrk "$pid" "$url" 2 "$CONNS" "$SECS" "$@"
    R_P50_N[$name]=$W_P50 R_P99_N[$name]=$W_P99 R_CPU_N[$name]=$W_CPU R_RPS[$name]=$W_RPS
    R_UP_N[$name]=$W_UP_CPU
    R_ERR[$name]=$((err + W_ERR))
    R_REQ[$name]=$((req + W_REQ)) # measured requests
    R_ALL[$name]=$((warm + req + W_REQ)) # and the warm-up's
    R_HWM[$name]=$(status_kib "$pid" VmHWM)
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# Median (and 90th percentile) of a file of seconds, in µs.
median_us() { sort -g "$1" | awk '{ v[NR] = $1 } END { printf "%.0f", v[int((NR + 1) / 2)] * 1e6 }'; }
p90_us() { sort -g "$1" | awk '{ v[NR] = $1 } END { printf "%.0f", v[int(NR * 0.9 + 0.5)] * 1e6 }'; }

print_table() {
    local names=("$@") n
    printf '\n%-16s %9s %8s %8s %8s %8s %9s %9s %9s %6s\n' mode "rps@$CONNS" "p50@1" "p99@1" \
        "p50@$CONNS" "p99@$CONNS" "cpu/req@1" "cpu/req@$CONNS" "peakRSS" errors
    printf '%-16s %9s %8s %8s %8s %8s %9s %9s %9s %6s\n' "" "" us us us us us us MiB ""
    for n in "${names[@]}"; do
        [ -n "${R_RPS[$n]:-}" ] || continue
        printf '%-16s %9s %8s %8s %8s %8s %9s %9s %9s %6s\n' "$n" "${R_RPS[$n]}" \
            "${R_P50_1[$n]}" "${R_P99_1[$n]}" "${R_P50_N[$n]}" "${R_P99_N[$n]}" \
            "${R_CPU_1[$n]}" "${R_CPU_N[$n]}" "$(mib "${R_HWM[$n]}")" "${R_ERR[$n]}"
    done
}

print_ratios() {
    local base=$1 n
    shift
    printf '\nratios against %s (lower is better, but rps: higher is better)\n' "$base"
    printf '%-16s %11s %11s %9s %9s %9s\n' mode "cpu/req@1" "cpu/req@$CONNS" "p99@1" \
        "p99@$CONNS" "rps@$CONNS"
    for n in "$@"; do
        [ -n "${R_RPS[$n]:-}" ] || continue
        printf '%-16s %11s %11s %9s %9s %9s\n' "$n" \
            "$(ratio "${R_CPU_1[$n]}" "${R_CPU_1[$base]}")" \
            "$(ratio "${R_CPU_N[$n]}" "${R_CPU_N[$base]}")" \
            "$(ratio "${R_P99_1[$n]}" "${R_P99_1[$base]}")" \
            "$(ratio "${R_P99_N[$n]}" "${R_P99_N[$base]}")" \
            "$(ratio "${R_RPS[$n]}" "${R_RPS[$base]}")"
    done
}

# --- the run ----------------------------------------------------------------------------

echo "apisim bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(uname -r)," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk runs of ${SECS}s (1 connection: -t1 -c1, pinned: $PIN; loaded: -t2 -c$CONNS)," \
    "on loopback; cpu/req = server utime+stime per request"

start_server floor "$FLOOR_BIN"
FLOOR_PID=$SRV_PID FLOOR_URL=$SRV_URL
curl -sf "$FLOOR_URL/bench" -o "$T/body.json" || die "the floor does not answer"
[ "$(wc -c <"$T/body.json")" -eq 1024 ] || die "the floor's body is not 1 KiB"
measure floor "$FLOOR_PID" "$FLOOR_URL/bench"

if [ "$ONLY" = floor ]; then
    print_table floor
    exit 0
fi

# The recording for replay: one GET /bench through `apisim record`.
start_server record-once "$APISIM" record --upstream "$FLOOR_URL" --db "$T/small.db" \
    --listen 127.0.0.1:0
curl -sf "$SRV_URL/bench" -o "$T/via-record.json" || die "record mode does not answer"
cmp -s "$T/body.json" "$T/via-record.json" || die "record mode changed the body"
stop_server "$SRV_PID"
[ "$(sqlite3 "$T/small.db" 'SELECT count(*) FROM exchanges')" = 1 ] ||
    die "the recording does not hold exactly one exchange"

# (c2) nginx as a reverse proxy with upstream keep-alive in front of the floor: what a
# proxy that stores nothing costs, measured in the same run as record.
FLOOR_PORT=${FLOOR_URL##*:}
NGINX_URL=""
NGINX_BIN=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
[ "$ONLY" != scale ] || NGINX_BIN="" # no nginx row: it compares record
if [ -n "$NGINX_BIN" ]; then
    NGINX_PORT=$(free_port)
    mkdir -p "$T/nginx"
    cat >"$T/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes $NCPU;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $T/nginx/body;
    proxy_temp_path $T/nginx/proxy;
    upstream floor {
        server 127.0.0.1:$FLOOR_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://floor;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
    "$NGINX_BIN" -p "$T/nginx" -c "$T/nginx/nginx.conf" 2>"$T/nginx.err" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    NGINX_URL=http://127.0.0.1:$NGINX_PORT
    for ((i = 0; i < 100; i++)); do
        curl -sf -o /dev/null "$NGINX_URL/bench" && break
        sleep 0.05
    done
    curl -sf "$NGINX_URL/bench" -o "$T/via-nginx.json" || die "nginx does not answer ($T/nginx.err)"
    cmp -s "$T/body.json" "$T/via-nginx.json" || die "nginx changed the body"
    note "time to first byte through nginx: $TTFB_N requests on one kept-alive connection"
    mapfile -t args < <(for ((i = 0; i < TTFB_N; i++)); do
        printf '%s\n' -o /dev/null "$NGINX_URL/bench"
    done)
    curl -sf -w '%{time_starttransfer}\n' "${args[@]}" >"$T/ttfb-nginx-ka"
    c0=$(cpu_ticks "$FLOOR_PID")
    UP_PID=$FLOOR_PID
    measure nginx "$NGINX_PID" "$NGINX_URL/bench"
    UP_PID=""
    FLOOR_CPU_DURING_NGINX=$(($(cpu_ticks "$FLOOR_PID") - c0))
    stop_server "$NGINX_PID"
elif [ "$ONLY" != scale ]; then
    note "nginx is not installed (apt-get install nginx-light): no nginx row"
fi

# (d) record in front of the floor: time to first byte, then load.
if [ "$ONLY" != scale ]; then
    start_server record "$APISIM" record --upstream "$FLOOR_URL" --db "$T/record.db" \
        --listen 127.0.0.1:0
    REC_PID=$SRV_PID REC_URL=$SRV_URL
    note "time to first byte: $TTFB_N sequential requests each, direct and through record"
    : >"$T/ttfb-direct" && : >"$T/ttfb-record"
    for ((i = 0; i < TTFB_N; i++)); do # interleaved, so both see the same background load
        curl -sf -o /dev/null -w '%{time_starttransfer}\n' "$FLOOR_URL/bench" >>"$T/ttfb-direct"
        curl -sf -o /dev/null -w '%{time_starttransfer}\n' "$REC_URL/bench" >>"$T/ttfb-record"
    done
    ka_args() { for ((i = 0; i < TTFB_N; i++)); do printf '%s\n' -o /dev/null "$1"; done; }
    mapfile -t args < <(ka_args "$FLOOR_URL/bench")
    curl -sf -w '%{time_starttransfer}\n' "${args[@]}" >"$T/ttfb-direct-ka"
    mapfile -t args < <(ka_args "$REC_URL/bench")
    curl -sf -w '%{time_starttransfer}\n' "${args[@]}" >"$T/ttfb-record-ka"
    # The floor hit directly once more, right before record's runs: on shared cores its
    # figure drifts between the start of the bench and here.
    note "measuring the floor again, directly, before record's runs"
    run_wrk "$FLOOR_PID" "$FLOOR_URL/bench" 2 "$CONNS" "$SECS"
    FLOOR_AGAIN_N=$W_CPU
    FLOOR_CPU_BEFORE=$(cpu_ticks "$FLOOR_PID")
    TW_BEFORE=$(ss -Htan state time-wait "( dport = :$FLOOR_PORT or sport = :$FLOOR_PORT )" | wc -l)
    UP_PID=$FLOOR_PID
    measure record "$REC_PID" "$REC_URL/bench"
    UP_PID=""
    FLOOR_CPU_DURING_RECORD=$(($(cpu_ticks "$FLOOR_PID") - FLOOR_CPU_BEFORE))
    REC_RPS=${R_RPS[record]}
    REC_REQ_TOTAL=$((R_ALL[record] + 2 * TTFB_N)) # wrk's runs, warm-up included, and the curls
    # Upstream connections record holds open, and sockets to or from the floor left in
    # TIME_WAIT by its runs (a connection per request would leave thousands).
    REC_UPSTREAM_CONNS=$(ss -Htan state established "( dport = :$FLOOR_PORT )" | wc -l)
    REC_TIME_WAIT=$(ss -Htan state time-wait "( dport = :$FLOOR_PORT or sport = :$FLOOR_PORT )" |
        wc -l)
    stop_server "$REC_PID"
    REC_ROWS=$(sqlite3 "$T/record.db" 'SELECT count(*) FROM exchanges')
fi

# The writer alone (bench/writer.c): its CPU per exchange without the network, when each
# exchange is its own transaction (one connection) and in groups of 32.
if [ "$ONLY" = all ]; then
    for b in 1 32; do
        rm -f "$T/writer.db"*
        WRITER[$b]=$("$BUILD/bench/apisim_writer_bench" "$T/writer.db" $((b == 1 ? 5000 : 30000)) "$b" |
            sed -n 's/.*writer_cpu_us_per_exchange=\([0-9.]*\).*/\1/p') || die "apisim_writer_bench failed"
    done
    rm -f "$T/writer.db"*
fi

# (b) replay of the one-exchange recording, then the latency model's overhead.
start_server replay "$APISIM" replay --db "$T/small.db" --listen 127.0.0.1:0
REPLAY_START_MS=$SRV_START_MS
REPLAY_RSS_START=$(status_kib "$SRV_PID" VmRSS)
curl -sf "$SRV_URL/bench" -o "$T/via-replay.json" || die "replay does not answer /bench"
cmp -s "$T/body.json" "$T/via-replay.json" || die "replay answered another body"
measure replay "$SRV_PID" "$SRV_URL/bench"
REPLAY_RSS_END=$(status_kib "$SRV_PID" VmRSS)
stop_server "$SRV_PID"

if [ "$ONLY" != scale ]; then
    start_server replay-fixed0 "$APISIM" replay --db "$T/small.db" --listen 127.0.0.1:0 \
        --latency fixed:0ms
    measure "replay fixed:0ms" "$SRV_PID" "$SRV_URL/bench"
    stop_server "$SRV_PID"

    # Replay faults configured but drawing none (0 %): the cost of the per-request draw.
    start_server replay-faults0 "$APISIM" replay --db "$T/small.db" --listen 127.0.0.1:0 \
        --faults status:503:0%
    measure "replay faults:0%" "$SRV_PID" "$SRV_URL/bench"
    stop_server "$SRV_PID"

    # (c) mock with a stub registered through the control API.
    start_server mock "$APISIM" mock --listen 127.0.0.1:0
    MOCK_PID=$SRV_PID MOCK_URL=$SRV_URL
    printf '{"method":"GET","path":"/bench","status":200,"headers":[["Content-Type","application/json"]],"body":"%s"}' \
        "$(sed 's/\\/\\\\/g; s/"/\\"/g' "$T/body.json")" >"$T/stub.json"
    curl -sf -X POST -H 'Content-Type: application/json' --data-binary @"$T/stub.json" \
        "$MOCK_URL/__apisim/stubs" >/dev/null || die "mock refused the stub"
    curl -sf "$MOCK_URL/bench" -o "$T/via-mock.json" || die "mock does not answer /bench"
    cmp -s "$T/body.json" "$T/via-mock.json" || die "mock answered another body"
    measure mock "$MOCK_PID" "$MOCK_URL/bench"
    stop_server "$MOCK_PID"
fi

# --- scale ------------------------------------------------------------------------------

# copy_rows DB N PATH_SQL BODY_SQL : adds exchanges 2..N, copies of the first one with
# path PATH_SQL and response body BODY_SQL (SQL expressions of x, the new seq), each with
# one chunk; the recording ends in WAL mode, as apisim leaves one.
copy_rows() {
    sqlite3 "$1" >/dev/null <<EOF
PRAGMA journal_mode = DELETE;
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(x) AS (SELECT 2 UNION ALL SELECT x + 1 FROM n WHERE x < $2)
INSERT INTO exchanges (session, seq, source, started_at, method, path, query,
    request_headers, request_body, match_key, status, response_headers, response_body,
    response_encoding, ttfb_us, duration_us, error, complete, delay_ms, response_size)
SELECT e.session, x, e.source, e.started_at, e.method, $3, e.query, e.request_headers,
    e.request_body, replace(e.match_key, e.path, $3), e.status, e.response_headers, $4,
    e.response_encoding, e.ttfb_us, e.duration_us, e.error, e.complete, e.delay_ms,
    length(CAST($4 AS BLOB))
FROM n, (SELECT * FROM exchanges ORDER BY id LIMIT 1) AS e;
INSERT INTO chunks (exchange_id, idx, offset_us, size)
SELECT id, 0, ttfb_us, length(response_body) FROM exchanges
WHERE id > (SELECT min(id) FROM exchanges);
COMMIT;
PRAGMA journal_mode = WAL;
EOF
}

# label N : 2000 -> 2k, 1000000 -> 1M.
label() { awk -v n="$1" 'BEGIN { if (n % 1000000 == 0) printf "%dM", n / 1e6; else if (n % 1000 == 0) printf "%dk", n / 1e3; else print n }'; }

# scale NAME DB PREFIX N RANDOM_CONNS : replay DB. A first start builds the match index
# (once: the rows were written by SQL, as an older file or rows added by hand would be);
# then start-up (best of 3, spawn to the listening line), RSS, /bench requests (the hot
# exchange), requests for random PREFIX<n> at RANDOM_CONNS connections, RSS after them; and
# a start with --match method,path, a rule that makes replay read every exchange's key.
declare -A S_START S_RSS0 S_RSS1 S_SIZE S_BUILD S_PASS S_RANDOM_REQ S_LOOKUP_HOT S_LOOKUP_RANDOM
scale() {
    local name=$1 db=$2 prefix=$3 n=$4 random_conns=$5 pid url saved=$CONNS best= i
    start_server "$name-build" "$APISIM" replay --db "$db" --listen 127.0.0.1:0
    stop_server "$SRV_PID"
    S_BUILD[$name]=$(sed -n 's/.*match index built: .* in \([0-9]*\) ms.*/\1/p' "$T/$name-build.err")
    [ -n "${S_BUILD[$name]}" ] || S_BUILD[$name]=-
    for ((i = 0; i < 3; i++)); do
        start_server "$name" "$APISIM" replay --db "$db" --listen 127.0.0.1:0
        stop_server "$SRV_PID"
        best=$(awk -v a="$SRV_START_MS" -v b="$best" 'BEGIN { print (b == "" || a < b) ? a : b }')
    done
    S_START[$name]=$best
    start_server "$name-pass" "$APISIM" replay --db "$db" --listen 127.0.0.1:0 \
        --match method,path
    S_PASS[$name]=$SRV_START_MS
    stop_server "$SRV_PID"
    start_server "$name" "$APISIM" replay --db "$db" --listen 127.0.0.1:0
    pid=$SRV_PID url=$SRV_URL
    S_RSS0[$name]=$(status_kib "$pid" VmRSS)
    S_SIZE[$name]=$(du -m "$db" | cut -f1)
    curl -sf "$url${prefix}2" -o /dev/null || die "$name does not answer ${prefix}2"
    measure "$name /bench" "$pid" "$url/bench"
    CONNS=$random_conns
    measure "$name random" "$pid" "$url/" random "$prefix" 2 "$n"
    CONNS=$saved
    S_RANDOM_REQ[$name]=${R_ALL[$name random]}
    S_RSS1[$name]=$(status_kib "$pid" VmRSS)
    stop_server "$pid"
    # The lookup alone, on one thread without the network: the share of a request that is
    # SQLite finding the key and reading the answer's row.
    local lk
    lk=$("$BUILD/bench/apisim_lookup_bench" "$db" 100000) || die "apisim_lookup_bench failed on $db"
    S_LOOKUP_HOT[$name]=$(sed -n 's/.*hot_us_per_lookup=\([0-9.]*\).*/\1/p' <<<"$lk")
    S_LOOKUP_RANDOM[$name]=$(sed -n 's/.*random_us_per_lookup=\([0-9.]*\).*/\1/p' <<<"$lk")
}

SCALE_NAMES=()
if [ "$SKIP_SCALE" != 1 ]; then
    for n in $SCALE_SIZES; do
        name=$(label "$n")
        note "making a recording of $n exchanges (SQL copies of the recorded one)"
        sqlite3 "$T/small.db" "VACUUM INTO '$T/scale-$name.db'"
        copy_rows "$T/scale-$name.db" "$n" "'/item/' || x" "e.response_body"
        scale "$name" "$T/scale-$name.db" /item/ "$n" "$CONNS"
        SCALE_NAMES+=("$name")
        rm -f "$T/scale-$name.db"*
    done
fi
if [ "$SKIP_SCALE" != 1 ] && [ "$BIG_N" -gt 0 ]; then
    note "making a recording of $BIG_N exchanges of $BIG_KIB KiB"
    sqlite3 "$T/small.db" "VACUUM INTO '$T/big.db'"
    # A JSON string of BIG_KIB KiB: '"000...0"'.
    copy_rows "$T/big.db" $((BIG_N + 1)) "'/big/' || x" \
        "'\"' || substr(hex(zeroblob($BIG_KIB * 512)), 3) || '\"'"
    # Random 1 MiB answers run at 4 connections: on 2 cores, 32 would only queue.
    scale "1GiB" "$T/big.db" /big/ $((BIG_N + 1)) 4
    SCALE_NAMES+=(1GiB)
fi

stop_server "$FLOOR_PID"

# --- report -----------------------------------------------------------------------------

echo
echo "== floor, replay, mock, record: 1 KiB JSON body, GET /bench =="
print_table floor replay mock nginx record "replay fixed:0ms" "replay faults:0%"
print_ratios floor replay mock nginx record

if [ "$ONLY" != scale ]; then
    echo
    echo "== record mode =="
    echo "added time to first byte, median of $TTFB_N (90th percentile in brackets):"
    for kind in "" -ka; do
        d=$(median_us "$T/ttfb-direct$kind") r=$(median_us "$T/ttfb-record$kind")
        d9=$(p90_us "$T/ttfb-direct$kind") r9=$(p90_us "$T/ttfb-record$kind")
        label="new connection each"
        [ -z "$kind" ] || label="one kept-alive connection"
        printf '  %-26s direct %6s µs (%s), through record %6s µs (%s): +%s µs\n' "$label" \
            "$d" "$d9" "$r" "$r9" $((r - d))
    done
    echo "exchanges stored: $REC_ROWS for $REC_REQ_TOTAL answered requests (wrk does not count" \
        "the ones in flight when a run ends); stored at $REC_RPS exchanges/s at $CONNS connections"
    echo "floor CPU while serving record's load: $(awk -v t="$FLOOR_CPU_DURING_RECORD" \
        -v hz="$CLK_TCK" -v r="${R_ALL[record]}" 'BEGIN { printf "%.1f", t * 1e6 / hz / r }') µs per request" \
        "(not in record's cpu/req)"
    echo "the writer alone (apisim_writer_bench): ${WRITER[1]} µs CPU per exchange one per" \
        "transaction, ${WRITER[32]} µs in groups of 32"
    echo "upstream connections open at the end of record's runs: $REC_UPSTREAM_CONNS;" \
        "sockets in TIME_WAIT on the floor's port: $REC_TIME_WAIT ($TW_BEFORE before record's runs)"

    if [ -n "$NGINX_URL" ]; then
        up_cpu() { awk -v t="$1" -v hz="$CLK_TCK" -v r="$2" 'BEGIN { printf "%.1f", t * 1e6 / hz / r }'; }
        UP_NGINX=$(up_cpu "$FLOOR_CPU_DURING_NGINX" "${R_ALL[nginx]}")
        UP_RECORD=$(up_cpu "$FLOOR_CPU_DURING_RECORD" "${R_ALL[record]}")
        echo
        echo "== record against nginx (reverse proxy, upstream keepalive 64, stores nothing) =="
        printf '%-30s %10s %10s %8s %18s\n' "" nginx record ratio target
        printf '%-30s %10s %10s %8s %18s\n' "req/s at $CONNS connections" "${R_RPS[nginx]}" \
            "${R_RPS[record]}" "$(ratio "${R_RPS[record]}" "${R_RPS[nginx]}")" ">= 0.6"
        printf '%-30s %10s %10s %8s %18s\n' "proxy CPU µs/req at $CONNS" "${R_CPU_N[nginx]}" \
            "${R_CPU_N[record]}" "$(ratio "${R_CPU_N[record]}" "${R_CPU_N[nginx]}")" "<= 2"
        printf '%-30s %10s %10s %8s %18s\n' "proxy CPU µs/req at 1" "${R_CPU_1[nginx]}" \
            "${R_CPU_1[record]}" "$(ratio "${R_CPU_1[record]}" "${R_CPU_1[nginx]}")" "<= 2"
        printf '%-30s %10s %10s %8s %18s\n' "upstream CPU µs/req at $CONNS" "${R_UP_N[nginx]}" \
            "${R_UP_N[record]}" "$(ratio "${R_UP_N[record]}" "${R_CPU_N[floor]}")" "<= 1.5 x direct"
        echo "  upstream CPU: the floor's CPU per request during the proxy's wrk run at $CONNS" \
            "connections, against the floor's own cpu/req@$CONNS direct (${R_CPU_N[floor]} µs)." \
            "Over all of a proxy's runs (warm-up, and 1 connection, where the floor is not pinned" \
            "as it is when measured alone): nginx $UP_NGINX, record $UP_RECORD µs"
        echo "  against the floor hit directly again right before record's runs ($FLOOR_AGAIN_N µs):" \
            "nginx $(ratio "${R_UP_N[nginx]}" "$FLOOR_AGAIN_N"), record" \
            "$(ratio "${R_UP_N[record]}" "$FLOOR_AGAIN_N")"
        printf '  TTFB, one kept-alive connection, median: direct %s µs, nginx %s µs, record %s µs\n' \
            "$(median_us "$T/ttfb-direct-ka")" "$(median_us "$T/ttfb-nginx-ka")" \
            "$(median_us "$T/ttfb-record-ka")"
    fi

    echo
    echo "== latency model overhead: --latency fixed:0ms against none =="
    printf '  cpu/req@1 %s (none %s) x%s; cpu/req@%s %s (none %s) x%s; p50@1 %s µs (none %s)\n' \
        "${R_CPU_1[replay fixed:0ms]}" "${R_CPU_1[replay]}" \
        "$(ratio "${R_CPU_1[replay fixed:0ms]}" "${R_CPU_1[replay]}")" "$CONNS" \
        "${R_CPU_N[replay fixed:0ms]}" "${R_CPU_N[replay]}" \
        "$(ratio "${R_CPU_N[replay fixed:0ms]}" "${R_CPU_N[replay]}")" \
        "${R_P50_1[replay fixed:0ms]}" "${R_P50_1[replay]}"

    echo
    echo "== fault draw overhead: --faults status:503:0% against none =="
    printf '  cpu/req@1 %s (none %s) x%s; cpu/req@%s %s (none %s) x%s; p50@1 %s µs (none %s)\n' \
        "${R_CPU_1[replay faults:0%]}" "${R_CPU_1[replay]}" \
        "$(ratio "${R_CPU_1[replay faults:0%]}" "${R_CPU_1[replay]}")" "$CONNS" \
        "${R_CPU_N[replay faults:0%]}" "${R_CPU_N[replay]}" \
        "$(ratio "${R_CPU_N[replay faults:0%]}" "${R_CPU_N[replay]}")" \
        "${R_P50_1[replay faults:0%]}" "${R_P50_1[replay]}"
fi

if [ "$SKIP_SCALE" != 1 ]; then
    echo
    echo "== scale: replay of large recordings (page cache warm: the files were just written) =="
    printf '%-9s %6s %10s %9s %10s %9s %11s %9s %10s\n' recording "file" "index" "start-up" \
        "start-up" "RSS" "RSS after" "random" "peak RSS"
    printf '%-9s %6s %10s %9s %10s %9s %11s %9s %10s\n' "" "" "built" "" "--match" "start" \
        "random" "requests" ""
    printf '%-9s %6s %10s %9s %10s %9s %11s %9s %10s\n' "" MiB ms ms ms MiB MiB "" MiB
    printf '%-9s %6s %10s %9s %10s %9s %11s %9s %10s\n' 1 "$(du -m "$T/small.db" | cut -f1)" \
        - "$REPLAY_START_MS" - "$(mib "$REPLAY_RSS_START")" "$(mib "$REPLAY_RSS_END")" - \
        "$(mib "${R_HWM[replay]}")"
    for n in "${SCALE_NAMES[@]}"; do
        printf '%-9s %6s %10s %9s %10s %9s %11s %9s %10s\n' "$n" "${S_SIZE[$n]}" \
            "${S_BUILD[$n]}" "${S_START[$n]}" "${S_PASS[$n]}" "$(mib "${S_RSS0[$n]}")" \
            "$(mib "${S_RSS1[$n]}")" "${S_RANDOM_REQ[$n]}" "$(mib "${R_HWM[$n random]}")"
    done
    echo "(index built: the first start after the rows were written by SQL builds the match"
    echo " index once; start-up: best of 3; start-up --match: a start that reads every"
    echo " exchange's key; 'random' requests a random exchange of the recording, each 1 KiB;"
    echo " in 1GiB each is $BIG_KIB KiB and the loaded run uses 4 connections, not $CONNS)"
    echo "the lookup alone (apisim_lookup_bench: replay's statement and row decoding for a key"
    echo "it has not cached, one thread, no network), µs per lookup, the same key / a random one:"
    for n in "${SCALE_NAMES[@]}"; do
        printf '  %-9s %6s / %s\n' "$n" "${S_LOOKUP_HOT[$n]}" "${S_LOOKUP_RANDOM[$n]}"
    done
    rows=(floor replay)
    for n in "${SCALE_NAMES[@]}"; do rows+=("$n /bench" "$n random"); done
    print_table "${rows[@]}"
    print_ratios floor "${rows[@]:1}"
fi
