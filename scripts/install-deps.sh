#!/usr/bin/env bash
# Installs what building and testing apisim needs, from Debian 12's packages, then the npm
# packages the e2e tests drive (tests/node/package.json, exact versions) into
# tests/node/node_modules. Does nothing (and needs no network) when everything is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
packages=(build-essential cmake pkg-config libcurl4-openssl-dev libmicrohttpd-dev
          libsqlite3-dev libcjson-dev zlib1g-dev libbrotli-dev libzstd-dev sqlite3 curl
          python3 python3-pytest python3-pip python3-setuptools python3-wheel python3-venv
          python3-wheel-whl git openssl libssl-dev libgnutls28-dev python3-brotli
          python3-zstandard nghttp2-server "$@")
# Node and npm: Debian's packages, unless a node and npm are already there (NodeSource's
# nodejs bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Anthropic TS SDK (tests/e2e/test_chaos.py) and the real claude CLI
# (tests/e2e/test_forward_proxy.py), pinned in tests/node/package.json.
for pkg in @anthropic-ai/sdk @anthropic-ai/claude-code; do
  if [ ! -d "$root/tests/node/node_modules/$pkg" ]; then
    echo "installing npm packages into $root/tests/node/node_modules" >&2
    npm install --prefix "$root/tests/node" --no-audit --no-fund >&2
    break
  fi
done
