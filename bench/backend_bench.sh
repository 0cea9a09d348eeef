#!/usr/bin/env bash
# The same syncs on SQLite and on PostgreSQL, side by side in one run.
#
# Usage: bench/backend_bench.sh [-n REPS] [-b BIN]
#   -n REPS  rounds, alternating the backends; medians are reported (default 3)
#   -b BIN   the mediasync binary (default build/mediasync, or $MEDIASYNC_BIN)
# Trees (generated under /dev/shm, so the storage engine's cost shows): 1,000 files of
# 200 KiB and 10,000 files of 100 KiB in 100 folders. Each run syncs into an empty
# library with a fresh database: a SQLite file next to it, or a fresh database on a
# private PostgreSQL 15 server this script starts (tests/pg_server.sh: unix socket,
# fsync off) and stops. Image stages are off (the trees hold no images).
set -euo pipefail

die() { printf 'backend_bench: ERROR: %s\n' "$*" >&2; exit 2; }
note() { printf 'backend_bench: %s\n' "$*" >&2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reps=3
bin=${MEDIASYNC_BIN:-$ROOT/build/mediasync}
while getopts "n:b:h" o; do
  case $o in
    n) reps=$OPTARG ;;
    b) bin=$OPTARG ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  esac
done
[[ -x $bin ]] || die "mediasync binary '$bin' not found (build first, or -b)"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "-n needs a positive number"

work=$(mktemp -d /dev/shm/backend-bench.XXXXXX)
pgdir=$(mktemp -d /tmp/backend-bench-pg.XXXXXX)
cleanup() {
  bash "$ROOT/tests/pg_server.sh" stop "$pgdir" >/dev/null 2>&1 || true
  rm -rf "$work" "$pgdir"
}
trap cleanup EXIT
rmdir "$pgdir"
pgurl=$(bash "$ROOT/tests/pg_server.sh" start "$pgdir" 2>/dev/null | tail -n 1)
[[ $pgurl == postgresql://* ]] || die "could not start PostgreSQL"
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$pgurl" -c "$1" >/dev/null; }

note "generating trees"
bash "$ROOT/bench/gen_tree.sh" "$work/A" 1000 200 1 >/dev/null
bash "$ROOT/bench/gen_tree.sh" "$work/B" 10000 100 100 >/dev/null

declare -A times=()
run() {  # tree backend
  local tree=$1 backend=$2 db
  rm -rf "$work/lib" "$work/bench.db"*
  if [[ $backend == sqlite ]]; then
    db=$work/bench.db
  else
    psql_admin "DROP DATABASE IF EXISTS bench WITH (FORCE)"
    psql_admin "CREATE DATABASE bench"
    db=${pgurl/\/postgres\?//bench?}
  fi
  local t0 t1
  t0=$(date +%s%N)
  "$bin" sync "$work/$tree" "$work/lib" --db "$db" --progress none --no-thumbnails 2>"$work/log" \
    || die "$backend sync of $tree failed: $(tail -3 "$work/log")"
  t1=$(date +%s%N)
  times[$tree.$backend]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') "
}

for ((r = 0; r < reps; r++)); do
  for tree in A B; do
    if (( r % 2 == 0 )); then run $tree sqlite; run $tree postgres; else run $tree postgres; run $tree sqlite; fi
  done
  note "round $((r + 1)): A sqlite ${times[A.sqlite]}| postgres ${times[A.postgres]}| B sqlite ${times[B.sqlite]}| postgres ${times[B.postgres]}"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "## mediasync sync on SQLite vs PostgreSQL (/dev/shm trees, $(nproc) cores, median of $reps)"
echo
echo "| tree | SQLite s | PostgreSQL s | PostgreSQL/SQLite |"
echo "|---|---:|---:|---:|"
for tree in A B; do
  s=$(median <<< "${times[$tree.sqlite]}"); p=$(median <<< "${times[$tree.postgres]}")
  label=$([[ $tree == A ]] && echo "1,000 x 200 KiB" || echo "10,000 x 100 KiB, 100 folders")
  awk -v l="$label" -v s="$s" -v p="$p" 'BEGIN { printf "| %s | %.3f | %.3f | %.2f |\n", l, s, p, p / s }'
done
