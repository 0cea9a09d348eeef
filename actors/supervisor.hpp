// The supervisor: owns the writer and the worker pool, runs jobs, restarts dead workers.
#pragma once

#include <memory>

#include "actors/file_worker.hpp"
#include "actors/interfaces.hpp"
#include "actors/progress_writer.hpp"

namespace ms {
namespace storage { class store; }

struct supervisor_settings {
  std::size_t workers = 8;           ///< sync-stage file-workers
  writer_settings writer;
  std::size_t max_restarts = 100;    ///< worker restarts allowed per restart_period
  std::chrono::seconds restart_period{10};
  /// Makes each worker's ingest function (one per worker: they are not shared between
  /// threads). Empty: ingest into the library; tests inject their own.
  std::function<ingest_function()> make_ingest;
};

/// Spawns the supervisor; it spawns the writer on `db` and the worker pool at once.
supervisor_actor spawn_supervisor(caf::actor_system& sys, std::shared_ptr<storage::store> db,
                                  supervisor_settings settings);

} // namespace ms
