// End-to-end: a cluster on loopback with the real binary. A coordinator (`mediasync node`
// with [cluster] listen) and worker nodes (`mediasync worker --join`), TLS certificates
// from scripts/cluster-certs.sh; checked through the database, /metrics, /status and the
// logs, as an operator would.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "e2e_db.hpp"
#include "test_util.hpp"

using namespace ms::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// How often `needle` occurs in `text`.
std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
    ++n;
  return n;
}

/// A mediasync process in the background, its output in LOG.out / LOG.err; killed (SIGKILL)
/// on destruction if still running.
class process {
public:
  process(const std::vector<std::string>& args, std::string log, const std::string& cwd)
    : log_(std::move(log)) {
    pid_ = start_mediasync(args, log_, cwd);
  }
  ~process() { kill9(); }
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  std::string err() const { return slurp(log_ + ".err"); }
  bool said(const std::string& text) const { return err().find(text) != std::string::npos; }
  /// Waits until the log holds `text`.
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout = 30s) const {
    return wait_until([&] { return said(text); }, timeout);
  }

  void kill9() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_pid(pid_);
      pid_ = -1;
    }
  }
  void signal(int sig) const {
    if (pid_ > 0)
      ::kill(pid_, sig);
  }
  /// SIGTERM, then the exit status; -2 (and SIGKILL) when it has not exited within
  /// `timeout`.
  int stop(std::chrono::milliseconds timeout = 20s) {
    if (pid_ <= 0)
      return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    bool gone = wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
    if (!gone) {
      kill9();
      return -2;
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

private:
  std::string log_;
  int pid_ = -1;
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

std::string repo_file(const std::string& rel) {
  return std::string{MEDIASYNC_SOURCE_DIR} + "/" + rel;
}

/// Makes DIR/ca.pem and DIR/NODE.pem + DIR/NODE.key with scripts/cluster-certs.sh.
void make_certs(const std::string& dir, const std::vector<std::string>& nodes) {
  std::string cmd = "bash '" + repo_file("scripts/cluster-certs.sh") + "' '" + dir + "'";
  for (auto& n : nodes)
    cmd += " '" + n + "'";
  cmd += " >'" + dir + ".log' 2>&1";
  int rc = std::system(cmd.c_str());
  INFO(cmd << "\n" << slurp(dir + ".log"));
  REQUIRE(rc == 0);
}

/// The coordinator: `mediasync node CONFIG` in `dir`, listening for worker nodes on the
/// port the system chose ([cluster] listen = 127.0.0.1:0; the log names it).
class coordinator {
public:
  coordinator(const temp_dir& dir, const std::string& config)
    : proc_({"node", config}, dir / "coord", dir.path()) {
    static const std::regex accepting{"accepting worker nodes on 127\\.0\\.0\\.1:([0-9]+)"};
    std::smatch m;
    bool up = wait_until(
      [&] {
        auto e = proc_.err();
        if (!std::regex_search(e, m, accepting))
          return false;
        port_ = std::stoi(m[1]);
        return true;
      },
      30s);
    INFO(proc_.err());
    REQUIRE(up);
  }

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  process& proc() { return proc_; }
  std::string err() const { return proc_.err(); }

  /// Waits for the HTTP endpoint (it comes up once wait-for-nodes is satisfied).
  void wait_http(std::chrono::milliseconds timeout = 40s) {
    static const std::regex serving{"serving (http://127\\.0\\.0\\.1:[0-9]+)/metrics"};
    std::smatch m;
    bool up = wait_until(
      [&] {
        auto e = proc_.err();
        if (!std::regex_search(e, m, serving))
          return false;
        url_ = m[1];
        return true;
      },
      timeout);
    INFO(proc_.err());
    REQUIRE(up);
  }

  /// GET `path` from the node; "" when it does not answer 200.
  std::string get(const std::string& path) const {
    httplib::Client c(url_);
    c.set_connection_timeout(5);
    auto r = c.Get(path.c_str());
    return r && r->status == 200 ? r->body : std::string{};
  }

  double metric_value(const std::string& series) const { return metric(get("/metrics"), series); }

  /// The node's entry for job `name` in /status (null if absent).
  nlohmann::json job(const std::string& name) const {
    auto body = get("/status");
    if (body.empty())
      return nullptr;
    auto s = nlohmann::json::parse(body);
    for (auto& j : s["jobs"])
      if (j["name"] == name)
        return j;
    return nullptr;
  }

  /// Waits until job `name` has finished at least `runs` runs and is idle.
  bool wait_runs(const std::string& name, std::uint64_t runs,
                 std::chrono::milliseconds timeout = 50s) const {
    return wait_until(
      [&] {
        auto j = job(name);
        return j.is_object() && j["runs"].get<std::uint64_t>() >= runs && j["state"] == "idle";
      },
      timeout);
  }

  int stop() { return proc_.stop(); }

private:
  process proc_;  // first: killed even when the constructor fails
  int port_ = 0;
  std::string url_;
};

/// A worker node joining `coord` with the certificate of `cert_name` from `certs`
/// (its CA: `ca`, default certs/ca.pem). The log is DIR/LOG.
std::unique_ptr<process> start_worker(const temp_dir& dir, const coordinator& coord,
                                      const std::string& name, int workers,
                                      std::vector<std::string> extra = {},
                                      std::string log = {}, std::string certs = {},
                                      std::string ca = {}) {
  if (certs.empty())
    certs = dir / "certs";
  if (ca.empty())
    ca = certs + "/ca.pem";
  std::vector<std::string> args{"worker",  "--join", coord.address(),
                                "--ca",    ca,       "--cert",
                                certs + "/" + name + ".pem", "--key", certs + "/" + name + ".key",
                                "--node-name", name, "--workers", std::to_string(workers)};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<process>(args, dir / (log.empty() ? name : log), dir.path());
}

/// Waits until worker `w` (node `name`) says it joined (`times` joins in its log).
bool joined(const process& w, const std::string& name, std::size_t times = 1) {
  return wait_until(
    [&] { return occurrences(w.err(), "worker node " + name + ": joined the coordinator at") >= times; },
    30s);
}

/// The [storage], [node] and [cluster] sections of a coordinator's config in `t`
/// (certs in t/certs), then `rest`.
std::string coordinator_config(const temp_dir& t, int wait_for_nodes, const std::string& rest) {
  return "[storage]\ndb = ./m.db\n"
         "[node]\nhttp = 127.0.0.1:0\n"
         "[stages]\nsync-workers = 1\nthumbnails = false\n"
         "[cluster]\nlisten = 127.0.0.1:0\nca = " + t / "certs/ca.pem" + "\ncert = "
         + t / "certs/coord.pem" + "\nkey = " + t / "certs/coord.key"
         + "\nnode-name = coord\nwait-for-nodes = " + std::to_string(wait_for_nodes)
         + "\nwait-timeout = 30s\n" + rest;
}

/// `n` files of 4 to 16 KiB in nested folders under `root`; their relative paths.
/// `total` gets their bytes.
std::vector<std::string> make_nested_tree(const std::string& root, std::size_t n,
                                          std::uint64_t seed, std::uint64_t* total = nullptr) {
  std::vector<std::string> paths;
  for (std::size_t i = 0; i < n; ++i) {
    auto rel = "a" + std::to_string(i % 5) + "/b" + std::to_string(i % 7) + "/c"
               + std::to_string(i % 3) + "/f" + std::to_string(i) + ".bin";
    std::size_t size = 4096 + (i * 2654435761u) % (12 * 1024 + 1);
    write_file(root + "/" + rel, content(size, seed + i));
    if (total)
      *total += size;
    paths.push_back(rel);
  }
  return paths;
}

/// Checks the library holds every file of `paths` with the source's bytes, and no other
/// regular file (temporary files of a killed node ignored when `ignore_temps`).
void check_library(const std::string& src, const std::string& lib,
                   const std::vector<std::string>& paths, bool ignore_temps = false) {
  std::size_t wrong = 0;
  std::string first_wrong;
  for (auto& p : paths) {
    std::error_code ec;
    bool same = fs::is_regular_file(lib + "/" + p, ec) && read_file(lib + "/" + p) == read_file(src + "/" + p);
    if (!same && wrong++ == 0)
      first_wrong = p;
  }
  INFO("first wrong or missing: " << first_wrong);
  CHECK(wrong == 0);
  std::size_t files = 0;
  for (auto& e : fs::recursive_directory_iterator(lib))
    if (e.is_regular_file()
        && !(ignore_temps && e.path().filename().string().rfind(".mediasync-tmp.", 0) == 0))
      ++files;
  CHECK(files == paths.size());
}

/// Rows per node of job `job` ("<null>" for rows without one).
std::map<std::string, long> rows_by_node(const test_db& db, int job, const std::string& stage = "sync") {
  std::map<std::string, long> out;
  for (auto& r : db.rows("SELECT node, count(*) FROM file_results WHERE job_id = "
                         + std::to_string(job) + " AND stage = '" + stage + "' GROUP BY node"))
    out[r[0]] = std::stol(r[1]);
  return out;
}

/// Every source file has exactly one sync row in job `job`, all ok; `n` files.
void check_once_each(const test_db& db, int job, std::size_t n) {
  auto j = std::to_string(job);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE stage = 'sync' AND job_id = " + j)
        == static_cast<long>(n));
  CHECK(db.num("SELECT count(DISTINCT path) FROM file_results WHERE stage = 'sync' AND job_id = " + j)
        == static_cast<long>(n));
  CHECK(db.num("SELECT count(*) FROM file_results WHERE status <> 'ok' AND job_id = " + j) == 0);
  CHECK(db.num("SELECT count(*) FROM file_results WHERE node IS NULL AND job_id = " + j) == 0);
}

/// A plain TCP client: connects to `port`, sends "hello\n", reads until the peer closes.
/// Returns the client's local port, 0 when the peer did not close within 15 s.
int plain_tcp_hello(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  sockaddr_in local{};
  socklen_t len = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  timeval tv{15, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const char hello[] = "hello\n";
  REQUIRE(::send(fd, hello, sizeof hello - 1, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof hello - 1));
  bool closed = false;
  for (;;) {
    char buf[512];
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0)
      continue;  // whatever it answers (a TLS alert), until it closes
    closed = n == 0 || errno == ECONNRESET;
    if (n < 0 && errno == EINTR)
      continue;
    break;
  }
  ::close(fd);
  return closed ? ntohs(local.sin_port) : 0;
}
/// The logs of the coordinator and of the worker nodes given, for a failure's message.
std::string logs(const coordinator& coord,
                 std::initializer_list<std::pair<const char*, const process*>> workers = {}) {
  std::string out = "--- coordinator log:\n" + coord.err();
  for (auto& [name, w] : workers)
    if (w)
      out += std::string{"--- "} + name + " log:\n" + w->err();
  return out;
}

} // namespace

