#!/usr/bin/env bash
# Installs what building and testing apisim needs, from Debian 12's packages.
# Does nothing (and needs no network) when everything is already there.
set -euo pipefail
packages=(build-essential cmake pkg-config libcurl4-openssl-dev libmicrohttpd-dev
          libsqlite3-dev libcjson-dev zlib1g-dev sqlite3 curl python3 python3-pytest
          python3-pip python3-setuptools python3-wheel python3-venv python3-wheel-whl git
          openssl "$@")
# Node and npm: Debian's packages, unless a node and npm are already there (NodeSource's
# nodejs bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# npm packages the end-to-end tests drive, pinned in tests/node/package.json (exact versions).
npm_install() {
  [ -d "$root/tests/node/node_modules/@anthropic-ai/sdk" ] && return 0
  echo "installing npm packages into $root/tests/node/node_modules" >&2
  npm install --prefix "$root/tests/node" --no-audit --no-fund >&2
}
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  npm_install
  exit 0
fi
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
npm_install
