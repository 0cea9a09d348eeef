// The cluster: CAF's middleman with its OpenSSL module links a coordinator node (the
// one with the database and the progress-writer) and worker nodes (stage pools only).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "app/options.hpp"

namespace caf { class actor_system_config; }

namespace ms::app {

/// This node's name: [cluster] node-name, else the host name.
std::string node_name_of(const options& opt);

/// Checks that the TLS files are given and readable (`role`: "listen" or "join", for the
/// message). Throws usage_error naming what is missing.
void check_tls(const options& opt, const char* role);

/// Loads the middleman and the OpenSSL module into `cfg` with this node's certificate,
/// key and the cluster CA: every link is TLS, and both ends must show a certificate the
/// CA signed.
void configure_cluster(caf::actor_system_config& cfg, const options& opt);

/// FROM=TO pairs of [cluster] path-map.
using path_mapping = std::vector<std::pair<std::string, std::string>>;

/// Parses path-map entries (FROM=TO, both absolute; trailing '/' dropped).
path_mapping parse_path_map(const std::vector<std::string>& entries);

/// `path` with the longest FROM that matches whole leading components replaced by its
/// TO; `path` itself when none matches.
std::string map_path(const path_mapping& map, const std::string& path);

/// Splits HOST:PORT ("[v6]:port" too); throws usage_error.
std::pair<std::string, std::uint16_t> split_address(const std::string& address);

/// `mediasync worker --join HOST:PORT`: joins the coordinator, offers stage pools, does
/// tasks until SIGTERM/SIGINT (exit 0); rejoins when the link breaks.
int cmd_worker(const options& opt, const std::vector<assignment>& cli);

} // namespace ms::app
