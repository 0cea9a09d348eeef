#include "app/options.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <functional>
#include <set>
#include <sstream>

#include "storage/store.hpp"

namespace ms::app {
namespace {

/// A value that does not fit its key; apply_settings() adds where it was given.
struct value_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class value_kind { value, flag, list };

/// Where a setting may be given.
enum class setting_scope {
  command_line,  ///< only on the command line (dry-run, json, ...)
  global,        ///< a global [section] of a config file, or the command line
  job,           ///< also in a [job NAME] section (overrides the global value)
  job_only,      ///< only in a [job NAME] section (source, dest, interval, watch)
};

struct setting_def {
  const char* section;  ///< config file section; "" for command-line only
  const char* name;     ///< key in the section and long option without dashes
  const char* type;     ///< for help: int, string, glob, bool, ...
  const char* deflt;    ///< for help
  const char* help;
  setting_scope scope;
  value_kind kind;
  std::function<void(options&, const std::string&)> apply;
};

std::uint64_t parse_uint(const std::string& v, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (v.empty() || ec == std::errc::invalid_argument || p != v.data() + v.size())
    throw value_error("'" + v + "' is not a whole number");
  if (ec == std::errc::result_out_of_range || x < lo || x > hi)
    throw value_error("'" + v + "' is out of range (" + std::to_string(lo) + " to "
                      + std::to_string(hi) + ")");
  return x;
}

bool parse_bool(const std::string& v) {
  for (auto t : {"true", "yes", "on", "1"})
    if (v == t)
      return true;
  for (auto f : {"false", "no", "off", "0"})
    if (v == f)
      return false;
  throw value_error("'" + v + "' is not a boolean (true or false)");
}

std::string one_of(const std::string& v, std::initializer_list<const char*> allowed) {
  for (auto a : allowed)
    if (v == a)
      return v;
  std::string list;
  for (auto a : allowed)
    list += (list.empty() ? "" : ", ") + std::string{a};
  throw value_error("'" + v + "' is not one of " + list);
}

std::chrono::milliseconds duration_in(const std::string& v, std::int64_t bare_unit_ms,
                                      std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
  std::chrono::milliseconds d;
  try {
    d = parse_duration(v, bare_unit_ms);
  } catch (const usage_error& e) {
    throw value_error(e.what());
  }
  if (d < lo || d > hi)
    throw value_error("'" + v + "' is out of range (" + std::to_string(lo.count()) + " ms to "
                      + std::to_string(hi.count()) + " ms)");
  return d;
}

/// host:port with a port number; [v6]:port for IPv6 literals. "off" disables.
std::string parse_address(const std::string& v) {
  if (v == "off")
    return v;
  auto colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw value_error("'" + v + "' is not HOST:PORT (e.g. 127.0.0.1:9464) or off");
  auto host = v.substr(0, colon);
  if (host.front() == '[' && host.back() != ']')
    throw value_error("'" + v + "': an IPv6 address needs brackets, e.g. [::1]:9464");
  if (host.front() != '[' && host.find(':') != std::string::npos)
    throw value_error("'" + v + "': write an IPv6 address in brackets, e.g. [::1]:9464");
  parse_uint(v.substr(colon + 1), 0, 65535);
  return v;
}

constexpr auto global = setting_scope::global;
constexpr auto job = setting_scope::job;
constexpr auto job_only = setting_scope::job_only;
constexpr auto cli = setting_scope::command_line;
constexpr auto val = value_kind::value;
constexpr auto flag = value_kind::flag;
constexpr auto list = value_kind::list;
using ms_t = std::chrono::milliseconds;

const std::vector<setting_def>& table() {
  static const std::vector<setting_def> defs = {
    // -- [storage]
    {"storage", "db", "path|url", "./mediasync.db",
     "database: a SQLite file (PATH or sqlite:PATH) or PostgreSQL (postgresql://user@host/db, "
     "postgres://..., or 'host=... dbname=...'; passwords from PGPASSWORD or ~/.pgpass)",
     global, val,
     [](options& o, const std::string& v) {
       try {
         storage::check_url(v);
       } catch (const storage::error& e) {
         throw value_error(e.what());
       }
       o.db = v;
     }},
    {"storage", "db-reconnect-limit", "duration", "60s",
     "how long a lost PostgreSQL connection is retried (capped exponential backoff, the batch "
     "held) before the job ends interrupted with exit code 3 (bare number: ms)",
     global, val,
     [](options& o, const std::string& v) {
       o.db_reconnect_limit = duration_in(v, 1, ms_t{0}, ms_t{86400000});
     }},
    // -- [writer]
    {"writer", "batch-size", "int 1..100000", "200",
     "commit when this many outcomes that wrote library files (or 8x as many in all) are buffered",
     global, val,
     [](options& o, const std::string& v) { o.batch_size = parse_uint(v, 1, 100000); }},
    {"writer", "flush-interval", "duration", "100ms",
     "commit at the latest this long after an outcome (bare number: ms)", global, val,
     [](options& o, const std::string& v) {
       o.flush_interval = duration_in(v, 1, ms_t{1}, ms_t{60000});
     }},
    // -- [stages]
    {"stages", "sync-workers", "int 1..1024", "8", "workers of the sync stage (read, hash, copy)",
     global, val,
     [](options& o, const std::string& v) { o.workers = parse_uint(v, 1, 1024); }},
    {"stages", "workers", "int 1..1024", "8", "the same as sync-workers", global, val,
     [](options& o, const std::string& v) { o.workers = parse_uint(v, 1, 1024); }},
    {"stages", "processing-workers", "int 1..1024", "10",
     "workers of the processing stage (image metadata and thumbnails)", global, val,
     [](options& o, const std::string& v) { o.processing_workers = parse_uint(v, 1, 1024); }},
    {"stages", "watermark-workers", "int 1..1024", "5",
     "workers of the watermark stage (previews)", global, val,
     [](options& o, const std::string& v) { o.watermark_workers = parse_uint(v, 1, 1024); }},
    {"stages", "thumbnails", "bool", "true",
     "run the processing stage (metadata, thumbnails) on images; false also switches the "
     "watermark stage off (command line: --no-thumbnails)",
     job, flag, [](options& o, const std::string& v) { o.thumbnails = parse_bool(v); }},
    {"stages", "watermark", "bool", "true",
     "run the watermark stage (previews) (command line: --no-watermark)", job, flag,
     [](options& o, const std::string& v) { o.watermark = parse_bool(v); }},
    // -- [imaging]
    {"imaging", "thumbnail-sizes", "list of px", "256,1024",
     "long edges of the thumbnails, comma-separated (1..16384)", global, val,
     [](options& o, const std::string& v) {
       std::vector<int> sizes;
       std::size_t start = 0;
       for (;;) {
         auto end = v.find(',', start);
         auto part = v.substr(start, end == std::string::npos ? std::string::npos : end - start);
         sizes.push_back(static_cast<int>(parse_uint(part, 1, 16384)));
         if (end == std::string::npos)
           break;
         start = end + 1;
       }
       o.thumbnail_sizes = std::move(sizes);
     }},
    {"imaging", "thumbnail-format", "jpeg|webp", "jpeg", "format of thumbnails and previews",
     global, val,
     [](options& o, const std::string& v) { o.thumbnail_format = one_of(v, {"jpeg", "webp"}); }},
    {"imaging", "quality", "int 1..100", "82", "encoder quality of thumbnails and previews",
     global, val,
     [](options& o, const std::string& v) { o.quality = static_cast<int>(parse_uint(v, 1, 100)); }},
    {"imaging", "max-pixels", "int", "268402689",
     "refuse images with more pixels (width x height)", global, val,
     [](options& o, const std::string& v) {
       o.max_pixels = parse_uint(v, 1, std::uint64_t{1} << 40);
     }},
    // -- [watermark]
    {"watermark", "watermark-text", "text", "preview",
     "text drawn on previews (unless watermark-image)", global, val,
     [](options& o, const std::string& v) { o.watermark_text = v; }},
    {"watermark", "watermark-image", "path", "(none)",
     "overlay image drawn on previews (PNG with alpha)", global, val,
     [](options& o, const std::string& v) { o.watermark_image = v; }},
    {"watermark", "watermark-position", "position", "bottom-right",
     "top-left, top-right, bottom-left, bottom-right or center", global, val,
     [](options& o, const std::string& v) {
       o.watermark_position =
         one_of(v, {"top-left", "top-right", "bottom-left", "bottom-right", "center"});
     }},
    {"watermark", "watermark-margin", "px 0..10000", "16",
     "distance of the watermark from the edges", global, val,
     [](options& o, const std::string& v) {
       o.watermark_margin = static_cast<int>(parse_uint(v, 0, 10000));
     }},
    {"watermark", "watermark-opacity", "0..1", "0.5", "opacity of the watermark", global, val,
     [](options& o, const std::string& v) {
       char* end = nullptr;
       double d = std::strtod(v.c_str(), &end);
       if (v.empty() || *end != '\0' || !(d >= 0 && d <= 1))
         throw value_error("'" + v + "' is not a number from 0 to 1");
       o.watermark_opacity = d;
     }},
    // -- [scan]
    {"scan", "window", "int 1..1000000", "4096",
     "files dispatched but not yet durable, at most (back-pressure)", job, val,
     [](options& o, const std::string& v) { o.window = parse_uint(v, 1, 1000000); }},
    {"scan", "include", "glob", "(all)",
     "sync only matching files (repeatable; no '/': base name, else path; ** spans folders)",
     job, list, [](options& o, const std::string& v) { o.includes.push_back(v); }},
    {"scan", "exclude", "glob", "(none)", "leave matching files and folders out (repeatable)",
     job, list, [](options& o, const std::string& v) { o.excludes.push_back(v); }},
    {"scan", "checksum", "bool", "false",
     "compare content hashes, not size+mtime, to find unchanged files", job, flag,
     [](options& o, const std::string& v) { o.checksum = parse_bool(v); }},
    {"scan", "allow-empty-source", "bool", "false",
     "accept an empty source although the database knows files under it", job, flag,
     [](options& o, const std::string& v) { o.allow_empty_source = parse_bool(v); }},
    // -- [log]
    {"log", "progress", "auto|bar|plain|json|none", "auto",
     "progress output: bar on a terminal, plain log lines, JSON lines on stdout, or none",
     global, val,
     [](options& o, const std::string& v) {
       auto m = one_of(v, {"auto", "bar", "plain", "json", "none"});
       o.progress = m == "auto"    ? progress_mode::automatic
                    : m == "bar"   ? progress_mode::bar
                    : m == "plain" ? progress_mode::plain
                    : m == "json"  ? progress_mode::json
                                   : progress_mode::none;
     }},
    {"log", "log-level", "level", "info", "trace, debug, info, warn, error, critical or off",
     global, val,
     [](options& o, const std::string& v) {
       o.log_level = one_of(v, {"trace", "debug", "info", "warn", "error", "critical", "off"});
     }},
    // -- [node]
    {"node", "http", "host:port|off", "127.0.0.1:9464",
     "node: serve GET /metrics (Prometheus) and GET /status (JSON) here; port 0 picks a free "
     "one; any address other than loopback must be given explicitly",
     global, val, [](options& o, const std::string& v) { o.http = parse_address(v); }},
    {"node", "debounce", "duration", "500ms",
     "node, watched jobs: a file closed after writing is synced once it saw no change this "
     "long (bare number: ms)",
     global, val,
     [](options& o, const std::string& v) { o.debounce = duration_in(v, 1, ms_t{10}, ms_t{600000}); }},
    {"node", "settle", "duration", "30s",
     "node, watched jobs: a file modified but never closed is synced after this long without "
     "change (bare number: ms)",
     global, val,
     [](options& o, const std::string& v) { o.settle = duration_in(v, 1, ms_t{100}, ms_t{86400000}); }},
    // -- [cluster]
    {"cluster", "listen", "host:port|off", "off",
     "coordinator: accept worker nodes here (CAF middleman over TLS; a bare port listens on "
     "127.0.0.1, any other address must be given explicitly); needs ca, cert and key",
     global, val, [](options& o, const std::string& v) {
       o.listen = v.find(':') == std::string::npos && v != "off" ? parse_address("127.0.0.1:" + v)
                                                                 : parse_address(v);
     }},
    {"cluster", "join", "host:port", "(none)",
     "worker: the coordinator to join (mediasync worker --join HOST:PORT); needs ca, cert, key",
     global, val, [](options& o, const std::string& v) {
       if (v == "off")
         throw value_error("'off' is not HOST:PORT");
       o.join = parse_address(v);
     }},
    {"cluster", "ca", "path", "(none)", "the cluster CA certificate (PEM): only nodes whose "
     "certificate it signed can join", global, val,
     [](options& o, const std::string& v) { o.tls_ca = v; }},
    {"cluster", "cert", "path", "(none)", "this node's certificate (PEM, signed by the cluster CA)",
     global, val, [](options& o, const std::string& v) { o.tls_cert = v; }},
    {"cluster", "key", "path", "(none)", "this node's private key (PEM)", global, val,
     [](options& o, const std::string& v) { o.tls_key = v; }},
    {"cluster", "node-name", "name", "(host name)",
     "this node's name, recorded in file_results.node for its work", global, val,
     [](options& o, const std::string& v) {
       if (v.empty() || v.size() > 64
           || v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
                != std::string::npos)
         throw value_error("'" + v + "' is not a node name (letters, digits, '-', '_', '.'; at "
                           "most 64)");
       o.node_name = v;
     }},
    {"cluster", "path-map", "FROM=TO", "(none)",
     "worker: the coordinator's path FROM is TO on this node (repeatable; the longest FROM "
     "that matches whole path components wins)", global, list,
     [](options& o, const std::string& v) {
       auto eq = v.find('=');
       if (eq == std::string::npos || eq == 0 || eq + 1 == v.size() || v[0] != '/'
           || v[eq + 1] != '/')
         throw value_error("'" + v + "' is not FROM=TO with two absolute paths");
       o.path_map.push_back(v);
     }},
    {"cluster", "wait-for-nodes", "int 0..1000", "0",
     "coordinator: start jobs once this many worker nodes joined (or wait-timeout passed)",
     global, val,
     [](options& o, const std::string& v) { o.wait_for_nodes = parse_uint(v, 0, 1000); }},
    {"cluster", "wait-timeout", "duration", "60s",
     "coordinator: how long jobs wait for wait-for-nodes (bare number: ms)", global, val,
     [](options& o, const std::string& v) {
       o.wait_timeout = duration_in(v, 1, ms_t{0}, ms_t{86400000});
     }},
    // -- [job NAME]
    {"job", "source", "path", "(required)", "the source tree of the job", job_only, val,
     [](options& o, const std::string& v) {
       if (v.empty())
         throw value_error("the source path is empty");
       o.source = v;
     }},
    {"job", "dest", "path", "(required)", "the library the job syncs into", job_only, val,
     [](options& o, const std::string& v) {
       if (v.empty())
         throw value_error("the destination path is empty");
       o.dest = v;
     }},
    {"job", "interval", "duration", "1h",
     "node: run the job this often (a full scan); 0: only when the node starts (bare number: s)",
     job_only, val,
     [](options& o, const std::string& v) {
       o.interval = duration_in(v, 1000, ms_t{0}, ms_t{365LL * 86400000});
       if (o.interval.count() != 0 && o.interval < ms_t{1000})
         throw value_error("'" + v + "' is shorter than 1 s (use 0 for only at start)");
     }},
    {"job", "watch", "bool", "false",
     "node: watch the source (inotify) and sync new or changed files as they are written",
     job_only, flag, [](options& o, const std::string& v) { o.watch_source = parse_bool(v); }},
    // -- command line only
    {"", "config", "file", "(none)",
     "read settings from this config file (the command line wins)", cli, val,
     [](options& o, const std::string& v) { o.config = v; }},
    {"", "dry-run", "flag", "off", "sync: show what a sync would do; write nothing", cli, flag,
     [](options& o, const std::string& v) { o.dry_run = parse_bool(v); }},
    {"", "json", "flag", "off", "status, jobs: print JSON", cli, flag,
     [](options& o, const std::string& v) { o.json = parse_bool(v); }},
    {"", "watch", "flag", "off", "status: refresh every second until the job stops running", cli,
     flag, [](options& o, const std::string& v) { o.watch = parse_bool(v); }},
  };
  return defs;
}

/// The definition of `key` in `scope_filter` terms: config keys (not command-line only)
/// when `config` is set, else command-line keys (everything but job_only).
const setting_def* find(const std::string& key, bool config) {
  for (auto& d : table()) {
    if (key != d.name)
      continue;
    if (config ? d.scope == cli : d.scope == job_only)
      continue;
    return &d;
  }
  return nullptr;
}

/// Edit distance, for "did you mean".
std::size_t distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string suggestion(const std::string& key) {
  const setting_def* best = nullptr;
  std::size_t best_d = 3;
  for (auto& d : table()) {
    auto dist = distance(key, d.name);
    if (dist < best_d) {
      best_d = dist;
      best = &d;
    }
  }
  return best ? std::string{" (did you mean '"} + best->name + "'?)" : std::string{};
}

} // namespace

std::chrono::milliseconds parse_duration(const std::string& v, std::int64_t bare_unit_ms) {
  std::size_t digits = 0;
  while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9')
    ++digits;
  if (digits == 0)
    throw usage_error("'" + v + "' is not a duration (a whole number with ms, s, m or h)");
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + digits, n);
  auto unit = v.substr(digits);
  std::int64_t mult = unit.empty() ? bare_unit_ms
                      : unit == "ms" ? 1
                      : unit == "s"  ? 1000
                      : unit == "m"  ? 60000
                      : unit == "h"  ? 3600000
                                     : -1;
  if (mult < 0)
    throw usage_error("'" + v + "' has an unknown unit '" + unit + "' (use ms, s, m or h)");
  (void) p;
  if (ec != std::errc{} || n > static_cast<std::uint64_t>(INT64_MAX / mult))
    throw usage_error("'" + v + "' is too long a duration");
  return std::chrono::milliseconds{static_cast<std::int64_t>(n) * mult};
}

