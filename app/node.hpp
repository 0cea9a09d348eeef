// `mediasync node CONFIG`: the long-running service. Runs the config's jobs on their
// schedule, syncs watched sources as files are written, reloads the config on SIGHUP,
// stops cleanly on SIGTERM/SIGINT, and serves GET /metrics and GET /status.
#pragma once

#include <vector>

#include "app/options.hpp"

namespace ms::app {

struct config_file;

/// Runs the node until SIGTERM/SIGINT. Returns the exit code: 0 after a clean stop,
/// 2 for a bad config, 3 when the database or the HTTP address cannot be used.
int cmd_node(const config_file& cfg, const std::vector<assignment>& cli);

} // namespace ms::app
