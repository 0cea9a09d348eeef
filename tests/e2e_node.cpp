// End-to-end: config-driven runs (`run`) and the long-running `node` (schedule, inotify
// watch, SIGHUP reload, SIGTERM, /metrics and /status), with the real binary.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "e2e_db.hpp"
#include "test_util.hpp"

using namespace ms::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

/// A `mediasync node CONFIG` process in `dir`, its HTTP endpoint found in its log.
class node_process {
public:
  node_process(const temp_dir& dir, const std::string& config,
               std::vector<std::string> extra = {})
    : log_(dir / "node") {
    std::vector<std::string> args{"node", config};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = start_mediasync(args, log_, dir.path());
    std::smatch m;
    static const std::regex serving{"serving (http://127\\.0\\.0\\.1:[0-9]+)/metrics"};
    bool up = wait_until(
      [&] {
        auto e = err();
        if (std::regex_search(e, m, serving)) {
          url_ = m[1];
          return true;
        }
        return false;
      },
      30s);
    INFO(err());
    REQUIRE(up);
  }

  ~node_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_pid(pid_);
    }
  }

  std::string err() const {
    std::ifstream in(log_ + ".err");
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  /// GET `path` from the node; "" when it does not answer 200.
  std::string get(const std::string& path) const {
    httplib::Client c(url_);
    c.set_connection_timeout(5);
    auto r = c.Get(path.c_str());
    return r && r->status == 200 ? r->body : std::string{};
  }

  nlohmann::json status() const {
    auto body = get("/status");
    return body.empty() ? nlohmann::json{} : nlohmann::json::parse(body);
  }

  /// The node's entry for job `name` in /status (null if absent).
  nlohmann::json job(const std::string& name) const {
    auto s = status();
    if (s.is_object())
      for (auto& j : s["jobs"])
        if (j["name"] == name)
          return j;
    return nullptr;
  }

  /// Waits until job `name` has finished at least `runs` runs and is idle.
  bool wait_runs(const std::string& name, std::uint64_t runs,
                 std::chrono::milliseconds timeout = 60s) const {
    return wait_until(
      [&] {
        auto j = job(name);
        return j.is_object() && j["runs"].get<std::uint64_t>() >= runs && j["state"] == "idle";
      },
      timeout);
  }

  void signal(int sig) const { ::kill(pid_, sig); }

  /// SIGTERM, then the exit status.
  int stop() {
    ::kill(pid_, SIGTERM);
    int rc = wait_pid(pid_);
    pid_ = -1;
    return rc;
  }

private:
  std::string log_;
  int pid_ = -1;
  std::string url_;
};

/// The value of the one series `series` (name and labels, exactly as rendered) in a
/// Prometheus text exposition; -1 when it is not there.
double metric(const std::string& text, const std::string& series) {
  std::size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n')
      return std::stod(text.substr(pos + series.size() + 1));
    pos += series.size();
  }
  return -1;
}

std::string repo_file(const std::string& rel) { return std::string{MEDIASYNC_SOURCE_DIR} + "/" + rel; }

/// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

} // namespace

TEST_CASE("each example config runs as it is", "[e2e][config]") {
  auto backend = GENERATE(as<std::string>{}, "standalone", "postgres");
  temp_dir t;
  std::vector<std::string> args{"run", repo_file("configs/" + backend + ".ini")};
  std::unique_ptr<test_db> db;
  if (backend == "postgres") {
    db = std::make_unique<test_db>("postgres", t);
    args.insert(args.end(), {"--db", db->url()});  // the command line wins over the file
  }
  auto r = run_mediasync(args, t.path());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::string url = db ? db->url() : t / "mediasync.db";  // standalone.ini: ./mediasync.db
  auto jobs = run_mediasync({"jobs", "--json", "--db", url});
  REQUIRE(jobs.exit_code == 0);
  auto arr = nlohmann::json::parse(jobs.out);
  REQUIRE(arr.size() == 2);
  for (auto& j : arr) {
    CHECK(j["status"] == "completed");
    CHECK(j["failed_files"] == 0);
    CHECK(j["processed_files"].get<long>() > 0);
    CHECK(j["settings"]["config"].get<std::string>().find("configs/" + backend + ".ini")
          != std::string::npos);
  }
  // The wallpapers job ran the image stages; the licenses job did not.
  CHECK(fs::exists(t / "library/wallpapers/.thumbnails/256"));
  CHECK(fs::exists(t / "library/licenses/GPL-3"));
  CHECK_FALSE(fs::exists(t / "library/licenses/.thumbnails"));
}

