// Recursive inotify tree watcher (see watcher.hpp).
//
// One thread polls the inotify fd and an eventfd (the stop signal) with a timeout equal to the
// nearest deadline. State:
//  * one entry per watched directory: wd -> (relative path, dev, ino), and path -> wd (ordered,
//    so a renamed or removed directory's subtree is one contiguous range);
//  * one entry per file with pending events: its deadline and whether the last event finished
//    the writing (closed after write, moved in, hard link: deadline = debounce) or not
//    (modified, created: deadline = settle), plus an ordered set of (deadline, path);
//  * the IN_MOVED_FROM halves of moves still waiting for their IN_MOVED_TO (by cookie).
#include "app/watcher.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace ms::app {

namespace {

using clock_type = std::chrono::steady_clock;

/// Events asked for on every directory. IN_EXCL_UNLINK: nothing for files already unlinked
/// (writes to a deleted temp file). IN_ONLYDIR | IN_DONT_FOLLOW: a directory, never a symlink.
constexpr std::uint32_t watch_mask = IN_CLOSE_WRITE | IN_MODIFY | IN_CREATE | IN_DELETE
                                     | IN_MOVED_FROM | IN_MOVED_TO | IN_MOVE_SELF | IN_DELETE_SELF
                                     | IN_EXCL_UNLINK | IN_ONLYDIR | IN_DONT_FOLLOW;

/// How long an IN_MOVED_FROM waits for its IN_MOVED_TO (they are queued back to back; a move
/// out of the tree has none).
constexpr auto move_pairing_window = std::chrono::seconds(5);
/// Reads of the inotify fd per wake-up before deadlines are checked again (an event storm
/// must not starve the reports nor the stop signal).
constexpr int max_reads_per_wake = 64;

std::string errno_text(int e) { return std::generic_category().message(e); }

std::string watch_error_text(int e) {
  if (e == ENOSPC)
    return "inotify watch limit reached (fs.inotify.max_user_watches); raise it or set watch = false";
  if (e == EMFILE)
    return "inotify instance limit reached (fs.inotify.max_user_instances); raise it or set "
           "watch = false";
  return errno_text(e);
}

std::string join(const std::string& dir, const char* name) {
  return dir.empty() ? std::string(name) : dir + "/" + name;
}

bool has_prefix_dir(const std::string& path, const std::string& dir) {
  return path.size() > dir.size() && path[dir.size()] == '/' && path.compare(0, dir.size(), dir) == 0;
}

} // namespace

struct tree_watcher::impl {
  struct dir_watch {
    std::string path;  ///< relative to root, "" for root
    dev_t dev = 0;
    ino_t ino = 0;
  };
  struct pending {
    clock_type::time_point due;
    bool closed = false;  ///< the last event finished the writing: debounce, else settle
  };
  struct move_from {
    std::string path;
    bool dir = false;
    bool writing = false;  ///< a file modified and not closed when it was moved
    clock_type::time_point at;
  };

  std::string root;
  watch_settings settings;
  std::function<void(std::vector<std::string>, bool)> on_ready;
  int ifd = -1;
  int wake = -1;
  int root_wd = -1;

  std::unordered_map<int, dir_watch> wds;
  std::map<std::string, int> paths;
  std::unordered_set<int> renamed;  ///< dirs renamed within the tree, awaiting their IN_MOVE_SELF
  std::map<std::string, pending> files;
  std::set<std::pair<clock_type::time_point, std::string>> timers;
  std::unordered_map<std::uint32_t, move_from> moves;
  bool rescan = false;
  bool overflow = false;

  std::atomic<std::size_t> watched{0};
  std::atomic<bool> stopping{false};
  std::thread thread;

  ~impl() {
    if (ifd >= 0)
      ::close(ifd);
    if (wake >= 0)
      ::close(wake);
  }