TEST_CASE("a coordinator and two worker nodes sync a tree, every file exactly once",
          "[e2e][cluster]") {
  temp_dir t;
  make_certs(t / "certs", {"coord", "w1", "w2"});
  std::uint64_t bytes = 0;
  auto paths = make_nested_tree(t / "src", 3000, 1, &bytes);
  write_file(t / "c.ini", coordinator_config(t, 2, "[job m]\nsource = ./src\ndest = ./lib\ninterval = 0\n"));
  coordinator coord(t, "c.ini");
  auto w1 = start_worker(t, coord, "w1", 2);
  auto w2 = start_worker(t, coord, "w2", 2);
  coord.wait_http();
  {
    INFO(logs(coord, {{"w1", w1.get()}, {"w2", w2.get()}}));
    REQUIRE(coord.wait_runs("m", 1));
  }
  INFO(logs(coord, {{"w1", w1.get()}, {"w2", w2.get()}}));
  auto last = coord.job("m")["last"];
  CHECK(last["status"] == "completed");
  CHECK(last["processed_files"] == 3000);
  CHECK(last["failed_files"] == 0);
  CHECK(last["processed_bytes"] == bytes);

  test_db db("sqlite", t);
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "completed");
  check_once_each(db, 1, paths.size());
  CHECK(db.num("SELECT sum(size) FROM file_results WHERE stage = 'sync' AND job_id = 1")
        == static_cast<long>(bytes));
  auto by_node = rows_by_node(db, 1);
  for (auto& [node, n] : by_node) {
    INFO("node " << node << ": " << n << " rows");
    CHECK(std::set<std::string>{"coord", "w1", "w2"}.count(node) == 1);
  }
  CHECK(by_node["w1"] > 0);
  CHECK(by_node["w2"] > 0);
  check_counters(db, 1);
  check_library(t / "src", t / "lib", paths);

  // While both are joined: the cluster's size, and the tasks by node matching the rows.
  auto text = coord.get("/metrics");
  REQUIRE_FALSE(text.empty());
  CHECK(promtool_check(text) == "");
  CHECK(metric(text, "mediasync_cluster_nodes") == 2);
  for (auto node : {"w1", "w2"})
    for (auto stage : {"sync", "processing", "watermark"})
      CHECK(metric(text, std::string{"mediasync_cluster_workers{node=\""} + node + "\",stage=\""
                           + stage + "\"}")
            == 2);
  for (auto node : {"coord", "w1", "w2"}) {
    INFO(node);
    CHECK(metric(text, std::string{"mediasync_cluster_tasks_total{node=\""} + node
                         + "\",stage=\"sync\"}")
          == by_node[node]);
  }
  // Neither node was dropped on the way.
  CHECK(occurrences(w1->err(), "joined the coordinator at") == 1);
  CHECK(occurrences(w2->err(), "joined the coordinator at") == 1);

  // SIGTERM stops a worker node cleanly; the coordinator sees it leave.
  CHECK(w1->stop() == 0);
  CHECK(w1->said("worker node w1: stopped"));
  CHECK(wait_until([&] { return coord.metric_value("mediasync_cluster_nodes") == 1; }, 20s));
  CHECK(coord.proc().said("cluster: node w1 left"));
  CHECK(coord.metric_value("mediasync_cluster_workers{node=\"w1\",stage=\"sync\"}") == -1);
  CHECK(w2->stop() == 0);
  CHECK(coord.stop() == 0);
}

