// The control channel's server: probers dial in over TCP, register with a
// sealed message and receive their stream sets (schemas/wire.md). One Asio
// thread; Asio stays in control.cpp.
#pragma once

#include <cstdint>
#include <memory>

#include "common/config.h"
#include "manager/core.h"

namespace flexmon::manager {

struct ControlCounters {
  std::uint64_t sessions = 0;       // registered sessions so far
  std::uint64_t seal_failures = 0;  // frames whose seal did not verify
  std::uint64_t bad_messages = 0;   // malformed, wrong session/counter/kind
};

class ControlServer : public AssignmentSink {
 public:
  // Binds config.manager.control (port 0: ephemeral); throws on failure.
  ControlServer(const Config& config, Core& core);
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
