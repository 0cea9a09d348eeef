#include "actors/registry.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

namespace ms {
namespace {

registry_actor::behavior_type registry(registry_actor::pointer self, supervisor_actor sup,
                                       imaging_settings settings) {
  return {
    [=](join_atom, const std::string& node) {
      spdlog::info("cluster: node {} is joining (from {})", node, to_string(self->current_sender()
                                                                    ? self->current_sender()->node()
                                                                    : caf::node_id{}));
      return settings;
    },
    [=](offer_atom, std::string& node, std::vector<file_worker_actor>& sync,
        std::vector<file_worker_actor>& processing, std::vector<file_worker_actor>& watermark) {
      self->send(sup, offer_atom::value, std::move(node), std::move(sync), std::move(processing),
                 std::move(watermark));
    },
  };
}

} // namespace

registry_actor spawn_registry(caf::actor_system& sys, supervisor_actor sup,
                              imaging_settings settings) {
  return sys.spawn(registry, std::move(sup), std::move(settings));
}

} // namespace ms
