// cluster_bench: per-task coordination overhead of file-workers in the same process
// (local) against file-workers of a worker node in another process (remote, TLS).
//
// Usage: cluster_bench [--local N] [--remote N] [--workers K,K...] [--runs R]
//                      [--warmup N] [--certs-script PATH]
//   --local N       tasks per timed run with local workers (default 200000)
//   --remote N      tasks per timed run with remote workers (default 50000)
//   --workers LIST  worker counts K to measure, comma-separated (default 1,8): K workers,
//                   K tasks outstanding, one per worker (as the sync-coordinator dispatches)
//   --runs R        rounds; each round runs every (K, local/remote) once, local and remote
//                   side by side in alternating order; medians are reported (default 3)
//   --warmup N      untimed tasks before the first round, per K and side (default 5000)
//   --certs-script  scripts/cluster-certs.sh (default: found next to this source file)
//
// Setup, as a coordinator node with [cluster] listen runs:
//   * certificates for two nodes ("bench-coord", "bench-node") are made with
//     scripts/cluster-certs.sh in a temp dir, which is removed at the end;
//   * the process forks before any actor system exists; the child is the worker node: its
//     own actor system (sharing scheduler, middleman + OpenSSL module through
//     ms::app::configure_cluster), max(K) detached file-workers (ms::spawn_file_worker);
//   * the parent is the coordinator node: one actor system configured the same way, a
//     small actor implementing ms::registry_actor published with caf::openssl::publish on
//     127.0.0.1 (ephemeral port, passed to the child through a pipe), and max(K) local
//     detached file-workers; the child joins it with caf::openssl::remote_actor, the
//     join request (reply: imaging_settings) and the offer of its workers (as
//     `mediasync worker` does);
//   * every worker's function is a no-op: it returns an ok file_outcome at once (the
//     remote one stamped with its node name, as a worker node does);
//   * a driver actor, detached like the sync-coordinator, keeps one `ingest` request per
//     worker outstanding with request(...).then(...) and sends the worker its next task
//     as soon as it replies, until N tasks are done. Tasks are file_task of the sync stage
//     with realistic strings: roots "/srv/media/incoming" and "/srv/library/photos", paths
//     of 60 bytes ("2025/2025-08-14 Lisbon trip/camera-a/100CANON/IMG_001234.JPG").
// Reported per (K, side): tasks/s (wall), us per task, and CPU us per task of the
// coordinator process (CLOCK_PROCESS_CPUTIME_ID) and of the worker-node process (from
// /proc, 10 ms ticks);
// then the ratio remote/local of the us per task, per K.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "actors/file_worker.hpp"
#include "actors/interfaces.hpp"
#include "actors/messages.hpp"
#include "app/cluster.hpp"
#include "app/options.hpp"
#include "bench/bench_common.hpp"

namespace {

using namespace ms::bench;

constexpr const char* coord_name = "bench-coord";
constexpr const char* node_name = "bench-node";

/// Set once forked: what fail() cleans up.
pid_t g_child = 0;
std::string g_certs;

/// Ends the benchmark at once: the worker node and the certificates go too.
[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "cluster_bench: %s\n", msg.c_str());
  if (g_child > 0)
    ::kill(g_child, SIGTERM);
  if (!g_certs.empty())
    std::filesystem::remove_all(g_certs);
  std::fflush(nullptr);
  ::_exit(1);
}

struct options {
  std::uint64_t local = 200000;
  std::uint64_t remote = 50000;
  std::vector<std::size_t> workers{1, 8};
  int runs = 3;
  std::uint64_t warmup = 5000;
  std::string certs_script;
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr,
               "cluster_bench: %s\nusage: cluster_bench [--local N] [--remote N] "
               "[--workers K,K...] [--runs R] [--warmup N] [--certs-script PATH]\n",
               msg.c_str());
  std::exit(2);
}

std::uint64_t parse_count(const std::string& opt, const std::string& v, bool zero_ok = false) {
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (errno != 0 || end == v.c_str() || *end != '\0' || (n == 0 && !zero_ok)
      || v.front() == '-')
    usage(opt + " needs a " + (zero_ok ? "non-negative" : "positive") + " integer, got '" + v
          + "'");
  return n;
}

