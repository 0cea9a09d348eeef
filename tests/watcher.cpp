// Tests of the recursive inotify tree watcher (app/watcher.hpp), on real files in temp dirs.
// Reports are collected under a mutex and waited for with timeouts. Negative checks ("not
// reported") wait for a barrier file written after the action instead of sleeping: events are
// handled in order and the barrier's deadline is later, so whatever the action would have
// reported is reported no later than the barrier.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "app/watcher.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using ms::app::tree_watcher;
using ms::app::watch_settings;
namespace test = ms::test;

namespace {

using clock_type = std::chrono::steady_clock;

/// Collects the watcher's reports.
struct collector {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::vector<std::string>> calls;
  std::map<std::string, std::vector<clock_type::time_point>> times;  ///< per path, each report
  std::map<std::string, long long> sizes;  ///< size of each path at its last report
  std::string root;
  bool rescan = false;
  bool unsorted = false;  ///< a call whose paths were not sorted and unique
  bool hold = false;      ///< while true the callback blocks (the watcher stops reading)
  bool holding = false;

  explicit collector(std::string r) : root(std::move(r)) {}

  std::function<void(std::vector<std::string>, bool)> callback() {
    return [this](std::vector<std::string> paths, bool full) {
      std::unique_lock lk(m);
      auto now = clock_type::now();
      if (!std::is_sorted(paths.begin(), paths.end())
          || std::adjacent_find(paths.begin(), paths.end()) != paths.end())
        unsorted = true;
      for (auto& p : paths) {
        times[p].push_back(now);
        struct stat st;
        sizes[p] = ::lstat((root + "/" + p).c_str(), &st) == 0 ? st.st_size : -1;
      }
      calls.push_back(std::move(paths));
      rescan = rescan || full;
      holding = hold;
      cv.notify_all();
      cv.wait_for(lk, 10s, [&] { return !hold; });  // bounded: a failed test must not hang
      holding = false;
    };
  }

  std::size_t count(const std::string& p) {
    std::lock_guard lk(m);
    auto it = times.find(p);
    return it == times.end() ? 0 : it->second.size();
  }

  /// Waits until `p` has been reported at least `n` times.
  bool wait_for(const std::string& p, std::chrono::milliseconds timeout, std::size_t n = 1) {
    std::unique_lock lk(m);
    return cv.wait_for(lk, timeout, [&] {
      auto it = times.find(p);
      return it != times.end() && it->second.size() >= n;
    });
  }

  bool wait_for_all(const std::vector<std::string>& ps, std::chrono::milliseconds timeout) {
    auto deadline = clock_type::now() + timeout;
    for (auto& p : ps)
      if (!wait_for(p, std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::max(deadline - clock_type::now(), clock_type::duration::zero()))))
        return false;
    return true;
  }

  clock_type::time_point first_time(const std::string& p) {
    std::lock_guard lk(m);
    return times.at(p).front();
  }

  /// Every path reported so far starting with `prefix`.
  std::vector<std::string> reported_under(const std::string& prefix) {
    std::lock_guard lk(m);
    std::vector<std::string> out;
    for (auto& [p, t] : times)
      if (p.compare(0, prefix.size(), prefix) == 0)
        out.push_back(p);
    return out;
  }

  long long size_of(const std::string& p) {
    std::lock_guard lk(m);
    auto it = sizes.find(p);
    return it == sizes.end() ? -2 : it->second;
  }

  bool got_rescan() {
    std::lock_guard lk(m);
    return rescan;
  }
  bool bad_order() {
    std::lock_guard lk(m);
    return unsorted;
  }
};

/// Polls `pred` every 10 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = clock_type::now() + timeout;
  while (!pred()) {
    if (clock_type::now() > deadline)
      return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

void make_dir(const std::string& path) { REQUIRE(::mkdir(path.c_str(), 0755) == 0); }

void rename_path(const std::string& from, const std::string& to) {
  REQUIRE(std::rename(from.c_str(), to.c_str()) == 0);
}

/// Opens `path` for writing (created, truncated), kept open by the caller.
int open_write(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  return fd;
}

void write_all(int fd, const std::string& bytes) {
  REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
}

long long ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

const watch_settings fast{200ms, 30000ms};

} // namespace

