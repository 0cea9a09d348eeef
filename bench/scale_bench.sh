#!/usr/bin/env bash
# Scale benchmark (issue 7): `mediasync sync` of 10k, 100k and 1M small files on SQLite,
# and a no-change re-sync of 100k files against `rsync -a` doing nothing.
#
# Usage: bench/scale_bench.sh [-d DIR] [-s SIZES] [-n REPS] [-m REPS_1M] [-r N] [-k KIB]
#                             [-W] [-C] [-b BIN]
#   -d DIR    where the trees, libraries and databases go (default /var/tmp: ext4 on the
#             project's machines; a 1M-file tree of 1 KiB files takes ~4 GiB there, each
#             library and control copy as much again: the defaults need ~20 GiB free)
#   -s SIZES  comma list of tree sizes in files (default 10000,100000,1000000); the first
#             and the last give the per-file cost ratio
#   -n REPS   fresh syncs of each tree below 1M files before the largest tree, and as many
#             again after it, median of all reported (default 3); also the rounds of the
#             no-change comparison
#   -m REPS   fresh syncs of the trees of 1M files or more (default 1)
#   -r N      size of the no-change re-sync test, one of SIZES (default 100000; 0: skip)
#   -k KIB    file size in KiB (default 1)
#   -W        fresh syncs and control copies read a source whose data may be cached
#             (default: before each, the source files' pages are dropped from the page
#             cache with posix_fadvise(DONTNEED), so every size reads its source from disk:
#             a 10k tree would otherwise always be cached and a 1M tree mostly not)
#   -C        drop the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) before each
#             timed no-change run (every tool starts cold); default: warm cache for all
#   -b BIN    mediasync binary (default: $MEDIASYNC_BIN, else build/mediasync); it is
#             copied to the work dir first, so a rebuild meanwhile does not change it
#
# Trees: files of KIB KiB of distinct pseudo-random bytes (a small C generator, one
# process for the whole tree), 1,000 per folder, 10 folders per top folder:
# SRC/dNNN/sNN/img_NNNNNNN.dat (1M files: 100 top folders, 1,000 folders). After
# generating, `sync` flushes the tree so its write-back is not charged to mediasync.
# The trees are synced in increasing size, then the smaller ones once more, so that
# load which drifts during the long run weighs on both ends of the per-file ratio.
# Each fresh sync goes into a new empty library with no database and runs
#   mediasync sync SRC DEST --db DB --no-thumbnails --progress none
# under /usr/bin/time -v (peak RSS = "Maximum resident set size"); wall time from
# `date +%s%N`. The job row must say N files ok, 0 failed, status completed, and DEST
# must hold N files. mediasync makes every batch of library files durable (syncfs)
# before it commits the batch, so no `sync` follows it. Next to each fresh sync (the
# order alternates) a control copy runs, `cp -r SRC/. CPDEST && sync` into a new
# directory: the per-file ratio of the control shows how much of a growth comes from
# the file system and the machine rather than from mediasync. For trees of 100,000
# files and more, `sqlite3 -readonly` polls processed_files once a second during the
# run, and the throughput while files 10-20% and 80-90% of the tree were synced is
# reported: a per-file cost that grows with the database shows there.
# Nothing is deleted before the end: on ext4 without a journal (the project's VMs) a new
# inode is never taken from those freed in the last 60 s (360 s while their inode table
# block is dirty) and each such inode is checked one by one, so creating files right
# after removing a big tree is several times slower, for any tool.
# No-change re-sync (size -r): right after the first pass of that size, on the SRC, DEST
# and DB of its last fresh sync (every file unchanged: skipped), REPS rounds, each
# running in a rotating order:
#   mediasync sync SRC DEST --db DB --no-thumbnails --progress none
#   rsync -a SRC/ RSYNCDEST/        (RSYNCDEST filled by one untimed rsync -a first)
#   floor: a C loop that walks SRC (readdir + fstatat, like the scanner) and fstatats
#          every file's library copy in DEST (like the unchanged check), one thread:
#          the file-system part of a no-change pass, no database, no actors
#   dbfloor: a C loop that writes, on a copy of DB (same pragmas: WAL, synchronous
#          FULL), what the database contract requires of N unchanged files: N
#          file_results rows (sync, skipped), N media_items.last_job_id updates, the
#          job's counters per 1,600 rows (the engine's batch for such rows), one
#          transaction each: the database part of a no-change pass, no file system
#   dbrows: the same without the last_job_id updates (file_results rows and counters)
# Each re-sync job row must say N skipped, 0 ok, 0 failed. Medians compared.
# Targets (exit 1 if one fails): per-file wall time at the largest size <= 1.3x that at
# the smallest; peak RSS at the largest size < 128 MB (131,072 KiB); no-change re-sync
# <= 0.5x the rsync no-op. Exit 2 on errors. Removes everything it made on any exit.
set -euo pipefail