TEST_CASE("a worker node killed in the middle of a job: its tasks go to the others, "
          "nothing is lost or done twice",
          "[e2e][cluster]") {
  temp_dir t;
  make_certs(t / "certs", {"coord", "w1", "w2"});
  const std::size_t n = 2000;
  auto paths = make_nested_tree(t / "src", n, 7);
  // A small window and the default flush interval pace the job (a few hundred files a
  // second), so it is still running when w1 goes.
  write_file(t / "c.ini",
             coordinator_config(t, 2, "[scan]\nwindow = 32\n[writer]\nflush-interval = 100ms\n"
                                      "[job m]\nsource = ./src\ndest = ./lib\ninterval = 0\n"));
  coordinator coord(t, "c.ini");
  auto w1 = start_worker(t, coord, "w1", 2);
  auto w2 = start_worker(t, coord, "w2", 2);
  coord.wait_http();
  test_db db("sqlite", t);
  auto w1_rows = [&] {
    return db.exists() ? db.num("SELECT count(*) FROM file_results WHERE node = 'w1'") : 0L;
  };
  long rows_at_kill = 0;
  {
    INFO(logs(coord, {{"w1", w1.get()}, {"w2", w2.get()}}));
    REQUIRE(wait_until([&] { return w1_rows() >= 30; }, 30s));
    auto state = coord.job("m");
    REQUIRE(state.is_object());
    REQUIRE(state["state"] == "running");
    w1->kill9();
    rows_at_kill = db.num("SELECT count(*) FROM file_results WHERE stage = 'sync'");
    INFO("sync rows when w1 was killed: " << rows_at_kill);
    REQUIRE(rows_at_kill < static_cast<long>(n));  // the kill really happened mid-job
    CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "running");
    REQUIRE(coord.wait_runs("m", 1));
  }
  INFO(logs(coord, {{"w2", w2.get()}}));
  INFO("sync rows when w1 was killed: " << rows_at_kill);
  auto last = coord.job("m")["last"];
  CHECK(last["status"] == "completed");
  CHECK(last["processed_files"] == n);
  CHECK(last["failed_files"] == 0);
  CHECK(db.one("SELECT status FROM sync_jobs WHERE id = 1") == "completed");
  check_once_each(db, 1, n);
  check_counters(db, 1);
  check_library(t / "src", t / "lib", paths, true);
  auto by_node = rows_by_node(db, 1);
  CHECK(by_node["w1"] > 0);
  CHECK(by_node["w2"] > 0);
  CHECK(by_node["w2"] + by_node["coord"] + by_node["w1"] == static_cast<long>(n));

  // The coordinator saw w1 leave, and only w1: w2 stayed joined all along.
  CHECK(coord.proc().said("cluster: node w1 left"));
  CHECK_FALSE(coord.proc().said("cluster: node w2 left"));
  CHECK(occurrences(w2->err(), "joined the coordinator at") == 1);
  CHECK_FALSE(w2->said("lost the coordinator"));
  CHECK(coord.metric_value("mediasync_cluster_nodes") == 1);
  CHECK(w2->stop() == 0);
  CHECK(coord.stop() == 0);
}