  std::string abs(const std::string& rel) const {
    if (rel.empty())
      return root;
    return root == "/" ? "/" + rel : root + "/" + rel;
  }

  // ------------------------------------------------------------------ directory watches

  void set_path(int wd, const std::string& rel) {
    auto it = wds.find(wd);
    if (it != wds.end()) {
      if (it->second.path != rel) {
        auto p = paths.find(it->second.path);
        if (p != paths.end() && p->second == wd)
          paths.erase(p);
        it->second.path = rel;
      }
    } else {
      wds.emplace(wd, dir_watch{rel, 0, 0});
    }
    paths[rel] = wd;
    watched.store(wds.size());
  }

  /// inotify forgot `wd` (IN_IGNORED: deleted, unmounted, or removed by us).
  void forget(int wd) {
    auto it = wds.find(wd);
    if (it == wds.end())
      return;
    auto p = paths.find(it->second.path);
    if (p != paths.end() && p->second == wd)
      paths.erase(p);
    wds.erase(it);
    renamed.erase(wd);
    watched.store(wds.size());
    if (wd == root_wd) {
      root_wd = -1;
      rescan = true;
    }
  }

  /// Stops watching `rel` and every directory below it (moved out of the tree) and drops the
  /// pending files there.
  void unwatch_subtree(const std::string& rel) {
    std::vector<int> gone;
    if (auto it = paths.find(rel); it != paths.end())
      gone.push_back(it->second);
    // "rel/..." is one range ("rel-x" sorts between "rel" and "rel/").
    for (auto it = paths.lower_bound(rel + "/"); it != paths.end() && has_prefix_dir(it->first, rel); ++it)
      gone.push_back(it->second);
    for (int wd : gone) {
      ::inotify_rm_watch(ifd, wd);  // its IN_IGNORED finds nothing left to forget
      forget(wd);
    }
    drop_files_under(rel);
  }

  /// Re-keys the directory `from` and everything below it (watches and pending files) as `to`.
  void rename_prefix(const std::string& from, const std::string& to) {
    std::vector<std::pair<std::string, int>> moved;
    if (auto it = paths.find(from); it != paths.end())
      moved.emplace_back(it->first, it->second);
    for (auto it = paths.lower_bound(from + "/"); it != paths.end() && has_prefix_dir(it->first, from); ++it)
      moved.emplace_back(it->first, it->second);
    for (auto& [old_path, wd] : moved) {
      paths.erase(old_path);
      std::string new_path = to + old_path.substr(from.size());
      wds[wd].path = new_path;
      paths[new_path] = wd;  // a replaced (empty) directory's stale wd is forgotten on IN_IGNORED
    }
    std::vector<std::pair<std::string, pending>> moved_files;
    for (auto it = files.lower_bound(from + "/"); it != files.end() && has_prefix_dir(it->first, from);) {
      timers.erase({it->second.due, it->first});
      moved_files.emplace_back(it->first, it->second);
      it = files.erase(it);
    }
    for (auto& [old_path, p] : moved_files) {
      std::string new_path = to + old_path.substr(from.size());
      if (auto old = files.find(new_path); old != files.end()) {
        timers.erase({old->second.due, new_path});
        files.erase(old);
      }
      timers.emplace(p.due, new_path);
      files.emplace(std::move(new_path), p);
    }
  }

  /// Adds a watch on `rel`; -1 if it is gone, not a directory (a symlink) or cannot be watched
  /// (then `rescan`; during construction, a full watch table or root throws).
  int add_watch(const std::string& rel, bool initial) {
    std::uint32_t mask = watch_mask;
    if (rel.empty())
      mask &= ~std::uint32_t(IN_DONT_FOLLOW);  // root may be a symlink to the tree
    int wd = ::inotify_add_watch(ifd, abs(rel).c_str(), mask);
    if (wd < 0) {
      int e = errno;
      if (initial && (rel.empty() || e == ENOSPC))
        throw std::runtime_error("watch '" + root + "': " + watch_error_text(e));
      if (e == ENOENT || e == ENOTDIR)
        return -1;
      rescan = true;
      return -1;
    }
    if (rel.empty())
      root_wd = wd;
    set_path(wd, rel);
    return wd;
  }

