// Ingest of one file into the library, mime sniffing, hex, syncfs.
//
// ingestor
//  - The source file is opened relative to the source root fd, one component at a
//    time with O_NOFOLLOW (directories as O_PATH|O_DIRECTORY), so a symlink
//    anywhere in the path is refused, never followed. The library side is walked the
//    same way from the destination root fd (missing directories are created with
//    mkdirat, mode 0755 minus umask): nothing is ever written outside DEST. The
//    library directory fds stay O_PATH: openat(O_PATH dirfd, ".", O_TMPFILE) works,
//    and O_PATH needs no read permission on the directory.
//  - The file is read once, in chunks of up to 1 MiB into a buffer reused for the
//    ingestor's life; every chunk goes to SHA-256, the first bytes to sniff_mime and
//    the chunk to a temporary file in the file's own library directory:
//      * normally an unnamed O_TMPFILE (openat(dir, ".", O_TMPFILE)). Once written,
//        it gets its name with linkat("/proc/self/fd/<fd>", dir, name,
//        AT_SYMLINK_FOLLOW) (not AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH):
//        the complete file appears under its final name at once. If the name exists
//        (a changed file replacing its old copy), the file is linked under a short
//        temporary name ".mediasync-tmp.<pid>.<n>" (final names may be 255 bytes)
//        and renamed over the final name, in the same directory: atomic, readers
//        see the old or the new content, never a mix. A kill leaves no temporary
//        file behind (an unnamed inode is freed when its last fd closes) except in
//        that one linkat + renameat window (the sweep below removes it).
//      * fallback, when the filesystem has no O_TMPFILE (EOPNOTSUPP, EISDIR, EINVAL:
//        NFS, FUSE, old kernels, ...) or /proc/self/fd cannot be used (not mounted,
//        another pid namespace's /proc): the temporary file is created by name,
//        ".mediasync-tmp.<pid>.<n>" with O_CREAT|O_EXCL in the same directory, and
//        renamed over the final name. The ingestor remembers that O_TMPFILE is out
//        and does not try it again (when /proc fails only at the linkat, that one
//        file is read and written again). In this mode a crash can leave such a
//        temporary file in a library directory: the sweep below removes it.
//    The temporary-file primitives (unnamed file, link with replace, named temp,
//    rename) live in actors/atomic_file.cpp, shared with the thumbnails and previews
//    (actors/imaging.cpp); the ingestor adds the directory cache and its re-walk.
//    No shared temporary folder, no cross-directory rename (they serialise on the
//    filesystem's rename mutex), and creations spread over the library directories.
//    The temporary file gets the source's permission bits (mode & 0777; set at
//    creation, fchmod only if the umask interferes) and atime/mtime before it gets
//    its name. Nothing is fsynced: the writer calls sync_filesystem() once per batch.
//  - Sweep: constructing an ingestor calls atomic_file::sweep_stale_temps_once(DEST):
//    the first ingestor of a process for a library walks it once (O_NOFOLLOW, on
//    DEST's filesystem only) and removes ".mediasync-tmp.<pid>.<n>" regular files
//    whose pid is no live process and whose ctime predates this process: what a
//    kill -9 left in either mode above. Later ingestors of the process skip it.
//  - fstat before and after the read (size, mtime, ctime) and the byte count must
//    agree, else the outcome is failed "changed while being read". The ctime catches
//    a rewrite in place that keeps the size and puts the old mtime back (rsync
//    --inplace, touch -r), which would otherwise give a copy mixing two versions.
//  - Library paths whose first component is ".thumbnails" or ".previews" are where
//    the processing and watermark stages write derived files: a source file there
//    would overwrite a thumbnail or be overwritten by one (and a source file named
//    ".previews" would make every preview fail). Such paths are failed, not copied.
//  - The last source and library directory fds are cached (the files of one
//    directory come one after another), so a file costs about ten syscalls. A cached
//    library directory removed meanwhile is walked (and created) again once.
//  - Error strings (outcome.error, status failed):
//      source side:  "vanished before it was read", "is a symlink",
//                    "cannot open: <strerror>", "not a regular file any more (<type>)",
//                    "source path component '<dir>' is a symlink",
//                    "source path component '<dir>' is not a directory any more",
//                    "read error: <strerror>", "changed while being read",
//                    "invalid relative path"
//      library side (all start with "library"; ENOSPC, EROFS, EIO, ... show up as
//      the strerror text, e.g. "library write failed: No space left on device"):
//                    "library path component '<dir>' is a symlink",
//                    "library path component '<dir>' is not a directory",
//                    "library directory '<dir>' cannot be created: <strerror>",
//                    "library directory '<dir>' cannot be opened: <strerror>",
//                    "library temporary file cannot be created: <strerror>",
//                    "library write failed: <strerror>",
//                    "library file attributes cannot be set: <strerror>",
//                    "library path '<path>' exists as a directory",
//                    "library path component '<.thumbnails|.previews>' is reserved for
//                     thumbnails and previews",
//                    "library file cannot be linked into place: <strerror>",
//                    "library file cannot be renamed into place: <strerror>"
//  - compare_sha256 set: the file is hashed without writing; equal -> status skipped,
//    error "unchanged (checksum)", library_path = known_library_path,
//    touches_media = true; otherwise it is read again and copied.
//  - Test hooks (declared by tests/ingest.cpp only): detail::ingest_force_named_temp(true)
//    makes the ingestors constructed afterwards (and derived-file writes) skip O_TMPFILE
//    (the fallback above); detail::ingest_temp_names_used() counts the temporary names
//    used so far (atomic_file::temp_names_used()).
//    For whole processes (tests/e2e_hostile.cpp):
//    MEDIASYNC_TEST_INGEST_PAUSE="<point>:<fifo>:<relative path>" in the environment
//    makes the sync stage wait at <point> of that one source path until the FIFO
//    <fifo> was opened for writing and closed again: "open" before the source is
//    looked at (the file was scanned), "read" after its first chunk was read. A test
//    opens the FIFO (which returns once the worker waits), changes the file, closes.
//
// sniff_mime: returns "" for empty data, the mime type for a known magic number,
// and "application/octet-stream" for any other non-empty data.
#include "actors/ingest.hpp"

