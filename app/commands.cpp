#include "app/commands.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "actors/imaging.hpp"
#include "actors/messages.hpp"
#include "actors/scanner.hpp"
#include "actors/supervisor.hpp"
#include "app/progress.hpp"
#include "storage/store.hpp"

namespace ms::app {
namespace {

/// Canonical absolute path of an existing directory, or a usage_error naming `what`.
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

bool is_inside(const std::string& inner, const std::string& outer) {
  return inner == outer || (inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0
                            && (outer == "/" || inner[outer.size()] == '/'));
}

struct fatal_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::shared_ptr<storage::store> open_db(const std::string& url, storage::open_mode mode) {
  try {
    return std::shared_ptr<storage::store>{storage::open_store(url, mode)};
  } catch (const storage::error& e) {
    if (e.code() == storage::errc::bad_url)
      throw usage_error(e.what());
    throw fatal_error(e.what());
  }
}

/// The effective settings of a job, as stored in sync_jobs.settings.
nlohmann::json settings_json(const options& opt) {
  return {{"workers", opt.workers},
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
}

/// A resumed job does what it was started to do: its stored settings decide what each
/// file goes through (filters, stages, image settings); the command line only tunes how
/// fast (workers, batch size, window).
options with_stored_settings(options opt, const nlohmann::json& s) {
  opt.includes = s.value("include", opt.includes);
  opt.excludes = s.value("exclude", opt.excludes);
  opt.checksum = s.value("checksum", opt.checksum);
  opt.allow_empty_source = s.value("allow_empty_source", false) || opt.allow_empty_source;
  // Jobs stored before the image stages existed had none.
  opt.thumbnails = s.value("thumbnails", false);
  opt.watermark = s.value("watermark", false);
  opt.thumbnail_sizes = s.value("thumbnail_sizes", opt.thumbnail_sizes);
  opt.thumbnail_format = s.value("thumbnail_format", opt.thumbnail_format);
  opt.quality = s.value("quality", opt.quality);
  opt.max_pixels = s.value("max_pixels", opt.max_pixels);
  opt.watermark_text = s.value("watermark_text", opt.watermark_text);
  opt.watermark_image = s.value("watermark_image", opt.watermark_image);
  opt.watermark_position = s.value("watermark_position", opt.watermark_position);
  opt.watermark_margin = s.value("watermark_margin", opt.watermark_margin);
  opt.watermark_opacity = s.value("watermark_opacity", opt.watermark_opacity);
  return opt;
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
    throw usage_error("--watermark-image '" + im.watermark_image + "': " + std::strerror(errno));
  return im;
}

/// Fills the parts of a job spec that come from the options.
void apply_options(job_spec& spec, const options& opt) {
  spec.includes = opt.includes;
  spec.excludes = opt.excludes;
  spec.checksum = opt.checksum;
  spec.allow_empty_source = opt.allow_empty_source;
  spec.window = static_cast<std::uint32_t>(opt.window);
  spec.thumbnails = opt.thumbnails;
  spec.watermark = opt.thumbnails && opt.watermark;
}

/// Blocks SIGINT/SIGTERM in every thread (call before any thread starts) and
/// handles them on a thread of its own: the first stops the job cleanly, the
/// second exits at once (safe: durable state is consistent at any moment).
class signal_guard {
public:
  signal_guard() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }

  void start(caf::actor_system& sys, supervisor_actor sup) {
    std::thread([this, &sys, sup] {
      int count = 0;
      for (;;) {
        int sig = 0;
        if (sigwait(&set_, &sig) != 0)
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
      (void) sys;
    }).detach();
  }

private:
  sigset_t set_;
};

int exit_for(const job_result& r) {
  if (!r.error.empty())
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

/// Asks the supervisor to run `spec` and hands the reply to `me` as a done message, so the
/// main thread can take progress messages while it waits. (A function with arguments, not
/// an argument-less lambda: CAF 0.17 dereferences a null argument tuple for the latter.)
caf::behavior relay_run(caf::event_based_actor* a, supervisor_actor sup, job_spec spec,
                        caf::actor me) {
  a->request(sup, caf::infinite, run_atom::value, spec, me)
    .then([=](job_result& r) { a->send(me, done_atom::value, std::move(r)); a->quit(); },
          [=](caf::error& e) {
            job_result r;
            r.job_id = spec.job_id;
            r.status = job_status::failed;
            r.error = a->system().render(e);
            a->send(me, done_atom::value, std::move(r));
            a->quit();
          });
  return {[](caf::unit_t) {}};
}

/// Runs one job (new or resumed) through the actor system and reports it.
int run_job(const options& opt, job_spec spec) {
  signal_guard signals;
  supervisor_settings ss;
  ss.imaging = imaging_of(opt);  // validated before anything starts
  ss.workers = {opt.workers, spec.thumbnails ? opt.processing_workers : 0,
                spec.watermark ? opt.watermark_workers : 0};
  ss.writer.batch_size = opt.batch_size;
  ss.writer.flush_interval = opt.flush_interval;
  ss.writer.reconnect_limit = opt.db_reconnect_limit;
  // N image workers share the cores: each vips pipeline gets cores / N threads (>= 1).
  auto cores = std::max(1u, std::thread::hardware_concurrency());
  ss.vips_threads = static_cast<int>(std::max<std::size_t>(1, cores / opt.processing_workers));
  auto db = open_db(opt.db, storage::open_mode::read_write);
  caf::actor_system_config cfg;
  add_message_types(cfg);
  cfg.set("logger.verbosity", caf::atom("quiet"));
  // The busy actors are detached (own threads); the few scheduled ones need no polling
  // work-stealing threads burning the cores the workers hash and copy on.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  caf::actor_system sys{cfg};
  auto sup = spawn_supervisor(sys, db, ss);
  signals.start(sys, sup);
  progress_display display{opt.progress};
  job_result result;
  {
    caf::scoped_actor self{sys};
    caf::actor me = self;
    // A small actor awaits the run's reply and hands it to this thread's mailbox.
    sys.spawn(relay_run, sup, spec, me);
    bool done = false;
    while (!done)
      self->receive([&](progress_atom, const job_progress& p) { display.update(p); },
                    [&](done_atom, job_result& r) {
                      result = std::move(r);
                      done = true;
                    },
                    caf::after(std::chrono::milliseconds(200)) >> [&] { display.tick(); });
    display.finish(result);
    self->send_exit(sup, caf::exit_reason::user_shutdown);
  }
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
                     result.job_id, db->describe());
      break;
    case job_status::interrupted:
      if (!result.error.empty())
        spdlog::error("job {} stopped: {}", result.job_id, result.error);
      spdlog::warn("job {} interrupted: resume with: mediasync resume {} --db {}", result.job_id,
                   result.job_id, db->describe());
      break;
    default:
      spdlog::error("job {} failed: {}", result.job_id, result.error);
  }
  return exit_for(result);
}

/// --dry-run: scan and compare with the database; write nothing.
int dry_run(const options& opt, const std::string& src, const std::string& dst) {
  std::shared_ptr<storage::store> db;
  try {
    db = open_db(opt.db, storage::open_mode::read_only);
  } catch (const std::exception& e) {
    spdlog::info("dry run without database knowledge ({}): every file counts as new", e.what());
  }
  scanner scan{src, path_filter{opt.includes, opt.excludes}, dst};
  std::vector<scan_entry> chunk;
  std::vector<std::string> paths;
  std::vector<known_file> known;
  std::uint64_t copy = 0, copy_bytes = 0, unchanged = 0, skipped = 0, failed = 0;
  while (scan.next(chunk, 1024) || !chunk.empty()) {
    paths.clear();
    for (auto& e : chunk)
      paths.push_back(e.path);
    known.assign(chunk.size(), known_file{});
    if (db)
      db->lookup(0, src, paths, known);
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      auto& e = chunk[i];
      auto& k = known[i];
      if (e.kind == entry_kind::unreadable) {
        ++failed;
        spdlog::info("would fail: {}: {}", e.path, e.reason);
      } else if (e.kind != entry_kind::regular) {
        ++skipped;
        spdlog::debug("would skip: {}: {}", e.path, e.reason);
      } else if (k.has_media && !k.missing && k.size == e.size && k.mtime_ns == e.mtime_ns
                 && !opt.checksum) {
        ++unchanged;
      } else {
        ++copy;
        copy_bytes += e.size;
        spdlog::debug("would copy: {}", e.path);
      }
    }
    chunk.clear();
  }
  std::cout << "dry run: " << copy << " file(s) to copy (" << copy_bytes << " bytes), "
            << unchanged << " unchanged, " << skipped << " to skip, " << failed
            << " unreadable\n";
  return exit_code::ok;
}

std::string iso_or_dash(const std::string& s) { return s.empty() ? "-" : s; }

nlohmann::json to_json(const job_row& j) {
  return {{"id", j.id},
          {"source_root", j.source_root},
          {"dest_root", j.dest_root},
          {"status", to_string(j.status)},
          {"total_files", j.total_files},
          {"processed_files", j.processed_files},
          {"failed_files", j.failed_files},
          {"skipped_files", j.skipped_files},
          {"processed_bytes", j.processed_bytes},
          {"created_at", j.created_at},
          {"updated_at", j.updated_at},
          {"finished_at", j.finished_at.empty() ? nlohmann::json() : nlohmann::json(j.finished_at)},
          {"settings", nlohmann::json::parse(j.settings.empty() ? "{}" : j.settings, nullptr, false)}};
}

std::uint64_t parse_job_id(const std::string& s) {
  char* end = nullptr;
  errno = 0;
  auto v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || v == 0 || s[0] == '-')
    throw usage_error("job id '" + s + "' is not a positive whole number");
  return v;
}

