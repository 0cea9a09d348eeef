// The sync-coordinator: runs one job from scan to the last durable ack.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "actors/interfaces.hpp"

namespace ms {

class metrics;

/// The stage worker pools, indexed by stage (sync, processing, watermark).
using worker_pools = std::vector<std::vector<file_worker_actor>>;

/// Spawns a detached coordinator (it scans the source tree: blocking I/O) for `spec`
/// (whose job_id names an existing job row). It reports the end of the job to
/// `supervisor` with done_atom and progress to `listener` (if valid) with progress_atom.
/// With `registry`, it adds its queued and running tasks per stage to the gauges
/// mediasync_queued_tasks and mediasync_running_tasks, and counts tasks done per node in
/// mediasync_cluster_tasks_total (see describe_queue_metrics). `node_name` goes into the
/// rows it makes and those of local workers (remote workers name their own node).
sync_coordinator_actor spawn_sync_coordinator(caf::actor_system& sys, job_spec spec,
                                              progress_writer_actor writer,
                                              worker_pools workers,
                                              supervisor_actor supervisor, caf::actor listener,
                                              std::shared_ptr<metrics> registry = nullptr,
                                              std::string node_name = {});

/// Declares the gauges coordinators add their queue depths to.
void describe_queue_metrics(metrics& registry);

} // namespace ms