#include "actors/atomic_file.hpp"
#include "actors/imaging.hpp"

#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string_view>

namespace ms {

namespace {

constexpr std::size_t buffer_size = 1 << 20;
constexpr std::size_t head_size = 256;
constexpr int dir_walk_flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

std::string errno_text(int err) {
  char buf[256];
  return std::string{::strerror_r(err, buf, sizeof buf)};
}

/// The process umask, read without changing it (umask(2) would race with other
/// threads creating files); -1 if unknown.
int current_umask() {
  FILE* f = std::fopen("/proc/self/status", "re");
  if (f == nullptr)
    return -1;
  char line[256];
  int mask = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    unsigned m = 0;
    if (std::sscanf(line, "Umask: %o", &m) == 1) {
      mask = static_cast<int>(m & 0777);
      break;
    }
  }
  std::fclose(f);
  return mask;
}

std::int64_t to_ns(const struct timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

const char* type_name(mode_t m) {
  if (S_ISDIR(m))
    return "directory";
  if (S_ISLNK(m))
    return "symlink";
  if (S_ISFIFO(m))
    return "FIFO";
  if (S_ISSOCK(m))
    return "socket";
  if (S_ISCHR(m))
    return "character device";
  if (S_ISBLK(m))
    return "block device";
  return "unknown type";
}

/// The test hook MEDIASYNC_TEST_INGEST_PAUSE (see the top of this file).
struct pause_hook {
  bool on = false;
  std::string point, fifo, path;
};

const pause_hook& pause_from_env() {
  static const pause_hook hook = [] {
    pause_hook h;
    const char* v = std::getenv("MEDIASYNC_TEST_INGEST_PAUSE");
    std::string_view s{v == nullptr ? "" : v};
    auto a = s.find(':');
    auto b = a == std::string_view::npos ? a : s.find(':', a + 1);
    if (b == std::string_view::npos)
      return h;
    h.point = s.substr(0, a);
    h.fifo = s.substr(a + 1, b - a - 1);
    h.path = s.substr(b + 1);
    h.on = true;
    return h;
  }();
  return hook;
}

void test_pause(std::string_view point, const std::string& path) {
  const auto& h = pause_from_env();
  if (!h.on || h.point != point || h.path != path)
    return;
  int fd = ::open(h.fifo.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  char c;
  for (ssize_t n; (n = ::read(fd, &c, 1)) > 0 || (n < 0 && errno == EINTR);) {
  }
  ::close(fd);
}

bool valid_relative(const std::string& p) {
  if (p.empty() || p.front() == '/' || p.back() == '/')
    return false;
  if (std::memchr(p.data(), '\0', p.size()) != nullptr)
    return false;
  std::string_view v{p};
  for (std::size_t pos = 0;;) {
    auto slash = v.find('/', pos);
    auto comp = v.substr(pos, slash == std::string_view::npos ? std::string_view::npos
                                                              : slash - pos);
    if (comp.empty() || comp == "." || comp == "..")
      return false;
    if (slash == std::string_view::npos)
      return true;
    pos = slash + 1;
  }
}

} // namespace

// Test hooks, declared by tests/ingest.cpp only (not part of the interface).
namespace detail {
void ingest_force_named_temp(bool on);
std::uint64_t ingest_temp_names_used();

/// While on, newly constructed ingestors never try O_TMPFILE (the named-temp fallback).
void ingest_force_named_temp(bool on) {
  atomic_file::force_named_temp(on);
}

/// How many temporary names this process has used so far (fallback files, and the
/// links made to replace an existing file): 0 more per new file with O_TMPFILE.
std::uint64_t ingest_temp_names_used() {
  return atomic_file::temp_names_used();
}
} // namespace detail

struct ingestor::impl {
  int src_fd = -1;
  int dst_fd = -1;
  std::string source_root;
  std::string dest_root;
  bool use_tmpfile = true;  ///< false once O_TMPFILE or /proc/self/fd proved unusable
  int umask_bits = -1;  ///< -1: unknown, always fchmod
  std::unique_ptr<unsigned char[]> buf;
  unsigned char head[head_size];
  std::size_t head_len = 0;
  EVP_MD_CTX* ctx = nullptr;
  EVP_MD* md = nullptr;
  // last directories used, as relative paths ("" is the root itself)
  std::string src_dir;
  int src_dir_fd = -1;
  std::string lib_dir;
  int lib_dir_fd = -1;
  atomic_file::temp_name tmp;  ///< the last temporary name, in the library directory
  std::string error;  ///< set by the helpers on failure
  const std::string* path = nullptr;  ///< during ingest(): its path (for the test hook)

  ~impl() {
    for (int fd : {src_dir_fd, lib_dir_fd, src_fd, dst_fd})
      if (fd >= 0)
        ::close(fd);
    if (ctx != nullptr)
      EVP_MD_CTX_free(ctx);
    if (md != nullptr)
      EVP_MD_free(md);
  }

  /// Walks `dir` (relative, may be "") from `root` with O_NOFOLLOW. Returns an O_PATH
  /// fd the caller owns (or `root` itself for ""), or -1 with `error` set.
  /// With `create`, missing components are made with mkdirat.
  int walk(int root, std::string_view dir, bool create) {
    if (dir.empty())
      return root;
    int cur = root;
    char comp[NAME_MAX + 1];
    for (std::size_t pos = 0;;) {
      auto slash = dir.find('/', pos);
      std::size_t end = slash == std::string_view::npos ? dir.size() : slash;
      std::size_t len = end - pos;
      if (len > NAME_MAX) {
        set_walk_error(create, dir.substr(0, end), ENAMETOOLONG, false);
        if (cur != root)
          ::close(cur);
        return -1;
      }
      std::memcpy(comp, dir.data() + pos, len);
      comp[len] = '\0';
      int fd = ::openat(cur, comp, dir_walk_flags);
      if (fd < 0 && errno == ENOENT && create) {
        if (::mkdirat(cur, comp, 0755) != 0 && errno != EEXIST) {
          int e = errno;
          error = "library directory '";
          error.append(dir.substr(0, end)).append("' cannot be created: ").append(errno_text(e));
          if (cur != root)
            ::close(cur);
          return -1;
        }
        fd = ::openat(cur, comp, dir_walk_flags);
      }
      if (fd < 0) {
        int e = errno;
        bool is_link = false;
        if (e == ENOTDIR || e == ELOOP) {
          struct stat sb;
          is_link = ::fstatat(cur, comp, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode);
        }
        set_walk_error(create, dir.substr(0, end), e, is_link);
        if (cur != root)
          ::close(cur);
        return -1;
      }
      if (cur != root)
        ::close(cur);
      cur = fd;
      if (slash == std::string_view::npos)
        return cur;
      pos = slash + 1;
    }
  }

  void set_walk_error(bool library, std::string_view prefix, int e, bool is_link) {
    if (library) {
      if (is_link || e == ENOTDIR) {
        error = "library path component '";
        error.append(prefix).append(is_link ? "' is a symlink" : "' is not a directory");
      } else {
        error = "library directory '";
        error.append(prefix).append("' cannot be opened: ").append(errno_text(e));
      }
      return;
    }
    if (is_link) {
      error = "source path component '";
      error.append(prefix).append("' is a symlink");
    } else if (e == ENOENT) {
      error = "vanished before it was read";
    } else if (e == ENOTDIR) {
      error = "source path component '";
      error.append(prefix).append("' is not a directory any more");
    } else {
      error = "cannot open: " + errno_text(e);
    }
  }

  /// Cached walk: returns a borrowed fd, or -1 with `error` set.
  int dir_fd(int root, std::string_view dir, bool create, std::string& cached, int& cached_fd) {
    if (dir.empty())
      return root;
    if (cached_fd >= 0 && cached == dir)
      return cached_fd;
    if (cached_fd >= 0) {
      ::close(cached_fd);
      cached_fd = -1;
    }
    int fd = walk(root, dir, create);
    if (fd < 0)
      return -1;
    cached.assign(dir);
    cached_fd = fd;
    return fd;
  }

  /// One pass over `fd` from its current offset: hashes, captures the head and
  /// copies to `out` (if >= 0). Returns false with `error` set on an I/O error.
  bool pass(int fd, int out, std::uint64_t expected, std::uint64_t& total,
            unsigned char* digest) {
    total = 0;
    head_len = 0;
    if (EVP_DigestInit_ex2(ctx, md, nullptr) != 1) {
      error = "cannot initialise SHA-256";
      return false;
    }
    unsigned char* b = buf.get();
    for (;;) {
      ssize_t n = ::read(fd, b, buffer_size);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        error = "read error: " + errno_text(errno);
        return false;
      }
      if (n == 0)
        break;
      auto un = static_cast<std::size_t>(n);
      if (head_len < head_size) {
        std::size_t k = std::min(head_size - head_len, un);
        std::memcpy(head + head_len, b, k);
        head_len += k;
      }
      EVP_DigestUpdate(ctx, b, un);
      if (out >= 0 && !atomic_file::write_all(out, b, un)) {
        error = "library write failed: " + errno_text(errno);
        return false;
      }
      total += un;
      if (total == un && path != nullptr)
        test_pause("read", *path);
      // At the expected size, skip the read that would only return EOF: growth
      // shows up in the fstat after the read.
      if (total == expected && expected > 0)
        break;
    }
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, digest, &len);
    return true;
  }