die() { printf 'scale_bench: ERROR: %s\n' "$*" >&2; exit 2; }
note() { printf 'scale_bench: %s [load %s]\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE=$(printf '%q ' "$0" "$@"); CMDLINE=${CMDLINE% }

base=/var/tmp
sizes_arg=10000,100000,1000000
reps=3
reps_big=1
resync_n=100000
kib=1
cold=0
warm_src=0
BIN=${MEDIASYNC_BIN:-$ROOT/build/mediasync}
while getopts ':d:s:n:m:r:k:WCb:h' opt; do
  case $opt in
    d) base=$OPTARG ;;
    s) sizes_arg=$OPTARG ;;
    n) reps=$OPTARG ;;
    m) reps_big=$OPTARG ;;
    r) resync_n=$OPTARG ;;
    k) kib=$OPTARG ;;
    W) warm_src=1 ;;
    C) cold=1 ;;
    b) BIN=$OPTARG ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see -h)" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || die "unexpected argument '$1' (see -h)"
for v in reps reps_big; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "-n/-m must be positive integers, got '${!v}'"
done
[[ $resync_n =~ ^[0-9]+$ ]] || die "-r must be a non-negative integer, got '$resync_n'"
[[ $kib =~ ^[0-9]+$ ]] || die "-k must be a non-negative integer, got '$kib'"
IFS=, read -r -a sizes <<< "$sizes_arg"
[[ ${#sizes[@]} -gt 0 ]] || die "no size given"
for s in "${sizes[@]}"; do
  [[ $s =~ ^[1-9][0-9]*$ ]] || die "sizes must be positive integers, got '$s'"
done
if (( resync_n > 0 )); then
  found=0
  for s in "${sizes[@]}"; do (( s == resync_n )) && found=1; done
  (( found )) || die "-r $resync_n is not one of the sizes ($sizes_arg)"
fi

# Tools and requirements.
[[ $BIN == */* ]] || BIN=$(command -v -- "$BIN" || echo "$BIN")
[[ -x $BIN && -f $BIN ]] \
  || die "mediasync binary not found or not executable: $BIN (cmake --build build --target mediasync, or -b / MEDIASYNC_BIN)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found: install the Debian package 'time'"
for c in rsync sqlite3 cc sync date find awk sort df; do
  command -v "$c" >/dev/null 2>&1 || die "'$c' not found (apt-get install rsync sqlite3 gcc time)"
done
if (( cold )); then
  [[ -w /proc/sys/vm/drop_caches ]] || die "-C: /proc/sys/vm/drop_caches is not writable (run as root)"
fi
[[ -d $base && -w $base ]] || die "$base is missing or not writable"

work=$(mktemp -d "$base/mediasync-scale.XXXXXX") || die "cannot create a work dir under $base"
cleanup() {
  [[ -n ${work:-} && -d $work ]] && rm -rf -- "$work"
  return 0
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM

fstype=$(df --output=fstype "$work" | awk 'NR == 2')
device=$(df --output=source "$work" | awk 'NR == 2')
cp -- "$BIN" "$work/mediasync"
BIN_ORIG=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
BIN_MTIME=$(date -u -r "$BIN" '+%Y-%m-%d %H:%M:%S UTC')
BIN=$work/mediasync
log_file=$work/cmd.log
time_file=$work/time.out

# The generator: ROOT NFILES SIZE_BYTES PER_DIR FANOUT.
cat > "$work/gen.c" <<'EOF'
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
  fprintf(stderr, "scale_gen: %s '%s': %s\n", what, path, strerror(errno));
  exit(2);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: scale_gen ROOT NFILES SIZE_BYTES PER_DIR FANOUT\n");
    return 2;
  }
  const char *root = argv[1];
  long n = atol(argv[2]), size = atol(argv[3]), per_dir = atol(argv[4]), fanout = atol(argv[5]);
  if (n < 0 || size < 0 || per_dir < 1 || fanout < 1) {
    fprintf(stderr, "scale_gen: bad arguments\n");
    return 2;
  }
  if (mkdir(root, 0755) != 0) die("cannot create", root);
  char *buf = malloc(size > 0 ? (size_t)size : 1);
  if (!buf) die("out of memory for", root);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  char path[4096];
  long leaf = -1, top = -1;
  for (long i = 0; i < n; ++i) {
    long l = i / per_dir, t = l / fanout;
    if (t != top) {
      snprintf(path, sizeof path, "%s/d%03ld", root, t);
      if (mkdir(path, 0755) != 0) die("cannot create", path);
      top = t;
    }
    if (l != leaf) {
      snprintf(path, sizeof path, "%s/d%03ld/s%02ld", root, t, l % fanout);
      if (mkdir(path, 0755) != 0) die("cannot create", path);
      leaf = l;
    }
    /* xorshift64*, the file number mixed in: every file distinct */
    x ^= (uint64_t)i * 0xD1B54A32D192ED03ull;
    for (long k = 0; k + 8 <= size; k += 8) {
      x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
      uint64_t v = x * 0x2545F4914F6CDD1Dull;
      memcpy(buf + k, &v, 8);
    }
    for (long k = size & ~7L; k < size; ++k) buf[k] = (char)(x >> (8 * (k & 7)));
    snprintf(path, sizeof path, "%s/d%03ld/s%02ld/img_%07ld.dat", root, t, l % fanout, i);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) die("cannot create", path);
    if (size > 0 && write(fd, buf, (size_t)size) != size) die("cannot write", path);
    if (close(fd) != 0) die("cannot close", path);
  }
  free(buf);
  return 0;
}
EOF
cc -O2 -o "$work/gen" "$work/gen.c" || die "cannot compile the tree generator"

# The floor of a no-change pass: SRC DST NFILES.
cat > "$work/floor.c" <<'EOF'
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static long files, present;
static int dst;
static char rel[4096];

static void walk(int dfd, size_t len) {
  DIR *d = fdopendir(dfd);
  if (!d) { perror("fdopendir"); exit(2); }
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *n = e->d_name;
    if (n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2]))) continue;
    struct stat sb;
    if (fstatat(dirfd(d), n, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue;
    size_t k = strlen(n);
    if (len + k + 2 > sizeof rel) continue;
    memcpy(rel + len, n, k + 1);
    if (S_ISDIR(sb.st_mode)) {
      int c = openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (c < 0) continue;
      rel[len + k] = '/';
      rel[len + k + 1] = 0;
      walk(c, len + k + 1);
    } else if (S_ISREG(sb.st_mode)) {
      struct stat lb;
      ++files;
      if (fstatat(dst, rel, &lb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(lb.st_mode)
          && lb.st_size == sb.st_size)
        ++present;
    }
  }
  closedir(d);
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: floor SRC DST NFILES\n"); return 2; }
  int src = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  dst = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (src < 0 || dst < 0) { perror("open"); return 2; }
  walk(src, 0);
  if (files != atol(argv[3]) || present != files) {
    fprintf(stderr, "floor: %ld files, %ld in the library, expected %s\n", files, present, argv[3]);
    return 1;
  }
  return 0;
}
EOF
cc -O2 -o "$work/floor" "$work/floor.c" || die "cannot compile the floor program"

# Drops the page-cache pages of every regular file under DIR: evict DIR.
cat > "$work/evict.c" <<'EOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <unistd.h>

static int one(const char *path, const struct stat *sb, int type, struct FTW *f) {
  (void)sb; (void)f;
  if (type != FTW_F) return 0;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return 0;
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: evict DIR\n"); return 2; }
  return nftw(argv[1], one, 64, FTW_PHYS) == 0 ? 0 : 1;
}
EOF
cc -O2 -o "$work/evict" "$work/evict.c" || die "cannot compile the evict program"

# The database floor of a no-change pass: DB NFILES BATCH [rows]. On a copy of the
# library's database, in one thread, no actors and no file system: reads every media
# item (path order), then records each as the contract requires of an unchanged file:
# its file_results row (sync, skipped, 'unchanged'), its media_items.last_job_id (not
# with `rows`: what a contract without that refresh would cost), and per BATCH the
# job's counters and job_stage_counters, one transaction each, with the engine's
# pragmas (WAL, synchronous FULL).
cat > "$work/dbfloor.c" <<'EOF'
#define _GNU_SOURCE
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sqlite3 *db;

static void die(const char *what) {
  fprintf(stderr, "dbfloor: %s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
  exit(2);
}
static void exec(const char *sql) {
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) die(sql);
}
static sqlite3_stmt *prep(const char *sql) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) die(sql);
  return s;
}
static void run(sqlite3_stmt *s, const char *what) {
  if (sqlite3_step(s) != SQLITE_DONE) die(what);
  sqlite3_reset(s);
}

