#!/usr/bin/env bash
# Builds apisim and replays the bundled demo recording on http://127.0.0.1:8080 until you
# press Ctrl-C. In another terminal:
#   curl -s http://127.0.0.1:8080/v1/models
#   curl -s http://127.0.0.1:8080/v1/messages -H 'content-type: application/json' \
#        -d @recordings/demo-request.json
# Usage: scripts/demo.sh [extra apisim replay options, e.g. --listen 127.0.0.1:0]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
cmake --build build -j"$(nproc)" --target apisim >&2
echo "replaying recordings/demo.sql (Ctrl-C to stop)" >&2
exec build/apisim replay --db recordings/demo.sql --listen 127.0.0.1:8080 --latency recorded "$@"
