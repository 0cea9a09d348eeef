#include "app/node.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <httplib.h>

#include "actors/messages.hpp"
#include "actors/metrics.hpp"
#include "app/commands.hpp"
#include "app/config.hpp"
#include "app/engine.hpp"
#include "app/watcher.hpp"

namespace ms::app {
namespace {

using hup_atom = caf::atom_constant<caf::atom("hup")>;
using term_atom = caf::atom_constant<caf::atom("term")>;
using watch_atom = caf::atom_constant<caf::atom("watch")>;

using clock = std::chrono::steady_clock;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
    .count();
}

std::string iso_now() {
  auto t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// A job of the config as the node runs it: checked, with its spec template.
struct job_plan {
  options opt;
  job_spec base;            ///< a new job of the whole tree (job_id 0, no paths)
  std::string fingerprint;  ///< what, when changed, makes the job "changed" on reload
};

/// Checks every job of `cfg` as `run` would, before anything of it is used.
std::map<std::string, job_plan> plan_jobs(const config_file& cfg,
                                          const std::vector<assignment>& cli) {
  std::map<std::string, job_plan> out;
  for (auto* j : select_jobs(cfg, {})) {
    job_plan p;
    p.opt = effective_options(cfg, *j, cli);
    p.base = make_job_spec(p.opt);
    p.fingerprint = p.base.settings_json + "|" + std::to_string(p.opt.interval.count()) + "|"
                    + std::to_string(p.opt.watch_source) + "|" + p.base.source_root + "|"
                    + p.base.dest_root + "|" + std::to_string(p.opt.debounce.count()) + "|"
                    + std::to_string(p.opt.settle.count());
    out.emplace(j->name, std::move(p));
  }
  return out;
}

/// Settings the running engine was built with: a reload cannot change them.
std::string engine_fingerprint(const options& o) {
  nlohmann::json j = {o.db, o.db_reconnect_limit.count(), o.batch_size, o.flush_interval.count(),
                      o.workers, o.processing_workers, o.watermark_workers,
                      o.thumbnail_sizes, o.thumbnail_format, o.quality, o.max_pixels,
                      o.watermark_text, o.watermark_image, o.watermark_position,
                      o.watermark_margin, o.watermark_opacity, o.http};
  return j.dump();
}

struct node_job {
  std::string name;
  job_plan plan;
  std::unique_ptr<tree_watcher> watcher;
  clock::time_point next_due;
  std::set<std::string> pending_paths;  ///< written files waiting for the next watch run
  bool pending_rescan = false;          ///< the watcher lost events: a full run is due
  bool removed = false;                 ///< gone from the config: dropped after its run
  // the run in progress
  std::optional<std::uint64_t> token;
  std::string trigger;
  job_progress current;
  // history
  std::uint64_t runs = 0;
  std::optional<job_result> last;
  std::string last_trigger;
  std::string last_finished_at;
};

class node {
public:
  node(const config_file& cfg, std::vector<assignment> cli, options global,
       std::shared_ptr<metrics> m, engine& e, caf::scoped_actor& self)
    : config_path_(cfg.path), cli_(std::move(cli)), global_(std::move(global)),
      engine_fp_(engine_fingerprint(global_)), m_(std::move(m)), engine_(e), self_(self) {
    m_->describe("mediasync_job_runs_total", metrics::kind::counter,
                 "Runs of a configured job that ended, by final status");
    m_->describe("mediasync_job_running", metrics::kind::gauge,
                 "1 while a run of the configured job is in progress");
    m_->describe("mediasync_job_last_finish_timestamp_seconds", metrics::kind::gauge,
                 "Unix time the last run of the job ended");
    m_->describe("mediasync_job_files", metrics::kind::gauge,
                 "Files of the job's current (or last) run, committed, by state");
    m_->describe("mediasync_watch_pending_files", metrics::kind::gauge,
                 "Written files a watched job has not synced yet");
    m_->describe("mediasync_watched_directories", metrics::kind::gauge,
                 "Directories a watched job's inotify watcher follows");
    m_->describe("mediasync_config_reloads_total", metrics::kind::counter,
                 "SIGHUP config reloads, by result (applied or rejected)");
    m_->describe("mediasync_node_start_time_seconds", metrics::kind::gauge,
                 "Unix time the node started");
    m_->set("mediasync_node_start_time_seconds", {}, unix_now());
    m_->add("mediasync_config_reloads_total", {{"result", "applied"}}, 0);
    m_->add("mediasync_config_reloads_total", {{"result", "rejected"}}, 0);
    started_at_ = iso_now();
    apply_plans(plan_jobs(cfg, cli_));
  }

  ~node() {
    for (auto& [name, j] : jobs_)
      j->watcher.reset();  // no more events to a mailbox that goes away
  }

  /// Serves until stopped; returns the exit code.
  int serve() {
    publish();
    while (!(stopping_ && running() == 0)) {
      if (!stopping_)
        schedule();
      auto wait = std::chrono::milliseconds(1000);
      for (auto& [name, j] : jobs_)
        if (!j->token && !j->removed)
          wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::max(j->next_due - clock::now(), clock::duration::zero()))
                                  + std::chrono::milliseconds(1));
      self_->receive(
        [&](progress_atom, std::uint64_t token, const job_progress& p) {
          if (auto* j = by_token(token))
            j->current = p;
        },
        [&](done_atom, std::uint64_t token, job_result& r) { finished(token, std::move(r)); },
        [&](watch_atom, std::string& name, std::vector<std::string>& paths, bool rescan) {
          auto it = jobs_.find(name);
          if (it == jobs_.end() || it->second->removed)
            return;
          auto& j = *it->second;
          j.pending_paths.insert(std::make_move_iterator(paths.begin()),
                                 std::make_move_iterator(paths.end()));
          if (rescan) {
            spdlog::warn("job '{}': the watcher lost track of changes; a full scan follows", name);
            j.pending_rescan = true;
          }
        },
        [&](hup_atom) { reload(); },
        [&](term_atom) { stop(); },
        caf::after(wait) >> [] {});
      publish();
    }
    return exit_code::ok;
  }