TEST_CASE("the cluster example configs run as they are on one machine", "[e2e][config][cluster]") {
  temp_dir t;
  // The configs expect certificates in ./certs, made by the script they name.
  REQUIRE(std::system(("bash " + repo_file("scripts/cluster-certs.sh") + " " + t.path()
                       + "/certs coordinator worker1 >/dev/null").c_str())
          == 0);
  // The port from the command line (which wins): the configs' fixed one may be taken
  // by a test running next to this one.
  auto address = "127.0.0.1:" + std::to_string(free_port());
  int worker = start_mediasync({"worker", "--config", repo_file("configs/cluster-worker.ini"),
                                "--join", address},
                               t / "worker", t.path());
  auto r = run_mediasync({"run", repo_file("configs/cluster-coordinator.ini"), "--listen",
                          address, "--wait-timeout", "30s"},
                         t.path());
  ::kill(worker, SIGTERM);
  CHECK(wait_pid(worker) == 0);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("cluster: node worker1 joined"));
  test_db db("sqlite", t, "mediasync.db");
  CHECK(db.num("SELECT count(*) FROM sync_jobs WHERE status = 'completed'") == 1);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE node = 'worker1'") > 0);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE node IS NULL OR node NOT IN "
               "('coordinator', 'worker1')") == 0);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE status = 'failed'") == 0);
}

TEST_CASE("run: named jobs only, the command line winning over the file", "[e2e][config]") {
  temp_dir t;
  write_file(t / "a/one.txt", "1");
  write_file(t / "b/two.md", "2");
  write_file(t / "b/three.txt", "3");
  write_file(t / "m.ini", "[storage]\ndb = ./m.db\n[stages]\nthumbnails = false\n"
                          "[job a]\nsource = ./a\ndest = ./la\n"
                          "[job b]\nsource = ./b\ndest = ./lb\ninclude = *.txt\n");
  auto r = run_mediasync({"run", "m.ini", "b", "--include", "*.md"}, t.path());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  test_db db("sqlite", t);
  CHECK(db.num("SELECT count(*) FROM sync_jobs") == 1);
  CHECK(db.one("SELECT path FROM file_results") == "two.md");
  CHECK_FALSE(fs::exists(t / "la"));
  CHECK(read_file(t / "lb/two.md") == "2");
}

TEST_CASE("bad configs: the documented error, exit 2, nothing runs", "[e2e][config]") {
  struct bad_case {
    std::string config;               ///< written to c.ini ("" = no file)
    std::vector<std::string> args;    ///< after the binary; c.ini is the config
    std::vector<std::string> expected;
  };
  const std::string job = "[job a]\nsource = ./src\ndest = ./lib\n";
  const bad_case cases[] = {
    {"", {"run", "c.ini"}, {"cannot read config file 'c.ini': No such file or directory"}},
    {"[writer]\nbatch-size = 0\n" + job, {"run", "c.ini"},
     {"c.ini:2: [writer] batch-size: '0' is out of range (1 to 100000)"}},
    {"[writer]\nbatchsize = 5\n" + job, {"node", "c.ini"}, {"c.ini:2:", "unknown key 'batchsize'"}},
    {"[storage]\ndb = mysql://db/x\n" + job, {"run", "c.ini"},
     {"unsupported URL scheme 'mysql'"}},
    {"[storage]\ndb = postgresql://localhost:99999/x\n" + job, {"run", "c.ini"},
     {"invalid port '99999'"}},
    {"[job a]\nsource = ./nowhere\ndest = ./lib\n", {"run", "c.ini"},
     {"source './nowhere': No such file or directory"}},
    {job, {"run", "c.ini", "b"}, {"no job named 'b' (jobs: a)"}},
    {"[storage]\ndb = ./m.db\n", {"run", "c.ini"}, {"c.ini: defines no [job NAME] section"}},
    {job, {"run", "c.ini", "--window", "zero"}, {"--window: 'zero' is not a whole number"}},
    {job, {"sync", "src", "lib", "--config", "c.ini", "--bogus"}, {"unknown option '--bogus'"}},
    {"[node]\nhttp = 127.0.0.1\n" + job, {"node", "c.ini"}, {"c.ini:2: [node] http:"}},
    {job, {"node"}, {"node needs a CONFIG file"}},
  };
  for (auto& c : cases) {
    temp_dir t;
    fs::create_directories(t / "src");
    write_file(t / "src/f.txt", "x");
    if (!c.config.empty())
      write_file(t / "c.ini", c.config);
    INFO("config:\n" << c.config << "args: " << c.args.back());
    auto r = run_mediasync(c.args, t.path());
    INFO("stderr: " << r.err);
    CHECK(r.exit_code == 2);
    for (auto& e : c.expected)
      CHECK_THAT(r.err, Catch::Contains(e));
    CHECK_FALSE(fs::exists(t / "lib"));   // nothing ran
    CHECK_FALSE(fs::exists(t / "m.db"));
    CHECK_FALSE(fs::exists(t / "mediasync.db"));
  }
}

