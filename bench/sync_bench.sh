#!/usr/bin/env bash
# Side-by-side benchmark: `mediasync sync` vs `cp -r` vs `rsync -a`.
#
# Usage: bench/sync_bench.sh [-n REPS] [-w WARMUP] [-s SETTINGS] [-t TREES] [-b BIN]
#   -n REPS      repetitions per tool and tree; the median is reported (default 5)
#   -s SETTINGS  comma list of: tmpfs (source and destination under /dev/shm),
#                disk (under /var/tmp; every command is followed by `sync`, so the
#                time is until the data is durable). Default: tmpfs,disk
#   -t TREES     comma list of: A (1,000 files x 200 KiB, 1 folder),
#                B (10,000 files x 100 KiB in 100 folders), or NFILES:KIB:NDIRS.
#                Default: A,B
#   -w WARMUP    untimed warm-up rounds per tree before the timed ones (default 1)
#   -b BIN       mediasync binary (default: $MEDIASYNC_BIN, else build/mediasync)
# Each repetition runs the three commands in an order that rotates from one
# repetition to the next; before each command (untimed) its destination and the
# database are removed (and, on disk, `sync` flushes the removal). Wall time
# comes from `date +%s%N`, peak RSS from `/usr/bin/time -f %M` (KiB). Prints one
# markdown table per setting and removes everything it created.
set -euo pipefail

die() { printf 'sync_bench: ERROR: %s\n' "$*" >&2; exit 2; }
note() { printf 'sync_bench: %s\n' "$*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE=$(printf '%q ' "$0" "$@"); CMDLINE=${CMDLINE% }

reps=5
warmup=1
settings_arg=tmpfs,disk
trees_arg=A,B
BIN=${MEDIASYNC_BIN:-$ROOT/build/mediasync}
while getopts ':n:w:s:t:b:h' opt; do
  case $opt in
    n) reps=$OPTARG ;;
    w) warmup=$OPTARG ;;
    s) settings_arg=$OPTARG ;;
    t) trees_arg=$OPTARG ;;
    b) BIN=$OPTARG ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see -h)" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || die "unexpected argument '$1' (see -h)"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer, got '$reps'"
