#!/usr/bin/env bash
# Benchmark of the node's watch latency: how long after a writer closes a file in a
# watched source its `sync` result row is visible in the database.
#
# Usage: bench/watch_bench.sh [-n FILES] [-D DEBOUNCES] [-d BASE] [-p POLL_MS] [-T WAIT_S] [-b BIN]
#   -n FILES      files written into the watched source per debounce setting (default 50):
#                 every 10th (the 5th, 15th, ...) is 5 MiB written in 10 chunks of 512 KiB
#                 20 ms apart through one open file, the others 4 KiB; one file every
#                 100-300 ms (fixed pseudo-random gaps, the same for every setting)
#   -D DEBOUNCES  comma list of `[node] debounce` values, one node run each: `default`
#                 (key absent: 500ms) or a duration (default: default,200ms)
#   -d BASE       the work dir (source, library, SQLite database, config, logs) is made
#                 under BASE (default /var/tmp: disk, so each commit includes its syncfs)
#   -p POLL_MS    period of the database polls (default 20)
#   -T WAIT_S     after the last write, give up waiting for missing rows after this
#                 long (default 60: more than the 30 s `settle`)
#   -b BIN        mediasync binary (default: $MEDIASYNC_BIN, else build/mediasync,
#                 built with cmake if missing)
# Per setting: a fresh work dir with a source of 5 files, a config (SQLite database in
# the work dir, `[node] http = 127.0.0.1:0`, one job `watch = true`, `interval = 0`,
# `thumbnails = false`), then `mediasync node CONFIG` in the background; the port comes
# from its log line "serving http://127.0.0.1:PORT/metrics" and GET /status is polled
# (curl, else python3) until the first run finished. Then the files are written; the
# close time of each is taken in this shell right after it closed the file ($EPOCHREALTIME:
# the writer is this shell, so the close that ends the writing is its own). A background
# loop runs `sqlite3` every POLL_MS on the database and takes the time each path's
# file_results row (stage 'sync', status 'ok') is first seen. latency = seen - close
# (resolution: one poll period plus one sqlite3 query). After every file was seen, and
# debounce + 2 s more, each path must have exactly one such row with the size written
# (a row seen before the close, or with another size, would be a file ingested
# half-written). The node is stopped with SIGTERM and must exit 0.
# Prints a markdown table; exits 1 if a file was never ingested, ingested twice or
# half-written, or the node failed; 2 on usage or setup errors. Removes what it made.
set -euo pipefail
export LC_ALL=C  # $EPOCHREALTIME and awk numbers with a decimal point

die() { printf 'watch_bench: ERROR: %s\n' "$*" >&2; exit 2; }
note() { printf 'watch_bench: %s\n' "$*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE=$(printf '%q ' "$0" "$@"); CMDLINE=${CMDLINE% }

nfiles=50
debounces_arg=default,200ms
base=/var/tmp
poll_ms=20
wait_s=60
BIN=${MEDIASYNC_BIN:-}
while getopts ':n:D:d:p:T:b:h' opt; do
  case $opt in
    n) nfiles=$OPTARG ;;
    D) debounces_arg=$OPTARG ;;
    d) base=$OPTARG ;;
    p) poll_ms=$OPTARG ;;
    T) wait_s=$OPTARG ;;
    b) BIN=$OPTARG ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see -h)" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || die "unexpected argument '$1' (see -h)"
[[ $nfiles =~ ^[1-9][0-9]{0,3}$ ]] || die "-n must be an integer 1..9999, got '$nfiles'"
[[ $poll_ms =~ ^[1-9][0-9]*$ ]] || die "-p must be a positive integer (ms), got '$poll_ms'"
[[ $wait_s =~ ^[1-9][0-9]*$ ]] || die "-T must be a positive integer (s), got '$wait_s'"
IFS=, read -r -a debounces <<< "$debounces_arg"
[[ ${#debounces[@]} -gt 0 ]] || die "no debounce setting given"
for d in "${debounces[@]}"; do
  [[ $d == default || $d =~ ^[0-9]+(ms|s)?$ ]] \
    || die "unknown debounce '$d' (expected default, N, Nms or Ns)"
done
[[ -d $base && -w $base ]] || die "$base is missing or not writable"

# debounce_ms SETTING -> milliseconds (a bare number is ms, as in the config)
debounce_ms() {
  case $1 in
    default) echo 500 ;;
    *ms) echo "${1%ms}" ;;
    *s) echo $(( ${1%s} * 1000 )) ;;
    *) echo "$1" ;;
  esac
}

