// The storage interface. One implementation per backend (SQLite now).
// Storage knows nothing of actors; the progress-writer is its only writer.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "storage/records.hpp"

namespace ms::storage {

/// Why a storage call failed.
enum class errc {
  bad_url,          ///< the database URL or path does not parse
  cannot_open,      ///< file or server not reachable / not openable
  schema_too_new,   ///< the database was written by a newer mediasync
  io,               ///< any other database error (disk full, corruption, ...)
  not_found,        ///< a named row (job) does not exist
  connection_lost,  ///< the server went away; the call did nothing (its transaction rolled
                    ///< back or never started). The next call reconnects first, and throws
                    ///< connection_lost again while the server is unreachable.
};

/// Thrown by every store call that fails. what() names the database and the cause.
class error : public std::runtime_error {
public:
  error(errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  errc code() const noexcept { return code_; }

private:
  errc code_;
};

enum class open_mode { read_write, read_only };

/// Counts by stage and status: m[stage][status], indexed by the values of
/// ms::stage and ms::file_status.
using stage_status_counts = std::array<std::array<std::uint64_t, 3>, stage_count>;

/// Counter increments one commit applied (only rows that were new count).
/// Summed over every commit of a job (that returned), the numbers equal the
/// job's rows: per_stage equals job_stage_counters, per_stage[sync] and ok_bytes
/// equal sync_jobs' counters (and count_rows()). A backend that can lose the
/// reply to its COMMIT (PostgreSQL: the connection broke during COMMIT, the call
/// threw connection_lost) counts the rows that COMMIT applied in the next commit
/// of the same outcomes that returns (as inserted, not as duplicates), so the
/// sums stay exact.
struct commit_stats {
  std::uint64_t inserted = 0;   ///< result rows newly inserted
  std::uint64_t duplicates = 0; ///< result rows already present (idempotent redo)
  /// The newly inserted rows by stage and status; their sum is `inserted`.
  stage_status_counts per_stage{};
  /// Sum of `size` of the newly inserted stage sync ok rows: what the job's
  /// processed_bytes grew by.
  std::uint64_t ok_bytes = 0;
};

/// A database holding sync_jobs, file_results and media_items.
/// Not thread-safe: one owner (the progress-writer, or a reader command).
class store {
public:
  virtual ~store() = default;
  store() = default;
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  /// Human-readable description of the database (path or URL without password).
  virtual std::string describe() const = 0;

  /// Inserts a new sync_jobs row with status `running`; returns its id.
  virtual std::uint64_t create_job(const std::string& source_root, const std::string& dest_root,
                                   const std::string& settings_json) = 0;

  /// Sets a job's status; `finished` also sets finished_at (else clears it).
  virtual void set_job_status(std::uint64_t job_id, job_status status, bool finished) = 0;

  /// Raises total_files to at least `total` (never lowers it).
  virtual void raise_total(std::uint64_t job_id, std::uint64_t total) = 0;

  virtual std::optional<job_row> job(std::uint64_t job_id) = 0;

  /// The newest `limit` jobs, newest first.
  virtual std::vector<job_row> jobs(std::size_t limit) = 0;

  /// Looks up `paths` (relative to `source_root`) for `job_id` and stage sync.
  /// REQUIRES: out.size() == paths.size() on return, in the same order.
  virtual void lookup(std::uint64_t job_id, const std::string& source_root,
                      const std::vector<std::string>& paths, std::vector<known_file>& out) = 0;

  /// Number of media_items under `source_root` that are not marked missing.
  virtual std::uint64_t count_known(const std::string& source_root) = 0;

  /// One transaction: inserts the result rows (ignoring any (job, path, stage)
  /// already present), upserts media_items for outcomes with touches_media,
  /// and adds exactly the newly inserted rows to the job's counters.
  /// Idempotent: applying the same outcomes twice changes nothing the second time.
  /// All outcomes must belong to `job_id`; `source_root` is that job's source root.
  /// A non-zero `total` also raises the job's total_files to at least `total` (as
  /// raise_total), in the same transaction: one durable write per batch, not two.
  virtual commit_stats commit(std::uint64_t job_id, const std::string& source_root,
                              const std::vector<file_outcome>& outcomes,
                              std::uint64_t total) = 0;

  /// commit() leaving total_files as it is.
  commit_stats commit(std::uint64_t job_id, const std::string& source_root,
                      const std::vector<file_outcome>& outcomes) {
    return commit(job_id, source_root, outcomes, 0);
  }

  /// Marks media_items under `source_root` as missing when job `job_id`
  /// (a complete scan of that root) did not see them. Returns how many.
  virtual std::uint64_t mark_missing(std::uint64_t job_id, const std::string& source_root) = 0;

  /// Recounts a job's rows from file_results (for checks and tests).
  virtual row_counts count_rows(std::uint64_t job_id) = 0;

  /// A job's rows per node that produced them, by node name.
  virtual std::vector<node_rows> node_counts(std::uint64_t job_id) = 0;
};

/// Opens (and, in read_write mode, creates and migrates) the database named by
/// `url`: a file path or `sqlite:PATH` / `sqlite://PATH` for SQLite.
/// Throws storage::error with a message naming `url` on failure.
std::unique_ptr<store> open_store(const std::string& url, open_mode mode = open_mode::read_write);

/// Checks, without opening anything, that `url` names a database open_store() can try:
/// a non-empty SQLite path, or a PostgreSQL URL or key=value string libpq parses (with
/// valid port numbers). Throws storage::error(bad_url) naming `url` (password hidden).
void check_url(const std::string& url);

} // namespace ms::storage