TEST_CASE("a worker node that restarts joins again and gets work in later runs",
          "[e2e][cluster]") {
  temp_dir t;
  make_certs(t / "certs", {"coord", "w1"});
  auto paths_a = make_nested_tree(t / "a", 300, 100);
  auto paths_b = make_nested_tree(t / "b", 300, 500);
  const std::string job_a = "[job a]\nsource = ./a\ndest = ./la\ninterval = 0\n";
  const std::string job_b = "[job b]\nsource = ./b\ndest = ./lb\ninterval = 0\n";
  write_file(t / "c.ini", coordinator_config(t, 1, job_a));
  coordinator coord(t, "c.ini");
  auto w1 = start_worker(t, coord, "w1", 3);
  coord.wait_http();
  test_db db("sqlite", t);
  {
    INFO(logs(coord, {{"w1", w1.get()}}));
    REQUIRE(coord.wait_runs("a", 1));
    CHECK(rows_by_node(db, 1)["w1"] > 0);
    CHECK(coord.metric_value("mediasync_cluster_nodes") == 1);

    // The node dies: the coordinator sees it leave.
    w1->kill9();
    REQUIRE(wait_until([&] { return coord.metric_value("mediasync_cluster_nodes") == 0; }, 20s));
    CHECK(coord.proc().said("cluster: node w1 left"));
    CHECK(coord.metric_value("mediasync_cluster_workers{node=\"w1\",stage=\"sync\"}") == -1);
  }

  // It restarts under the same name and joins again, with its workers counted once.
  w1 = start_worker(t, coord, "w1", 3, {}, "w1-again");
  {
    INFO(logs(coord, {{"w1 (again)", w1.get()}}));
    REQUIRE(joined(*w1, "w1"));
    REQUIRE(wait_until([&] { return coord.metric_value("mediasync_cluster_nodes") == 1; }, 20s));
    CHECK(occurrences(coord.err(), "cluster: node w1 joined with") == 2);
    CHECK(coord.metric_value("mediasync_cluster_workers{node=\"w1\",stage=\"sync\"}") == 3);

    // A later run (job b, added by a reload) gets work done by the rejoined node.
    write_file(t / "c.ini", coordinator_config(t, 1, job_a + job_b));
    coord.proc().signal(SIGHUP);
    REQUIRE(coord.wait_runs("b", 1));
  }
  INFO(logs(coord, {{"w1 (again)", w1.get()}}));
  CHECK(coord.job("b")["last"]["status"] == "completed");
  REQUIRE(db.one("SELECT source_root FROM sync_jobs WHERE id = 2").find("/b") != std::string::npos);
  check_once_each(db, 2, paths_b.size());
  auto by_node = rows_by_node(db, 2);
  CHECK(by_node["w1"] > 0);
  CHECK(by_node["w1"] + by_node["coord"] == static_cast<long>(paths_b.size()));
  check_counters(db, 2);
  check_library(t / "b", t / "lb", paths_b);
  CHECK(w1->stop() == 0);
  CHECK(coord.stop() == 0);
}

