// Storage behaviours every store backend must show, written once against the
// store interface: each takes a factory opening the database under test, so the
// SQLite and the PostgreSQL tests run the same cases (tests/postgres_store.cpp,
// and below for SQLite). Checks use Catch2 assertions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "storage/store.hpp"

namespace ms::test::contract {

/// Opens a store on the database under test (a new connection each call).
using open_fn = std::function<std::unique_ptr<storage::store>(storage::open_mode)>;

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

} // namespace ms::test::contract
