// The progress-writer: the only actor that writes to the database.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "actors/interfaces.hpp"

namespace ms {
namespace storage { class store; }

struct writer_settings {
  std::size_t batch_size = 200;                        ///< commit when this many are buffered
  std::chrono::milliseconds flush_interval{100};       ///< ... or when the oldest waited this long
  /// A lost database connection is retried with exponential backoff from `reconnect_initial`
  /// up to `reconnect_max` per wait; after `reconnect_limit` the jobs end interrupted.
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{5000};
  std::chrono::milliseconds reconnect_limit{60000};
};

/// Spawns the writer as a detached actor owning `db` (opened by the caller).
progress_writer_actor spawn_progress_writer(caf::actor_system& sys,
                                            std::shared_ptr<storage::store> db,
                                            writer_settings settings);

} // namespace ms