TEST_CASE("a certificate from another CA and a plain TCP client are refused and logged, "
          "the joined nodes undisturbed",
          "[e2e][cluster]") {
  temp_dir t;
  make_certs(t / "certs", {"coord", "w1"});
  make_certs(t / "other", {"evil"});  // another CA
  fs::create_directories(t / "empty");
  auto paths = make_nested_tree(t / "b", 200, 900);
  const std::string job_a = "[job a]\nsource = ./empty\ndest = ./la\ninterval = 0\n";
  write_file(t / "c.ini", coordinator_config(t, 1, job_a));
  coordinator coord(t, "c.ini");
  auto w1 = start_worker(t, coord, "w1", 2);
  coord.wait_http();
  {
    INFO(logs(coord, {{"w1", w1.get()}}));
    REQUIRE(coord.wait_runs("a", 1));
  }

  // A node whose certificate another CA signed (it trusts the cluster CA: the coordinator
  // is the one that refuses).
  auto evil = start_worker(t, coord, "evil", 2, {}, "evil", t / "other", t / "certs/ca.pem");
  {
    INFO(logs(coord, {{"evil", evil.get()}}));
    REQUIRE(evil->wait_for("cannot join the coordinator at " + coord.address()));
    REQUIRE(coord.proc().wait_for("cluster: refused a connection from 127.0.0.1:"));
    CHECK_THAT(coord.err(), Catch::Contains("certificate refused: unable to get local issuer "
                                            "certificate"));
    CHECK_FALSE(evil->said("joined the coordinator"));
  }

  // A node of another cluster altogether (it refuses the coordinator too).
  auto stranger = start_worker(t, coord, "evil", 1, {}, "stranger", t / "other");
  {
    INFO(logs(coord, {{"stranger", stranger.get()}}));
    REQUIRE(stranger->wait_for("cannot join the coordinator at " + coord.address()));
    CHECK_FALSE(stranger->said("joined the coordinator"));
  }

  // Not TLS at all.
  int client_port = plain_tcp_hello(coord.port());
  {
    INFO(logs(coord));
    REQUIRE(client_port != 0);  // the coordinator closed the connection
    auto line = "cluster: refused a connection from 127.0.0.1:" + std::to_string(client_port) + ": ";
    REQUIRE(coord.proc().wait_for(line, 10s));
    auto err = coord.err();
    auto reason = err.substr(err.find(line) + line.size());
    reason = reason.substr(0, reason.find('\n'));
    INFO("reason: " << reason);
    CHECK((reason.find("http request") != std::string::npos
           || reason.find("wrong version number") != std::string::npos));
  }
  evil->kill9();
  stranger->kill9();

  // A job after all that: done by the coordinator and w1, which stayed joined throughout.
  write_file(t / "c.ini", coordinator_config(t, 1, job_a + "[job b]\nsource = ./b\ndest = ./lb\ninterval = 0\n"));
  coord.proc().signal(SIGHUP);
  {
    INFO(logs(coord, {{"w1", w1.get()}}));
    REQUIRE(coord.wait_runs("b", 1));
  }
  INFO(logs(coord, {{"w1", w1.get()}}));
  CHECK(coord.job("b")["last"]["status"] == "completed");
  test_db db("sqlite", t);
  check_once_each(db, 2, paths.size());
  CHECK(db.num("SELECT count(*) FROM file_results WHERE node = 'evil'") == 0);
  auto by_node = rows_by_node(db, 2);
  CHECK(by_node["w1"] > 0);
  CHECK(by_node["w1"] + by_node["coord"] == static_cast<long>(paths.size()));
  check_library(t / "b", t / "lb", paths);
  CHECK_FALSE(coord.proc().said("cluster: node evil"));
  CHECK_FALSE(coord.proc().said("cluster: node w1 left"));
  CHECK(occurrences(w1->err(), "joined the coordinator at") == 1);
  CHECK(coord.metric_value("mediasync_cluster_nodes") == 1);
  CHECK(w1->stop() == 0);
  CHECK(coord.stop() == 0);
}

