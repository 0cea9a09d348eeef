// SQLite backend: schema, migrations, prepared statements, the batch commit.
// See sqlite_store.hpp for the schema contract.
#include "storage/sqlite_store.hpp"

#include <sqlite3.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio> // renameat2, RENAME_NOREPLACE
#include <cstring>
#include <ctime>
#include <iterator>
#include <limits>

#include <nlohmann/json.hpp>

namespace ms::storage {
namespace {

// ---------------------------------------------------------------------------
// Schema. migrations[i] brings the database from version i to version i + 1;
// each runs in its own transaction together with its schema_version row.
// Never edit an applied migration: append a new one.

constexpr const char* migrations[] = {
    // version 1: initial schema.
    R"sql(
CREATE TABLE sync_jobs (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  source_root     TEXT    NOT NULL,
  dest_root       TEXT    NOT NULL,
  status          TEXT    NOT NULL
                  CHECK (status IN ('running', 'interrupted', 'completed', 'failed')),
  total_files     INTEGER NOT NULL DEFAULT 0,
  processed_files INTEGER NOT NULL DEFAULT 0,
  failed_files    INTEGER NOT NULL DEFAULT 0,
  skipped_files   INTEGER NOT NULL DEFAULT 0,
  processed_bytes INTEGER NOT NULL DEFAULT 0,
  created_at      TEXT    NOT NULL,
  updated_at      TEXT    NOT NULL,
  finished_at     TEXT,
  settings        TEXT    NOT NULL DEFAULT '{}'
);

CREATE TABLE file_results (
  job_id      INTEGER NOT NULL,
  path        TEXT    NOT NULL,
  stage       TEXT    NOT NULL CHECK (stage IN ('sync', 'processing', 'watermark')),
  status      TEXT    NOT NULL CHECK (status IN ('ok', 'skipped', 'failed')),
  size        INTEGER NOT NULL DEFAULT 0,
  sha256      TEXT,
  error       TEXT,
  duration_us INTEGER NOT NULL DEFAULT 0,
  recorded_at TEXT    NOT NULL,
  PRIMARY KEY (job_id, path, stage)
) WITHOUT ROWID;

CREATE TABLE media_items (
  id           INTEGER PRIMARY KEY,
  source_root  TEXT    NOT NULL,
  path         TEXT    NOT NULL,
  library_path TEXT,
  size         INTEGER NOT NULL,
  mtime_ns     INTEGER NOT NULL,
  sha256       TEXT,
  mime         TEXT,
  first_job_id INTEGER NOT NULL,
  last_job_id  INTEGER NOT NULL,
  missing      INTEGER NOT NULL DEFAULT 0,
  UNIQUE (source_root, path)
);
)sql",
    // version 2: the image stages (processing, watermark).
    R"sql(
ALTER TABLE media_items ADD COLUMN width INTEGER;
ALTER TABLE media_items ADD COLUMN height INTEGER;
ALTER TABLE media_items ADD COLUMN taken_at TEXT;
ALTER TABLE media_items ADD COLUMN orientation INTEGER;
ALTER TABLE media_items ADD COLUMN thumbnail_paths TEXT;
ALTER TABLE media_items ADD COLUMN preview_path TEXT;
CREATE TABLE job_stage_counters (
  job_id        INTEGER NOT NULL,
  stage         TEXT    NOT NULL CHECK (stage IN ('sync', 'processing', 'watermark')),
  ok_files      INTEGER NOT NULL DEFAULT 0,
  failed_files  INTEGER NOT NULL DEFAULT 0,
  skipped_files INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, stage)
) WITHOUT ROWID;
INSERT INTO job_stage_counters (job_id, stage, ok_files, failed_files, skipped_files)
  SELECT job_id, stage, SUM(status = 'ok'), SUM(status = 'failed'), SUM(status = 'skipped')
  FROM file_results GROUP BY job_id, stage;
)sql",
    // version 3: clustered mode: the node whose worker produced each result row
    // (NULL for the rows written before).
    R"sql(
ALTER TABLE file_results ADD COLUMN node TEXT;
)sql",
    // version 4: the same CHECK constraints written as OR chains. SQLite 3.40 evaluates
    // "x IN (three or more constants)" by building an ephemeral index at every execution
    // of a statement, twice per file_results row inserted (~2.8 us of the ~4 us an insert
    // costs; docs/benchmarks.md, "Scale"); "x = a OR x = b OR x = c" is the same
    // constraint, with the same error, at a fraction of the cost. SQLite cannot alter a
    // constraint in place: each table is rebuilt (its documented procedure: create the
    // new table, copy the rows, drop the old one, rename the new one) with the same
    // columns in the same order, names and keys. Readers see the same tables and columns.
    R"sql(
CREATE TABLE file_results_v4 (
  job_id      INTEGER NOT NULL,
  path        TEXT    NOT NULL,
  stage       TEXT    NOT NULL
              CHECK (stage = 'sync' OR stage = 'processing' OR stage = 'watermark'),
  status      TEXT    NOT NULL
              CHECK (status = 'ok' OR status = 'skipped' OR status = 'failed'),
  size        INTEGER NOT NULL DEFAULT 0,
  sha256      TEXT,
  error       TEXT,
  duration_us INTEGER NOT NULL DEFAULT 0,
  recorded_at TEXT    NOT NULL,
  node        TEXT,
  PRIMARY KEY (job_id, path, stage)
) WITHOUT ROWID;
INSERT INTO file_results_v4
  (job_id, path, stage, status, size, sha256, error, duration_us, recorded_at, node)
  SELECT job_id, path, stage, status, size, sha256, error, duration_us, recorded_at, node
  FROM file_results;
