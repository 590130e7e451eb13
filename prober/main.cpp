// flexmon-prober --config FILE --node ID: the node daemon (see prober/prober.h).
// flexmon-prober run TOOL ...: one measurement by hand, no manager (run_cli.h).
#include <cstring>
#include <string>

#include "common/daemon.h"
#include "prober/prober.h"
#include "prober/run_cli.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "run") == 0)
    return flexmon::prober::run_main(argc - 1, argv + 1);
  std::string node;
  flexmon::DaemonSpec spec;
  spec.name = "flexmon-prober";
  spec.summary =
      "flexmon prober: runs assigned measurements on one node, answers peers' probes "
      "(`flexmon-prober run --help`: one measurement by hand)";
  spec.add_options = [&](CLI::App& app) {
    app.add_option("--node", node, "this node's id (one of the config's nodes[])")->required();
  };
  spec.check = [&](const flexmon::Config& config) { flexmon::check_prober_config(config, node); };
  spec.start = [&](const flexmon::Config& config) { return flexmon::start_prober(config, node); };
  return flexmon::daemon_main(argc, argv, spec);
}
