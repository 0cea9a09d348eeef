// The sync-stage file-worker: ingests one file at a time on its own thread.
#pragma once

#include <functional>

#include "actors/interfaces.hpp"

namespace ms {

/// How a worker turns a task into an outcome. The default ingests into the
/// library (actors/ingest.hpp); tests inject their own to provoke failures.
using ingest_function = std::function<file_outcome(const file_task&)>;

/// Spawns a detached file-worker. An exception escaping `fn` terminates the
/// worker with the exception's message as exit reason (the supervisor restarts it).
file_worker_actor spawn_file_worker(caf::actor_system& sys, ingest_function fn = {});

/// The sync stage: one ingestor per job, cached per worker.
ingest_function make_library_ingest();

struct imaging_settings;

/// The processing stage: image metadata and thumbnails of the task's library file.
/// libvips starts at the first image (a run without images never pays its start-up),
/// with `vips_threads` threads per pipeline.
ingest_function make_processing_work(const imaging_settings& settings, int vips_threads);

/// The watermark stage: a watermarked preview from the task's largest thumbnail.
ingest_function make_watermark_work(const imaging_settings& settings, int vips_threads);

} // namespace ms
