// Config files: INI text with global [sections] and named [job NAME] sections.
// Parsing checks everything (syntax, keys, sections, values, required keys) before
// anything runs; errors name the file, the line, the key and what is expected.
#pragma once

#include <string>
#include <vector>

#include "app/options.hpp"

namespace ms::app {

/// A [job NAME] section.
struct job_def {
  std::string name;
  std::string origin;                 ///< "FILE:LINE" of its header
  std::vector<assignment> settings;   ///< its keys, in file order
};

/// A parsed, checked config file.
struct config_file {
  std::string path;
  std::vector<assignment> global;     ///< keys of the global sections, in file order
  std::vector<job_def> jobs;          ///< in file order; names are unique
};

/// Parses config text; `name` names it in errors. Checks every value and that each job
/// has its required keys (source, dest). Throws usage_error ("NAME:LINE: ...").
config_file parse_config(const std::string& text, const std::string& name);

/// Reads and parses the file at `path`. Throws usage_error when it cannot be read.
config_file load_config(const std::string& path);

/// Effective settings without a job: defaults, then the config's global sections (if
/// any), then the command line.
options effective_options(const config_file* cfg, const std::vector<assignment>& cli);

/// Effective settings of `job`: defaults, global sections, the job's section, the
/// command line. Sets job_name.
options effective_options(const config_file& cfg, const job_def& job,
                          const std::vector<assignment>& cli);

/// The jobs named in `names` (all if empty), in file order. Throws usage_error for an
/// unknown name or a file without jobs.
std::vector<const job_def*> select_jobs(const config_file& cfg,
                                        const std::vector<std::string>& names);

} // namespace ms::app
