// Every typed actor interface of mediasync, in one place: the system's message contract.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/messages.hpp"

namespace ms {

/// Receives the writer's durable acks for one job (implemented by the sync-coordinator).
using durable_listener_actor = caf::typed_actor<
  // Outcomes of the job up to here are committed; counters as committed.
  caf::reacts_to<durable_atom, job_progress>,
  // The database cannot be written any more (reason; true if only the connection is gone,
  // so the job is resumable); the job cannot go on.
  caf::reacts_to<fatal_atom, std::string, bool>>;

/// The only actor that writes to the database. Detached (blocking I/O).
using progress_writer_actor = caf::typed_actor<
  // Creates a sync_jobs row (source, dest, settings JSON); replies its id.
  caf::replies_to<create_atom, std::string, std::string, std::string>::with<std::uint64_t>,
  // Opens a job for outcomes: marks it running, registers the listener for acks.
  caf::replies_to<open_atom, std::uint64_t, durable_listener_actor>::with<job_row>,
  // What the database knows of these paths of the job's source (skip / resume decisions).
  caf::replies_to<lookup_atom, std::uint64_t, std::vector<std::string>>::with<std::vector<known_file>>,
  // Number of live media items under a source root.
  caf::replies_to<known_atom, std::string>::with<std::uint64_t>,
  // Buffers outcomes; committed by batch size or flush interval, then acked.
  caf::reacts_to<outcome_atom, std::vector<file_outcome>>,
  // Raises the job's total_files (scan progress), written with the next commit.
  caf::reacts_to<total_atom, std::uint64_t, std::uint64_t>,
  // Timer: commit what is buffered.
  caf::reacts_to<flush_atom>,
  // Timer: try the held batch again after a lost connection.
  caf::reacts_to<retry_atom>,
  // Commits the job's rest, sets its final status, marks vanished media if asked (bool).
  caf::replies_to<finish_atom, std::uint64_t, job_status, bool>::with<job_result>>;

/// A stage worker: does one file at a time. Detached (blocking I/O, CPU-bound imaging).
/// The same interface serves every stage (sync ingest, processing, watermark).
using file_worker_actor = caf::typed_actor<
  // Does the task's stage for one file; replies the outcome.
  caf::replies_to<ingest_atom, file_task>::with<file_outcome>>;

/// Runs one job: scans, decides, dispatches within the window, finishes when all is durable.
using sync_coordinator_actor = caf::typed_actor<
  caf::reacts_to<durable_atom, job_progress>,
  caf::reacts_to<fatal_atom, std::string, bool>,
  // From the supervisor: a worker of a stage died (its address, the reason) and this one
  // (invalid if the restart budget is spent) replaces it.
  caf::reacts_to<worker_atom, caf::actor_addr, std::string, file_worker_actor, stage>,
  // From the supervisor: a worker (of a node that joined) is there to take tasks.
  caf::reacts_to<join_atom, file_worker_actor, stage>,
  // From the supervisor: a remote worker is gone (its node left, crashed or was cut off);
  // the task it held goes back to the queue for another worker.
  caf::reacts_to<leave_atom, caf::actor_addr, std::string>,
  // Internal: scan more, dispatch more.
  caf::reacts_to<pump_atom>,
  // Stop dispatching, drain, end the job interrupted.
  caf::reacts_to<stop_atom>>;

/// Owns the writer and the worker pool; runs jobs; restarts dead workers.
using supervisor_actor = caf::typed_actor<
  // Runs a job to its end; progress goes to the given listener (may be invalid).
  caf::replies_to<run_atom, job_spec, caf::actor>::with<job_result>,
  // First SIGINT/SIGTERM: every running job drains and ends interrupted.
  caf::reacts_to<stop_atom>,
  // From a coordinator: its job ended.
  caf::reacts_to<done_atom, job_result>,
  // From the registry: worker node `name` offers its stage pools (sync, processing,
  // watermark); they join every running and later job until they go down.
  caf::reacts_to<offer_atom, std::string, std::vector<file_worker_actor>,
                 std::vector<file_worker_actor>, std::vector<file_worker_actor>>,
  // The worker nodes in the cluster now.
  caf::replies_to<nodes_atom>::with<std::vector<cluster_node>>>;

/// The coordinator node's published entry point (CAF middleman, TLS): worker nodes join
/// here. Only these two messages are reachable from the network.
using registry_actor = caf::typed_actor<
  // A worker node introduces itself by name; the reply: the image settings its
  // processing and watermark workers use.
  caf::replies_to<join_atom, std::string>::with<imaging_settings>,
  // It offers its stage pools (sync, processing, watermark).
  caf::reacts_to<offer_atom, std::string, std::vector<file_worker_actor>,
                 std::vector<file_worker_actor>, std::vector<file_worker_actor>>>;

} // namespace ms