bool is_list_key(const std::string& key) {
  auto d = find(key, true);
  return d && d->kind == value_kind::list;
}

bool is_config_section(const std::string& section) {
  return std::any_of(table().begin(), table().end(), [&](const setting_def& d) {
    return d.scope != cli && d.scope != job_only && section == d.section;
  });
}

void check_config_key(const std::string& section, const std::string& key,
                      const std::string& origin) {
  auto d = find(key, true);
  if (!d) {
    if (find(key, false))
      throw usage_error(origin + ": '" + key + "' is a command-line option, not a config key");
    throw usage_error(origin + ": unknown key '" + key + "'" + suggestion(key)
                      + " (see mediasync help config)");
  }
  if (section == "job") {
    if (d->scope != job && d->scope != job_only)
      throw usage_error(origin + ": '" + key + "' cannot be set per job; it belongs in ["
                        + d->section + "] and is shared by every job of a run");
    return;
  }
  if (d->scope == job_only)
    throw usage_error(origin + ": '" + key + "' belongs in a [job NAME] section");
  if (section != d->section)
    throw usage_error(origin + ": '" + key + "' belongs in [" + d->section + "], not [" + section
                      + "]");
}

void apply_settings(options& o, const std::vector<assignment>& settings) {
  std::set<std::string> lists_touched;
  for (auto& a : settings) {
    auto d = find(a.key, a.in_config);
    if (!d)
      throw usage_error(a.origin + ": unknown key '" + a.key + "'" + suggestion(a.key));
    if (d->kind == value_kind::list && lists_touched.insert(a.key).second)
      (a.key == "include" ? o.includes : a.key == "exclude" ? o.excludes : o.path_map).clear();
    try {
      d->apply(o, a.value);
    } catch (const value_error& e) {
      throw usage_error(a.origin + ": " + e.what());
    }
  }
}

