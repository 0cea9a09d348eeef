// Storage faults, end to end: the real binary against a destination that fills up or
// turns read-only (a small tmpfs, remounted), a SQLite database on a full disk, and a
// PostgreSQL server killed with SIGKILL while a batch commits. Each fault must give a
// clear error and the documented end (docs/operations.md, Recovery), lose or corrupt
// nothing that was recorded, and `resume` must finish the job once the fault is gone.
// Results: docs/reliability.md, "Storage faults". Needs root (mount) and, for the
// PostgreSQL cases, the postgresql-15 server binaries (a private server per test, since
// the fixture's shared server serves concurrently running tests).
#include <catch2/catch.hpp>

#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <pqxx/pqxx>
#include <vips/vips8>

#include "actors/imaging.hpp"
#include "e2e_db.hpp"
#include "test_util.hpp"

using namespace ms::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr const char* pg_bin = "/usr/lib/postgresql/15/bin";

/// Once per process: a mount namespace of its own, every mount in it private, so the
/// tests' tmpfs mounts are seen only by this process and its children and vanish with them,
/// even when the process is killed (a ctest timeout) before a destructor runs. unshare
/// needs a process without threads; if it fails, the mounts go to the shared namespace and
/// only the destructors undo them.
void private_mounts() {
  static const bool done = [] {
    if (::unshare(CLONE_NEWNS) != 0)
      return false;
    return ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
  }();
  (void)done;
}

/// A tmpfs of `size` (e.g. "8m") mounted on `dir` (created), unmounted on destruction,
/// also when the test failed.
class tmpfs_mount {
public:
  tmpfs_mount(std::string dir, const std::string& size) : dir_(std::move(dir)) {
    private_mounts();
    fs::create_directories(dir_);
    std::string opts = "size=" + size + ",mode=0755";
    if (::mount("mediasync-faults", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0)
      FAIL("cannot mount a tmpfs on " << dir_ << ": " << std::strerror(errno)
                                      << " (the fault tests need root)");
  }
  ~tmpfs_mount() {
    ::mount(nullptr, dir_.c_str(), nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV, nullptr);
    if (::umount2(dir_.c_str(), 0) != 0)
      ::umount2(dir_.c_str(), MNT_DETACH);
  }
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;

  /// Remounts with `flags` (MS_RDONLY or 0) and tmpfs options `opts` ("size=64m");
  /// returns 0 or the errno.
  int remount(unsigned long flags, const std::string& opts = {}) const {
    return ::mount(nullptr, dir_.c_str(), nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV | flags,
                   opts.empty() ? nullptr : opts.c_str()) == 0
             ? 0
             : errno;
  }
  const std::string& path() const { return dir_; }

private:
  std::string dir_;
};

/// Waits at most `limit` for `pid`; a process still running then is killed (SIGKILL) and
/// reported as hung (-1).
int wait_at_most(int pid, std::chrono::seconds limit) {
  auto end = std::chrono::steady_clock::now() + limit * time_scale;
  for (;;) {
    int status = 0;
    int r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status)
                               : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
    if (r < 0 && errno != EINTR)
      return -1;
    if (std::chrono::steady_clock::now() >= end) {
      ::kill(pid, SIGKILL);
      wait_pid(pid);
      return -1;  // hung
    }
    std::this_thread::sleep_for(20ms);
  }
}

/// Kills (SIGKILL) and reaps a started mediasync that a failed REQUIRE left running, before
/// the mounts and the server it uses go away.
struct child_guard {
  int pid = 0;
  ~child_guard() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      wait_pid(pid);
    }
  }
  int wait(std::chrono::seconds limit) {
    int rc = wait_at_most(pid, limit);
    pid = 0;
    return rc;
  }
};

/// Runs mediasync and waits at most `limit`, output in `log`.out/.err; the exit code
/// (-1: hung, killed) and the stderr text.
std::pair<int, std::string> run_bounded(const std::vector<std::string>& args,
                                        const std::string& log,
                                        std::chrono::seconds limit = 45s) {
  child_guard run{start_mediasync(args, log)};
  int rc = run.wait(limit);
  return {rc, read_file(log + ".err")};
}

/// Regular files under `root` (hidden ones too), relative, without following symlinks.
std::set<std::string> files_under(const std::string& root) {
  std::set<std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it)
    if (!it->is_symlink() && it->is_regular_file())
      out.insert(fs::relative(it->path(), root).string());
  return out;
}

/// (path, status) of a job's sync rows.
using rows_t = std::map<std::string, std::string>;