  std::string status() const {
    std::lock_guard<std::mutex> g{status_mu_};
    return status_json_;
  }

private:
  std::size_t running() const {
    std::size_t n = 0;
    for (auto& [name, j] : jobs_)
      n += j->token ? 1 : 0;
    return n;
  }

  node_job* by_token(std::uint64_t token) {
    for (auto& [name, j] : jobs_)
      if (j->token == token)
        return j.get();
    return nullptr;
  }

  void start_watcher(node_job& j) {
    j.watcher.reset();
    if (!j.plan.opt.watch_source)
      return;
    watch_settings ws;
    ws.debounce = j.plan.opt.debounce;
    ws.settle = j.plan.opt.settle;
    caf::actor me = self_;
    auto name = j.name;
    j.watcher = std::make_unique<tree_watcher>(
      j.plan.base.source_root, ws, [me, name](std::vector<std::string> paths, bool rescan) {
        caf::anon_send(me, watch_atom::value, name, std::move(paths), rescan);
      });
    spdlog::info("job '{}': watching {} ({} directories)", j.name, j.plan.base.source_root,
                 j.watcher->watched_directories());
  }

  /// Makes the node run `plans`: new jobs start (due now), changed ones take their new
  /// settings (due now; a run in progress finishes first), removed ones stop after the
  /// run in progress. Watchers are built first, so a failing one changes nothing.
  void apply_plans(std::map<std::string, job_plan> plans) {
    std::map<std::string, std::unique_ptr<node_job>> fresh;
    for (auto& [name, plan] : plans) {
      auto it = jobs_.find(name);
      if (it != jobs_.end() && !it->second->removed && it->second->plan.fingerprint == plan.fingerprint)
        continue;
      auto j = std::make_unique<node_job>();
      j->name = name;
      j->plan = std::move(plan);
      j->next_due = clock::now();
      start_watcher(*j);  // throws: nothing applied yet
      fresh.emplace(name, std::move(j));
    }
    for (auto& [name, j] : jobs_)
      if (!plans.count(name) && !j->removed) {
        spdlog::info("job '{}': removed from the config{}", name,
                     j->token ? "; its run in progress finishes first" : "");
        j->removed = true;
        j->watcher.reset();
      }
    for (auto& [name, j] : fresh) {
      auto it = jobs_.find(name);
      if (it == jobs_.end()) {
        spdlog::info("job '{}': {} -> {}, every {} s{}", name, j->plan.base.source_root,
                     j->plan.base.dest_root, j->plan.opt.interval.count() / 1000,
                     j->plan.opt.watch_source ? ", watched" : "");
        jobs_.emplace(name, std::move(j));
        continue;
      }
      spdlog::info("job '{}': settings changed{}", name,
                   it->second->token ? "; applied after the run in progress" : "");
      // Keep the run in progress and the history; take the new plan and watcher.
      auto& old = *it->second;
      old.plan = std::move(j->plan);
      old.watcher = std::move(j->watcher);
      old.removed = false;
      old.next_due = clock::now();
    }
    std::erase_if(jobs_, [](auto& kv) { return kv.second->removed && !kv.second->token; });
  }