TEST_CASE("watcher reports a closed file once after the debounce and not before", "[watcher]") {
  test::temp_dir root;
  test::write_file(root / "sub/existing.jpg", "old");  // before the watcher: never reported
  collector c(root.path());
  tree_watcher w(root.path(), fast, c.callback());
  CHECK(w.watched_directories() == 2);

  test::write_file(root / "a.jpg", test::content(100000, 1));
  auto written = clock_type::now();
  CHECK_FALSE(c.wait_for("a.jpg", 150ms));  // debounce is 200 ms
  REQUIRE(c.wait_for("a.jpg", 5000ms));
  CHECK(ms_between(written, c.first_time("a.jpg")) >= 190);

  // A second file in a directory that existed before the watcher; then a barrier: a.jpg
  // must not have been reported a second time.
  test::write_file(root / "sub/b.jpg", "b");
  REQUIRE(c.wait_for("sub/b.jpg", 5000ms));
  test::write_file(root / "barrier", "x");
  REQUIRE(c.wait_for("barrier", 5000ms));
  CHECK(c.count("a.jpg") == 1);
  CHECK(c.count("sub/b.jpg") == 1);
  CHECK(c.count("sub/existing.jpg") == 0);

  // Written again later: reported again.
  test::write_file(root / "a.jpg", "new content");
  REQUIRE(c.wait_for("a.jpg", 5000ms, 2));
  CHECK(c.size_of("a.jpg") == 11);
  CHECK_FALSE(c.got_rescan());
  CHECK_FALSE(c.bad_order());
}

TEST_CASE("watcher does not report a file while it is being written", "[watcher]") {
  test::temp_dir root;
  collector c(root.path());
  // The pauses between writes (150 ms) are longer than the debounce: only the missing close
  // keeps the file from being reported.
  tree_watcher w(root.path(), watch_settings{100ms, 30000ms}, c.callback());

  const std::size_t chunk = 256 * 1024;
  int fd = open_write(root / "big.mov");
  for (int i = 0; i < 20; ++i) {
    write_all(fd, test::content(chunk, static_cast<std::uint64_t>(i)));
    std::this_thread::sleep_for(150ms);
    REQUIRE(c.count("big.mov") == 0);
  }
  REQUIRE(::close(fd) == 0);
  REQUIRE(c.wait_for("big.mov", 5000ms));
  test::write_file(root / "barrier", "x");
  REQUIRE(c.wait_for("barrier", 5000ms));
  CHECK(c.count("big.mov") == 1);
  CHECK(c.size_of("big.mov") == static_cast<long long>(20 * chunk));
  CHECK_FALSE(c.got_rescan());
}

