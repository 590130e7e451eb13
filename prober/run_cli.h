// `flexmon-prober run TOOL [options]`: runs one measurement (latency, abw,
// throughput) against a target without a manager and prints the result
// (--json: the stored fields), or runs a standalone responder
// (`run responder`) until SIGINT / SIGTERM. Returns the exit code: 0 when
// the status is ok, 1 otherwise, 64 for a usage error, 78 for a bad config.
#pragma once

namespace flexmon::prober {

int run_main(int argc, char** argv);

}  // namespace flexmon::prober
