#include "app/engine.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include <caf/all.hpp>
#include <caf/openssl/all.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/imaging.hpp"
#include "actors/messages.hpp"
#include "actors/registry.hpp"
#include "actors/supervisor.hpp"
#include "app/cluster.hpp"
#include "app/commands.hpp"
#include "app/progress.hpp"

namespace ms::app {

std::string existing_dir(const std::string& path, const char* what) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0)
    throw usage_error(std::string{what} + " '" + path + "': " + std::strerror(errno));
  if (!S_ISDIR(sb.st_mode))
    throw usage_error(std::string{what} + " '" + path + "' is not a directory");
  char buf[PATH_MAX];
  if (!::realpath(path.c_str(), buf))
    throw usage_error(std::string{what} + " '" + path + "': " + std::strerror(errno));
  return buf;
}

namespace {

bool is_inside(const std::string& inner, const std::string& outer) {
  return inner == outer || (inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0
                            && (outer == "/" || inner[outer.size()] == '/'));
}

/// The effective settings of a job, as stored in sync_jobs.settings.
nlohmann::json settings_json(const options& opt) {
  nlohmann::json j = {{"workers", opt.workers},
                      {"processing_workers", opt.processing_workers},
                      {"watermark_workers", opt.watermark_workers},
                      {"batch_size", opt.batch_size},
                      {"flush_interval_ms", opt.flush_interval.count()},
                      {"window", opt.window},
                      {"include", opt.includes},
                      {"exclude", opt.excludes},
                      {"checksum", opt.checksum},
                      {"allow_empty_source", opt.allow_empty_source},
                      {"thumbnails", opt.thumbnails},
                      {"watermark", opt.watermark},
                      {"thumbnail_sizes", opt.thumbnail_sizes},
                      {"thumbnail_format", opt.thumbnail_format},
                      {"quality", opt.quality},
                      {"max_pixels", opt.max_pixels},
                      {"watermark_text", opt.watermark_text},
                      {"watermark_image", opt.watermark_image},
                      {"watermark_position", opt.watermark_position},
                      {"watermark_margin", opt.watermark_margin},
                      {"watermark_opacity", opt.watermark_opacity}};
  if (!opt.job_name.empty())
    j["name"] = opt.job_name;
  if (!opt.config.empty())
    j["config"] = opt.config;
  return j;
}

imaging_settings imaging_of(const options& opt) {
  imaging_settings im;
  im.thumbnail_sizes = opt.thumbnail_sizes;
  im.thumbnail_format = opt.thumbnail_format;
  im.quality = opt.quality;
  im.max_pixels = opt.max_pixels;
  if (opt.watermark_image.empty())
    im.watermark_text = opt.watermark_text;
  im.watermark_image = opt.watermark_image;
  im.watermark_position = opt.watermark_position;
  im.watermark_margin = opt.watermark_margin;
  im.watermark_opacity = opt.watermark_opacity;
  try {
    im.validate();
  } catch (const std::invalid_argument& e) {
    throw usage_error(e.what());
  }
  if (!im.watermark_image.empty() && ::access(im.watermark_image.c_str(), R_OK) != 0)
    throw usage_error("watermark-image '" + im.watermark_image + "': " + std::strerror(errno));
  return im;
}

/// Handles SIGINT/SIGTERM (blocked by block_signals()) on a thread of its own while jobs
/// run: the first stops the jobs cleanly, the second exits at once (safe: durable state
/// is consistent at any moment).
void watch_stop_signals(supervisor_actor sup) {
  std::thread([sup] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int count = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0)
        continue;
      if (++count == 1) {
        spdlog::warn("{}: stopping; finishing files in progress (again to exit at once)",
                     strsignal(sig));
        caf::anon_send(sup, stop_atom::value);
      } else {
        const char msg[] = "\nmediasync: second signal, exiting now; resume the job later\n";
        [[maybe_unused]] auto n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
        std::_Exit(exit_code::interrupted);
      }
    }
  }).detach();
}

