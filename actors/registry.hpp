// The registry: the coordinator node's published entry point for worker nodes.
#pragma once

#include "actors/imaging.hpp"
#include "actors/interfaces.hpp"

namespace ms {

/// Spawns the registry in front of `sup`: a worker node's join gets `settings` (what its
/// image stages make), its offered pools go to the supervisor. Publish it (TLS) to let
/// nodes join; nothing else of the coordinator is reachable from the network.
registry_actor spawn_registry(caf::actor_system& sys, supervisor_actor sup,
                              imaging_settings settings);

} // namespace ms