  /// After an operation in the cached library directory `ldir` failed: if it is the
  /// cached fd (the directory may have been removed since it was cached), walks
  /// (and creates) `dir` again and returns true with `ldir` updated; false if
  /// there is nothing to retry, or with `error` set if the walk failed.
  bool rewalk_lib(int& ldir, std::string_view dir) {
    if (ldir != lib_dir_fd || lib_dir_fd < 0)
      return false;
    ::close(lib_dir_fd);
    lib_dir_fd = -1;
    ldir = dir_fd(dst_fd, dir, true, lib_dir, lib_dir_fd);
    return ldir >= 0;
  }

  /// Opens an unnamed O_TMPFILE in `ldir`. Returns the fd; or -1 with `error` set;
  /// or -1 with `use_tmpfile` cleared when the filesystem does not support it.
  int open_tmpfile(int& ldir, std::string_view dir, mode_t mode) {
    int out = atomic_file::open_unnamed(ldir, mode);
    if (out < 0 && !atomic_file::tmpfile_unsupported(errno)) {
      // A removed cached directory gives ENOENT, or EPERM on ext4.
      int e = errno;
      if (rewalk_lib(ldir, dir))
        out = atomic_file::open_unnamed(ldir, mode);
      else if (ldir < 0)
        return -1;
      else
        errno = e;
    }
    if (out < 0) {
      int e = errno;
      if (atomic_file::tmpfile_unsupported(e))
        use_tmpfile = false;
      else
        error = "library temporary file cannot be created: " + errno_text(e);
    }
    return out;
  }

