// The daemon's one entry point for running a stream's measurement: latency
// over UDP (default namespace) on the shared asynchronous LatencyProber, every
// other tool or method (icmp, tcp, abw, throughput, or any stream with a
// netns) on ToolRunner's worker threads (bandwidth tools one at a time).
// `done` always runs on the event loop's thread, as the stream runner expects.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "prober/event_loop.h"
#include "prober/schedule.h"
#include "prober/tools.h"

namespace flexmon::wire {
class Result;
class Stream;
}  // namespace flexmon::wire

namespace flexmon::prober {

class LatencyProber;

class Measurements {
 public:
  using Done = std::function<void(wire::Result)>;
  // Binds the UDP probing socket to `source_address`; `key` seals abw and
  // throughput probes. Throws std::runtime_error on failure.
  Measurements(EventLoop& loop, const std::string& source_address, const std::string& node,
               const std::string& key, unsigned worker_threads = 8, OutageOptions outage = {});
  ~Measurements();

  // Starts one measurement of `stream` for a slot due at `due`.
  void measure(std::shared_ptr<const wire::Stream> stream, MonoTime due, Done done);
  // The same for a copy of `stream`, due now.
  void measure(const wire::Stream& stream, Done done);

 private:
  EventLoop& loop_;
  std::unique_ptr<LatencyProber> latency_;
  std::unique_ptr<ToolRunner> tools_;
};

}  // namespace flexmon::prober