options parse_args(int argc, char** argv) {
  options o;
  o.certs_script =
    (std::filesystem::path{__FILE__}.parent_path().parent_path() / "scripts/cluster-certs.sh")
      .string();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help")
      usage("per-task overhead of local vs remote (TLS) file-workers");
    if (i + 1 >= argc)
      usage(a + " needs a value");
    std::string v = argv[++i];
    if (a == "--local")
      o.local = parse_count(a, v);
    else if (a == "--remote")
      o.remote = parse_count(a, v);
    else if (a == "--runs")
      o.runs = static_cast<int>(parse_count(a, v));
    else if (a == "--warmup")
      o.warmup = parse_count(a, v, true);
    else if (a == "--certs-script")
      o.certs_script = v;
    else if (a == "--workers") {
      o.workers.clear();
      std::stringstream ss{v};
      for (std::string k; std::getline(ss, k, ',');)
        o.workers.push_back(parse_count(a, k));
      if (o.workers.empty())
        usage("--workers needs at least one count");
    } else
      usage("unknown option '" + a + "'");
  }
  return o;
}

/// The tasks the driver cycles through: sync-stage tasks with 60-byte paths.
std::vector<ms::file_task> make_tasks(std::size_t n) {
  std::vector<ms::file_task> out;
  char buf[128];
  for (std::size_t i = 0; i < n; ++i) {
    ms::file_task t;
    t.job_id = 7;
    t.stg = ms::stage::sync;
    t.source_root = "/srv/media/incoming";
    t.dest_root = "/srv/library/photos";
    std::snprintf(buf, sizeof buf, "2025/2025-08-14 Lisbon trip/camera-a/100CANON/IMG_%06zu.JPG",
                  i);
    t.path = buf;
    t.size = 4000000 + (i * 7919) % 4000000;
    t.mtime_ns = 1755000000000000000LL + static_cast<std::int64_t>(i) * 1000000;
    out.push_back(std::move(t));
  }
  return out;
}

/// The workers' function: an ok outcome at once (`node`: stamped as a worker node does).
ms::ingest_function noop_work(std::string node) {
  return [node = std::move(node)](const ms::file_task& t) {
    ms::file_outcome o;
    o.path = t.path;
    o.stg = t.stg;
    o.status = ms::file_status::ok;
    o.size = t.size;
    o.mtime_ns = t.mtime_ns;
    o.node = node;
    return o;
  };
}

ms::app::options tls_options(const std::string& dir, const char* node) {
  ms::app::options opt;
  opt.tls_ca = dir + "/ca.pem";
  opt.tls_cert = dir + "/" + node + ".pem";
  opt.tls_key = dir + "/" + node + ".key";
  return opt;
}

/// The configuration of a cluster node: as the engine (sharing scheduler) plus the
/// middleman and the OpenSSL module with this node's certificate.
void configure(caf::actor_system_config& cfg, const std::string& certs, const char* node) {
  ms::add_message_types(cfg);
  cfg.set("logger.verbosity", caf::atom("quiet"));
  cfg.set("scheduler.policy", caf::atom("sharing"));
  ms::app::configure_cluster(cfg, tls_options(certs, node));
}

// -- the worker node (child process) ---------------------------------------------------

