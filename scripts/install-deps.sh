#!/usr/bin/env bash
# Installs what building and testing apisim needs, from Debian 12's packages, then the npm
# packages the e2e tests run (tests/node/package.json, exact versions) into
# tests/node/node_modules. Does nothing (and needs no network) when everything is there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
packages=(build-essential cmake pkg-config libcurl4-openssl-dev libmicrohttpd-dev
          libsqlite3-dev libcjson-dev zlib1g-dev sqlite3 curl python3 python3-pytest
          python3-pip python3-setuptools python3-wheel openssl libssl-dev libgnutls28-dev
          nodejs npm "$@")
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
# The real claude CLI, for tests/e2e/test_forward_proxy.py (pinned in package.json).
if [ ! -d "$root/tests/node/node_modules/@anthropic-ai/claude-code" ]; then
  echo "installing npm packages into tests/node/node_modules" >&2
  npm install --prefix "$root/tests/node" --no-audit --no-fund
fi