/// Asks the supervisor to run `spec` and tells `me` what happens, tagged with `token`:
/// (progress, token, job_progress) while it runs, (done, token, job_result) at its end; so
/// the main thread can take progress messages while it waits. (A function with
/// arguments, not an argument-less lambda: CAF 0.17 dereferences a null argument tuple
/// for the latter.)
caf::behavior relay_run(caf::event_based_actor* a, supervisor_actor sup, job_spec spec,
                        caf::actor me, std::uint64_t token) {
  a->request(sup, caf::infinite, run_atom::value, spec, caf::actor{a})
    .then([=](job_result& r) { a->send(me, done_atom::value, token, std::move(r)); a->quit(); },
          [=](caf::error& e) {
            job_result r;
            r.job_id = spec.job_id;
            r.status = job_status::failed;
            r.error = a->system().render(e);
            a->send(me, done_atom::value, token, std::move(r));
            a->quit();
          });
  return {[=](progress_atom, const job_progress& p) {
    a->send(me, progress_atom::value, token, p);
  }};
}

} // namespace

std::shared_ptr<storage::store> open_db(const std::string& url, storage::open_mode mode) {
  try {
    return std::shared_ptr<storage::store>{storage::open_store(url, mode)};
  } catch (const storage::error& e) {
    if (e.code() == storage::errc::bad_url)
      throw usage_error(e.what());
    throw fatal_error(e.what());
  }
}

void block_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void apply_job_options(job_spec& spec, const options& opt) {
  spec.name = opt.job_name;
  spec.includes = opt.includes;
  spec.excludes = opt.excludes;
  spec.checksum = opt.checksum;
  spec.allow_empty_source = opt.allow_empty_source;
  spec.window = static_cast<std::uint32_t>(opt.window);
  spec.thumbnails = opt.thumbnails;
  spec.watermark = opt.thumbnails && opt.watermark;
}

job_spec make_job_spec(const options& opt, bool create_dest) {
  auto src = existing_dir(opt.source, "source");
  if (::access(src.c_str(), R_OK | X_OK) != 0)
    throw usage_error("source '" + src + "' cannot be read: " + std::strerror(errno));
  // Where DEST is (or will be), checked before anything is created.
  std::error_code ec;
  auto dst = std::filesystem::weakly_canonical(std::filesystem::absolute(opt.dest), ec).string();
  if (ec)
    throw usage_error("destination '" + opt.dest + "': " + ec.message());
  if (is_inside(dst, src))
    throw usage_error("destination '" + dst + "' lies inside the source '" + src + "'");
  if (is_inside(src, dst))
    throw usage_error("source '" + src + "' lies inside the destination '" + dst + "'");
  if (create_dest) {
    std::filesystem::create_directories(dst, ec);
    if (ec)
      throw fatal_error("destination '" + dst + "' cannot be created: " + ec.message());
    dst = existing_dir(dst, "destination");
    if (::access(dst.c_str(), W_OK | X_OK) != 0)
      throw fatal_error("destination '" + dst + "' is not writable: " + std::strerror(errno));
  }
  imaging_of(opt);  // image settings checked before anything starts
  job_spec spec;
  spec.source_root = src;
  spec.dest_root = dst;
  spec.settings_json = settings_json(opt).dump();
  apply_job_options(spec, opt);
  return spec;
}

int exit_code_of(const job_result& r) {
  if (!r.error.empty() && r.status != job_status::completed)
    return exit_code::fatal;  // e.g. database unreachable: the job is interrupted, resumable
  switch (r.status) {
    case job_status::completed:
      return r.counters.failed_files > 0 ? exit_code::failed_files : exit_code::ok;
    case job_status::interrupted:
      return exit_code::interrupted;
    default:
      return exit_code::fatal;
  }
}

