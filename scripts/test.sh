#!/usr/bin/env bash
# Builds apisim and runs the whole test suite (unit, end-to-end, Python), first in a normal
# build with warnings as errors, then again under AddressSanitizer + UBSan.
# Usage: scripts/test.sh            (installs what it needs with apt-get)
#        APISIM_TEST_ARGS="-L unit" scripts/test.sh   (extra ctest arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)
# shellcheck disable=SC2086
run_suite() {
  local dir=$1; shift
  cmake -S . -B "$dir" -DAPISIM_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure -j2 --timeout 300 ${APISIM_TEST_ARGS:-})
}
echo "== build and test (RelWithDebInfo, -Werror)"
run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "== build and test under AddressSanitizer + UndefinedBehaviorSanitizer"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DAPISIM_SANITIZE=ON