TEST_CASE("path-map: a worker node sees the media under another path", "[e2e][cluster]") {
  temp_dir tmp;
  // Absolute, canonical paths: the coordinator resolves the source with realpath.
  const std::string root = fs::canonical(tmp.path()).string();
  make_certs(root + "/certs", {"coord", "w1"});
  auto paths = make_nested_tree(root + "/src", 400, 40);
  fs::create_directory_symlink(root, root + "/view");  // root/view/src is root/src
  write_file(root + "/c.ini",
             coordinator_config(tmp, 1, "[job m]\nsource = " + root + "/src\ndest = " + root
                                          + "/lib\ninterval = 0\n"));
  coordinator coord(tmp, "c.ini");
  auto w1 = start_worker(tmp, coord, "w1", 3, {"--path-map", root + "=" + root + "/view"});
  coord.wait_http();
  {
    INFO(logs(coord, {{"w1", w1.get()}}));
    REQUIRE(coord.wait_runs("m", 1));
  }
  INFO(logs(coord, {{"w1", w1.get()}}));
  CHECK(coord.job("m")["last"]["status"] == "completed");
  test_db db("sqlite", tmp);
  check_once_each(db, 1, paths.size());
  auto by_node = rows_by_node(db, 1);
  CHECK(by_node["w1"] > 0);
  CHECK(by_node["w1"] + by_node["coord"] == static_cast<long>(paths.size()));
  check_counters(db, 1);
  check_library(root + "/src", root + "/lib", paths);
  CHECK_FALSE(coord.proc().said("cannot see"));
  CHECK(w1->stop() == 0);
  CHECK(coord.stop() == 0);
}

