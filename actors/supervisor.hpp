// The supervisor: owns the writer and the worker pool, runs jobs, restarts dead workers.
#pragma once

#include <array>
#include <memory>

#include "actors/file_worker.hpp"
#include "actors/imaging.hpp"
#include "actors/interfaces.hpp"
#include "actors/progress_writer.hpp"

namespace ms {
namespace storage { class store; }
class metrics;

struct supervisor_settings {
  /// Workers per stage (sync, processing, watermark); 0 leaves a stage without a pool
  /// (its jobs must not enable it).
  std::array<std::size_t, stage_count> workers{8, 10, 5};
  writer_settings writer;
  std::size_t max_restarts = 100;    ///< worker restarts allowed per restart_period
  std::chrono::seconds restart_period{10};
  /// Makes each worker's function, per stage (one per worker: they are not shared between
  /// threads). Empty: the real stage (ingest, thumbnails, watermark); tests inject their own.
  std::array<std::function<ingest_function()>, stage_count> make_work;
  imaging_settings imaging;          ///< for the processing and watermark stages
  int vips_threads = 1;              ///< threads per libvips pipeline (cores / processing workers)
  std::shared_ptr<metrics> registry;  ///< queue depths and the writer's figures go here (may be null)
  std::string node_name;             ///< this node's name: file_results.node of local work
};

/// Spawns the supervisor; it spawns the writer on `db` and the worker pool at once.
supervisor_actor spawn_supervisor(caf::actor_system& sys, std::shared_ptr<storage::store> db,
                                  supervisor_settings settings);

} // namespace ms
