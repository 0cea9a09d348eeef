#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang-14, ASan+UBSan) in build-fuzz/ and runs each
# for a number of executions, reporting executions, exec/s and crashes.
#
# Usage: scripts/fuzz.sh [--runs N] [--time S] [--parallel P] [--no-build] [target...]
#   --runs N      executions per target (default 10000000), seeds included
#   --time S      also stop each target after S seconds (default: no limit)
#   --parallel P  run P targets at once (default 1; the machine's cores are shared)
#   --no-build    use the binaries already in build-fuzz/
#   target        config cmdline path_map url sniff image glob (default: all)
# Environment: CC/CXX (default clang-14/clang++-14), FUZZ_BUILD_DIR (default build-fuzz),
#   FUZZ_FLAGS (extra libFuzzer flags, e.g. "-max_len=8192 -jobs=2").
# Corpora: build-fuzz/fuzz/corpus/seeds/<t> (generated, see fuzz/make_seeds.cpp) and
# build-fuzz/fuzz/corpus/live/<t> (what libFuzzer found, kept between runs); logs in
# build-fuzz/fuzz/logs/<t>.log; a crashing input in build-fuzz/fuzz/crashes/<t>-*
# (replay it: build-fuzz/fuzz/fuzz_<t> FILE, or build/fuzz/fuzz_<t>_replay FILE).
# Exits 0 when every target ran its executions without a crash, 1 on any crash, leak,
# timeout (a single input over 10 s) or property failure, 2 on usage or build errors.
set -euo pipefail

die() { printf 'fuzz: ERROR: %s\n' "$*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ALL_TARGETS=(config cmdline path_map url sniff image glob)
runs=10000000
max_time=0
parallel=1
build=1
targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs)       [[ $# -ge 2 ]] || die "--runs needs a number"; runs=$2; shift 2 ;;
    --runs=*)     runs=${1#--runs=}; shift ;;
    --time)       [[ $# -ge 2 ]] || die "--time needs seconds"; max_time=$2; shift 2 ;;
    --time=*)     max_time=${1#--time=}; shift ;;
    --parallel)   [[ $# -ge 2 ]] || die "--parallel needs a number"; parallel=$2; shift 2 ;;
    --parallel=*) parallel=${1#--parallel=}; shift ;;
    --no-build)   build=0; shift ;;
    -h|--help)    usage; exit 0 ;;
    -*)           die "unknown option '$1' (see --help)" ;;
    *)            targets+=("$1"); shift ;;
  esac
done
[[ $runs =~ ^[0-9]+$ && $runs -gt 0 ]] || die "--runs must be a positive number, got '$runs'"
[[ $max_time =~ ^[0-9]+$ ]] || die "--time must be whole seconds, got '$max_time'"
[[ $parallel =~ ^[0-9]+$ && $parallel -gt 0 ]] || die "--parallel must be a positive number"
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "unknown target '$t' (targets: ${ALL_TARGETS[*]})"
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
FUZZ_DIR=$BUILD_DIR/fuzz

if [[ $build -eq 1 ]]; then
  bash "$ROOT/scripts/setup.sh" --fuzz || die "scripts/setup.sh --fuzz failed"
  export CC=${CC:-clang-14} CXX=${CXX:-clang++-14}
  command -v "$CXX" >/dev/null 2>&1 || die "$CXX not found (set CXX to a clang with libFuzzer)"
  printf 'fuzz: configuring %s with %s\n' "$BUILD_DIR" "$CXX" >&2
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEDIASYNC_FUZZ=ON \
        -DMEDIASYNC_TESTS=OFF -DMEDIASYNC_BENCH=OFF >/dev/null \
    || die "cmake configure failed for $BUILD_DIR"
  build_targets=(fuzz_make_seeds)
  for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
  printf 'fuzz: building %s\n' "${build_targets[*]}" >&2
  cmake --build "$BUILD_DIR" -j"$(nproc 2>/dev/null || echo 2)" --target "${build_targets[@]}" \
    || die "build failed in $BUILD_DIR"