TEST_CASE("path-map to a folder that does not exist: the node's tasks go back, the job "
          "completes on the coordinator",
          "[e2e][cluster]") {
  temp_dir tmp;
  const std::string root = fs::canonical(tmp.path()).string();
  make_certs(root + "/certs", {"coord", "w1"});
  auto paths = make_nested_tree(root + "/src", 300, 60);
  write_file(root + "/c.ini",
             coordinator_config(tmp, 1, "[job m]\nsource = " + root + "/src\ndest = " + root
                                          + "/lib\ninterval = 0\n"));
  coordinator coord(tmp, "c.ini");
  auto w1 = start_worker(tmp, coord, "w1", 2, {"--path-map", root + "=" + root + "/nowhere"});
  coord.wait_http();
  {
    INFO(logs(coord, {{"w1", w1.get()}}));
    REQUIRE(coord.wait_runs("m", 1));
  }
  INFO(logs(coord, {{"w1", w1.get()}}));
  auto last = coord.job("m")["last"];
  CHECK(last["status"] == "completed");
  CHECK(last["processed_files"] == paths.size());
  CHECK(last["failed_files"] == 0);
  test_db db("sqlite", tmp);
  check_once_each(db, 1, paths.size());
  auto by_node = rows_by_node(db, 1);
  CHECK(by_node.size() == 1);
  CHECK(by_node["coord"] == static_cast<long>(paths.size()));
  check_counters(db, 1);
  check_library(root + "/src", root + "/lib", paths);
  CHECK_THAT(coord.err(), Catch::Contains("node w1 cannot see '" + root + "/nowhere/src' (mapped from '"
                                          + root + "/src')"));
  CHECK_THAT(coord.err(), Catch::Contains("node w1 could not see the paths of 3 tasks in a row"));
  CHECK_FALSE(fs::exists(root + "/nowhere"));
  // The node stays joined (it may do the next job if its mounts are fixed).
  CHECK(coord.metric_value("mediasync_cluster_nodes") == 1);
  CHECK(w1->stop() == 0);
  CHECK(coord.stop() == 0);
}
