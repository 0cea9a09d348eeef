#include "app/options.hpp"

#include <charconv>
#include <cstdlib>
#include <functional>
#include <sstream>

namespace ms::app {
namespace {

struct option_def {
  const char* name;   ///< long name without dashes
  const char* type;   ///< for help: int, string, glob, flag, ...
  const char* deflt;  ///< for help
  const char* help;
  bool takes_value;
  std::function<void(options&, const std::string&)> apply;
};

std::uint64_t parse_uint(const std::string& name, const std::string& v, std::uint64_t lo,
                         std::uint64_t hi) {
  std::uint64_t x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc{} || p != v.data() + v.size() || v.empty())
    throw usage_error("--" + name + ": '" + v + "' is not a whole number");
  if (x < lo || x > hi)
    throw usage_error("--" + name + ": " + v + " is out of range (" + std::to_string(lo) + " to "
                      + std::to_string(hi) + ")");
  return x;
}

const std::vector<option_def>& table() {
  static const std::vector<option_def> defs = {
    {"db", "path|url", "./mediasync.db",
     "database: a SQLite file (PATH or sqlite:PATH) or PostgreSQL (postgresql://user@host/db, "
     "postgres://..., or 'host=... dbname=...'; passwords from PGPASSWORD or ~/.pgpass)", true,
     [](options& o, const std::string& v) {
       if (v.empty())
         throw usage_error("--db: empty database path");
       o.db = v;
     }},
    {"sync-workers", "int 1..1024", "8", "workers of the sync stage (read, hash, copy)", true,
     [](options& o, const std::string& v) { o.workers = parse_uint("sync-workers", v, 1, 1024); }},
    {"workers", "int 1..1024", "8", "the same as --sync-workers", true,
     [](options& o, const std::string& v) { o.workers = parse_uint("workers", v, 1, 1024); }},
    {"processing-workers", "int 1..1024", "10",
     "workers of the processing stage (image metadata and thumbnails)", true,
     [](options& o, const std::string& v) {
       o.processing_workers = parse_uint("processing-workers", v, 1, 1024);
     }},
    {"watermark-workers", "int 1..1024", "5", "workers of the watermark stage (previews)", true,
     [](options& o, const std::string& v) {
       o.watermark_workers = parse_uint("watermark-workers", v, 1, 1024);
     }},
    {"no-thumbnails", "flag", "off",
     "switch the processing stage off (and so the watermark stage)", false,
     [](options& o, const std::string&) { o.thumbnails = false; }},
    {"no-watermark", "flag", "off", "switch the watermark stage off", false,
     [](options& o, const std::string&) { o.watermark = false; }},
    {"thumbnail-sizes", "list of px", "256,1024", "long edges of the thumbnails, comma-separated",
     true,
     [](options& o, const std::string& v) {
       o.thumbnail_sizes.clear();
       std::size_t start = 0;
       while (start <= v.size()) {
         auto end = v.find(',', start);
         auto part = v.substr(start, end == std::string::npos ? std::string::npos : end - start);
         o.thumbnail_sizes.push_back(static_cast<int>(parse_uint("thumbnail-sizes", part, 1, 16384)));
         if (end == std::string::npos)
           break;
         start = end + 1;
       }
     }},
    {"thumbnail-format", "jpeg|webp", "jpeg", "format of thumbnails and previews", true,
     [](options& o, const std::string& v) {
       if (v != "jpeg" && v != "webp")
         throw usage_error("--thumbnail-format: '" + v + "' is not one of jpeg, webp");
       o.thumbnail_format = v;
     }},
    {"quality", "int 1..100", "82", "encoder quality of thumbnails and previews", true,
     [](options& o, const std::string& v) { o.quality = static_cast<int>(parse_uint("quality", v, 1, 100)); }},
    {"max-pixels", "int", "268402689", "refuse images with more pixels (width x height)", true,
     [](options& o, const std::string& v) {
       o.max_pixels = parse_uint("max-pixels", v, 1, std::uint64_t{1} << 40);
     }},
    {"watermark-text", "text", "preview", "text drawn on previews (unless --watermark-image)",
     true, [](options& o, const std::string& v) { o.watermark_text = v; }},
    {"watermark-image", "path", "(none)", "overlay image drawn on previews (PNG with alpha)",
     true, [](options& o, const std::string& v) { o.watermark_image = v; }},
    {"watermark-position", "position", "bottom-right",
     "top-left, top-right, bottom-left, bottom-right or center", true,
     [](options& o, const std::string& v) {
       for (auto p : {"top-left", "top-right", "bottom-left", "bottom-right", "center"})
         if (v == p) {
           o.watermark_position = v;
           return;
         }
       throw usage_error("--watermark-position: '" + v
                         + "' is not one of top-left, top-right, bottom-left, bottom-right, center");
     }},
    {"watermark-margin", "px 0..10000", "16", "distance of the watermark from the edges", true,
     [](options& o, const std::string& v) {
       o.watermark_margin = static_cast<int>(parse_uint("watermark-margin", v, 0, 10000));
     }},
    {"watermark-opacity", "0..1", "0.5", "opacity of the watermark", true,
     [](options& o, const std::string& v) {
       char* end = nullptr;
       double d = std::strtod(v.c_str(), &end);
       if (v.empty() || *end != '\0' || !(d >= 0 && d <= 1))
         throw usage_error("--watermark-opacity: '" + v + "' is not a number from 0 to 1");
       o.watermark_opacity = d;
     }},
    {"batch-size", "int 1..100000", "200", "commit when this many outcomes are buffered", true,
     [](options& o, const std::string& v) {
       o.batch_size = parse_uint("batch-size", v, 1, 100000);
     }},
    {"flush-interval", "ms 1..60000", "100", "commit at the latest this long after an outcome",
     true,
     [](options& o, const std::string& v) {
       o.flush_interval = std::chrono::milliseconds{parse_uint("flush-interval", v, 1, 60000)};
     }},
    {"window", "int 1..1000000", "4096",
     "files dispatched but not yet durable, at most (back-pressure)", true,
     [](options& o, const std::string& v) { o.window = parse_uint("window", v, 1, 1000000); }},
    {"db-reconnect-limit", "ms 0..86400000", "60000",
     "how long a lost PostgreSQL connection is retried (capped exponential backoff, the batch "
     "held) before the job ends interrupted with exit code 3", true,
     [](options& o, const std::string& v) {
       o.db_reconnect_limit =
         std::chrono::milliseconds{parse_uint("db-reconnect-limit", v, 0, 86400000)};
     }},
    {"include", "glob", "(all)",
     "sync only matching files (repeatable; no '/': base name, else path; ** spans folders)",
     true, [](options& o, const std::string& v) { o.includes.push_back(v); }},
    {"exclude", "glob", "(none)", "leave matching files and folders out (repeatable)", true,
     [](options& o, const std::string& v) { o.excludes.push_back(v); }},
    {"checksum", "flag", "off", "compare content hashes, not size+mtime, to find unchanged files",
     false, [](options& o, const std::string&) { o.checksum = true; }},
    {"dry-run", "flag", "off", "show what a sync would do; write nothing", false,
     [](options& o, const std::string&) { o.dry_run = true; }},
    {"allow-empty-source", "flag", "off",
     "accept an empty source although the database knows files under it", false,
     [](options& o, const std::string&) { o.allow_empty_source = true; }},
    {"progress", "auto|bar|plain|json|none", "auto",
     "progress output: bar on a terminal, plain log lines, JSON lines on stdout, or none", true,
     [](options& o, const std::string& v) {
       if (v == "auto")
         o.progress = progress_mode::automatic;
       else if (v == "bar")
         o.progress = progress_mode::bar;
       else if (v == "plain")
         o.progress = progress_mode::plain;
       else if (v == "json")
         o.progress = progress_mode::json;
       else if (v == "none")
         o.progress = progress_mode::none;
       else
         throw usage_error("--progress: '" + v + "' is not one of auto, bar, plain, json, none");
     }},
    {"log-level", "level", "info", "trace, debug, info, warn, error, critical or off", true,
     [](options& o, const std::string& v) {
       static const char* levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
       for (auto l : levels)
         if (v == l) {
           o.log_level = v;
           return;
         }
       throw usage_error("--log-level: '" + v
                         + "' is not one of trace, debug, info, warn, error, critical, off");
     }},
    {"json", "flag", "off", "status: print JSON", false,
     [](options& o, const std::string&) { o.json = true; }},
    {"watch", "flag", "off", "status: refresh every second until the job stops running", false,
     [](options& o, const std::string&) { o.watch = true; }},
    {"help", "flag", "", "show this help", false,
     [](options& o, const std::string&) { o.help = true; }},
  };
  return defs;
}

const option_def* find(const std::string& name) {
  for (auto& d : table())
    if (name == d.name)
      return &d;
  return nullptr;
}

} // namespace