fi
for t in "${targets[@]}"; do
  [[ -x $FUZZ_DIR/fuzz_$t ]] || die "$FUZZ_DIR/fuzz_$t not built (run without --no-build)"
done

# The seed generator is built with ASan too; the HEIF encoder (x265) leaks a buffer.
ASAN_OPTIONS=detect_leaks=0 "$FUZZ_DIR/fuzz_make_seeds" "$FUZZ_DIR/corpus" >&2 \
  || die "fuzz_make_seeds failed"
mkdir -p "$FUZZ_DIR/logs" "$FUZZ_DIR/crashes"

export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:allocator_may_return_null=1"
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$ROOT/fuzz/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

run_one() {
  local t=$1 log=$FUZZ_DIR/logs/$1.log
  mkdir -p "$FUZZ_DIR/corpus/live/$t"
  local flags=(-runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
               -dict="$FUZZ_DIR/corpus/$t.dict" -artifact_prefix="$FUZZ_DIR/crashes/$t-")
  [[ $max_time -gt 0 ]] && flags+=(-max_total_time="$max_time")
  # shellcheck disable=SC2206
  [[ -n ${FUZZ_FLAGS:-} ]] && flags+=($FUZZ_FLAGS)
  local start=$SECONDS status=0
  "$FUZZ_DIR/fuzz_$t" "${flags[@]}" "$FUZZ_DIR/corpus/live/$t" "$FUZZ_DIR/corpus/seeds/$t" \
    >"$log" 2>&1 || status=$?
  printf '%s %s %s\n' "$t" "$status" "$(( SECONDS - start ))" >"$FUZZ_DIR/logs/$t.status"
}

printf 'fuzz: %s runs per target%s, %s at a time: %s\n' "$runs" \
  "$([[ $max_time -gt 0 ]] && printf ', at most %s s each' "$max_time")" "$parallel" "${targets[*]}" >&2
running=0
for t in "${targets[@]}"; do
  rm -f "$FUZZ_DIR/logs/$t.status"
  printf 'fuzz: running fuzz_%s (log %s)\n' "$t" "$FUZZ_DIR/logs/$t.log" >&2
  run_one "$t" &
  running=$(( running + 1 ))
  if [[ $running -ge $parallel ]]; then
    wait -n || true
    running=$(( running - 1 ))
  fi
done
wait || true

failed=0
printf '\n%-10s %12s %10s %8s %9s %8s  %s\n' target executions exec/s seconds new-units rss-mb result
for t in "${targets[@]}"; do
  log=$FUZZ_DIR/logs/$t.log
  read -r _ status secs <"$FUZZ_DIR/logs/$t.status" || { status=99; secs=0; }
  stat_of() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  execs=$(stat_of number_of_executed_units); eps=$(stat_of average_exec_per_sec)
  units=$(stat_of new_units_added); rss=$(stat_of peak_rss_mb)
  result=ok
  if [[ $status -ne 0 ]]; then
    failed=1
    result="FAILED (exit $status): $(grep -m1 -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|FUZZ PROPERTY FAILED|Test unit written' "$log" | cut -c1-160)"
  elif [[ ${execs:-0} -lt $runs && $max_time -eq 0 ]]; then
    result="ok (stopped after ${execs:-0} executions)"
  fi
  printf '%-10s %12s %10s %8s %9s %8s  %s\n' "$t" "${execs:-?}" "${eps:-?}" "$secs" "${units:-?}" \
    "${rss:-?}" "$result"
done
if [[ $failed -ne 0 ]]; then
  printf '\nfuzz: FAILED: see the logs in %s/logs and the inputs in %s/crashes\n' "$FUZZ_DIR" "$FUZZ_DIR" >&2
  exit 1
fi
printf '\nfuzz: no crash\n' >&2