int worst_exit_code(int a, int b) {
  auto rank = [](int c) {
    switch (c) {
      case exit_code::ok: return 0;
      case exit_code::failed_files: return 1;
      case exit_code::fatal: return 3;
      case exit_code::interrupted: return 4;
      default: return 2;
    }
  };
  return rank(a) >= rank(b) ? a : b;
}

void log_result(const job_result& result, const std::string& db_name) {
  auto& c = result.counters;
  switch (result.status) {
    case job_status::completed:
      spdlog::info("job {} completed: {} ok, {} failed, {} skipped, {} bytes{}", result.job_id,
                   c.processed_files, c.failed_files, c.skipped_files, c.processed_bytes,
                   result.missing_marked ? ", " + std::to_string(result.missing_marked)
                                             + " vanished file(s) marked missing"
                                         : std::string{});
      if (c.failed_files > 0)
        spdlog::warn("{} file(s) failed; see: mediasync status {} --db {}", c.failed_files,
                     result.job_id, db_name);
      break;
    case job_status::interrupted:
      if (!result.error.empty())
        spdlog::error("job {} stopped: {}", result.job_id, result.error);
      spdlog::warn("job {} interrupted: resume with: mediasync resume {} --db {}", result.job_id,
                   result.job_id, db_name);
      break;
    default:
      if (result.job_id == 0) {  // no job row was made (e.g. the database takes no writes)
        spdlog::error("the job could not start: {}", result.error);
        break;
      }
      spdlog::error("job {} failed: {}", result.job_id, result.error);
      // Nothing committed is lost (e.g. a database disk that was full): once the cause is
      // fixed, resume redoes what was not committed.
      spdlog::warn("job {}: once the cause is fixed, resume with: mediasync resume {} --db {}",
                   result.job_id, result.job_id, db_name);
  }
}

struct engine::impl {
  std::shared_ptr<storage::store> db;
  std::string db_name;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  supervisor_actor sup;
  registry_actor registry;  ///< published for worker nodes ([cluster] listen)
};

engine::engine(const options& opt, std::shared_ptr<metrics> m) : impl_(std::make_unique<impl>()) {
  supervisor_settings ss;
  ss.imaging = imaging_of(opt);  // validated before anything starts
  ss.workers = {opt.workers, opt.thumbnails ? opt.processing_workers : 0,
                opt.thumbnails && opt.watermark ? opt.watermark_workers : 0};
  ss.writer.batch_size = opt.batch_size;
  ss.writer.flush_interval = opt.flush_interval;
  ss.writer.reconnect_limit = opt.db_reconnect_limit;
  ss.registry = m;
  ss.node_name = node_name_of(opt);
  bool cluster = opt.listen != "off";
  if (cluster)
    check_tls(opt, "listen");
  // N image workers share the cores: each vips pipeline gets cores / N threads (>= 1).
  auto cores = std::max(1u, std::thread::hardware_concurrency());
  ss.vips_threads = static_cast<int>(std::max<std::size_t>(1, cores / opt.processing_workers));
  impl_->db = open_db(opt.db, storage::open_mode::read_write);
  impl_->db_name = impl_->db->describe();
  add_message_types(impl_->cfg);
  impl_->cfg.set("logger.verbosity", caf::atom("quiet"));
  // The busy actors are detached (own threads); the few scheduled ones need no polling
  // work-stealing threads burning the cores the workers hash and copy on.
  impl_->cfg.set("scheduler.policy", caf::atom("sharing"));
  if (cluster)
    configure_cluster(impl_->cfg, opt);
  auto im = ss.imaging;
  impl_->sys = std::make_unique<caf::actor_system>(impl_->cfg);
  impl_->sup = spawn_supervisor(*impl_->sys, impl_->db, std::move(ss));
  if (!cluster)
    return;
  impl_->registry = spawn_registry(*impl_->sys, impl_->sup, im);
  auto [host, port] = split_address(opt.listen);
  auto bound = caf::openssl::publish(impl_->registry, port, host.c_str(), true);
  if (!bound) {
    auto why = impl_->sys->render(bound.error());
    caf::anon_send_exit(impl_->sup, caf::exit_reason::user_shutdown);
    throw fatal_error("[cluster] listen " + opt.listen + ": cannot accept worker nodes there: "
                      + why);
  }
  spdlog::info("cluster: accepting worker nodes on {}:{} (TLS, certificates signed by {})",
               host, *bound, opt.tls_ca);
}

