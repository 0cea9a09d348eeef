// The sync-coordinator: runs one job from scan to the last durable ack.
#pragma once

#include <vector>

#include "actors/interfaces.hpp"

namespace ms {

/// The stage worker pools, indexed by stage (sync, processing, watermark).
using worker_pools = std::vector<std::vector<file_worker_actor>>;

/// Spawns a detached coordinator (it scans the source tree: blocking I/O) for `spec`
/// (whose job_id names an existing job row). It reports the end of the job to
/// `supervisor` with done_atom and progress to `listener` (if valid) with progress_atom.
sync_coordinator_actor spawn_sync_coordinator(caf::actor_system& sys, job_spec spec,
                                              progress_writer_actor writer,
                                              worker_pools workers,
                                              supervisor_actor supervisor, caf::actor listener);

} // namespace ms
