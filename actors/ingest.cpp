// Ingest of one file into the library, mime sniffing, hex, syncfs.
//
// ingestor
//  - The source file is opened relative to the source root fd, one component at a
//    time with O_NOFOLLOW (directories as O_PATH|O_DIRECTORY), so a symlink
//    anywhere in the path is refused, never followed. The library side is walked the
//    same way from the destination root fd (missing directories are created with
//    mkdirat, mode 0755 minus umask): nothing is ever written outside DEST.
//  - The file is read once, in chunks of up to 1 MiB into a buffer reused for the
//    ingestor's life; every chunk goes to SHA-256, the first bytes to sniff_mime and
//    the chunk to a temporary file DEST/.mediasync-tmp/<pid>-<tid>-<n>. The temporary
//    file gets the source's permission bits (mode & 0777; set at creation, fchmod
//    only if the umask interferes) and atime/mtime, and is renamed over
//    DEST/<relative path>. Nothing is fsynced: the writer calls
//    sync_filesystem() once per batch.
//  - fstat before and after the read (size, mtime) and the byte count must agree,
//    else the outcome is failed "changed while being read".
//  - The last source and library directory fds are cached (the files of one
//    directory come one after another), so a file costs about ten syscalls.
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
//                    "library temporary directory cannot be created: <strerror>",
//                    "library temporary file cannot be created: <strerror>",
//                    "library write failed: <strerror>",
//                    "library file attributes cannot be set: <strerror>",
//                    "library path '<path>' exists as a directory",
//                    "library file cannot be renamed into place: <strerror>"
//  - compare_sha256 set: the file is hashed without writing; equal -> status skipped,
//    error "unchanged (checksum)", library_path = known_library_path,
//    touches_media = true; otherwise it is read again and copied.
//  - dry_run: hashed and sniffed, nothing written; status ok, library_path empty and
//    touches_media false (the file is not in the library).
//  - The constructor removes stale temporary files: those whose pid is not a live
//    process, and those carrying this process's pid but older than the process
//    (a reused pid, common in containers).
//
// sniff_mime: returns "" for empty data, the mime type for a known magic number,
// and "application/octet-stream" for any other non-empty data.
#include "actors/ingest.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <stdexcept>
#include <string_view>

namespace ms {

namespace {

constexpr std::size_t buffer_size = 1 << 20;
constexpr std::size_t head_size = 256;
constexpr const char* tmp_dir_name = ".mediasync-tmp";
constexpr int dir_walk_flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

std::string errno_text(int err) {
  char buf[256];
  return std::string{::strerror_r(err, buf, sizeof buf)};
}

std::atomic<std::uint64_t> temp_counter{0};

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

/// Wall-clock time of the first ingestor of this process (before any temp file of ours).
std::int64_t process_epoch_ns() {
  static const std::int64_t t = [] {
    struct timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }();
  return t;
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

/// Removes temp files of dead processes (and of an earlier process with our pid).
void remove_stale_temp_files(int dest_fd) {
  int fd = ::openat(dest_fd, tmp_dir_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return;
  }
  const pid_t self = ::getpid();
  const std::int64_t epoch = process_epoch_ns() - 2'000'000'000;  // coarse fs clocks
  while (struct dirent* e = ::readdir(d)) {
    const char* n = e->d_name;
    char* end = nullptr;
    errno = 0;
    long pid = std::strtol(n, &end, 10);
    if (end == n || *end != '-' || errno != 0 || pid <= 0)
      continue;
    bool stale = false;
    if (static_cast<pid_t>(pid) == self) {
      struct stat sb;
      stale = ::fstatat(fd, n, &sb, AT_SYMLINK_NOFOLLOW) == 0 && to_ns(sb.st_ctim) < epoch;
    } else {
      stale = ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    }
    if (stale)
      ::unlinkat(fd, n, 0);
  }
  ::closedir(d);
}

} // namespace

struct ingestor::impl {
  int src_fd = -1;
  int dst_fd = -1;
  int tmp_fd = -1;
  std::string source_root;
  std::string dest_root;
  pid_t pid = 0;
  pid_t tid = 0;
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
  char tmp_name[64];
  std::string error;  ///< set by the helpers on failure

  ~impl() {
    for (int fd : {src_dir_fd, lib_dir_fd, tmp_fd, src_fd, dst_fd})
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

  bool ensure_tmp_dir() {
    if (tmp_fd >= 0)
      return true;
    if (::mkdirat(dst_fd, tmp_dir_name, 0700) != 0 && errno != EEXIST) {
      error = "library temporary directory cannot be created: " + errno_text(errno);
      return false;
    }
    tmp_fd = ::openat(dst_fd, tmp_dir_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (tmp_fd < 0) {
      error = "library temporary directory cannot be created: " + errno_text(errno);
      return false;
    }
    return true;
  }

  static bool write_all(int fd, const unsigned char* p, std::size_t n) {
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
      if (out >= 0 && !write_all(out, b, un)) {
        error = "library write failed: " + errno_text(errno);
        return false;
      }
      total += un;
      // At the expected size, skip the read that would only return EOF: growth
      // shows up in the fstat after the read.
      if (total == expected && expected > 0)
        break;
    }
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, digest, &len);
    return true;
  }