struct item { sqlite3_int64 id, size; char *path, *sha; };

int main(int argc, char **argv) {
  if (argc != 4 && !(argc == 5 && strcmp(argv[4], "rows") == 0)) {
    fprintf(stderr, "usage: dbfloor DB NFILES BATCH [rows]\n");
    return 2;
  }
  long n = atol(argv[2]), batch = atol(argv[3]);
  int touch_media = argc == 4;
  if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) die(argv[1]);
  exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;"
       "PRAGMA cache_size = -16384;");
  struct item *items = calloc((size_t)n, sizeof *items);
  if (!items) die("calloc");
  long k = 0;
  sqlite3_stmt *sel = prep("SELECT id, size, path, sha256 FROM media_items ORDER BY path");
  while (sqlite3_step(sel) == SQLITE_ROW && k < n) {
    items[k].id = sqlite3_column_int64(sel, 0);
    items[k].size = sqlite3_column_int64(sel, 1);
    items[k].path = strdup((const char *)sqlite3_column_text(sel, 2));
    const unsigned char *sha = sqlite3_column_text(sel, 3);
    items[k].sha = sha ? strdup((const char *)sha) : NULL;
    ++k;
  }
  sqlite3_finalize(sel);
  if (k != n) { fprintf(stderr, "dbfloor: %ld media items, expected %ld\n", k, n); return 1; }
  const char *ts = "2026-01-01T00:00:00.000Z";
  exec("INSERT INTO sync_jobs (source_root, dest_root, status, created_at, updated_at, settings)"
       " VALUES ('/floor', '/floor', 'running', '2026-01-01', '2026-01-01', '{}')");
  sqlite3_int64 job = sqlite3_last_insert_rowid(db);
  sqlite3_stmt *ins = prep(
      "INSERT INTO file_results (job_id, path, stage, status, size, sha256, error, duration_us,"
      " recorded_at, node) VALUES (?1, ?2, 'sync', 'skipped', ?3, ?4, 'unchanged', 0, ?5, NULL)");
  sqlite3_stmt *touch = prep("UPDATE media_items SET last_job_id = ?1 WHERE id = ?2");
  sqlite3_stmt *cnt = prep(
      "UPDATE sync_jobs SET skipped_files = skipped_files + ?2, total_files = ?3, updated_at = ?4"
      " WHERE id = ?1");
  sqlite3_stmt *stg = prep(
      "INSERT INTO job_stage_counters (job_id, stage, ok_files, failed_files, skipped_files)"
      " VALUES (?1, 'sync', 0, 0, ?2) ON CONFLICT (job_id, stage) DO UPDATE SET"
      " skipped_files = skipped_files + excluded.skipped_files");
  sqlite3_bind_int64(ins, 1, job);
  sqlite3_bind_text(ins, 5, ts, -1, SQLITE_STATIC);
  sqlite3_bind_int64(touch, 1, job);
  for (long i = 0; i < n; i += batch) {
    long end = i + batch < n ? i + batch : n;
    exec("BEGIN IMMEDIATE");
    for (long j = i; j < end; ++j) {
      sqlite3_bind_text(ins, 2, items[j].path, -1, SQLITE_STATIC);
      sqlite3_bind_int64(ins, 3, items[j].size);
      sqlite3_bind_text(ins, 4, items[j].sha, -1, SQLITE_STATIC);
      run(ins, "insert file_results");
      if (!touch_media) continue;
      sqlite3_bind_int64(touch, 2, items[j].id);
      run(touch, "update media_items");
    }
    sqlite3_bind_int64(cnt, 1, job);
    sqlite3_bind_int64(cnt, 2, end - i);
    sqlite3_bind_int64(cnt, 3, n);
    sqlite3_bind_text(cnt, 4, ts, -1, SQLITE_STATIC);
    run(cnt, "update sync_jobs");
    sqlite3_bind_int64(stg, 1, job);
    sqlite3_bind_int64(stg, 2, end - i);
    run(stg, "upsert job_stage_counters");
    exec("COMMIT");
  }
  char done[128];
  snprintf(done, sizeof done, "UPDATE sync_jobs SET status = 'completed' WHERE id = %lld", job);
  exec(done);
  sqlite3_finalize(ins); sqlite3_finalize(touch); sqlite3_finalize(cnt); sqlite3_finalize(stg);
  if (sqlite3_close(db) != SQLITE_OK) die("close");
  return 0;
}
EOF
cc -O2 -o "$work/dbfloor" "$work/dbfloor.c" -lsqlite3 \
  || die "cannot compile the database floor program (apt-get install libsqlite3-dev)"