TEST_CASE("node with watch = true ingests files written while it runs, each exactly once",
          "[e2e][node]") {
  temp_dir t;
  auto src = t / "src";
  make_tree(src, 5, 1000, 2);
  write_file(t / "n.ini", "[storage]\ndb = ./m.db\n[node]\nhttp = 127.0.0.1:0\n"
                          "debounce = 300ms\nsettle = 20s\n"
                          "[job w]\nsource = ./src\ndest = ./lib\nwatch = true\ninterval = 0\n"
                          "thumbnails = false\n");
  node_process node(t, "n.ini");
  REQUIRE(node.wait_runs("w", 1));

  // A large file written slowly, its fd held open: never ingested half-way.
  const std::size_t chunk = 256 * 1024, chunks = 24;  // 6 MiB over ~3.6 s
  std::string big;
  for (std::size_t i = 0; i < chunks; ++i)
    big += content(chunk, 1000 + i);
  std::thread slow([&] {
    int fd = ::open((src + "/big.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    for (std::size_t i = 0; i < chunks; ++i) {
      [[maybe_unused]] auto n = ::write(fd, big.data() + i * chunk, chunk);
      std::this_thread::sleep_for(150ms);
    }
    ::close(fd);
  });
  // Plain copies, a new nested folder, and a folder prepared elsewhere and moved in.
  std::vector<std::string> added;
  for (int i = 0; i < 20; ++i) {
    auto rel = "new/deep/f" + std::to_string(i) + ".dat";
    write_file(src + "/" + rel, content(3000, i));
    added.push_back(rel);
  }
  make_tree(t / "prepared", 6, 500, 2);
  fs::rename(t / "prepared", src + "/moved");
  slow.join();

  test_db db("sqlite", t);
  auto ingested = [&] {
    return db.num("SELECT count(DISTINCT path) FROM file_results WHERE stage = 'sync' AND "
                  "status = 'ok'");
  };
  const long expected = 5 + 20 + 6 + 1;
  bool all = wait_until([&] { return ingested() == expected; }, 30s);
  INFO(node.err());
  REQUIRE(all);
  std::this_thread::sleep_for(1500ms);  // anything late (a second ingest) would show now
  CHECK(ingested() == expected);
  CHECK(db.num("SELECT count(*) FROM (SELECT path FROM file_results WHERE stage = 'sync' AND "
               "status = 'ok' GROUP BY path HAVING count(*) > 1) d") == 0);
  // The slow file: one row, ok, the whole file.
  CHECK(db.num("SELECT count(*) FROM file_results WHERE path = 'big.bin'") == 1);
  CHECK(read_file(t / "lib/big.bin") == big);
  for (auto& rel : added)
    CHECK(read_file(t / "lib/" + rel) == read_file(src + "/" + rel));
  // Watch runs list only the written files: no full rescans after the first run.
  CHECK(db.num("SELECT max(total_files) FROM sync_jobs WHERE id > 1") < expected);
  for (auto& row : db.rows("SELECT id FROM sync_jobs"))
    check_counters(db, std::stoi(row[0]));
  CHECK(node.stop() == 0);
}

TEST_CASE("SIGHUP applies a valid config and rejects an invalid one, keeping the old",
          "[e2e][node]") {
  temp_dir t;
  make_tree(t / "a", 3, 100, 1);
  make_tree(t / "b", 4, 100, 1);
  const std::string head = "[storage]\ndb = ./m.db\n[node]\nhttp = 127.0.0.1:0\n"
                           "[stages]\nthumbnails = false\n";
  const std::string job_a = "[job a]\nsource = ./a\ndest = ./la\ninterval = 0\n";
  const std::string job_b = "[job b]\nsource = ./b\ndest = ./lb\ninterval = 0\n";
  write_file(t / "n.ini", head + job_a);
  node_process node(t, "n.ini");
  REQUIRE(node.wait_runs("a", 1));

  // Valid: job b added.
  write_file(t / "n.ini", head + job_a + job_b);
  node.signal(SIGHUP);
  REQUIRE(node.wait_runs("b", 1));
  CHECK(node.job("a")["runs"] == 1);  // unchanged: not run again
  CHECK(node.job("b")["last"]["processed_files"] == 4);

  // Invalid: rejected with the reason, the running config kept.
  write_file(t / "n.ini", head + "[writer]\nbatch-size = 0\n" + job_a + job_b);
  node.signal(SIGHUP);
  REQUIRE(wait_until([&] { return node.err().find("reload rejected") != std::string::npos; }, 10s));
  CHECK_THAT(node.err(), Catch::Contains("n.ini:8: [writer] batch-size: '0' is out of range"));
  CHECK(node.job("a").is_object());
  CHECK(node.job("b").is_object());
  auto metrics = node.get("/metrics");
  CHECK(metric(metrics, "mediasync_config_reloads_total{result=\"rejected\"}") == 1);
  CHECK(metric(metrics, "mediasync_config_reloads_total{result=\"applied\"}") == 1);

  // Valid again: job a removed, job b changed (runs again with its new settings).
  write_file(t / "n.ini", head + "[job b]\nsource = ./b\ndest = ./lb\ninterval = 0\nchecksum = true\n");
  node.signal(SIGHUP);
  REQUIRE(node.wait_runs("b", 2));
  CHECK(wait_until([&] { return node.job("a").is_null(); }, 10s));
  test_db db("sqlite", t);
  CHECK(db.num("SELECT count(*) FROM sync_jobs") == 3);
  CHECK(db.one("SELECT settings FROM sync_jobs WHERE id = 3").find("\"checksum\":true")
        != std::string::npos);
  CHECK(node.stop() == 0);
}

TEST_CASE("node /metrics parses as Prometheus text and its counters match the database",
          "[e2e][node]") {
  auto backend = EACH_BACKEND;
  temp_dir t;
  test_db db(backend, t);
  auto src = t / "src";
  make_tree(src, 40, 2000, 3);
  write_file(src + "/broken.jpg", std::string("\xff\xd8\xff\xe0", 4) + content(3000, 7));
  int photos = 0;
  for (auto& e : fs::directory_iterator("/usr/share/backgrounds/gnome"))
    if (e.path().extension() == ".webp" && photos < 2) {
      fs::copy_file(e.path(), src + "/" + e.path().filename().string());
      ++photos;
    }
  REQUIRE(photos == 2);
  write_file(t / "n.ini", "[storage]\ndb = " + db.url() + "\n[node]\nhttp = 127.0.0.1:0\n"
                          "[stages]\nprocessing-workers = 2\nwatermark-workers = 1\n"
                          "[imaging]\nthumbnail-sizes = 128\n"
                          "[job m]\nsource = ./src\ndest = ./lib\ninterval = 0\n");
  node_process node(t, "n.ini");
  REQUIRE(node.wait_runs("m", 1));
  auto text = node.get("/metrics");
  REQUIRE_FALSE(text.empty());
  CHECK(promtool_check(text) == "");

  for (auto stage : {"sync", "processing", "watermark"}) {
    auto row = db.rows("SELECT coalesce(sum(ok_files),0), coalesce(sum(failed_files),0), "
                       "coalesce(sum(skipped_files),0) FROM job_stage_counters WHERE stage = '"
                       + std::string{stage} + "'");
    REQUIRE(row.size() == 1);
    int i = 0;
    for (auto status : {"ok", "failed", "skipped"}) {
      INFO(stage << " " << status);
      CHECK(metric(text, "mediasync_files_total{stage=\"" + std::string{stage} + "\",status=\""
                           + status + "\"}")
            == std::stod(row[0][i++]));
    }
  }
  CHECK(metric(text, "mediasync_files_total{stage=\"sync\",status=\"ok\"}") == 43);
  CHECK(metric(text, "mediasync_files_total{stage=\"processing\",status=\"ok\"}") == 2);
  CHECK(metric(text, "mediasync_files_total{stage=\"processing\",status=\"failed\"}") == 1);
  CHECK(metric(text, "mediasync_bytes_total") == std::stod(db.one("SELECT sum(processed_bytes) FROM sync_jobs")));
  CHECK(metric(text, "mediasync_job_runs_total{job=\"m\",status=\"completed\"}") == 1);
  CHECK(metric(text, "mediasync_job_running{job=\"m\"}") == 0);
  CHECK(metric(text, "mediasync_queued_tasks{stage=\"sync\"}") == 0);
  CHECK(metric(text, "mediasync_commits_total") > 0);
  CHECK(metric(text, "mediasync_commit_duration_seconds_count") > 0);
  auto st = node.status();
  CHECK(st["jobs"][0]["last"]["status"] == "completed");
  CHECK(st["jobs"][0]["last"]["processed_files"] == 43);
  CHECK(node.stop() == 0);
}