DROP TABLE file_results;
ALTER TABLE file_results_v4 RENAME TO file_results;
CREATE TABLE job_stage_counters_v4 (
  job_id        INTEGER NOT NULL,
  stage         TEXT    NOT NULL
                CHECK (stage = 'sync' OR stage = 'processing' OR stage = 'watermark'),
  ok_files      INTEGER NOT NULL DEFAULT 0,
  failed_files  INTEGER NOT NULL DEFAULT 0,
  skipped_files INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, stage)
) WITHOUT ROWID;
INSERT INTO job_stage_counters_v4 (job_id, stage, ok_files, failed_files, skipped_files)
  SELECT job_id, stage, ok_files, failed_files, skipped_files FROM job_stage_counters;
DROP TABLE job_stage_counters;
ALTER TABLE job_stage_counters_v4 RENAME TO job_stage_counters;
)sql",
};
static_assert(std::size(migrations) == sqlite_schema_version,
              "sqlite_schema_version must equal the number of migrations");

constexpr const char* schema_version_ddl =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " applied_at TEXT NOT NULL)";

constexpr const char* write_pragmas =
    "PRAGMA journal_mode = WAL;"
    "PRAGMA synchronous = FULL;"
    "PRAGMA temp_store = MEMORY;"
    "PRAGMA cache_size = -16384;"; // 16 MiB (default 2 MiB); measured: 64 MiB is no faster

constexpr const char* read_pragmas =
    "PRAGMA query_only = 1;"
    "PRAGMA temp_store = MEMORY;"
    "PRAGMA cache_size = -16384;";

/// Turns off SQLite's process-wide memory statistics once, before SQLite
/// initializes (measured: about 10% faster inserts, as every allocation
/// otherwise takes a global mutex). A no-op (SQLITE_MISUSE, ignored) when
/// SQLite is already initialized.
void configure_sqlite_once() {
  static const bool done = [] {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    return true;
  }();
  (void)done;
}

// ---------------------------------------------------------------------------
// Small helpers.

/// Now as ISO-8601 UTC with milliseconds: 2026-11-28T12:00:00.123Z.
std::string now_iso() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<int>(ts.tv_nsec / 1000000));
  return buf;
}

std::int64_t to_i64(std::uint64_t v) {
  return v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
             ? std::numeric_limits<std::int64_t>::max()
             : static_cast<std::int64_t>(v);
}

std::uint64_t to_u64(std::int64_t v) { return v < 0 ? 0 : static_cast<std::uint64_t>(v); }

std::string parent_dir(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

/// Makes a rename in `dir` durable (best effort: errors are ignored, as SQLite's
/// own directory sync at the first WAL write covers the same entry).
void sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

/// Explains why `path` could not be opened, as " (...)", or "" if no reason is found.
std::string diagnose_open(const std::string& path, open_mode mode) {
  struct stat st{};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return " ('" + path + "' is a directory)";
    int want = mode == open_mode::read_only ? R_OK : R_OK | W_OK;
    if (::access(path.c_str(), want) != 0)
      return " (file '" + path + "': " + std::strerror(errno) + ")";
    std::string dir = parent_dir(path);
    if (mode == open_mode::read_write && ::access(dir.c_str(), W_OK | X_OK) != 0)
      return " (directory '" + dir + "' is not writable)";
    return "";
  }
  int file_errno = errno;
  std::string dir = parent_dir(path);
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return " (directory '" + dir + "' does not exist)";
    return " (directory '" + dir + "': " + std::strerror(errno) + ")";
  }
  if (!S_ISDIR(st.st_mode)) return " ('" + dir + "' is not a directory)";
  if (file_errno == ENOENT) {
    if (mode == open_mode::read_only) return " (file does not exist)";
    if (::access(dir.c_str(), W_OK | X_OK) != 0)
      return " (directory '" + dir + "' is not writable)";
    return "";
  }
  return std::string(" (") + std::strerror(file_errno) + ")";
}

/// Storage error code for an SQLite result code.
errc code_for(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CANTOPEN:
    case SQLITE_NOTADB:
      return errc::cannot_open;
    default:
      return errc::io;
  }
}

/// A hint appended to SQLite's own message for the errors users hit.
/// `rc` is an extended result code (the connections enable them).
const char* hint_for(int rc) {
  if (rc == SQLITE_BUSY_RECOVERY)
    return " (another connection was opening the database and recovering its WAL at that"
           " moment)";
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return " (another process is writing to this database; mediasync allows one writer)";
    default:
      return "";
  }
}

// ---------------------------------------------------------------------------
// RAII wrappers.