std::vector<cluster_node> engine::nodes() {
  std::vector<cluster_node> out;
  if (!impl_->registry)
    return out;
  caf::scoped_actor self{*impl_->sys};
  self->request(impl_->sup, std::chrono::seconds(5), nodes_atom::value)
    .receive([&](std::vector<cluster_node>& n) { out = std::move(n); }, [&](caf::error&) {});
  return out;
}

void engine::wait_for_nodes(std::size_t n, std::chrono::milliseconds timeout) {
  if (n == 0 || !impl_->registry)
    return;
  spdlog::info("cluster: waiting for {} worker node(s) to join (at most {} s)", n,
               timeout.count() / 1000);
  auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto joined = nodes().size();
    if (joined >= n)
      return;
    if (std::chrono::steady_clock::now() >= end) {
      spdlog::warn("cluster: {} of {} worker node(s) joined in time; starting anyway", joined, n);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

engine::~engine() {
  if (impl_->registry)
    caf::anon_send_exit(impl_->registry, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(impl_->sup, caf::exit_reason::user_shutdown);
  impl_->sup = nullptr;
  bool cluster = static_cast<bool>(impl_->registry);
  impl_->registry = nullptr;
  if (!cluster) {
    impl_->sys.reset();  // waits for every actor
    return;
  }
  // CAF 0.17 can wait forever at teardown for a detached actor (a finished coordinator) that
  // a connected worker node still references. Everything is committed by now (the jobs have
  // ended), so after a grace period the process exits without the rest of the teardown.
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  std::thread([sys = std::move(impl_->sys), done]() mutable {
    sys.reset();
    done->set_value();
  }).detach();
  if (finished.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    spdlog::warn("cluster: the actor system did not stop within 10 s (a worker node still holds "
                 "a reference); exiting, nothing is lost: every job has ended");
    spdlog::default_logger()->flush();
    std::_Exit(exit_code_);
  }
}

void engine::set_exit_code(int code) { exit_code_ = code; }

caf::actor_system& engine::system() { return *impl_->sys; }

supervisor_actor engine::supervisor() const { return impl_->sup; }

const std::string& engine::db_name() const { return impl_->db_name; }

void engine::start(job_spec spec, const caf::actor& listener, std::uint64_t token) {
  impl_->sys->spawn(relay_run, impl_->sup, std::move(spec), listener, token);
}

std::vector<job_result> engine::run(std::vector<job_spec> specs, progress_mode progress) {
  watch_stop_signals(impl_->sup);
  // Bars of several jobs would overwrite each other: they get plain lines.
  if (specs.size() > 1 && (progress == progress_mode::automatic || progress == progress_mode::bar))
    progress = progress_mode::plain;
  std::vector<progress_display> displays(specs.size(), progress_display{progress});
  std::vector<job_result> results(specs.size());
  caf::scoped_actor self{*impl_->sys};
  caf::actor me = self;
  for (std::size_t i = 0; i < specs.size(); ++i)
    start(std::move(specs[i]), me, i);
  std::size_t left = specs.size();
  while (left > 0)
    self->receive(
      [&](progress_atom, std::uint64_t index, const job_progress& p) {
        displays.at(index).update(p);
      },
      [&](done_atom, std::uint64_t index, job_result& r) {
        displays.at(index).finish(r);
        log_result(r, impl_->db_name);
        results.at(index) = std::move(r);
        --left;
      },
      caf::after(std::chrono::milliseconds(200)) >> [&] {
        for (auto& d : displays)
          d.tick();
      });
  return results;
}

} // namespace ms::app
