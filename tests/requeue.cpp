// In-process tests of the cluster's requeue logic: workers offered through the supervisor
// (as a worker node's are) that go away or cannot see the media hand their tasks back; no
// file is lost, none is done twice, none fails for it.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include <caf/all.hpp>

#include "actors/file_worker.hpp"
#include "actors/metrics.hpp"
#include "actors/supervisor.hpp"
#include "storage/store.hpp"
#include "test_util.hpp"

using namespace ms;
using namespace std::chrono_literals;

namespace {

struct cluster_env {
  test::temp_dir dir;
  std::string db_path = dir / "t.db";
  std::string src = dir / "src";
  std::string dst = dir / "dst";
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<std::string> paths;

  explicit cluster_env(std::size_t files) {
    paths = test::make_tree(src, files, 50, 4);
    std::filesystem::create_directories(dst);
    add_message_types(cfg);
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }

  job_spec spec() const {
    job_spec s;
    s.source_root = src;
    s.dest_root = dst;
    s.settings_json = "{}";
    s.window = 64;
    return s;
  }

  /// Rows of stage sync per path, and per node.
  std::map<std::string, int> rows_per_path(std::uint64_t job) {
    auto db = storage::open_store(db_path, storage::open_mode::read_only);
    std::map<std::string, int> out;
    std::vector<known_file> known(paths.size());
    db->lookup(job, src, paths, known);
    for (std::size_t i = 0; i < paths.size(); ++i)
      out[paths[i]] = known[i].has_result ? 1 : 0;
    return out;
  }
};

/// A sync-stage function that ingests for real and names its node.
ingest_function on_node(std::string node, std::function<void(const file_task&)> before = {}) {
  return [real = make_library_ingest(), node = std::move(node),
          before = std::move(before)](const file_task& t) {
    if (before)
      before(t);
    auto o = real(t);
    o.node = node;
    return o;
  };
}

job_result run(caf::scoped_actor& self, const supervisor_actor& sup, const job_spec& spec) {
  job_result res;
  self->request(sup, caf::infinite, run_atom::value, spec, caf::actor{})
    .receive([&](job_result& r) { res = r; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  return res;
}

} // namespace

TEST_CASE("a remote worker that goes away mid-task has its task requeued, not failed",
          "[cluster][requeue]") {
  cluster_env env(200);
  supervisor_settings ss;
  ss.workers = {1, 0, 0};
  ss.writer = writer_settings{10, 10ms};
  ss.node_name = "coord";
  // The local worker is slow, so the "remote" ones get most tasks.
  ss.make_work[0] = [] { return on_node("", [](const file_task&) { std::this_thread::sleep_for(2ms); }); };
  auto sup = spawn_supervisor(*env.sys, std::shared_ptr<storage::store>{storage::open_store(env.db_path)}, ss);
  caf::scoped_actor self{*env.sys};

  // Worker "doomed" of node n1 holds its 20th task until the test lets it die with it
  // (as when its node dies: the actor is gone, its task never answered).
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<int> doomed_calls{0};
  bool holding = false, released = false;
  std::string held_path;
  auto doomed = spawn_file_worker(*env.sys, on_node("n1", [&](const file_task& t) {
    if (++doomed_calls == 20) {
      std::unique_lock<std::mutex> g{mu};
      holding = true;
      held_path = t.path;
      cv.notify_all();
      cv.wait(g, [&] { return released; });
      throw std::runtime_error("node n1 lost");
    }
  }));
  auto steady = spawn_file_worker(*env.sys, on_node("n2"));
  self->send(sup, offer_atom::value, std::string{"n1"}, std::vector<file_worker_actor>{doomed},
             std::vector<file_worker_actor>{}, std::vector<file_worker_actor>{});
  self->send(sup, offer_atom::value, std::string{"n2"}, std::vector<file_worker_actor>{steady},
             std::vector<file_worker_actor>{}, std::vector<file_worker_actor>{});

  std::thread killer([&] {
    std::unique_lock<std::mutex> g{mu};
    cv.wait(g, [&] { return holding; });
    std::this_thread::sleep_for(50ms);  // others go on meanwhile
    released = true;
    cv.notify_all();
  });
  auto res = run(self, sup, env.spec());
  killer.join();
  CHECK(res.status == job_status::completed);
  CHECK(res.counters.processed_files == 200);
  CHECK(res.counters.failed_files == 0);
  auto reader = storage::open_store(env.db_path, storage::open_mode::read_only);
  auto counts = reader->count_rows(res.job_id);
  CHECK(counts.ok == 200);
  CHECK(counts.failed == 0);
  for (auto& [path, n] : env.rows_per_path(res.job_id))
    CHECK(n == 1);
  REQUIRE_FALSE(held_path.empty());
  CHECK(test::read_file(env.dst + "/" + held_path) == test::read_file(env.src + "/" + held_path));
  // The node is gone from the cluster.
  std::vector<cluster_node> nodes;
  self->request(sup, 5s, nodes_atom::value).receive([&](std::vector<cluster_node>& n) { nodes = n; },
                                                     [](caf::error&) {});
  REQUIRE(nodes.size() == 1);
  CHECK(nodes[0].name == "n2");
  self->send_exit(steady, caf::exit_reason::user_shutdown);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_CASE("a node that cannot see the media hands every task back and is dropped after three",
          "[cluster][requeue]") {
  cluster_env env(120);
  auto m = std::make_shared<metrics>();
  supervisor_settings ss;
  ss.workers = {2, 0, 0};
  ss.writer = writer_settings{10, 10ms};
  ss.node_name = "coord";
  ss.registry = m;
  auto sup = spawn_supervisor(*env.sys, std::shared_ptr<storage::store>{storage::open_store(env.db_path)}, ss);
  caf::scoped_actor self{*env.sys};
  std::atomic<int> blind_calls{0};
  std::vector<file_worker_actor> blind_pool;
  for (int i = 0; i < 3; ++i)
    blind_pool.push_back(spawn_file_worker(*env.sys, [&blind_calls](const file_task& t) {
      ++blind_calls;
      file_outcome o;
      o.job_id = t.job_id;
      o.path = t.path;
      o.status = file_status::failed;
      o.node = "blind";
      o.retry_elsewhere = true;
      o.error = "node blind cannot see '" + t.source_root + "'";
      return o;
    }));
  self->send(sup, offer_atom::value, std::string{"blind"}, blind_pool,
             std::vector<file_worker_actor>{}, std::vector<file_worker_actor>{});
  // The offer is taken before the job starts (same sender, same mailbox order).
  auto res = run(self, sup, env.spec());
  CHECK(res.status == job_status::completed);
  CHECK(res.counters.processed_files == 120);
  CHECK(res.counters.failed_files == 0);
  // Three tasks in a row came back, then no more went there (the three workers may each
  // have held one when the third came back).
  CHECK(blind_calls >= 3);
  CHECK(blind_calls <= 5);
  for (auto& [path, n] : env.rows_per_path(res.job_id))
    CHECK(n == 1);
  CHECK(m->value("mediasync_cluster_tasks_total", {{"node", "coord"}, {"stage", "sync"}}) == 120);
  CHECK(m->value("mediasync_cluster_tasks_total", {{"node", "blind"}, {"stage", "sync"}}) == 0);
  for (auto& w : blind_pool)
    self->send_exit(w, caf::exit_reason::user_shutdown);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_CASE("workers offered while a job runs join it, and rows name their node",
          "[cluster][requeue]") {
  cluster_env env(300);
  supervisor_settings ss;
  ss.workers = {1, 0, 0};
  ss.writer = writer_settings{10, 10ms};
  ss.node_name = "coord";
  ss.make_work[0] = [] { return on_node("", [](const file_task&) { std::this_thread::sleep_for(3ms); }); };
  auto sup = spawn_supervisor(*env.sys, std::shared_ptr<storage::store>{storage::open_store(env.db_path)}, ss);
  caf::scoped_actor self{*env.sys};
  std::atomic<int> remote_calls{0};
  auto late = spawn_file_worker(*env.sys, on_node("late", [&](const file_task&) { ++remote_calls; }));
  std::thread offer([&] {
    std::this_thread::sleep_for(100ms);  // the job is running by now (300 files x 3 ms)
    caf::anon_send(sup, offer_atom::value, std::string{"late"},
                   std::vector<file_worker_actor>{late}, std::vector<file_worker_actor>{},
                   std::vector<file_worker_actor>{});
  });
  auto res = run(self, sup, env.spec());
  offer.join();
  CHECK(res.status == job_status::completed);
  CHECK(res.counters.processed_files == 300);
  CHECK(remote_calls > 0);
  for (auto& [path, n] : env.rows_per_path(res.job_id))
    CHECK(n == 1);
  self->send_exit(late, caf::exit_reason::user_shutdown);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}