/// Every committed sync row must survive: each (path, status) seen by the poller is in
/// `now`. Every ok row's library file equals its source. `exact`: the library holds
/// exactly the files of ok rows (no partial file, no temp file, no file whose row is
/// missing); otherwise (a batch whose commit failed after its files were made durable)
/// it may hold more files, each a complete copy of its source.
void check_recorded(const rows_t& seen, const rows_t& now, const std::string& src,
                    const std::string& lib, bool exact = true) {
  std::size_t lost = 0;
  for (auto& [path, status] : seen) {
    auto it = now.find(path);
    if (it == now.end() || it->second != status) {
      ++lost;
      UNSCOPED_INFO("recorded row lost or changed: " << path << " (" << status << ")");
    }
  }
  CHECK(lost == 0);
  std::set<std::string> ok;
  for (auto& [path, status] : now)
    if (status == "ok") {
      ok.insert(path);
      REQUIRE(fs::exists(lib + "/" + path));
      REQUIRE(read_file(lib + "/" + path) == read_file(src + "/" + path));
    }
  auto files = files_under(lib);
  if (exact) {
    CHECK(files == ok);
    return;
  }
  for (auto& f : files) {
    INFO("library file without a source: " << f);
    REQUIRE(fs::is_regular_file(src + "/" + f));
    REQUIRE(read_file(lib + "/" + f) == read_file(src + "/" + f));
  }
}

/// Polls a job's rows every 20 ms on a thread of its own while the job runs, keeping
/// every (path, status) it ever saw committed. Errors (database away) are skipped.
class row_poller {
public:
  explicit row_poller(std::function<rows_t()> read) : read_(std::move(read)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        try {
          auto r = read_();
          std::lock_guard<std::mutex> lock(mutex_);
          for (auto& kv : r)
            seen_.insert(kv);
          ++polls_;
        } catch (const std::exception&) {
        }
        std::this_thread::sleep_for(20ms);
      }
    });
  }
  ~row_poller() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable())
      thread_.join();
  }
  rows_t seen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return seen_;
  }
  std::size_t polls() {
    std::lock_guard<std::mutex> lock(mutex_);
    return polls_;
  }

private:
  std::function<rows_t()> read_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  rows_t seen_;
  std::size_t polls_ = 0;
  std::thread thread_;
};

const char* const sync_rows_sql =
  "SELECT path, status FROM file_results WHERE job_id = 1 AND stage = 'sync'";

rows_t rows_of(const test_db& db) {
  rows_t out;
  for (auto& r : db.rows(sync_rows_sql))
    out[r[0]] = r[1];
  return out;
}

/// PRAGMA integrity_check through the SQLite C API: "ok" or what it found.
std::string integrity(const std::string& file) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string err = db ? sqlite3_errmsg(db) : "cannot open";
    sqlite3_close(db);
    return err;
  }
  sqlite3_stmt* st = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) != SQLITE_OK) {
    out = sqlite3_errmsg(db);
  } else {
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto t = sqlite3_column_text(st, 0);
      out += (out.empty() ? "" : "\n") + std::string(t ? reinterpret_cast<const char*>(t) : "");
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

/// Waits until the job has committed at least `n` ok sync rows (or 20 s passed).
bool wait_for_rows(const std::function<long()>& processed, long n) {
  auto end = std::chrono::steady_clock::now() + 20s * time_scale;
  while (std::chrono::steady_clock::now() < end) {
    try {
      if (processed() >= n)
        return true;
    } catch (const std::exception&) {
    }
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

/// After the fault is gone: resume completes the job, one ok row per file, counters right,
/// library equal to the source, nothing else in it.
void check_complete(const test_db& db, const std::string& src, const std::string& lib,
                    const std::vector<std::string>& paths) {
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "completed");
  CHECK(db.num("SELECT count(*) FROM sync_jobs") == 1);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE job_id = 1 AND stage = 'sync' "
               "AND status = 'ok'") == static_cast<long>(paths.size()));
  CHECK(db.num("SELECT count(*) FROM file_results WHERE job_id = 1")
        == static_cast<long>(paths.size()));
  CHECK(db.num("SELECT processed_files FROM sync_jobs WHERE id = 1")
        == static_cast<long>(paths.size()));
  check_counters(db, 1);
  std::set<std::string> want(paths.begin(), paths.end());
  CHECK(files_under(lib) == want);
  for (auto& p : paths)
    REQUIRE(read_file(lib + "/" + p) == read_file(src + "/" + p));
}