  void launch(node_job& j, std::vector<std::string> paths, std::string trigger) {
    auto spec = j.plan.base;
    spec.paths = std::move(paths);
    auto token = next_token_++;
    j.token = token;
    j.trigger = std::move(trigger);
    j.current = job_progress{};
    m_->set("mediasync_job_running", {{"job", j.name}}, 1);
    spdlog::info("job '{}': run started ({}{})", j.name, j.trigger,
                 spec.paths.empty() ? "" : ", " + std::to_string(spec.paths.size()) + " file(s)");
    engine_.start(std::move(spec), self_, token);
  }

  void schedule() {
    auto now = clock::now();
    for (auto& [name, jp] : jobs_) {
      auto& j = *jp;
      if (j.token || j.removed)
        continue;
      if (now >= j.next_due || j.pending_rescan) {
        j.next_due = j.plan.opt.interval.count() > 0 ? now + j.plan.opt.interval
                                                     : clock::time_point::max();
        j.pending_paths.clear();  // the full scan sees them
        launch(j, {}, j.pending_rescan ? "rescan" : j.runs == 0 ? "start" : "schedule");
        j.pending_rescan = false;
      } else if (!j.pending_paths.empty()) {
        std::vector<std::string> paths(j.pending_paths.begin(), j.pending_paths.end());
        j.pending_paths.clear();
        launch(j, std::move(paths), "watch");
      }
    }
  }

  void finished(std::uint64_t token, job_result r) {
    auto* j = by_token(token);
    if (!j)
      return;
    log_result(r, engine_.db_name());
    j->token.reset();
    ++j->runs;
    if (r.counters.job_id != 0)
      j->current = r.counters;
    m_->add("mediasync_job_runs_total",
            {{"job", j->name}, {"status", std::string{to_string(r.status)}}}, 1);
    m_->set("mediasync_job_running", {{"job", j->name}}, 0);
    m_->set("mediasync_job_last_finish_timestamp_seconds", {{"job", j->name}}, unix_now());
    j->last_trigger = j->trigger;
    j->last_finished_at = iso_now();
    j->last = std::move(r);
    if (j->removed) {
      for (auto metric : {"mediasync_job_running", "mediasync_job_files",
                          "mediasync_watch_pending_files", "mediasync_watched_directories"})
        m_->remove(metric, {{"job", j->name}});
      jobs_.erase(j->name);
    }
  }

