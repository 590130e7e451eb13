// `flexmon flush` and `flexmon dump`: storage commands that work on the
// databases directly (with the config file), not over XML-RPC.
#pragma once

#include <memory>
#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace flexmon {

struct StorageCommands {
  CLI::App* flush = nullptr;
  CLI::App* dump = nullptr;
  std::string config;
  std::string week;
  std::string out;
  bool status = false;  // flush --status: report the lag, do not flush
};

// Adds the subcommands to the client.
void add_storage_commands(CLI::App& app, StorageCommands& commands);

// Runs the parsed storage command; nullopt when none was given. Exit codes:
// 0 done, 1 failed (archive unreachable, write error), 64 bad usage, 78 bad config.
std::optional<int> run_storage_commands(const StorageCommands& commands);

}  // namespace flexmon
