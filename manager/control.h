// The control channel's server: probers dial in over TCP, register with a
// sealed message and receive their stream sets (schemas/wire.md). One Asio
// thread; Asio stays in control.cpp. Anyone can connect, so what a
// connection costs is bounded before it registers: connections in all and
// per address, a deadline to register and one per frame, buffers that grow
// with the bytes that arrive, and rate-limited logs (schemas/wire.md,
// "Control channel", "Limits").
#pragma once

#include <cstdint>
#include <memory>

#include "common/config.h"
#include "manager/fleet.h"

namespace flexmon::manager {

// The largest frame a connection may announce before it has registered: a
// Register is ~100 bytes.
constexpr std::size_t kMaxRegisterFrame = 4096;

struct ControlCounters {
  std::uint64_t sessions = 0;       // registered sessions so far
  std::uint64_t seal_failures = 0;  // unknown node or key id, or a seal that did not verify
  std::uint64_t retired_keys = 0;   // frames sealed properly under a retired key
  std::uint64_t bad_messages = 0;   // malformed, too long, wrong session/counter/kind
  // Connections closed at once: over manager.control_max_connections (when
  // every one is registered) or manager.control_max_unregistered_per_address.
  std::uint64_t refused_connections = 0;
  // Unregistered connections closed to make room for a new one (the oldest
  // first) when control_max_connections is reached or descriptors ran out.
  std::uint64_t evicted = 0;
  std::uint64_t timeouts = 0;       // no register, no heartbeat, or a frame not complete in time
  std::uint64_t accept_errors = 0;  // failed accepts (EMFILE...), each followed by a pause
  // Now: open connections, those not registered, and the bytes their frame
  // buffers hold (what arrived of frames not yet complete).
  std::uint64_t open_connections = 0;
  std::uint64_t unregistered = 0;
  std::uint64_t buffered_bytes = 0;
};

class ControlServer : public AssignmentSink {
 public:
  // Binds config.manager.control (port 0: ephemeral); throws on failure.
  ControlServer(const Config& config, Fleet& fleet);
  ~ControlServer() override;
  void start();
  void stop();
  std::uint16_t port() const;
  ControlCounters counters() const;

  void push(const std::string& node, std::uint64_t session, wire::Assignment assignment) override;

  struct Impl;  // public so that control.cpp's session type can name it

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace flexmon::manager
