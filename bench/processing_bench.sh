#!/usr/bin/env bash
# Benchmark of the imaging core (processing stage work) against `vipsthumbnail`.
#
# Usage: bench/processing_bench.sh [-n REPS] [-c COUNT] [-d DIR] [-b DRIVER]
#   -n REPS    timed rounds; the median wall and CPU time of each command are
#              reported (default 3)
#   -c COUNT   photos (default 200): 4000x3000 JPEGs (12 MP, ~4.4 MB, Q 90, gradient
#              + noise, EXIF date, every 10th with orientation 6), generated once
#              into DIR by the driver and reused by later runs
#   -d DIR     photo folder, also the library root of the driver's runs: its
#              .thumbnails/ is removed before each run and at the end
#              (default /var/tmp/mediasync-bench/photos-COUNT)
#   -b DRIVER  bench/processing_bench.cpp built (default: build/bench/processing_bench
#              if it exists, else compiled with g++ into a temp dir)
# Commands, each over the same COUNT files, with the page cache warm:
#   vipsthumbnail  ls | xargs -P2 -n1 vipsthumbnail -s 1024 -o OUT/%s.jpg[Q=82,strip]
#   vipsthumbnail-n25  the same with 25 files per process: libvips start-up
#                  (module loading) amortised, a stricter reference
#   core           the driver, 2 threads x 1 vips thread: make_thumbnails with the
#                  default settings (256 and 1024 px, JPEG Q 82, header, EXIF,
#                  pixel limit, atomic writes, result records)
#   core-1024      the same with 1024 only (the same output as vipsthumbnail)
#   engine         the whole mediasync engine, processing stage only: the photos are
#                  first synced into a library with --no-thumbnails (untimed), then
#                  `mediasync sync --no-watermark --processing-workers 2` is timed: every
#                  file is skipped as unchanged by the sync stage and goes through the
#                  processing stage (256 + 1024 px) with all bookkeeping (rows, media
#                  items, per-batch durability); its peak RSS is reported too
# Rounds rotate the order of the commands. Before each command (untimed) its
# outputs are removed. Prints the medians and their ratios to vipsthumbnail -n1.
set -euo pipefail

die() { printf 'processing_bench: ERROR: %s\n' "$*" >&2; exit 2; }
note() { printf 'processing_bench: %s\n' "$*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reps=3
count=200
dir=""
driver=""
while getopts ':n:c:d:b:h' opt; do
  case $opt in
    n) reps=$OPTARG ;;
    c) count=$OPTARG ;;
    d) dir=$OPTARG ;;
    b) driver=$OPTARG ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see -h)" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || die "unexpected argument '$1' (see -h)"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer, got '$reps'"
[[ $count =~ ^[1-9][0-9]*$ ]] || die "-c must be a positive integer, got '$count'"
[[ -n $dir ]] || dir=/var/tmp/mediasync-bench/photos-$count
command -v vipsthumbnail >/dev/null || die "vipsthumbnail not found (apt-get install libvips-tools)"

work=$(mktemp -d /tmp/processing-bench.XXXXXX)
cleanup() { rm -rf "$work" "$dir/.thumbnails"; }
trap cleanup EXIT

if [[ -z $driver ]]; then
  if [[ -x $ROOT/build/bench/processing_bench ]]; then
    driver=$ROOT/build/bench/processing_bench
  else
    note "compiling the driver with g++"
    g++ -std=c++20 -O2 -I"$ROOT" "$ROOT/bench/processing_bench.cpp" "$ROOT/actors/imaging.cpp" \
      $(pkg-config --cflags --libs vips-cpp) -o "$work/processing_bench" \
      || die "cannot compile the driver"
    driver=$work/processing_bench
  fi
fi
[[ -x $driver ]] || die "driver '$driver' is not executable"

mkdir -p "$dir"
have=$(find "$dir" -maxdepth 1 -name 'img-*.jpg' | wc -l)
if (( have < count )); then
  note "generating $((count - have)) photos in $dir (once; reused by later runs)"
  "$driver" generate "$dir" "$count" 2
