// The SQLite backend of storage::store.
//
// Schema (public contract; other tools query these tables directly):
//   schema_version(version INTEGER PRIMARY KEY, applied_at TEXT)   one row per applied migration
//   sync_jobs(id, source_root, dest_root, status, total_files, processed_files,
//             failed_files, skipped_files, processed_bytes, created_at, updated_at,
//             finished_at, settings)
//   file_results(job_id, path, stage, status, size, sha256, error, duration_us, recorded_at,
//             node [v3])
//             PRIMARY KEY (job_id, path, stage), WITHOUT ROWID; node is the cluster node
//             whose worker produced the row, NULL for rows written before version 3
//   media_items(id, source_root, path, library_path, size, mtime_ns, sha256, mime,
//             first_job_id, last_job_id, missing,
//             width, height, taken_at, orientation, thumbnail_paths, preview_path)  [v2]
//             UNIQUE (source_root, path); thumbnail_paths is a JSON array (largest first)
//   job_stage_counters(job_id, stage, ok_files, failed_files, skipped_files)  [v2]
//             PRIMARY KEY (job_id, stage): per-stage counts, equal to the job's
//             file_results rows of that stage in every committed state
//   [v4] the CHECK constraints of file_results and job_stage_counters written as OR
//             chains (same constraints; the tables are rebuilt by the migration)
// Text conventions:
//   - paths are TEXT holding the exact bytes given (possibly invalid UTF-8, may
//     contain newlines or quotes); they round-trip byte-exact;
//   - optional text (sha256, mime, library_path, error, finished_at, node) is NULL
//     when empty; it reads back as an empty string;
//   - timestamps are ISO-8601 UTC with milliseconds: 2026-11-28T12:00:00.123Z.
//
// Concurrency: the database is in WAL mode with exactly one writer (one
// read_write sqlite_store). Readers on other connections see committed states
// only, so job counters always equal their file_results rows. There is no
// busy timeout and no retry: a second writer fails at once with "database is
// locked". To keep readers that poll with fresh connections free of lock errors:
//   - a new database file is built under a temporary name and renamed into
//     place, so it never appears empty, without tables, or locked;
//   - closing never takes the EXCLUSIVE lock of SQLite's checkpoint-on-close
//     (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE); the writer runs a non-blocking
//     wal_checkpoint(TRUNCATE) before closing instead, so DB-wal (usually empty)
//     and DB-shm stay next to the database.
// One window remains, inherent to SQLite without a busy handler: when no
// connection is open, the first one to open runs WAL recovery (microseconds on
// an empty WAL), and a connection opening during it gets SQLITE_BUSY_RECOVERY;
// the store reports that as errc::io "... database is locked".
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "storage/store.hpp"

namespace ms::storage {

/// The schema version this binary creates and understands.
inline constexpr int sqlite_schema_version = 4;

/// The SQL of migration `version` (1 .. sqlite_schema_version; it brings the
/// schema from version - 1 to version, without the schema_version row), or ""
/// for any other number. For tests and tools that build an older schema.
std::string_view sqlite_migration_sql(int version);

/// The PRAGMAs every read_write connection runs at open (one SQL string,
/// several statements). Exposed so benchmarks can configure a raw connection
/// identically.
std::string_view sqlite_write_pragmas();

/// A store on one SQLite database file.
/// The first one constructed in a process turns off SQLite's memory statistics
/// (SQLITE_CONFIG_MEMSTATUS, process-wide) if SQLite is not initialized yet;
/// construct it before other threads use SQLite directly.
/// Owns one sqlite3 connection and its prepared statements. Not thread-safe:
/// one owner at a time (it may be handed to another thread between calls).
/// Every failing call throws storage::error naming the database path.
class sqlite_store final : public store {
public:
  /// Opens `path` (a file path, not a URL). In read_write mode creates the file
  /// if needed, sets the PRAGMAs and applies pending migrations. In read_only
  /// mode never writes: the file must exist and carry the current schema.
  /// Throws: cannot_open (file/directory problems, not a mediasync database,
  /// schema needs upgrading in read_only mode), schema_too_new, io.
  sqlite_store(std::string path, open_mode mode);
  ~sqlite_store() override;

  std::string describe() const override;
  std::uint64_t create_job(const std::string& source_root, const std::string& dest_root,
                           const std::string& settings_json) override;
  void set_job_status(std::uint64_t job_id, job_status status, bool finished) override;
  void raise_total(std::uint64_t job_id, std::uint64_t total) override;
  std::optional<job_row> job(std::uint64_t job_id) override;
  std::vector<job_row> jobs(std::size_t limit) override;
  void lookup(std::uint64_t job_id, const std::string& source_root,
              const std::vector<std::string>& paths, std::vector<known_file>& out) override;
  std::uint64_t count_known(const std::string& source_root) override;
  /// See store::commit. Media rows: an empty sha256, mime or library_path in
  /// the outcome keeps the stored value (an unchanged skip need not re-send
  /// them); size, mtime_ns and last_job_id are always written, missing reset.
  /// Throws not_found (nothing written) if the job does not exist.
  using store::commit;
  commit_stats commit(std::uint64_t job_id, const std::string& source_root,
                      const std::vector<file_outcome>& outcomes, std::uint64_t total) override;
  std::uint64_t mark_missing(std::uint64_t job_id, const std::string& source_root) override;
  row_counts count_rows(std::uint64_t job_id) override;
  std::vector<node_rows> node_counts(std::uint64_t job_id) override;

private:
  struct impl;
  std::unique_ptr<impl> d_;
};

} // namespace ms::storage
