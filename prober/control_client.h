// The control channel client: dials the manager over TCP, registers, applies
// the Assignments it receives, and sends Heartbeats. It reconnects with
// backoff (0.5 s doubling to 10 s, with jitter) forever; the streams keep
// running meanwhile. Protocol: schemas/wire.md, "Control channel".
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "prober/event_loop.h"

namespace flexmon::wire {
class Stream;
class Heartbeat;
}  // namespace flexmon::wire

namespace flexmon::prober {

struct ControlOptions {
  std::string node;
  std::string key;  // the node's newest active key (raw bytes): it seals every frame
  std::uint32_t key_id = 1;
  Endpoint manager;
  std::uint64_t boot_epoch = 1;
  std::string software_version;
  double heartbeat_s = 5.0;
  double initial_backoff_s = 0.5;
  double max_backoff_s = 10.0;
  double hello_timeout_s = 10.0;  // connect and first frame
};

struct ControlCounters {
  std::atomic<std::uint64_t> connects{0};  // sessions opened (hello received)
  std::atomic<std::uint64_t> assignments{0};
  std::atomic<std::uint64_t> heartbeats{0};
  std::atomic<std::uint64_t> protocol_errors{0};  // bad frame, seal, session or counter
  std::atomic<std::uint64_t> refusals{0};
  std::atomic<std::uint64_t> disconnects{0};
};

class ControlClient {
 public:
  // Receives each Assignment's full stream set (loop thread).
  using OnAssignment = std::function<void(std::vector<wire::Stream>)>;
  // Fills a heartbeat's load, streams and spooled (loop thread).
  using HeartbeatSource = std::function<void(wire::Heartbeat&)>;

  ControlClient(EventLoop& loop, ControlOptions options, OnAssignment on_assignment,
                HeartbeatSource heartbeat);
  ~ControlClient();

  const ControlCounters& counters() const;
  bool connected() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