  enum class link_result { ok, failed, no_proc };

  /// Gives the written O_TMPFILE `out` its final name `name` in `ldir`: linkat when
  /// the name is free, else linkat to a temporary name and renameat over it
  /// (atomic_file::link_unnamed); a removed cached directory is walked again once.
  /// no_proc: /proc/self/fd cannot be used (nothing was linked).
  link_result link_tmpfile(int out, int& ldir, std::string_view dir, const char* name,
                           const std::string& path) {
    using step = atomic_file::result::step;
    auto r = atomic_file::link_unnamed(out, ldir, name, tmp);
    if (r.failed == step::link && r.err == ENOENT) {
      if (rewalk_lib(ldir, dir))
        r = atomic_file::link_unnamed(out, ldir, name, tmp);
      else if (ldir < 0)
        return link_result::failed;
    }
    if (r.failed == step::no_proc)
      return link_result::no_proc;
    if (!r.ok()) {
      error = atomic_file::describe(r, path);
      return link_result::failed;
    }
    return link_result::ok;
  }

  /// Renames `tmp` over `name` in `ldir`; on failure removes `tmp` and sets `error`.
  bool rename_into_place(int ldir, const char* name, const std::string& path) {
    auto r = atomic_file::rename_over(ldir, tmp.c_str(), name);
    if (!r.ok())
      error = atomic_file::describe(r, path);
    return r.ok();
  }

