#!/usr/bin/env bash
# System calls per recorded exchange, by thread kind: `apisim record` behind the bench floor
# (bench/floor.c), a 1 s warm-up, then `perf trace -s` on the recorder around
# `wrk -c CONNS -d 3s` on GET /bench (1 KiB answer). Exchanges are counted in the database.
# Kinds: loop (threads "upstream-loop"; in older binaries, which did not name them, the
# threads after the checkpointer and before libmicrohttpd's), mhd (libmicrohttpd's
# workers), writer (the store's writer, the second thread), ckpt (the checkpointer, the
# third), other.
# Usage: bench/record_syscalls.sh BIN [CONNS=32]
#        FLOOR=path/to/apisim_floor (default: build-bench/bench/apisim_floor)
# Needs perf (linux-perf), wrk and sqlite3. perf trace costs far less than strace -f, which
# slows the recorder so much that answers are already there when libcurl first looks.
set -euo pipefail
BIN=$1 CONNS=${2:-32}
FLOOR=${FLOOR:-build-bench/bench/apisim_floor}
WT=$((CONNS < 2 ? CONNS : 2))
. "$(dirname "$0")/record_lib.sh"
"$FLOOR" >"$T/floor.out" 2>&1 &
FP=$!
FURL=$(wait_listening "$T/floor.out")
"$BIN" record --upstream "$FURL" --db "$T/rec.db" --listen 127.0.0.1:0 >"$T/rec.out" 2>"$T/rec.err" &
RP=$!
RURL=$(wait_listening "$T/rec.out")
wrk -t"$WT" -c"$CONNS" -d1s "$RURL/bench" >/dev/null
ls /proc/$RP/task | sort -n > "$T/tids"
n0=$(sqlite3 "$T/rec.db" 'select count(*) from exchanges')
perf trace -s -p "$RP" -o "$T/trace.txt" &
SP=$!
sleep 0.5 # perf attaches
wrk -t"$WT" -c"$CONNS" -d3s "$RURL/bench" >/dev/null
kill -INT "$SP"
wait "$SP" || true
n1=$(sqlite3 "$T/rec.db" 'select count(*) from exchanges')
python3 - "$T/trace.txt" "$T/tids" $((n1 - n0)) <<'PY'
import collections, re, sys
trace, tids, n = sys.argv[1], open(sys.argv[2]).read().split(), int(sys.argv[3])
calls, errors = collections.defaultdict(collections.Counter), collections.defaultdict(collections.Counter)
names = {}
for line in open(trace):
    m = re.match(r"\s*(.+) \((\d+)\), \d+ events", line)
    if m:
        names[m.group(2)] = m.group(1)
named_loops = "upstream-loop" in names.values()
mhd = [tids.index(t) for t, nm in names.items() if nm == "MHD-worker" and t in tids]
first_mhd = min(mhd) if mhd else len(tids)
kind = None
for line in open(trace):
    m = re.match(r"\s*(.+) \((\d+)\), \d+ events", line)
    if m:
        name, tid = m.groups()
        i = tids.index(tid) if tid in tids else -1
        loop = name == "upstream-loop" or (not named_loops and 3 <= i < first_mhd)
        kind = ("loop" if loop else "mhd" if name == "MHD-worker"
                else {1: "writer", 2: "ckpt"}.get(i, "other"))
        continue
    m = re.match(r"\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s", line)
    if m and kind:
        calls[kind][m.group(1)] += int(m.group(2))
        errors[kind][m.group(1)] += int(m.group(3))
print(f"exchanges {n}; system calls per exchange (failed ones in brackets)")
total = collections.Counter()
for k in ("loop", "mhd", "writer", "ckpt", "other"):
    if not any(c / n >= 0.01 for c in calls[k].values()):
        continue
    total.update(calls[k])
    print(f"  {k:7s}", " ".join(f"{s} {c / n:.2f}" + (f" ({errors[k][s] / n:.2f})" if errors[k][s] else "")
                               for s, c in calls[k].most_common() if c / n >= 0.01))
print(f"  total   {sum(total.values()) / n:.2f} ({(sum(total.values()) - total['futex']) / n:.2f} without futex)")
PY
