// Plain records shared by the engine and the storage backends.
// No CAF here: storage must not know about actors. actors/messages.hpp adds
// the CAF inspect() overloads that let these records travel as messages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ms {

/// Pipeline stage of a file_results row. Stored by name ("sync", "processing", "watermark").
/// A file flows sync -> processing (metadata, thumbnails) -> watermark (preview).
enum class stage : std::uint8_t { sync = 0, processing = 1, watermark = 2 };

/// Number of stages; stages index arrays 0..stage_count-1.
inline constexpr std::size_t stage_count = 3;

/// Outcome of one file in one stage. Stored by name ("ok", "skipped", "failed").
enum class file_status : std::uint8_t { ok = 0, skipped = 1, failed = 2 };

/// Life cycle of a sync_jobs row. Stored by name.
enum class job_status : std::uint8_t { running = 0, interrupted = 1, completed = 2, failed = 3 };

std::string_view to_string(stage x);
/// Parses a stored stage name; returns false on an unknown name.
bool parse_stage(std::string_view s, stage& out);
std::string_view to_string(file_status x);
std::string_view to_string(job_status x);
/// Parses a stored job status; returns false on an unknown name.
bool parse_job_status(std::string_view s, job_status& out);

/// The result of one file in one stage, as the workers report it and the
/// progress-writer commits it. `path` is relative to the job's source root
/// and holds the name's exact bytes (not necessarily UTF-8).
struct file_outcome {
  std::uint64_t job_id = 0;
  std::string path;
  stage stg = stage::sync;
  file_status status = file_status::ok;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::string sha256;        ///< lower-case hex, empty if not computed
  std::string mime;          ///< sniffed type, empty if unknown
  std::string library_path;  ///< relative to the library root, empty unless the file is in the library
  std::string error;         ///< reason for failed/skipped, empty for ok
  std::int64_t duration_us = 0;
  /// True when the outcome should (re)write the file's media_items row:
  /// set for ok ingests and for unchanged skips (which refresh last_job_id).
  /// For ok processing / watermark outcomes: write the image columns below.
  bool touches_media = false;
  // Stage processing (ok): image metadata and thumbnails; stage watermark (ok): preview.
  std::int32_t width = 0;
  std::int32_t height = 0;
  std::int32_t orientation = 0;          ///< EXIF orientation 1..8, 0 if unknown
  std::string taken_at;                  ///< ISO 8601, empty if unknown
  std::vector<std::string> thumbnail_paths;  ///< library-relative, largest first
  std::string preview_path;              ///< library-relative
  /// The cluster node whose worker produced the outcome (file_results.node); empty: the
  /// progress-writer's own node (it fills it in before the commit).
  std::string node;
  /// Not stored: the worker's node cannot see the task's paths (shared storage not mounted,
  /// or a wrong path-map); the coordinator gives the task to another node.
  bool retry_elsewhere = false;
};

/// What the database knows about one source path, for skip and resume decisions.
struct known_file {
  bool has_media = false;      ///< a media_items row exists for (source_root, path)
  bool missing = false;        ///< that row is marked missing
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::string sha256;
  std::string mime;
  std::string library_path;
  bool has_result = false;     ///< the job already has a committed row for (path, sync)
  /// Stages the job already has committed rows for: bit (1 << stage).
  std::uint8_t stages_done = 0;
  std::vector<std::string> thumbnail_paths;  ///< of the media item, largest first
  std::string preview_path;                  ///< of the media item
};

/// A sync_jobs row.
struct job_row {
  std::uint64_t id = 0;
  std::string source_root;
  std::string dest_root;
  job_status status = job_status::running;
  std::uint64_t total_files = 0;
  std::uint64_t processed_files = 0;
  std::uint64_t failed_files = 0;
  std::uint64_t skipped_files = 0;
  std::uint64_t processed_bytes = 0;
  std::string created_at;
  std::string updated_at;
  std::string finished_at;  ///< empty while not finished
  std::string settings;     ///< effective settings as a JSON object
};

/// Counts of the job's committed result rows of one stage, recomputed from file_results.
struct row_counts {
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::uint64_t skipped = 0;
  std::uint64_t ok_bytes = 0;
};

/// A job's result rows made by one node (file_results.node), for `status`.
struct node_rows {
  std::string node;                      ///< "" for rows from before schema 3 (NULL)
  std::uint64_t rows[stage_count] = {};  ///< per stage
  double seconds = 0;                    ///< first to last of these rows' recorded_at
};

/// media_items.thumbnail_paths as stored: a JSON array of library-relative paths, for
/// any program to read. JSON cannot hold bytes that are not UTF-8 (and jsonb no NUL):
/// each becomes U+FFFD there, so such a path is readable but not exact.
std::string thumbnail_paths_to_json(const std::vector<std::string>& paths);

/// Parses media_items.thumbnail_paths (anything but an array of strings reads as no
/// paths). A stored path "DIR/SIZE/<name>.EXT" whose name was written with U+FFFD comes
/// back with the exact bytes of `library_path` in its place: the text must be exactly
/// what thumbnail_paths_to_json() makes of that path, so only the path the engine wrote
/// for this media item is restored (a name that is UTF-8 is stored exactly anyway).
std::vector<std::string> thumbnail_paths_from_json(std::string_view json,
                                                   std::string_view library_path);

} // namespace ms
