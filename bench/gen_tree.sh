#!/usr/bin/env bash
# Generates a tree of random-content files for benchmarks and demos.
#
# Usage: bench/gen_tree.sh DIR NFILES SIZE_KIB NDIRS
#   Creates NFILES files of SIZE_KIB KiB of random bytes (every file distinct),
#   spread evenly over NDIRS folders DIR/d0000 ... DIR/dNNNN, named
#   file_0000000.bin ... with numbers unique across the whole tree.
#   DIR is created if missing and must not already contain a dNNNN folder.
# Fast: one /dev/urandom stream per folder cut by `split` (10,000 x 100 KiB in
# a few seconds on tmpfs), no process per file.
set -euo pipefail

die() { printf 'gen_tree: ERROR: %s\n' "$*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

case ${1:-} in -h|--help) usage; exit 0 ;; esac
[[ $# -eq 4 ]] || { usage >&2; die "expected 4 arguments, got $#"; }

dir=$1 nfiles=$2 size_kib=$3 ndirs=$4
for v in nfiles size_kib ndirs; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "${v^^} must be a non-negative integer, got '${!v}'"
done
nfiles=$((10#$nfiles)) size_kib=$((10#$size_kib)) ndirs=$((10#$ndirs))
(( ndirs >= 1 )) || die "NDIRS must be at least 1"
(( nfiles <= 9999999 )) || die "NFILES must be at most 9999999"
(( ndirs <= 9999 )) || die "NDIRS must be at most 9999"

mkdir -p -- "$dir" || die "cannot create '$dir'"
[[ -w $dir ]] || die "'$dir' is not writable"

bytes=$((size_kib * 1024))
base=$((nfiles / ndirs)) extra=$((nfiles % ndirs))
next=0
for ((d = 0; d < ndirs; d++)); do
  count=$base
  (( d < extra )) && count=$((count + 1))
  sub=$(printf '%s/d%04d' "$dir" "$d")
  [[ -e $sub ]] && die "'$sub' already exists; use an empty or new DIR"
  mkdir -- "$sub" || die "cannot create '$sub'"
  if (( count > 0 )); then
    if (( bytes > 0 )); then
      head -c "$((count * bytes))" /dev/urandom \
        | split -b "$bytes" -a 7 --numeric-suffixes="$next" --additional-suffix=.bin - "$sub/file_" \
        || die "writing files into '$sub' failed (disk full?)"
    else
      for ((i = next; i < next + count; i++)); do printf '%s/file_%07d.bin\0' "$sub" "$i"; done \
        | xargs -0 touch -- || die "creating empty files in '$sub' failed"
    fi
  fi
  next=$((next + count))
done

printf 'gen_tree: %s: %d files of %d KiB in %d folders\n' "$dir" "$nfiles" "$size_kib" "$ndirs" >&2