  /// Fallback: creates the named temporary file `tmp` in `ldir`. Returns the fd,
  /// or -1 with `error` set.
  int open_named_temp(int& ldir, std::string_view dir, mode_t mode) {
    int out = -1;
    for (int round = 0; round < 2 && out < 0; ++round) {
      out = atomic_file::open_named(ldir, mode, tmp);
      // A removed cached directory: walk (and create) it again once.
      if (out >= 0 || errno != ENOENT || round > 0)
        break;
      if (!rewalk_lib(ldir, dir)) {
        if (ldir < 0)
          return -1;
        errno = ENOENT;
        break;
      }
    }
    if (out < 0)
      error = "library temporary file cannot be created: " + errno_text(errno);
    return out;
  }
};

ingestor::ingestor(const std::string& source_root, const std::string& dest_root)
  : impl_(std::make_unique<impl>()) {
  auto& s = *impl_;
  s.source_root = source_root;
  s.dest_root = dest_root;
  s.src_fd = ::open(source_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (s.src_fd < 0)
    throw std::runtime_error("cannot open source directory '" + source_root
                             + "': " + errno_text(errno));
  s.dst_fd = ::open(dest_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (s.dst_fd < 0)
    throw std::runtime_error("cannot open destination directory '" + dest_root
                             + "': " + errno_text(errno));
  s.umask_bits = current_umask();
  s.use_tmpfile = !atomic_file::named_temp_forced();
  // What killed processes left in this library (once per process and library).
  atomic_file::sweep_stale_temps_once(s.dst_fd);
  s.buf.reset(new unsigned char[buffer_size]);
  s.ctx = EVP_MD_CTX_new();
  s.md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (s.ctx == nullptr || s.md == nullptr)
    throw std::runtime_error("cannot initialise SHA-256 (OpenSSL)");
}

ingestor::~ingestor() = default;

file_outcome ingestor::ingest(const ingest_request& req) {
  auto& s = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  file_outcome o;
  o.path = req.path;
  o.stg = stage::sync;
  auto finish = [&]() -> file_outcome {
    o.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
    return std::move(o);
  };
  auto fail = [&](std::string reason) -> file_outcome {
    o.status = file_status::failed;
    o.error = std::move(reason);
    o.touches_media = false;
    return finish();
  };

  if (!valid_relative(req.path))
    return fail("invalid relative path");
  const std::string& path = req.path;
  s.path = &path;
  test_pause("open", path);
  // Derived files live under these two top-level library folders.
  for (std::string_view reserved : {thumbnails_dir, previews_dir})
    if (std::string_view{path}.substr(0, path.find('/')) == reserved)
      return fail("library path component '" + std::string{reserved}
                  + "' is reserved for thumbnails and previews");
  auto slash = path.rfind('/');
  std::string_view dir = slash == std::string::npos ? std::string_view{}
                                                    : std::string_view{path}.substr(0, slash);
  const char* name = slash == std::string::npos ? path.c_str() : path.c_str() + slash + 1;

  // --- open the source
  int sdir = s.dir_fd(s.src_fd, dir, false, s.src_dir, s.src_dir_fd);
  if (sdir < 0)
    return fail(std::move(s.error));
  constexpr int file_flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
  int fd = ::openat(sdir, name, file_flags);
  if (fd < 0 && errno == ENOENT && sdir == s.src_dir_fd) {
    // The cached directory may have been replaced since: walk again once.
    ::close(s.src_dir_fd);
    s.src_dir_fd = -1;
    sdir = s.dir_fd(s.src_fd, dir, false, s.src_dir, s.src_dir_fd);
    if (sdir < 0)
      return fail(std::move(s.error));
    fd = ::openat(sdir, name, file_flags);
  }
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT)
      return fail("vanished before it was read");
    if (e == ELOOP)
      return fail("is a symlink");
    if (e == ENXIO || e == ENODEV) {  // socket, or a device without a driver
      struct stat sb;
      if (::fstatat(sdir, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(sb.st_mode))
        return fail(std::string{"not a regular file any more ("} + type_name(sb.st_mode) + ")");
    }
    return fail("cannot open: " + errno_text(e));
  }
  struct fd_guard {
    int fd;
    ~fd_guard() { ::close(fd); }
  } guard{fd};

  struct stat before;
  if (::fstat(fd, &before) != 0)
    return fail("cannot open: " + errno_text(errno));
  if (!S_ISREG(before.st_mode))
    return fail(std::string{"not a regular file any more ("} + type_name(before.st_mode) + ")");
  o.mtime_ns = to_ns(before.st_mtim);
  const auto expected = static_cast<std::uint64_t>(before.st_size);

  auto unchanged = [&](std::uint64_t total) {
    struct stat after;
    return ::fstat(fd, &after) == 0 && after.st_size == before.st_size
           && after.st_mtim.tv_sec == before.st_mtim.tv_sec
           && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec
           && after.st_ctim.tv_sec == before.st_ctim.tv_sec
           && after.st_ctim.tv_nsec == before.st_ctim.tv_nsec && total == expected;
  };
  auto set_result = [&](std::uint64_t total, const unsigned char* digest) {
    o.size = total;
    o.sha256 = to_hex(digest, 32);
    o.mime = sniff_mime(s.head, s.head_len);
  };

  unsigned char digest[EVP_MAX_MD_SIZE];
  std::uint64_t total = 0;

  // --- hash only: checksum comparison
  if (!req.compare_sha256.empty()) {
    if (!s.pass(fd, -1, expected, total, digest))
      return fail(std::move(s.error));
    if (!unchanged(total))
      return fail("changed while being read");
    set_result(total, digest);
    if (::strcasecmp(o.sha256.c_str(), req.compare_sha256.c_str()) == 0) {
      o.status = file_status::skipped;
      o.error = "unchanged (checksum)";
      o.library_path = req.known_library_path;
      o.touches_media = true;
      return finish();
    }
    if (::lseek(fd, 0, SEEK_SET) != 0)
      return fail("read error: " + errno_text(errno));
  }

  // --- copy
  int ldir = s.dir_fd(s.dst_fd, dir, true, s.lib_dir, s.lib_dir_fd);
  if (ldir < 0)
    return fail(std::move(s.error));
  // Created with the source's permission bits (the fd is writable whatever they
  // are); fchmod only when the umask took some away.
  const mode_t perm = before.st_mode & 0777;
  const bool need_chmod = s.umask_bits < 0 || (perm & static_cast<mode_t>(s.umask_bits)) != 0;
  const mode_t create_mode = need_chmod ? 0600 : perm;
  bool read_before = false;  // the source offset is not at 0 any more
  // Copies the source to `out`, checks it did not change, sets mode and times.
  // False with s.error set.
  auto fill = [&](int out) {
    if (read_before && ::lseek(fd, 0, SEEK_SET) != 0) {
      s.error = "read error: " + errno_text(errno);
      return false;
    }
    read_before = true;
    if (!s.pass(fd, out, expected, total, digest))
      return false;
    if (!unchanged(total)) {
      s.error = "changed while being read";
      return false;
    }
    if (need_chmod && ::fchmod(out, perm) != 0) {
      s.error = "library file attributes cannot be set: " + errno_text(errno);
      return false;
    }
    const struct timespec times[2] = {before.st_atim, before.st_mtim};
    if (::futimens(out, times) != 0) {
      s.error = "library file attributes cannot be set: " + errno_text(errno);
      return false;
    }
    return true;
  };
  auto done = [&]() {
    set_result(total, digest);
    o.status = file_status::ok;
    o.library_path = path;
    o.touches_media = true;
    return finish();
  };

  if (s.use_tmpfile) {
    int out = s.open_tmpfile(ldir, dir, create_mode);
    if (out < 0 && s.use_tmpfile)
      return fail(std::move(s.error));
    if (out >= 0) {
      // An unnamed file: on any failure, closing it is all the cleanup there is.
      bool ok = fill(out);
      auto linked = ok ? s.link_tmpfile(out, ldir, dir, name, path) : impl::link_result::failed;
      int rc = ::close(out);
      if (linked == impl::link_result::ok) {
        if (rc != 0)  // NFS-like late write error; the name is already there
          return fail("library write failed: " + errno_text(errno));
        return done();
      }
      if (linked == impl::link_result::failed)
        return fail(std::move(s.error));
      s.use_tmpfile = false;  // no_proc: write this file again, by name
    }
  }

  // --- fallback: a named temporary file in the same directory, renamed over the name
  int out = s.open_named_temp(ldir, dir, create_mode);
  if (out < 0)
    return fail(std::move(s.error));
  if (!fill(out)) {
    ::close(out);
    ::unlinkat(ldir, s.tmp.c_str(), 0);
    return fail(std::move(s.error));
  }
  if (::close(out) != 0) {
    int e = errno;
    ::unlinkat(ldir, s.tmp.c_str(), 0);
    return fail("library write failed: " + errno_text(e));
  }
  if (!s.rename_into_place(ldir, name, path))
    return fail(std::move(s.error));
  return done();
}

// ---------------------------------------------------------------------- helpers

namespace {

bool has(const unsigned char* d, std::size_t len, std::size_t off, std::string_view magic) {
  return len >= off + magic.size() && std::memcmp(d + off, magic.data(), magic.size()) == 0;
}

std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8)
         | std::uint32_t{p[3]};
}

