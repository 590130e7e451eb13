// flexmon-prober: the node daemon. It runs the latency streams the manager
// assigns, answers peers' probes (responder), and sends results to the
// collectors until they are acknowledged.
#pragma once

#include <memory>
#include <string>

#include "common/config.h"
#include "common/daemon.h"

namespace flexmon {

// Throws ConfigError unless `node_id` names a node of `config`.
void check_prober_config(const Config& config, const std::string& node_id);

// Raises the node's boot epoch, binds the responder and sockets, and starts
// the event loop. Throws on a start-up failure.
std::unique_ptr<Daemon> start_prober(const Config& config, const std::string& node_id);

}  // namespace flexmon
