// The responder: echoes well-formed latency probe requests back to their
// sender as replies of the same size (never larger), and silently drops, but
// counts, anything else.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "prober/event_loop.h"

namespace flexmon::prober {

struct ResponderCounters {
  std::atomic<std::uint64_t> echoed{0};
  std::atomic<std::uint64_t> malformed{0};
  std::atomic<std::uint64_t> send_errors{0};
};

class Responder {
 public:
  // Binds a UDP socket to address:port (port 0: any free port) and accepts
  // requests of min_size..max_size bytes. Throws std::runtime_error naming the
  // address on failure.
  Responder(EventLoop& loop, const std::string& address, std::uint16_t port, std::size_t min_size,
            std::size_t max_size);
  ~Responder();

  std::uint16_t port() const;
  const ResponderCounters& counters() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