bool contains(const unsigned char* d, std::size_t len, std::string_view needle) {
  if (len < needle.size())
    return false;
  for (std::size_t i = 0; i + needle.size() <= len; ++i)
    if (std::memcmp(d + i, needle.data(), needle.size()) == 0)
      return true;
  return false;
}

/// Mime type of an ISO base media file from its ftyp box (brands at 8.., box size at 0).
std::string ftyp_mime(const unsigned char* d, std::size_t len) {
  std::string_view major{reinterpret_cast<const char*>(d + 8), 4};
  std::size_t box = be32(d);
  std::size_t end = std::min(len, box >= 16 ? box : std::size_t{16});
  auto compatible = [&](std::string_view brand) {
    for (std::size_t off = 16; off + 4 <= end; off += 4)
      if (std::memcmp(d + off, brand.data(), 4) == 0)
        return true;
    return false;
  };
  auto is_one_of = [](std::string_view b, std::initializer_list<std::string_view> set) {
    for (auto x : set)
      if (b == x)
        return true;
    return false;
  };
  if (is_one_of(major, {"avif", "avis"}))
    return "image/avif";
  if (is_one_of(major, {"heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs"}))
    return "image/heic";
  if (is_one_of(major, {"mif1", "msf1", "miaf"})) {
    if (compatible("avif") || compatible("avis"))
      return "image/avif";
    if (compatible("heic") || compatible("heix") || compatible("hevc") || compatible("hevx"))
      return "image/heic";
    return "image/heif";
  }
  if (major == "qt  ")
    return "video/quicktime";
  if (is_one_of(major, {"M4V ", "M4VH", "M4VP"}))
    return "video/x-m4v";
  if (is_one_of(major, {"M4A ", "M4B ", "M4P "}))
    return "audio/mp4";
  if (major == "crx ")
    return "image/x-canon-cr3";
  if (major.substr(0, 3) == "3gp" || major.substr(0, 3) == "3g2")
    return major.substr(0, 3) == "3g2" ? "video/3gpp2" : "video/3gpp";
  return "video/mp4";  // isom, iso2..iso9, mp41, mp42, avc1, dash, MSNV, ...
}