  /// Watches `rel` and every directory below it (each watched before it is listed, so nothing
  /// created meanwhile is missed). With `mark`, the regular files found are pending (debounce).
  /// `seen` collects the wds (overflow resync).
  void watch_tree(const std::string& rel, bool mark, bool initial,
                  std::unordered_set<int>* seen = nullptr) {
    std::vector<std::string> todo{rel};
    auto now = clock_type::now();
    while (!todo.empty() && !stopping.load(std::memory_order_relaxed)) {
      std::string dir = std::move(todo.back());
      todo.pop_back();
      int wd = add_watch(dir, initial);
      if (wd < 0)
        continue;
      if (seen)
        seen->insert(wd);
      int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (dir.empty() ? 0 : O_NOFOLLOW);
      int fd = ::open(abs(dir).c_str(), flags);
      if (fd < 0) {
        int e = errno;
        if (e != ENOENT && e != ENOTDIR && e != ELOOP)
          rescan = true;
        continue;
      }
      struct stat sb;
      if (::fstat(fd, &sb) == 0) {
        auto& w = wds[wd];
        w.dev = sb.st_dev;
        w.ino = sb.st_ino;
      }
      DIR* d = ::fdopendir(fd);
      if (!d) {
        ::close(fd);
        rescan = true;
        continue;
      }
      while (struct dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0)
          continue;
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) {
          struct stat st;
          if (::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
          type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        }
        if (type == DT_DIR)
          todo.push_back(join(dir, e->d_name));
        else if (type == DT_REG && mark)
          found(join(dir, e->d_name), now);
      }
      ::closedir(d);
    }
  }

  /// Events were lost: watch whatever is not watched, re-key what moved, drop what left.
  void resync() {
    rescan = true;
    moves.clear();
    renamed.clear();
    std::unordered_set<int> seen;
    watch_tree("", false, false, &seen);
    if (stopping.load())
      return;
    std::vector<int> stale;
    for (auto& [wd, w] : wds)
      if (!seen.count(wd))
        stale.push_back(wd);
    for (int wd : stale) {
      ::inotify_rm_watch(ifd, wd);
      forget(wd);
    }
  }

  bool same_dir(const std::string& rel, const dir_watch& w) const {
    struct stat st;
    return ::lstat(abs(rel).c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_dev == w.dev
           && st.st_ino == w.ino;
  }

  // ------------------------------------------------------------------ pending files

  void touch(const std::string& rel, bool closed, clock_type::time_point now) {
    auto [it, fresh] = files.try_emplace(rel);
    if (!fresh)
      timers.erase({it->second.due, rel});
    it->second.closed = closed;
    it->second.due = now + (closed ? settings.debounce : settings.settle);
    timers.emplace(it->second.due, rel);
  }

  /// A file found by listing a new directory: pending unless it already has events.
  void found(const std::string& rel, clock_type::time_point now) {
    if (!files.count(rel))
      touch(rel, true, now);
  }

  void drop_file(const std::string& rel) {
    auto it = files.find(rel);
    if (it == files.end())
      return;
    timers.erase({it->second.due, rel});
    files.erase(it);
  }

  void drop_files_under(const std::string& dir) {
    for (auto it = files.lower_bound(dir + "/"); it != files.end() && has_prefix_dir(it->first, dir);) {
      timers.erase({it->second.due, it->first});
      it = files.erase(it);
    }
  }

  // ------------------------------------------------------------------ events

  void handle(const struct inotify_event& ev, clock_type::time_point now) {
    if (ev.mask & IN_Q_OVERFLOW) {
      overflow = true;
      return;
    }
    if (ev.mask & IN_IGNORED) {
      forget(ev.wd);
      return;
    }
    auto it = wds.find(ev.wd);
    if (it == wds.end())
      return;  // removed by us (moved out) with events still queued
    if (ev.mask & (IN_DELETE_SELF | IN_UNMOUNT)) {
      if (ev.wd == root_wd)
        rescan = true;
      return;  // IN_IGNORED follows
    }
    if (ev.mask & IN_MOVE_SELF) {
      moved_self(ev.wd);
      return;
    }
    if (ev.len == 0 || ev.name[0] == '\0')
      return;
    std::string rel = join(it->second.path, ev.name);
    if (ev.mask & IN_ISDIR) {
      if (ev.mask & IN_CREATE)
        watch_tree(rel, true, false);
      else if (ev.mask & IN_MOVED_FROM)
        moves[ev.cookie] = move_from{std::move(rel), true, false, now};
      else if (ev.mask & IN_MOVED_TO)
        dir_moved_in(rel, ev.cookie);
      // IN_DELETE of a directory: its own watch gets IN_IGNORED.
      return;
    }
    if (ev.mask & IN_MODIFY) {
      touch(rel, false, now);
    } else if (ev.mask & IN_CLOSE_WRITE) {
      touch(rel, true, now);
    } else if (ev.mask & IN_CREATE) {
      // A new name: a hard link (more than one link) is complete; a file just created by
      // open() is being written until it is closed (or quiet for settle).
      struct stat st;
      if (::lstat(abs(rel).c_str(), &st) == 0 && S_ISREG(st.st_mode))
        touch(rel, st.st_nlink > 1, now);
    } else if (ev.mask & IN_DELETE) {
      drop_file(rel);
    } else if (ev.mask & IN_MOVED_FROM) {
      auto f = files.find(rel);
      bool writing = f != files.end() && !f->second.closed;
      drop_file(rel);
      moves[ev.cookie] = move_from{std::move(rel), false, writing, now};
    } else if (ev.mask & IN_MOVED_TO) {
      bool writing = false;
      if (auto m = moves.find(ev.cookie); m != moves.end()) {
        writing = !m->second.dir && m->second.writing;
        moves.erase(m);
      }
      touch(rel, !writing, now);
    }
  }

  /// A directory appeared under `rel` by a move: renamed within the tree (the cookie matches an
  /// IN_MOVED_FROM of a watched directory that is now at `rel`) or moved in from outside.
  void dir_moved_in(const std::string& rel, std::uint32_t cookie) {
    if (auto m = moves.find(cookie); m != moves.end()) {
      std::string from = std::move(m->second.path);
      moves.erase(m);
      auto p = paths.find(from);
      if (p != paths.end() && same_dir(rel, wds[p->second])) {
        int wd = p->second;
        rename_prefix(from, rel);
        renamed.insert(wd);
        return;
      }
    }
    watch_tree(rel, true, false);
  }

  /// A watched directory was moved: within the tree (already re-keyed by its IN_MOVED_TO, or
  /// found again at its known path) or out of it.
  void moved_self(int wd) {
    if (renamed.erase(wd))
      return;
    if (wd == root_wd) {
      rescan = true;  // root moved: `root` no longer names the watched tree
      return;
    }
    auto it = wds.find(wd);
    if (it == wds.end() || same_dir(it->second.path, it->second))
      return;
    std::string rel = it->second.path;
    unwatch_subtree(rel);
  }

  void prune_moves(clock_type::time_point now) {
    for (auto it = moves.begin(); it != moves.end();) {
      if (now - it->second.at > move_pairing_window)
        it = moves.erase(it);
      else
        ++it;
    }
  }

  /// Reads and handles what is queued (a bounded number of reads).
  void read_events() {
    alignas(struct inotify_event) char buf[64 * 1024];
    for (int reads = 0; reads < max_reads_per_wake && !stopping.load(std::memory_order_relaxed); ++reads) {
      ssize_t n = ::read(ifd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        break;  // EAGAIN: drained
      }
      if (n == 0)
        break;
      auto now = clock_type::now();
      for (char* p = buf; p < buf + n;) {
        auto* ev = reinterpret_cast<struct inotify_event*>(p);
        handle(*ev, now);
        p += sizeof(struct inotify_event) + ev->len;
      }
      if (overflow) {
        overflow = false;
        resync();
      }
    }
    if (!moves.empty())
      prune_moves(clock_type::now());
  }

  // ------------------------------------------------------------------ reports

  void flush() {
    auto now = clock_type::now();
    std::vector<std::string> ready;
    while (!timers.empty() && timers.begin()->first <= now) {
      auto node = timers.extract(timers.begin());
      std::string rel = std::move(node.value().second);
      files.erase(rel);
      struct stat st;
      if (::lstat(abs(rel).c_str(), &st) == 0 && S_ISREG(st.st_mode))
        ready.push_back(std::move(rel));
    }
    if (ready.empty() && !rescan)
      return;
    std::sort(ready.begin(), ready.end());
    bool full = std::exchange(rescan, false);
    try {
      on_ready(std::move(ready), full);
    } catch (...) {
      // The caller's problem; the watcher goes on.
    }
  }

  int poll_timeout() const {
    if (rescan)
      return 0;
    if (timers.empty())
      return -1;
    auto left = timers.begin()->first - clock_type::now();
    if (left <= clock_type::duration::zero())
      return 0;
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
  }

  void run() {
    for (;;) {
      struct pollfd fds[2] = {{wake, POLLIN, 0}, {ifd, POLLIN, 0}};
      int n = ::poll(fds, 2, poll_timeout());
      if (stopping.load() || (n > 0 && fds[0].revents != 0))
        return;
      if (n < 0 && errno != EINTR)
        return;  // cannot happen with valid fds
      if (n > 0 && (fds[1].revents & POLLIN))
        read_events();
      if (stopping.load())
        return;
      flush();
    }
  }
};

