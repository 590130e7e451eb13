// flexmon-collector --config FILE: everything is in the flexmon_collector
// library (collector/collector.h).
#include "collector/collector.h"
#include "common/daemon.h"

int main(int argc, char** argv) {
  return flexmon::daemon_main(
      argc, argv,
      {.name = "flexmon-collector",
       .summary = "flexmon collector: verifies result datagrams, commits them to the cache, acks; "
                  "flushes the cache to the archive",
       .add_options = nullptr,
       .check = flexmon::check_collector_config,
       .check_reachable = flexmon::check_collector_reachable,
       .start = flexmon::start_collector_process,
       .commands = {}});
}
