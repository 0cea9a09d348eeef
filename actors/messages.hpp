// Plain data exchanged between actors, with the CAF 0.17 inspect() overloads
// that make them messages. Register every type here in add_message_types().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>

#include "actors/imaging.hpp"
#include "storage/records.hpp"

namespace caf { class actor_system_config; }

namespace ms {

// -- atoms (at most 10 characters) --------------------------------------------

using create_atom = caf::atom_constant<caf::atom("create")>;
using open_atom = caf::atom_constant<caf::atom("open")>;
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
using outcome_atom = caf::atom_constant<caf::atom("outcome")>;
using total_atom = caf::atom_constant<caf::atom("total")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;
using known_atom = caf::atom_constant<caf::atom("known")>;
using durable_atom = caf::atom_constant<caf::atom("durable")>;
using fatal_atom = caf::atom_constant<caf::atom("fatal")>;
using ingest_atom = caf::atom_constant<caf::atom("ingest")>;
using worker_atom = caf::atom_constant<caf::atom("worker")>;
using run_atom = caf::atom_constant<caf::atom("run")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using progress_atom = caf::atom_constant<caf::atom("progress")>;
using pump_atom = caf::atom_constant<caf::atom("pump")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using join_atom = caf::atom_constant<caf::atom("join")>;
using offer_atom = caf::atom_constant<caf::atom("offer")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;

// -- messages -----------------------------------------------------------------

/// One file for a stage worker: ingest (sync), thumbnails (processing) or preview (watermark).
struct file_task {
  std::uint64_t job_id = 0;
  stage stg = stage::sync;
  std::string source_root;
  std::string dest_root;
  std::string path;               ///< relative to source_root
  std::uint64_t size = 0;         ///< as scanned
  std::int64_t mtime_ns = 0;      ///< as scanned
  std::string compare_sha256;     ///< --checksum: the stored hash to compare with
  std::string known_library_path; ///< --checksum: where the stored copy lives
  std::string mime;               ///< processing, watermark: the sniffed type
  std::string library_path;       ///< processing, watermark: the file in the library
  std::string thumbnail;          ///< watermark: the largest thumbnail (library-relative)
};

/// Committed state of a job, sent by the writer after every commit (the durable ack).
struct job_progress {
  std::uint64_t job_id = 0;
  std::uint64_t committed = 0;  ///< outcomes made durable by this commit
  std::uint64_t total_files = 0;
  std::uint64_t processed_files = 0;
  std::uint64_t failed_files = 0;
  std::uint64_t skipped_files = 0;
  std::uint64_t processed_bytes = 0;
};

/// Everything a job run needs; the effective settings of one job.
struct job_spec {
  std::uint64_t job_id = 0;       ///< 0: create a new job; else resume this one
  std::string name;               ///< the config file's job name ("" for a command-line sync)
  std::string source_root;        ///< absolute
  std::string dest_root;          ///< absolute
  std::string settings_json;      ///< stored in sync_jobs.settings
  std::vector<std::string> includes;
  std::vector<std::string> excludes;
  bool checksum = false;
  bool allow_empty_source = false;
  std::uint32_t window = 0;       ///< max tasks dispatched but not durable
  bool thumbnails = false;        ///< run stage processing (metadata + thumbnails) on images
  bool watermark = false;         ///< run stage watermark (needs thumbnails)
  /// Non-empty: only these paths (relative to source_root: files a watch saw written),
  /// not a scan of the whole tree. Such a job marks nothing missing.
  std::vector<std::string> paths;
};

/// How a job run ended.
struct job_result {
  std::uint64_t job_id = 0;
  job_status status = job_status::failed;
  job_progress counters;
  std::uint64_t missing_marked = 0;
  std::string error;              ///< fatal reason, empty unless status is failed
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, file_outcome& x) {
  return f(caf::meta::type_name("file_outcome"), x.job_id, x.path, x.stg, x.status, x.size,
           x.mtime_ns, x.sha256, x.mime, x.library_path, x.error, x.duration_us,
           x.touches_media, x.width, x.height, x.orientation, x.taken_at, x.thumbnail_paths,
           x.preview_path, x.node, x.retry_elsewhere);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, known_file& x) {
  return f(caf::meta::type_name("known_file"), x.has_media, x.missing, x.size, x.mtime_ns,
           x.sha256, x.mime, x.library_path, x.has_result, x.stages_done, x.thumbnail_paths,
           x.preview_path);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job_row& x) {
  return f(caf::meta::type_name("job_row"), x.id, x.source_root, x.dest_root, x.status,
           x.total_files, x.processed_files, x.failed_files, x.skipped_files,
           x.processed_bytes, x.created_at, x.updated_at, x.finished_at, x.settings);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, file_task& x) {
  return f(caf::meta::type_name("file_task"), x.job_id, x.stg, x.source_root, x.dest_root,
           x.path, x.size, x.mtime_ns, x.compare_sha256, x.known_library_path, x.mime,
           x.library_path, x.thumbnail);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job_progress& x) {
  return f(caf::meta::type_name("job_progress"), x.job_id, x.committed, x.total_files,
           x.processed_files, x.failed_files, x.skipped_files, x.processed_bytes);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job_spec& x) {
  return f(caf::meta::type_name("job_spec"), x.job_id, x.name, x.source_root, x.dest_root,
           x.settings_json, x.includes, x.excludes, x.checksum, x.allow_empty_source, x.window,
           x.thumbnails, x.watermark, x.paths);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job_result& x) {
  return f(caf::meta::type_name("job_result"), x.job_id, x.status, x.counters,
           x.missing_marked, x.error);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, imaging_settings& x) {
  return f(caf::meta::type_name("imaging_settings"), x.thumbnail_sizes, x.thumbnail_format,
           x.quality, x.max_pixels, x.watermark_text, x.watermark_image, x.watermark_position,
           x.watermark_margin, x.watermark_opacity);
}

/// A worker node of the cluster as the coordinator sees it.
struct cluster_node {
  std::string name;
  std::uint32_t workers[stage_count] = {};  ///< per stage
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_node& x) {
  return f(caf::meta::type_name("cluster_node"), x.name, x.workers[0], x.workers[1],
           x.workers[2]);
}

/// Registers every message type above with `cfg` (call once per actor system).
void add_message_types(caf::actor_system_config& cfg);

/// The reason an actor gave in a caf::error it made from an exception (the context holds
/// just that text, e.g. "database 'x.db': cannot create a job: database or disk is
/// full"); any other error as CAF renders it.
std::string error_text(caf::actor_system& sys, const caf::error& err);

} // namespace ms
