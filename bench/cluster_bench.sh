#!/usr/bin/env bash
# Benchmark of a CPU-bound stage (processing: metadata + 256 and 1024 px thumbnails) on
# the coordinator alone against the coordinator plus one worker node, each pinned to
# its own core, in the same run.
#
# Usage: bench/cluster_bench.sh [-n REPS] [-c COUNT] [-p PHOTOS] [-d DIR]
#   -n REPS    rounds (default 3); each round runs A and B once, the order alternating
#              (A B, B A, A B, ...); medians are reported
#   -c COUNT   photos (default 120): JPEGs (Q 90) of 6, 8 and 12 MP (3000x2000,
#              3456x2304, 4000x3000 in turn) cropped at varying offsets from the
#              4096x4096 GNOME backgrounds (/usr/share/backgrounds/gnome/*.webp, package
#              gnome-backgrounds) with the `vips` CLI, made once into PHOTOS and reused
#   -p PHOTOS  photo folder (default /var/tmp/mediasync-bench/cluster-photos-COUNT)
#   -d DIR     where the work dirs go (database, library, logs; default /dev/shm)
# Binary: $MEDIASYNC_BIN, default build/mediasync.
# Each run starts from a fresh SQLite database and an empty library and runs
# `mediasync run CONFIG` on one job over the photos with
#   [stages] sync-workers = 1, processing-workers = 1, watermark = false
#   A  the coordinator alone: `taskset -c 0 mediasync run a.ini` (no [cluster]);
#   B  `taskset -c 0 mediasync run b.ini` with [cluster] listen = 127.0.0.1:0 (the port
#      is read from its log), ca/cert/key, node-name = coord, wait-for-nodes = 1; as soon
#      as it listens, `taskset -c 1 mediasync worker --join 127.0.0.1:PORT --workers 1`
#      (node-name node1: 1 sync, 1 processing, 1 watermark worker) joins; the worker is
#      stopped with SIGTERM once the coordinator has exited (and must exit 0).
# The time of a run is the coordinator's wall time (start to exit; for B including the
# wait for the node to join, reported apart too). Every run must exit 0 with COUNT ok
# rows of each stage and COUNT 1024 px thumbnails. Prints the rounds, the medians, the
# speed-up (median A / median B; also by CPU time: A's CPU over the CPU of B's busier
# process, which is what B would take with each core to itself) and, per B run, the rows
# each node did
# (SELECT node, count(*) FROM file_results WHERE stage = ... GROUP BY node).
set -euo pipefail

die() { printf 'cluster_bench: ERROR: %s\n' "$*" >&2; exit 2; }
note() { printf 'cluster_bench: %s\n' "$*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reps=3
count=120
photos=""
base=/dev/shm
while getopts ':n:c:p:d:h' opt; do
  case $opt in
    n) reps=$OPTARG ;;
    c) count=$OPTARG ;;
    p) photos=$OPTARG ;;
    d) base=$OPTARG ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see -h)" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || die "unexpected argument '$1' (see -h)"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer, got '$reps'"
[[ $count =~ ^[1-9][0-9]*$ ]] || die "-c must be a positive integer, got '$count'"
[[ -n $photos ]] || photos=/var/tmp/mediasync-bench/cluster-photos-$count
bin=${MEDIASYNC_BIN:-$ROOT/build/mediasync}
[[ -x $bin ]] || die "mediasync binary '$bin' not found (build first or set MEDIASYNC_BIN)"
for c in vips vipsheader taskset sqlite3 openssl /usr/bin/time; do
  command -v "$c" >/dev/null || die "$c not found"
done
(( $(nproc) >= 2 )) || die "needs 2 cores (taskset -c 0 and -c 1)"