tree_watcher::tree_watcher(std::string root, watch_settings settings,
                           std::function<void(std::vector<std::string>, bool)> on_ready)
  : impl_(std::make_unique<impl>()) {
  auto& s = *impl_;
  while (root.size() > 1 && root.back() == '/')
    root.pop_back();
  if (root.empty())
    throw std::runtime_error("watch: the root path is empty");
  s.root = std::move(root);
  s.settings = settings;
  if (s.settings.debounce.count() < 0)
    s.settings.debounce = std::chrono::milliseconds(0);
  if (s.settings.settle < s.settings.debounce)
    s.settings.settle = s.settings.debounce;
  s.on_ready = std::move(on_ready);
  auto fail = [&](const std::string& what) {
    throw std::runtime_error("watch '" + s.root + "': " + what);
  };
  struct stat sb;
  if (::stat(s.root.c_str(), &sb) != 0) {
    int e = errno;
    fail(e == ENOENT ? "does not exist" : errno_text(e));
  }
  if (!S_ISDIR(sb.st_mode))
    fail("is not a directory");
  s.ifd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (s.ifd < 0)
    fail("inotify_init1: " + watch_error_text(errno));
  s.wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s.wake < 0)
    fail("eventfd: " + errno_text(errno));
  s.watch_tree("", false, true);
  s.thread = std::thread([&s] { s.run(); });
}

tree_watcher::~tree_watcher() {
  auto& s = *impl_;
  if (s.thread.joinable()) {
    s.stopping.store(true);
    std::uint64_t one = 1;
    while (::write(s.wake, &one, sizeof one) < 0 && errno == EINTR) {
    }
    s.thread.join();
  }
}

std::size_t tree_watcher::watched_directories() const { return impl_->watched.load(); }

} // namespace ms::app
