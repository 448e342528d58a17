#!/usr/bin/env bash
# Builds apisim and runs the whole test suite (unit, end-to-end, Python, lint), first in a
# normal build with warnings as errors, then each libFuzzer target for a few seconds (a clang
# build; scripts/fuzz.sh runs them longer), and last the whole suite again under
# AddressSanitizer + UBSan, whose ctest summary closes the output.
# Usage: scripts/test.sh            (installs what it needs with apt-get)
#        APISIM_TEST_ARGS="-L unit" scripts/test.sh   (extra ctest arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh clang libclang-rt-14-dev
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
echo "== fuzz targets, 5 s each (clang, libFuzzer + ASan + UBSan; longer: scripts/fuzz.sh)"
CC=clang cmake -S . -B build-fuzz -DAPISIM_WERROR=ON -DAPISIM_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_all
(cd build-fuzz && ctest --output-on-failure -j2 -L fuzz)
echo "== build and test under AddressSanitizer + UndefinedBehaviorSanitizer"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DAPISIM_SANITIZE=ON
