// Hostile input, end to end: a corpus built by the test (no checked-in files) of names
// holding newlines, quotes, SQL, invalid UTF-8 and 255 bytes, a 200-level tree deeper
// than PATH_MAX, symlinks out of the source and in loops, hard links, FIFOs, sockets,
// files and folders without read permission, decompression-bomb images, and library
// entries planted to lead writes outside DEST; then races: a file replaced, truncated,
// grown or rewritten between the scan and the read, or while it is being read.
// The real binary runs over it on both backends; every entry must end with exactly the
// row (status and reason) listed here, every copied file with the source's bytes, and
// nothing outside DEST may change.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <vips/vips8>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "actors/imaging.hpp"
#include "e2e_db.hpp"
#include "pg_test_db.hpp"
#include "test_util.hpp"

using namespace ms::test;
using namespace std::chrono_literals;
using vips::VImage;

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

// ------------------------------------------------------------ files by fd walks
// Paths here can be longer than PATH_MAX (the 200-level tree): everything is walked one
// component at a time from a directory fd, never following symlinks.

struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0)
      ::close(fd);
  }
};

/// Writes `bytes` to `root`/`rel` (parents created) and gives it `mode`.
void write_at(const std::string& root, const std::string& rel, const std::string& bytes,
              mode_t mode = 0644) {
  auto [dir, name] = split_path(rel);
  fd_closer d{open_dir(root, dir, true)};
  REQUIRE(d.fd >= 0);
  fd_closer f{::openat(d.fd, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                       0600)};
  INFO("writing " << rel << ": " << std::strerror(errno));
  REQUIRE(f.fd >= 0);
  REQUIRE(::write(f.fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  REQUIRE(::fchmod(f.fd, mode) == 0);
}

/// The bytes of the regular file `root`/`rel`; nothing if it is missing or not a regular file.
std::optional<std::string> read_at(const std::string& root, const std::string& rel) {
  auto [dir, name] = split_path(rel);
  fd_closer d{open_dir(root, dir, false)};
  if (d.fd < 0)
    return std::nullopt;
  fd_closer f{::openat(d.fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)};
  struct stat sb;
  if (f.fd < 0 || ::fstat(f.fd, &sb) != 0 || !S_ISREG(sb.st_mode))
    return std::nullopt;
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::read(f.fd, buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  return out;
}

bool lstat_at(const std::string& root, const std::string& rel, struct stat& sb) {
  auto [dir, name] = split_path(rel);
  fd_closer d{open_dir(root, dir, false)};
  return d.fd >= 0 && ::fstatat(d.fd, name.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0;
}

/// Every entry under `root` (relative path -> what it is), not following symlinks.
/// With `detail`: mode, size, mtime and a hash of the content (regular files) or the
/// target (symlinks); never atime, ctime or the link count. Top-level names in `skip`
/// are left out.
using listing = std::map<std::string, std::string>;

void list_into(int dfd, const std::string& prefix, bool detail, const std::set<std::string>& skip,
               listing& out) {
  int dup = ::fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    out[prefix.empty() ? "." : prefix] += " (unreadable)";
    return;
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      names.emplace_back(e->d_name);
  ::closedir(d);
  for (auto& n : names) {
    if (prefix.empty() && skip.count(n))
      continue;
    std::string rel = prefix.empty() ? n : prefix + "/" + n;
    struct stat sb;
    if (::fstatat(dfd, n.c_str(), &sb, AT_SYMLINK_NOFOLLOW) != 0) {
      out[rel] = "gone";
      continue;
    }
    std::string what = S_ISDIR(sb.st_mode)    ? "dir"
                       : S_ISREG(sb.st_mode)  ? "file"
                       : S_ISLNK(sb.st_mode)  ? "symlink"
                       : S_ISFIFO(sb.st_mode) ? "fifo"
                       : S_ISSOCK(sb.st_mode) ? "socket"
                                              : "other";
    if (detail) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " mode=%o", static_cast<unsigned>(sb.st_mode & 07777));
      what += buf;
      std::snprintf(buf, sizeof buf, " size=%lld mtime=%lld.%09ld",
                    static_cast<long long>(S_ISDIR(sb.st_mode) ? 0 : sb.st_size),
                    static_cast<long long>(sb.st_mtim.tv_sec), sb.st_mtim.tv_nsec);
      what += buf;
      // (Buffers on the heap: this recursion is 200 levels deep.)
      if (S_ISREG(sb.st_mode)) {
        fd_closer f{::openat(dfd, n.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
        std::string bytes;
        std::vector<char> chunk(65536);
        for (ssize_t k; f.fd >= 0 && (k = ::read(f.fd, chunk.data(), chunk.size())) > 0;)
          bytes.append(chunk.data(), static_cast<std::size_t>(k));
        what += " hash=" + std::to_string(std::hash<std::string>{}(bytes));
      } else if (S_ISLNK(sb.st_mode)) {
        std::vector<char> target(4096);
        auto k = ::readlinkat(dfd, n.c_str(), target.data(), target.size());
        what += " -> " + std::string(target.data(), k > 0 ? static_cast<std::size_t>(k) : 0);
      }
    }
    out[rel] = what;
    if (S_ISDIR(sb.st_mode)) {
      fd_closer sub{::openat(dfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
      if (sub.fd >= 0)
        list_into(sub.fd, rel, detail, {}, out);
      else
        out[rel] += " (unreadable)";
    }
  }
}

listing list_tree(const std::string& root, bool detail, const std::set<std::string>& skip = {}) {
  listing out;
  fd_closer d{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd >= 0)
    list_into(d.fd, "", detail, skip, out);
  return out;
}

/// Lines "path: before | after" for every entry that differs ("" when none).
std::string diff(const listing& before, const listing& after) {
  std::string out;
  std::set<std::string> keys;
  for (auto& [k, v] : before)
    keys.insert(k);
  for (auto& [k, v] : after)
    keys.insert(k);
  for (auto& k : keys) {
    auto b = before.count(k) ? before.at(k) : "(none)";
    auto a = after.count(k) ? after.at(k) : "(none)";
    if (a != b)
      out += k + ": " + b + " | " + a + "\n";
  }
  return out;
}

std::string sha256_hex(const std::string& bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += digits[md[i] >> 4];
    out += digits[md[i] & 15];
  }
  return out;
}

/// Bytes shown printable for messages (the names here hold newlines and invalid UTF-8).
std::string shown(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out.size() > 160 ? out.substr(0, 70) + "..." + out.substr(out.size() - 70) : out;
}

// ------------------------------------------------------------------ the binary

struct proc_result {
  int exit_code = -1;
  std::string out, err;
  long max_rss_kib = 0;  ///< the child's peak resident set size
  double ms = 0;
};

/// Runs the mediasync binary like run_mediasync, in directory `cwd`, and reports its peak
/// RSS. With `no_dac_override` it runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
/// (dropped from its bounding and inheritable sets before exec): as root, file permissions
/// then apply to it as to any other user.
proc_result run_binary(const std::vector<std::string>& args, const std::string& cwd,
                       bool no_dac_override) {
  temp_dir logs;
  std::vector<std::string> argv_s{MEDIASYNC_BIN};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out = logs / "out", err = logs / "err";
  const bool drop = no_dac_override && ::geteuid() == 0;
  auto t0 = clock_type::now();
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // only async-signal-safe calls from here
    if (drop) {
      __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
      __user_cap_data_struct data[2];
      if (::prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0
          || ::prctl(PR_CAPBSET_DROP, CAP_DAC_READ_SEARCH, 0, 0, 0) != 0
          || ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0
          || ::syscall(SYS_capget, &hdr, data) != 0)
        ::_exit(125);
      data[0].inheritable &= ~((1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH));
      if (::syscall(SYS_capset, &hdr, data) != 0)
        ::_exit(125);
    }
    int in = ::open("/dev/null", O_RDONLY);
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || o < 0 || e < 0 || ::dup2(in, 0) < 0 || ::dup2(o, 1) < 0 || ::dup2(e, 2) < 0)
      ::_exit(125);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0)
      ::_exit(125);
    ::execv(MEDIASYNC_BIN, argv.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  while (::wait4(pid, &status, 0, &ru) < 0)
    REQUIRE(errno == EINTR);
  proc_result r;
  r.ms = ms_since(t0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.max_rss_kib = ru.ru_maxrss;
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

// --------------------------------------------------------------------- rows

struct row {
  std::string status, error;  ///< error "" for NULL
  long long size = 0;
  std::string sha256;
};

/// "\x..." (a PostgreSQL bytea as text) -> the bytes.
std::string unhex(const std::string& s) {
  if (s.rfind("\\x", 0) != 0)
    return s;
  std::string out;
  for (std::size_t i = 2; i + 1 < s.size(); i += 2)
    out += static_cast<char>(std::stoi(s.substr(i, 2), nullptr, 16));
  return out;
}

/// A job's file_results by (exact path bytes, stage), on either backend.
std::map<std::pair<std::string, std::string>, row> rows_of(const test_db& db,
                                                          const std::string& kind, int job) {
  std::string sql =
    kind == "postgres"
      ? "SELECT coalesce(path_raw, convert_to(path, 'UTF8')), stage, status,"
        " coalesce(error_raw, convert_to(error, 'UTF8')), size, coalesce(sha256, '')"
        " FROM file_results WHERE job_id = "
      : "SELECT path, stage, status, error, size, coalesce(sha256, '') FROM file_results"
        " WHERE job_id = ";
  std::map<std::pair<std::string, std::string>, row> out;
  for (auto& r : db.rows(sql + std::to_string(job))) {
    row x;
    x.status = r[2];
    x.error = r[3] == "<null>" ? "" : unhex(r[3]);
    x.size = std::stoll(r[4]);
    x.sha256 = r[5];
    auto key = std::make_pair(unhex(r[0]), r[1]);
    REQUIRE(out.emplace(key, x).second);
  }
  return out;
}

/// What the database must say after a run: counters, stage counters, media items.
void check_database(const test_db& db, const std::string& kind, int job) {
  check_counters(db, job);
  const std::string j = std::to_string(job);
  for (auto& r : db.rows("SELECT c.stage, c.ok_files, c.failed_files, c.skipped_files,"
                         " (SELECT count(*) FROM file_results f WHERE f.job_id = c.job_id"
                         "   AND f.stage = c.stage AND f.status = 'ok'),"
                         " (SELECT count(*) FROM file_results f WHERE f.job_id = c.job_id"
                         "   AND f.stage = c.stage AND f.status = 'failed'),"
                         " (SELECT count(*) FROM file_results f WHERE f.job_id = c.job_id"
                         "   AND f.stage = c.stage AND f.status = 'skipped')"
                         " FROM job_stage_counters c WHERE c.job_id = " + j)) {
    INFO("job_stage_counters of job " << j << ", stage " << r[0]);
    CHECK(r[1] == r[4]);
    CHECK(r[2] == r[5]);
    CHECK(r[3] == r[6]);
  }
  // Every scanned entry has its sync row.
  CHECK(db.one("SELECT total_files FROM sync_jobs WHERE id = " + j)
        == db.one("SELECT count(*) FROM file_results WHERE stage = 'sync' AND job_id = " + j));
  // Every file copied by this job has its media item: same path (exact bytes), library
  // path, size and hash.
  std::string same = kind == "postgres"
                       ? " AND m.path_raw IS NOT DISTINCT FROM f.path_raw"
                         " AND m.library_path_raw IS NOT DISTINCT FROM f.path_raw"
                       : "";
  CHECK(db.one("SELECT count(*) FROM file_results f JOIN sync_jobs j ON j.id = f.job_id"
               " JOIN media_items m ON m.source_root = j.source_root AND m.path = f.path"
               "  AND m.library_path = f.path AND m.size = f.size AND m.sha256 = f.sha256"
               "  AND m.last_job_id = f.job_id" + same
               + " WHERE f.job_id = " + j + " AND f.stage = 'sync' AND f.status = 'ok'")
        == db.one("SELECT count(*) FROM file_results WHERE job_id = " + j
                  + " AND stage = 'sync' AND status = 'ok'"));
  if (kind == "sqlite") {
    CHECK(db.one("PRAGMA integrity_check") == "ok");
    CHECK(db.rows("PRAGMA foreign_key_check").empty());
  }
  // The schema is whole: no name in the corpus ran as SQL.
  for (auto table : {"schema_version", "sync_jobs", "file_results", "media_items",
                     "job_stage_counters"})
    CHECK(db.num(std::string{"SELECT count(*) FROM "} + table) >= 0);
}

// ------------------------------------------------------------------ the corpus

const std::string not_image = "not an image the processing stage handles (application/octet-stream)";
const std::string no_thumbnail = "no thumbnail to watermark (processing did not succeed)";
const std::string not_followed = "symlink not followed";
const std::string denied = "Permission denied";

/// The rows one source entry must end with (a stage without a status: no row).
struct expect {
  std::string sync, sync_error;
  std::string processing, processing_error;
  std::string watermark, watermark_error;
  bool copied = false;  ///< the library holds the source's bytes under the same path
};

expect plain_file() { return {"ok", "", "skipped", not_image, "skipped", not_image, true}; }
expect image_file() { return {"ok", "", "ok", "", "ok", "", true}; }
expect image_refused(std::string why) { return {"ok", "", "failed", why, "skipped", no_thumbnail, true}; }
expect skipped(std::string why) { return {"skipped", why, "", "", "", "", false}; }
expect failed(std::string why) { return {"failed", why, "", "", "", "", false}; }

std::string blob_bytes(VipsBlob* blob) {
  std::size_t len = 0;
  auto* p = static_cast<const char*>(vips_blob_get(blob, &len));
  std::string s(p, len);
  vips_area_unref(VIPS_AREA(blob));
  return s;
}

std::string small_jpeg(int seed) {
  VImage xy = VImage::xyz(64, 48);
  VImage img = (xy[0] * 3 + seed).bandjoin(xy[1] * 4).bandjoin(xy[0] * 0 + 90)
                 .cast(VIPS_FORMAT_UCHAR)
                 .copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  return blob_bytes(img.jpegsave_buffer());
}

std::uint32_t crc32(const unsigned char* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k)
      c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

void put_be32(std::string& s, std::size_t at, std::uint32_t v) {
  for (int k = 0; k < 4; ++k)
    s[at + k] = static_cast<char>(v >> (24 - 8 * k));
}

void put_le16(std::string& s, std::size_t at, unsigned v) {
  s[at] = static_cast<char>(v & 0xFF);
  s[at + 1] = static_cast<char>(v >> 8);
}

/// Decompression bombs: a tiny image whose header declares `w` x `h` pixels.
std::string jpeg_bomb(unsigned w, unsigned h) {
  std::string j = small_jpeg(1);
  auto byte = [&](std::size_t i) { return static_cast<unsigned>(static_cast<unsigned char>(j[i])); };
  // Segments after SOI: FF, marker, length (2, big-endian, itself included), data.
  for (std::size_t i = 2; i + 9 < j.size() && byte(i) == 0xFF; i += 2 + (byte(i + 2) << 8 | byte(i + 3))) {
    unsigned m = byte(i + 1);
    if ((m & 0xF0) == 0xC0 && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      // SOFn: length (2), precision (1), height (2), width (2)
      j[i + 5] = static_cast<char>(h >> 8);
      j[i + 6] = static_cast<char>(h & 0xFF);
      j[i + 7] = static_cast<char>(w >> 8);
      j[i + 8] = static_cast<char>(w & 0xFF);
      return j;
    }
  }
  FAIL("no SOF segment in the JPEG");
  return {};
}

std::string png_bomb(unsigned w, unsigned h) {
  std::string p = blob_bytes(VImage::black(4, 4).pngsave_buffer());
  // signature (8), IHDR length (4) "IHDR" (4) width (4) height (4) ... CRC at 29
  put_be32(p, 16, w);
  put_be32(p, 20, h);
  put_be32(p, 29, crc32(reinterpret_cast<const unsigned char*>(p.data()) + 12, 17));
  return p;
}

std::string gif_bomb() {
  std::string g = blob_bytes(VImage::black(8, 8).gifsave_buffer());
  auto byte = [&](std::size_t i) { return static_cast<unsigned>(static_cast<unsigned char>(g[i])); };
  put_le16(g, 6, 65535);  // logical screen
  put_le16(g, 8, 65535);
  // The image descriptor (0x2C: left, top, width, height) follows the global colour
  // table and any extension blocks (0x21, label, sub-blocks up to an empty one).
  std::size_t desc = 13 + ((byte(10) & 0x80) ? 3u << ((byte(10) & 7) + 1) : 0);
  while (desc < g.size() && byte(desc) == 0x21) {
    desc += 2;
    while (desc < g.size() && byte(desc) != 0)
      desc += 1 + byte(desc);
    ++desc;
  }
  REQUIRE((desc + 9 < g.size() && byte(desc) == 0x2C));
  put_le16(g, desc + 5, 65535);
  put_le16(g, desc + 7, 65535);
  return g;
}

std::string tiff_bomb(unsigned w, unsigned h) {
  std::string t = blob_bytes(VImage::black(8, 8).tiffsave_buffer());
  REQUIRE(t.substr(0, 2) == "II");
  auto u16 = [&](std::size_t at) {
    return static_cast<unsigned>(static_cast<unsigned char>(t[at]))
           | static_cast<unsigned>(static_cast<unsigned char>(t[at + 1])) << 8;
  };
  std::size_t ifd = u16(4) | static_cast<std::size_t>(u16(6)) << 16;
  for (unsigned k = 0, n = u16(ifd); k < n; ++k) {
    std::size_t e = ifd + 2 + 12 * k;
    unsigned tag = u16(e), type = u16(e + 2);
    if (tag != 256 && tag != 257)  // ImageWidth, ImageLength
      continue;
    unsigned v = tag == 256 ? w : h;
    REQUIRE((type == 3 || type == 4));
    if (type == 3) {
      put_le16(t, e + 8, v);
    } else {
      put_le16(t, e + 8, v & 0xFFFF);
      put_le16(t, e + 10, v >> 16);
    }
  }
  return t;
}

std::string too_large(unsigned long long w, unsigned long long h) {
  return "image is " + std::to_string(w) + "x" + std::to_string(h) + " ("
         + std::to_string(w * h) + " pixels), over the limit of 268402689 pixels (max_pixels)";
}

/// A source tree of hostile entries and the rows each must end with.
struct corpus {
  std::string src;
  std::map<std::string, expect> entries;  ///< relative path -> rows
  std::set<std::string> images_ok;         ///< paths whose derived files must exist

  void file(const std::string& rel, const std::string& bytes, expect e, mode_t mode = 0644) {
    write_at(src, rel, bytes, mode);
    add(rel, std::move(e));
  }
  void add(const std::string& rel, expect e) {
    if (e.processing == "ok")
      images_ok.insert(rel);
    REQUIRE(entries.emplace(rel, std::move(e)).second);
  }
};

std::string data(std::size_t n, std::uint64_t seed) { return "DATA" + content(n, seed); }

std::string deep_dir() {
  std::string d;
  for (int i = 0; i < 200; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "level-%03d-abcdefghijklmno", i);  // 24 bytes
    d += (i ? "/" : "") + std::string{buf};
  }
  return d;
}

/// Builds the corpus under t/src, the planted library entries under t/lib and the files
/// outside both that symlinks and links point to (t/outside).
corpus build_corpus(const temp_dir& t) {
  corpus c;
  c.src = t / "src";
  const std::string outside = t / "outside";
  ::mkdir(c.src.c_str(), 0755);
  ::mkdir(outside.c_str(), 0755);
  write_at(outside, "secret.txt", "secret");
  write_at(outside, "victim.bin", "victim of a symlink planted in DEST");
  write_at(outside, "victim-hard.bin", "victim of a hard link planted in DEST");
  write_at(outside, "linked.bin", "a file outside with a second name in the source");

  // Names.
  std::uint64_t seed = 1;
  for (std::string name : {
         std::string{"new\nline.bin"}, std::string{"\nleading newline"},
         std::string{"trailing newline\n"}, std::string{"dir\nwith newline/inner.bin"},
         std::string{"quote's.bin"}, std::string{"double\"quote.bin"},
         std::string{"back\\slash.bin"}, std::string{"tab\there.bin"},
         std::string{"cr\rhere.bin"}, std::string{"'; DROP TABLE sync_jobs; --"},
         std::string{"\"; DROP TABLE file_results; --.bin"},
         std::string{"Robert'); DROP TABLE media_items;--"},
         std::string{"`touch pwned` $(touch pwned) ${HOME}.bin"},
         std::string{"%s%n%x%p.bin"}, std::string{"glob*?[a].bin"}, std::string{"--help"},
         std::string{" leading space"}, std::string{"trailing space "}, std::string{"..."},
         std::string{"..evil"}, std::string{".hidden"}, std::string{"Case.bin"},
         std::string{"case.bin"},
         std::string{"caf\xc3\xa9.bin"},   // NFC
         std::string{"cafe\xcc\x81.bin"},  // NFD: the same text, another name
         // invalid UTF-8
         std::string{"bad\xff\xfe.bin"}, std::string{"lone continuation \x80.bin"},
         std::string{"overlong slash \xc0\xaf.bin"}, std::string{"truncated \xe2\x82"},
         std::string{"surrogate \xed\xa0\x80.bin"}, std::string{"latin1 dir \xe9/inner.bin"},
         // 255 bytes
         std::string(255, 'n'), [] {
           std::string s;
           for (int i = 0; i < 85; ++i)
             s += "\xe2\x82\xac";  // 85 x 3-byte euro sign
           return s;
         }(),
         std::string(255, '\xff'), std::string(255, 'd') + "/" + std::string(255, 'f')})
    c.file(name, data(50 + seed, seed), plain_file()), ++seed;

  // Images through all three stages, with hostile names too.
  c.file("photo.jpg", small_jpeg(1), image_file());
  c.file("new\nline.jpg", small_jpeg(2), image_file());
  c.file("invalid \xe9 utf-8.jpg", small_jpeg(3), image_file());
  // A 255-byte image name: the thumbnail's name (".jpg" added) would be 259 bytes.
  const std::string long_jpg = std::string(251, 'j') + ".jpg";
  c.file(long_jpg, small_jpeg(4), image_refused("derived file name too long: '.thumbnails/1024/"
                                                + long_jpg + ".jpg'"));
  // 251 bytes: the thumbnail's name is exactly 255.
  c.file(std::string(247, 'k') + ".jpg", small_jpeg(5), image_file());
  // Source paths where the library keeps its derived files.
  c.file(".thumbnails/256/photo.jpg.jpg", data(300, 90),
         failed("library path component '.thumbnails' is reserved for thumbnails and previews"));
  c.file(".previews", data(10, 91),
         failed("library path component '.previews' is reserved for thumbnails and previews"));

  // 200 levels of folders, the path longer than PATH_MAX.
  const std::string deep = deep_dir();
  REQUIRE(deep.size() > 4096);
  c.file(deep + "/deep.bin", data(1000, 92), plain_file());
  c.file(deep + "/deep.jpg", small_jpeg(6), image_file());

  // Symlinks out of the source, and loops.
  auto link = [&](const std::string& target, const std::string& rel) {
    auto [dir, name] = split_path(rel);
    fd_closer d{open_dir(c.src, dir, true)};
    REQUIRE(::symlinkat(target.c_str(), d.fd, name.c_str()) == 0);
    c.add(rel, skipped(not_followed));
  };
  link(outside, "link-dir-outside");
  link(outside + "/secret.txt", "link-file-outside");
  link("../outside/secret.txt", "link-relative-escape");
  link("../../outside", "sub/link-up-and-out");
  link("/etc/passwd", "link-etc-passwd");
  link("/", "link-root");
  link("missing-target", "link-broken");
  link("photo.jpg", "link-inside.jpg");
  link("loop-self", "loop-self");
  link("loop-b", "loop-a");
  link("loop-a", "loop-b");
  link("..", "loopdir/parent");
  link(".", "loopdir/self");

  // Hard links: names of one inode, and of an inode outside the source.
  c.file("hard-a.bin", data(4000, 93), plain_file());
  REQUIRE(::link((c.src + "/hard-a.bin").c_str(), (c.src + "/hard-b.bin").c_str()) == 0);
  c.add("hard-b.bin", plain_file());
  ::mkdir((c.src + "/hard-sub").c_str(), 0755);
  REQUIRE(::link((c.src + "/hard-a.bin").c_str(), (c.src + "/hard-sub/hard-c.bin").c_str()) == 0);
  c.add("hard-sub/hard-c.bin", plain_file());
  REQUIRE(::link((outside + "/linked.bin").c_str(), (c.src + "/hard-outside.bin").c_str()) == 0);
  c.add("hard-outside.bin", plain_file());

  // Special files.
  REQUIRE(::mkfifo((c.src + "/fifo").c_str(), 0644) == 0);
  c.add("fifo", skipped("skipped special file (FIFO)"));
  REQUIRE(::mkfifo((c.src + "/fifo.jpg").c_str(), 0644) == 0);
  c.add("fifo.jpg", skipped("skipped special file (FIFO)"));
  {
    int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string p = c.src + "/socket";
    REQUIRE(p.size() < sizeof a.sun_path);
    std::strcpy(a.sun_path, p.c_str());
    REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    ::close(s);
    c.add("socket", skipped("skipped special file (socket)"));
  }

  // Permissions (the binary runs without the capabilities that bypass them).
  c.file("noread.bin", data(100, 94), failed("cannot open: " + denied), 0000);
  c.file("writeonly.jpg", small_jpeg(7), failed("cannot open: " + denied), 0200);
  c.file("readonly.bin", data(100, 95), plain_file(), 0444);
  c.file("setuid.bin", data(100, 96), plain_file(), 04755);
  write_at(c.src, "noread-dir/inner.bin", data(10, 97));
  c.add("noread-dir", failed("cannot read directory: " + denied));
  write_at(c.src, "nolist-dir/inner.bin", data(10, 98));
  c.add("nolist-dir", failed("cannot read directory: " + denied));
  write_at(c.src, "nosearch-dir/inner.bin", data(10, 99));
  c.add("nosearch-dir/inner.bin", failed("cannot read: " + denied));
  c.file("readonly-dir/inner.bin", data(10, 100), plain_file());
  REQUIRE(::chmod((c.src + "/noread-dir").c_str(), 0000) == 0);
  REQUIRE(::chmod((c.src + "/nolist-dir").c_str(), 0300) == 0);
  REQUIRE(::chmod((c.src + "/nosearch-dir").c_str(), 0600) == 0);
  REQUIRE(::chmod((c.src + "/readonly-dir").c_str(), 0555) == 0);

  // Decompression bombs: headers declaring billions of pixels over a few bytes, and a real
  // one under the limit (a 16000 x 16000 bilevel PNG of some 30 KB: 256 million pixels).
  c.file("bomb-60000.jpg", jpeg_bomb(60000, 60000), image_refused(too_large(60000, 60000)));
  c.file("bomb-60000.png", png_bomb(60000, 60000), image_refused(too_large(60000, 60000)));
  c.file("bomb-65535.gif", gif_bomb(), image_refused(too_large(65535, 65535)));
  c.file("bomb-60000.tif", tiff_bomb(60000, 60000), image_refused(too_large(60000, 60000)));
  c.file("bomb-16000.png",
         blob_bytes(VImage::black(16000, 16000).pngsave_buffer(
           VImage::option()->set("bitdepth", 1)->set("compression", 9))),
         image_file());

  // Library entries planted to lead writes outside DEST.
  const std::string lib = t / "lib";
  ::mkdir(lib.c_str(), 0755);
  REQUIRE(::symlink(outside.c_str(), (lib + "/planted-dir").c_str()) == 0);
  c.file("planted-dir/f.bin", data(10, 101),
         failed("library path component 'planted-dir' is a symlink"));
  REQUIRE(::symlink((outside + "/victim.bin").c_str(), (lib + "/planted-link.bin").c_str()) == 0);
  c.file("planted-link.bin", data(10, 102), plain_file());
  REQUIRE(::link((outside + "/victim-hard.bin").c_str(), (lib + "/planted-hard.bin").c_str()) == 0);
  c.file("planted-hard.bin", data(10, 103), plain_file());
  return c;
}

/// The rows of the same tree synced again, unchanged.
expect again(const expect& e) {
  if (e.sync != "ok")
    return e;
  expect r = e;
  r.sync = "skipped";
  r.sync_error = "unchanged";
  if (e.processing == "ok")
    r.processing = "skipped", r.processing_error = "unchanged";
  if (e.watermark == "ok")
    r.watermark = "skipped", r.watermark_error = "unchanged";
  return r;
}

/// Checks that `rows` are exactly `want` (path -> rows), nothing more.
void check_rows(const std::map<std::pair<std::string, std::string>, row>& rows,
                const std::map<std::string, expect>& want) {
  std::size_t expected_rows = 0;
  for (auto& [path, e] : want) {
    for (auto [stage, status, error] :
         {std::tuple{"sync", e.sync, e.sync_error},
          std::tuple{"processing", e.processing, e.processing_error},
          std::tuple{"watermark", e.watermark, e.watermark_error}}) {
      INFO("path '" << shown(path) << "', stage " << stage);
      auto it = rows.find({path, stage});
      if (status.empty()) {
        CHECK(it == rows.end());
        continue;
      }
      ++expected_rows;
      REQUIRE(it != rows.end());
      CHECK(it->second.status == status);
      CHECK(it->second.error == error);
    }
  }
  for (auto& [key, r] : rows)
    if (!want.count(key.first))
      FAIL_CHECK("unexpected row for '" << shown(key.first) << "' (" << key.second << ")");
  CHECK(rows.size() == expected_rows);
}

const std::string pg_password = "mediasync-hostile-test";

/// A URL of `db` the binary can use without CAP_DAC_READ_SEARCH: the test server's socket
/// lies in a folder only its owner may enter, so TCP with a password role of its own.
std::string unprivileged_url(const test_db& db, const std::string& kind) {
  if (kind != "postgres")
    return db.url();
  pg_admin_exec("DO $$ BEGIN CREATE ROLE mediasync_hostile SUPERUSER LOGIN;"
                " EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$");
  pg_admin_exec("ALTER ROLE mediasync_hostile PASSWORD '" + pg_password + "'");
  // postgresql:///NAME?host=...
  auto b = db.url().find(":///") + 4;
  auto name = db.url().substr(b, db.url().find('?') - b);
  return "postgresql://mediasync_hostile:" + pg_password + "@127.0.0.1:"
         + std::to_string(pg_port()) + "/" + name;
}

} // namespace

TEST_CASE("hostile input corpus: exact rows for every entry, library bytes equal, nothing "
          "outside DEST changed", "[e2e][hostile]") {
  const std::string kind = EACH_BACKEND;
  ms::imaging_init(1);
  temp_dir t;
  test_db db(kind, t);
  auto t0 = clock_type::now();
  corpus c = build_corpus(t);
  const double build_ms = ms_since(t0);
  ::mkdir((t / "cwd").c_str(), 0755);
  const std::string lib = t / "lib";
  const std::set<std::string> not_watched{"lib", "m.db", "m.db-wal", "m.db-shm", "m.db-journal"};
  const listing before = list_tree(t.path(), true, not_watched);
  const listing lib_before = list_tree(lib, false);

  const std::string url = unprivileged_url(db, kind);
  const std::vector<std::string> args{"sync", c.src, lib, "--db", url, "--progress", "none"};
  auto r = run_binary(args, t / "cwd", true);
  INFO(r.err);
  REQUIRE(r.exit_code == 1);  // some files failed
  CHECK_THAT(r.err, Catch::Contains("file(s) failed"));
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "completed");

  // Every entry: exactly its rows.
  auto rows = rows_of(db, kind, 1);
  check_rows(rows, c.entries);
  check_database(db, kind, 1);
  CHECK(db.num("SELECT count(*) FROM sync_jobs") == 1);

  // Copied files: the source's bytes, the row's size and hash; no link to the source inode.
  std::set<std::string> expected_lib{"planted-dir"};
  for (auto& [path, e] : c.entries) {
    if (!e.copied)
      continue;
    INFO("library copy of '" << shown(path) << "'");
    auto src = read_at(c.src, path);
    auto copy = read_at(lib, path);
    REQUIRE(src);
    REQUIRE(copy);
    CHECK(*copy == *src);
    auto& row = rows.at({path, "sync"});
    CHECK(row.size == static_cast<long long>(src->size()));
    CHECK(row.sha256 == sha256_hex(*src));
    struct stat s, l;
    REQUIRE(lstat_at(c.src, path, s));
    REQUIRE(lstat_at(lib, path, l));
    CHECK(l.st_ino != s.st_ino);
    CHECK((l.st_mode & 07777) == (s.st_mode & 0777));  // set-user-ID bit not copied
    expected_lib.insert(path);
  }
  // Images: both thumbnails and the preview, complete JPEGs, at the same relative path.
  auto jpeg = [](const std::optional<std::string>& b) {
    return b && b->size() > 4 && b->substr(0, 2) == "\xFF\xD8" && b->substr(b->size() - 2) == "\xFF\xD9";
  };
  for (auto& path : c.images_ok) {
    INFO("derived files of '" << shown(path) << "'");
    for (std::string d : {".thumbnails/256/", ".thumbnails/1024/", ".previews/"}) {
      CHECK(jpeg(read_at(lib, d + path + ".jpg")));
      expected_lib.insert(d + path + ".jpg");
    }
  }
  CHECK(db.one("SELECT width || 'x' || height FROM media_items WHERE path = 'bomb-16000.png'")
        == "16000x16000");
  // Bounded memory: decoding the 16000^2 bomb whole would take 244 MiB more than the same
  // binary syncing one small JPEG (the baseline: sanitizer builds start much higher).
  temp_dir base;
  write_at(base / "src", "one.jpg", small_jpeg(7), 0644);
  auto b = run_binary({"sync", base / "src", base / "lib", "--db", base / "b.db", "--progress",
                       "none"}, base.path(), false);
  REQUIRE(b.exit_code == 0);
  std::printf("hostile corpus [%s]: peak RSS %ld MiB, one small JPEG %ld MiB\n", kind.c_str(),
              r.max_rss_kib / 1024, b.max_rss_kib / 1024);
  CHECK(r.max_rss_kib - b.max_rss_kib < 150 * 1024);

  // DEST holds exactly those files (no temporary file, nothing else), the planted
  // symlink folder is left alone, the planted links were replaced, not written through.
  std::set<std::string> in_lib;
  for (auto& [path, what] : list_tree(lib, false))
    if (what != "dir")
      in_lib.insert(path);
  CHECK(in_lib == expected_lib);
  struct stat sb;
  REQUIRE(lstat_at(lib, "planted-link.bin", sb));
  CHECK(S_ISREG(sb.st_mode));
  CHECK(lib_before.count("planted-dir"));

  // Nothing outside DEST changed: the source, the files links point to, the working
  // directory (still empty), the rest of the test's folder.
  const listing after = list_tree(t.path(), true, not_watched);
  CHECK(diff(before, after) == "");
  CHECK(read_file(t / "outside/victim.bin") == "victim of a symlink planted in DEST");
  CHECK(read_file(t / "outside/victim-hard.bin") == "victim of a hard link planted in DEST");

  // Again, unchanged: every copied file skipped as unchanged (the 200-level ones too: their
  // library path is longer than PATH_MAX), every other entry the same row.
  auto t1 = clock_type::now();
  auto r2 = run_binary(args, t / "cwd", true);
  const double rerun_ms = ms_since(t1);
  INFO(r2.err);
  REQUIRE(r2.exit_code == 1);
  auto rows2 = rows_of(db, kind, 2);
  std::map<std::string, expect> want2;
  for (auto& [path, e] : c.entries)
    want2[path] = again(e);
  check_rows(rows2, want2);
  check_database(db, kind, 2);
  CHECK(db.num("SELECT count(*) FROM media_items WHERE last_job_id = 2")
        == db.num("SELECT count(*) FROM media_items"));
  for (auto& path : expected_lib)
    if (path != "planted-dir")
      CHECK(read_at(lib, path));
  CHECK(diff(before, list_tree(t.path(), true, not_watched)) == "");
  std::printf("hostile corpus [%s]: %zu entries built in %.0f ms, sync %.0f ms, again %.0f ms\n",
              kind.c_str(), c.entries.size(), build_ms, r.ms, rerun_ms);
}

// ----------------------------------------------------------------------- races

namespace {

/// One race: at `point` of `path` ("open": scanned, not yet opened; "read": after the
/// first 1 MiB was read) the test changes the file; its sync row must be `status`/`error`.
struct race {
  std::string name;
  std::string point;
  std::string path;
  std::size_t size;
  std::function<void(const std::string& src, const std::string& file)> change;
  std::string status, error;
};

void check(int rc, const char* what) {
  if (rc != 0)
    throw std::runtime_error(std::string{what} + ": " + std::strerror(errno));
}

} // namespace

TEST_CASE("hostile input races: files replaced, truncated, grown or rewritten between the "
          "scan and the read end with a consistent copy or a clear reason", "[e2e][hostile]") {
  const std::string kind = EACH_BACKEND;
  ms::imaging_init(1);
  temp_dir t;
  test_db db(kind, t);
  const std::string outside = t / "outside";
  write_at(outside, "secret.txt", "secret");
  const std::string fifo = t / "pause.fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string replacement = data(5000, 7);
  const std::size_t mib = 1 << 20;

  std::vector<race> races = {
    {"replaced by a directory", "open", "victim.jpg", 4096,
     [](const std::string&, const std::string& f) {
       check(::unlink(f.c_str()), "unlink");
       check(::mkdir(f.c_str(), 0755), "mkdir");
       write_file(f + "/inner.bin", "inside the new directory");
     },
     "failed", "not a regular file any more (directory)"},
    {"replaced by a FIFO", "open", "victim.bin", 4096,
     [](const std::string&, const std::string& f) {
       check(::unlink(f.c_str()), "unlink");
       check(::mkfifo(f.c_str(), 0644), "mkfifo");
     },
     "failed", "not a regular file any more (FIFO)"},
    {"replaced by a symlink out of the source", "open", "victim.bin", 4096,
     [&](const std::string&, const std::string& f) {
       check(::unlink(f.c_str()), "unlink");
       check(::symlink((outside + "/secret.txt").c_str(), f.c_str()), "symlink");
     },
     "failed", "is a symlink"},
    {"parent folder replaced by a symlink out of the source", "open", "folder/victim.bin", 4096,
     [&](const std::string& src, const std::string&) {
       check(::rename((src + "/folder").c_str(), (src + "-moved-away").c_str()), "rename");
       check(::symlink((src + "-moved-away").c_str(), (src + "/folder").c_str()), "symlink");
     },
     "failed", "source path component 'folder' is a symlink"},
    {"removed", "open", "victim.bin", 4096,
     [](const std::string&, const std::string& f) { check(::unlink(f.c_str()), "unlink"); },
     "failed", "vanished before it was read"},
    {"replaced by another file", "open", "victim.bin", 4096,
     [&](const std::string&, const std::string& f) {
       write_file(f + ".new", replacement);
       check(::rename((f + ".new").c_str(), f.c_str()), "rename");
     },
     "ok", ""},
    {"truncated while being read", "read", "victim.bin", 3 * mib,
     [](const std::string&, const std::string& f) { check(::truncate(f.c_str(), 1000), "truncate"); },
     "failed", "changed while being read"},
    {"grown while being read", "read", "victim.bin", 3 * mib,
     [](const std::string&, const std::string& f) {
       int fd = ::open(f.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
       check(fd < 0 ? -1 : 0, "open");
       auto more = content(1 << 20, 8);
       check(::write(fd, more.data(), more.size()) == static_cast<ssize_t>(more.size()) ? 0 : -1,
             "write");
       ::close(fd);
     },
     "failed", "changed while being read"},
    {"rewritten in place, same size, old mtime put back", "read", "victim.bin", 3 * mib,
     [](const std::string&, const std::string& f) {
       struct stat sb;
       check(::stat(f.c_str(), &sb), "stat");
       int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
       check(fd < 0 ? -1 : 0, "open");
       auto other = content(static_cast<std::size_t>(sb.st_size), 9);
       check(::pwrite(fd, other.data(), other.size(), 0) == static_cast<ssize_t>(other.size())
               ? 0 : -1, "pwrite");
       const struct timespec times[2] = {sb.st_atim, sb.st_mtim};
       check(::futimens(fd, times), "futimens");
       ::close(fd);
     },
     "failed", "changed while being read"},
  };

  auto t_all = clock_type::now();
  int job = 0;
  for (std::size_t i = 0; i < races.size(); ++i) {
    auto& rc = races[i];
    INFO("race: " << rc.name);
    const std::string src = t / ("src" + std::to_string(i));
    const std::string lib = t / ("lib" + std::to_string(i));
    const std::string original = rc.path.size() > 4 && rc.path.substr(rc.path.size() - 4) == ".jpg"
                                   ? small_jpeg(static_cast<int>(i))
                                   : content(rc.size, 100 + i);
    write_at(src, rc.path, original);
    write_at(src, "bystander.bin", data(2000, 200 + i));
    const listing outside_before = list_tree(outside, true);

    std::atomic<bool> finished{false}, reached{false};
    std::string change_error;
    std::thread changer([&] {
      // Opening the FIFO for writing succeeds once the worker waits on it: change the
      // file, then let the worker go on by closing it.
      while (!finished) {
        int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
          reached = true;
          try {
            rc.change(src, src + "/" + rc.path);
          } catch (const std::exception& e) {
            change_error = e.what();
          }
          ::close(fd);
          return;
        }
        std::this_thread::sleep_for(1ms);
      }
    });
    ::setenv("MEDIASYNC_TEST_INGEST_PAUSE", (rc.point + ":" + fifo + ":" + rc.path).c_str(), 1);
    auto r = run_mediasync({"sync", src, lib, "--db", db.url(), "--progress", "none"});
    ::unsetenv("MEDIASYNC_TEST_INGEST_PAUSE");
    finished = true;
    changer.join();
    ++job;
    INFO(r.err);
    REQUIRE(reached);
    REQUIRE(change_error == "");
    CHECK(r.exit_code == (rc.status == "failed" ? 1 : 0));

    auto rows = rows_of(db, kind, job);
    REQUIRE(rows.count({rc.path, "sync"}));
    auto& victim = rows.at({rc.path, "sync"});
    CHECK(victim.status == rc.status);
    CHECK(victim.error == rc.error);
    CHECK(rows.at({"bystander.bin", "sync"}).status == "ok");
    CHECK(rows.size() == (rc.status == "ok" ? 6u : 4u));  // 3 stages of each ok file, 1 else
    CHECK(read_at(lib, "bystander.bin") == read_at(src, "bystander.bin"));
    check_database(db, kind, job);

    // The library: the file as it was when it was opened, or nothing at all.
    std::set<std::string> files;
    for (auto& [p, what] : list_tree(lib, false))
      if (what != "dir")
        files.insert(p);
    if (rc.status == "ok") {
      CHECK(read_at(lib, rc.path) == replacement);
      CHECK(victim.size == static_cast<long long>(replacement.size()));
      CHECK(victim.sha256 == sha256_hex(replacement));
      CHECK(files == std::set<std::string>{"bystander.bin", rc.path});
    } else {
      CHECK(files == std::set<std::string>{"bystander.bin"});
    }
    CHECK(diff(outside_before, list_tree(outside, true)) == "");

    // A file that changed while being read is copied by the next run, now that it is still.
    if (rc.point == "read") {
      auto r2 = run_mediasync({"sync", src, lib, "--db", db.url(), "--progress", "none"});
      ++job;
      INFO(r2.err);
      CHECK(r2.exit_code == 0);
      auto rows2 = rows_of(db, kind, job);
      auto now = read_at(src, rc.path);
      REQUIRE(now);
      CHECK(*now != original);
      CHECK(rows2.at({rc.path, "sync"}).status == "ok");
      CHECK(rows2.at({rc.path, "sync"}).sha256 == sha256_hex(*now));
      CHECK(read_at(lib, rc.path) == now);
      check_database(db, kind, job);
    }
  }
  std::printf("hostile races [%s]: %zu races, %d runs in %.0f ms\n", kind.c_str(), races.size(),
              job, ms_since(t_all));
}
