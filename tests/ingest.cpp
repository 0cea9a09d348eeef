// Tests of the ingestor, sniff_mime, to_hex and sync_filesystem (actors/ingest.hpp).
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "actors/ingest.hpp"
#include "test_util.hpp"

// Test hooks defined in actors/ingest.cpp.
namespace ms::detail {
void ingest_force_named_temp(bool on);
std::uint64_t ingest_temp_names_used();
} // namespace ms::detail

using namespace ms;
namespace test = ms::test;

namespace {


/// A temp directory with src/ and dst/ inside.
struct sandbox {
  std::string path, src, dst;
  explicit sandbox(const char* base = "/tmp") {
    std::string tmpl = std::string{base} + "/ms-ingest-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path = tmpl;
    src = path + "/src";
    dst = path + "/dst";
    ::mkdir(src.c_str(), 0755);
    ::mkdir(dst.c_str(), 0755);
  }
  ~sandbox() { test::remove_tree(path); }
  sandbox(const sandbox&) = delete;
  sandbox& operator=(const sandbox&) = delete;
};

/// Opens (creating) directory `rel` below `root`.
int open_dir(const std::string& root, const std::string& rel) {
  int fd = test::open_dir(root, rel, true);
  REQUIRE(fd >= 0);
  return fd;
}

void put(const std::string& root, const std::string& rel, const std::string& bytes,
         mode_t mode = 0644) {
  auto [dir, name] = test::split_path(rel);
  int d = open_dir(root, dir);
  ::unlinkat(d, name.c_str(), 0);
  int fd = ::openat(d, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  REQUIRE(::fchmod(fd, mode) == 0);
  ::close(fd);
  ::close(d);
}

/// Whole content of root/rel; throws if it cannot be opened.
std::string get(const std::string& root, const std::string& rel) {
  auto [dir, name] = test::split_path(rel);
  int d = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  std::size_t pos = 0;
  while (d >= 0 && pos < dir.size()) {
    auto slash = dir.find('/', pos);
    if (slash == std::string::npos)
      slash = dir.size();
    int sub = ::openat(d, dir.substr(pos, slash - pos).c_str(), O_RDONLY | O_DIRECTORY);
    ::close(d);
    d = sub;
    pos = slash + 1;
  }
  if (d < 0)
    throw std::runtime_error("no such directory: " + dir);
  int fd = ::openat(d, name.c_str(), O_RDONLY | O_CLOEXEC);
  ::close(d);
  if (fd < 0)
    throw std::runtime_error("no such file: " + rel);
  std::string r;
  char b[65536];
  for (ssize_t n; (n = ::read(fd, b, sizeof b)) > 0;)
    r.append(b, static_cast<std::size_t>(n));
  ::close(fd);
  return r;
}

bool exists(const std::string& p) {
  struct stat sb;
  return ::lstat(p.c_str(), &sb) == 0;
}

std::vector<std::string> list(const std::string& dir) {
  std::vector<std::string> r;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr)
    return r;
  while (struct dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      r.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(r.begin(), r.end());
  return r;
}

/// Relative paths of every entry under `root` whose name starts with ".mediasync-tmp".
std::vector<std::string> temp_names(const std::string& root, const std::string& rel = "") {
  std::vector<std::string> r;
  for (auto& n : list(rel.empty() ? root : root + "/" + rel)) {
    std::string p = rel.empty() ? n : rel + "/" + n;
    if (n.rfind(".mediasync-tmp", 0) == 0)
      r.push_back(p);
    struct stat sb;
    if (::lstat((root + "/" + p).c_str(), &sb) == 0 && S_ISDIR(sb.st_mode))
      for (auto& x : temp_names(root, p))
        r.push_back(x);
  }
  return r;
}

/// Whether the filesystem of `dir` has O_TMPFILE.
bool tmpfile_supported(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0)
    return false;
  ::close(fd);
  return true;
}

/// Ingestors constructed during its life use the named-temp fallback (if `on`).
struct named_temp_mode {
  explicit named_temp_mode(bool on) { detail::ingest_force_named_temp(on); }
  ~named_temp_mode() { detail::ingest_force_named_temp(false); }
  named_temp_mode(const named_temp_mode&) = delete;
  named_temp_mode& operator=(const named_temp_mode&) = delete;
};

const char* mode_name(bool named) {
  return named ? "named temp fallback" : "O_TMPFILE";
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 rng{seed};
  std::string s(n, '\0');
  for (auto& c : s)
    c = static_cast<char>(rng());
  return s;
}

std::string sha256_hex(const std::string& data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  REQUIRE(EVP_Digest(data.data(), data.size(), d, &len, EVP_sha256(), nullptr) == 1);
  return to_hex(d, len);
}

ingest_request req_for(const std::string& path) {
  ingest_request r;
  r.path = path;
  return r;
}

std::string sniff(const std::string& s) {
  return sniff_mime(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

const std::string jpeg_header = std::string("\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00", 14);
const std::string png_header = std::string("\x89PNG\r\n\x1A\n\x00\x00\x00\x0DIHDR", 16);

} // namespace

// ---------------------------------------------------------------- plain helpers

TEST_CASE("ingest: to_hex is lower-case hex", "[ingest]") {
  const unsigned char b[] = {0x00, 0x01, 0xAB, 0xFF, 0x7f};
  CHECK(to_hex(b, 5) == "0001abff7f");
  CHECK(to_hex(b, 0).empty());
}

TEST_CASE("ingest: sniff_mime knows the common media magic numbers", "[ingest][mime]") {
  using namespace std::string_literals;
  CHECK(sniff("") == "");
  CHECK(sniff_mime(nullptr, 0) == "");
  CHECK(sniff(jpeg_header) == "image/jpeg");
  CHECK(sniff(png_header) == "image/png");
  CHECK(sniff("GIF89a\x01\x00") == "image/gif");
  CHECK(sniff("GIF87a") == "image/gif");
  CHECK(sniff("RIFF\x24\x00\x00\x00WEBPVP8 "s) == "image/webp");
  CHECK(sniff("RIFF\x24\x00\x00\x00" "AVI LIST"s) == "video/x-msvideo");
  CHECK(sniff("RIFF\x24\x00\x00\x00WAVEfmt "s) == "audio/wav");
  CHECK(sniff("II*\0\x08\0\0\0"s) == "image/tiff");
  CHECK(sniff("MM\0*\0\0\0\x08"s) == "image/tiff");
  CHECK(sniff("BM\x36\x00\x0C\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00"s) == "image/bmp");
  CHECK(sniff("\0\0\0\x18" "ftypheic\0\0\0\0mif1heic"s) == "image/heic");
  CHECK(sniff("\0\0\0\x18" "ftypmif1\0\0\0\0mif1heic"s) == "image/heic");
  CHECK(sniff("\0\0\0\x18" "ftypmif1\0\0\0\0mif1miaf"s) == "image/heif");
  CHECK(sniff("\0\0\0\x1C" "ftypavif\0\0\0\0avifmif1miaf"s) == "image/avif");
  CHECK(sniff("\0\0\0\x1C" "ftypisom\0\0\x02\0isomiso2mp41"s) == "video/mp4");
  CHECK(sniff("\0\0\0\x18" "ftypmp42\0\0\0\0mp42isom"s) == "video/mp4");
  CHECK(sniff("\0\0\0\x14" "ftypqt  \0\0\0\0qt  "s) == "video/quicktime");
  CHECK(sniff("\0\0\0\x14" "ftypM4V \0\0\0\0M4V "s) == "video/x-m4v");
  CHECK(sniff("\0\0\0\x08wide\0\0\0\0mdat"s) == "video/quicktime");
  CHECK(sniff("\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\x82\x84webm"s) == "video/webm");
  CHECK(sniff("\x1A\x45\xDF\xA3\xA3\x42\x82\x88matroska"s) == "video/x-matroska");
  CHECK(sniff("ID3\x04\0\0\0\0\0\0"s) == "audio/mpeg");
  CHECK(sniff("\xFF\xFB\x90\x64\0\0"s) == "audio/mpeg");  // MPEG-1 layer III frame
  CHECK(sniff("fLaC\0\0\0\x22"s) == "audio/flac");
  CHECK(sniff("OggS\0\x02\0\0"s) == "audio/ogg");
  CHECK(sniff("%PDF-1.7\n"s) == "application/pdf");
  CHECK(sniff("8BPS\0\x01"s) == "image/vnd.adobe.photoshop");
  // unknown or truncated data
  CHECK(sniff("hello world") == "application/octet-stream");
  CHECK(sniff("\xFF\xD8"s) == "application/octet-stream");
  CHECK(sniff("\x89PNG"s) == "application/octet-stream");
  CHECK(sniff("RIFF\x24\x00\x00\x00XXXX"s) == "application/octet-stream");
  CHECK(sniff("BM this is text"s) == "application/octet-stream");
  CHECK(sniff("\xFF\xFF\xFF\xFF"s) == "application/octet-stream");
  CHECK(sniff("\0"s) == "application/octet-stream");
}

TEST_CASE("ingest: sync_filesystem succeeds on a directory and names it on failure",
          "[ingest]") {
  sandbox sb;
  int fd = ::open(sb.dst.c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(fd >= 0);
  CHECK_NOTHROW(sync_filesystem(fd, sb.dst));
  ::close(fd);
  CHECK_THROWS_WITH(sync_filesystem(-1, "/some/dir"),
                    Catch::Contains("/some/dir") && Catch::Contains("Bad file descriptor"));
}

// --------------------------------------------------------------------- ingestor

TEST_CASE("ingest: constructor throws when a root cannot be opened", "[ingest]") {
  sandbox sb;
  put(sb.src, "file", "x");
  CHECK_THROWS_WITH((ingestor{sb.path + "/nope", sb.dst}), Catch::Contains(sb.path + "/nope"));
  CHECK_THROWS_WITH((ingestor{sb.src, sb.path + "/nope"}), Catch::Contains(sb.path + "/nope"));
  CHECK_THROWS_AS((ingestor{sb.src + "/file", sb.dst}), std::runtime_error);
}

TEST_CASE("ingest: copies bytes exactly, hashes, sniffs, preserves mode and times",
          "[ingest]") {
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  ingestor ing{sb.src, sb.dst};
  const std::size_t MiB = 1 << 20;
  struct c {
    std::string path;
    std::string data;
  };
  std::vector<c> cases = {
    {"abc.txt", "abc"},
    {"one", "x"},
    {"photos/2020/img.jpg", jpeg_header + random_bytes(5000, 1)},
    {"photos/2020/img.png", png_header + random_bytes(70000, 2)},
    {"big/exact_chunk", random_bytes(MiB, 3)},
    {"big/chunk_minus_1", random_bytes(MiB - 1, 4)},
    {"big/chunk_plus_1", random_bytes(MiB + 1, 5)},
    {"big/three_and_a_half", random_bytes(3 * MiB + MiB / 2, 6)},
  };
  for (auto& x : cases)
    put(sb.src, x.path, x.data, 0640);
  struct timespec ts[2] = {{1500000000, 111}, {1234567890, 123456789}};
  REQUIRE(::utimensat(AT_FDCWD, (sb.src + "/photos/2020/img.jpg").c_str(), ts, 0) == 0);

  for (auto& x : cases) {
    INFO(x.path);
    auto o = ing.ingest(req_for(x.path));
    CHECK(o.status == file_status::ok);
    CHECK(o.error == "");
    CHECK(o.job_id == 0);
    CHECK(o.path == x.path);
    CHECK(o.stg == stage::sync);
    CHECK(o.size == x.data.size());
    CHECK(o.sha256 == sha256_hex(x.data));
    CHECK(o.library_path == x.path);
    CHECK(o.touches_media);
    CHECK(o.duration_us >= 0);
    CHECK(get(sb.dst, x.path) == x.data);
    struct stat s1, s2;
    REQUIRE(::stat((sb.src + "/" + x.path).c_str(), &s1) == 0);
    REQUIRE(::stat((sb.dst + "/" + x.path).c_str(), &s2) == 0);
    CHECK((s2.st_mode & 07777) == 0640);
    CHECK(s2.st_mtim.tv_sec == s1.st_mtim.tv_sec);
    CHECK(s2.st_mtim.tv_nsec == s1.st_mtim.tv_nsec);
    CHECK(o.mtime_ns == static_cast<std::int64_t>(s1.st_mtim.tv_sec) * 1'000'000'000
                          + s1.st_mtim.tv_nsec);
  }
  auto o = ing.ingest(req_for("abc.txt"));
  CHECK(o.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(o.mime == "application/octet-stream");
  CHECK(ing.ingest(req_for("photos/2020/img.jpg")).mime == "image/jpeg");
  CHECK(ing.ingest(req_for("photos/2020/img.png")).mime == "image/png");
  struct stat s;
  REQUIRE(::stat((sb.dst + "/photos/2020/img.jpg").c_str(), &s) == 0);
  CHECK(s.st_mtim.tv_sec == 1234567890);
  CHECK(s.st_mtim.tv_nsec == 123456789);
  // no temporary file (nor folder) left anywhere under DEST
  CHECK(temp_names(sb.dst).empty());
  CHECK(list(sb.dst) == std::vector<std::string>{"abc.txt", "big", "one", "photos"});
}

TEST_CASE("ingest: zero-byte file", "[ingest]") {
  sandbox sb;
  put(sb.src, "empty", "");
  ingestor ing{sb.src, sb.dst};
  auto o = ing.ingest(req_for("empty"));
  CHECK(o.status == file_status::ok);
  CHECK(o.size == 0);
  CHECK(o.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(o.mime == "");
  CHECK(exists(sb.dst + "/empty"));
  CHECK(get(sb.dst, "empty").empty());
}

TEST_CASE("ingest: overwrites an existing library file atomically", "[ingest]") {
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  put(sb.src, "a/f", "new content", 0600);
  put(sb.dst, "a/f", "old content that is longer", 0644);
  put(sb.src, "top", "new top");
  put(sb.dst, "top", "old top");
  // a final name of 255 bytes: the temporary name must stay short
  const std::string long_name = "a/" + std::string(255, 'L');
  put(sb.src, long_name, "new long");
  put(sb.dst, long_name, "old long");
  // a symlink at the final name is replaced, never followed
  put(sb.path, "outside/target", "outside");
  put(sb.src, "a/link", "new link");
  REQUIRE(::symlink((sb.path + "/outside/target").c_str(), (sb.dst + "/a/link").c_str()) == 0);
  struct stat old_st;
  REQUIRE(::stat((sb.dst + "/a/f").c_str(), &old_st) == 0);
  ingestor ing{sb.src, sb.dst};
  for (const char* p : {"a/f", "top", long_name.c_str(), "a/link"}) {
    INFO(p);
    auto o = ing.ingest(req_for(p));
    CHECK(o.status == file_status::ok);
    CHECK(o.error == "");
  }
  CHECK(get(sb.dst, "a/f") == "new content");
  CHECK(get(sb.dst, "top") == "new top");
  CHECK(get(sb.dst, long_name) == "new long");
  CHECK(get(sb.dst, "a/link") == "new link");
  CHECK(get(sb.path, "outside/target") == "outside");
  struct stat st;
  REQUIRE(::lstat((sb.dst + "/a/link").c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  REQUIRE(::stat((sb.dst + "/a/f").c_str(), &st) == 0);
  CHECK(st.st_ino != old_st.st_ino);  // a new inode took the name, not a rewrite in place
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_nlink == 1);            // the temporary name is gone
  CHECK(temp_names(sb.dst).empty());
  CHECK(list(sb.dst + "/a") == std::vector<std::string>{std::string(255, 'L'), "f", "link"});
}

TEST_CASE("ingest: readers of the library see the old or the new file, never a part",
          "[ingest]") {
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  const std::string a = random_bytes(3 << 20, 21);  // several write() calls each
  const std::string b = random_bytes((2 << 20) + 12345, 22);
  put(sb.src, "d/f", a);
  ingestor ing{sb.src, sb.dst};
  REQUIRE(ing.ingest(req_for("d/f")).status == file_status::ok);

  // Replacing: a reader polling the name always finds it, whole, old or new.
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, missing{0}, mixed{0};
  std::thread reader([&] {
    while (!stop.load()) {
      try {
        auto c = get(sb.dst, "d/f");
        if (c != a && c != b)
          ++mixed;
        ++reads;
      } catch (const std::exception&) {
        ++missing;
      }
    }
  });
  for (int i = 0; i < 30; ++i) {
    put(sb.src, "d/f", i % 2 == 0 ? b : a);
    CHECK(ing.ingest(req_for("d/f")).status == file_status::ok);
  }
  stop = true;
  reader.join();
  CHECK(reads > 0);
  CHECK(missing == 0);
  CHECK(mixed == 0);
  CHECK(get(sb.dst, "d/f") == a);  // the last one written (i == 29)

  // New names: a reader waiting for each one never sees it before it is complete.
  const int n = 20;
  for (int i = 0; i < n; ++i)
    put(sb.src, "d/new" + std::to_string(i), i % 2 == 0 ? a : b);
  std::atomic<int> seen_partial{0}, seen{0};
  stop = false;
  std::thread waiter([&] {
    for (int i = 0; i < n;) {
      const bool all_written = stop.load();
      int fd = ::open((sb.dst + "/d/new" + std::to_string(i)).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        if (all_written)
          break;
        continue;
      }
      struct stat st;
      ::fstat(fd, &st);
      ::close(fd);
      if (static_cast<std::size_t>(st.st_size) != (i % 2 == 0 ? a : b).size())
        ++seen_partial;
      ++seen;
      ++i;
    }
  });
  for (int i = 0; i < n; ++i)
    CHECK(ing.ingest(req_for("d/new" + std::to_string(i))).status == file_status::ok);
  stop = true;
  waiter.join();
  CHECK(seen_partial == 0);
  CHECK(seen == n);
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: odd names, 255-byte names and paths beyond PATH_MAX", "[ingest]") {
  sandbox sb;
  std::vector<std::string> paths = {
    std::string(255, 'n'),
    std::string(255, 'd') + "/" + std::string(254, 'f') + "\xff",
    "new\nline/quote'\"s and spaces",
    "bad\xff\xfe/caf\xe9.jpg",
  };
  std::string deep;
  for (int i = 0; i < 200; ++i)
    deep += "level_" + std::to_string(i) + "_with_a_longer_name/";
  deep += "leaf.bin";
  REQUIRE(deep.size() > 4096);
  paths.push_back(deep);
  ingestor ing{sb.src, sb.dst};
  for (auto& p : paths) {
    INFO(p);
    put(sb.src, p, p + "!");
    auto o = ing.ingest(req_for(p));
    CHECK(o.status == file_status::ok);
    CHECK(o.error == "");
    CHECK(o.library_path == p);
    CHECK(get(sb.dst, p) == p + "!");
  }
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: source names like the temporary ones are plain files", "[ingest]") {
  // With the old shared DEST/.mediasync-tmp folder these collided with it.
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  const std::vector<std::string> paths = {".mediasync-tmp/1-2-3", "a/.mediasync-tmp",
                                          "b/.mediasync-tmp.1.2", ".mediasync-tmp.x"};
  ingestor ing{sb.src, sb.dst};
  for (auto& p : paths) {
    INFO(p);
    put(sb.src, p, p);
    auto o = ing.ingest(req_for(p));
    CHECK(o.status == file_status::ok);
    CHECK(get(sb.dst, p) == p);
    CHECK(ing.ingest(req_for(p)).status == file_status::ok);  // and replaced
  }
  // the library holds these names and no other temporary-looking one
  std::vector<std::string> want = {".mediasync-tmp", ".mediasync-tmp.x", "a/.mediasync-tmp",
                                   "b/.mediasync-tmp.1.2"};
  CHECK(temp_names(sb.dst) == want);
}

TEST_CASE("ingest: invalid relative paths are refused", "[ingest]") {
  sandbox sb;
  put(sb.path, "outside", "secret");
  ingestor ing{sb.src, sb.dst};
  const std::vector<std::string> bad = {"../outside", "/etc/passwd", "a//b", "a/./b", "", "a/",
                                        "a/../../outside", ".", std::string("a\0b", 3)};
  for (auto& p : bad) {
    INFO(p);
    auto o = ing.ingest(req_for(p));
    CHECK(o.status == file_status::failed);
    CHECK(o.error == "invalid relative path");
    CHECK_FALSE(o.touches_media);
  }
  CHECK(list(sb.dst).empty());
}

TEST_CASE("ingest: a vanished file fails with a reason", "[ingest]") {
  sandbox sb;
  put(sb.src, "d/here", "1");
  ingestor ing{sb.src, sb.dst};
  auto o = ing.ingest(req_for("d/gone"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "vanished before it was read");
  CHECK_FALSE(o.touches_media);
  CHECK(o.path == "d/gone");
  o = ing.ingest(req_for("nodir/gone"));
  CHECK(o.error == "vanished before it was read");
  // the cached source directory was deleted and made again: the new one is read
  CHECK(ing.ingest(req_for("d/here")).status == file_status::ok);
  test::remove_tree(sb.src + "/d");
  put(sb.src, "d/here", "2");
  o = ing.ingest(req_for("d/here"));
  CHECK(o.status == file_status::ok);
  CHECK(get(sb.dst, "d/here") == "2");
}

TEST_CASE("ingest: symlinks and non-regular files in the source are refused", "[ingest]") {
  sandbox sb;
  put(sb.path, "outside/secret", "secret");
  put(sb.src, "real/f", "data");
  REQUIRE(::symlink("real/f", (sb.src + "/link").c_str()) == 0);
  REQUIRE(::symlink((sb.path + "/outside").c_str(), (sb.src + "/dirlink").c_str()) == 0);
  REQUIRE(::mkfifo((sb.src + "/fifo").c_str(), 0644) == 0);
  ::mkdir((sb.src + "/adir").c_str(), 0755);
  ingestor ing{sb.src, sb.dst};

  auto o = ing.ingest(req_for("link"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "is a symlink");
  o = ing.ingest(req_for("dirlink/secret"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "source path component 'dirlink' is a symlink");
  o = ing.ingest(req_for("fifo"));  // must not block
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "not a regular file any more (FIFO)");
  o = ing.ingest(req_for("adir"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "not a regular file any more (directory)");
  o = ing.ingest(req_for("real/f/x"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "source path component 'real/f' is not a directory any more");
  CHECK_FALSE(exists(sb.dst + "/dirlink"));
  CHECK_FALSE(exists(sb.dst + "/link"));
  CHECK_FALSE(exists(sb.dst + "/fifo"));
  CHECK_FALSE(exists(sb.dst + "/adir"));
}

TEST_CASE("ingest: a file replaced by a directory after the scan fails", "[ingest]") {
  sandbox sb;
  put(sb.src, "p/x.jpg", jpeg_header);
  ingestor ing{sb.src, sb.dst};
  CHECK(ing.ingest(req_for("p/x.jpg")).status == file_status::ok);
  REQUIRE(::unlink((sb.src + "/p/x.jpg").c_str()) == 0);
  REQUIRE(::mkdir((sb.src + "/p/x.jpg").c_str(), 0755) == 0);
  auto o = ing.ingest(req_for("p/x.jpg"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "not a regular file any more (directory)");
  CHECK_FALSE(o.touches_media);
  CHECK(get(sb.dst, "p/x.jpg") == jpeg_header);  // the earlier copy is untouched
}

TEST_CASE("ingest: a library directory replaced by a symlink is never followed",
          "[ingest]") {
  const bool named = GENERATE(false, true);
  const char* base = GENERATE("/tmp", "/dev/shm");  // ext4 and tmpfs differ below
  INFO(mode_name(named) << " in " << base);
  named_temp_mode mode{named};
  sandbox sb{base};
  const std::string outside = sb.path + "/outside";
  ::mkdir(outside.c_str(), 0755);
  put(sb.src, "a/b/one.jpg", "1");
  put(sb.src, "a/b/two.jpg", "2");
  put(sb.src, "c/three.jpg", "3");
  put(sb.src, "c/d/four.jpg", "4");

  {
    ingestor ing{sb.src, sb.dst};
    CHECK(ing.ingest(req_for("a/b/one.jpg")).status == file_status::ok);
  }
  // a/b in the library becomes a symlink to a directory outside DEST
  test::remove_tree(sb.dst + "/a/b");
  REQUIRE(::symlink(outside.c_str(), (sb.dst + "/a/b").c_str()) == 0);
  // c in the library is a symlink too
  REQUIRE(::symlink(outside.c_str(), (sb.dst + "/c").c_str()) == 0);

  ingestor ing{sb.src, sb.dst};
  auto o = ing.ingest(req_for("a/b/two.jpg"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "library path component 'a/b' is a symlink");
  CHECK_FALSE(o.touches_media);
  CHECK(o.library_path.empty());
  o = ing.ingest(req_for("c/three.jpg"));
  CHECK(o.error == "library path component 'c' is a symlink");
  o = ing.ingest(req_for("c/d/four.jpg"));
  CHECK(o.error == "library path component 'c' is a symlink");
  CHECK(list(outside).empty());  // nothing written outside DEST
  CHECK(temp_names(sb.dst).empty());

  // a library component that is a regular file
  put(sb.dst, "e", "file");
  put(sb.src, "e/f", "x");
  o = ing.ingest(req_for("e/f"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "library path component 'e' is not a directory");

  // the final name is a directory: failed, temp file removed
  put(sb.src, "g/h", "x");
  ::mkdir((sb.dst + "/g").c_str(), 0755);
  ::mkdir((sb.dst + "/g/h").c_str(), 0755);
  o = ing.ingest(req_for("g/h"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "library path 'g/h' exists as a directory");
  CHECK_FALSE(o.touches_media);
  CHECK(temp_names(sb.dst).empty());
  CHECK(list(sb.dst + "/g/h").empty());

  // a library directory replaced by a symlink after it was cached
  put(sb.src, "k/one", "1");
  put(sb.src, "k/two", "2");
  CHECK(ing.ingest(req_for("k/one")).status == file_status::ok);
  test::remove_tree(sb.dst + "/k");
  REQUIRE(::symlink(outside.c_str(), (sb.dst + "/k").c_str()) == 0);
  o = ing.ingest(req_for("k/two"));  // the cached fd names the removed directory
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "library path component 'k' is a symlink");
  CHECK(list(outside).empty());
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: the final name is a directory, in both modes", "[ingest]") {
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  put(sb.src, "g/h", "x");
  put(sb.src, "top", "x");
  ::mkdir((sb.dst + "/g").c_str(), 0755);
  ::mkdir((sb.dst + "/g/h").c_str(), 0755);
  put(sb.dst, "top/inside", "keep");
  ingestor ing{sb.src, sb.dst};
  auto o = ing.ingest(req_for("g/h"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "library path 'g/h' exists as a directory");
  o = ing.ingest(req_for("top"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "library path 'top' exists as a directory");
  CHECK(get(sb.dst, "top/inside") == "keep");
  CHECK(temp_names(sb.dst).empty());
  CHECK(list(sb.dst + "/g") == std::vector<std::string>{"h"});
}

TEST_CASE("ingest: compare_sha256 skips unchanged content without writing", "[ingest]") {
  sandbox sb;
  const std::string data = png_header + random_bytes(200000, 9);
  put(sb.src, "x/y.png", data);
  ingestor ing{sb.src, sb.dst};
  auto req = req_for("x/y.png");
  req.compare_sha256 = sha256_hex(data);
  req.known_library_path = "old/place.png";
  auto o = ing.ingest(req);
  CHECK(o.status == file_status::skipped);
  CHECK(o.error == "unchanged (checksum)");
  CHECK(o.library_path == "old/place.png");
  CHECK(o.touches_media);
  CHECK(o.sha256 == req.compare_sha256);
  CHECK(o.size == data.size());
  CHECK(o.mime == "image/png");
  CHECK(list(sb.dst).empty());  // nothing written, not even a directory

  // upper-case hex compares equal too
  auto upper = req;
  std::transform(upper.compare_sha256.begin(), upper.compare_sha256.end(),
                 upper.compare_sha256.begin(), ::toupper);
  CHECK(ing.ingest(upper).status == file_status::skipped);

  req.compare_sha256 = std::string(64, '0');
  o = ing.ingest(req);
  CHECK(o.status == file_status::ok);
  CHECK(o.error == "");
  CHECK(o.library_path == "x/y.png");
  CHECK(o.sha256 == sha256_hex(data));
  CHECK(get(sb.dst, "x/y.png") == data);
}

TEST_CASE("ingest: content changing while read is detected", "[ingest]") {
  // /proc files claim size 0 and then deliver bytes: the size check catches it.
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  ingestor ing{"/proc/self", sb.dst};
  auto o = ing.ingest(req_for("status"));
  CHECK(o.status == file_status::failed);
  CHECK(o.error == "changed while being read");
  CHECK_FALSE(o.touches_media);
  CHECK_FALSE(exists(sb.dst + "/status"));
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: a file rewritten during the copy is detected",
          "[ingest]") {
  sandbox sb;
  const std::size_t size = 16 << 20;
  put(sb.src, "busy", std::string(size, 'a'));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    int fd = ::open((sb.src + "/busy").c_str(), O_WRONLY);
    char c = 'b';
    while (!stop.load()) {
      ::pwrite(fd, &c, 1, static_cast<off_t>(size / 2));
      c = c == 'b' ? 'c' : 'b';
    }
    ::close(fd);
  });
  ingestor ing{sb.src, sb.dst};
  int failed = 0;
  for (int i = 0; i < 50 && failed == 0; ++i) {
    auto o = ing.ingest(req_for("busy"));
    if (o.status == file_status::failed) {
      CHECK(o.error == "changed while being read");
      ++failed;
    }
  }
  stop = true;
  writer.join();
  CHECK(failed > 0);
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: destination write errors are failed outcomes with the errno text",
          "[ingest]") {
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};  // inherited by the child
  sandbox sb;
  put(sb.src, "big", random_bytes(300000, 4));
  put(sb.dst, "old", "old");
  put(sb.src, "old", random_bytes(300000, 5));
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // A file-size limit makes write() fail with EFBIG, like a full disk would with ENOSPC.
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl {100000, 100000};
    ::setrlimit(RLIMIT_FSIZE, &rl);
    ingestor ing{sb.src, sb.dst};
    auto o = ing.ingest(req_for("big"));
    if (o.status != file_status::failed)
      ::_exit(2);
    if (o.error != "library write failed: File too large")
      ::_exit(3);
    if (o.touches_media)
      ::_exit(4);
    o = ing.ingest(req_for("old"));  // replacing: the old copy stays
    if (o.error != "library write failed: File too large")
      ::_exit(5);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_FALSE(exists(sb.dst + "/big"));
  CHECK(get(sb.dst, "old") == "old");
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: an unreadable source file fails with the errno text", "[ingest]") {
  ::umask(022);
  sandbox sb;
  REQUIRE(::chmod(sb.path.c_str(), 0755) == 0);
  ::chmod(sb.dst.c_str(), 0777);
  put(sb.src, "locked", "secret", 0000);
  auto check = [&]() -> int {
    ingestor ing{sb.src, sb.dst};
    auto o = ing.ingest(req_for("locked"));
    if (o.status != file_status::failed)
      return 2;
    if (o.error != "cannot open: Permission denied")
      return 3;
    return 0;
  };
  if (::geteuid() != 0) {
    CHECK(check() == 0);
    return;
  }
  // root opens anything: check as user nobody in a child process
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0)
      ::_exit(100);
    int rc = 1;
    try {
      rc = check();
    } catch (...) {
      rc = 5;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 100)
    WARN("cannot switch to user nobody: permission case not checked as root");
  else
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("ingest: eight threads with one ingestor each", "[ingest]") {
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  std::vector<std::string> paths;
  for (int i = 0; i < 400; ++i) {
    std::string p = "d" + std::to_string(i % 9) + "/s" + std::to_string(i % 4) + "/f"
                    + std::to_string(i);
    put(sb.src, p, random_bytes(1000 + static_cast<std::size_t>(i) * 37, i));
    paths.push_back(p);
  }
  // Every path ingested once by 8 threads, an ingestor each; how many were ok.
  auto ingest_all = [&] {
    std::atomic<std::size_t> next{0};
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&] {
        ingestor ing{sb.src, sb.dst};
        for (std::size_t i; (i = next.fetch_add(1)) < paths.size();)
          if (ing.ingest(req_for(paths[i])).status == file_status::ok)
            ++ok;
      });
    for (auto& t : threads)
      t.join();
    return ok.load();
  };
  CHECK(ingest_all() == 400);
  int same = 0;
  for (auto& p : paths)
    same += get(sb.src, p) == get(sb.dst, p);
  CHECK(same == 400);
  CHECK(temp_names(sb.dst).empty());
  // again over the existing copies: every file replaced
  for (auto& p : paths)
    put(sb.src, p, "v2 " + p);
  CHECK(ingest_all() == 400);
  same = 0;
  for (auto& p : paths)
    same += get(sb.dst, p) == "v2 " + p;
  CHECK(same == 400);
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: the source's permission bits are kept whatever the umask", "[ingest]") {
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  const mode_t modes[] = {0000, 0400, 0444, 0600, 0640, 0664, 0666, 0700, 0755, 0777};
  for (mode_t mask : {mode_t{022}, mode_t{077}, mode_t{0}}) {
    mode_t old = ::umask(mask);
    {
      ingestor ing{sb.src, sb.dst};
      for (mode_t m : modes) {
        std::string p = "m" + std::to_string(mask) + "/f" + std::to_string(m);
        put(sb.src, p, "data", m);
        INFO(p);
        CHECK(ing.ingest(req_for(p)).status == file_status::ok);
        struct stat st;
        REQUIRE(::stat((sb.dst + "/" + p).c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == m);
      }
    }
    ::umask(old);
  }
}

TEST_CASE("ingest: a cached library directory removed meanwhile is made again", "[ingest]") {
  // ext4 refuses an O_TMPFILE in a removed directory (EPERM); tmpfs makes one, and
  // then the linkat fails (ENOENT): both are walked again.
  const bool named = GENERATE(false, true);
  const char* base = GENERATE("/tmp", "/dev/shm");
  INFO(mode_name(named) << " in " << base);
  named_temp_mode mode{named};
  sandbox sb{base};
  put(sb.src, "k/a", "a");
  put(sb.src, "k/b", "b");
  ingestor ing{sb.src, sb.dst};
  CHECK(ing.ingest(req_for("k/a")).status == file_status::ok);
  test::remove_tree(sb.dst + "/k");
  auto o = ing.ingest(req_for("k/b"));
  CHECK(o.status == file_status::ok);
  CHECK(o.error == "");
  CHECK(get(sb.dst, "k/b") == "b");
  CHECK(temp_names(sb.dst).empty());
}

// ------------------------------------------------------- temporary files, fallback

TEST_CASE("ingest: with O_TMPFILE a new file never has a temporary name", "[ingest]") {
  sandbox sb;
  if (!tmpfile_supported(sb.dst)) {
    WARN("no O_TMPFILE on " << sb.dst << ": not checked");
    return;
  }
  put(sb.src, "a/new", "new");
  put(sb.src, "a/changed", "changed");
  put(sb.dst, "a/changed", "old");
  ingestor ing{sb.src, sb.dst};
  auto before = detail::ingest_temp_names_used();
  CHECK(ing.ingest(req_for("a/new")).status == file_status::ok);
  CHECK(detail::ingest_temp_names_used() == before);      // linked straight to its name
  CHECK(ing.ingest(req_for("a/changed")).status == file_status::ok);
  CHECK(detail::ingest_temp_names_used() == before + 1);  // linked, then renamed over
  CHECK(get(sb.dst, "a/changed") == "changed");
  CHECK(temp_names(sb.dst).empty());

  // the fallback names every file
  named_temp_mode mode{true};
  ingestor ing2{sb.src, sb.dst};
  put(sb.src, "a/new2", "new2");
  before = detail::ingest_temp_names_used();
  CHECK(ing2.ingest(req_for("a/new2")).status == file_status::ok);
  CHECK(detail::ingest_temp_names_used() == before + 1);
  CHECK(get(sb.dst, "a/new2") == "new2");
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: temporary names already taken are skipped and left alone", "[ingest]") {
  // e.g. left by a crashed earlier process (fallback mode) with the same pid
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};
  sandbox sb;
  put(sb.src, "d/f", "new");
  put(sb.dst, "d/f", "old");  // replacing: a temporary name in both modes
  ingestor ing{sb.src, sb.dst};
  std::vector<std::string> taken;
  auto next = detail::ingest_temp_names_used();
  for (std::uint64_t n = next; n < next + 5; ++n) {
    taken.push_back(".mediasync-tmp." + std::to_string(::getpid()) + "." + std::to_string(n));
    put(sb.dst, "d/" + taken.back(), "stale " + taken.back());
  }
  auto o = ing.ingest(req_for("d/f"));
  CHECK(o.status == file_status::ok);
  CHECK(o.error == "");
  CHECK(get(sb.dst, "d/f") == "new");
  for (auto& t : taken)
    CHECK(get(sb.dst, "d/" + t) == "stale " + t);
  std::vector<std::string> want;
  for (auto& t : taken)
    want.push_back("d/" + t);
  std::sort(want.begin(), want.end());
  CHECK(temp_names(sb.dst) == want);
}

TEST_CASE("ingest: a process killed mid-write leaves no temporary file", "[ingest]") {
  // The child exceeds RLIMIT_FSIZE with SIGXFSZ at its default action: it is killed
  // inside write(), after the first MiB of the file. The fallback is the control:
  // its named temporary file stays behind, proving the kill came mid-write.
  const bool named = GENERATE(false, true);
  INFO(mode_name(named));
  named_temp_mode mode{named};  // inherited by the child
  sandbox sb;
  if (!named && !tmpfile_supported(sb.dst)) {
    WARN("no O_TMPFILE on " << sb.dst << ": not checked");
    return;
  }
  const std::string data = random_bytes(3 << 20, 31);
  put(sb.src, "d/new", data);
  put(sb.src, "d/changed", data);
  put(sb.dst, "d/changed", "old");
  for (const char* p : {"d/new", "d/changed"}) {
    INFO(p);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      struct rlimit core {0, 0};
      ::setrlimit(RLIMIT_CORE, &core);
      ::signal(SIGXFSZ, SIG_DFL);
      struct rlimit rl {1 << 20, 1 << 20};
      ::setrlimit(RLIMIT_FSIZE, &rl);
      ingestor ing{sb.src, sb.dst};
      ing.ingest(req_for(p));
      ::_exit(0);  // not reached
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGXFSZ);
  }
  CHECK(get(sb.dst, "d/changed") == "old");
  CHECK_FALSE(exists(sb.dst + "/d/new"));
  auto left = temp_names(sb.dst);
  if (named) {
    REQUIRE(left.size() == 2);
    struct stat st;
    REQUIRE(::stat((sb.dst + "/" + left[0]).c_str(), &st) == 0);
    CHECK(st.st_size == 1 << 20);
  } else {
    CHECK(left.empty());
    CHECK(list(sb.dst + "/d") == std::vector<std::string>{"changed"});
  }
}

TEST_CASE("ingest: without /proc the ingestor falls back to named temporary files",
          "[ingest]") {
  sandbox sb;
  const std::string data = random_bytes(1500000, 41);
  put(sb.src, "a/one", data);
  put(sb.src, "a/two", "two");
  put(sb.src, "a/three", "three");
  put(sb.dst, "a/three", "old");
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // A private mount namespace without /proc (root only).
    if (::unshare(CLONE_NEWNS) != 0
        || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0
        || ::umount2("/proc", MNT_DETACH) != 0)
      ::_exit(100);
    struct stat st;
    if (::stat("/proc/self/fd", &st) == 0)
      ::_exit(101);
    ingestor ing{sb.src, sb.dst};
    auto before = detail::ingest_temp_names_used();
    // one: O_TMPFILE written, linkat fails, read again and written by name
    auto o = ing.ingest(req_for("a/one"));
    if (o.status != file_status::ok || o.sha256 != sha256_hex(data) || o.size != data.size())
      ::_exit(2);
    // two, three: O_TMPFILE is not tried any more
    if (ing.ingest(req_for("a/two")).status != file_status::ok)
      ::_exit(3);
    if (ing.ingest(req_for("a/three")).status != file_status::ok)
      ::_exit(4);
    if (detail::ingest_temp_names_used() != before + 3)
      ::_exit(5);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 100) {
    WARN("cannot unmount /proc in a private mount namespace: not checked");
    return;
  }
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(get(sb.dst, "a/one") == data);
  CHECK(get(sb.dst, "a/two") == "two");
  CHECK(get(sb.dst, "a/three") == "three");
  CHECK(temp_names(sb.dst).empty());
}

TEST_CASE("ingest: a user without privileges links O_TMPFILEs through /proc", "[ingest]") {
  // linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH; /proc/self/fd does not.
  if (::geteuid() != 0) {
    WARN("not root: checked by every other test already");
    return;
  }
  ::umask(022);
  sandbox sb;
  if (!tmpfile_supported(sb.dst)) {
    WARN("no O_TMPFILE on " << sb.dst << ": not checked");
    return;
  }
  REQUIRE(::chmod(sb.path.c_str(), 0755) == 0);
  REQUIRE(::chmod(sb.dst.c_str(), 0777) == 0);
  put(sb.src, "a/new", "new", 0444);
  put(sb.src, "changed", "changed", 0604);
  int fd = ::open((sb.dst + "/changed").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::fchown(fd, 65534, 65534) == 0);
  ::close(fd);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0)
      ::_exit(100);
    int rc = 0;
    try {
      ingestor ing{sb.src, sb.dst};
      auto before = detail::ingest_temp_names_used();
      if (ing.ingest(req_for("a/new")).status != file_status::ok)
        rc = 2;
      else if (detail::ingest_temp_names_used() != before)  // no fallback
        rc = 3;
      else if (ing.ingest(req_for("changed")).status != file_status::ok)
        rc = 4;
      else if (detail::ingest_temp_names_used() != before + 1)
        rc = 5;
    } catch (...) {
      rc = 6;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 100) {
    WARN("cannot switch to user nobody: not checked");
    return;
  }
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(get(sb.dst, "a/new") == "new");
  CHECK(get(sb.dst, "changed") == "changed");
  struct stat st;
  REQUIRE(::stat((sb.dst + "/a/new").c_str(), &st) == 0);
  CHECK(st.st_uid == 65534);
  CHECK((st.st_mode & 07777) == 0444);
  CHECK(temp_names(sb.dst).empty());
}
