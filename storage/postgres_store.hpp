// The PostgreSQL backend of storage::store (libpqxx 6.4, PostgreSQL 15 or newer).
//
// URLs: anything libpq accepts: postgresql://user@host:port/dbname?param=value,
// postgres://..., or a key=value string ("host=/run/postgresql dbname=ms").
// The password may be in the URL, in PGPASSWORD or in ~/.pgpass (libpq finds
// it); it is never printed: describe() and every error message show the URL
// with the password replaced by "***".
//
// Schema (public contract; the same tables and column names as the SQLite
// backend, see sqlite_store.hpp, with PostgreSQL types, plus the *_raw columns
// below):
//   schema_version(version integer PRIMARY KEY, applied_at timestamptz)
//             one row per applied migration
//   sync_jobs(id bigint identity PRIMARY KEY, source_root, source_root_raw,
//             dest_root, dest_root_raw, status text, total_files bigint,
//             processed_files bigint, failed_files bigint, skipped_files bigint,
//             processed_bytes bigint, created_at timestamptz, updated_at timestamptz,
//             finished_at timestamptz, settings jsonb)
//   file_results(job_id bigint, path, path_raw, stage text, status text, size bigint,
//             sha256 text, error, error_raw, duration_us bigint, recorded_at timestamptz,
//             node text [v3])
//             UNIQUE NULLS NOT DISTINCT (job_id, path, stage, path_raw)  [file_results_key]
//             node: the cluster node whose worker produced the row (the outcome's
//             node as given; NULL when empty, and for rows written before version 3)
//   media_items(id bigint identity PRIMARY KEY, source_root, source_root_raw, path,
//             path_raw, library_path, library_path_raw, size bigint, mtime_ns bigint,
//             sha256 text, mime text, first_job_id bigint, last_job_id bigint,
//             missing boolean,
//             width integer, height integer, taken_at timestamptz, orientation smallint,
//             thumbnail_paths jsonb, preview_path, preview_path_raw)  [v2]
//             UNIQUE NULLS NOT DISTINCT (source_root, path, source_root_raw, path_raw)
//             [media_items_key]
//   job_stage_counters(job_id bigint, stage text, ok_files bigint, failed_files bigint,
//             skipped_files bigint)  [v2]
//             PRIMARY KEY (job_id, stage): per-stage counts, equal to the job's
//             file_results rows of that stage in every committed state
//   status, stage: the same names as in SQLite (CHECK constraints).
// The image columns (version 2), written by commit() for new rows with touches_media:
//   - stage processing sets width, height, orientation (as given: 0 if unknown),
//     taken_at and thumbnail_paths; stage watermark sets preview_path. Items
//     without a media_items row are left alone. Within one batch the media
//     upserts (stage sync) apply first, then the image columns: the pipeline's
//     order for one file;
//   - a sync outcome whose sha256 differs from the stored one (new content)
//     clears thumbnail_paths and preview_path (those files show the old
//     content); one without a hash or with the same hash keeps them;
//   - taken_at: from the outcome's ISO-8601 text (see pg_timestamptz_literal).
//     EXIF times usually carry no offset: such a time is stored as if it were
//     UTC, so `taken_at AT TIME ZONE 'UTC'` gives back the camera's wall-clock
//     time. Empty or invalid text is stored as NULL (it never fails a commit);
//   - thumbnail_paths: a jsonb array of library-relative paths, largest first
//     (CHECK: an array). JSON holds only UTF-8 text, so in a path that is not
//     valid UTF-8 every invalid byte is replaced by U+FFFD (as in the SQLite
//     backend), and so is NUL (which jsonb refuses and no file name holds):
//     such a path reads back readable but not exact. lookup() returns the array;
//   - preview_path follows the *_raw scheme below (exact bytes, like library_path).
// Migration 2 backfills job_stage_counters from the file_results rows already
// there; stop writers of an older mediasync before migrating (a version 1
// writer still connected afterwards would add rows without counting them).
// Migration 3 adds the nullable file_results.node (no rewrite of the table, no
// backfill: older rows keep NULL); a version 2 writer still connected afterwards
// writes rows without a node.
//
// File-system names (not valid UTF-8 in general) -- the columns source_root,
// dest_root, path, library_path, preview_path and error, each `X text COLLATE "C"` with a
// companion `X_raw bytea`:
//   - when the value is valid UTF-8 without NUL bytes (nearly always), X holds it
//     exactly and X_raw is NULL;
//   - otherwise X holds a readable display form, in which every byte that is not
//     part of a valid UTF-8 sequence (and every NUL) is written as the four
//     characters \xHH (lower-case hex), and X_raw holds the exact bytes.
//   So `COALESCE(X_raw, convert_to(X, 'UTF8'))` is always the exact value, and
//   plain SQL on X reads well. A display form can equal some other, valid name
//   (a file really named "a\xff"): the keys include X_raw, compared with NULLS
//   NOT DISTINCT, so both are distinct rows, and every lookup matches X and X_raw.
//   sha256, mime and node (plain text written by mediasync) use the display form only.
// Other conventions:
//   - optional text (sha256, mime, library_path, error, finished_at, node) is NULL
//     when empty; it reads back as an empty string;
//   - timestamps are timestamptz set by the server (now(): the transaction start);
//     job_row's fields read them as ISO-8601 UTC with milliseconds
//     (2026-11-28T12:00:00.123Z);
//   - settings is jsonb (a JSON object); it reads back as compact JSON, its
//     keys possibly in another order;
//   - media_items.missing is boolean (SQLite: 0/1).
//
// Migrations: read_write opening applies the pending ones (each in its own
// transaction, serialised across processes by an advisory lock), so opening
// read_write is what `mediasync migrate` needs. read_only opening never writes
// and refuses a database without the current schema. A database whose
// schema_version is newer than postgres_schema_version is refused in both modes
// (schema_too_new). The database must use the UTF8 encoding (or SQL_ASCII).
//
// Concurrency: several read_write stores (separate processes, separate jobs)
// may share one database: job ids come from an identity column, commit()
// touches only its own job's file_results, sync_jobs and job_stage_counters
// rows, and media_items upserts are ON CONFLICT DO UPDATE in key order; a batch
// with image outcomes first locks the existing media_items rows it writes, in
// the same key order (ms_lock_media: measured to cost about 10% of such a
// batch's commit). So two jobs on the same source do not deadlock each other,
// but for one rare case (both inserting the same new items while one of them
// also writes image columns); a deadlock or serialization failure reported by
// the server is retried inside commit(), up to 3 attempts.
// Readers see committed states only: job counters (sync_jobs, job_stage_counters)
// always equal their rows.
//
// Connection loss: a call that finds the connection broken (server restart,
// pg_terminate_backend, network) throws error(errc::connection_lost) and drops
// the connection; its transaction is rolled back by the server. The next call
// reconnects first (and throws connection_lost again while the server is
// unreachable). One exception: when the connection breaks while COMMIT is in
// flight, the outcome is unknown (the message says so); commit() is idempotent,
// so re-applying the batch is always safe. Such a commit's rows are remembered
// (in memory): the next commit() of the same outcomes that returns counts in its
// commit_stats the ones the lost COMMIT did apply, so the stats summed over a
// job's commits equal its counters even then.
//
// commit(), measured to pick (bench/pg_writer_bench.cpp; server-side times for
// 500 outcomes, half of them touching media, on a loaded 2-core machine):
//   - first try, one transaction: COPY of the rows straight into file_results
//     (libpqxx's tablewriter, the one 6.4 class that sends COPY text as given),
//     then one statement that upserts media_items from arrays (one text-literal
//     array parameter per column, unnested) and adds the rows to the sync_jobs
//     counters and to job_stage_counters. As every row of a successful COPY is
//     new, nothing has to come back from the INSERT. About 20% faster end to
//     end than the best single-statement form below, as COPY inserts in bulk;
//   - when a row exists already (a redone batch), the COPY fails with a unique
//     violation (an ERROR line in the server log), the transaction rolls back,
//     and the batch runs again as one statement: INSERT ... SELECT FROM
//     unnest(arrays) ON CONFLICT DO NOTHING RETURNING the new rows, media_items
//     upserted for those, counters from those (3.1-4.2 ms server time; the
//     same statement with a plain INSERT: 2.4-2.6 ms); it returns the
//     positions of the new rows, from which commit() fills commit_stats;
//   - in both cases, when the new rows include processing / watermark outcomes
//     with touches_media, one more statement in the same transaction (one
//     round trip) sets their media_items image columns from arrays (one
//     element per item). A batch of sync outcomes only (the bulk of a first
//     sync) does not pay for it. Deadlocks with a concurrent job writing the
//     same items are retried like those of the upsert.
// The client spends about 0.4 us per outcome; the server's inserts dominate.
// All statements use generic plans (plan_cache_mode = force_generic_plan): custom
// plans were measured to go badly wrong for lookup() (13 s instead of 3 ms for
// 1,000 paths).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "storage/store.hpp"

