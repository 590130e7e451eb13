// UDP latency measurements, fping semantics: per measurement `count` packets
// `spacing_ms` apart to the destination's responder, each waited for up to
// `timeout_ms`. All measurements of a prober share one socket bound to the
// node's address; replies are matched by measurement id (which names the
// measurement's record directly) and packet index.
// RTT = kernel receive timestamp (SO_TIMESTAMPNS) - the kernel's send
// timestamp (SO_TIMESTAMPING TX_SOFTWARE, else the time just before the send),
// both CLOCK_REALTIME.
//
// Cost at scale: packets and timeouts wait in the loop's DeadlineTimers; the
// packets that fall due together leave in one sendmmsg; replies, ICMP errors
// and send stamps are read in batches (recvmmsg) at least every 4 ms
// while measurements run, without a wake-up per packet (their timestamps come
// from the kernel, so reading them later changes no RTT); a measurement's
// timeout reads what is queued before it judges.
//
// The daemon's UDP streams in its own namespace run here; streams with a
// netns, the one-shot CLI and the outage probing that follows a result that
// lost every packet run on the synchronous engine (latency_tools.cpp, whose
// header says why there are two). Both compute RTTs with probe_rtt_ns.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/histogram.h"
#include "prober/event_loop.h"
#include "prober/schedule.h"

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
  std::atomic<std::uint64_t> packets_sent{0};
  std::atomic<std::uint64_t> send_calls{0};        // sendmmsg calls (packets go in batches)
  std::atomic<std::uint64_t> kernel_tx_stamps{0};  // packets the kernel stamped at send
  std::atomic<std::uint64_t> receive_polls{0};
  // Each packet's send (the kernel's stamp, else the time right before the
  // send) minus the time the schedule gave it: the slot's time for the first
  // packet of a measurement, first + k * spacing for packet k.
  Histogram send_lateness;
};

class LatencyProber {
 public:
  using Done = std::function<void(wire::Result)>;

  // Binds the probing socket to source_address (any port). `node` labels the
  // results' src. Throws std::runtime_error on failure.
  LatencyProber(EventLoop& loop, const std::string& source_address, std::string node);
  ~LatencyProber();

  // Starts one measurement of `stream` (tool latency, method udp) now, for a
  // slot that was due at `due`; `done` is called on the loop thread with the
  // result (seq unset). Any thread.
  void measure(const wire::Stream& stream, MonoTime due, Done done);
  // The same, due now.
  void measure(const wire::Stream& stream, Done done);

  std::size_t running() const;
  const LatencyCounters& counters() const;
  LatencyCounters& counters();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