# Tools.
if [[ -z $BIN ]]; then
  BIN=$ROOT/build/mediasync
  if [[ ! -x $BIN ]]; then
    note "building $BIN (cmake -S . -B build && cmake --build build --target mediasync -j2)"
    (cd "$ROOT" && cmake -S . -B build >&2 && cmake --build build --target mediasync -j2 >&2) \
      || die "building mediasync failed"
  fi
fi
[[ $BIN == */* ]] || BIN=$(command -v -- "$BIN" || echo "$BIN")
[[ -x $BIN && -f $BIN ]] || die "mediasync binary not found or not executable: $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 not found (scripts/setup.sh installs it)"
for c in head awk sort date sleep; do
  command -v "$c" >/dev/null 2>&1 || die "'$c' not found"
done
# python3 comes with libvips-tools (scripts/setup.sh); curl is used when present.
PY=$(command -v /usr/bin/python3 || command -v python3 || true)
[[ -n $PY ]] || die "python3 not found (a dependency of libvips-tools: run scripts/setup.sh)"
HAVE_CURL=0
command -v curl >/dev/null 2>&1 && HAVE_CURL=1

# State of the current setting, for cleanup.
work=""
node_pid=""
poll_pid=""
cleanup() {
  if [[ -n $poll_pid ]]; then kill "$poll_pid" 2>/dev/null || true; wait "$poll_pid" 2>/dev/null || true; fi
  if [[ -n $node_pid ]]; then
    kill -KILL "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  poll_pid="" node_pid=""
  if [[ -n $work && -d $work ]]; then rm -rf -- "$work"; fi
  work=""
  return 0
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM

# http_get URL -> body on stdout
http_get() {
  if [[ $HAVE_CURL -eq 1 ]]; then
    curl -fsS --max-time 5 --noproxy '*' "$1"
  else
    "$PY" -c 'import sys, urllib.request as u
o = u.build_opener(u.ProxyHandler({}))
sys.stdout.write(o.open(sys.argv[1], timeout=5).read().decode())' "$1"
  fi
}

# job_state URL JOB -> "RUNS STATE PENDING LAST_STATUS" from GET /status
job_state() {
  http_get "$1/status" | "$PY" -c 'import json, sys
d = json.load(sys.stdin)
j = next(j for j in d["jobs"] if j["name"] == sys.argv[1])
print(j["runs"], j["state"], j.get("pending_files", 0), (j.get("last") or {}).get("status", "none"))' "$2"
}

now() { printf '%s' "$EPOCHREALTIME"; }
# alive PID: the process exists and is not a zombie (kill -0 succeeds on a zombie)
alive() {
  local st
  st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# Background poller: every POLL_MS one sqlite3 query; appends "PATH SEEN_EPOCH" the first
# time a path has a sync/ok row, and its poll count to $work/polls at the end.
poller() {
  local -A seen=()
  local out p t t0=$EPOCHREALTIME n=0 period
  period=$(awk -v p="$poll_ms" 'BEGIN { printf "%.3f", p / 1000 }')
  while [[ ! -e $work/stop-poll ]]; do
    if out=$(sqlite3 -batch -noheader -cmd '.timeout 2000' "$db" \
        "SELECT path FROM file_results WHERE stage = 'sync' AND status = 'ok' AND path GLOB 'w[0-9]*';" \
        2>>"$work/poll.err"); then
      t=$EPOCHREALTIME
      n=$((n + 1))
      while IFS= read -r p; do
        [[ -n $p && -z ${seen[$p]:-} ]] || continue
        seen[$p]=1
        printf '%s %s\n' "$p" "$t" >>"$work/seen"
      done <<< "$out"
    fi
    sleep "$period"
  done
  # polls and their mean period in ms
  awk -v n="$n" -v t0="$t0" -v t1="$EPOCHREALTIME" \
    'BEGIN { printf "%d %.0f\n", n, n ? (t1 - t0) * 1000 / n : 0 }' >"$work/polls"
}

# Fixed gaps (ms) between files: the same for every setting.
RANDOM=4242
gaps=()
for ((i = 0; i < nfiles; i++)); do gaps+=($((100 + RANDOM % 201))); done

# Header (markdown: the backticks are literal).
# shellcheck disable=SC2016
{
  printf '# mediasync node watch latency\n\n'
  printf -- '- command: `%s`\n' "$CMDLINE"
  printf -- '- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  printf -- '- nproc: %s; load average: %s; kernel: %s\n' "$(nproc)" \
    "$(awk '{ print $1, $2, $3 }' /proc/loadavg)" "$(uname -srm)"
  ver=$("$BIN" --version 2>/dev/null </dev/null) && ver=$(awk 'NR == 1' <<< "$ver") || ver=""
  printf -- '- mediasync: `%s`%s\n' "$BIN" "${ver:+ ($ver)}"
  printf -- '- work dir under %s (%s); %s files per setting, every 10th 5 MiB (10 x 512 KiB, 20 ms apart), the others 4 KiB, 100-300 ms apart; database polled every %s ms\n' \
    "$base" "$(df --output=fstype "$base" | awk 'NR == 2')" "$nfiles" "$poll_ms"
}

declare -a rows=()
failed=0
for setting in "${debounces[@]}"; do
  dms=$(debounce_ms "$setting")
  work=$(mktemp -d "$base/mediasync-watch-bench.XXXXXX") || die "cannot create a work dir under $base"
  src=$work/src dst=$work/library db=$work/bench.db cfg=$work/node.ini log=$work/node.log
  mkdir -- "$src" "$dst"
  for i in 1 2 3 4 5; do head -c 4096 /dev/urandom >"$src/initial_$i.bin"; done
  {
    printf '[storage]\ndb = %s\n\n[node]\nhttp = 127.0.0.1:0\n' "$db"
    [[ $setting == default ]] || printf 'debounce = %s\n' "$setting"
    printf '\n[log]\nprogress = none\n'
    printf '\n[job w]\nsource = %s\ndest = %s\nwatch = true\ninterval = 0\nthumbnails = false\n' "$src" "$dst"
  } >"$cfg"

  note "[debounce $setting] starting the node"
  : >"$log"
  "$BIN" node "$cfg" >"$work/node.out" 2>"$log" </dev/null &
  node_pid=$!
  url=""
  for ((k = 0; k < 300; k++)); do
    if [[ $(sed -n 's|.*serving \(http://127\.0\.0\.1:[0-9]*\)/metrics.*|\1|p' "$log") =~ ^http://127\.0\.0\.1:[0-9]+$ ]]; then
      url=${BASH_REMATCH[0]}
      break
    fi
    alive "$node_pid" || { tail -n 20 "$log" >&2; die "the node exited at start"; }
    sleep 0.05
  done
  [[ -n $url ]] || { tail -n 20 "$log" >&2; die "no 'serving http://127.0.0.1:PORT/metrics' line in the node's log"; }
  # First run: the 5 initial files.
  state=""
  for ((k = 0; k < 600; k++)); do
    state=$(job_state "$url" w 2>/dev/null) || state=""
    read -r runs st _ last <<< "${state:-0 none 0 none}"
    [[ $runs -ge 1 && $st == idle ]] && break
    sleep 0.05
  done
  [[ $runs -ge 1 && $st == idle ]] || { tail -n 20 "$log" >&2; die "the node's first run did not finish in 30 s (status: $state)"; }
  [[ $last == completed ]] || { tail -n 20 "$log" >&2; die "the node's first run ended $last"; }
  note "[debounce $setting] first run done ($url); writing $nfiles files"

  : >"$work/seen"
  poller &
  poll_pid=$!
  sleep 0.2  # the poller's first query

  # Writes. writes: "PATH SIZE CLOSE_EPOCH"
  : >"$work/writes"
  for ((i = 0; i < nfiles; i++)); do
    if ((i % 10 == 4)); then
      name=$(printf 'w%04d_5m.bin' "$i") size=$((5 * 1024 * 1024))
      exec {fd}>"$src/$name"
      for ((c = 0; c < 10; c++)); do
        head -c 524288 /dev/urandom >&"$fd"
        ((c < 9)) && sleep 0.02
      done
      exec {fd}>&-
      t=$EPOCHREALTIME
    else
      name=$(printf 'w%04d_4k.bin' "$i") size=4096
      exec {fd}>"$src/$name"
      head -c 4096 /dev/urandom >&"$fd"
      exec {fd}>&-
      t=$EPOCHREALTIME
    fi
    printf '%s %s %s\n' "$name" "$size" "$t" >>"$work/writes"
    sleep "$(awk -v g="${gaps[$i]}" 'BEGIN { printf "%.3f", g / 1000 }')"
  done
  last_close=$t

  # Wait for every file's row (or the deadline), then debounce + 2 s for late duplicates.
  deadline=$(awk -v t="$last_close" -v w="$wait_s" 'BEGIN { printf "%.6f", t + w }')
  while (( $(wc -l <"$work/seen") < nfiles )); do
    awk -v a="$(now)" -v b="$deadline" 'BEGIN { exit !(a > b) }' && break
    sleep 0.1
  done
  sleep "$(awk -v d="$dms" 'BEGIN { printf "%.3f", d / 1000 + 2 }')"
  state=$(job_state "$url" w 2>/dev/null) || state="? ? ? ?"
  read -r runs st pending last <<< "$state"
  touch "$work/stop-poll"
  wait "$poll_pid" || true
  poll_pid=""
  read -r polls poll_period < "$work/polls" || { polls=0 poll_period=0; }

  # Rows: "PATH COUNT SIZE" for every sync/ok path; watch runs = sync_jobs rows after the first.
  sqlite3 -batch -noheader -separator ' ' -cmd '.timeout 5000' "$db" \
    "SELECT path, COUNT(*), MAX(size), MIN(size) FROM file_results WHERE stage = 'sync' AND status = 'ok' GROUP BY path;" \
    >"$work/rows" || die "cannot read $db"
  watch_runs=$(sqlite3 -batch -noheader -cmd '.timeout 5000' "$db" "SELECT COUNT(*) - 1 FROM sync_jobs;")
  not_ok=$(sqlite3 -batch -noheader -cmd '.timeout 5000' "$db" \
    "SELECT COUNT(*) FROM file_results WHERE stage = 'sync' AND status <> 'ok';")

  # Stop the node: SIGTERM, exit code 0 expected.
  kill -TERM "$node_pid"
  rc=""
  for ((k = 0; k < 300; k++)); do
    alive "$node_pid" || { rc=0; wait "$node_pid" || rc=$?; break; }
    sleep 0.1
  done
  if [[ -z $rc ]]; then
    note "[debounce $setting] ERROR: the node did not exit within 30 s of SIGTERM"
    rc=timeout
  fi
  node_pid=""

  # Checks, then latencies. lat: "LATENCY SIZE" per file seen.
  checks=$(awk '
    FILENAME == ARGV[1] { size[$1] = $2; close_t[$1] = $3; order[++n] = $1; next }
    FILENAME == ARGV[2] { seen[$1] = $2; next }
    { cnt[$1] = $2; maxs[$1] = $3; mins[$1] = $4 }
    END {
      once = missing = twice = half = 0
      for (i = 1; i <= n; i++) {
        p = order[i]
        if (!(p in cnt) || !(p in seen)) { missing++; bad = bad " never:" p; continue }
        if (cnt[p] == 1) once++; else { twice++; bad = bad " rows=" cnt[p] ":" p }
        l = seen[p] - close_t[p]
        if (maxs[p] != size[p] || mins[p] != size[p] || l < 0) { half++; bad = bad " half-written:" p }
        printf "%.6f %d\n", l, size[p] > "/dev/stderr"
      }
      for (p in cnt) if (p !~ /^w[0-9]/ && cnt[p] != 1) { twice++; bad = bad " rows=" cnt[p] ":" p }
      printf "%d %d %d %d %s\n", once, missing, twice, half, (bad == "" ? "-" : bad)
    }' "$work/writes" "$work/seen" "$work/rows" 2>"$work/lat")
  read -r once missing twice half bad <<< "$checks"
  # stats FILE -> "N MIN MEDIAN P90 MAX" of its first column (p90: nearest rank)
  stats() {
    sort -n "$1" | awk '{ a[NR] = $1 }
      END {
        if (NR == 0) { print "0 n/a n/a n/a n/a"; exit }
        med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        r = int(NR * 0.9); if (r < NR * 0.9) r++
        printf "%d %.3f %.3f %.3f %.3f\n", NR, a[1], med, a[r], a[NR]
      }'
  }
  read -r nlat lmin lmed lp90 lmax <<< "$(stats "$work/lat")"
  awk '$2 > 4096' "$work/lat" >"$work/lat-big"
  read -r _ _ lbig _ _ <<< "$(stats "$work/lat-big")"
  ok=1
  if ((missing + twice + half > 0)); then ok=0; note "[debounce $setting] ERROR:$bad"; fi
  if [[ $not_ok -ne 0 ]]; then ok=0; note "[debounce $setting] ERROR: $not_ok sync rows not ok"; fi
  if [[ $rc != 0 ]]; then ok=0; note "[debounce $setting] ERROR: the node exited with status $rc after SIGTERM (expected 0)"; tail -n 20 "$log" >&2; fi
  [[ $st == idle && $pending == 0 ]] || note "[debounce $setting] warning: at the end the job was $st with $pending pending file(s)"
  [[ -s $work/poll.err ]] && note "[debounce $setting] warning: some polls failed: $(sort -u "$work/poll.err" | head -n 3 | tr '\n' ' ')"
  ((ok)) || failed=1
  note "[debounce $setting] $nlat/$nfiles seen; median ${lmed}s p90 ${lp90}s max ${lmax}s; $watch_runs watch runs; $polls polls (one per $poll_period ms); node exit $rc"
  label=$([[ $setting == default ]] && echo "500ms (default)" || echo "$setting")
  over=$(awk -v m="$lmed" -v d="$dms" 'BEGIN { if (m == "n/a") print m; else printf "%.3f", m - d / 1000 }')
  rows+=("$(printf '| %s | %s | %s/%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' \
    "$label" "$nfiles" "$once" "$nfiles" "$missing" "$twice" "$half" "$watch_runs" \
    "$lmin" "$lmed" "$lp90" "$lmax" "$lbig" "$over" "$poll_period")")
  rm -rf -- "$work"
  work=""
done

printf '\n| debounce | files | ingested once | never | twice | half-written | watch runs | min s | median s | p90 s | max s | 5 MiB files median s | median - debounce s | poll period ms |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
printf '%s\n' "${rows[@]}"
printf '\nlatency = first poll that saw the file'"'"'s sync/ok row - the writer'"'"'s close(); resolution: one poll period (asked: %s ms; measured: last column, sqlite3 start-up included). The node exited 0 on SIGTERM in every setting unless an ERROR says otherwise.\n' "$poll_ms"
if ((failed)); then
  note "FAILED: a file was never ingested, ingested twice or half-written, or the node failed"
  exit 1
fi