int run_worker_node(const std::string& certs, int port_fd, std::size_t nworkers) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  std::uint16_t port = 0;
  if (::read(port_fd, &port, sizeof port) != static_cast<ssize_t>(sizeof port) || port == 0)
    return 1;  // the parent failed before publishing
  ::close(port_fd);
  caf::actor_system_config cfg;
  configure(cfg, certs, node_name);
  caf::actor_system sys{cfg};
  std::vector<ms::file_worker_actor> pool;
  {
    caf::scoped_actor self{sys};
    auto reg = caf::openssl::remote_actor<ms::registry_actor>(sys, "127.0.0.1", port);
    if (!reg) {
      std::fprintf(stderr, "cluster_bench (worker node): cannot join: %s\n",
                   sys.render(reg.error()).c_str());
      return 1;
    }
    bool joined = false;
    self->request(*reg, std::chrono::seconds(30), ms::join_atom::value, std::string{node_name})
      .receive([&](ms::imaging_settings&) { joined = true; },
               [&](caf::error& e) {
                 std::fprintf(stderr, "cluster_bench (worker node): join refused: %s\n",
                              sys.render(e).c_str());
               });
    if (!joined)
      return 1;
    for (std::size_t i = 0; i < nworkers; ++i)
      pool.push_back(ms::spawn_file_worker(sys, noop_work(node_name)));
    self->monitor(*reg);
    self->send(*reg, ms::offer_atom::value, std::string{node_name}, pool,
               std::vector<ms::file_worker_actor>{}, std::vector<ms::file_worker_actor>{});
    // Until the coordinator goes (the parent ends its actor system, or dies).
    self->receive([&](caf::down_msg&) {});
    for (auto& w : pool)
      self->send_exit(w, caf::exit_reason::user_shutdown);
  }
  pool.clear();
  return 0;
}

// -- the coordinator node (parent process) ---------------------------------------------

/// The published entry point: takes the join, forwards the offer to `main`.
ms::registry_actor::behavior_type bench_registry(ms::registry_actor::pointer,
                                                 caf::actor main) {
  return {
    [](ms::join_atom, const std::string&) { return ms::imaging_settings{}; },
    [main](ms::offer_atom, std::string& node, std::vector<ms::file_worker_actor>& sync,
        std::vector<ms::file_worker_actor>& processing,
        std::vector<ms::file_worker_actor>& watermark) {
      caf::anon_send(main, ms::offer_atom::value, std::move(node), std::move(sync),
                 std::move(processing), std::move(watermark));
    },
  };
}

struct driver_state {
  static inline const char* name = "bench_driver";
  std::shared_ptr<const std::vector<ms::file_task>> tasks;
  std::uint64_t total = 0;
  std::uint64_t issued = 0;
  std::uint64_t done = 0;
  std::uint64_t not_ok = 0;
  clock_type::time_point t0;
  caf::actor report_to;
};

using driver_ptr = caf::stateful_actor<driver_state>*;

/// Gives `w` its next task; on the reply, the next one (as the coordinator's dispatch).
void dispatch(driver_ptr self, ms::file_worker_actor w) {
  auto& st = self->state;
  const auto& task = (*st.tasks)[st.issued++ % st.tasks->size()];
  self->request(w, caf::infinite, ms::ingest_atom::value, task)
    .then(
      [=](ms::file_outcome& out) {
        auto& st = self->state;
        if (out.status != ms::file_status::ok || out.path.empty())
          ++st.not_ok;
        if (++st.done == st.total) {
          self->send(st.report_to, ms::done_atom::value, seconds_since(st.t0), st.not_ok);
          self->quit();
          return;
        }
        if (st.issued < st.total)
          dispatch(self, w);
      },
      [=](caf::error& e) {
        std::fprintf(stderr, "cluster_bench: ingest request failed: %s\n",
                     self->system().render(e).c_str());
        self->send(self->state.report_to, ms::done_atom::value, -1.0, self->state.total);
        self->quit();
      });
}

caf::behavior driver(driver_ptr self, std::vector<ms::file_worker_actor> workers,
                     std::uint64_t total, std::shared_ptr<const std::vector<ms::file_task>> tasks,
                     caf::actor report_to) {
  auto& st = self->state;
  st.tasks = std::move(tasks);
  st.total = total;
  st.report_to = std::move(report_to);
  st.t0 = clock_type::now();
  for (auto& w : workers)
    if (st.issued < st.total)
      dispatch(self, w);
  return {[](ms::stop_atom) {}};
}