  void reload() {
    spdlog::info("SIGHUP: reloading {}", config_path_);
    try {
      auto cfg = load_config(config_path_);
      auto global = effective_options(&cfg, cli_);
      auto plans = plan_jobs(cfg, cli_);
      apply_plans(std::move(plans));
      if (engine_fingerprint(global) != engine_fp_)
        spdlog::warn("reload: storage, writer, stage, imaging, watermark and http settings "
                     "take effect when the node restarts; the running ones are kept");
      spdlog::set_level(spdlog::level::from_str(global.log_level));
      m_->add("mediasync_config_reloads_total", {{"result", "applied"}}, 1);
      spdlog::info("reload: applied; {} job(s)", jobs_.size());
    } catch (const std::exception& e) {
      m_->add("mediasync_config_reloads_total", {{"result", "rejected"}}, 1);
      spdlog::error("reload rejected, the running config is kept: {}", e.what());
    }
  }

  void stop() {
    if (stopping_) {
      spdlog::warn("second stop signal: exiting now; resume interrupted jobs later");
      std::_Exit(exit_code::interrupted);
    }
    stopping_ = true;
    spdlog::info("stopping: {} run(s) in progress finish their files in flight", running());
    for (auto& [name, j] : jobs_)
      j->watcher.reset();
    caf::anon_send(engine_.supervisor(), stop_atom::value);
  }

  /// Refreshes the /status document and the per-job gauges.
  void publish() {
    nlohmann::json jobs = nlohmann::json::array();
    for (auto& [name, jp] : jobs_) {
      auto& j = *jp;
      auto& c = j.current;
      nlohmann::json js = {{"name", j.name},
                           {"source", j.plan.base.source_root},
                           {"dest", j.plan.base.dest_root},
                           {"interval_seconds", j.plan.opt.interval.count() / 1000},
                           {"watch", j.plan.opt.watch_source},
                           {"state", j.token ? "running" : "idle"},
                           {"runs", j.runs},
                           {"pending_files", j.pending_paths.size()}};
      if (j.watcher)
        js["watched_directories"] = j.watcher->watched_directories();
      auto counters = nlohmann::json{{"job_id", c.job_id},
                                     {"total_files", c.total_files},
                                     {"processed_files", c.processed_files},
                                     {"failed_files", c.failed_files},
                                     {"skipped_files", c.skipped_files},
                                     {"processed_bytes", c.processed_bytes}};
      if (j.token)
        js["current"] = counters;
      if (j.last)
        js["last"] = {{"job_id", j.last->job_id},
                      {"status", to_string(j.last->status)},
                      {"trigger", j.last_trigger},
                      {"finished_at", j.last_finished_at},
                      {"processed_files", j.last->counters.processed_files},
                      {"failed_files", j.last->counters.failed_files},
                      {"skipped_files", j.last->counters.skipped_files},
                      {"processed_bytes", j.last->counters.processed_bytes},
                      {"error", j.last->error}};
      if (!j.token && !j.removed && j.next_due != clock::time_point::max())
        js["next_run_in_seconds"] =
          std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::seconds>(
                                      j.next_due - clock::now())
                                      .count());
      jobs.push_back(std::move(js));
      metric_labels l{{"job", j.name}};
      m_->set("mediasync_watch_pending_files", l, static_cast<double>(j.pending_paths.size()));
      if (j.watcher)
        m_->set("mediasync_watched_directories", l,
                static_cast<double>(j.watcher->watched_directories()));
      m_->set("mediasync_job_running", l, j.token ? 1 : 0);
      for (auto [state, n] : {std::pair{"processed", c.processed_files},
                              std::pair{"failed", c.failed_files},
                              std::pair{"skipped", c.skipped_files},
                              std::pair{"total", c.total_files}})
        m_->set("mediasync_job_files", {{"job", j.name}, {"state", state}},
                static_cast<double>(n));
    }
    nlohmann::json doc = {{"config", config_path_},
                          {"database", engine_.db_name()},
                          {"started_at", started_at_},
                          {"stopping", stopping_},
                          {"jobs", std::move(jobs)}};
    if (global_.listen != "off") {
      if (clock::now() - nodes_at_ > std::chrono::milliseconds(500)) {  // ask at most 2/s
        nodes_at_ = clock::now();
        nodes_ = nlohmann::json::array();
        for (auto& n : engine_.nodes())
          nodes_.push_back({{"name", n.name},
                            {"workers", {{"sync", n.workers[0]},
                                         {"processing", n.workers[1]},
                                         {"watermark", n.workers[2]}}}});
      }
      doc["cluster"] = {{"listen", global_.listen}, {"nodes", nodes_}};
    }
    std::lock_guard<std::mutex> g{status_mu_};
    status_json_ = doc.dump();
  }

  std::string config_path_;
  std::vector<assignment> cli_;
  options global_;
  std::string engine_fp_;
  std::shared_ptr<metrics> m_;
  engine& engine_;
  caf::scoped_actor& self_;
  std::map<std::string, std::unique_ptr<node_job>> jobs_;
  std::uint64_t next_token_ = 1;
  bool stopping_ = false;
  std::string started_at_;
  mutable std::mutex status_mu_;
  std::string status_json_;
  clock::time_point nodes_at_{};
  nlohmann::json nodes_ = nlohmann::json::array();  ///< the cluster's nodes, as last asked
};

