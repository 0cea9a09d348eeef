// Ingest of one file into the library: read once, SHA-256, sniff, atomic copy.
// Plain code, no CAF; runs on a file-worker's own thread (blocking I/O).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "storage/records.hpp"

namespace ms {

/// One file to ingest, as the coordinator dispatches it.
struct ingest_request {
  std::string path;           ///< relative to the source root
  std::uint64_t size = 0;     ///< as scanned
  std::int64_t mtime_ns = 0;  ///< as scanned
  std::string compare_sha256; ///< if set (--checksum): skip when the content hashes to this
  std::string known_library_path; ///< with compare_sha256: where the unchanged file already lives
};

/// Per-thread ingest context: the open source and destination roots and a cache of
/// opened library directories. Not thread-safe: one per worker. Keeps no temporary
/// folder under DEST: nothing to clean up at job end.
class ingestor {
public:
  /// Throws std::runtime_error if either root cannot be opened as a directory.
  ingestor(const std::string& source_root, const std::string& dest_root);
  ~ingestor();
  ingestor(const ingestor&) = delete;
  ingestor& operator=(const ingestor&) = delete;

  /// Ingests one file. Never throws for file-level problems: they come back as a
  /// failed (or skipped) outcome with a clear reason. The library file, if written,
  /// is written as an unnamed O_TMPFILE in its own library directory and linked (or
  /// renamed, when replacing) into place complete, but not fsynced: the writer makes
  /// the batch durable. See actors/ingest.cpp for the named-temp fallback.
  file_outcome ingest(const ingest_request& req);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Mime type from the first bytes of a file (magic numbers), or "" if unknown.
std::string sniff_mime(const unsigned char* data, std::size_t len);

/// Lower-case hex of a binary digest.
std::string to_hex(const unsigned char* data, std::size_t len);

/// Makes everything written to the filesystem holding `dir` durable (syncfs).
/// Throws std::runtime_error naming `dir` on failure.
void sync_filesystem(int dir_fd, const std::string& dir);

} // namespace ms