template <class F>
int guarded(F&& f) {
  try {
    return f();
  } catch (const usage_error& e) {
    spdlog::error("{}", e.what());
    return exit_code::usage;
  } catch (const fatal_error& e) {
    spdlog::error("{}", e.what());
    return exit_code::fatal;
  } catch (const storage::error& e) {
    spdlog::error("{}", e.what());
    return exit_code::fatal;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return exit_code::fatal;
  }
}

} // namespace

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("mediasync");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

int cmd_sync(const options& opt) {
  return guarded([&] {
    if (opt.positional.size() != 2)
      throw usage_error("sync needs SOURCE and DEST (got " + std::to_string(opt.positional.size())
                        + " operand(s))");
    auto src = existing_dir(opt.positional[0], "source");
    if (::access(src.c_str(), R_OK | X_OK) != 0)
      throw usage_error("source '" + src + "' cannot be read: " + std::strerror(errno));
    // Where DEST is (or will be), checked before anything is created.
    std::error_code ec;
    auto dst = std::filesystem::weakly_canonical(std::filesystem::absolute(opt.positional[1]), ec).string();
    if (ec)
      throw usage_error("destination '" + opt.positional[1] + "': " + ec.message());
    if (is_inside(dst, src))
      throw usage_error("destination '" + dst + "' lies inside the source '" + src + "'");
    if (is_inside(src, dst))
      throw usage_error("source '" + src + "' lies inside the destination '" + dst + "'");
    if (!opt.dry_run) {
      std::filesystem::create_directories(dst, ec);
      if (ec)
        throw fatal_error("destination '" + dst + "' cannot be created: " + ec.message());
      dst = existing_dir(dst, "destination");
    }
    if (opt.dry_run)
      return dry_run(opt, src, dst);
    if (::access(dst.c_str(), W_OK | X_OK) != 0)
      throw fatal_error("destination '" + dst + "' is not writable: " + std::strerror(errno));
    job_spec spec;
    spec.source_root = src;
    spec.dest_root = dst;
    spec.settings_json = settings_json(opt).dump();
    apply_options(spec, opt);
    return run_job(opt, std::move(spec));
  });
}

