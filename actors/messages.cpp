#include "actors/messages.hpp"

#include <caf/all.hpp>

#include "actors/interfaces.hpp"

namespace ms {

void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<file_outcome>("file_outcome");
  cfg.add_message_type<std::vector<file_outcome>>("std::vector<file_outcome>");
  cfg.add_message_type<known_file>("known_file");
  cfg.add_message_type<std::vector<known_file>>("std::vector<known_file>");
  cfg.add_message_type<job_row>("job_row");
  cfg.add_message_type<file_task>("file_task");
  cfg.add_message_type<job_progress>("job_progress");
  cfg.add_message_type<job_spec>("job_spec");
  cfg.add_message_type<job_result>("job_result");
  cfg.add_message_type<durable_listener_actor>("durable_listener_actor");
  cfg.add_message_type<file_worker_actor>("file_worker_actor");
  cfg.add_message_type<std::vector<file_worker_actor>>("std::vector<file_worker_actor>");
  cfg.add_message_type<imaging_settings>("imaging_settings");
  cfg.add_message_type<cluster_node>("cluster_node");
  cfg.add_message_type<std::vector<cluster_node>>("std::vector<cluster_node>");
}

std::string error_text(caf::actor_system& sys, const caf::error& err) {
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return sys.render(err);
}

} // namespace ms