options parse_command_line(int argc, const char* const* argv) {
  options o;
  bool only_positional = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-' ) {
      if (o.command.empty())
        o.command = arg;
      else
        o.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "-h") {
      o.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0)
      throw usage_error("unknown option '" + arg + "' (see mediasync --help)");
    auto eq = arg.find('=');
    std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    auto def = find(name);
    if (!def)
      throw usage_error("unknown option '--" + name + "' (see mediasync --help)");
    std::string value;
    if (def->takes_value) {
      if (eq != std::string::npos)
        value = arg.substr(eq + 1);
      else if (i + 1 < argc)
        value = argv[++i];
      else
        throw usage_error("--" + name + " needs a value (" + def->type + ")");
    } else if (eq != std::string::npos) {
      throw usage_error("--" + name + " is a flag and takes no value");
    }
    def->apply(o, value);
  }
  if (o.command.empty() && !o.help)
    throw usage_error("no command given (see mediasync --help)");
  return o;
}

std::string help_text() {
  std::ostringstream out;
  out << "mediasync: sync media trees into a library, every result recorded in a database.\n\n"
         "Commands:\n"
         "  sync SOURCE DEST     copy new and changed files of SOURCE into the library DEST\n"
         "  resume JOB           finish an interrupted job, redoing only what was not committed\n"
         "  status [JOB]         show a job (default: the newest); --json, --watch\n"
         "  jobs                 list the newest jobs; --json\n"
         "  migrate              create the schema or apply pending migrations\n"
         "  help                 this text\n\n"
         "Options:\n";
  for (auto& d : table()) {
    std::string left = std::string{"  --"} + d.name + (d.takes_value ? " <" + std::string{d.type} + ">" : "");
    out << left;
    if (left.size() < 34)
      out << std::string(34 - left.size(), ' ');
    else
      out << "\n" << std::string(34, ' ');
    out << d.help;
    if (*d.deflt)
      out << " [default: " << d.deflt << "]";
    out << "\n";
  }
  out << "\nExit codes:\n"
         "  0    every file ok (or skipped)\n"
         "  1    the job finished, some files failed (see file_results)\n"
         "  2    usage or configuration error: nothing was done\n"
         "  3    fatal: database or destination unusable, or the source refused\n"
         "  130  interrupted (SIGINT/SIGTERM): the job is resumable with 'resume JOB'\n";
  return out.str();
}

} // namespace ms::app
