#!/usr/bin/env bash
# Quick start: installs dependencies, builds mediasync, generates a small sample
# tree (200 files, nested folders, a few fake JPEG/PNG files) and runs a real
# sync on the default SQLite database, then `status`, `jobs`, and the sync again
# (everything is skipped the second time).
#
# Usage: scripts/quickstart.sh [--skip-build]
#   --skip-build   use the existing binary (build/mediasync or $MEDIASYNC_BIN)
# The demo lives in /tmp/mediasync-demo (or $MEDIASYNC_DEMO_DIR), recreated on
# each run and left in place afterwards for you to look at.
set -euo pipefail

die() { printf '\nquickstart: ERROR: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

skip_build=0
for arg in "$@"; do
  case $arg in
    --skip-build) skip_build=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (usage: scripts/quickstart.sh [--skip-build])" ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${MEDIASYNC_BIN:-$ROOT/build/mediasync}
DEMO=${MEDIASYNC_DEMO_DIR:-/tmp/mediasync-demo}
SRC=$DEMO/source
DEST=$DEMO/library
DB=$DEMO/mediasync.db

if [[ $skip_build -eq 0 ]]; then
  step "Installing dependencies (scripts/setup.sh)"
  bash "$ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
  step "Building (scripts/build.sh)"
  bash "$ROOT/scripts/build.sh" || die "scripts/build.sh failed"
fi
[[ -x $BIN ]] || die "mediasync binary not found or not executable: $BIN (build it with scripts/build.sh)"

step "Generating a sample tree in $SRC"
case $DEMO in
  /|"") die "refusing to use '$DEMO' as the demo directory" ;;
esac
rm -rf -- "$DEMO"
mkdir -p -- "$SRC" "$DEST" || die "cannot create $DEMO"

# 180 plain files of 8 KiB over 6 folders.
bash "$ROOT/bench/gen_tree.sh" "$SRC/documents" 180 8 6 || die "bench/gen_tree.sh failed"

# 20 fake photos (real magic numbers, random bodies) in nested folders.
fake_jpeg() {  # PATH KIB
  { printf '\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00'
    head -c "$(($2 * 1024))" /dev/urandom
    printf '\xff\xd9'; } > "$1"
}
fake_png() {  # PATH KIB
  { printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x02\x00\x00\x00\xd3\x10\x3f\x31'
    head -c "$(($2 * 1024))" /dev/urandom; } > "$1"
}
mkdir -p "$SRC/photos/2023/summer" "$SRC/photos/2024/winter/raw" "$SRC/screenshots/phone"
for i in 1 2 3 4 5 6; do fake_jpeg "$(printf '%s/photos/2023/summer/IMG_%04d.jpg' "$SRC" "$i")" $((20 + i)); done
for i in 7 8 9 10;    do fake_jpeg "$(printf '%s/photos/2024/winter/IMG_%04d.JPG' "$SRC" "$i")" $((30 + i)); done
for i in 1 2;         do fake_jpeg "$(printf '%s/photos/2024/winter/raw/DSC_%04d.jpeg' "$SRC" "$i")" 64; done
for i in 1 2 3 4 5;   do fake_png "$(printf '%s/screenshots/Screenshot_%02d.png' "$SRC" "$i")" $((10 + i)); done
for i in 1 2 3;       do fake_png "$(printf '%s/screenshots/phone/shot %d.png' "$SRC" "$i")" 12; done

nsrc=$(find "$SRC" -type f | wc -l)
printf 'sample tree: %d files, %s\n' "$nsrc" "$(du -sh "$SRC" | cut -f1)"
[[ $nsrc -eq 200 ]] || die "expected 200 sample files, found $nsrc"

step "Syncing $SRC -> $DEST"
rc=0; run "$BIN" sync "$SRC" "$DEST" --db "$DB" || rc=$?
[[ $rc -eq 0 ]] || die "'mediasync sync' exited with status $rc (1 = some files failed, 2 = usage/config error, 3 = fatal)"
ndest=$(find "$DEST" -type f | wc -l)
[[ $ndest -gt 0 ]] || die "sync reported success but $DEST holds no files"
[[ $ndest -eq $nsrc ]] || printf 'quickstart: note: %s holds %d files for %d source files\n' "$DEST" "$ndest" "$nsrc" >&2

step "Status of the last job"
rc=0; run "$BIN" status --db "$DB" || rc=$?
[[ $rc -eq 0 ]] || die "'mediasync status' exited with status $rc"

step "All jobs"
rc=0; run "$BIN" jobs --db "$DB" || rc=$?
[[ $rc -eq 0 ]] || die "'mediasync jobs' exited with status $rc"

step "Syncing again: every file is unchanged and skipped"
rc=0; run "$BIN" sync "$SRC" "$DEST" --db "$DB" || rc=$?
[[ $rc -eq 0 ]] || die "second 'mediasync sync' exited with status $rc"
rc=0; run "$BIN" status --db "$DB" || rc=$?
[[ $rc -eq 0 ]] || die "'mediasync status' exited with status $rc"

step "Done"
printf 'source:   %s\nlibrary:  %s\ndatabase: %s\n' "$SRC" "$DEST" "$DB"
printf 'try:      %s status --db %s --json\n' "$BIN" "$DB"