TEST_CASE("watcher reports files moved in, hard links and the final name of atomic writes", "[watcher]") {
  test::temp_dir root;
  test::temp_dir out;  // outside the tree, same filesystem
  collector c(root.path());
  tree_watcher w(root.path(), fast, c.callback());

  // Written outside, renamed in.
  test::write_file(out / "in.jpg", "moved in");
  rename_path(out / "in.jpg", root / "in.jpg");
  REQUIRE(c.wait_for("in.jpg", 5000ms));

  // Hard link of a finished file.
  test::write_file(out / "linked.jpg", "linked");
  REQUIRE(::link((out / "linked.jpg").c_str(), (root / "linked.jpg").c_str()) == 0);
  REQUIRE(c.wait_for("linked.jpg", 5000ms));

  // Atomic write: temp name inside the tree, closed, renamed to the final name at once.
  // The temp name no longer exists when its debounce ends: only the final name is reported.
  test::write_file(root / ".tmp.final.jpg", "atomic");
  rename_path(root / ".tmp.final.jpg", root / "final.jpg");
  // A temp file deleted before its debounce ends is not reported either.
  test::write_file(root / "scratch.tmp", "scratch");
  REQUIRE(::unlink((root / "scratch.tmp").c_str()) == 0);
  REQUIRE(c.wait_for("final.jpg", 5000ms));
  test::write_file(root / "barrier", "x");
  REQUIRE(c.wait_for("barrier", 5000ms));
  CHECK(c.count(".tmp.final.jpg") == 0);
  CHECK(c.count("scratch.tmp") == 0);
  CHECK(c.count("final.jpg") == 1);
  CHECK(c.count("in.jpg") == 1);

  // A file renamed while still being written stays unreported until it is closed.
  int fd = open_write(root / ".part");
  write_all(fd, "first half ");
  rename_path(root / ".part", root / "download.mov");
  std::this_thread::sleep_for(400ms);  // twice the debounce
  write_all(fd, "second half");
  test::write_file(root / "barrier2", "x");
  REQUIRE(c.wait_for("barrier2", 5000ms));
  CHECK(c.count("download.mov") == 0);
  REQUIRE(::close(fd) == 0);
  REQUIRE(c.wait_for("download.mov", 5000ms));
  CHECK(c.size_of("download.mov") == 22);
  CHECK(c.count(".part") == 0);
  CHECK_FALSE(c.got_rescan());
  CHECK_FALSE(c.bad_order());
}

TEST_CASE("watcher reports files of new directories and of directories moved in", "[watcher]") {
  test::temp_dir root;
  test::temp_dir out;
  collector c(root.path());
  tree_watcher w(root.path(), fast, c.callback());
  REQUIRE(w.watched_directories() == 1);

  // mkdir -p and files written at once: most land before the new directories are watched.
  std::vector<std::string> expected;
  for (int i = 0; i < 5; ++i) {
    auto rel = "new/deep/er/f" + std::to_string(i) + ".jpg";
    test::write_file(root / rel, test::content(1000, static_cast<std::uint64_t>(i)));
    expected.push_back(rel);
  }
  test::write_file(root / "new/top.jpg", "top");
  expected.push_back("new/top.jpg");

  // A tree prepared outside and moved in whole (what `cp -r` to a temp name + mv does).
  for (auto rel : {"album/a/1.jpg", "album/a/2.jpg", "album/b/c/3.jpg", "album/4.jpg"}) {
    test::write_file(out / rel, rel);
    expected.push_back(rel);
  }
  REQUIRE(::mkdir((out / "album/empty").c_str(), 0755) == 0);
  rename_path(out / "album", root / "album");

  REQUIRE(c.wait_for_all(expected, 5000ms));
  // root, new, new/deep, new/deep/er, album, album/a, album/b, album/b/c, album/empty
  REQUIRE(eventually([&] { return w.watched_directories() == 9; }, 2000ms));

  // The moved-in directories are watched: later writes there are reported.
  test::write_file(root / "album/b/c/late.jpg", "late");
  test::write_file(root / "album/empty/late.jpg", "late");
  REQUIRE(c.wait_for("album/b/c/late.jpg", 5000ms));
  REQUIRE(c.wait_for("album/empty/late.jpg", 5000ms));
  for (auto& p : expected)
    CHECK(c.count(p) == 1);
  CHECK_FALSE(c.got_rescan());
  CHECK_FALSE(c.bad_order());
}

