// Streaming scan of a source tree. Plain code, no CAF: the coordinator pulls
// entries in chunks, so memory holds one directory listing per level, never the tree.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ms {

/// What the scan found at one path.
enum class entry_kind : std::uint8_t {
  regular,     ///< a regular file: to be synced
  special,     ///< FIFO, socket, device: skipped, recorded
  symlink,     ///< a symbolic link: not followed, skipped, recorded
  unreadable,  ///< a directory or entry that could not be read: failed, recorded
};

struct scan_entry {
  std::string path;        ///< relative to the source root, exact bytes, '/'-separated
  entry_kind kind = entry_kind::regular;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::string reason;      ///< for special/symlink/unreadable: why it is not synced
};

/// Include/exclude filter on relative paths (fnmatch-style globs).
/// A path is taken when it matches any include (or there is none) and no exclude.
/// A glob without '/' matches the file's base name; with '/', the whole relative path.
/// '**' matches across directories.
class path_filter {
public:
  path_filter() = default;
  path_filter(std::vector<std::string> includes, std::vector<std::string> excludes);
  bool empty() const { return includes_.empty() && excludes_.empty(); }
  bool accepts(const std::string& rel_path) const;
  /// True if no path under directory `rel_dir` can be accepted (lets the scan prune it).
  bool prunes_dir(const std::string& rel_dir) const;

private:
  std::vector<std::string> includes_;
  std::vector<std::string> excludes_;
};

/// Depth-first scan with entries sorted by name within each directory.
/// Does not follow symlinks. Skips `skip_dir` (absolute path) if it lies inside the root.
/// Not thread-safe; one owner.
class scanner {
public:
  /// Throws std::runtime_error naming `root` if it is missing, unreadable or not a directory.
  scanner(std::string root, path_filter filter, std::string skip_dir = {});
  /// Only `paths` (relative to root, in this order) instead of the whole tree: each is
  /// reported as the scan would (regular, special, symlink, unreadable), or not at all
  /// when it is gone, a directory, filtered out, or below a symlink or `skip_dir`.
  scanner(std::string root, path_filter filter, std::string skip_dir,
          std::vector<std::string> paths);
  ~scanner();
  scanner(const scanner&) = delete;
  scanner& operator=(const scanner&) = delete;

  /// Appends up to `max` entries to `out`. Returns false once the scan is exhausted
  /// (and nothing more was appended).
  bool next(std::vector<scan_entry>& out, std::size_t max);

  /// Entries returned so far.
  std::uint64_t count() const { return count_; }

private:
  struct impl;
  std::unique_ptr<impl> impl_;
  std::uint64_t count_ = 0;
};

} // namespace ms
