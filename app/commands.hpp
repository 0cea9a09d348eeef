// The mediasync commands. Each returns the process exit code (see help_text()).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "app/options.hpp"

namespace ms::app {

struct config_file;

namespace exit_code {
constexpr int ok = 0;
constexpr int failed_files = 1;
constexpr int usage = 2;
constexpr int fatal = 3;
constexpr int interrupted = 130;
} // namespace exit_code

/// sync SOURCE DEST
int cmd_sync(options opt, const std::vector<std::string>& args);
/// resume JOB
int cmd_resume(const options& opt, const std::vector<std::string>& args);
/// status [JOB]
int cmd_status(const options& opt, const std::vector<std::string>& args);
/// jobs
int cmd_jobs(const options& opt, const std::vector<std::string>& args);
/// migrate: creates the schema or applies pending migrations, then exits.
int cmd_migrate(const options& opt, const std::vector<std::string>& args);
/// run CONFIG [JOB...]: the jobs named (all by default), together on one engine.
int cmd_run(const config_file& cfg, const std::vector<std::string>& jobs,
            const std::vector<assignment>& cli);

/// Runs `f`, turning exceptions into an error log line and an exit code.
int guarded(const std::function<int()>& f);

/// Sets up spdlog on stderr at the given level.
void setup_logging(const std::string& level);

} // namespace ms::app
