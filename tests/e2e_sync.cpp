// End-to-end tests: the real binary on real trees, checked through a separate
// SQLite connection, as another program reading the database would.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include <pqxx/pqxx>

#include "e2e_db.hpp"
#include "pg_test_db.hpp"
#include "test_util.hpp"

using namespace ms::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string status_of(const test_db& db, int job) {
  return db.one("SELECT status FROM sync_jobs WHERE id = " + std::to_string(job));
}

void require_same_tree(const std::string& src, const std::string& dst,
                       const std::vector<std::string>& paths) {
  for (auto& p : paths)
    REQUIRE(read_file(dst + "/" + p) == read_file(src + "/" + p));
}

} // namespace

TEST_CASE("sync copies every file exactly and a rerun skips everything", "[e2e]") {
  temp_dir t;
  test_db db(EACH_BACKEND, t);
  auto paths = make_tree(t / "src", 300, 3000, 7);
  write_file(t / "src/empty.dat", "");
  paths.push_back("empty.dat");
  auto r = run_mediasync({"sync", t / "src", t / "lib", "--db", db.url(), "--progress", "none"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  require_same_tree(t / "src", t / "lib", paths);
  CHECK(status_of(db, 1) == "completed");
  CHECK(db.num("SELECT count(*) FROM file_results WHERE stage='sync' AND job_id=1 AND status='ok'") == 301);
  CHECK(db.num("SELECT total_files FROM sync_jobs WHERE id=1") == 301);
  CHECK(db.one("SELECT sha256 FROM file_results WHERE stage='sync' AND path='empty.dat'")
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(db.num("SELECT count(*) FROM media_items") == 301);
  CHECK(db.one("SELECT finished_at FROM sync_jobs WHERE id=1") != "<null>");
  check_counters(db, 1);
  // No temp files (nor their folder) stay behind in the library.
  CHECK_FALSE(fs::exists(t / "lib/.mediasync-tmp"));

  auto r2 = run_mediasync({"sync", t / "src", t / "lib", "--db", db.url(), "--progress", "none"});
  REQUIRE(r2.exit_code == 0);
  CHECK(db.num("SELECT skipped_files FROM sync_jobs WHERE id=2") == 301);
  CHECK(db.num("SELECT processed_files FROM sync_jobs WHERE id=2") == 0);
  CHECK(db.one("SELECT DISTINCT error FROM file_results WHERE stage='sync' AND job_id=2") == "unchanged");
  CHECK(db.num("SELECT count(*) FROM media_items WHERE last_job_id=2 AND first_job_id=1") == 301);
  check_counters(db, 2);

  // A changed file (size differs) is copied again, the others skipped.
  write_file(t / "src/d0/f0.bin", "changed");
  auto r3 = run_mediasync({"sync", t / "src", t / "lib", "--db", db.url(), "--progress", "none"});
  REQUIRE(r3.exit_code == 0);
  CHECK(db.num("SELECT processed_files FROM sync_jobs WHERE id=3") == 1);
  CHECK(read_file(t / "lib/d0/f0.bin") == "changed");
}

TEST_CASE("a reader polling every 10 ms never sees a lock error or counters that disagree", "[e2e]") {
  temp_dir t;
  test_db db(EACH_BACKEND, t);
  auto paths = make_tree(t / "src", 4000, 2000, 40);
  REQUIRE(run_mediasync({"migrate", "--db", db.url()}).exit_code == 0);
  // The job row exists once the writer created it; poll from the start.
  auto pid = start_mediasync({"sync", t / "src", t / "lib", "--db", db.url(), "--workers", "32",
                              "--batch-size", "50", "--flush-interval", "20", "--progress", "none"},
                             t / "run");
  std::atomic<bool> stop{false};
  std::vector<std::string> errors;
  long polls = 0, states_seen = 0;
  std::thread poller([&] {
    long last_done = -1;
    while (!stop) {
      std::this_thread::sleep_for(10ms);
      if (!db.exists())
        continue;
      try {
        // One statement: the job row and its rows from the same committed state.
        auto snap = db.rows(counters_vs_rows + std::string{"1"});
        std::vector<std::vector<std::string>> job, rows;
        if (!snap.empty()) {
          job.push_back({snap[0].begin(), snap[0].begin() + 4});
          rows.push_back({snap[0].begin() + 4, snap[0].end()});
        }
        ++polls;
        if (job.empty())
          continue;
        ++states_seen;
        if (job[0] != rows[0])
          errors.push_back("counters " + job[0][0] + " disagree with rows " + rows[0][0]);
        long done = std::stol(job[0][0]) + std::stol(job[0][1]) + std::stol(job[0][2]);
        if (done < last_done)
          errors.push_back("counters went down: " + std::to_string(done) + " < "
                           + std::to_string(last_done));
        last_done = done;
      } catch (const std::exception& e) {
        errors.push_back(std::string{"reader error: "} + e.what());
      }
    }
  });
  int rc = wait_pid(pid);
  std::this_thread::sleep_for(30ms);
  stop = true;
  poller.join();
  INFO(read_file(t / "run.err"));
  REQUIRE(rc == 0);
  for (auto& e : errors)
    UNSCOPED_INFO(e);
  CHECK(errors.empty());
  CHECK(polls > 0);
  CHECK(states_seen > 0);
  CHECK(db.num("SELECT processed_files FROM sync_jobs WHERE id=1") == 4000);
  check_counters(db, 1);
}

TEST_CASE("kill -9 in the middle, then resume: one row per file, counters right", "[e2e]") {
  temp_dir t;
  test_db db(EACH_BACKEND, t);
  auto paths = make_tree(t / "src", 5000, 4000, 50);
  auto pid = start_mediasync({"sync", t / "src", t / "lib", "--db", db.url(), "--workers", "2",
                              "--batch-size", "25", "--progress", "none"},
                             t / "run");
  // Kill as soon as some work is committed.
  bool killed_mid_run = false;
  for (int i = 0; i < 3000; ++i) {
    std::this_thread::sleep_for(2ms);
    try {
      if (!db.exists())
        continue;
      auto r = db.rows("SELECT processed_files, status FROM sync_jobs WHERE id=1");
      if (!r.empty() && std::stol(r[0][0]) > 0) {
        killed_mid_run = r[0][1] == "running";
        break;
      }
    } catch (const std::exception&) {
      // The schema may not exist yet.
    }
  }
  ::kill(pid, SIGKILL);
  CHECK(wait_pid(pid) == 128 + SIGKILL);
  REQUIRE(killed_mid_run);
  {
    CHECK(status_of(db, 1) == "running");
    CHECK(db.num("SELECT count(*) FROM file_results WHERE stage='sync' AND job_id=1") < 5000);
    check_counters(db, 1);
  }
  auto r = run_mediasync({"resume", "1", "--db", db.url(), "--progress", "none"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(status_of(db, 1) == "completed");
  CHECK(db.num("SELECT count(*) FROM file_results WHERE stage='sync' AND job_id=1") == 5000);
  CHECK(db.num("SELECT count(DISTINCT path) FROM file_results WHERE stage='sync' AND job_id=1") == 5000);
  CHECK(db.num("SELECT processed_files FROM sync_jobs WHERE id=1") == 5000);
  CHECK(db.num("SELECT count(*) FROM sync_jobs") == 1);
  check_counters(db, 1);
  require_same_tree(t / "src", t / "lib", paths);
  CHECK_FALSE(fs::exists(t / "lib/.mediasync-tmp"));
}

TEST_CASE("SIGINT drains, marks the job interrupted (exit 130), resume completes it", "[e2e]") {
  temp_dir t;
  test_db db(EACH_BACKEND, t);
  auto paths = make_tree(t / "src", 6000, 4000, 60);
  auto pid = start_mediasync({"sync", t / "src", t / "lib", "--db", db.url(), "--workers", "2",
                              "--batch-size", "20", "--progress", "none"},
                             t / "run");
  for (int i = 0; i < 3000; ++i) {
    std::this_thread::sleep_for(2ms);
    try {
      if (db.exists() && db.num("SELECT processed_files FROM sync_jobs WHERE id=1") > 0)
        break;
    } catch (const std::exception&) {
    }
  }
  ::kill(pid, SIGINT);
  int rc = wait_pid(pid);
  INFO(read_file(t / "run.err"));
  REQUIRE(rc == 130);
  {
    CHECK(status_of(db, 1) == "interrupted");
    CHECK(db.num("SELECT count(*) FROM file_results WHERE stage='sync' AND job_id=1") < 6000);
    check_counters(db, 1);
  }
  CHECK_THAT(read_file(t / "run.err"), Catch::Contains("resume"));
  auto r = run_mediasync({"resume", "1", "--db", db.url(), "--progress", "none"});
  REQUIRE(r.exit_code == 0);
  CHECK(status_of(db, 1) == "completed");
  CHECK(db.num("SELECT count(*) FROM file_results WHERE stage='sync' AND job_id=1") == 6000);
  check_counters(db, 1);
  require_same_tree(t / "src", t / "lib", paths);
}

TEST_CASE("hostile names, special files and symlinks: correct rows, nothing outside DEST", "[e2e]") {
  temp_dir t;
  test_db db("sqlite", t);
  auto src = t / "src";
  std::vector<std::string> names = {"with space.jpg", "quote's \"double\".png",
                                    "new\nline.txt", std::string("bad\xff\xfeutf8.bin"),
                                    "'; DROP TABLE sync_jobs; --", std::string(255, 'n')};
  for (std::size_t i = 0; i < names.size(); ++i)
    write_file(src + "/" + names[i], content(100 + i, i));
  fs::create_directories(t / "outside");
  write_file(t / "outside/secret.txt", "secret");
  fs::create_symlink(t / "outside", src + "/link-to-outside");
  fs::create_symlink("missing-target", src + "/broken-link");
  fs::create_symlink("loop", src + "/loop");
  REQUIRE(::mkfifo((src + "/fifo").c_str(), 0644) == 0);
  auto r = run_mediasync({"sync", src, t / "lib", "--db", db.url(), "--progress", "none"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  for (auto& n : names) {
    CHECK(read_file(t / "lib/" + n) == read_file(src + "/" + n));
    auto rows = db.rows("SELECT path FROM file_results WHERE stage='sync' AND status='ok'");
    bool found = false;
    for (auto& row : rows)
      found = found || row[0] == n;
    CHECK(found);
  }
  CHECK(db.num("SELECT count(*) FROM sync_jobs") == 1);
  CHECK(db.one("SELECT error FROM file_results WHERE stage='sync' AND path='fifo'") == "skipped special file (FIFO)");
  for (auto l : {"link-to-outside", "broken-link", "loop"})
    CHECK(db.one(std::string{"SELECT status FROM file_results WHERE stage='sync' AND path='"} + l + "'") == "skipped");
  CHECK_FALSE(fs::exists(t / "lib/link-to-outside"));
  CHECK(read_file(t / "outside/secret.txt") == "secret");
  check_counters(db, 1);
}

TEST_CASE("vanished files are marked missing, an empty source is refused", "[e2e]") {
  temp_dir t;
  test_db db(EACH_BACKEND, t);
  auto paths = make_tree(t / "src", 20, 100, 2);
  std::vector<std::string> base = {"sync", t / "src", t / "lib", "--db", db.url(), "--progress", "none"};
  REQUIRE(run_mediasync(base).exit_code == 0);
  fs::remove(t / "src/d0/f0.bin");
  REQUIRE(run_mediasync(base).exit_code == 0);
  CHECK(db.num("SELECT CASE WHEN missing THEN 1 ELSE 0 END FROM media_items WHERE path='d0/f0.bin'") == 1);
  CHECK(db.num("SELECT count(*) FROM media_items WHERE NOT missing") == 19);
  CHECK(fs::exists(t / "lib/d0/f0.bin"));  // never deleted from the library
  // The whole source disappears (unmounted): refused, nothing marked.
  fs::remove_all(t / "src");
  fs::create_directories(t / "src");
  auto r = run_mediasync(base);
  CHECK(r.exit_code == 3);
  CHECK_THAT(r.err, Catch::Contains("is empty") && Catch::Contains("--allow-empty-source"));
  CHECK(db.num("SELECT count(*) FROM media_items WHERE NOT missing") == 19);
  auto args = base;
  args.push_back("--allow-empty-source");
  CHECK(run_mediasync(args).exit_code == 0);
  CHECK(db.num("SELECT count(*) FROM media_items WHERE NOT missing") == 0);
}

TEST_CASE("checksum mode finds content changes that keep size and mtime", "[e2e]") {
  temp_dir t;
  test_db db(EACH_BACKEND, t);
  write_file(t / "src/a.bin", "aaaa");
  std::vector<std::string> base = {"sync", t / "src", t / "lib", "--db", db.url(), "--progress", "none"};
  REQUIRE(run_mediasync(base).exit_code == 0);
  struct stat sb;
  REQUIRE(::stat((t / "src/a.bin").c_str(), &sb) == 0);
  write_file(t / "src/a.bin", "bbbb");
  struct timespec times[2] = {sb.st_atim, sb.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, (t / "src/a.bin").c_str(), times, 0) == 0);
  REQUIRE(run_mediasync(base).exit_code == 0);
  CHECK(read_file(t / "lib/a.bin") == "aaaa");  // size + mtime match: skipped
  auto args = base;
  args.push_back("--checksum");
  REQUIRE(run_mediasync(args).exit_code == 0);
  CHECK(read_file(t / "lib/a.bin") == "bbbb");
  CHECK(db.num("SELECT processed_files FROM sync_jobs WHERE id=3") == 1);
  // Unchanged content under --checksum is skipped.
  REQUIRE(run_mediasync(args).exit_code == 0);
  CHECK(db.num("SELECT skipped_files FROM sync_jobs WHERE id=4") == 1);
}

TEST_CASE("filters, dry run and JSON progress", "[e2e]") {
  temp_dir t;
  test_db db(EACH_BACKEND, t);
  write_file(t / "src/a.jpg", "j");
  write_file(t / "src/b.png", "p");
  write_file(t / "src/cache/c.jpg", "c");
  auto dry = run_mediasync({"sync", t / "src", t / "lib", "--db", db.url(), "--dry-run"});
  CHECK(dry.exit_code == 0);
  CHECK_THAT(dry.out, Catch::Contains("3 file(s) to copy"));
  CHECK_FALSE(fs::exists(t / "lib"));
  CHECK_FALSE(fs::exists(t / "m.db"));
  auto r = run_mediasync({"sync", t / "src", t / "lib", "--db", db.url(), "--include", "*.jpg",
                          "--exclude", "cache", "--progress", "json"});
  REQUIRE(r.exit_code == 0);
  CHECK(fs::exists(t / "lib/a.jpg"));
  CHECK_FALSE(fs::exists(t / "lib/b.png"));
  CHECK_FALSE(fs::exists(t / "lib/cache/c.jpg"));
  CHECK_THAT(r.out, Catch::Contains("\"processed_files\":1") && Catch::Contains("\"final\":true"));
  auto s = run_mediasync({"status", "--db", db.url(), "--json"});
  CHECK(s.exit_code == 0);
  CHECK_THAT(s.out, Catch::Contains("\"status\":\"completed\"") && Catch::Contains("\"include\":[\"*.jpg\"]"));
}

TEST_CASE("bad input: clear message naming the input, documented exit code", "[e2e]") {
  temp_dir t;
  test_db db("sqlite", t);
  write_file(t / "src/a.bin", "a");
  struct bad_case {
    std::vector<std::string> args;
    int code;
    std::string says;
  };
  std::vector<bad_case> cases = {
    {{"sync", t / "nope", t / "lib", "--db", db.url()}, 2, t / "nope"},
    {{"sync", t / "src/a.bin", t / "lib", "--db", db.url()}, 2, "is not a directory"},
    {{"sync", t / "src", t / "src/lib", "--db", db.url()}, 2, "lies inside the source"},
    {{"sync", t / "src"}, 2, "SOURCE and DEST"},
    {{"sync", t / "src", t / "lib", "--workers", "0"}, 2, "--workers"},
    {{"sync", t / "src", t / "lib", "--batch-size", "x"}, 2, "not a whole number"},
    {{"sync", t / "src", t / "lib", "--frobnicate"}, 2, "--frobnicate"},
    {{"sync", t / "src", t / "lib", "--db", t / "no/such/dir/m.db"}, 3, t / "no/such/dir/m.db"},
    {{"resume", "42", "--db", t / "none.db"}, 3, t / "none.db"},
    {{"resume", "abc"}, 2, "'abc'"},
    {{"frob"}, 2, "unknown command"},
  };
  for (auto& c : cases) {
    auto r = run_mediasync(c.args);
    INFO(c.args[0] << " " << (c.args.size() > 1 ? c.args[1] : "") << ": " << r.err);
    CHECK(r.exit_code == c.code);
    CHECK_THAT(r.err, Catch::Contains(c.says));
  }
  CHECK_FALSE(fs::exists(t / "src/lib"));
  // A job that does not exist in an existing database.
  REQUIRE(run_mediasync({"sync", t / "src", t / "lib", "--db", db.url()}).exit_code == 0);
  auto r = run_mediasync({"resume", "42", "--db", db.url()});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("job 42 does not exist"));
}

namespace {

/// A PostgreSQL server of the test's own (tests/pg_server.sh), for tests that restart it.
class private_pg_server {
public:
  explicit private_pg_server(const temp_dir& t) : dir_(t / "pg") {
    // The server runs as the postgres user: it must be able to reach its directory.
    fs::permissions(t.path(), fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::add);
    REQUIRE(script("start") == 0);
    url_ = read_file(dir_ + "/url");
    while (!url_.empty() && url_.back() == '\n')
      url_.pop_back();
  }
  ~private_pg_server() { script("stop"); }
  const std::string& url() const { return url_; }
  int script(const std::string& action) const {
    std::string cmd = "bash '" MEDIASYNC_SOURCE_DIR "/tests/pg_server.sh' " + action + " '" + dir_
                      + "' >/dev/null 2>&1";
    int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }

private:
  std::string dir_;
  std::string url_;
};

} // namespace

TEST_CASE("PostgreSQL restarted in the middle of a 5,000-file sync: the job completes, "
          "one row per file", "[e2e][postgres]") {
  temp_dir t;
  private_pg_server pg(t);
  auto paths = make_tree(t / "src", 5000, 4000, 50);
  auto pid = start_mediasync({"sync", t / "src", t / "lib", "--db", pg.url(), "--workers", "2",
                              "--batch-size", "25", "--progress", "none", "--no-thumbnails"},
                             t / "run");
  auto processed = [&] {
    try {
      pqxx::connection c(pg.url());
      pqxx::nontransaction n(c);
      auto r = n.exec("SELECT processed_files FROM sync_jobs WHERE id = 1");
      return r.empty() ? -1L : r[0][0].as<long>();
    } catch (const std::exception&) {
      return -1L;
    }
  };
  long before = -1;
  for (int i = 0; i < 3000 && before <= 0; ++i) {
    std::this_thread::sleep_for(2ms);
    before = processed();
  }
  REQUIRE(before > 0);
  REQUIRE(before < 5000);  // restarted mid-run
  REQUIRE(pg.script("restart") == 0);
  int rc = wait_pid(pid);
  auto log = read_file(t / "run.err");
  INFO(log);
  REQUIRE(rc == 0);
  CHECK_THAT(log, Catch::Contains("lost the database connection")
                    && Catch::Contains("reachable again"));
  pqxx::connection c(pg.url());
  pqxx::nontransaction n(c);
  CHECK(n.exec("SELECT status FROM sync_jobs WHERE id = 1")[0][0].as<std::string>() == "completed");
  CHECK(n.exec("SELECT count(*) FROM file_results WHERE job_id = 1")[0][0].as<long>() == 5000);
  CHECK(n.exec("SELECT count(DISTINCT path) FROM file_results WHERE job_id = 1")[0][0].as<long>()
        == 5000);
  CHECK(n.exec("SELECT processed_files FROM sync_jobs WHERE id = 1")[0][0].as<long>() == 5000);
  require_same_tree(t / "src", t / "lib", paths);
}

TEST_CASE("PostgreSQL away past the reconnect limit: interrupted, exit 3, resumable",
          "[e2e][postgres]") {
  temp_dir t;
  private_pg_server pg(t);
  make_tree(t / "src", 3000, 4000, 30);
  auto pid = start_mediasync({"sync", t / "src", t / "lib", "--db", pg.url(), "--workers", "2",
                              "--batch-size", "25", "--progress", "none", "--no-thumbnails",
                              "--db-reconnect-limit", "2000"},
                             t / "run");
  for (int i = 0; i < 3000; ++i) {
    std::this_thread::sleep_for(2ms);
    try {
      pqxx::connection c(pg.url());
      pqxx::nontransaction n(c);
      auto r = n.exec("SELECT processed_files FROM sync_jobs WHERE id = 1");
      if (!r.empty() && r[0][0].as<long>() > 0)
        break;
    } catch (const std::exception&) {
    }
  }
  // Stop the server (keep its data) and leave it down past the limit.
  REQUIRE(std::system(("runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D '" + t / "pg/data"
                       + "' -m fast -w stop >/dev/null 2>&1").c_str()) == 0);
  int rc = wait_pid(pid);
  auto log = read_file(t / "run.err");
  INFO(log);
  CHECK(rc == 3);
  CHECK_THAT(log, Catch::Contains("unreachable") && Catch::Contains("resume"));
  REQUIRE(std::system(("runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D '" + t / "pg/data"
                       + "' -l '" + t / "pg/server.log" + "' -w start >/dev/null 2>&1").c_str()) == 0);
  auto r = run_mediasync({"resume", "1", "--db", pg.url(), "--progress", "none"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  pqxx::connection c(pg.url());
  pqxx::nontransaction n(c);
  CHECK(n.exec("SELECT count(*) FROM file_results WHERE job_id = 1")[0][0].as<long>() == 3000);
  CHECK(n.exec("SELECT processed_files FROM sync_jobs WHERE id = 1")[0][0].as<long>() == 3000);
}

TEST_CASE("two jobs at once on one PostgreSQL database both complete correctly",
          "[e2e][postgres]") {
  temp_dir t;
  test_db db("postgres", t);
  auto a = make_tree(t / "a", 1500, 2000, 15);
  auto b = make_tree(t / "b", 1200, 3000, 12);
  auto pa = start_mediasync({"sync", t / "a", t / "lib-a", "--db", db.url(), "--progress", "none"},
                            t / "ra");
  auto pb = start_mediasync({"sync", t / "b", t / "lib-b", "--db", db.url(), "--progress", "none"},
                            t / "rb");
  CHECK(wait_pid(pa) == 0);
  CHECK(wait_pid(pb) == 0);
  INFO(read_file(t / "ra.err") << read_file(t / "rb.err"));
  CHECK(db.num("SELECT count(*) FROM sync_jobs WHERE status = 'completed'") == 2);
  CHECK(db.num("SELECT sum(processed_files) FROM sync_jobs") == 2700);
  check_counters(db, 1);
  check_counters(db, 2);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE stage='sync'") == 2700);
  require_same_tree(t / "a", t / "lib-a", a);
  require_same_tree(t / "b", t / "lib-b", b);
}