struct db_closer {
  void operator()(sqlite3* p) const noexcept { sqlite3_close_v2(p); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;

struct stmt_finalizer {
  void operator()(sqlite3_stmt* p) const noexcept { sqlite3_finalize(p); }
};

/// A prepared statement, prepared once and reused. Bind calls take views: the
/// bound bytes must stay alive until the statement is reset (SQLITE_STATIC).
/// Binding errors (index out of range) are programming errors and are not checked.
class statement {
public:
  statement() = default;

  void prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    s_.reset(raw);
    rc_ = rc;
  }
  int prepare_rc() const { return rc_; }
  sqlite3_stmt* get() const { return s_.get(); }

  void bind(int i, std::int64_t v) { sqlite3_bind_int64(s_.get(), i, v); }
  void bind(int i, std::uint64_t v) { sqlite3_bind_int64(s_.get(), i, to_i64(v)); }
  /// Text with its exact bytes (any bytes, not necessarily UTF-8).
  void bind_text(int i, std::string_view v) {
    sqlite3_bind_text(s_.get(), i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  /// Text, or NULL when empty.
  void bind_opt_text(int i, std::string_view v) {
    if (v.empty())
      sqlite3_bind_null(s_.get(), i);
    else
      bind_text(i, v);
  }
  void bind_null(int i) { sqlite3_bind_null(s_.get(), i); }

  int step() { return sqlite3_step(s_.get()); }
  void reset() { sqlite3_reset(s_.get()); }
  void release() {
    sqlite3_reset(s_.get());
    sqlite3_clear_bindings(s_.get());
  }

  std::int64_t col_int(int i) const { return sqlite3_column_int64(s_.get(), i); }
  std::uint64_t col_u64(int i) const { return to_u64(sqlite3_column_int64(s_.get(), i)); }
  /// Column text, exact bytes; NULL reads as empty.
  void col_text(int i, std::string& out) const {
    const unsigned char* p = sqlite3_column_text(s_.get(), i);
    int n = sqlite3_column_bytes(s_.get(), i);
    if (p)
      out.assign(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
    else
      out.clear();
  }
  std::string col_text(int i) const {
    std::string s;
    col_text(i, s);
    return s;
  }

private:
  std::unique_ptr<sqlite3_stmt, stmt_finalizer> s_;
  int rc_ = SQLITE_OK;
};

/// Resets a statement and clears its bindings when leaving scope, so a
/// statement never stays active (holding a read snapshot) or keeps pointers
/// to dead strings, also when an exception leaves the scope.
class in_use {
public:
  explicit in_use(statement& s) : s_(s) {}
  ~in_use() { s_.release(); }
  in_use(const in_use&) = delete;
  in_use& operator=(const in_use&) = delete;

private:
  statement& s_;
};

} // namespace

std::string_view sqlite_write_pragmas() { return write_pragmas; }

std::string_view sqlite_migration_sql(int version) {
  if (version < 1 || version > sqlite_schema_version) return {};
  return migrations[version - 1];
}

// ---------------------------------------------------------------------------

struct sqlite_store::impl {
  std::string path;
  open_mode mode;
  bool opening = true; // errors read "cannot open database ..." until open() is done
  bool scratch = false; // the temporary connection of create_if_missing()
  db_ptr db; // declared before the statements: destroyed after them

  statement begin_read, begin_write, commit_tx, rollback_tx;
  statement insert_result, upsert_media, add_counters, add_stage_counters;
  statement set_image, set_preview;
  statement lookup_media, lookup_result;
  statement insert_job, update_status, raise_total, job_exists, select_job, select_jobs;
  statement count_known, mark_missing, count_rows, node_counts;

  impl(std::string p, open_mode m) : path(std::move(p)), mode(m) {}

  ~impl() {
    // The writer leaves an empty WAL behind: nothing for the next opener to recover.
    // TRUNCATE does not wait (no busy handler): with readers still on the WAL it
    // checkpoints what it can and returns SQLITE_BUSY, which is fine here.
    if (db && !scratch && !opening && mode == open_mode::read_write)
      sqlite3_exec(db.get(), "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  // -- errors ---------------------------------------------------------------

  /// Throws for a failed SQLite call `rc` while doing `what`.
  [[noreturn]] void fail(std::string_view what, int rc) const {
    std::string msg;
    if (opening) {
      msg = "cannot open database '" + path + "'" +
            (mode == open_mode::read_only ? " read-only" : "") + ": ";
      if ((rc & 0xff) != SQLITE_NOTADB) msg += std::string(what) + ": ";
    } else {
      msg = "database '" + path + "': " + std::string(what) + ": ";
    }
    sqlite3* h = db.get();
    if (h && (sqlite3_errcode(h) & 0xff) == (rc & 0xff))
      msg += sqlite3_errmsg(h);
    else
      msg += sqlite3_errstr(rc);
    msg += hint_for(rc);
    throw error(code_for(rc), msg);
  }

  [[noreturn]] void fail(errc code, std::string_view what) const {
    throw error(code, "database '" + path + "': " + std::string(what));
  }

  void require_writable(std::string_view what) const {
    if (mode == open_mode::read_only)
      fail(errc::io, std::string(what) + ": the database is open read-only");
  }

  void exec(const char* sql, std::string_view what) {
    int rc = sqlite3_exec(db.get(), sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) fail(what, rc);
  }

  /// Steps a statement that returns no rows.
  void run(statement& s, std::string_view what) {
    int rc = s.step();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) fail(what, rc);
  }

  /// Steps a query; true on a row, false when done.
  bool next_row(statement& s, std::string_view what) {
    int rc = s.step();
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(what, rc);
  }

  // -- transactions -----------------------------------------------------------

  /// One transaction; rolls back when left without commit() (exception).
  class transaction {
  public:
    transaction(impl& d, bool write, std::string_view what) : d_(d), what_(what) {
      statement& b = write ? d_.begin_write : d_.begin_read;
      in_use u(b);
      d_.run(b, what_);
    }
    void commit() {
      in_use u(d_.commit_tx);
      d_.run(d_.commit_tx, what_);
      done_ = true;
    }
    ~transaction() {
      if (!done_ && !sqlite3_get_autocommit(d_.db.get())) {
        d_.rollback_tx.step();
        d_.rollback_tx.reset();
      }
    }
    transaction(const transaction&) = delete;
    transaction& operator=(const transaction&) = delete;

  private:
    impl& d_;
    std::string_view what_;
    bool done_ = false;
  };

  // -- open -----------------------------------------------------------------

  void open() {
    configure_sqlite_once();
    if (mode == open_mode::read_write) create_if_missing();
    connect();
    configure();
    check_schema_and_migrate();
    prepare_all();
    opening = false;
  }

  /// Opens the connection (no I/O on the file content yet).
  void connect() {
    const bool ro = mode == open_mode::read_only;
    // This SQLite is built with URI filenames on: keep a plain "file:..." path plain.
    std::string fname = path.rfind("file:", 0) == 0 ? "./" + path : path;
    int flags = (ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                SQLITE_OPEN_NOMUTEX;
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(fname.c_str(), &raw, flags, nullptr);
    db.reset(raw);
    if (raw) sqlite3_extended_result_codes(raw, 1);
    if (rc != SQLITE_OK) {
      std::string cause = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
      throw error(errc::cannot_open, "cannot open database '" + path + "'" +
                                         (ro ? " read-only" : "") + ": " + cause +
                                         diagnose_open(path, mode));
    }
    if (!ro && sqlite3_db_readonly(db.get(), "main") == 1)
      throw error(errc::cannot_open, "cannot open database '" + path +
                                         "' for writing: the file is read-only" +
                                         diagnose_open(path, mode));
    // Closing must never take the EXCLUSIVE lock that the default checkpoint-on-close
    // takes: a reader opening at that moment would fail with "database is locked".
    // The writer checkpoints explicitly before closing instead (see ~impl).
    if (!scratch) sqlite3_db_config(db.get(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  }

  void configure() {
    const bool ro = mode == open_mode::read_only;
    exec(ro ? read_pragmas : write_pragmas, "cannot set PRAGMAs");
    if (!ro) {
      std::string jm = pragma_text("PRAGMA journal_mode");
      if (jm != "wal" && jm != "memory")
        fail(errc::io, "cannot enable WAL mode (journal_mode is '" + jm + "')");
    }
  }

  /// Creates a missing database file atomically: builds it (schema, WAL mode) under a
  /// temporary name, closes it cleanly (so it needs no -wal) and renames it into place
  /// without replacing. A reader polling for the file thus never sees it empty, without
  /// tables, or locked by the creation. On any failure here the normal open below
  /// creates the file directly (and reports errors with the real path).
  void create_if_missing() {
    if (path.empty() || path == ":memory:") return;
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0 || errno != ENOENT) return;
    if (::stat(parent_dir(path).c_str(), &st) != 0) return; // reported by the normal open

    std::string tmp = path + ".creating-" + std::to_string(::getpid()) + "-" +
                      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
    auto remove_tmp = [&] {
      for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((tmp + suffix).c_str());
    };
    bool built = false;
    try {
      impl t(tmp, open_mode::read_write);
      t.scratch = true;
      t.connect();
      t.configure();
      t.check_schema_and_migrate();
      built = true;
    } catch (const error&) {
    } // t is closed here: the last connection checkpoints and deletes tmp-wal/-shm
    if (built && ::access((tmp + "-wal").c_str(), F_OK) != 0) {
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) {
        sync_dir(parent_dir(path));
        return;
      }
      // A filesystem without RENAME_NOREPLACE: a hard link is just as exclusive.
      if ((errno == EINVAL || errno == ENOSYS) && ::link(tmp.c_str(), path.c_str()) == 0) {
        ::unlink(tmp.c_str());
        sync_dir(parent_dir(path));
        return;
      }
      // EEXIST: another process created it meanwhile; we open that one.
    }
    remove_tmp();
  }

  std::string pragma_text(const char* sql) {
    statement s;
    s.prepare(db.get(), sql);
    if (s.prepare_rc() != SQLITE_OK) fail(sql, s.prepare_rc());
    return next_row(s, sql) ? s.col_text(0) : std::string();
  }

  /// Current schema version: 0 when schema_version is missing or empty.
  int read_version(bool& has_table, bool& has_other_tables) {
    has_table = false;
    has_other_tables = false;
    const char* what = "cannot read the schema";
    statement s;
    s.prepare(db.get(),
              "SELECT name FROM sqlite_master"
              " WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'");
    if (s.prepare_rc() != SQLITE_OK) fail(what, s.prepare_rc());
    while (next_row(s, what)) {
      if (s.col_text(0) == "schema_version")
        has_table = true;
      else
        has_other_tables = true;
    }
    if (!has_table) return 0;
    statement v;
    v.prepare(db.get(), "SELECT COALESCE(MAX(version), 0) FROM schema_version");
    if (v.prepare_rc() != SQLITE_OK) fail(what, v.prepare_rc());
    return next_row(v, what) ? static_cast<int>(v.col_int(0)) : 0;
  }

  [[noreturn]] void fail_too_new(int found) const {
    throw error(errc::schema_too_new,
                "database '" + path + "' has schema version " + std::to_string(found) +
                    ", newer than version " + std::to_string(sqlite_schema_version) +
                    " that this mediasync supports; use a newer mediasync");
  }

  void check_schema_and_migrate() {
    bool has_table = false, has_other = false;
    int version = read_version(has_table, has_other);
    if (version > sqlite_schema_version) fail_too_new(version);
    if (mode == open_mode::read_only) {
      if (!has_table)
        throw error(errc::cannot_open, "database '" + path +
                                           "' has no mediasync schema (no schema_version table)");
      if (version < sqlite_schema_version)
        throw error(errc::cannot_open,
                    "database '" + path + "' has schema version " + std::to_string(version) +
                        ", this mediasync needs version " +
                        std::to_string(sqlite_schema_version) +
                        "; open it read-write once (e.g. run a sync) to migrate it");
      return;
    }
    if (!has_table && has_other)
      throw error(errc::cannot_open, "database '" + path +
                                         "' is not a mediasync database (it has tables but no "
                                         "schema_version table)");
    for (int v = version + 1; v <= sqlite_schema_version; ++v) migrate_to(v);
  }

  /// Applies migration `v` in one transaction, unless it is already applied.
  void migrate_to(int v) {
    const std::string what = "migration to schema version " + std::to_string(v) + " failed";
    exec("BEGIN IMMEDIATE", what);
    try {
      exec(schema_version_ddl, what);
      bool has_table = false, has_other = false;
      int current = read_version(has_table, has_other);
      if (current > sqlite_schema_version) fail_too_new(current);
      if (current < v) {
        exec(migrations[v - 1], what);
        statement ins;
        ins.prepare(db.get(), "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)");
        if (ins.prepare_rc() != SQLITE_OK) fail(what, ins.prepare_rc());
        std::string ts = now_iso();
        ins.bind(1, static_cast<std::int64_t>(v));
        ins.bind_text(2, ts);
        run(ins, what);
      }
      exec("COMMIT", what);
    } catch (...) {
      if (!sqlite3_get_autocommit(db.get()))
        sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }

  void prep(statement& s, const char* sql) {
    s.prepare(db.get(), sql);
    if (s.prepare_rc() != SQLITE_OK)
      fail(std::string("cannot prepare statement '") + sql + "'", s.prepare_rc());
  }

  void prepare_all() {
    prep(begin_read, "BEGIN");
    prep(begin_write, "BEGIN IMMEDIATE");
    prep(commit_tx, "COMMIT");
    prep(rollback_tx, "ROLLBACK");
    prep(insert_result,
         "INSERT INTO file_results"
         " (job_id, path, stage, status, size, sha256, error, duration_us, recorded_at, node)"
         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
         " ON CONFLICT (job_id, path, stage) DO NOTHING");
    // Content-derived fields (sha256, mime, library_path) are replaced together
    // when the outcome carries a hash, and kept when it does not (a skip that
    // did not re-read the file).
    prep(upsert_media,
         "INSERT INTO media_items"
         " (source_root, path, library_path, size, mtime_ns, sha256, mime,"
         "  first_job_id, last_job_id, missing)"
         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 0)"
         " ON CONFLICT (source_root, path) DO UPDATE SET"
         "  library_path = CASE WHEN excluded.sha256 IS NULL THEN library_path"
         "                      ELSE excluded.library_path END,"
         "  size = excluded.size,"
         "  mtime_ns = excluded.mtime_ns,"
         "  sha256 = COALESCE(excluded.sha256, sha256),"
         "  mime = CASE WHEN excluded.sha256 IS NULL THEN mime ELSE excluded.mime END,"
         "  last_job_id = excluded.last_job_id,"
         "  missing = 0,"
         // New content: the derived files describe the old one.
         "  thumbnail_paths = CASE WHEN excluded.sha256 IS NULL OR excluded.sha256 = sha256"
         "                    THEN thumbnail_paths END,"
         "  preview_path = CASE WHEN excluded.sha256 IS NULL OR excluded.sha256 = sha256"
         "                 THEN preview_path END");
    prep(add_stage_counters,
         "INSERT INTO job_stage_counters (job_id, stage, ok_files, failed_files, skipped_files)"
         " VALUES (?1, ?2, ?3, ?4, ?5)"
         " ON CONFLICT (job_id, stage) DO UPDATE SET"
         "  ok_files = ok_files + excluded.ok_files,"
         "  failed_files = failed_files + excluded.failed_files,"
         "  skipped_files = skipped_files + excluded.skipped_files");
    prep(set_image,
         "UPDATE media_items SET width = ?3, height = ?4, orientation = ?5, taken_at = ?6,"
         " thumbnail_paths = ?7 WHERE source_root = ?1 AND path = ?2");
    prep(set_preview,
         "UPDATE media_items SET preview_path = ?3 WHERE source_root = ?1 AND path = ?2");
    prep(add_counters,
         "UPDATE sync_jobs SET"
         " processed_files = processed_files + ?2,"
         " failed_files = failed_files + ?3,"
         " skipped_files = skipped_files + ?4,"
         " processed_bytes = processed_bytes + ?5,"
         " updated_at = ?6,"
         " total_files = max(total_files, ?7)"
         " WHERE id = ?1");
    prep(lookup_media,
         "SELECT size, mtime_ns, sha256, mime, library_path, missing, thumbnail_paths,"
         " preview_path FROM media_items WHERE source_root = ?1 AND path = ?2");
    prep(lookup_result, "SELECT stage FROM file_results WHERE job_id = ?1 AND path = ?2");
    prep(insert_job,
         "INSERT INTO sync_jobs (source_root, dest_root, status, created_at, updated_at, settings)"
         " VALUES (?1, ?2, 'running', ?3, ?3, ?4)");
    prep(update_status,
         "UPDATE sync_jobs SET status = ?2, updated_at = ?3, finished_at = ?4 WHERE id = ?1");
    prep(raise_total,
         "UPDATE sync_jobs SET total_files = ?2, updated_at = ?3"
         " WHERE id = ?1 AND total_files < ?2");
    prep(job_exists, "SELECT 1 FROM sync_jobs WHERE id = ?1");
    static constexpr const char* job_columns =
        "SELECT id, source_root, dest_root, status, total_files, processed_files,"
        " failed_files, skipped_files, processed_bytes, created_at, updated_at,"
        " finished_at, settings FROM sync_jobs";
    prep(select_job, (std::string(job_columns) + " WHERE id = ?1").c_str());
    prep(select_jobs, (std::string(job_columns) + " ORDER BY id DESC LIMIT ?1").c_str());
    prep(count_known, "SELECT COUNT(*) FROM media_items WHERE source_root = ?1 AND missing = 0");
    prep(mark_missing,
         "UPDATE media_items SET missing = 1"
         " WHERE source_root = ?1 AND missing = 0 AND last_job_id <> ?2"
         " AND NOT EXISTS (SELECT 1 FROM file_results AS f"
         "                 WHERE f.job_id = ?2 AND f.path = media_items.path)");
    prep(count_rows,
         "SELECT status, COUNT(*), COALESCE(SUM(size), 0) FROM file_results"
         " WHERE job_id = ?1 AND stage = 'sync' GROUP BY status");
    prep(node_counts,
         "SELECT COALESCE(node, ''), SUM(stage = 'sync'), SUM(stage = 'processing'),"
         " SUM(stage = 'watermark'),"
         " (julianday(MAX(recorded_at)) - julianday(MIN(recorded_at))) * 86400.0"
         " FROM file_results WHERE job_id = ?1 GROUP BY 1 ORDER BY 1");
  }

  // -- rows -----------------------------------------------------------------

  job_row read_job(const statement& s) const {
    job_row j;
    j.id = s.col_u64(0);
    s.col_text(1, j.source_root);
    s.col_text(2, j.dest_root);
    std::string st = s.col_text(3);
    if (!parse_job_status(st, j.status))
      fail(errc::io, "job " + std::to_string(j.id) + " has an unknown status '" + st + "'");
    j.total_files = s.col_u64(4);
    j.processed_files = s.col_u64(5);
    j.failed_files = s.col_u64(6);
    j.skipped_files = s.col_u64(7);
    j.processed_bytes = s.col_u64(8);
    s.col_text(9, j.created_at);
    s.col_text(10, j.updated_at);
    s.col_text(11, j.finished_at);
    s.col_text(12, j.settings);
    return j;
  }

  bool exists(std::uint64_t job_id, std::string_view what) {
    in_use u(job_exists);
    job_exists.bind(1, job_id);
    return next_row(job_exists, what);
  }
};

// ---------------------------------------------------------------------------

sqlite_store::sqlite_store(std::string path, open_mode mode)
    : d_(std::make_unique<impl>(std::move(path), mode)) {
  d_->open();
}

sqlite_store::~sqlite_store() = default;

std::string sqlite_store::describe() const { return d_->path; }

std::uint64_t sqlite_store::create_job(const std::string& source_root,
                                       const std::string& dest_root,
                                       const std::string& settings_json) {
  const char* what = "cannot create a job";
  d_->require_writable(what);
  std::string_view settings = settings_json.empty() ? std::string_view("{}") : settings_json;
  auto parsed = nlohmann::json::parse(settings, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object())
    d_->fail(errc::io, std::string(what) + ": settings are not a JSON object: " +
                           std::string(settings.substr(0, 200)));
  std::string ts = now_iso();
  auto& s = d_->insert_job;
  in_use u(s);
  s.bind_text(1, source_root);
  s.bind_text(2, dest_root);
  s.bind_text(3, ts);
  s.bind_text(4, settings);
  d_->run(s, what);
  return to_u64(sqlite3_last_insert_rowid(d_->db.get()));
}

void sqlite_store::set_job_status(std::uint64_t job_id, job_status status, bool finished) {
  const std::string what = "cannot set the status of job " + std::to_string(job_id);
  d_->require_writable(what);
  std::string ts = now_iso();
  auto& s = d_->update_status;
  in_use u(s);
  s.bind(1, job_id);
  s.bind_text(2, to_string(status));
  s.bind_text(3, ts);
  if (finished)
    s.bind_text(4, ts);
  else
    s.bind_null(4);
  d_->run(s, what);
  if (sqlite3_changes(d_->db.get()) == 0) d_->fail(errc::not_found, what + ": no such job");
}

void sqlite_store::raise_total(std::uint64_t job_id, std::uint64_t total) {
  const std::string what = "cannot raise total_files of job " + std::to_string(job_id);
  d_->require_writable(what);
  std::string ts = now_iso();
  {
    auto& s = d_->raise_total;
    in_use u(s);
    s.bind(1, job_id);
    s.bind(2, total);
    s.bind_text(3, ts);
    d_->run(s, what);
    if (sqlite3_changes(d_->db.get()) == 1) return;
  }
  if (!d_->exists(job_id, what)) d_->fail(errc::not_found, what + ": no such job");
}

std::optional<job_row> sqlite_store::job(std::uint64_t job_id) {
  const std::string what = "cannot read job " + std::to_string(job_id);
  auto& s = d_->select_job;
  in_use u(s);
  s.bind(1, job_id);
  if (!d_->next_row(s, what)) return std::nullopt;
  return d_->read_job(s);
}

std::vector<job_row> sqlite_store::jobs(std::size_t limit) {
  const char* what = "cannot list jobs";
  std::vector<job_row> out;
  auto& s = d_->select_jobs;
  in_use u(s);
  s.bind(1, static_cast<std::uint64_t>(limit));
  while (d_->next_row(s, what)) out.push_back(d_->read_job(s));
  return out;
}

void sqlite_store::lookup(std::uint64_t job_id, const std::string& source_root,
                          const std::vector<std::string>& paths, std::vector<known_file>& out) {
  const char* what = "cannot look up files";
  out.resize(paths.size());
  if (paths.empty()) return;
  impl::transaction tx(*d_, /*write=*/false, what); // one snapshot for the whole batch
  auto& m = d_->lookup_media;
  auto& r = d_->lookup_result;
  in_use um(m), ur(r);
  m.bind_text(1, source_root);
  r.bind(1, job_id);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    known_file& k = out[i];
    m.bind_text(2, paths[i]);
    if (d_->next_row(m, what)) {
      k.has_media = true;
      k.size = m.col_u64(0);
      k.mtime_ns = m.col_int(1);
      m.col_text(2, k.sha256);
      m.col_text(3, k.mime);
      m.col_text(4, k.library_path);
      k.missing = m.col_int(5) != 0;
      k.thumbnail_paths = thumbnail_paths_from_json(m.col_text(6), k.library_path);
      m.col_text(7, k.preview_path);
    } else {
      k.has_media = false;
      k.missing = false;
      k.size = 0;
      k.mtime_ns = 0;
      k.sha256.clear();
      k.mime.clear();
      k.library_path.clear();
      k.thumbnail_paths.clear();
      k.preview_path.clear();
    }
    m.reset();
    r.bind_text(2, paths[i]);
    k.stages_done = 0;
    stage stg;
    while (d_->next_row(r, what))
      if (parse_stage(r.col_text(0), stg))
        k.stages_done |= static_cast<std::uint8_t>(1u << static_cast<int>(stg));
    k.has_result = (k.stages_done & 1u) != 0;
    r.reset();
  }
  tx.commit();
}

std::uint64_t sqlite_store::count_known(const std::string& source_root) {
  const char* what = "cannot count media items";
  auto& s = d_->count_known;
  in_use u(s);
  s.bind_text(1, source_root);
  return d_->next_row(s, what) ? s.col_u64(0) : 0;
}

commit_stats sqlite_store::commit(std::uint64_t job_id, const std::string& source_root,
                                  const std::vector<file_outcome>& outcomes,
                                  std::uint64_t total) {
  auto what = [&] {
    return "commit of " + std::to_string(outcomes.size()) + " results for job " +
           std::to_string(job_id) + " failed";
  };
  if (d_->mode == open_mode::read_only) d_->require_writable(what());
  for (const file_outcome& o : outcomes)
    if (o.job_id != job_id)
      d_->fail(errc::io, what() + ": an outcome belongs to job " + std::to_string(o.job_id));
  commit_stats stats;
  if (outcomes.empty()) {
    if (total > 0) raise_total(job_id, total);
    return stats;
  }

  const std::string ts = now_iso(); // one timestamp per commit
  sqlite3* db = d_->db.get();
  std::int64_t ok = 0, failed = 0, skipped = 0;
  std::uint64_t bytes = 0;
  std::int64_t per_stage[stage_count][3] = {};  // [stage][status]: newly inserted rows

  impl::transaction tx(*d_, /*write=*/true, "commit");
  auto& ins = d_->insert_result;
  auto& med = d_->upsert_media;
  in_use ui(ins), um(med);
  ins.bind(1, job_id);
  ins.bind_text(9, ts);
  med.bind_text(1, source_root);
  med.bind(8, job_id);

  for (const file_outcome& o : outcomes) {
    ins.bind_text(2, o.path);
    ins.bind_text(3, to_string(o.stg));
    ins.bind_text(4, to_string(o.status));
    ins.bind(5, o.size);
    ins.bind_opt_text(6, o.sha256);
    ins.bind_opt_text(7, o.error);
    ins.bind(8, o.duration_us);
    ins.bind_opt_text(10, o.node);
    int rc = ins.step();
    if (rc != SQLITE_DONE) d_->fail(what(), rc);
    ins.reset();
    if (sqlite3_changes(db) != 1) {
      ++stats.duplicates;
      continue;
    }
    ++stats.inserted;
    ++per_stage[static_cast<int>(o.stg)][static_cast<int>(o.status)];
    ++stats.per_stage[static_cast<std::size_t>(o.stg)][static_cast<std::size_t>(o.status)];
    // The job counters mirror count_rows(), which counts stage sync.
    if (o.stg == stage::sync) {
      switch (o.status) {
        case file_status::ok:
          ++ok;
          bytes += o.size;
          break;
        case file_status::failed: ++failed; break;
        case file_status::skipped: ++skipped; break;
      }
    }
    if (o.touches_media && o.stg == stage::processing) {
      auto& si = d_->set_image;
      in_use usi(si);
      si.bind_text(1, source_root);
      si.bind_text(2, o.path);
      si.bind(3, static_cast<std::int64_t>(o.width));
      si.bind(4, static_cast<std::int64_t>(o.height));
      si.bind(5, static_cast<std::int64_t>(o.orientation));
      si.bind_opt_text(6, o.taken_at);
      const std::string thumbs = thumbnail_paths_to_json(o.thumbnail_paths);  // bound, not copied
      si.bind_text(7, thumbs);
      d_->run(si, what());
    } else if (o.touches_media && o.stg == stage::watermark) {
      auto& sp = d_->set_preview;
      in_use usp(sp);
      sp.bind_text(1, source_root);
      sp.bind_text(2, o.path);
      sp.bind_opt_text(3, o.preview_path);
      d_->run(sp, what());
    } else if (o.touches_media) {
      med.bind_text(2, o.path);
      med.bind_opt_text(3, o.library_path);
      med.bind(4, o.size);
      med.bind(5, o.mtime_ns);
      med.bind_opt_text(6, o.sha256);
      med.bind_opt_text(7, o.mime);
      rc = med.step();
      if (rc != SQLITE_DONE) d_->fail(what(), rc);
      med.reset();
    }
  }

  auto& up = d_->add_counters;
  in_use uu(up);
  up.bind(1, job_id);
  up.bind(2, ok);
  up.bind(3, failed);
  up.bind(4, skipped);
  up.bind(5, bytes);
  up.bind_text(6, ts);
  up.bind(7, total);
  d_->run(up, what());
  if (sqlite3_changes(db) != 1) d_->fail(errc::not_found, what() + ": no such job");
  for (int sg = 0; sg < static_cast<int>(stage_count); ++sg) {
    auto& c = per_stage[sg];
    if (c[0] == 0 && c[1] == 0 && c[2] == 0) continue;
    auto& sc = d_->add_stage_counters;
    in_use usc(sc);
    sc.bind(1, job_id);
    sc.bind_text(2, to_string(static_cast<stage>(sg)));
    sc.bind(3, c[static_cast<int>(file_status::ok)]);
    sc.bind(4, c[static_cast<int>(file_status::failed)]);
    sc.bind(5, c[static_cast<int>(file_status::skipped)]);
    d_->run(sc, what());
  }
  tx.commit();
  stats.ok_bytes = bytes;
  return stats;
}

std::uint64_t sqlite_store::mark_missing(std::uint64_t job_id, const std::string& source_root) {
  const std::string what = "cannot mark missing files for job " + std::to_string(job_id);
  d_->require_writable(what);
  impl::transaction tx(*d_, /*write=*/true, what);
  if (!d_->exists(job_id, what)) d_->fail(errc::not_found, what + ": no such job");
  std::uint64_t n = 0;
  {
    auto& s = d_->mark_missing;
    in_use u(s);
    s.bind_text(1, source_root);
    s.bind(2, job_id);
    d_->run(s, what);
    n = to_u64(sqlite3_changes(d_->db.get()));
  }
  tx.commit();
  return n;
}

row_counts sqlite_store::count_rows(std::uint64_t job_id) {
  const std::string what = "cannot count the rows of job " + std::to_string(job_id);
  row_counts c;
  auto& s = d_->count_rows;
  in_use u(s);
  s.bind(1, job_id);
  std::string status;
  while (d_->next_row(s, what)) {
    s.col_text(0, status);
    std::uint64_t n = s.col_u64(1);
    if (status == "ok") {
      c.ok = n;
      c.ok_bytes = s.col_u64(2);
    } else if (status == "failed") {
      c.failed = n;
    } else if (status == "skipped") {
      c.skipped = n;
    }
  }
  return c;
}

std::vector<node_rows> sqlite_store::node_counts(std::uint64_t job_id) {
  const std::string what = "cannot count the rows per node of job " + std::to_string(job_id);
  std::vector<node_rows> out;
  auto& s = d_->node_counts;
  in_use u(s);
  s.bind(1, job_id);
  while (d_->next_row(s, what)) {
    node_rows n;
    s.col_text(0, n.node);
    for (int i = 0; i < static_cast<int>(stage_count); ++i)
      n.rows[i] = s.col_u64(i + 1);
    n.seconds = sqlite3_column_double(s.get(), 4);
    out.push_back(std::move(n));
  }
  return out;
}

} // namespace ms::storage
