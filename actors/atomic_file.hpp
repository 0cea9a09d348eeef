// Atomic file writes into the library, shared by the ingest (library files,
// actors/ingest.cpp) and imaging (thumbnails and previews, actors/imaging.cpp), and the
// sweep of temporary files that dead processes left behind. Plain code, no CAF;
// thread-safe (the only shared state is a name counter, two flags and the set of
// swept libraries, all synchronised).
//
// How a file gets its name (see atomic_file.cpp for the details):
//  * normally an unnamed O_TMPFILE in the target directory, written, then linked under
//    its final name through /proc/self/fd (linkat AT_SYMLINK_FOLLOW). If the name
//    exists, it is linked under a temporary name ".mediasync-tmp.<pid>.<n>" and renamed
//    over the final name in the same directory (atomic: readers see the old or the new
//    file). A kill leaves nothing behind except in that one linkat + renameat window.
//  * fallback, on filesystems without O_TMPFILE or without a usable /proc/self/fd: a
//    named temporary file ".mediasync-tmp.<pid>.<n>" (O_CREAT|O_EXCL) in the target
//    directory, renamed over the final name. A kill during the write leaves it behind.
// Nothing is fsynced: the writer's syncfs per batch makes files durable.
//
// The sweep (sweep_stale_temps_once): the first atomic write into a library in a
// process (the first ingestor of a job, or the first derived file) walks that library
// once and removes what killed processes left: see sweep_stale_temps().
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ms::atomic_file {

/// Prefix of every temporary name, followed by "<pid>.<n>" (both decimal).
inline constexpr std::string_view temp_prefix = ".mediasync-tmp.";
/// Creating a temporary name gives up after this many names already taken.
inline constexpr int temp_name_attempts = 100;

/// errno values of openat(O_TMPFILE) on a filesystem (or kernel) without it.
bool tmpfile_unsupported(int err);

/// A temporary name ".mediasync-tmp.<pid>.<n>", n from a process-wide counter.
struct temp_name {
  char buf[64] = {};
  const char* c_str() const { return buf; }
};
/// Fills `out` with the next temporary name of this process.
void next_temp_name(temp_name& out);
/// How many temporary names this process has used so far.
std::uint64_t temp_names_used();
/// True if `name` is exactly a temporary name ("<prefix><digits>.<digits>", pid > 0);
/// sets `pid`.
bool parse_temp_name(std::string_view name, long& pid);

/// openat(dir, ".", O_TMPFILE|O_WRONLY|O_CLOEXEC, mode): an unnamed file in `dir`
/// (any directory fd, O_PATH is fine). -1 with errno on failure.
int open_unnamed(int dir, mode_t mode);

/// Writes all `n` bytes to `fd` (short writes continued, EINTR retried); false with errno
/// set on failure (EIO for a write that wrote nothing).
bool write_all(int fd, const void* data, std::size_t n);

/// Creates a named temporary file in `dir` (O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW), skipping
/// names already taken (up to temp_name_attempts). Returns the fd with its name in
/// `name`, or -1 with errno.
int open_named(int dir, mode_t mode, temp_name& name);

/// What went wrong when giving a file its name.
struct result {
  enum class step {
    none,     ///< done
    no_proc,  ///< /proc/self/fd cannot be used: nothing was linked
    link,     ///< linkat to the final name failed (not EEXIST)
    temp,     ///< no temporary name could be linked
    rename,   ///< renameat over the final name failed (the temporary name was removed)
  };
  step failed = step::none;
  int err = 0;  ///< errno of the failing call
  bool ok() const { return failed == step::none; }
};

/// Gives the written unnamed file `fd` the name `name` in `dir`: linkat through
/// /proc/self/fd when the name is free; if it exists, linkat to a temporary name
/// (kept in `tmp`) and renameat over `name`.
result link_unnamed(int fd, int dir, const char* name, temp_name& tmp);

/// renameat(dir, tmp, dir, name); on failure removes `tmp`.
result rename_over(int dir, const char* tmp, const char* name);

/// The error text of a failed result (`rel`: the file's path, for "exists as a
/// directory"): "library file cannot be linked into place: <strerror>",
/// "library temporary file cannot be created: <strerror>", "library path '<rel>'
/// exists as a directory", "library file cannot be renamed into place: <strerror>".
std::string describe(const result& r, const std::string& rel);

/// Writes `len` bytes as `name` in the directory `dir` atomically (unnamed O_TMPFILE
/// linked into place, or the named fallback), permission bits `mode` minus the umask.
/// Returns "" or the error text ("library temporary file cannot be created: ...",
/// "library write failed: ...", or one of describe()'s).
std::string write_whole(int dir, const char* name, const std::string& rel, const void* data,
                        std::size_t len, mode_t mode);

/// Walks the library whose root directory is `root` and removes the temporary files
/// that dead processes left behind; returns how many. A file is removed only if all
/// hold: its name is exactly ".mediasync-tmp.<pid>.<n>"; it is a regular file
/// (lstat, never followed); <pid> is not this process and no process with that pid
/// exists (kill(pid, 0) gives ESRCH); and its status last changed (ctime) before this
/// process started (a file a live writer on another host or in another pid namespace
/// is writing has a newer ctime). The walk opens every directory relative to its
/// parent with O_NOFOLLOW, stays on the root's filesystem (like syncfs, which makes
/// only that one durable), skips directories it already is inside of (bind-mount
/// loops), and skips what it cannot read; it never removes a directory.
std::size_t sweep_stale_temps(int root);

/// sweep_stale_temps(root) the first time this process writes into the library
/// `root` (by device and inode); later calls return at once. Never throws.
void sweep_stale_temps_once(int root);

// ---- test hooks
/// While on, writes (write_whole) and newly constructed ingestors skip O_TMPFILE and
/// use named temporary files. Starts on when the environment has
/// MEDIASYNC_TEST_NAMED_TEMP=1 (for tests that run the binary).
void force_named_temp(bool on);
bool named_temp_forced();
/// How many files the sweeps of this process removed.
std::uint64_t swept_files();

} // namespace ms::atomic_file
