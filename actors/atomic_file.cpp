// Atomic file writes into the library and the sweep of stale temporary files (see
// actors/atomic_file.hpp for the contract).
//
// Writing (open_unnamed + link_unnamed, or open_named + rename_over):
//  - openat(dir, ".", O_TMPFILE) makes an inode without a name; once written it gets
//    one with linkat("/proc/self/fd/<fd>", dir, name, AT_SYMLINK_FOLLOW) (not
//    AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH): the complete file appears under
//    its final name at once, and a kill before that leaves nothing (the inode is freed
//    with its last fd). linkat never replaces: if the name exists, the file is linked
//    under a short temporary name (final names may be 255 bytes) and renamed over it,
//    in the same directory. That linkat + renameat window is the only moment a kill
//    leaves a temporary name behind in this mode.
//  - A failing linkat is told apart from an unusable /proc (not mounted, another pid
//    namespace's): fstatat on the /proc path fails then, and the caller falls back.
//  - Fallback: a named temporary file (O_CREAT|O_EXCL|O_NOFOLLOW, names already taken
//    are skipped: they may be a crashed process's with a reused pid), renamed over the
//    final name; on any failure it is removed. A kill while it is written leaves it.
//
// Sweeping (sweep_stale_temps): a depth-first walk from the library root. Each
// directory is opened with openat(parent, name, O_RDONLY|O_DIRECTORY|O_NOFOLLOW), so
// a symlink is never followed and nothing outside the root is reached; directories on
// another filesystem and directories already on the walk's path (a bind mount of an
// ancestor) are skipped; an entry is lstat'ed (fstatat AT_SYMLINK_NOFOLLOW) before it
// is judged. Memory: one open directory per level, no name lists. A name counts only
// if it is exactly what next_temp_name makes ("<prefix><pid>.<n>", decimal, no
// leading zeros, pid 1..INT_MAX, so kill() is never given 0 or a negative process
// group). Removal needs a dead pid (ESRCH; EPERM means alive) and a ctime before this
// process started: a pid is meaningless for a file written from another host or pid
// namespace through shared storage, but such a file, while its writer lives, was
// created or written after a sweeping process started (a cluster worker only writes
// for jobs of coordinators that run). Errors (unreadable folders, EMFILE on very deep
// trees, files vanishing meanwhile) only skip what they concern.
#include "actors/atomic_file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