command_line parse_command_line(int argc, const char* const* argv) {
  command_line c;
  bool only_positional = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      if (c.command.empty())
        c.command = arg;
      else
        c.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      c.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0)
      throw usage_error("unknown option '" + arg + "' (see mediasync --help)");
    auto eq = arg.find('=');
    std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    auto def = find(name, false);
    bool negated = false;
    if (!def && name.rfind("no-", 0) == 0) {
      def = find(name.substr(3), false);
      negated = def && def->kind == value_kind::flag;
      if (!negated)
        def = nullptr;
    }
    if (!def) {
      auto in_config = find(name, true);
      if (in_config)
        throw usage_error("--" + name + " can only be given in a [job NAME] section of a "
                          "config file (see mediasync help config)");
      throw usage_error("unknown option '--" + name + "'" + suggestion(name)
                        + " (see mediasync --help)");
    }
    std::string key = def->name;
    std::string value;
    if (def->kind == value_kind::flag) {
      value = eq == std::string::npos ? "true" : arg.substr(eq + 1);
      if (negated) {
        if (eq != std::string::npos)
          throw usage_error("--" + name + " takes no value");
        value = "false";
      }
    } else if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      throw usage_error("--" + name + " needs a value (" + def->type + ")");
    }
    c.settings.push_back({key, value, "--" + name});
  }
  if (c.command.empty() && !c.help)
    throw usage_error("no command given (see mediasync --help)");
  // Values are checked now, so a typo fails before anything (a config file) is read.
  options scratch;
  apply_settings(scratch, c.settings);
  return c;
}