/// utime + stime of process `pid` in seconds (10 ms resolution).
double proc_cpu_seconds(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string s{std::istreambuf_iterator<char>{in}, {}};
  auto rp = s.rfind(')');
  if (rp == std::string::npos)
    return 0;
  std::istringstream rest{s.substr(rp + 2)};
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Fields after the name: state(3) ... utime(14) stime(15).
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14)
      utime = std::stoull(field);
    if (i == 15)
      stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct result {
  double wall = 0;       ///< seconds
  double cpu_coord = 0;  ///< seconds of the coordinator process
  double cpu_node = 0;   ///< seconds of the worker-node process
};

result run_once(caf::actor_system& sys, caf::scoped_actor& self,
                const std::vector<ms::file_worker_actor>& workers, std::uint64_t n,
                const std::shared_ptr<const std::vector<ms::file_task>>& tasks, pid_t child) {
  double c0 = cpu_seconds(), n0 = proc_cpu_seconds(child);
  sys.spawn<caf::detached>(driver, workers, n, tasks, caf::actor{self});
  result r;
  std::uint64_t not_ok = 0;
  self->receive([&](ms::done_atom, double secs, std::uint64_t bad) {
    r.wall = secs;
    not_ok = bad;
  });
  r.cpu_coord = cpu_seconds() - c0;
  r.cpu_node = proc_cpu_seconds(child) - n0;
  if (r.wall < 0 || not_ok != 0)
    fail("a run failed (" + std::to_string(not_ok) + " tasks not ok)");
  return r;
}

std::string make_certs(const std::string& script) {
  char tmpl[] = "/tmp/cluster_bench.XXXXXX";
  if (!::mkdtemp(tmpl)) {
    std::perror("cluster_bench: mkdtemp");
    std::exit(1);
  }
  std::string dir = tmpl;
  std::string cmd = "bash '" + script + "' '" + dir + "' " + coord_name + " " + node_name
                    + " >/dev/null";
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "cluster_bench: '%s' failed\n", cmd.c_str());
    std::filesystem::remove_all(dir);
    std::exit(1);
  }
  return dir;
}

std::string loadavg() {
  std::ifstream in{"/proc/loadavg"};
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

} // namespace

