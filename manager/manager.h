// flexmon-manager: the XML-RPC API, the request store, stream derivation,
// the control channel to probers and node liveness, started as one daemon.
#pragma once

#include <cstdint>
#include <memory>

#include "common/config.h"
#include "common/daemon.h"

namespace flexmon {

// Checks what the manager needs from the config (throws ConfigError).
void check_manager_config(const Config& config);

// --check-config only: the files the manager reads for queries (the
// collector makes them; while they cannot be read, queries answer 5030).
void check_manager_reads(const Config& config);

// Starts the manager's threads; throws on a start-up failure (a port in use,
// an unreadable state database).
std::unique_ptr<Daemon> start_manager(const Config& config);

// A started manager with the ports it is bound to (config port 0 picks one);
// for tests.
class ManagerDaemon : public Daemon {
 public:
  virtual std::uint16_t xmlrpc_port() const = 0;
  virtual std::uint16_t control_port() const = 0;
};
std::unique_ptr<ManagerDaemon> start_manager_daemon(const Config& config);

}  // namespace flexmon
