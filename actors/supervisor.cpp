#include "actors/supervisor.hpp"

#include <deque>
#include <map>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/metrics.hpp"
#include "actors/sync_coordinator.hpp"

namespace ms {
namespace {

struct running_job {
  sync_coordinator_actor coordinator;
  caf::typed_response_promise<job_result> promise;
};

struct supervisor_state {
  static inline const char* name = "supervisor";
  supervisor_settings settings;
  progress_writer_actor writer;
  worker_pools pools;  ///< indexed by stage
  std::map<std::uint64_t, running_job> jobs;
  std::deque<std::chrono::steady_clock::time_point> restarts;
  bool stopping = false;
  /// Workers of remote nodes (joined through the registry): their node's name.
  std::map<caf::actor_addr, std::string> remote;
  std::map<std::string, cluster_node> nodes;

  ~supervisor_state() {
    // Shutdown order: workers first, the writer last (it flushed when its jobs finished).
    // Remote workers belong to their node: it ends them when the link goes.
    for (auto& pool : pools)
      for (auto& w : pool)
        if (!remote.count(w.address()))
          caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    if (writer)
      caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
  }
};

using sup_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

file_worker_actor spawn_worker(sup_ptr self, stage s) {
  auto& st = self->state;
  auto& make = st.settings.make_work[static_cast<std::size_t>(s)];
  ingest_function fn;
  if (make)
    fn = make();
  else if (s == stage::processing)
    fn = make_processing_work(st.settings.imaging, st.settings.vips_threads);
  else if (s == stage::watermark)
    fn = make_watermark_work(st.settings.imaging, st.settings.vips_threads);
  auto w = spawn_file_worker(self->system(), std::move(fn));
  self->monitor(w);
  return w;
}

/// Ends every running job with `reason` (the writer is gone: nothing can be committed).
void fail_all(sup_ptr self, const std::string& reason) {
  for (auto& [id, job] : self->state.jobs) {
    job_result res;
    res.job_id = id;
    res.status = job_status::failed;
    res.error = reason;
    job.promise.deliver(std::move(res));
    self->send_exit(job.coordinator, caf::exit_reason::user_shutdown);
  }
  self->state.jobs.clear();
}

/// Publishes the cluster's size (nodes, workers per node and stage).
void show_nodes(supervisor_state& st) {
  if (!st.settings.registry)
    return;
  st.settings.registry->set("mediasync_cluster_nodes", {}, static_cast<double>(st.nodes.size()));
  for (auto& [name, n] : st.nodes)
    for (std::size_t i = 0; i < stage_count; ++i)
      st.settings.registry->set("mediasync_cluster_workers",
                                {{"node", name}, {"stage", std::string{to_string(static_cast<stage>(i))}}},
                                n.workers[i]);
}

/// A remote worker went down (its node left, crashed, or the link broke): its task goes
/// back to the queue; no restart (its node offers new workers when it joins again).
void on_remote_down(sup_ptr self, const caf::actor_addr& addr, const std::string& reason) {
  auto& st = self->state;
  auto node = st.remote[addr];
  st.remote.erase(addr);
  for (std::size_t i = 0; i < st.pools.size(); ++i) {
    auto& pool = st.pools[i];
    auto w = std::find_if(pool.begin(), pool.end(),
                          [&](const file_worker_actor& x) { return x.address() == addr; });
    if (w == pool.end())
      continue;
    pool.erase(w);
    if (auto n = st.nodes.find(node); n != st.nodes.end() && n->second.workers[i] > 0)
      --n->second.workers[i];
  }
  for (auto& [id, job] : st.jobs)
    self->send(job.coordinator, leave_atom::value, addr, "node " + node + ": " + reason);
  if (auto n = st.nodes.find(node); n != st.nodes.end()) {
    auto& w = n->second.workers;
    if (w[0] + w[1] + w[2] == 0) {
      spdlog::warn("cluster: node {} left ({}); its tasks in flight go to other workers", node,
                   reason);
      if (st.settings.registry)
        for (std::size_t i = 0; i < stage_count; ++i)
          st.settings.registry->remove("mediasync_cluster_workers",
                                       {{"node", node}, {"stage", std::string{to_string(static_cast<stage>(i))}}});
      st.nodes.erase(n);
    }
  }
  show_nodes(st);
}

void on_down(sup_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  auto reason = self->system().render(dm.reason);
  if (st.remote.count(dm.source)) {
    on_remote_down(self, dm.source, reason);
    return;
  }
  if (dm.source == st.writer.address()) {
    spdlog::critical("progress-writer terminated: {}", reason);
    fail_all(self, "progress-writer terminated: " + reason);
    return;
  }
  for (std::size_t i = 0; i < st.pools.size(); ++i) {
    auto& pool = st.pools[i];
    auto w = std::find_if(pool.begin(), pool.end(),
                          [&](const file_worker_actor& x) { return x.address() == dm.source; });
    if (w == pool.end())
      continue;
    auto s = static_cast<stage>(i);
    auto now = std::chrono::steady_clock::now();
    st.restarts.push_back(now);
    while (!st.restarts.empty() && now - st.restarts.front() > st.settings.restart_period)
      st.restarts.pop_front();
    spdlog::warn("{} worker died ({}); restarting it", to_string(s), reason);
    file_worker_actor replacement;
    if (st.restarts.size() <= st.settings.max_restarts) {
      replacement = spawn_worker(self, s);
      *w = replacement;
    } else {
      spdlog::error("workers died {} times within {} s: not restarting", st.restarts.size(),
                    st.settings.restart_period.count());
      pool.erase(w);
    }
    for (auto& [id, job] : st.jobs)
      self->send(job.coordinator, worker_atom::value, dm.source, reason, replacement, s);
    if (pool.empty())
      for (auto& [id, job] : st.jobs)
        self->send(job.coordinator, fatal_atom::value,
                   "every " + std::string{to_string(s)} + " worker keeps crashing", false);
    return;
  }
  for (auto it = st.jobs.begin(); it != st.jobs.end(); ++it) {
    if (it->second.coordinator.address() == dm.source) {
      if (dm.reason) {  // a coordinator that ended normally has already reported done
        job_result res;
        res.job_id = it->first;
        res.status = job_status::failed;
        res.error = "sync-coordinator terminated: " + reason;
        it->second.promise.deliver(std::move(res));
      }
      st.jobs.erase(it);
      return;
    }
  }
}

void start_job(sup_ptr self, job_spec spec, caf::actor listener,
               caf::typed_response_promise<job_result> rp) {
  auto& st = self->state;
  auto id = spec.job_id;
  // A stage without workers cannot run: its files would wait forever.
  spec.thumbnails = spec.thumbnails && !st.pools[static_cast<std::size_t>(stage::processing)].empty();
  spec.watermark = spec.watermark && !st.pools[static_cast<std::size_t>(stage::watermark)].empty();
  auto c = spawn_sync_coordinator(self->system(), std::move(spec), st.writer, st.pools,
                                  caf::actor_cast<supervisor_actor>(self), std::move(listener),
                                  st.settings.registry, st.settings.node_name);
  self->monitor(c);
  st.jobs[id] = running_job{c, std::move(rp)};
  if (st.stopping)
    self->send(c, stop_atom::value);
}

supervisor_actor::behavior_type supervisor(sup_ptr self, std::shared_ptr<storage::store> db,
                                           supervisor_settings settings) {
  auto& st = self->state;
  st.settings = std::move(settings);
  if (st.settings.registry) {
    describe_queue_metrics(*st.settings.registry);
    st.settings.registry->describe("mediasync_cluster_nodes", metrics::kind::gauge,
                                   "Worker nodes joined to this coordinator");
    st.settings.registry->describe("mediasync_cluster_workers", metrics::kind::gauge,
                                   "Workers a joined node offers, by node and stage");
    st.settings.registry->set("mediasync_cluster_nodes", {}, 0);
    st.settings.writer.metrics = st.settings.registry;
  }
  st.writer = spawn_progress_writer(self->system(), std::move(db), st.settings.writer);
  self->monitor(st.writer);
  st.settings.workers[0] = std::max<std::size_t>(1, st.settings.workers[0]);
  st.pools.resize(stage_count);
  for (std::size_t i = 0; i < stage_count; ++i)
    for (std::size_t n = 0; n < st.settings.workers[i]; ++n)
      st.pools[i].push_back(spawn_worker(self, static_cast<stage>(i)));
  self->set_down_handler([=](const caf::down_msg& dm) { on_down(self, dm); });
  return {
    [=](run_atom, job_spec& spec, caf::actor& listener) -> caf::result<job_result> {
      auto rp = self->make_response_promise<job_result>();
      if (spec.job_id != 0) {
        start_job(self, std::move(spec), std::move(listener), rp);
        return rp;
      }
      self->request(self->state.writer, caf::infinite, create_atom::value, spec.source_root,
                    spec.dest_root, spec.settings_json)
        .then(
          [=](std::uint64_t id) mutable {
            spec.job_id = id;
            start_job(self, std::move(spec), std::move(listener), rp);
          },
          [=](caf::error& err) mutable {
            job_result res;
            res.status = job_status::failed;
            res.error = "cannot create job: " + error_text(self->system(), err);
            rp.deliver(std::move(res));
          });
      return rp;
    },
    [=](stop_atom) {
      self->state.stopping = true;
      for (auto& [id, job] : self->state.jobs)
        self->send(job.coordinator, stop_atom::value);
    },
    [=](offer_atom, const std::string& node, std::vector<file_worker_actor>& sync,
        std::vector<file_worker_actor>& processing, std::vector<file_worker_actor>& watermark) {
      auto& st = self->state;
      auto& n = st.nodes[node];
      n.name = node;
      std::vector<file_worker_actor>* offered[] = {&sync, &processing, &watermark};
      for (std::size_t i = 0; i < stage_count; ++i)
        for (auto& w : *offered[i]) {
          if (!w || st.remote.count(w.address()))
            continue;
          self->monitor(w);
          st.remote[w.address()] = node;
          ++n.workers[i];
          st.pools[i].push_back(w);
          for (auto& [id, job] : st.jobs)
            self->send(job.coordinator, join_atom::value, w, static_cast<stage>(i));
        }
      spdlog::info("cluster: node {} joined with {} sync, {} processing, {} watermark workers",
                   node, sync.size(), processing.size(), watermark.size());
      show_nodes(st);
    },
    [=](nodes_atom) {
      std::vector<cluster_node> out;
      for (auto& [name, n] : self->state.nodes)
        out.push_back(n);
      return out;
    },
    [=](done_atom, job_result& res) {
      auto& st = self->state;
      auto it = st.jobs.find(res.job_id);
      if (it == st.jobs.end())
        return;
      it->second.promise.deliver(std::move(res));
      st.jobs.erase(it);
    },
  };
}

} // namespace

supervisor_actor spawn_supervisor(caf::actor_system& sys, std::shared_ptr<storage::store> db,
                                  supervisor_settings settings) {
  return sys.spawn(supervisor, std::move(db), std::move(settings));
}

} // namespace ms