std::string help_text() {
  std::ostringstream out;
  out << "mediasync: sync media trees into a library, every result recorded in a database.\n\n"
         "Commands:\n"
         "  sync SOURCE DEST     copy new and changed files of SOURCE into the library DEST\n"
         "  run CONFIG [JOB...]  run the jobs of a config file (all by default), together\n"
         "  node CONFIG          long-running service: jobs on their schedule, watched sources,\n"
         "                       SIGHUP reloads CONFIG, SIGTERM stops; /metrics and /status\n"
         "  resume JOB           finish an interrupted job, redoing only what was not committed\n"
         "  status [JOB]         show a job (default: the newest); --json, --watch\n"
         "  jobs                 list the newest jobs; --json\n"
         "  migrate              create the schema or apply pending migrations\n"
         "  worker --join HOST:PORT  a worker node: offers its stage pools to a coordinator\n"
         "                       (a node or run with [cluster] listen); TLS with ca/cert/key\n"
         "  help [config]        this text; 'help config': the config file format\n\n"
         "Options (each also a config file key in its [section], see 'help config'; a flag\n"
         "takes --name, --no-name or --name=true|false):\n";
  for (auto& d : table()) {
    if (d.scope == job_only)
      continue;
    bool is_flag = d.kind == value_kind::flag;
    std::string left = std::string{"  --"} + d.name + (is_flag ? "" : " <" + std::string{d.type} + ">");
    out << left;
    if (left.size() < 34)
      out << std::string(34 - left.size(), ' ');
    else
      out << "\n" << std::string(34, ' ');
    out << d.help;
    if (*d.section)
      out << " [" << d.section << "; default: " << d.deflt << "]";
    out << "\n";
  }
  out << "  -h, --help                      show this help\n"
         "\nExit codes:\n"
         "  0    every file ok (or skipped)\n"
         "  1    the job finished, some files failed (see file_results)\n"
         "  2    usage or configuration error: nothing was done\n"
         "  3    fatal: database or destination unusable, or the source refused\n"
         "  130  interrupted (SIGINT/SIGTERM): the job is resumable with 'resume JOB'\n";
  return out.str();
}