  const char* next_tmp_name() {
    auto n = temp_counter.fetch_add(1, std::memory_order_relaxed);
    std::snprintf(tmp_name, sizeof tmp_name, "%ld-%ld-%llu", static_cast<long>(pid),
                  static_cast<long>(tid), static_cast<unsigned long long>(n));
    return tmp_name;
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
  s.pid = ::getpid();
  s.tid = ::gettid();
  s.buf.reset(new unsigned char[buffer_size]);
  s.ctx = EVP_MD_CTX_new();
  s.md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (s.ctx == nullptr || s.md == nullptr)
    throw std::runtime_error("cannot initialise SHA-256 (OpenSSL)");
  process_epoch_ns();
  remove_stale_temp_files(s.dst_fd);
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
           && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec && total == expected;
  };
  auto set_result = [&](std::uint64_t total, const unsigned char* digest) {
    o.size = total;
    o.sha256 = to_hex(digest, 32);
    o.mime = sniff_mime(s.head, s.head_len);
  };

  unsigned char digest[EVP_MAX_MD_SIZE];
  std::uint64_t total = 0;

  // --- hash only: checksum comparison or dry run
  if (!req.compare_sha256.empty() || req.dry_run) {
    if (!s.pass(fd, -1, expected, total, digest))
      return fail(std::move(s.error));
    if (!unchanged(total))
      return fail("changed while being read");
    set_result(total, digest);
    if (!req.compare_sha256.empty()
        && ::strcasecmp(o.sha256.c_str(), req.compare_sha256.c_str()) == 0) {
      o.status = file_status::skipped;
      o.error = "unchanged (checksum)";
      o.library_path = req.known_library_path;
      o.touches_media = true;
      return finish();
    }
    if (req.dry_run) {
      o.status = file_status::ok;
      return finish();
    }
    if (::lseek(fd, 0, SEEK_SET) != 0)
      return fail("read error: " + errno_text(errno));
  }

  // --- copy
  int ldir = s.dir_fd(s.dst_fd, dir, true, s.lib_dir, s.lib_dir_fd);
  if (ldir < 0)
    return fail(std::move(s.error));
  if (!s.ensure_tmp_dir())
    return fail(std::move(s.error));
  // Created with the source's permission bits (the fd is writable whatever they
  // are); fchmod only when the umask took some away.
  const mode_t perm = before.st_mode & 0777;
  const bool need_chmod = s.umask_bits < 0 || (perm & static_cast<mode_t>(s.umask_bits)) != 0;
  int out = -1;
  for (int attempt = 0; attempt < 8; ++attempt) {
    out = ::openat(s.tmp_fd, s.next_tmp_name(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                   need_chmod ? 0600 : perm);
    if (out >= 0 || errno != EEXIST)
      break;
  }
  if (out < 0)
    return fail("library temporary file cannot be created: " + errno_text(errno));
  auto discard = [&](std::string reason) {
    if (out >= 0)
      ::close(out);
    ::unlinkat(s.tmp_fd, s.tmp_name, 0);
    return fail(std::move(reason));
  };
  if (!s.pass(fd, out, expected, total, digest))
    return discard(std::move(s.error));
  if (!unchanged(total))
    return discard("changed while being read");
  if (need_chmod && ::fchmod(out, perm) != 0)
    return discard("library file attributes cannot be set: " + errno_text(errno));
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  if (::futimens(out, times) != 0)
    return discard("library file attributes cannot be set: " + errno_text(errno));
  int rc = ::close(out);
  out = -1;
  if (rc != 0)
    return discard("library write failed: " + errno_text(errno));
  int rc2 = ::renameat(s.tmp_fd, s.tmp_name, ldir, name);
  if (rc2 != 0 && errno == ENOENT && ldir == s.lib_dir_fd) {
    // The cached library directory was removed since: walk (and create) again once.
    ::close(s.lib_dir_fd);
    s.lib_dir_fd = -1;
    ldir = s.dir_fd(s.dst_fd, dir, true, s.lib_dir, s.lib_dir_fd);
    if (ldir < 0)
      return discard(std::move(s.error));
    rc2 = ::renameat(s.tmp_fd, s.tmp_name, ldir, name);
  }
  if (rc2 != 0) {
    int e = errno;
    if (e == EISDIR)
      return discard("library path '" + path + "' exists as a directory");
    return discard("library file cannot be renamed into place: " + errno_text(e));
  }
  set_result(total, digest);
  o.status = file_status::ok;
  o.library_path = path;
  o.touches_media = true;
  return finish();
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