TEST_CASE("watcher follows renamed directories and forgets directories moved out", "[watcher]") {
  test::temp_dir root;
  test::temp_dir out;
  test::write_file(root / "d1/sub/old.jpg", "old");  // watched from the start
  make_dir(root / "p");
  make_dir(root / "p/q");
  collector c(root.path());
  tree_watcher w(root.path(), fast, c.callback());
  REQUIRE(w.watched_directories() == 5);  // root, d1, d1/sub, p, p/q

  // Renamed in place, written to at once.
  rename_path(root / "d1", root / "d2");
  test::write_file(root / "d2/sub/x.jpg", "x");
  test::write_file(root / "d2/y.jpg", "y");
  // Moved to another parent.
  rename_path(root / "p/q", root / "r");
  test::write_file(root / "r/z.jpg", "z");
  REQUIRE(c.wait_for_all({"d2/sub/x.jpg", "d2/y.jpg", "r/z.jpg"}, 5000ms));
  CHECK(c.reported_under("d1/").empty());
  CHECK(c.reported_under("p/").empty());
  CHECK(c.count("d2/sub/old.jpg") == 0);  // renaming a directory is no new file

  // A directory created while watching, renamed, then a file still being written in it.
  make_dir(root / "n1");
  REQUIRE(eventually([&] { return w.watched_directories() == 6; }, 2000ms));
  int fd = open_write(root / "n1/growing.mov");
  write_all(fd, "part one ");
  rename_path(root / "n1", root / "n2");
  write_all(fd, "part two");
  REQUIRE(::close(fd) == 0);
  REQUIRE(c.wait_for("n2/growing.mov", 5000ms));
  CHECK(c.size_of("n2/growing.mov") == 17);
  CHECK(c.reported_under("n1/").empty());
  CHECK(w.watched_directories() == 6);

  // Moved out of the tree: d2 and d2/sub are no longer watched, writes there not reported.
  rename_path(root / "d2", out / "d2");
  REQUIRE(eventually([&] { return w.watched_directories() == 4; }, 2000ms));
  test::write_file(out / "d2/after.jpg", "after");
  test::write_file(out / "d2/sub/after.jpg", "after");
  test::write_file(root / "barrier", "x");
  REQUIRE(c.wait_for("barrier", 5000ms));
  CHECK(c.reported_under("d2/") == std::vector<std::string>{"d2/sub/x.jpg", "d2/y.jpg"});

  // Moved back in under another name: watched again and its files reported.
  rename_path(out / "d2", root / "back");
  REQUIRE(c.wait_for_all({"back/after.jpg", "back/sub/after.jpg", "back/sub/x.jpg"}, 5000ms));
  REQUIRE(eventually([&] { return w.watched_directories() == 6; }, 2000ms));
  CHECK_FALSE(c.got_rescan());
  CHECK_FALSE(c.bad_order());
}

TEST_CASE("watcher reports a file held open once it has settled", "[watcher]") {
  test::temp_dir root;
  collector c(root.path());
  tree_watcher w(root.path(), watch_settings{200ms, 600ms}, c.callback());

  int fd = open_write(root / "held.bin");
  write_all(fd, "written, never closed");
  auto last_write = clock_type::now();
  CHECK_FALSE(c.wait_for("held.bin", 400ms));
  REQUIRE(c.wait_for("held.bin", 5000ms));
  CHECK(ms_between(last_write, c.first_time("held.bin")) >= 590);
  CHECK(c.size_of("held.bin") == 21);

  // Closed later: a new readiness, reported again after the debounce.
  write_all(fd, " more");
  REQUIRE(::close(fd) == 0);
  REQUIRE(c.wait_for("held.bin", 5000ms, 2));
  CHECK(c.size_of("held.bin") == 26);
  CHECK_FALSE(c.got_rescan());
}

TEST_CASE("watcher destructor returns promptly with events pending", "[watcher]") {
  test::temp_dir root;
  collector c(root.path());
  auto w = std::make_unique<tree_watcher>(root.path(), watch_settings{10000ms, 60000ms},
                                          c.callback());
  for (int i = 0; i < 50; ++i)
    test::write_file(root / ("d" + std::to_string(i % 5) + "/f" + std::to_string(i)), "data");
  int fd = open_write(root / "open.bin");
  write_all(fd, "still open");
  std::this_thread::sleep_for(100ms);  // let the watcher take the events in

  auto t0 = clock_type::now();
  w.reset();
  CHECK(ms_between(t0, clock_type::now()) < 1000);
  ::close(fd);
  std::lock_guard lk(c.m);
  CHECK(c.calls.empty());  // nothing was due, nothing reported after the stop
}

