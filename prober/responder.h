// The responder: echoes well-formed latency probe requests back to their
// sender as replies of the same size (never larger); answers sealed abw
// probes with their kernel receive time; accepts TCP on the same port (TCP
// latency handshakes, and sealed throughput transfers whose byte count it
// reports). Anything else is dropped silently, but counted.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "prober/event_loop.h"

namespace flexmon::prober {

struct ResponderCounters {
  std::atomic<std::uint64_t> echoed{0};
  std::atomic<std::uint64_t> malformed{0};
  std::atomic<std::uint64_t> send_errors{0};
  std::atomic<std::uint64_t> abw_answered{0};
  std::atomic<std::uint64_t> abw_rejected{0};  // unknown node or bad seal
  std::atomic<std::uint64_t> tcp_accepted{0};
  std::atomic<std::uint64_t> throughput_bytes{0};
  std::atomic<std::uint64_t> throughput_rejected{0};
};

class Responder {
 public:
  // Binds a UDP socket to address:port (port 0: any free port) and accepts
  // requests of min_size..max_size bytes; listens on TCP at the same port
  // when it can (tcp_port() 0 otherwise). Throws std::runtime_error naming
  // the address on failure.
  Responder(EventLoop& loop, const std::string& address, std::uint16_t port, std::size_t min_size,
            std::size_t max_size);
  ~Responder();

  // The nodes whose sealed bandwidth probes are served: node id -> raw key.
  // Without keys, abw and throughput peers are refused. Any thread.
  void set_peer_keys(std::map<std::string, std::string> keys);

  std::uint16_t port() const;
  std::uint16_t tcp_port() const;
  const ResponderCounters& counters() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
