#!/usr/bin/env bash
# Installs what building and testing apisim needs, from Debian 12's packages.
# Does nothing (and needs no network) when everything is already there.
set -euo pipefail
packages=(build-essential cmake pkg-config libcurl4-openssl-dev libmicrohttpd-dev
          libsqlite3-dev libcjson-dev zlib1g-dev libbrotli-dev libzstd-dev sqlite3 curl
          python3 python3-pytest python3-pip python3-setuptools python3-wheel openssl
          python3-brotli python3-zstandard nghttp2-server "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