# evict_src N: the source of N files leaves the page cache (unless -W).
evict_src() { (( warm_src )) || "$work/evict" "$work/src-$1" || die "evicting $work/src-$1 failed"; }

ns_to_s() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 }
  END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        if (m == int(m)) printf "%.0f\n", m; else printf "%.2f\n", m }'; }
tv() { awk -F': ' -v k="$1" 'index($0, k) { v = $2 } END { print v }' "$time_file"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
runs_s() { local w; for w in "$@"; do printf '%s ' "$(ns_to_s "$w")"; done; }
med_or_na() { if (( $# )); then printf '%.0f ' "$(median "$@")"; else printf 'n/a '; fi; }

# timed CMD... -> last_ns, last_rss (KiB), last_cpu (user+sys s), last_rc
timed() {
  local start end
  last_rc=0
  start=$(date +%s%N)
  /usr/bin/time -v -o "$time_file" "$@" >"$log_file" 2>&1 || last_rc=$?
  end=$(date +%s%N)
  last_ns=$((end - start))
  last_rss=$(tv 'Maximum resident set size (kbytes)' | tr -d ' ')
  last_cpu=$(awk -v u="$(tv 'User time (seconds)')" -v s="$(tv 'System time (seconds)')" \
    'BEGIN { printf "%.2f", u + s }')
  [[ $last_rss =~ ^[0-9]+$ ]] || die "no peak RSS in the /usr/bin/time output of: $*"
}
show_fail() {
  printf 'scale_bench: command failed (exit %s): %s\n--- output (last 30 lines) ---\n' \
    "$last_rc" "$*" >&2
  tail -n 30 "$log_file" >&2 || true
}

# job_check DB EXPECT: the newest job row must read EXPECT
# ("status|total|processed|failed|skipped").
job_check() {
  local got
  got=$(sqlite3 "$1" "SELECT status, total_files, processed_files, failed_files, skipped_files
                      FROM sync_jobs ORDER BY id DESC LIMIT 1")
  [[ $got == "$2" ]] || die "job row is '$got', expected '$2' (status|total|ok|failed|skipped)"
}

# poll DB OUT: appends "ns processed_files" about once a second until killed.
poll() {
  local p
  while :; do
    p=$(sqlite3 -readonly "$1" "SELECT processed_files FROM sync_jobs ORDER BY id DESC LIMIT 1" \
        2>/dev/null) || p=""
    [[ $p =~ ^[0-9]+$ ]] && printf '%s %s\n' "$(date +%s%N)" "$p" >> "$2"
    sleep 1
  done
}
# rate FILE N LO HI: files/s while processed_files went from LO% to HI% of N (interpolated).
rate() {
  awk -v n="$2" -v lo="$3" -v hi="$4" '
    function at(target,   i) {
      for (i = 2; i <= k; i++)
        if (p[i] >= target && p[i] > p[i - 1] && p[i - 1] <= target)
          return t[i - 1] + (t[i] - t[i - 1]) * (target - p[i - 1]) / (p[i] - p[i - 1])
      return -1
    }
    { k++; t[k] = $1; p[k] = $2 }
    END {
      a = at(n * lo / 100); b = at(n * hi / 100)
      if (k < 10 || a < 0 || b <= a) { print "n/a"; exit }
      printf "%.0f", n * (hi - lo) / 100 / ((b - a) / 1e9)
    }' "$1"
}

per=$(( (kib + 3) / 4 * 4 )); (( per < 4 )) && per=4
largest=0
for n in "${sizes[@]}"; do (( n > largest )) && largest=$n; done
# reps_of N: fresh syncs of a tree of N files in one pass (smaller trees get two passes).
reps_of() { if (( $1 >= 1000000 )); then echo "$reps_big"; else echo "$reps"; fi; }
need=1048576
for n in "${sizes[@]}"; do
  r=$(reps_of "$n"); (( n < largest )) && r=$((2 * r))
  need=$(( need + n * per * (1 + 2 * r) + n * 2 * r ))
  (( n == resync_n )) && need=$(( need + n * per + n * 2 * reps ))
done
avail=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
(( avail >= need )) \
  || die "not enough space under $base: need ~$((need / 1048576)) GiB, have $((avail / 1048576)) GiB"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
note "work dir $work ($fstype on $device, ~$((need / 1048576)) GiB needed); mediasync copied from $BIN_ORIG (built $BIN_MTIME)"

declare -A walls=() cpus=() peak=() gen_s=() early=() late=() cp_walls=()
declare -A nc_ns=() nc_cpu=() nc_rss=()

# copy N I: the control, `cp -r SRC/. CPDEST && sync`, timed; removes nothing.
copy() {
  local n=$1 i=$2 got
  local cdst=$work/cp-$n-$i
  mkdir -- "$cdst"
  sync
  evict_src "$n"
  # shellcheck disable=SC2016  # expanded by the inner shell
  cmd=(sh -c 'cp -r -- "$1/." "$2" && sync' sh "$work/src-$n" "$cdst")
  timed "${cmd[@]}"
  (( last_rc == 0 )) || { show_fail "${cmd[@]}"; die "cp -r of $n files failed"; }
  got=$(find "$cdst" -type f | wc -l)
  (( got == n )) || die "cp -r left $got files, expected $n"
  cp_walls[$n]="${cp_walls[$n]:-} $last_ns"
  note "$(printf '[%s files] control cp -r + sync %.3f s, %.1f us/file' "$n" "$(ns_to_s "$last_ns")" \
    "$(awk -v t="$last_ns" -v n="$n" 'BEGIN { print t / n / 1000 }')")"
}

# fresh N FIRST COUNT: fresh syncs FIRST..FIRST+COUNT-1 of the tree of N files, each
# next to a control copy (the order alternates).
fresh() {
  local n=$1 first=$2 count=$3 i dst db prog poller got e l
  local src=$work/src-$n
  for ((i = first; i < first + count; i++)); do
    (( i % 2 == 0 )) && copy "$n" "$i"
    dst=$work/lib-$n-$i db=$work/db-$n-$i.sqlite
    mkdir -- "$dst"
    sync
    evict_src "$n"
    note "[$n files] fresh sync $i"
    cmd=("$BIN" sync "$src" "$dst" --db "$db" --no-thumbnails --progress none)
    prog=$work/progress-$n-$i.txt
    : > "$prog"
    poller=""
    if (( n >= 100000 )); then poll "$db" "$prog" & poller=$!; fi
    timed "${cmd[@]}"
    if [[ -n $poller ]]; then kill "$poller" 2>/dev/null || true; wait "$poller" 2>/dev/null || true; fi
    (( last_rc == 0 )) || { show_fail "${cmd[@]}"; die "mediasync sync of $n files failed"; }
    job_check "$db" "completed|$n|$n|0|0"
    got=$(find "$dst" -type f | wc -l)
    (( got == n )) || die "the library holds $got files, expected $n"
    walls[$n]="${walls[$n]:-} $last_ns" cpus[$n]="${cpus[$n]:-} $last_cpu"
    (( last_rss > ${peak[$n]:-0} )) && peak[$n]=$last_rss
    e=$(rate "$prog" "$n" 10 20) l=$(rate "$prog" "$n" 80 90)
    if [[ $e != n/a && $l != n/a ]]; then early[$n]="${early[$n]:-}$e " late[$n]="${late[$n]:-}$l "; fi
    note "$(printf '[%s files] %.3f s, %.1f us/file, peak RSS %d KiB, CPU %s s; files/s at 10-20%%: %s, at 80-90%%: %s' \
      "$n" "$(ns_to_s "$last_ns")" "$(awk -v t="$last_ns" -v n="$n" 'BEGIN { print t / n / 1000 }')" \
      "$last_rss" "$last_cpu" "$e" "$l")"
    (( i % 2 == 1 )) && copy "$n" "$i"
  done
  return 0
}

# no_change N: the no-change comparison on the last library of the first pass.
no_change() {
  local n=$1 i k tool last
  last=$(reps_of "$n")
  local src=$work/src-$n dst=$work/lib-$n-$last db=$work/db-$n-$last.sqlite rdst=$work/rsync-$n
  note "[$n files] filling $rdst with rsync -a (untimed)"
  rsync -a "$src/" "$rdst/" || die "rsync -a into $rdst failed"
  sync
  # The database floor works on a copy, so that both databases grow alike.
  sqlite3 "$db" ".backup '$work/dbfloor.sqlite'" || die "copying $db for the database floor failed"
  local tools=(mediasync rsync floor dbfloor dbrows)
  for ((i = 0; i < reps; i++)); do
    for ((k = 0; k < ${#tools[@]}; k++)); do
      tool=${tools[$(( (i + k) % ${#tools[@]} ))]}
      (( cold )) && drop_caches
      case $tool in
        mediasync) cmd=("$BIN" sync "$src" "$dst" --db "$db" --no-thumbnails --progress none) ;;
        rsync)     cmd=(rsync -a "$src/" "$rdst/") ;;
        floor)     cmd=("$work/floor" "$src" "$dst" "$n") ;;
        dbfloor)   cmd=("$work/dbfloor" "$work/dbfloor.sqlite" "$n" 1600) ;;
        dbrows)    cmd=("$work/dbfloor" "$work/dbfloor.sqlite" "$n" 1600 rows) ;;
      esac
      timed "${cmd[@]}"
      (( last_rc == 0 )) || { show_fail "${cmd[@]}"; die "no-change run of $tool failed"; }
      [[ $tool == mediasync ]] && job_check "$db" "completed|$n|0|0|$n"
      nc_ns[$tool]="${nc_ns[$tool]:-} $last_ns"
      nc_cpu[$tool]="${nc_cpu[$tool]:-} $last_cpu"
      (( last_rss > ${nc_rss[$tool]:-0} )) && nc_rss[$tool]=$last_rss
      note "$(printf '[%s files] no-change %d/%d %-9s %.3f s, CPU %s s, peak RSS %d KiB' "$n" \
        $((i + 1)) "$reps" "$tool" "$(ns_to_s "$last_ns")" "$last_cpu" "$last_rss")"
    done
  done
}

for n in "${sizes[@]}"; do
  note "generating $n files of $kib KiB under $work/src-$n"
  t0=$(date +%s%N)
  "$work/gen" "$work/src-$n" "$n" $((kib * 1024)) 1000 10 \
    || die "generating the tree of $n files failed"
  sync
  gen_s[$n]=$(ns_to_s $(( $(date +%s%N) - t0 )))
  fresh "$n" 1 "$(reps_of "$n")"
  (( n == resync_n )) && no_change "$n"
done
# A second pass over the smaller trees, after the largest: load that drifts during the
# long run weighs on both ends of the ratio.
for n in "${sizes[@]}"; do
  (( n < largest )) && fresh "$n" $(( $(reps_of "$n") + 1 )) "$(reps_of "$n")"
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# Report (markdown; the backticks are literal).
small=${sizes[0]} large=${sizes[${#sizes[@]} - 1]}
per_us() { awk -v t="$1" -v n="$2" 'BEGIN { printf "%.1f", t / n / 1000 }'; }
fails=0
# shellcheck disable=SC2016
{
  printf '# mediasync scale benchmark\n\n'
  printf -- '- command: `%s`\n' "$CMDLINE"
  printf -- '- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  printf -- '- nproc: %s; kernel: %s; memory: %s\n' "$(nproc)" "$(uname -srm)" \
    "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf -- '- load average (1/5/15 min): %s at start, %s at end\n' "$load_start" "$load_end"
  printf -- '- filesystem: %s (%s on %s)\n' "$base" "$fstype" "$device"
  printf -- '- mediasync: `%s` (built %s), run from a copy\n' "$BIN_ORIG" "$BIN_MTIME"
  printf -- '- rsync: %s\n' "$(rsync --version | awk 'NR == 1')"
  printf -- '- trees: %s KiB files, distinct pseudo-random content, 1,000 per folder, 10 folders per top folder\n' "$kib"
  printf -- '- fresh syncs: `mediasync sync SRC DEST --db DB --no-thumbnails --progress none`, new empty DEST, no DB; median of %s before and %s after the largest tree for the smaller trees, %s at 1M files and more; %s\n' "$reps" "$reps" "$reps_big" \
    "$( (( warm_src )) && echo 'source data possibly cached (-W)' || echo 'source data dropped from the page cache before each run (posix_fadvise)')"
  printf '\n| files | generate s | sync wall s (median) | runs s (in order) | files/s | us/file | CPU s (median) | CPU us/file | peak RSS KiB | files/s at 10-20%% / 80-90%% of the run (median) | control: cp -r + sync s (median) | cp us/file |\n'
  printf '|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|\n'
  declare -A wall=() cpw=()
  for n in "${sizes[@]}"; do
    # shellcheck disable=SC2086  # the lists split on purpose
    wall[$n]=$(median ${walls[$n]})
    # shellcheck disable=SC2086
    c=$(median ${cpus[$n]})
    # shellcheck disable=SC2086
    # shellcheck disable=SC2086
    cpw[$n]=$(median ${cp_walls[$n]})
    # shellcheck disable=SC2086
    printf '| %s | %s | %s | %s| %s | %s | %s | %s | %s | %s/ %s| %s | %s |\n' "$n" "${gen_s[$n]}" \
      "$(ns_to_s "${wall[$n]}")" "$(runs_s ${walls[$n]})" \
      "$(awk -v t="${wall[$n]}" -v n="$n" 'BEGIN { printf "%.0f", n / (t / 1e9) }')" \
      "$(per_us "${wall[$n]}" "$n")" "$c" "$(awk -v c="$c" -v n="$n" 'BEGIN { printf "%.1f", c / n * 1e6 }')" \
      "${peak[$n]}" "$(med_or_na ${early[$n]:-})" "$(med_or_na ${late[$n]:-})" \
      "$(ns_to_s "${cpw[$n]}")" "$(per_us "${cpw[$n]}" "$n")"
  done
  printf '\n'
  if (( ${#sizes[@]} >= 2 )); then
    ratio=$(awk -v a="${wall[$large]}" -v na="$large" -v b="${wall[$small]}" -v nb="$small" \
      'BEGIN { printf "%.2f", (a / na) / (b / nb) }')
    ok=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.3) ? "met" : "FAILED" }')
    [[ $ok == met ]] || fails=$((fails + 1))
    printf -- '- per-file wall time at %s files / at %s files: **%s** (target <= 1.3: %s)\n' \
      "$large" "$small" "$ratio" "$ok"
    printf -- '- the same ratio for the control `cp -r` + `sync`: %s\n' \
      "$(awk -v a="${cpw[$large]}" -v na="$large" -v b="${cpw[$small]}" -v nb="$small" \
        'BEGIN { printf "%.2f", (a / na) / (b / nb) }')"
    # shellcheck disable=SC2086
    printf -- '- per-file CPU time (user+sys) at %s files / at %s files: %s\n' "$large" "$small" \
      "$(awk -v a="$(median ${cpus[$large]})" -v na="$large" -v b="$(median ${cpus[$small]})" -v nb="$small" \
        'BEGIN { printf "%.2f", (a / na) / (b / nb) }')"
    for ((j = 1; j < ${#sizes[@]}; j++)); do
      a=${sizes[j - 1]} b=${sizes[j]}
      printf -- '- marginal cost from %s to %s files: %s us/file\n' "$a" "$b" \
        "$(awk -v ta="${wall[$a]}" -v tb="${wall[$b]}" -v a="$a" -v b="$b" \
          'BEGIN { printf "%.1f", (tb - ta) / (b - a) / 1000 }')"
    done
  fi
  if (( peak[$large] < 131072 )); then ok=met; else ok=FAILED; fails=$((fails + 1)); fi
  printf -- '- peak RSS at %s files: **%s KiB** (%.1f MiB; target < 128 MB = 131,072 KiB: %s)\n' \
    "$large" "${peak[$large]}" "$(awk -v k="${peak[$large]}" 'BEGIN { print k / 1024 }')" "$ok"
  if (( resync_n > 0 )); then
    printf '\nNo-change pass over %s files (rounds rotate the order; %s):\n\n' "$resync_n" \
      "$( (( cold )) && echo 'page cache dropped before each run' || echo 'page cache warm for all')"
    printf '| command | median s | runs s | CPU s (median) | peak RSS KiB |\n'
    printf '|---|---:|---|---:|---:|\n'
    declare -A label=(
      [mediasync]='`mediasync sync` again (all skipped)'
      [rsync]='`rsync -a SRC/ RSYNCDEST/` (nothing to do)'
      [floor]='floor: walk SRC + stat each library copy (C, 1 thread)'
      [dbfloor]='database floor: the rows of N unchanged files (C, SQLite, 1 thread)'
      [dbrows]='database floor without the last_job_id updates (same program, `rows`)')
    declare -A med=()
    for tool in mediasync rsync floor dbfloor dbrows; do
      # shellcheck disable=SC2086  # the lists split on purpose
      med[$tool]=$(median ${nc_ns[$tool]})
      # shellcheck disable=SC2086
      printf '| %s | %s | %s| %s | %s |\n' "${label[$tool]}" "$(ns_to_s "${med[$tool]}")" \
        "$(runs_s ${nc_ns[$tool]})" "$(median ${nc_cpu[$tool]})" "${nc_rss[$tool]}"
    done
    ratio=$(awk -v a="${med[mediasync]}" -v b="${med[rsync]}" 'BEGIN { printf "%.2f", a / b }')
    ok=$(awk -v r="$ratio" 'BEGIN { print (r <= 0.5) ? "met" : "FAILED" }')
    [[ $ok == met ]] || fails=$((fails + 1))
    printf '\n- no-change re-sync / rsync no-op: **%s** (target <= 0.5: %s)\n' "$ratio" "$ok"
    printf -- '- floor / rsync no-op: %s\n' \
      "$(awk -v a="${med[floor]}" -v b="${med[rsync]}" 'BEGIN { printf "%.2f", a / b }')"
    printf -- '- database floor / rsync no-op: %s\n' \
      "$(awk -v a="${med[dbfloor]}" -v b="${med[rsync]}" 'BEGIN { printf "%.2f", a / b }')"
    printf -- '- database floor without last_job_id / rsync no-op: %s\n' \
      "$(awk -v a="${med[dbrows]}" -v b="${med[rsync]}" 'BEGIN { printf "%.2f", a / b }')"
  fi
}
note "removing everything under $work (slow for millions of files)"
(( fails == 0 )) || { note "$fails target(s) failed"; exit 1; }