namespace ms::storage {

/// The PostgreSQL schema version this binary creates and understands.
inline constexpr int postgres_schema_version = 3;

/// The SQL of migration `version` (1 .. postgres_schema_version; it brings the
/// schema from version - 1 to version, without the schema_version row), or ""
/// for any other number. For tests and tools that build an older schema.
std::string_view postgres_migration_sql(int version);

/// media_items.taken_at: `iso` (YYYY-MM-DD, 'T' or ' ', HH:MM:SS, optional
/// .fraction, optional Z / +HH:MM / +HHMM / +HH offset; every field in range,
/// seconds up to 60) as a timestamptz literal with an explicit offset
/// ("2021-07-04 12:30:00+00:00"); a time without an offset is taken as UTC,
/// fractions beyond microseconds are cut. False (and `out` empty) otherwise.
bool pg_timestamptz_literal(std::string_view iso, std::string& out);

/// True if `url` names a PostgreSQL database: postgres:// or postgresql://
/// (any case), or a libpq key=value connection string (with host=, hostaddr=,
/// dbname=, service= or user=).
bool is_postgres_url(std::string_view url);

/// The URL handed to libpq: as given, but with the scheme in lower case
/// (libpq recognises only "postgresql://" and "postgres://").
std::string libpq_conninfo(const std::string& url);

/// `url` with any password replaced by "***": the userinfo password of a URL,
/// and password=... (keyword or URL query parameter, quoted or not).
std::string redact_url(std::string url);

/// The display form of a file-system name (see the header comment): `bytes`
/// itself when it is valid UTF-8 without NUL, else with every invalid byte
/// written \xHH. Sets `exact` to whether the display form is the name itself.
std::string pg_display_form(std::string_view bytes, bool& exact);

/// A store on one PostgreSQL database. Owns one connection and its prepared
/// statements. Not thread-safe: one owner at a time.
/// Every failing call throws storage::error naming the redacted URL.
class postgres_store final : public store {
public:
  /// Connects to `url`. In read_write mode applies pending migrations; in
  /// read_only mode every transaction is READ ONLY and the database must carry
  /// the current schema.
  /// Throws: bad_url (the URL does not parse), cannot_open (refused connection,
  /// unknown host, authentication failure, missing database, no mediasync
  /// schema in read_only mode, not a mediasync database, server older than
  /// PostgreSQL 15 or not UTF8), schema_too_new, io.
  postgres_store(std::string url, open_mode mode);
  ~postgres_store() override;

  /// The URL with the password redacted.
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
  /// See store::commit and sqlite_store::commit (same media rules). Outcomes
  /// repeating a (path, stage) within the batch count as duplicates after the
  /// first. Throws not_found (nothing written) if the job does not exist, and
  /// connection_lost (nothing written, except when the connection broke during
  /// COMMIT: then re-applying the batch is the way to know) when the
  /// connection is gone.
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