namespace ms::atomic_file {

namespace {

std::string errno_text(int err) {
  char buf[256];
  return std::string{::strerror_r(err, buf, sizeof buf)};
}

/// Test hook for whole processes (tests/e2e_crash.cpp): MEDIASYNC_TEST_NAMED_TEMP=1 in
/// the environment makes the process use named temporary files, as on a filesystem
/// without O_TMPFILE.
bool named_temp_from_env() {
  const char* v = std::getenv("MEDIASYNC_TEST_NAMED_TEMP");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

std::atomic<std::uint64_t> temp_counter{0};
std::atomic<bool> forced_named{named_temp_from_env()};
/// Set once linkat through /proc/self/fd proved unusable (a property of the process).
std::atomic<bool> proc_unusable{false};
std::atomic<std::uint64_t> swept_counter{0};

struct timespec now_realtime() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

/// When this process started (static initialisation, before main).
const struct timespec process_start = now_realtime();

std::mutex swept_mutex;
std::set<std::pair<dev_t, ino_t>> swept_roots;  // guarded by swept_mutex

/// Decimal digits without leading zeros (a lone "0" allowed), at most `max_digits`.
bool plain_number(std::string_view s, std::size_t max_digits) {
  if (s.empty() || s.size() > max_digits || (s.size() > 1 && s[0] == '0'))
    return false;
  for (char c : s)
    if (c < '0' || c > '9')
      return false;
  return true;
}

bool before_start(const struct stat& sb) {
  return sb.st_ctim.tv_sec < process_start.tv_sec
         || (sb.st_ctim.tv_sec == process_start.tv_sec
             && sb.st_ctim.tv_nsec < process_start.tv_nsec);
}

bool process_exists(long pid) {
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
}

struct sweeper {
  dev_t dev = 0;
  long self = 0;
  std::vector<std::pair<dev_t, ino_t>> path;  ///< directories being walked
  std::size_t removed = 0;

  /// Walks the directory `fd` (owned), with stat `sb`.
  void walk(int fd, const struct stat& sb) {
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      ::close(fd);
      return;
    }
    path.emplace_back(sb.st_dev, sb.st_ino);
    const int dfd = ::dirfd(d);
    while (struct dirent* e = ::readdir(d)) {
      const char* name = e->d_name;
      if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0)
        continue;
      long pid = 0;
      const bool temp = parse_temp_name(name, pid);
      const unsigned char type = e->d_type;
      if (type != DT_DIR && type != DT_UNKNOWN && !(temp && type == DT_REG))
        continue;
      struct stat st;
      if (::fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        continue;
      if (S_ISDIR(st.st_mode)) {
        descend(dfd, name, st);
      } else if (temp && S_ISREG(st.st_mode) && pid != self && before_start(st)
                 && !process_exists(pid)) {
        if (::unlinkat(dfd, name, 0) == 0)
          ++removed;
      }
    }
    path.pop_back();
    ::closedir(d);
  }

  void descend(int parent, const char* name, const struct stat& seen) {
    if (seen.st_dev != dev)
      return;  // another filesystem mounted inside the library
    for (auto& p : path)
      if (p.first == seen.st_dev && p.second == seen.st_ino)
        return;  // an ancestor again (bind mount)
    int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
      return;
    struct stat sb;
    if (::fstat(fd, &sb) != 0 || sb.st_dev != seen.st_dev || sb.st_ino != seen.st_ino) {
      ::close(fd);  // replaced between the lstat and the open
      return;
    }
    walk(fd, sb);
  }
};

} // namespace

bool write_all(int fd, const void* data, std::size_t n) {
  auto p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    if (w == 0) {
      errno = EIO;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool tmpfile_unsupported(int e) {
  return e == EOPNOTSUPP || e == EISDIR || e == EINVAL;
}

void next_temp_name(temp_name& out) {
  auto n = temp_counter.fetch_add(1, std::memory_order_relaxed);
  std::snprintf(out.buf, sizeof out.buf, "%.*s%ld.%llu", static_cast<int>(temp_prefix.size()),
                temp_prefix.data(), static_cast<long>(::getpid()),
                static_cast<unsigned long long>(n));
}

std::uint64_t temp_names_used() {
  return temp_counter.load();
}

bool parse_temp_name(std::string_view name, long& pid) {
  if (name.substr(0, temp_prefix.size()) != temp_prefix)
    return false;
  name.remove_prefix(temp_prefix.size());
  auto dot = name.find('.');
  if (dot == std::string_view::npos)
    return false;
  auto p = name.substr(0, dot);
  auto n = name.substr(dot + 1);
  if (!plain_number(p, 10) || !plain_number(n, 20))
    return false;
  long v = 0;
  for (char c : p)
    v = v * 10 + (c - '0');
  if (v <= 0 || v > INT_MAX)
    return false;
  pid = v;
  return true;
}

int open_unnamed(int dir, mode_t mode) {
  return ::openat(dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
}

int open_named(int dir, mode_t mode, temp_name& name) {
  constexpr int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = -1;
  for (int attempt = 0; attempt < temp_name_attempts; ++attempt) {
    next_temp_name(name);
    fd = ::openat(dir, name.c_str(), flags, mode);
    if (fd >= 0 || errno != EEXIST)
      break;
  }
  return fd;
}

result link_unnamed(int fd, int dir, const char* name, temp_name& tmp) {
  char proc[32];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  if (::linkat(AT_FDCWD, proc, dir, name, AT_SYMLINK_FOLLOW) == 0)
    return {};
  int e = errno;
  if (e != EEXIST) {
    struct stat sb;
    if (::fstatat(AT_FDCWD, proc, &sb, AT_SYMLINK_NOFOLLOW) != 0)
      return {result::step::no_proc, errno};
    return {result::step::link, e};
  }
  // The name exists (or is a directory): link under a temporary name, rename over.
  int rc = -1;
  for (int attempt = 0; attempt < temp_name_attempts; ++attempt) {
    next_temp_name(tmp);
    rc = ::linkat(AT_FDCWD, proc, dir, tmp.c_str(), AT_SYMLINK_FOLLOW);
    if (rc == 0 || errno != EEXIST)
      break;
  }
  if (rc != 0)
    return {result::step::temp, errno};
  return rename_over(dir, tmp.c_str(), name);
}

result rename_over(int dir, const char* tmp, const char* name) {
  if (::renameat(dir, tmp, dir, name) == 0)
    return {};
  int e = errno;
  ::unlinkat(dir, tmp, 0);
  return {result::step::rename, e};
}

std::string describe(const result& r, const std::string& rel) {
  switch (r.failed) {
  case result::step::none:
    return {};
  case result::step::no_proc:
  case result::step::link:
    return "library file cannot be linked into place: " + errno_text(r.err);
  case result::step::temp:
    return "library temporary file cannot be created: " + errno_text(r.err);
  case result::step::rename:
    if (r.err == EISDIR)
      return "library path '" + rel + "' exists as a directory";
    return "library file cannot be renamed into place: " + errno_text(r.err);
  }
  return "library file cannot be linked into place";
}

std::string write_whole(int dir, const char* name, const std::string& rel, const void* data,
                        std::size_t len, mode_t mode) {
  if (!forced_named.load() && !proc_unusable.load()) {
    int fd = open_unnamed(dir, mode);
    if (fd < 0 && !tmpfile_unsupported(errno))
      return "library temporary file cannot be created: " + errno_text(errno);
    if (fd >= 0) {
      // An unnamed file: on any failure, closing it is all the cleanup there is.
      if (!write_all(fd, data, len)) {
        int e = errno;
        ::close(fd);
        return "library write failed: " + errno_text(e);
      }
      temp_name tmp;
      result r = link_unnamed(fd, dir, name, tmp);
      int rc = ::close(fd);
      if (r.ok()) {
        if (rc != 0)  // NFS-like late write error; the name is already there
          return "library write failed: " + errno_text(errno);
        return {};
      }
      if (r.failed != result::step::no_proc)
        return describe(r, rel);
      proc_unusable.store(true);  // written again, by name
    }
  }
  temp_name tmp;
  int fd = open_named(dir, mode, tmp);
  if (fd < 0)
    return "library temporary file cannot be created: " + errno_text(errno);
  int err = write_all(fd, data, len) ? 0 : errno;
  if (::close(fd) != 0 && err == 0)
    err = errno;
  if (err != 0) {
    ::unlinkat(dir, tmp.c_str(), 0);
    return "library write failed: " + errno_text(err);
  }
  return describe(rename_over(dir, tmp.c_str(), name), rel);
}

std::size_t sweep_stale_temps(int root) {
  int fd = ::openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  struct stat sb;
  if (::fstat(fd, &sb) != 0) {
    ::close(fd);
    return 0;
  }
  sweeper s;
  s.dev = sb.st_dev;
  s.self = static_cast<long>(::getpid());
  s.walk(fd, sb);
  swept_counter.fetch_add(s.removed);
  return s.removed;
}

void sweep_stale_temps_once(int root) {
  struct stat sb;
  if (::fstat(root, &sb) != 0)
    return;
  {
    std::lock_guard lock{swept_mutex};
    if (!swept_roots.emplace(sb.st_dev, sb.st_ino).second)
      return;
  }
  try {
    sweep_stale_temps(root);
  } catch (...) {
    // only allocation can throw: the sweep is best effort
  }
}

void force_named_temp(bool on) {
  forced_named.store(on);
}

bool named_temp_forced() {
  return forced_named.load();
}

std::uint64_t swept_files() {
  return swept_counter.load();
}

} // namespace ms::atomic_file