fi
# The driver takes every *.jpg in the folder.
files=$(find "$dir" -maxdepth 1 -name '*.jpg' | wc -l)
(( files == count )) || die "expected $count photos (*.jpg) in $dir, found $files: use another -d"
mp=$(vipsheader -f width "$dir/img-0000.jpg")x$(vipsheader -f height "$dir/img-0000.jpg")
note "$count photos of $mp, $(du -sh "$dir" | cut -f1); warming the page cache"
cat "$dir"/*.jpg > /dev/null

bin=${MEDIASYNC_BIN:-$ROOT/build/mediasync}
declare -A times=() cpus=() rss=()
run_cmd() {  # name -> appends wall seconds to times[name], user+sys seconds to cpus[name]
  local name=$1 per=1 sizes=256,1024
  case $name in
    vipsthumbnail|vipsthumbnail-n25)
      [[ $name == vipsthumbnail-n25 ]] && per=25
      rm -rf "$work/vt"; mkdir -p "$work/vt"
      /usr/bin/time -f '%e %U %S' -o "$work/time" bash -c '
        find "$1" -maxdepth 1 -name "*.jpg" -print0 \
          | xargs -0 -P2 -n"$2" vipsthumbnail -s 1024 -o "$3/%s.jpg[Q=82,strip]"' \
        _ "$dir" "$per" "$work/vt" || die "vipsthumbnail failed"
      (( $(find "$work/vt" -name '*.jpg' | wc -l) == count )) || die "vipsthumbnail missed files"
      ;;
    engine)
      [[ -x $bin ]] || die "mediasync binary '$bin' not found (build first or set MEDIASYNC_BIN)"
      rm -rf "$work/lib" "$work/engine.db"*
      "$bin" sync "$dir" "$work/lib" --db "$work/engine.db" --no-thumbnails --progress none \
        2> "$work/engine.log" || die "engine pre-sync failed: $(tail -3 "$work/engine.log")"
      /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$bin" sync "$dir" "$work/lib" \
        --db "$work/engine.db" --no-watermark --processing-workers 2 --progress none \
        2> "$work/engine.log" || die "engine failed: $(tail -3 "$work/engine.log")"
      (( $(find "$work/lib/.thumbnails/1024" -name '*.jpg' | wc -l) == count )) \
        || die "engine made too few thumbnails"
      ;;
    core|core-1024)
      [[ $name == core-1024 ]] && sizes=1024
      rm -rf "$dir/.thumbnails"
      /usr/bin/time -f '%e %U %S' -o "$work/time" "$driver" run "$dir" 2 "$sizes" jpeg > "$work/out" \
        || die "driver failed: $(cat "$work/out")"
      read -r _ n ok failed < "$work/out"
      (( ok == count )) || die "driver: $ok of $n ok, $failed failed"
      ;;
  esac
  local e u s m
  read -r e u s m < <(tail -n 1 "$work/time")
  [[ -n ${m:-} ]] && rss[$name]=$m
  times[$name]+="$e "
  cpus[$name]+="$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }') "
}

cmds=(vipsthumbnail core core-1024 vipsthumbnail-n25 engine)
for ((r = 0; r < reps; r++)); do
  order=()
  for ((i = 0; i < ${#cmds[@]}; i++)); do order+=("${cmds[(i + r) % ${#cmds[@]}]}"); done
  for c in "${order[@]}"; do run_cmd "$c"; done
  note "round $((r + 1)) wall: $(for c in "${cmds[@]}"; do printf '%s %s| ' "$c" "${times[$c]}"; done)"
  note "round $((r + 1)) cpu:  $(for c in "${cmds[@]}"; do printf '%s %s| ' "$c" "${cpus[$c]}"; done)"
done
note "load average now: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the machine skew wall times; CPU times less)"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
declare -A mw=() mc=()
for c in "${cmds[@]}"; do
  mw[$c]=$(median <<< "${times[$c]}")
  mc[$c]=$(median <<< "${cpus[$c]}")
done
echo "## processing bench: $count photos ($mp JPEG), $(nproc) cores, median of $reps"
echo
echo "| command | wall s | images/s | wall vs vipsthumbnail | CPU s (user+sys) | CPU vs vipsthumbnail |"
echo "|---|---:|---:|---:|---:|---:|"
declare -A label=(
  [vipsthumbnail]="vipsthumbnail -P2 -n1 (1024)"
  [core]="core: 256+1024, bookkeeping"
  [core-1024]="core: 1024 only"
  [vipsthumbnail-n25]="vipsthumbnail -P2 -n25 (1024)"
  [engine]="mediasync engine, processing stage (256+1024)"
)
for c in "${cmds[@]}"; do
  awk -v n="${label[$c]}" -v t="${mw[$c]}" -v u="${mc[$c]}" -v cnt="$count" \
      -v vt="${mw[vipsthumbnail]}" -v vu="${mc[vipsthumbnail]}" \
    'BEGIN { printf "| %s | %.2f | %.1f | %.3fx | %.1f | %.3fx |\n", n, t, cnt / t, t / vt, u, u / vu }'
done
[[ -n ${rss[engine]:-} ]] && echo && echo "mediasync engine peak RSS (last round): ${rss[engine]} KiB"
