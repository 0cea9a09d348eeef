#!/usr/bin/env bash
# Configures and builds mediasync with CMake.
#
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake configure args...]
#   BUILD_DIR   build directory (default: build); a relative path is taken
#               relative to the repository root.
#   extra args  passed to the cmake configure step after the defaults, so they
#               win, e.g. scripts/build.sh build-dbg -DCMAKE_BUILD_TYPE=Debug
# Default build type: RelWithDebInfo. ccache is picked up by CMakeLists.txt.
set -euo pipefail

die() { printf 'build: ERROR: %s\n' "$*" >&2; exit 1; }

case ${1:-} in
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD_DIR=build
if [[ $# -gt 0 ]]; then
  [[ $1 == -* ]] && die "first argument must be the build directory, got option '$1' (usage: scripts/build.sh [BUILD_DIR] [cmake args...])"
  BUILD_DIR=$1
  shift
fi

command -v cmake >/dev/null 2>&1 || die "cmake not found; run scripts/setup.sh first"
jobs=$(nproc 2>/dev/null || echo 2)

printf 'build: configuring %s (source %s)\n' "$BUILD_DIR" "$ROOT" >&2
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" \
  || die "cmake configure failed for build dir '$BUILD_DIR'"

printf 'build: building %s with -j%s\n' "$BUILD_DIR" "$jobs" >&2
cmake --build "$BUILD_DIR" -j"$jobs" \
  || die "cmake build failed in '$BUILD_DIR'"

printf 'build: done: %s\n' "$BUILD_DIR" >&2