std::string config_help_text() {
  std::ostringstream out;
  out << "mediasync config files (INI):\n\n"
         "  # a comment (also ';'), on a line of its own\n"
         "  [storage]\n"
         "  db = sqlite:/var/lib/mediasync/library.db\n\n"
         "  [job photos]            # a named job: mediasync run FILE photos\n"
         "  source = /srv/incoming/photos\n"
         "  dest = /srv/library/photos\n"
         "  include = *.jpg         # list keys repeat: one value per line\n\n"
         "Each key belongs to one section. Values run to the end of the line (surrounding\n"
         "blanks trimmed; \"double quotes\" keep them). Durations take ms, s, m or h. Booleans\n"
         "are true/false (yes/no, on/off, 1/0). Precedence: the command line, then the job's\n"
         "section, then the global sections, then the defaults. A job section may set the\n"
         "keys marked 'job'; worker counts, imaging and watermark settings are shared by all\n"
         "jobs of a run (one worker pool). Relative paths are taken from the working directory,\n"
         "as on the command line.\n";
  std::string section;
  for (auto& d : table()) {
    if (d.scope == cli)
      continue;
    if (section != d.section) {
      section = d.section;
      out << "\n[" << (section == "job" ? "job NAME" : section) << "]\n";
    }
    std::string left = std::string{"  "} + d.name + " = <" + d.type + ">";
    out << left;
    if (left.size() < 40)
      out << std::string(40 - left.size(), ' ');
    else
      out << "\n" << std::string(40, ' ');
    out << d.help << " [default: " << d.deflt << (d.scope == job ? "; job" : "") << "]\n";
  }
  return out.str();
}

} // namespace ms::app
