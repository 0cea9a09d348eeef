// The mediasync commands. Each returns the process exit code (see help_text()).
#pragma once

#include "app/options.hpp"

namespace ms::app {

namespace exit_code {
constexpr int ok = 0;
constexpr int failed_files = 1;
constexpr int usage = 2;
constexpr int fatal = 3;
constexpr int interrupted = 130;
} // namespace exit_code

int cmd_sync(const options& opt);
int cmd_resume(const options& opt);
int cmd_status(const options& opt);
int cmd_jobs(const options& opt);
/// Creates the schema or applies pending migrations, then exits.
int cmd_migrate(const options& opt);

/// Sets up spdlog on stderr at the given level.
void setup_logging(const std::string& level);

} // namespace ms::app