// ---- PostgreSQL: a private server, killed with SIGKILL --------------------------------

/// True while `pid` runs (not gone, not a zombie).
bool alive(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(f, s))
    return false;
  auto p = s.rfind(')');
  return p != std::string::npos && p + 2 < s.size() && s[p + 2] != 'Z';
}

/// Children of `pid` (from /proc/*/stat).
std::vector<int> children_of(int pid) {
  std::vector<int> out;
  for (auto& e : fs::directory_iterator("/proc")) {
    auto name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::ifstream f(e.path() / "stat");
    std::string s;
    if (!std::getline(f, s))
      continue;
    auto p = s.rfind(')');
    if (p == std::string::npos)
      continue;
    std::istringstream rest(s.substr(p + 2));
    char state;
    int ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid)
      out.push_back(std::stoi(name));
  }
  return out;
}

/// A PostgreSQL server of the test's own (tests/pg_server.sh) that the test kills.
class private_pg {
public:
  explicit private_pg(const temp_dir& t) : dir_(t / "pg") {
    // The server runs as the postgres user: it must be able to reach its directory.
    fs::permissions(t.path(), fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::add);
    REQUIRE(sh("bash '" MEDIASYNC_SOURCE_DIR "/tests/pg_server.sh' start '" + dir_ + "'") == 0);
    url_ = read_file(dir_ + "/url");
    while (!url_.empty() && url_.back() == '\n')
      url_.pop_back();
    // The test server runs with synchronous_commit = off (fast, test data only): a COMMIT
    // is acknowledged before its WAL is written, and a kill -9 of every server process
    // loses it. A server that forgets acknowledged commits is out of scope; on.
    pqxx::connection c(url_);
    pqxx::nontransaction n(c);
    n.exec("ALTER SYSTEM SET synchronous_commit = on");
    n.exec("SELECT pg_reload_conf()");
  }
  ~private_pg() {
    if (!alive(postmaster()))
      start();  // pg_server.sh stop wants a running server to stop cleanly
    sh("bash '" MEDIASYNC_SOURCE_DIR "/tests/pg_server.sh' stop '" + dir_ + "'");
  }
  const std::string& url() const { return url_; }

  /// The postmaster's pid (first line of postmaster.pid), 0 if none.
  int postmaster() const {
    std::ifstream f(dir_ + "/data/postmaster.pid");
    int pid = 0;
    f >> pid;
    return pid;
  }

  /// kill -9 of the postmaster and every server process, then waits until all are gone.
  void kill9() {
    int pm = postmaster();
    REQUIRE(pm > 0);
    ::kill(pm, SIGSTOP);  // forks no backend for a new connection between the two steps
    auto kids = children_of(pm);
    ::kill(pm, SIGKILL);
    for (int k : kids)
      ::kill(k, SIGKILL);
    auto end = std::chrono::steady_clock::now() + 20s;
    auto any_alive = [&] {
      if (alive(pm))
        return true;
      for (int k : kids)
        if (alive(k))
          return true;
      return false;
    };
    while (any_alive() && std::chrono::steady_clock::now() < end)
      std::this_thread::sleep_for(10ms);
    REQUIRE_FALSE(any_alive());
    // Until its new parent (init) reaps it, the dead postmaster's pid still "exists" for
    // kill(pid, 0), and a new postmaster refuses its lock files as held by it.
    auto proc = "/proc/" + std::to_string(pm);
    end = std::chrono::steady_clock::now() + 15s;
    while (fs::exists(proc) && std::chrono::steady_clock::now() < end)
      std::this_thread::sleep_for(10ms);
    if (fs::exists(proc)) {  // never reaped: the locks are stale, as after a machine crash
      WARN("postmaster " << pm << " was not reaped; removing its lock files");
      fs::remove(dir_ + "/data/postmaster.pid");
      for (auto& e : fs::directory_iterator(sock_dir()))
        if (e.path().extension() == ".lock")
          fs::remove(e.path());
    }
  }

  /// The server's unix socket directory (from the url: ...?host=DIR&port=...).
  std::string sock_dir() const {
    auto b = url_.find("host=") + 5;
    return url_.substr(b, url_.find('&', b) - b);
  }

  /// Starts the (killed) server again on its data: crash recovery, same port. pg_ctl's
  /// output goes to DIR/pg_ctl.log.
  int start() const {
    return sh(std::string{"runuser -u postgres -- "} + pg_bin + "/pg_ctl -D '" + dir_
                + "/data' -l '" + dir_ + "/server.log' -w -t 60 start",
              dir_ + "/pg_ctl.log");
  }

