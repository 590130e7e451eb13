// UDP latency measurements, fping semantics: per measurement `count` packets
// `spacing_ms` apart to the destination's responder, each waited for up to
// `timeout_ms`. All measurements of a prober share one socket bound to the
// node's address; replies are matched by measurement id and packet index.
// RTT = kernel receive timestamp (SO_TIMESTAMPNS) - the kernel's send
// timestamp (SO_TIMESTAMPING TX_SOFTWARE, else the time just before sendto),
// both CLOCK_REALTIME.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "prober/event_loop.h"

namespace flexmon::wire {
class Result;
class Stream;
}  // namespace flexmon::wire

namespace flexmon::prober {

struct LatencyCounters {
  std::atomic<std::uint64_t> measurements{0};
  std::atomic<std::uint64_t> unmatched{0};  // replies for no running measurement
  std::atomic<std::uint64_t> late{0};       // replies after their packet's timeout
  std::atomic<std::uint64_t> icmp_errors{0};
};

class LatencyProber {
 public:
  using Done = std::function<void(wire::Result)>;

  // Binds the probing socket to source_address (any port). `node` labels the
  // results' src. Throws std::runtime_error on failure.
  LatencyProber(EventLoop& loop, const std::string& source_address, std::string node);
  ~LatencyProber();

  // Starts one measurement of `stream` (tool latency, method udp); `done` is
  // called on the loop thread with the result (seq unset). Any thread.
  void measure(const wire::Stream& stream, Done done);

  std::size_t running() const;
  const LatencyCounters& counters() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