int cmd_resume(const options& opt) {
  return guarded([&] {
    if (opt.positional.size() != 1)
      throw usage_error("resume needs exactly one JOB id");
    auto id = parse_job_id(opt.positional[0]);
    std::optional<job_row> row;
    {
      auto db = open_db(opt.db, storage::open_mode::read_only);
      row = db->job(id);
      if (!row)
        throw usage_error("job " + std::to_string(id) + " does not exist in " + db->describe());
    }
    if (row->status == job_status::completed) {
      spdlog::info("job {} is already completed; nothing to resume", id);
      return row->failed_files > 0 ? exit_code::failed_files : exit_code::ok;
    }
    auto settings = nlohmann::json::parse(row->settings, nullptr, false);
    if (settings.is_discarded() || !settings.is_object())
      throw fatal_error("job " + std::to_string(id) + " has unreadable settings: " + row->settings);
    job_spec spec;
    spec.job_id = id;
    spec.source_root = row->source_root;
    spec.dest_root = row->dest_root;
    spec.settings_json = row->settings;
    auto effective = with_stored_settings(opt, settings);
    apply_options(spec, effective);
    existing_dir(spec.source_root, "source");
    existing_dir(spec.dest_root, "destination");
    spdlog::info("resuming job {} ({} -> {}): {} file(s) already recorded", id, spec.source_root,
                 spec.dest_root, row->processed_files + row->failed_files + row->skipped_files);
    return run_job(effective, std::move(spec));
  });
}