  /// The server's log and pg_ctl's output.
  std::string log() const {
    std::string out;
    for (auto* f : {"/server.log", "/pg_ctl.log"})
      try {
        out += read_file(dir_ + f);
      } catch (const std::exception&) {
      }
    return out;
  }

  static int sh(const std::string& cmd, const std::string& out = "/dev/null") {
    int rc = std::system((cmd + " >>'" + out + "' 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }

private:
  std::string dir_;
  std::string url_;
};

/// Rows of a query on the private server, each column as text ("<null>" for NULL).
std::vector<std::vector<std::string>> pg_query(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::nontransaction n(c);
  std::vector<std::vector<std::string>> out;
  for (const auto& row : n.exec(sql)) {
    std::vector<std::string> r;
    for (const auto& f : row)
      r.push_back(f.is_null() ? "<null>" : f.c_str());
    out.push_back(std::move(r));
  }
  return out;
}

long pg_num(const std::string& url, const std::string& sql) {
  return std::stol(pg_query(url, sql).at(0).at(0));
}

rows_t pg_rows(const std::string& url) {
  rows_t out;
  for (auto& r : pg_query(url, sync_rows_sql))
    out[r[0]] = r[1];
  return out;
}

/// pg_rows for a row_poller: one connection, opened again after the server went away.
std::function<rows_t()> pg_row_reader(const std::string& url) {
  auto conn = std::make_shared<std::unique_ptr<pqxx::connection>>();
  return [url, conn] {
    try {
      if (!*conn)
        *conn = std::make_unique<pqxx::connection>(url);
      pqxx::nontransaction n(**conn);
      rows_t out;
      for (const auto& row : n.exec(sync_rows_sql))
        out[row[0].c_str()] = row[1].c_str();
      return out;
    } catch (const std::exception&) {
      conn->reset();
      throw;
    }
  };
}

/// Every batch's COMMIT sleeps 2 ms per inserted result row (a deferred constraint
/// trigger runs at COMMIT), so the test can see a COMMIT in flight and kill the server
/// right then.
void slow_commits(const std::string& url) {
  pqxx::connection c(url);
  pqxx::nontransaction n(c);
  n.exec(
    "CREATE FUNCTION ms_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_sleep(0.002); RETURN NULL; END $$");
  n.exec(
    "CREATE CONSTRAINT TRIGGER ms_test_slow_commit AFTER INSERT ON file_results "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ms_test_slow_commit()");
}

/// The sync the PostgreSQL-kill tests run against `url`, migrated first and with slow
/// commits: SRC into LIB of `t`, 2 workers, batches of 25, then `extra`.
std::vector<std::string> slow_pg_sync(const temp_dir& t, const std::string& url,
                                      const std::vector<std::string>& extra = {}) {
  REQUIRE(run_mediasync({"migrate", "--db", url}).exit_code == 0);
  slow_commits(url);
  std::vector<std::string> args{"sync", t / "src", t / "lib", "--db", url, "--progress",
                                "none", "--no-thumbnails", "--workers", "2", "--batch-size",
                                "25"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

/// Waits (at most 20 s) until the job's writer is inside a COMMIT with at least one ok
/// row already committed; true if it saw one.
bool wait_for_commit_in_flight(const std::string& url) {
  auto end = std::chrono::steady_clock::now() + 20s * time_scale;
  try {
    pqxx::connection c(url);
    pqxx::nontransaction n(c);
    while (std::chrono::steady_clock::now() < end) {
      auto r = n.exec(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "        AND pid <> pg_backend_pid() AND state = 'active' AND query = 'COMMIT'),"
        "       (SELECT coalesce(max(processed_files), 0) FROM sync_jobs)");
      if (r[0][0].as<long>() > 0 && r[0][1].as<long>() > 0)
        return true;
      std::this_thread::sleep_for(2ms);
    }
  } catch (const std::exception&) {
  }
  return false;
}

/// The checks after a job on the private server: one row per file, counters right, the
/// library equal to the source.
void check_pg_complete(const std::string& url, const std::string& src, const std::string& lib,
                       const std::vector<std::string>& paths) {
  long n = static_cast<long>(paths.size());
  CHECK(pg_query(url, "SELECT status FROM sync_jobs WHERE id = 1")[0][0] == "completed");
  CHECK(pg_num(url, "SELECT count(*) FROM sync_jobs") == 1);
  CHECK(pg_num(url, "SELECT count(*) FROM file_results WHERE job_id = 1") == n);
  CHECK(pg_num(url, "SELECT count(DISTINCT path) FROM file_results WHERE job_id = 1") == n);
  CHECK(pg_num(url, "SELECT count(*) FROM file_results WHERE job_id = 1 AND status = 'ok'") == n);
  auto c = pg_query(url, std::string{"SELECT j.processed_files, j.failed_files, j.skipped_files, "
                                     "j.processed_bytes, (SELECT coalesce(sum(size), 0) FROM "
                                     "file_results f WHERE f.job_id = 1 AND f.status = 'ok'), "
                                     "(SELECT ok_files FROM job_stage_counters WHERE job_id = 1 "
                                     "AND stage = 'sync') FROM sync_jobs j WHERE j.id = 1"});
  CHECK(c[0][0] == std::to_string(n));
  CHECK(c[0][1] == "0");
  CHECK(c[0][2] == "0");
  CHECK(c[0][3] == c[0][4]);
  CHECK(c[0][5] == std::to_string(n));
  std::set<std::string> want(paths.begin(), paths.end());
  CHECK(files_under(lib) == want);
  for (auto& p : paths)
    REQUIRE(read_file(lib + "/" + p) == read_file(src + "/" + p));
}

} // namespace

TEST_CASE("faults: destination full - the job stops interrupted (exit 3), nothing recorded is "
          "lost, resume finishes after the destination grew",
          "[e2e][faults]") {
  temp_dir t;
  test_db db("sqlite", t);
  // 40 files of 1 MiB into an 8 MiB destination.
  auto paths = make_tree(t / "src", 40, 1 << 20, 4);
  tmpfs_mount lib(t / "lib", "8m");
  row_poller poll([&] { return rows_of(db); });
  auto [rc, err] = run_bounded({"sync", t / "src", lib.path(), "--db", db.url(), "--progress",
                                "none", "--no-thumbnails", "--workers", "2", "--batch-size", "2"},
                               t / "run");
  poll.stop();
  INFO(err);
  REQUIRE(rc != -1);  // not hung
  CHECK(rc == 3);
  CHECK_THAT(err, Catch::Contains("No space left on device")
                    && Catch::Contains("destination '" + lib.path() + "'")
                    && Catch::Contains("mediasync resume 1"));
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "interrupted");
  auto now = rows_of(db);
  // Some files fitted and were recorded; those that did not fit are not recorded (no
  // failed rows: a resume does them).
  CHECK(now.size() > 0);
  CHECK(now.size() < 40);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE job_id = 1 AND status <> 'ok'") == 0);
  check_counters(db, 1);
  check_recorded(poll.seen(), now, t / "src", lib.path());
  CHECK(integrity(db.url()) == "ok");

  // A rerun without fixing it stops the same way, recording nothing twice.
  auto [rc2, err2] = run_bounded({"resume", "1", "--db", db.url(), "--progress", "none"},
                                 t / "run2");
  INFO(err2);
  CHECK(rc2 == 3);
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "interrupted");
  CHECK(rows_of(db) == now);
  check_counters(db, 1);

  // The fault removed: the destination grows, resume finishes every file.
  REQUIRE(lib.remount(0, "size=64m") == 0);
  auto [rc3, err3] = run_bounded({"resume", "1", "--db", db.url(), "--progress", "none"},
                                 t / "run3");
  INFO(err3);
  REQUIRE(rc3 == 0);
  check_complete(db, t / "src", lib.path(), paths);
  check_recorded(now, rows_of(db), t / "src", lib.path());
  CHECK(integrity(db.url()) == "ok");
}

namespace {

/// A noisy RGB image (compresses badly: real-sized JPEGs and thumbnails).
vips::VImage noisy(int w, int h, int seed) {
  using vips::VImage;
  VImage xy = VImage::xyz(w, h);
  VImage rgb = (xy[0] * (255.0 / w)).bandjoin(xy[1] * (255.0 / h)).bandjoin(xy[0] * 0.0 + 90);
  VImage noise = VImage::gaussnoise(w, h, VImage::option()->set("sigma", 30.0)->set("seed", seed));
  return (rgb + noise).cast(VIPS_FORMAT_UCHAR).copy(
    VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

bool complete_jpeg(const std::string& b) {
  return b.size() > 4 && static_cast<unsigned char>(b[0]) == 0xff
         && static_cast<unsigned char>(b[1]) == 0xd8
         && static_cast<unsigned char>(b[b.size() - 2]) == 0xff
         && static_cast<unsigned char>(b[b.size() - 1]) == 0xd9;
}

/// The library after a fault during the image stages: the library copies are exactly the
/// sync ok rows' (equal to their sources); every derived file is a complete JPEG, and the
/// ones of processing / watermark ok rows exist; no temporary file anywhere.
void check_image_library(const test_db& db, const std::string& src, const std::string& lib) {
  std::set<std::string> copies, ok;
  for (auto& f : files_under(lib)) {
    INFO(f);
    CHECK(f.find(".mediasync-tmp") == std::string::npos);
    if (f.rfind(".thumbnails/", 0) == 0 || f.rfind(".previews/", 0) == 0)
      CHECK(complete_jpeg(read_file(lib + "/" + f)));
    else
      copies.insert(f);
  }
  for (auto& r : db.rows("SELECT path FROM file_results WHERE job_id = 1 AND stage = 'sync' "
                         "AND status = 'ok'")) {
    ok.insert(r[0]);
    REQUIRE(read_file(lib + "/" + r[0]) == read_file(src + "/" + r[0]));
  }
  CHECK(copies == ok);
  for (auto& r : db.rows("SELECT path, stage FROM file_results WHERE job_id = 1 AND stage <> "
                         "'sync' AND status = 'ok'")) {
    INFO(r[0] << " " << r[1]);
    if (r[1] == "processing") {
      CHECK(fs::exists(lib + "/.thumbnails/256/" + r[0] + ".jpg"));
      CHECK(fs::exists(lib + "/.thumbnails/1024/" + r[0] + ".jpg"));
    } else {
      CHECK(fs::exists(lib + "/.previews/" + r[0] + ".jpg"));
    }
  }
}

} // namespace

TEST_CASE("faults: destination full while the image stages write thumbnails and previews - "
          "interrupted (exit 3), resume finishes every stage",
          "[e2e][faults]") {
  temp_dir t;
  test_db db("sqlite", t);
  tmpfs_mount lib(t / "lib", "64m");  // before libvips starts threads (see private_mounts)
  ms::imaging_init(1);
  std::vector<std::string> paths;
  std::uintmax_t total = 0;
  for (int i = 0; i < 16; ++i) {
    auto rel = "p" + std::to_string(i % 4) + "/img" + std::to_string(i) + ".jpg";
    fs::create_directories(fs::path(t / "src/" + rel).parent_path());
    noisy(1400, 1000, i + 1).write_to_file((t / "src/" + rel).c_str());
    total += fs::file_size(t / "src/" + rel);
    paths.push_back(rel);
  }
  // Room for the copies and a little more: the thumbnails and previews fill it.
  REQUIRE(lib.remount(0, "size=" + std::to_string((total + (512 << 10)) / 4096 * 4096 + 4096))
          == 0);
  auto [rc, err] = run_bounded({"sync", t / "src", lib.path(), "--db", db.url(), "--progress",
                                "none", "--workers", "2", "--processing-workers", "2",
                                "--watermark-workers", "1", "--batch-size", "4"},
                               t / "run");
  INFO(err);
  REQUIRE(rc != -1);  // not hung
  CHECK(rc == 3);
  CHECK_THAT(err, Catch::Contains("No space left on device")
                    && Catch::Contains("mediasync resume 1"));
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "interrupted");
  CHECK(db.num("SELECT count(*) FROM file_results WHERE job_id = 1 AND status = 'failed'") == 0);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE job_id = 1") < 3 * 16);
  check_counters(db, 1);
  CHECK(db.num("SELECT count(*) FROM file_results f JOIN job_stage_counters c ON c.job_id = 1 "
               "AND c.stage = f.stage WHERE f.job_id = 1 AND f.status = 'ok'")
        == db.num("SELECT count(*) FROM file_results WHERE job_id = 1 AND status = 'ok'"));
  check_image_library(db, t / "src", lib.path());

  REQUIRE(lib.remount(0, "size=256m") == 0);
  auto [rc2, err2] = run_bounded({"resume", "1", "--db", db.url(), "--progress", "none"},
                                 t / "run2");
  INFO(err2);
  REQUIRE(rc2 == 0);
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "completed");
  for (auto stage : {"sync", "processing", "watermark"}) {
    INFO(stage);
    CHECK(db.num(std::string{"SELECT count(*) FROM file_results WHERE job_id = 1 AND status = "
                             "'ok' AND stage = '"} + stage + "'") == 16);
    CHECK(db.num(std::string{"SELECT ok_files FROM job_stage_counters WHERE job_id = 1 AND "
                             "stage = '"} + stage + "'") == 16);
  }
  CHECK(db.num("SELECT count(*) FROM file_results WHERE job_id = 1") == 3 * 16);
  check_counters(db, 1);
  check_image_library(db, t / "src", lib.path());
  CHECK(integrity(db.url()) == "ok");
}

TEST_CASE("faults: destination turning read-only mid-job - interrupted (exit 3), rows "
          "consistent, resume finishes after remounting it read-write",
          "[e2e][faults]") {
  temp_dir t;
  test_db db("sqlite", t);
  auto paths = make_tree(t / "src", 4000, 8192, 40);
  tmpfs_mount lib(t / "lib", "256m");
  row_poller poll([&] { return rows_of(db); });
  child_guard run{start_mediasync({"sync", t / "src", lib.path(), "--db", db.url(),
                                   "--progress", "none", "--no-thumbnails", "--workers", "2",
                                   "--batch-size", "25"},
                                  t / "run")};
  REQUIRE(wait_for_rows(
    [&] { return db.num("SELECT processed_files FROM sync_jobs WHERE id = 1"); }, 1));
  // Remount read-only while it writes: the kernel refuses (EBUSY) while a file is open
  // for writing, so try until a moment between two files.
  int e = EBUSY;
  auto end = std::chrono::steady_clock::now() + 20s;
  while (e == EBUSY && std::chrono::steady_clock::now() < end) {
    e = lib.remount(MS_RDONLY);
    if (e == EBUSY)
      std::this_thread::sleep_for(200us);
  }
  REQUIRE(e == 0);
  long at_fault = db.num("SELECT count(*) FROM file_results WHERE job_id = 1");
  int rc = run.wait(45s);
  poll.stop();
  auto err = read_file(t / "run.err");
  INFO(err);
  REQUIRE(rc != -1);  // not hung
  CHECK(rc == 3);
  CHECK_THAT(err, Catch::Contains("Read-only file system")
                    && Catch::Contains("destination '" + lib.path() + "'")
                    && Catch::Contains("mediasync resume 1"));
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "interrupted");
  auto now = rows_of(db);
  CHECK(static_cast<long>(now.size()) >= at_fault);
  CHECK(now.size() < paths.size());
  CHECK(db.num("SELECT count(*) FROM file_results WHERE job_id = 1 AND status <> 'ok'") == 0);
  check_counters(db, 1);
  check_recorded(poll.seen(), now, t / "src", lib.path());

  REQUIRE(lib.remount(0) == 0);
  auto [rc2, err2] = run_bounded({"resume", "1", "--db", db.url(), "--progress", "none"},
                                 t / "run2");
  INFO(err2);
  REQUIRE(rc2 == 0);
  check_complete(db, t / "src", lib.path(), paths);
  check_recorded(now, rows_of(db), t / "src", lib.path());
  CHECK(integrity(db.url()) == "ok");
}

TEST_CASE("faults: SQLite database on a full disk - the commit fails, exit 3 naming the "
          "database, no corruption, resume finishes once space is freed",
          "[e2e][faults]") {
  temp_dir t;
  auto paths = make_tree(t / "src", 3000, 1000, 30);
  // Room for the whole job (database and WAL) once the filler is gone.
  tmpfs_mount dbfs(t / "dbfs", "16m");
  test_db db("sqlite", t, "dbfs/m.db");
  // The schema first, then a filler that leaves ~300 KiB: the job's rows do not fit.
  REQUIRE(run_mediasync({"migrate", "--db", db.url()}).exit_code == 0);
  struct statvfs vfs;
  REQUIRE(::statvfs(dbfs.path().c_str(), &vfs) == 0);
  auto avail = static_cast<long long>(vfs.f_bavail) * static_cast<long long>(vfs.f_frsize);
  REQUIRE(avail > 400 * 1024);
  write_file(dbfs.path() + "/filler",
             std::string(static_cast<std::size_t>(avail - 300 * 1024), 'x'));
  row_poller poll([&] { return rows_of(db); });
  auto [rc, err] = run_bounded({"sync", t / "src", t / "lib", "--db", db.url(), "--progress",
                                "none", "--no-thumbnails", "--workers", "2"},
                               t / "run");
  poll.stop();
  INFO(err);
  REQUIRE(rc != -1);  // not hung
  CHECK(rc == 3);
  CHECK_THAT(err, Catch::Contains("database or disk is full") && Catch::Contains(db.url()));
  CHECK_THAT(err, Catch::Contains("mediasync resume 1"));
  // The job row says it ended (failed, as documented), unless that write did not fit either.
  auto status = db.one("SELECT status FROM sync_jobs WHERE id = 1");
  CHECK((status == "failed" || status == "running"));
  CHECK(integrity(db.url()) == "ok");
  auto now = rows_of(db);
  CHECK(now.size() < paths.size());
  CHECK(db.num("SELECT count(*) FROM file_results WHERE job_id = 1 AND status <> 'ok'") == 0);
  check_counters(db, 1);
  // Library files of the batch that did not commit stay (durable before the commit;
  // resume rewrites them the same).
  CHECK(poll.polls() > 0);
  check_recorded(poll.seen(), now, t / "src", t / "lib", false);

  fs::remove(dbfs.path() + "/filler");
  auto [rc2, err2] = run_bounded({"resume", "1", "--db", db.url(), "--progress", "none"},
                                 t / "run2");
  INFO(err2);
  REQUIRE(rc2 == 0);
  check_complete(db, t / "src", t / "lib", paths);
  check_recorded(now, rows_of(db), t / "src", t / "lib");
  CHECK(integrity(db.url()) == "ok");
}

TEST_CASE("faults: PostgreSQL killed with SIGKILL mid-commit and started again - the job "
          "completes, every file exactly once",
          "[e2e][faults][postgres]") {
  temp_dir t;
  private_pg pg(t);
  auto paths = make_tree(t / "src", 2000, 4000, 20);
  auto args = slow_pg_sync(t, pg.url());
  row_poller poll(pg_row_reader(pg.url()));
  child_guard run{start_mediasync(args, t / "run")};
  // Twice: the whole server (postmaster and backends) killed during a COMMIT, then
  // started again by hand, within the reconnect limit (60 s).
  for (int round = 0; round < 2; ++round) {
    REQUIRE(wait_for_commit_in_flight(pg.url()));
    pg.kill9();
    std::this_thread::sleep_for(500ms);  // the writer finds it gone
    int started = pg.start();
    INFO(pg.log());
    REQUIRE(started == 0);
  }
  int rc = run.wait(50s);
  poll.stop();
  auto log = read_file(t / "run.err");
  INFO(log);
  REQUIRE(rc != -1);  // not hung
  REQUIRE(rc == 0);
  CHECK_THAT(log, Catch::Contains("lost the database connection")
                    && Catch::Contains("reachable again"));
  check_pg_complete(pg.url(), t / "src", t / "lib", paths);
  check_recorded(poll.seen(), pg_rows(pg.url()), t / "src", t / "lib");
}

TEST_CASE("faults: PostgreSQL killed with SIGKILL mid-commit and kept down past the reconnect "
          "limit - interrupted, exit 3, resume finishes once it is back",
          "[e2e][faults][postgres]") {
  temp_dir t;
  private_pg pg(t);
  auto paths = make_tree(t / "src", 2000, 4000, 20);
  auto args = slow_pg_sync(t, pg.url(), {"--db-reconnect-limit", "2s"});
  row_poller poll(pg_row_reader(pg.url()));
  child_guard run{start_mediasync(args, t / "run")};
  REQUIRE(wait_for_commit_in_flight(pg.url()));
  pg.kill9();
  int rc = run.wait(40s);
  poll.stop();
  auto log = read_file(t / "run.err");
  INFO(log);
  REQUIRE(rc != -1);  // not hung
  CHECK(rc == 3);
  CHECK_THAT(log, Catch::Contains("unreachable") && Catch::Contains("mediasync resume 1"));
  {
    int started = pg.start();
    INFO(pg.log());
    REQUIRE(started == 0);
  }
  // The writer could not record the end: the row stays running (resume takes it as is).
  auto status = pg_query(pg.url(), "SELECT status FROM sync_jobs WHERE id = 1")[0][0];
  CHECK((status == "running" || status == "interrupted"));
  auto now = pg_rows(pg.url());
  CHECK(now.size() < paths.size());
  check_recorded(poll.seen(), now, t / "src", t / "lib", false);
  auto [rc2, err2] = run_bounded({"resume", "1", "--db", pg.url(), "--progress", "none"},
                                 t / "run2");
  INFO(err2);
  REQUIRE(rc2 == 0);
  check_pg_complete(pg.url(), t / "src", t / "lib", paths);
  check_recorded(now, pg_rows(pg.url()), t / "src", t / "lib");
}
