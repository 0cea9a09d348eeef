// Every setting of mediasync: one table, given on the command line (--key value) or in a
// config file (key = value in the key's [section]), the command line winning. Each
// setting is named once, with its type, default and meaning (see help_text()).
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ms::app {

/// A usage or configuration error: the message names the input and what is wrong. Exit code 2.
class usage_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

enum class progress_mode { automatic, bar, plain, json, none };

/// Every setting of a run, defaults included: the effective settings of one job.
struct options {
  // [storage]
  std::string db = "./mediasync.db";
  std::chrono::milliseconds db_reconnect_limit{60000};  ///< give up on a lost server after this
  // [writer]
  std::size_t batch_size = 200;
  std::chrono::milliseconds flush_interval{100};
  // [stages]
  std::size_t workers = 8;             ///< sync stage (media-sync queue)
  std::size_t processing_workers = 10; ///< processing stage (metadata + thumbnails)
  std::size_t watermark_workers = 5;   ///< watermark stage
  bool thumbnails = true;
  bool watermark = true;
  // [imaging]
  std::vector<int> thumbnail_sizes{256, 1024};
  std::string thumbnail_format = "jpeg";
  int quality = 82;
  std::uint64_t max_pixels = 268'402'689;
  // [watermark]
  std::string watermark_text = "preview";
  std::string watermark_image;
  std::string watermark_position = "bottom-right";
  int watermark_margin = 16;
  double watermark_opacity = 0.5;
  // [scan]
  std::size_t window = 4096;
  std::vector<std::string> includes;
  std::vector<std::string> excludes;
  bool checksum = false;
  bool allow_empty_source = false;
  // [log]
  progress_mode progress = progress_mode::automatic;
  std::string log_level = "info";
  // [node]
  std::string http = "127.0.0.1:9464";  ///< /metrics and /status; "off": none
  std::chrono::milliseconds debounce{500};
  std::chrono::milliseconds settle{30000};
  // [cluster]
  std::string listen = "off";          ///< coordinator: publish the registry here (TLS)
  std::string join;                    ///< worker: the coordinator to join
  std::string tls_ca;                  ///< the cluster CA certificate (PEM)
  std::string tls_cert;                ///< this node's certificate (PEM, signed by the CA)
  std::string tls_key;                 ///< this node's private key (PEM)
  std::string node_name;               ///< file_results.node of this node's work (default: host name)
  std::vector<std::string> path_map;   ///< worker: FROM=TO, coordinator path FROM is TO here
  std::size_t wait_for_nodes = 0;      ///< coordinator: start jobs once this many nodes joined
  std::chrono::milliseconds wait_timeout{60000};
  // [job NAME] (config files only)
  std::string job_name;
  std::string source;
  std::string dest;
  std::chrono::milliseconds interval{3600000};  ///< node: run the job this often; 0: at start only
  bool watch_source = false;                    ///< node: sync changes as they happen (inotify)
  // command line only
  std::string config;                  ///< --config FILE
  bool dry_run = false;
  bool json = false;
  bool watch = false;                  ///< status --watch
};

/// One `key = value` from a config file or one --key value from the command line.
struct assignment {
  std::string key;
  std::string value;
  std::string origin;   ///< where it was given: "--key" or "FILE:LINE: [section] key"
  bool in_config = false;  ///< from a config file (else the command line)
};

/// The command line: the command, its operands and its settings (not yet applied).
struct command_line {
  std::string command;                 ///< sync, resume, status, jobs, migrate, run, node, help, version
  std::vector<std::string> positional; ///< the command's operands
  std::vector<assignment> settings;    ///< in the order given
  bool help = false;
};

/// Parses argv (without the program name): names and value syntax are checked here, values
/// are checked by apply_settings(). Throws usage_error.
command_line parse_command_line(int argc, const char* const* argv);

/// Checks that `key` may be given in config section `section` ("job" for a [job NAME]
/// section). Throws usage_error starting with `origin` when it is unknown, command-line
/// only, or belongs to another section.
void check_config_key(const std::string& section, const std::string& key,
                      const std::string& origin);

/// True if `section` is a known global section name (storage, writer, ...).
bool is_config_section(const std::string& section);

/// True for keys that may repeat, each adding one value to a list (include, exclude,
/// path-map).
bool is_list_key(const std::string& key);

/// Applies settings in order to `o`. Throws usage_error naming each wrong one's origin,
/// key and what is expected. A list key (include, exclude) given several times in one
/// call accumulates; given again in a later call, it replaces.
void apply_settings(options& o, const std::vector<assignment>& settings);

/// The full help text: commands, every option with type, default and meaning, exit codes.
std::string help_text();
/// `mediasync help config`: the config file format and every key by section.
std::string config_help_text();

/// Parses a duration: a whole number with unit ms, s, m or h; a bare number is in
/// `bare_unit_ms` milliseconds. Throws usage_error (without the key) when it does not parse.
std::chrono::milliseconds parse_duration(const std::string& v, std::int64_t bare_unit_ms);

} // namespace ms::app
