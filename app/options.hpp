// The command line: one table of options, parsed into typed settings.
// Every option is named once here with its type, default and meaning.
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

/// Every setting of a run, defaults included.
struct options {
  std::string command;                 ///< sync, resume, status, jobs, help, version
  std::vector<std::string> positional; ///< the command's operands
  std::string db = "./mediasync.db";
  std::size_t workers = 8;             ///< sync stage (media-sync queue)
  std::size_t processing_workers = 10; ///< processing stage (metadata + thumbnails)
  std::size_t watermark_workers = 5;   ///< watermark stage
  bool thumbnails = true;
  bool watermark = true;
  std::vector<int> thumbnail_sizes{256, 1024};
  std::string thumbnail_format = "jpeg";
  int quality = 82;
  std::uint64_t max_pixels = 268'402'689;
  std::string watermark_text = "preview";
  std::string watermark_image;
  std::string watermark_position = "bottom-right";
  int watermark_margin = 16;
  double watermark_opacity = 0.5;
  std::size_t batch_size = 200;
  std::chrono::milliseconds flush_interval{100};
  std::size_t window = 4096;
  std::chrono::milliseconds db_reconnect_limit{60000};  ///< give up on a lost server after this
  std::vector<std::string> includes;
  std::vector<std::string> excludes;
  bool checksum = false;
  bool dry_run = false;
  bool allow_empty_source = false;
  progress_mode progress = progress_mode::automatic;
  std::string log_level = "info";
  bool json = false;
  bool watch = false;
  bool help = false;
};

/// Parses argv (without the program name). Throws usage_error.
options parse_command_line(int argc, const char* const* argv);

/// The full help text: commands, every option with type, default and meaning, exit codes.
std::string help_text();

} // namespace ms::app
