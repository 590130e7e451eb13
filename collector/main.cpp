// flexmon-collector --config FILE: the result collector (collector/collector.h).
#include "collector/collector.h"
#include "common/daemon.h"

int main(int argc, char** argv) {
  flexmon::DaemonSpec spec;
  spec.name = "flexmon-collector";
  spec.summary = "flexmon collector: verifies result datagrams, commits them to the cache, acks";
  spec.start = [](const flexmon::Config& config) -> std::unique_ptr<flexmon::Daemon> {
    return flexmon::start_collector(config);
  };
  return flexmon::daemon_main(argc, argv, spec);
}
