// Storage behaviours every store backend must show, written once against the
// store interface: each takes a factory opening the database under test, so the
// SQLite and the PostgreSQL tests run the same cases (tests/postgres_store.cpp,
// and at the end of tests/store_contract.cpp for SQLite). What the interface does
// not return (job_stage_counters, the image columns) each backend's test reads
// with SQL through a `probe`. Checks use Catch2 assertions.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "storage/store.hpp"

namespace ms::test::contract {

/// Opens a store on the database under test (a new connection each call).
using open_fn = std::function<std::unique_ptr<storage::store>(storage::open_mode)>;

/// Counts of one job by stage and status: m[stage][status], indexed by the
/// values of ms::stage and ms::file_status.
using stage_matrix = std::array<std::array<std::uint64_t, 3>, stage_count>;

/// Adds `n` to m[stage][status] given their stored names; fails the test on an
/// unknown name.
void count_into(stage_matrix& m, const std::string& stage, const std::string& status,
                std::uint64_t n);

/// media_items' image columns of one row, as the backend's probe reads them.
struct image_columns {
  std::optional<std::int64_t> width, height, orientation; ///< nullopt: NULL
  /// "YYYY-MM-DDTHH:MM:SS" (PostgreSQL: the stored instant in UTC); "" for NULL.
  std::string taken_at;
  bool has_thumbnails = false; ///< thumbnail_paths is not NULL
};

/// Rows as the probes read them: one string per column, NULL as "<NULL>".
using text_rows = std::vector<std::vector<std::string>>;

/// Reads of the database under test that the store interface does not offer,
/// done with SQL on a connection of their own (each backend's test provides them).
struct probe {
  /// job_stage_counters of `job` (a missing row counts 0).
  std::function<stage_matrix(std::uint64_t job)> stage_counters;
  /// file_results of `job` counted by stage and status.
  std::function<stage_matrix(std::uint64_t job)> stage_rows;
  /// The image columns of the media item (root, path), or nullopt when there is
  /// no such row. ASCII names only.
  std::function<std::optional<image_columns>(const std::string& root, const std::string& path)>
      image;
  /// file_results (path, stage, node) of `job`, ordered by path and stage; a NULL
  /// node reads "<NULL>". ASCII paths only.
  std::function<text_rows(std::uint64_t job)> nodes;
};

/// A matrix from job_stage_counters rows (stage, ok_files, failed_files, skipped_files).
stage_matrix counters_matrix(const text_rows& rows);
/// A matrix from file_results counts (stage, status, count).
stage_matrix rows_matrix(const text_rows& rows);
/// The image columns from a row (width, height, orientation, taken_at,
/// thumbnail_paths IS NOT NULL), `true_text` being how the backend writes true.
image_columns image_columns_of(const std::vector<std::string>& row, const std::string& true_text);

struct caught {
  storage::errc code;
  std::string what;
};

/// Runs `f`, which must throw storage::error; returns its code and message.
template <class F>
caught expect_error(F&& f) {
  try {
    f();
  } catch (const storage::error& e) {
    return {e.code(), e.what()};
  }
  FAIL("expected a storage::error, none was thrown");
  throw std::logic_error("unreachable");
}

bool contains(const std::string& hay, const std::string& needle);

/// One outcome: ok ones carry sha256, mime and library_path "2026/11/28/PATH",
/// the others an error; mtime_ns = 1.7e18 + size, duration_us 42.
file_outcome outcome(std::uint64_t job, std::string path, file_status st, std::uint64_t size,
                     bool touches_media = false);
/// A mixed batch: ok (touching media), failed and skipped, sizes 1000 + i.
std::vector<file_outcome> mixed_batch(std::uint64_t job, int first, int n);
void require_counters_match_rows(storage::store& st, std::uint64_t job);
/// job_stage_counters of `job` equal its file_results rows per stage and status.
void require_stage_counters_match_rows(const probe& pr, std::uint64_t job);
/// An outcome of stage `stg` (see outcome(); image stages carry no sha256, mime or
/// library path).
file_outcome stage_outcome(std::uint64_t job, std::string path, stage stg, file_status st,
                           bool touches_media = false);
/// An ok processing outcome with touches_media and the given image data.
file_outcome processing_ok(std::uint64_t job, std::string path, std::int32_t width,
                           std::int32_t height, std::int32_t orientation, std::string taken_at,
                           std::vector<std::string> thumbnails);
/// An ok watermark outcome with touches_media and the given preview path.
file_outcome watermark_ok(std::uint64_t job, std::string path, std::string preview);
/// True for ISO-8601 UTC with milliseconds: "2026-11-28T12:00:00.123Z".
bool is_iso_ms_utc(const std::string& s);
/// Names that are awkward in SQL, in text encodings or in both.
const std::vector<std::string>& odd_names();

// The behaviours. Each starts from an empty database.
void commit_keeps_counters_equal_to_rows(const open_fn& open);
void reapplying_a_batch_is_a_noop(const open_fn& open);
void failing_commits_write_nothing(const open_fn& open);
void jobs_are_created_finished_totalled_and_listed(const open_fn& open);
void odd_names_round_trip(const open_fn& open);
void media_upsert_keeps_first_job_id(const open_fn& open);
void lookup_reports_media_and_results(const open_fn& open);
void mark_missing_marks_only_unseen(const open_fn& open);
void read_only_reads_and_refuses_writes(const open_fn& open);
void lookup_reports_the_stages_done(const open_fn& open);
// Schema version 2: the image stages.
void stage_counters_equal_the_rows_of_each_stage(const open_fn& open, const probe& pr);
void image_stages_write_the_media_columns(const open_fn& open, const probe& pr);
void new_content_clears_the_derived_files(const open_fn& open, const probe& pr);
// commit_stats: per_stage and ok_bytes count exactly the newly inserted rows.
void commit_stats_count_exactly_the_new_rows(const open_fn& open, const probe& pr);
// Schema version 3: file_results.node, the node whose worker produced the row.
void results_record_the_node(const open_fn& open, const probe& pr);

} // namespace ms::test::contract
