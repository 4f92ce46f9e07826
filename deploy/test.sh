#!/usr/bin/env bash
# Install what is missing, build a normal and a sanitizer (ASan + UBSan)
# build, and run the whole test suite on both. Exit status 0 only if every
# test passed in both builds.
#
#   deploy/test.sh            # everything
#   DAGQ_SOAK=1 deploy/test.sh  # also the long soak runs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc)

deploy/install-deps.sh

echo "== normal build (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"
echo "== tests, normal build"
(cd build && DAGQ_BUILD_DIR="$ROOT/build" ctest --output-on-failure --timeout 1200)

echo "== sanitizer build (build-asan/)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDAGQ_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$JOBS"
echo "== tests, sanitizer build"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:halt_on_error=1:detect_leaks=1:exitcode=86}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd build-asan && DAGQ_BUILD_DIR="$ROOT/build-asan" DAGQ_TEST_SCALE=${DAGQ_TEST_SCALE:-0.25} \
   ctest --output-on-failure --timeout 1800)
echo "== all tests passed (normal and sanitizer builds)"