/// The HTTP endpoint: GET /metrics and GET /status on its own threads.
class http_endpoint {
public:
  http_endpoint(const std::string& address, std::function<std::string()> metrics_text,
                std::function<std::string()> status_json) {
    auto colon = address.rfind(':');
    auto host = address.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
    int port = std::stoi(address.substr(colon + 1));
    server_.Get("/metrics", [f = std::move(metrics_text)](const httplib::Request&,
                                                           httplib::Response& res) {
      res.set_content(f(), "text/plain; version=0.0.4; charset=utf-8");
    });
    server_.Get("/status", [f = std::move(status_json)](const httplib::Request&,
                                                        httplib::Response& res) {
      res.set_content(f(), "application/json");
    });
    errno = 0;
    if (port == 0)
      port = server_.bind_to_any_port(host);
    else if (!server_.bind_to_port(host, port))
      port = -1;
    if (port < 0)
      throw fatal_error("http '" + address + "': cannot listen there"
                        + (errno ? std::string{": "} + std::strerror(errno) : std::string{})
                        + " (set [node] http to a free HOST:PORT, or off)");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    url_ = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":"
           + std::to_string(port);
  }

  ~http_endpoint() {
    server_.stop();
    if (thread_.joinable())
      thread_.join();
  }

  const std::string& url() const { return url_; }

private:
  httplib::Server server_;
  std::thread thread_;
  std::string url_;
};

/// SIGHUP reloads, SIGTERM/SIGINT stop: taken on a thread of their own (they are blocked
/// everywhere else) and handed to the node's mailbox.
void forward_signals(caf::actor me) {
  std::thread([me] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0)
        continue;
      if (sig == SIGHUP)
        caf::anon_send(me, hup_atom::value);
      else
        caf::anon_send(me, term_atom::value);
    }
  }).detach();
}

} // namespace

int cmd_node(const config_file& cfg, const std::vector<assignment>& cli) {
  return guarded([&] {
    auto global = effective_options(&cfg, cli);
    select_jobs(cfg, {});  // a node without jobs is a config error
    auto m = std::make_shared<metrics>();
    engine e{global, m};
    e.wait_for_nodes(global.wait_for_nodes, global.wait_timeout);
    caf::scoped_actor self{e.system()};
    std::optional<node> n;
    n.emplace(cfg, cli, global, m, e, self);
    std::optional<http_endpoint> http;
    if (global.http != "off") {
      http.emplace(global.http, [m] { return m->render(); }, [&n] { return n->status(); });
      spdlog::info("node: serving {}/metrics and {}/status", http->url(), http->url());
    }
    forward_signals(self);
    spdlog::info("node: running {} (SIGHUP reloads it, SIGTERM stops)", cfg.path);
    int code = n->serve();
    e.set_exit_code(code);
    http.reset();
    n.reset();
    spdlog::info("node: stopped");
    return code;
  });
}

} // namespace ms::app
