# Sourced by bench/record_ab.sh, bench/record_syscalls.sh and bench/replay_pairs.sh: a work
# directory, the floor and server PIDs (FP, RP, OP) stopped at exit, and waiting for a
# server's "listening on" line.
T=$(mktemp -d)
FP="" RP="" OP=""
cleanup() {
  [ -n "$OP" ] && kill "$OP" 2>/dev/null && wait "$OP" 2>/dev/null
  [ -n "$RP" ] && kill "$RP" 2>/dev/null && wait "$RP" 2>/dev/null
  [ -n "$FP" ] && kill "$FP" 2>/dev/null && wait "$FP" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

wait_listening() { # FILE: the URL from its "listening on" line, waiting up to 5 s
  for _ in $(seq 100); do
    if grep -q "^listening on " "$1"; then sed -n 's/^listening on //p' "$1" | head -1; return; fi
    sleep 0.05
  done
  echo "no 'listening on' line in $1" >&2
  exit 1
}
