#include "app/commands.hpp"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "actors/messages.hpp"
#include "actors/scanner.hpp"
#include "app/config.hpp"
#include "app/engine.hpp"
#include "storage/store.hpp"

namespace ms::app {
namespace {

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
  opt.job_name = s.value("name", std::string{});
  return opt;
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

} // namespace

int guarded(const std::function<int()>& f) {
  try {
    return f();
  } catch (const usage_error& e) {
    spdlog::error("{}", e.what());
    return exit_code::usage;
  } catch (const std::exception& e) {  // fatal_error, storage::error, ...
    spdlog::error("{}", e.what());
    return exit_code::fatal;
  }
}

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("mediasync");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

int cmd_sync(options opt, const std::vector<std::string>& args) {
  return guarded([&] {
    if (args.size() != 2)
      throw usage_error("sync needs SOURCE and DEST (got " + std::to_string(args.size())
                        + " operand(s))");
    opt.source = args[0];
    opt.dest = args[1];
    auto spec = make_job_spec(opt, !opt.dry_run);
    if (opt.dry_run)
      return dry_run(opt, spec.source_root, spec.dest_root);
    engine e{opt};
    auto results = e.run({std::move(spec)}, opt.progress);
    e.set_exit_code(exit_code_of(results.front()));
    return exit_code_of(results.front());
  });
}

int cmd_run(const config_file& cfg, const std::vector<std::string>& names,
            const std::vector<assignment>& cli) {
  return guarded([&] {
    auto jobs = select_jobs(cfg, names);
    auto global = effective_options(&cfg, cli);
    // Every job is checked (paths, settings) before any of them starts.
    std::vector<job_spec> specs;
    for (auto* j : jobs) {
      auto o = effective_options(cfg, *j, cli);
      if (o.dry_run)
        throw usage_error("run does not take --dry-run (use sync --dry-run per job)");
      specs.push_back(make_job_spec(o));
    }
    // A job that runs no image stage needs no image workers; the pool serves them all.
    global.thumbnails = std::any_of(specs.begin(), specs.end(),
                                    [](const job_spec& s) { return s.thumbnails; });
    global.watermark = std::any_of(specs.begin(), specs.end(),
                                   [](const job_spec& s) { return s.watermark; });
    engine e{global};
    e.wait_for_nodes(global.wait_for_nodes, global.wait_timeout);
    auto results = e.run(std::move(specs), global.progress);
    int code = exit_code::ok;
    for (std::size_t i = 0; i < results.size(); ++i) {
      spdlog::info("job '{}' (id {}): {}", jobs[i]->name, results[i].job_id,
                   to_string(results[i].status));
      code = worst_exit_code(code, exit_code_of(results[i]));
    }
    e.set_exit_code(code);
    return code;
  });
}

int cmd_resume(const options& opt, const std::vector<std::string>& args) {
  return guarded([&] {
    if (args.size() != 1)
      throw usage_error("resume needs exactly one JOB id");
    auto id = parse_job_id(args[0]);
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
    apply_job_options(spec, effective);
    existing_dir(spec.source_root, "source");
    existing_dir(spec.dest_root, "destination");
    spdlog::info("resuming job {} ({} -> {}): {} file(s) already recorded", id, spec.source_root,
                 spec.dest_root, row->processed_files + row->failed_files + row->skipped_files);
    engine e{effective};
    auto results = e.run({std::move(spec)}, effective.progress);
    e.set_exit_code(exit_code_of(results.front()));
    return exit_code_of(results.front());
  });
}

int cmd_status(const options& opt, const std::vector<std::string>& args) {
  return guarded([&] {
    if (args.size() > 1)
      throw usage_error("status takes at most one JOB id");
    std::uint64_t id = args.empty() ? 0 : parse_job_id(args[0]);
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
      auto nodes = db->node_counts(row->id);
      auto rate = [](const node_rows& n) {
        auto rows = n.rows[0] + n.rows[1] + n.rows[2];
        return n.seconds > 0 ? static_cast<double>(rows) / n.seconds : 0.0;
      };
      if (opt.json) {
        auto j = to_json(*row);
        j["nodes"] = nlohmann::json::array();
        for (auto& n : nodes)
          j["nodes"].push_back({{"node", n.node.empty() ? nlohmann::json() : nlohmann::json(n.node)},
                                {"rows", {{"sync", n.rows[0]},
                                          {"processing", n.rows[1]},
                                          {"watermark", n.rows[2]}}},
                                {"seconds", n.seconds},
                                {"rows_per_second", rate(n)}});
        std::cout << j.dump() << std::endl;
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
                  << "  finished:  " << iso_or_dash(j.finished_at) << "\n";
        // Which node did how much (the rows it produced, per stage) and how fast.
        for (std::size_t i = 0; i < nodes.size(); ++i) {
          auto& n = nodes[i];
          char line[256];
          std::snprintf(line, sizeof line, "%-11s%s: %llu sync, %llu processing, %llu watermark rows, %.0f rows/s\n",
                        i == 0 ? "  nodes:" : "", n.node.empty() ? "(unknown)" : n.node.c_str(),
                        static_cast<unsigned long long>(n.rows[0]),
                        static_cast<unsigned long long>(n.rows[1]),
                        static_cast<unsigned long long>(n.rows[2]), rate(n));
          std::cout << line;
        }
        std::cout << std::flush;
      }
      if (!opt.watch || row->status != job_status::running)
        return exit_code::ok;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      id = row->id;
    }
  });
}

int cmd_migrate(const options& opt, const std::vector<std::string>& args) {
  return guarded([&] {
    if (!args.empty())
      throw usage_error("migrate takes no operands");
    auto db = open_db(opt.db, storage::open_mode::read_write);  // opening migrates
    std::cout << "database " << db->describe() << " has the current schema\n";
    return exit_code::ok;
  });
}

int cmd_jobs(const options& opt, const std::vector<std::string>& args) {
  return guarded([&] {
    if (!args.empty())
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