TEST_CASE("watcher constructor errors name the root and the cause", "[watcher]") {
  test::temp_dir root;
  collector c(root.path());
  auto missing = root / "no/such/dir";
  REQUIRE_THROWS_WITH(tree_watcher(missing, fast, c.callback()),
                      Catch::Contains("'" + missing + "'") && Catch::Contains("does not exist"));
  test::write_file(root / "file", "x");
  REQUIRE_THROWS_WITH(tree_watcher(root / "file", fast, c.callback()),
                      Catch::Contains("'" + root / "file" + "'")
                          && Catch::Contains("not a directory"));
}

TEST_CASE("watcher does not follow symlinks and reports regular files only", "[watcher]") {
  test::temp_dir root;
  test::temp_dir out;
  make_dir(out / "target");
  REQUIRE(::symlink((out / "target").c_str(), (root / "link").c_str()) == 0);
  collector c(root.path());
  tree_watcher w(root.path(), fast, c.callback());
  CHECK(w.watched_directories() == 1);

  REQUIRE(::symlink((out / "target").c_str(), (root / "link2").c_str()) == 0);  // made while watching
  test::write_file(out / "target/f.jpg", "f");
  // Symlinks moved in, and a finished file replaced by a symlink before its debounce ended:
  // only regular files are reported (checked just before reporting).
  REQUIRE(::symlink("/etc/hostname", (out / "sl").c_str()) == 0);
  rename_path(out / "sl", root / "moved-link.jpg");
  test::write_file(root / "swapped.jpg", "regular first");
  REQUIRE(::symlink("/etc/hostname", (out / "sl2").c_str()) == 0);
  rename_path(out / "sl2", root / "swapped.jpg");
  REQUIRE(::mkfifo((root / "pipe").c_str(), 0644) == 0);
  test::write_file(root / "barrier", "x");
  REQUIRE(c.wait_for("barrier", 5000ms));
  CHECK(c.reported_under("link").empty());
  CHECK(c.count("moved-link.jpg") == 0);
  CHECK(c.count("swapped.jpg") == 0);
  CHECK(c.count("pipe") == 0);
  CHECK(w.watched_directories() == 1);
}

TEST_CASE("watcher reports rescan after lost events and watches what it missed", "[watcher]") {
  long long queue_limit = 16384;
  std::ifstream("/proc/sys/fs/inotify/max_queued_events") >> queue_limit;
  if (queue_limit > 1000000) {
    WARN("fs.inotify.max_queued_events is " << queue_limit << ": too large to overflow here");
    return;
  }

  test::temp_dir root;
  collector c(root.path());
  tree_watcher w(root.path(), watch_settings{100ms, 30000ms}, c.callback());

  // Block the watcher inside its callback so that events pile up in the kernel queue.
  {
    std::lock_guard lk(c.m);
    c.hold = true;
  }
  test::write_file(root / "first", "x");
  {
    std::unique_lock lk(c.m);
    REQUIRE(c.cv.wait_for(lk, 5000ms, [&] { return c.holding; }));
  }
  // Alternating names: consecutive events differ, so the kernel cannot merge them.
  int a = open_write(root / "flood.a");
  int b = open_write(root / "flood.b");
  bool written = true;
  for (long long i = 0; i < queue_limit / 2 + 1000; ++i)
    written = written && ::write(a, "a", 1) == 1 && ::write(b, "b", 1) == 1;
  REQUIRE(written);
  ::close(a);
  ::close(b);
  test::write_file(root / "missed/lost.jpg", "lost");  // its directory's IN_CREATE is lost
  {
    std::lock_guard lk(c.m);
    c.hold = false;
    c.cv.notify_all();
  }
  REQUIRE(eventually([&] { return c.got_rescan(); }, 5000ms));
  REQUIRE(eventually([&] { return w.watched_directories() == 2; }, 2000ms));
  test::write_file(root / "missed/new.jpg", "new");
  REQUIRE(c.wait_for("missed/new.jpg", 5000ms));
}