[[ $warmup =~ ^[0-9]+$ ]] || die "-w must be a non-negative integer, got '$warmup'"
warmup=$((10#$warmup))

IFS=, read -r -a settings <<< "$settings_arg"
for s in "${settings[@]}"; do
  [[ $s == tmpfs || $s == disk ]] || die "unknown setting '$s' (expected tmpfs or disk)"
done
[[ ${#settings[@]} -gt 0 ]] || die "no setting given"

# Trees: name -> "NFILES KIB NDIRS".
declare -A tree_spec=()
trees=()
IFS=, read -r -a tree_args <<< "$trees_arg"
for t in "${tree_args[@]}"; do
  case $t in
    A) tree_spec[A]="1000 200 1" ;;
    B) tree_spec[B]="10000 100 100" ;;
    *)
      [[ $t =~ ^([0-9]+):([0-9]+):([1-9][0-9]*)$ ]] \
        || die "unknown tree '$t' (expected A, B or NFILES:KIB:NDIRS)"
      tree_spec[$t]="${BASH_REMATCH[1]} ${BASH_REMATCH[2]} ${BASH_REMATCH[3]}" ;;
  esac
  trees+=("$t")
done
[[ ${#trees[@]} -gt 0 ]] || die "no tree given"

# Tools and requirements.
[[ $BIN == */* ]] || BIN=$(command -v -- "$BIN" || echo "$BIN")
[[ -x $BIN && -f $BIN ]] \
  || die "mediasync binary not found or not executable: $BIN (build it with scripts/build.sh, or set MEDIASYNC_BIN / -b)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found: install the Debian package 'time' (scripts/setup.sh)"
for c in cp rsync sync date find awk sort; do
  command -v "$c" >/dev/null 2>&1 || die "'$c' not found (scripts/setup.sh installs rsync)"
done
GEN=$ROOT/bench/gen_tree.sh
[[ -f $GEN ]] || die "missing $GEN"

tools=(mediasync cp rsync)

# Everything created goes under these work dirs; removed on any exit.
workdirs=()
cleanup() {
  local d
  for d in "${workdirs[@]+"${workdirs[@]}"}"; do
    [[ -n $d && -d $d ]] && rm -rf -- "$d"
  done
  return 0
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM

# run_tool TOOL SRC DST DB SETTING -> sets last_ns, last_rss; dies on failure.
run_tool() {
  local tool=$1 src=$2 dst=$3 db=$4 setting=$5 start end rc=0
  local -a cmd
  case $tool in
    mediasync) cmd=("$BIN" sync "$src" "$dst" --db "$db" --progress none) ;;
    cp)        cmd=(cp -r "$src/." "$dst") ;;
    rsync)     cmd=(rsync -a "$src/" "$dst/") ;;
  esac
  start=$(date +%s%N)
  /usr/bin/time -f %M -o "$rss_file" "${cmd[@]}" >"$log_file" 2>&1 || rc=$?
  [[ $setting == disk ]] && sync
  end=$(date +%s%N)
  if [[ $rc -ne 0 ]]; then
    printf 'sync_bench: command failed with exit status %s: %s\n--- output (last 40 lines) ---\n' \
      "$rc" "${cmd[*]}" >&2
    tail -n 40 "$log_file" >&2 || true
    die "$tool failed; aborting"
  fi
  last_ns=$((end - start))
  last_rss=$(tail -n 1 "$rss_file")
  [[ $last_rss =~ ^[0-9]+$ ]] || die "could not read peak RSS from /usr/bin/time output: '$last_rss'"
}

# median NS... -> seconds with 3 decimals
median_s() {
  printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 }
    END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.3f", m / 1e9 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

# Header (markdown: the backticks are literal).
# shellcheck disable=SC2016
{
  printf '# mediasync sync benchmark\n\n'
  printf -- '- command: `%s`\n' "$CMDLINE"
  printf -- '- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  printf -- '- nproc: %s; kernel: %s\n' "$(nproc)" "$(uname -srm)"
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
  [[ -n $cpu ]] && printf -- '- cpu: %s\n' "$cpu"
  printf -- '- memory: %s\n' "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  ver=$("$BIN" --version 2>/dev/null </dev/null) && ver=$(awk 'NR == 1' <<< "$ver") || ver=""
  printf -- '- mediasync: `%s`%s\n' "$BIN" "${ver:+ ($ver)}"
  printf -- '- cp: %s; rsync: %s\n' "$(cp --version | awk 'NR == 1')" "$(rsync --version | awk 'NR == 1')"
  printf -- '- repetitions: %s per tool and tree, median reported, after %s untimed warm-up round(s); order rotates each repetition\n' "$reps" "$warmup"
  printf -- '- commands (each starts from an empty destination and no database):\n'
  printf -- '  - mediasync: `%s sync SRC DST --db WORK/bench.db --progress none`\n' "$BIN"
  printf -- '  - cp: `cp -r SRC/. DST`\n'
  printf -- '  - rsync: `rsync -a SRC/ DST/`\n'
  printf -- '  - disk setting: each command is followed by `sync` inside the timed interval\n'
}

declare -A times=() peak=()
for setting in "${settings[@]}"; do
  case $setting in
    tmpfs) base=/dev/shm ;;
    disk)  base=/var/tmp ;;
  esac
  [[ -d $base && -w $base ]] || die "$base is missing or not writable"
  fstype=$(df --output=fstype "$base" | awk 'NR == 2')
  [[ $setting == tmpfs && $fstype != tmpfs ]] && note "warning: $base is $fstype, not tmpfs"

  work=$(mktemp -d "$base/mediasync-bench.XXXXXX") || die "cannot create a work dir under $base"
  workdirs+=("$work")
  rss_file=$work/time.out
  log_file=$work/cmd.log
  db=$work/bench.db

  for tree in "${trees[@]}"; do
    read -r nfiles kib ndirs <<< "${tree_spec[$tree]}"
    need_kib=$((nfiles * kib * 4 + nfiles * 4 * 4 + 65536))  # source + 3 copies + inodes/db
    avail_kib=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
    (( avail_kib >= need_kib )) \
      || die "not enough space in $base for tree $tree: need ~$((need_kib / 1024)) MiB, have $((avail_kib / 1024)) MiB"

    src=$work/src-$tree
    note "[$setting] generating tree $tree: $nfiles files x $kib KiB in $ndirs folders"
    bash "$GEN" "$src" "$nfiles" "$kib" "$ndirs" || die "bench/gen_tree.sh failed for tree $tree"
    sync  # the source's own write-back must not be charged to the first command

    for ((r = -warmup; r < reps; r++)); do
      for ((k = 0; k < ${#tools[@]}; k++)); do
        tool=${tools[$(((r + warmup + k) % ${#tools[@]}))]}
        dst=$work/dst-$tool
        # Fresh start for this command, outside the timed interval.
        rm -rf -- "$dst"
        mkdir -- "$dst"
        rm -f -- "$db" "$db"-wal "$db"-shm "$db"-journal
        [[ $setting == disk ]] && sync
        run_tool "$tool" "$src" "$dst" "$db" "$setting"
        got=$(find "$dst" -type f | wc -l)
        if [[ $got -ne $nfiles ]]; then
          [[ $tool == mediasync ]] || die "$tool copied $got files instead of $nfiles into $dst"
          note "warning: [$setting $tree] mediasync left $got files in the destination for $nfiles source files"
        fi
        if (( r < 0 )); then
          label="warm-up"
        else
          label="rep $((r + 1))/$reps"
          key="$setting|$tree|$tool"
          times[$key]="${times[$key]:-} $last_ns"
          (( last_rss > ${peak[$key]:-0} )) && peak[$key]=$last_rss
        fi
        note "$(printf '[%s %s %s] %-9s %8.3f s  %8d KiB' "$setting" "$tree" "$label" \
          "$tool" "$(awk -v n="$last_ns" 'BEGIN { printf "%.3f", n / 1e9 }')" "$last_rss")"
      done
    done
    rm -rf -- "$src" "$work"/dst-*
    rm -f -- "$db" "$db"-wal "$db"-shm "$db"-journal
  done

  # Table for this setting.
  printf '\n## %s (%s, %s)\n\n' "$setting" "$base" "$fstype"
  printf '| tree | files | mediasync s | cp -r s | rsync -a s | mediasync/cp | mediasync/rsync | mediasync peak RSS KiB | cp peak RSS KiB | rsync peak RSS KiB |\n'
  printf '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
  for tree in "${trees[@]}"; do
    read -r nfiles kib ndirs <<< "${tree_spec[$tree]}"
    declare -A med=()
    for tool in "${tools[@]}"; do
      # shellcheck disable=SC2086  # word splitting of the list of times is intended
      med[$tool]=$(median_s ${times["$setting|$tree|$tool"]})
    done
    printf '| %s | %s x %s KiB in %s folder(s) | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$tree" "$nfiles" "$kib" "$ndirs" \
      "${med[mediasync]}" "${med[cp]}" "${med[rsync]}" \
      "$(ratio "${med[mediasync]}" "${med[cp]}")" "$(ratio "${med[mediasync]}" "${med[rsync]}")" \
      "${peak["$setting|$tree|mediasync"]}" "${peak["$setting|$tree|cp"]}" "${peak["$setting|$tree|rsync"]}"
    unset med
  done

  rm -rf -- "$work"
done
printf '\nSeconds are medians of %s runs (wall time); peak RSS is the maximum over the runs; ratios > 1 mean mediasync is slower.\n' "$reps"