int main(int argc, char** argv) {
  options o = parse_args(argc, argv);
  std::size_t max_k = *std::max_element(o.workers.begin(), o.workers.end());
  std::string certs = make_certs(o.certs_script);
  g_certs = certs;
  int pfd[2];
  if (::pipe(pfd) != 0) {
    std::perror("cluster_bench: pipe");
    return 1;
  }
  // Fork before any actor system (or any thread) exists.
  pid_t child = ::fork();
  if (child < 0) {
    std::perror("cluster_bench: fork");
    return 1;
  }
  if (child == 0) {
    g_certs.clear();  // the parent's to remove
    ::close(pfd[1]);
    int rc = run_worker_node(certs, pfd[0], max_k);
    std::fflush(nullptr);
    ::_exit(rc);
  }
  g_child = child;
  ::close(pfd[0]);
  int rc = 0;
  {
    caf::actor_system_config cfg;
    configure(cfg, certs, coord_name);
    caf::actor_system sys{cfg};
    caf::scoped_actor self{sys};
    auto reg = sys.spawn(bench_registry, caf::actor{self});
    auto port = caf::openssl::publish(reg, 0, "127.0.0.1", true);
    if (!port)
      fail("publish: " + sys.render(port.error()));
    std::uint16_t p = *port;
    if (::write(pfd[1], &p, sizeof p) != static_cast<ssize_t>(sizeof p))
      fail(std::string{"write to the worker node: "} + std::strerror(errno));
    ::close(pfd[1]);
    std::vector<ms::file_worker_actor> remote, local;
    bool offered = false;
    self->receive(
      [&](ms::offer_atom, const std::string&, std::vector<ms::file_worker_actor>& sync,
          std::vector<ms::file_worker_actor>&, std::vector<ms::file_worker_actor>&) {
        remote = std::move(sync);
        offered = true;
      },
      caf::after(std::chrono::seconds(30)) >> [] {});
    if (!offered || remote.size() < max_k)
      fail("the worker node did not offer " + std::to_string(max_k) + " workers in time");
    for (std::size_t i = 0; i < max_k; ++i)
      local.push_back(ms::spawn_file_worker(sys, noop_work("")));
    auto tasks = std::make_shared<const std::vector<ms::file_task>>(make_tasks(4096));
    auto first = [](const std::vector<ms::file_worker_actor>& v, std::size_t k) {
      return std::vector<ms::file_worker_actor>(v.begin(), v.begin() + static_cast<long>(k));
    };
    std::printf("cluster_bench: local %llu / remote %llu tasks per run, K = ",
                static_cast<unsigned long long>(o.local),
                static_cast<unsigned long long>(o.remote));
    for (auto k : o.workers)
      std::printf("%zu ", k);
    std::printf("(one task outstanding per worker), %d rounds, worker node pid %d on TLS "
                "127.0.0.1:%u; load average %s\n",
                o.runs, static_cast<int>(child), p, loadavg().c_str());
    std::fflush(stdout);
    for (auto k : o.workers)
      if (o.warmup > 0) {
        run_once(sys, self, first(local, k), o.warmup, tasks, child);
        run_once(sys, self, first(remote, k), o.warmup, tasks, child);
      }
    // (K, remote?) -> results of each round
    std::map<std::pair<std::size_t, bool>, std::vector<result>> res;
    for (int r = 0; r < o.runs; ++r)
      for (auto k : o.workers)
        for (int side = 0; side < 2; ++side) {
          bool is_remote = (side + r) % 2 == 1;  // rounds alternate which side goes first
          auto n = is_remote ? o.remote : o.local;
          auto x = run_once(sys, self, first(is_remote ? remote : local, k), n, tasks, child);
          res[{k, is_remote}].push_back(x);
          auto dn = static_cast<double>(n);
          std::printf("round %d K=%zu %-6s %9.0f tasks/s %7.2f us/task  cpu us/task: "
                      "coordinator %6.2f, worker node %6.2f\n",
                      r + 1, k, is_remote ? "remote" : "local", dn / x.wall, 1e6 * x.wall / dn,
                      1e6 * x.cpu_coord / dn, 1e6 * x.cpu_node / dn);
          std::fflush(stdout);
        }
    std::printf("load average now: %s\n\n", loadavg().c_str());
    std::printf("| K (workers = tasks outstanding) | side | tasks/run | tasks/s | us/task | "
                "CPU us/task coordinator | CPU us/task worker node |\n");
    std::printf("|---:|---|---:|---:|---:|---:|---:|\n");
    std::map<std::size_t, std::pair<double, double>> per_task;  // K -> (local, remote) us
    for (auto k : o.workers)
      for (bool is_remote : {false, true}) {
        auto& v = res[{k, is_remote}];
        double n = static_cast<double>(is_remote ? o.remote : o.local);
        std::vector<double> us, cc, cn;
        for (auto& x : v) {
          us.push_back(1e6 * x.wall / n);
          cc.push_back(1e6 * x.cpu_coord / n);
          cn.push_back(1e6 * x.cpu_node / n);
        }
        double m = median(us);
        (is_remote ? per_task[k].second : per_task[k].first) = m;
        std::printf("| %zu | %s | %.0f | %.0f | %.2f | %.2f | %.2f |\n", k,
                    is_remote ? "remote (TLS)" : "local", n, 1e6 / m, m, median(cc), median(cn));
      }
    std::printf("\n");
    for (auto& [k, lr] : per_task)
      std::printf("K=%zu: remote/local us per task %.1fx (medians of %d)\n", k,
                  lr.second / lr.first, o.runs);
    for (auto& w : local)
      self->send_exit(w, caf::exit_reason::user_shutdown);
    self->send_exit(reg, caf::exit_reason::user_shutdown);
    local.clear();
    remote.clear();
  }
  // The actor system is gone: the link closed, the worker node sees its coordinator go.
  int status = 0;
  if (::waitpid(child, &status, 0) == child && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    std::fprintf(stderr, "cluster_bench: the worker node ended badly (status %d)\n", status);
    rc = 1;
  }
  std::filesystem::remove_all(certs);
  return rc;
}