work=$(mktemp -d "$base/cluster-bench.XXXXXX")
worker_pid=""
coord_pid=""  # /usr/bin/time running the coordinator (its child is mediasync)
cleanup() {
  if [[ -n $coord_pid ]]; then
    kill -TERM $(cat "/proc/$coord_pid/task/"*/children 2>/dev/null) 2>/dev/null || true
    wait "$coord_pid" 2>/dev/null || true
  fi
  if [[ -n $worker_pid ]]; then
    kill -TERM "$worker_pid" 2>/dev/null || true
    wait "$worker_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# -- photos ---------------------------------------------------------------------------
mkdir -p "$photos"
mapfile -t srcs < <(find /usr/share/backgrounds/gnome -maxdepth 1 -name '*.webp' -size +100k | sort)
(( ${#srcs[@]} > 0 )) || die "no GNOME backgrounds in /usr/share/backgrounds/gnome (apt-get install gnome-backgrounds)"
sizes=("3000 2000" "3456 2304" "4000 3000")
made=0
for ((i = 0; i < count; i++)); do
  out=$photos/photo-$(printf '%04d' "$i").jpg
  [[ -s $out ]] && continue
  src=${srcs[i % ${#srcs[@]}]}
  read -r w h <<< "${sizes[i % 3]}"
  sw=$(vipsheader -f width "$src"); sh=$(vipsheader -f height "$src")
  k=$((i / ${#srcs[@]}))
  left=$(( (k * 97) % (sw - w + 1) )); top=$(( (k * 131) % (sh - h + 1) ))
  vips crop "$src" "$out[Q=90]" "$left" "$top" "$w" "$h" || die "vips crop failed on $src"
  made=$((made + 1))
done
(( made == 0 )) || note "made $made photos in $photos (reused by later runs)"
files=$(find "$photos" -maxdepth 1 -name '*.jpg' | wc -l)
(( files == count )) || die "expected $count photos (*.jpg) in $photos, found $files: use another -p"
note "$count photos, $(du -sh "$photos" | cut -f1); warming the page cache"
cat "$photos"/*.jpg > /dev/null

bash "$ROOT/scripts/cluster-certs.sh" "$work/certs" coord node1 > /dev/null \
  || die "cannot make certificates"

# -- one run ----------------------------------------------------------------------------
write_config() {  # kind(A|B) dir
  local kind=$1 d=$2
  {
    printf '[storage]\ndb = %s/media.db\n' "$d"
    printf '[stages]\nsync-workers = 1\nprocessing-workers = 1\nwatermark = false\n'
    printf '[log]\nprogress = none\n'
    if [[ $kind == B ]]; then
      printf '[cluster]\nlisten = 127.0.0.1:0\nca = %s\ncert = %s\nkey = %s\n' \
        "$work/certs/ca.pem" "$work/certs/coord.pem" "$work/certs/coord.key"
      printf 'node-name = coord\nwait-for-nodes = 1\nwait-timeout = 30s\n'
    else
      printf '[cluster]\nnode-name = coord\n'
    fi
    printf '[job photos]\nsource = %s\ndest = %s/library\n' "$photos" "$d"
  } > "$d/run.ini"
}

# Seconds between two log timestamps (2026-11-28T16:09:55.182).
log_secs() { date -d "${1/T/ }" +%s.%N; }

declare -A wall=() cpuc=() cpuw=() crit=() extra=()
rows_report=""
run_one() {  # kind round
  local kind=$1 round=$2 d=$work/$1-$2 load0
  load0=$(cut -d' ' -f1 /proc/loadavg)
  rm -rf "$d"; mkdir -p "$d"
  write_config "$kind" "$d"
  local e u s wu="" ws="" join=0
  if [[ $kind == A ]]; then
    /usr/bin/time -f '%e %U %S' -o "$d/time" taskset -c 0 "$bin" run "$d/run.ini" > "$d/coord.out" 2> "$d/coord.log" \
      || die "run A failed: $(tail -3 "$d/coord.log")"
  else
    /usr/bin/time -f '%e %U %S' -o "$d/time" taskset -c 0 "$bin" run "$d/run.ini" > "$d/coord.out" 2> "$d/coord.log" &
    local coord=$!
    coord_pid=$coord
    local port="" t
    for ((t = 0; t < 3000; t++)); do
      port=$(sed -n 's/.*accepting worker nodes on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$d/coord.log")
      [[ -n $port ]] && break
      kill -0 "$coord" 2>/dev/null || break
      sleep 0.01
    done
    [[ -n $port ]] || { wait "$coord" || true; die "coordinator did not listen: $(tail -3 "$d/coord.log")"; }
    # taskset execs: $! is the worker itself (its CPU time is read from /proc before it stops).
    taskset -c 1 "$bin" worker --join "127.0.0.1:$port" \
      --ca "$work/certs/ca.pem" --cert "$work/certs/node1.pem" --key "$work/certs/node1.key" \
      --node-name node1 --workers 1 > "$d/worker.out" 2> "$d/worker.log" &
    worker_pid=$!
    local rc=0
    wait "$coord" || rc=$?
    coord_pid=""
    (( rc == 0 )) || die "run B failed: $(tail -3 "$d/coord.log")"
    read -r wu ws < <(awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f %.2f\n", $12 / hz, $13 / hz }' "/proc/$worker_pid/stat")
    kill -TERM "$worker_pid"
    wait "$worker_pid" || die "worker node did not exit 0: $(tail -3 "$d/worker.log")"
    worker_pid=""
    local t_listen t_joined
    t_listen=$(awk '/accepting worker nodes/ { print $1; exit }' "$d/coord.log")
    t_joined=$(awk '/cluster: node node1 joined/ { print $1; exit }' "$d/coord.log")
    [[ -n $t_joined ]] || die "node1 never joined: $(tail -3 "$d/coord.log")"
    join=$(awk -v a="$(log_secs "$t_listen")" -v b="$(log_secs "$t_joined")" 'BEGIN { printf "%.3f", b - a }')
  fi
  read -r e u s < <(tail -n 1 "$d/time")
  # Every file done once per stage, all ok; every 1024 px thumbnail there.
  local ok
  for st in sync processing; do
    ok=$(sqlite3 "$d/media.db" "SELECT count(*) FROM file_results WHERE stage = '$st' AND status = 'ok'")
    (( ok == count )) || die "run $kind: $ok of $count $st rows ok"
  done
  ok=$(find "$d/library/.thumbnails/1024" -name '*.jpg' | wc -l)
  (( ok == count )) || die "run $kind: $ok of $count 1024 px thumbnails"
  local cc cw
  cc=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
  cw=$(awk -v a="$wu" -v b="$ws" 'BEGIN { printf "%.2f", a + b }')
  wall[$kind]+="$e "
  cpuc[$kind]+="$cc "
  cpuw[$kind]+="$cw "
  # The busier process's CPU time: the wall time each would take with a core to itself.
  crit[$kind]+="$(awk -v a="$cc" -v b="$cw" 'BEGIN { printf "%.2f", (a > b) ? a : b }') "
  local by_node
  by_node=$(for st in processing sync; do
    printf '%s: %s; ' "$st" "$(sqlite3 -separator ' ' "$d/media.db" \
      "SELECT coalesce(node, 'NULL'), count(*) FROM file_results WHERE stage = '$st' GROUP BY node ORDER BY node" \
      | paste -sd, | sed 's/,/, /g')"
  done)
  if [[ $kind == B ]]; then
    extra[B]+="$join "
    wall[Bnet]+="$(awk -v e="$e" -v j="$join" 'BEGIN { printf "%.3f", e - j }') "
    rows_report+="round $round B: ${by_node%; }; node joined ${join} s after the coordinator listened"$'\n'
  fi
  note "round $round $kind (load $load0): wall $e s, CPU coordinator $cc s${wu:+, worker node $cw s}; rows by node: ${by_node%; }"
  rm -rf "$d/library"
}

note "binary $bin ($(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 0; r < reps; r++)); do
  if (( r % 2 == 0 )); then run_one A $((r + 1)); run_one B $((r + 1))
  else run_one B $((r + 1)); run_one A $((r + 1)); fi
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
note "load average now: $load_end"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ma=$(median <<< "${wall[A]}"); mb=$(median <<< "${wall[B]}")
mj=$(median <<< "${extra[B]}"); mn=$(median <<< "${wall[Bnet]}")
ka=$(median <<< "${crit[A]}"); kb=$(median <<< "${crit[B]}")
echo "## cluster bench: $count photos (6-12 MP JPEG), sync + processing stages, median of $reps (load average at the end: $load_end)"
echo
echo "| run | wall s (rounds) | median wall s | images/s | CPU s coordinator | CPU s worker node |"
echo "|---|---|---:|---:|---:|---:|"
for k in A B; do
  label="A: coordinator alone, core 0"
  [[ $k == B ]] && label="B: coordinator core 0 + worker node core 1"
  awk -v l="$label" -v t="$(median <<< "${wall[$k]}")" -v n="$count" -v r="${wall[$k]% }" \
      -v c="$(median <<< "${cpuc[$k]}")" -v w="$(median <<< "${cpuw[$k]}")" \
    'BEGIN { printf "| %s | %s | %.2f | %.1f | %.2f | %s |\n", l, r, t, n / t, c, (w > 0 ? sprintf("%.2f", w) : "-") }'
done
echo
awk -v a="$ma" -v b="$mb" -v j="$mj" -v n="$mn" -v ka="$ka" -v kb="$kb" 'BEGIN {
  printf "speed-up B/A (median wall A / median wall B): %.2fx\n", a / b
  printf "  B minus the wait for the node to join (median join %.2f s, median B - join %.2f s): %.2fx\n", j, n, a / n
  printf "  by CPU time (A CPU / B busier process CPU, medians %.2f / %.2f s): %.2fx\n", ka, kb, ka / kb }'
echo
printf '%s' "$rows_report"