bool mp3_frame(const unsigned char* d, std::size_t len) {
  if (len < 4 || d[0] != 0xFF || (d[1] & 0xE0) != 0xE0)
    return false;
  unsigned version = (d[1] >> 3) & 3;  // 1 = reserved
  unsigned layer = (d[1] >> 1) & 3;    // 0 = reserved
  unsigned bitrate = d[2] >> 4;        // 15 = bad
  unsigned rate = (d[2] >> 2) & 3;     // 3 = reserved
  return version != 1 && layer != 0 && bitrate != 15 && rate != 3;
}

} // namespace

std::string sniff_mime(const unsigned char* d, std::size_t len) {
  if (d == nullptr || len == 0)
    return {};
  if (has(d, len, 0, "\xFF\xD8\xFF"))
    return "image/jpeg";
  if (has(d, len, 0, "\x89PNG\r\n\x1A\n"))
    return "image/png";
  if (has(d, len, 0, "GIF87a") || has(d, len, 0, "GIF89a"))
    return "image/gif";
  if (has(d, len, 0, "RIFF") && len >= 12) {
    if (has(d, len, 8, "WEBP"))
      return "image/webp";
    if (has(d, len, 8, "AVI "))
      return "video/x-msvideo";
    if (has(d, len, 8, "WAVE"))
      return "audio/wav";
  }
  if (has(d, len, 0, std::string_view{"II*\0", 4}) || has(d, len, 0, std::string_view{"MM\0*", 4}))
    return "image/tiff";
  if (len >= 12 && has(d, len, 4, "ftyp"))
    return ftyp_mime(d, len);
  if (len >= 8 && (has(d, len, 4, "moov") || has(d, len, 4, "mdat") || has(d, len, 4, "wide")
                   || has(d, len, 4, "pnot")))
    return "video/quicktime";
  if (has(d, len, 0, "\x1A\x45\xDF\xA3"))
    return contains(d, std::min<std::size_t>(len, 64), "webm") ? "video/webm" : "video/x-matroska";
  if (has(d, len, 0, "ID3"))
    return "audio/mpeg";
  if (has(d, len, 0, "fLaC"))
    return "audio/flac";
  if (has(d, len, 0, "OggS"))
    return contains(d, len, "\x80theora") ? "video/ogg" : "audio/ogg";
  if (has(d, len, 0, "%PDF-"))
    return "application/pdf";
  if (has(d, len, 0, "8BPS"))
    return "image/vnd.adobe.photoshop";
  // BMP: "BM", file size, two reserved zero words, then the pixel-data offset.
  if (len >= 14 && d[0] == 'B' && d[1] == 'M' && d[6] == 0 && d[7] == 0 && d[8] == 0
      && d[9] == 0)
    return "image/bmp";
  if (mp3_frame(d, len))
    return "audio/mpeg";
  if (len >= 2 && d[0] == 0xFF && (d[1] & 0xF6) == 0xF0)
    return "audio/aac";  // ADTS
  return "application/octet-stream";
}

std::string to_hex(const unsigned char* data, std::size_t len) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string r(len * 2, '\0');
  for (std::size_t i = 0; i < len; ++i) {
    r[2 * i] = digits[data[i] >> 4];
    r[2 * i + 1] = digits[data[i] & 0x0F];
  }
  return r;
}

void sync_filesystem(int dir_fd, const std::string& dir) {
  if (::syncfs(dir_fd) != 0)
    throw std::runtime_error("cannot sync the filesystem of '" + dir + "': " + errno_text(errno));
}

} // namespace ms
