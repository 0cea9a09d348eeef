#!/usr/bin/env bash
# Installs dependencies, builds and runs the mediasync test suite with ctest.
#
# Usage: scripts/test.sh [--preset default|asan|tsan] [extra ctest args...]
#   default  build/       RelWithDebInfo
#   asan     build-asan/  Debug, AddressSanitizer + UBSan (leak detection on)
#   tsan     build-tsan/  Debug, ThreadSanitizer (CAF, libvips and its codecs are Debian's,
#            not instrumented: ignore_noninstrumented_modules=1 and tests/tsan.supp keep
#            their internals out of the reports; test time limits scale, tests/test_util.hpp)
# Exits with ctest's status.
set -euo pipefail

die() { printf 'test: ERROR: %s\n' "$*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

preset=default
ctest_extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --preset)   [[ $# -ge 2 ]] || die "--preset needs a value: default, asan or tsan"
                preset=$2; shift 2 ;;
    --preset=*) preset=${1#--preset=}; shift ;;
    -h|--help)  usage; exit 0 ;;
    *)          ctest_extra+=("$1"); shift ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

case $preset in
  default)
    build_dir=build
    cmake_args=() ;;
  asan)
    build_dir=build-asan
    cmake_args=(-DMEDIASYNC_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug -DMEDIASYNC_BENCH=OFF)
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
    export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$ROOT/tests/lsan.supp"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1" ;;
  tsan)
    build_dir=build-tsan
    cmake_args=(-DMEDIASYNC_SANITIZE=thread -DCMAKE_BUILD_TYPE=Debug -DMEDIASYNC_BENCH=OFF)
    export TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$ROOT/tests/tsan.supp" ;;
  *)
    die "unknown preset '$preset' (expected default, asan or tsan)" ;;
esac

bash "$ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
bash "$ROOT/scripts/build.sh" "$build_dir" "${cmake_args[@]}" || die "scripts/build.sh failed (preset $preset)"

printf 'test: running ctest in %s (preset %s)\n' "$build_dir" "$preset" >&2
status=0
ctest --test-dir "$build_dir" --output-on-failure -j2 --timeout 600 --no-tests=error "${ctest_extra[@]}" || status=$?
if [[ $status -ne 0 ]]; then
  printf 'test: ctest failed with exit status %s (preset %s)\n' "$status" "$preset" >&2
fi
exit "$status"
