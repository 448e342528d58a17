#!/usr/bin/env bash
# Fuzzes apisim's parsers of untrusted input with libFuzzer (clang, from Debian's packages):
# match keys and JSON canonicalisation, --config files, latency specs, HAR/JSONL imports,
# fake-claude scenario files and control API bodies (tests/fuzz/fuzz_*.c).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  how long each target runs (default 300); targets run one after another
#   TARGET   fuzz_match fuzz_config fuzz_latency fuzz_har fuzz_scenario fuzz_admin (default all)
# e.g.  scripts/fuzz.sh 3600 fuzz_har       an hour on the HAR/JSONL importer
#
# Builds build-fuzz/ with CC=clang -DAPISIM_FUZZ=ON (ASan + UBSan + libFuzzer). The inputs a
# run finds are kept in build-fuzz/tests/fuzz/corpus/<target>/ (so the next run starts from
# them); tests/fuzz/corpus/<target>/ holds the seeds and is only read. A crash stops the run
# and leaves build-fuzz/tests/fuzz/artifacts/<target>-crash-*: reproduce it with
#   build-fuzz/tests/fuzz/<target> build-fuzz/tests/fuzz/artifacts/<target>-crash-...
# then fix the module, and add the (minimised: -minimize_crash=1) input to the seeds.
# CI runs each target for 5 s instead: ctest -L fuzz in a build configured the same way
# (scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_match fuzz_config fuzz_latency fuzz_har fuzz_scenario
                                     fuzz_admin)
scripts/install-deps.sh clang libclang-rt-14-dev
CC=clang cmake -S . -B build-fuzz -DAPISIM_WERROR=ON -DAPISIM_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_all
dir=build-fuzz/tests/fuzz
mkdir -p "$dir/artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
for t in "${targets[@]}"; do
  echo "== $t for ${secs} s"
  mkdir -p "$dir/corpus/$t"
  "$dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/$t-" "$dir/corpus/$t" "tests/fuzz/corpus/$t"
done
echo "== no crash: ${#targets[@]} target(s), ${secs} s each"
