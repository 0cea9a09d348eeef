// The progress-writer: the only actor that writes to the database.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "actors/interfaces.hpp"

namespace ms {
namespace storage { class store; }
class metrics;

struct writer_settings {
  /// Commit when this many outcomes that wrote into the library are buffered, or 8 times
  /// as many outcomes in all (those that wrote nothing: unchanged files, skips).
  std::size_t batch_size = 200;
  std::chrono::milliseconds flush_interval{100};       ///< ... or when the oldest waited this long
  /// A lost database connection is retried with exponential backoff from `reconnect_initial`
  /// up to `reconnect_max` per wait; after `reconnect_limit` the jobs end interrupted.
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{5000};
  std::chrono::milliseconds reconnect_limit{60000};
  /// Where the writer counts what it commits (see writer_metrics below); null: no metrics.
  /// (Qualified: a member named like its unqualified type does not compile with GCC.)
  std::shared_ptr<ms::metrics> metrics{};
};

/// The metric families the writer declares in `writer_settings::metrics` and updates.
/// The counters count only rows a commit newly inserted, so they equal what the
/// database's counters grew by (a redone batch counts nothing twice).
namespace writer_metrics {
/// counter {stage, status}: result rows committed (the sum of job_stage_counters).
inline constexpr const char* files = "mediasync_files_total";
/// counter: bytes of the stage sync ok rows committed (the sum of processed_bytes).
inline constexpr const char* bytes = "mediasync_bytes_total";
/// counter: batch commits (one transaction each) that succeeded.
inline constexpr const char* commits = "mediasync_commits_total";
/// histogram: outcomes per successful commit.
inline constexpr const char* batch_size = "mediasync_commit_batch_size";
/// histogram: seconds per successful commit: the durability barrier (syncfs) plus the
/// transaction.
inline constexpr const char* duration = "mediasync_commit_duration_seconds";
/// gauge: outcomes buffered for the next commit.
inline constexpr const char* buffered = "mediasync_writer_buffered_outcomes";
/// counter: commits that found the database connection lost (the batch is held and
/// retried with backoff).
inline constexpr const char* connection_lost = "mediasync_db_connection_lost_total";
} // namespace writer_metrics

/// Declares the writer_metrics families in `m` (idempotent; throws std::logic_error if
/// one of them is declared differently there) and makes the series without labels and
/// every {stage, status} of mediasync_files_total visible at 0.
void describe_writer_metrics(metrics& m);

/// Spawns the writer as a detached actor owning `db` (opened by the caller).
/// Declares the writer_metrics families first when `settings.metrics` is set
/// (throws std::logic_error if the registry holds one of them declared differently).
progress_writer_actor spawn_progress_writer(caf::actor_system& sys,
                                            std::shared_ptr<storage::store> db,
                                            writer_settings settings);

} // namespace ms
