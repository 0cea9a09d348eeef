// Recursive inotify watcher of a source tree, for jobs with `watch = true` (`mediasync node`).
// Plain code, no CAF: one thread of its own reports files whose writing finished, debounced,
// so the node syncs new or changed files within a second or two of their last write and never
// a file half-way through being written.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ms::app {

struct watch_settings {
  /// Quiet time after the last event before a finished file is reported.
  std::chrono::milliseconds debounce{500};
  /// A file modified but never closed after writing (the writer holds it open, mmap) is
  /// reported after this much quiet.
  std::chrono::milliseconds settle{30000};
};

/// Watches `root` and every directory below it, new directories too as they appear.
///
/// Calls `on_ready(paths, rescan)` from the watcher's own thread (never two calls at once):
///  * `paths`: sorted, without duplicates, relative to root ('/'-separated, the names' exact
///    bytes), regular files whose writing finished:
///      - closed after writing (IN_CLOSE_WRITE), moved or renamed into the tree (IN_MOVED_TO)
///        or created as a hard link (IN_CREATE of a name whose inode has more than one link),
///        and then no further event for `debounce`;
///      - or modified (or created) but not closed, and then quiet for `settle`;
///      - or found in a directory that appeared (mkdir, a directory moved in, `cp -r`): the new
///        directory is watched first and then listed, so nothing written meanwhile is missed;
///        each file found is reported once quiet for `debounce` (or, if it is being written,
///        like any other file).
///    Each readiness is reported once; a file written again later is reported again later.
///    A path is checked with lstat() just before it is reported: what is no longer a regular
///    file (deleted, renamed away, replaced by a symlink) is not reported. So the atomic write
///    pattern (write a temp name, rename it to the final name) reports the final name only,
///    unless the temp name stayed quiet for `debounce` before the rename (then it is reported
///    too if it still existed at that time).
///    Deletions are not reported: full scheduled scans handle vanished files.
///  * `rescan`: true when events were lost (IN_Q_OVERFLOW; the watcher then re-walks the tree
///    to watch what it missed), a watch could not be added (watch limit, permissions) or the
///    root itself was moved or deleted: the caller should do a full scan.
///
/// Symlinks below root are not followed (symlinked directories are not watched); root itself
/// may be a symlink to a directory. Directory renames within the tree keep the watches, and
/// later events under a renamed directory report the new paths; a directory moved out of the
/// tree stops being watched. Memory: one entry per watched directory plus state for the files
/// with pending events only.
///
/// An exception thrown by `on_ready` is swallowed (the watcher goes on). The watcher must not
/// be destroyed from inside `on_ready`.
class tree_watcher {
public:
  /// Watches the whole tree before returning. Throws std::runtime_error naming `root` and the
  /// cause when root is missing or not a directory, inotify cannot be initialised, or a
  /// directory of the existing tree cannot be watched because the watch limit is reached
  /// (fs.inotify.max_user_watches), or root itself cannot be watched.
  /// Other directories of the existing tree that cannot be watched (unreadable) make the
  /// first call report `rescan`.
  tree_watcher(std::string root, watch_settings settings,
               std::function<void(std::vector<std::string>, bool)> on_ready);
  /// Stops and joins the thread promptly (pending files are not reported); closes the fds.
  ~tree_watcher();
  tree_watcher(const tree_watcher&) = delete;
  tree_watcher& operator=(const tree_watcher&) = delete;
  tree_watcher(tree_watcher&&) = delete;
  tree_watcher& operator=(tree_watcher&&) = delete;

  /// Directories currently watched (root included). Thread-safe; for tests and metrics.
  std::size_t watched_directories() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace ms::app