int cmd_status(const options& opt) {
  return guarded([&] {
    if (opt.positional.size() > 1)
      throw usage_error("status takes at most one JOB id");
    std::uint64_t id = opt.positional.empty() ? 0 : parse_job_id(opt.positional[0]);
    auto db = open_db(opt.db, storage::open_mode::read_only);
    for (;;) {
      std::optional<job_row> row;
      if (id != 0) {
        row = db->job(id);
        if (!row)
          throw usage_error("job " + std::to_string(id) + " does not exist in " + db->describe());
      } else {
        auto newest = db->jobs(1);
        if (newest.empty()) {
          if (opt.json)
            std::cout << "null\n";
          else
            std::cout << "no jobs in " << db->describe() << "\n";
          return exit_code::ok;
        }
        row = newest.front();
      }
      if (opt.json) {
        std::cout << to_json(*row).dump() << std::endl;
      } else {
        auto& j = *row;
        auto done = j.processed_files + j.failed_files + j.skipped_files;
        std::cout << "job " << j.id << ": " << to_string(j.status) << "\n"
                  << "  source:    " << j.source_root << "\n"
                  << "  dest:      " << j.dest_root << "\n"
                  << "  files:     " << done << "/" << j.total_files << " (" << j.processed_files
                  << " ok, " << j.failed_files << " failed, " << j.skipped_files << " skipped)\n"
                  << "  bytes:     " << j.processed_bytes << "\n"
                  << "  created:   " << j.created_at << "\n"
                  << "  updated:   " << j.updated_at << "\n"
                  << "  finished:  " << iso_or_dash(j.finished_at) << std::endl;
      }
      if (!opt.watch || row->status != job_status::running)
        return exit_code::ok;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      id = row->id;
    }
  });
}

int cmd_migrate(const options& opt) {
  return guarded([&] {
    if (!opt.positional.empty())
      throw usage_error("migrate takes no operands");
    auto db = open_db(opt.db, storage::open_mode::read_write);  // opening migrates
    std::cout << "database " << db->describe() << " has the current schema\n";
    return exit_code::ok;
  });
}

int cmd_jobs(const options& opt) {
  return guarded([&] {
    if (!opt.positional.empty())
      throw usage_error("jobs takes no operands");
    auto db = open_db(opt.db, storage::open_mode::read_only);
    auto rows = db->jobs(50);
    if (opt.json) {
      auto arr = nlohmann::json::array();
      for (auto& r : rows)
        arr.push_back(to_json(r));
      std::cout << arr.dump() << "\n";
      return exit_code::ok;
    }
    std::printf("%6s  %-11s  %9s  %9s  %7s  %7s  %-24s  %s\n", "id", "status", "files", "ok",
                "failed", "skipped", "created", "source -> dest");
    for (auto& r : rows)
      std::printf("%6llu  %-11s  %9llu  %9llu  %7llu  %7llu  %-24s  %s -> %s\n",
                  static_cast<unsigned long long>(r.id), std::string{to_string(r.status)}.c_str(),
                  static_cast<unsigned long long>(r.total_files),
                  static_cast<unsigned long long>(r.processed_files),
                  static_cast<unsigned long long>(r.failed_files),
                  static_cast<unsigned long long>(r.skipped_files), r.created_at.c_str(),
                  r.source_root.c_str(), r.dest_root.c_str());
    return exit_code::ok;
  });
}

} // namespace ms::app
