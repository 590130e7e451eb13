// The daemon life cycle, written once for every flexmon process: command line
// (--help, --config, --check-config, --log-level), config loading, signals,
// and an orderly stop on SIGINT or SIGTERM.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/config.h"
#include "common/exit_status.h"  // kExitOk, kExitUsage, kExitConfig, ...

namespace flexmon {

// A started daemon. stop() may be called from any thread; wait() returns
// when every thread of the daemon has ended.
class Daemon {
 public:
  virtual ~Daemon() = default;
  virtual void stop() = 0;
  virtual void wait() = 0;
};

// A command that runs instead of the daemon and needs no config
// (`flexmon-manager hash-token`).
struct DaemonCommand {
  std::string name;     // "hash-token"
  std::string summary;  // one line for --help
  // Adds the command's options to its CLI11 subcommand.
  std::function<void(CLI::App&)> add_options;
  // Runs it once the command line is parsed; returns the exit code.
  std::function<int()> run;
};

struct DaemonSpec {
  std::string name;     // "flexmon-manager"
  std::string summary;  // one line for --help
  // Adds the daemon's own options to the command line.
  std::function<void(CLI::App&)> add_options;
  // Checks what the config must hold for this daemon (throws ConfigError).
  std::function<void(const Config&)> check;
  // Checks that only --check-config makes: of what the daemon rides out once
  // running (the collector's archive may be down at start: flushing waits).
  std::function<void(const Config&)> check_reachable;
  // Starts the daemon's threads; throws on a start-up failure.
  std::function<std::unique_ptr<Daemon>(const Config&)> start;
  // Subcommands, e.g. `flexmon-manager hash-token`.
  std::vector<DaemonCommand> commands;
};

// Runs a daemon: parses the command line, loads and checks the config, starts
// the daemon, and stops it on SIGINT or SIGTERM. Returns the exit code.
int daemon_main(int argc, char** argv, const DaemonSpec& spec);

// Asks the running daemon to stop as if signalled, with this exit code: for a
// thread that meets a failure it cannot recover from.
void request_exit(int code);

}  // namespace flexmon
