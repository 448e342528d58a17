#!/usr/bin/env bash
# Re-makes the bundled recordings by recording real traffic through apisim against
# fake_anthropic.py (a stand-in with the Anthropic API's shapes), then exporting each as a
# deterministic text dump. Usage: recordings/make.sh [path/to/apisim]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
apisim=${1:-$here/../build/apisim}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

first_line() { # wait for a server's listening line, print its URL
  local file=$1
  for _ in $(seq 100); do
    if [ -s "$file" ]; then head -1 "$file" | awk '{print $3}'; return; fi
    sleep 0.05
  done
  echo "no listening line in $file" >&2; exit 1
}

python3 "$here/fake_anthropic.py" > "$work/upstream.out" &
upstream=$(first_line "$work/upstream.out")

record() { # record SESSION, running the rest of the arguments as curl calls
  local name=$1; shift
  "$apisim" record --upstream "$upstream" --db "$work/$name.db" --session "$name" \
    --listen 127.0.0.1:0 > "$work/$name.out" 2> "$work/$name.err" &
  local pid=$!
  local url; url=$(first_line "$work/$name.out")
  "$@" "$url"
  kill -TERM $pid; wait $pid
  "$apisim" export --db "$work/$name.db" --format sql > "$here/$name.sql"
  echo "wrote recordings/$name.sql" >&2
}

demo_calls() {
  curl -sS -o /dev/null "$1/v1/models" -H 'x-api-key: sk-ant-demo-secret' \
    -H 'anthropic-version: 2023-06-01'
  curl -sS -o /dev/null "$1/v1/messages" -H 'x-api-key: sk-ant-demo-secret' \
    -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
    -d @"$here/demo-request.json"
  curl -sS -o /dev/null -N "$1/v1/messages" -H 'x-api-key: sk-ant-demo-secret' \
    -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
    -d @"$here/demo-stream-request.json"
}
stream_calls() {
  curl -sS -o /dev/null -N "$1/v1/messages" -H 'x-api-key: sk-ant-demo-secret' \
    -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
    -d @"$here/demo-stream-request.json"
}
quota_calls() {
  curl -sS -o /dev/null "$1/api/oauth/usage" -H 'Authorization: Bearer sk-ant-oat-demo' \
    -H 'anthropic-beta: oauth-2025-04-20'
}

record demo demo_calls
record messages-stream stream_calls
record quota quota_calls
