// flexmon-prober --config FILE --node ID: the node daemon (see prober/prober.h).
#include <string>

#include "common/daemon.h"
#include "prober/prober.h"

int main(int argc, char** argv) {
  std::string node;
  flexmon::DaemonSpec spec;
  spec.name = "flexmon-prober";
  spec.summary = "flexmon prober: runs assigned measurements on one node, answers peers' probes";
  spec.add_options = [&](CLI::App& app) {
    app.add_option("--node", node, "this node's id (one of the config's nodes[])")->required();
  };
  spec.check = [&](const flexmon::Config& config) { flexmon::check_prober_config(config, node); };
  spec.start = [&](const flexmon::Config& config) { return flexmon::start_prober(config, node); };
  return flexmon::daemon_main(argc, argv, spec);
}
