#include "common/daemon.h"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <iostream>

#include "common/log.h"

namespace flexmon {

namespace {
std::atomic<int> requested_exit_code{kExitOk};
}

void request_exit(int code) {
  requested_exit_code = code;
  kill(getpid(), SIGTERM);
}

int daemon_main(int argc, char** argv, const DaemonSpec& spec) {
  CLI::App app{spec.summary, spec.name};
  std::string config_path;
  bool check_only = false;
  std::string log_level = "info";
  // Required unless a subcommand runs instead (checked after parsing: CLI11
  // would ask for it with the subcommand too).
  app.add_option("--config", config_path, "configuration file (YAML); required to run the daemon");
  app.add_flag("--check-config", check_only, "check the configuration, print the result and exit");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  if (spec.add_options) spec.add_options(app);
  std::vector<CLI::App*> commands;
  for (const auto& command : spec.commands) {
    CLI::App* sub = app.add_subcommand(command.name, command.summary);
    if (command.add_options) command.add_options(*sub);
    commands.push_back(sub);
  }
  if (!commands.empty()) app.require_subcommand(0, 1);
  app.footer(
      "Exit status: 0 success, 1 failure, 64 bad usage, 78 bad configuration.\n"
      "Configuration reference: schemas/config.md.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return kExitOk;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    std::cerr << spec.name << ": " << e.what() << "\n"
              << "Run with --help for usage.\n";
    return kExitUsage;
  }
  for (std::size_t i = 0; i < commands.size(); ++i)
    if (commands[i]->parsed()) return spec.commands[i].run();
  if (config_path.empty()) {
    std::cerr << spec.name << ": --config is required\n"
              << "Run with --help for usage.\n";
    return kExitUsage;
  }
  set_log_level(log_level);

  Config config;
  try {
    config = load_config(config_path);
    if (spec.check) spec.check(config);
    if (check_only && spec.check_reachable) spec.check_reachable(config);
  } catch (const ConfigError& e) {
    std::cerr << spec.name << ": " << e.what() << "\n";
    return kExitConfig;
  }
  if (check_only) {
    std::cout << config_path << ": configuration OK\n";
    return kExitOk;
  }

  // Signals are taken by this thread alone (sigwait), so every thread started
  // below inherits the blocked mask and none is interrupted by them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto log = logger(spec.name);
  std::unique_ptr<Daemon> daemon;
  try {
    daemon = spec.start(config);
  } catch (const std::exception& e) {
    log->critical("cannot start: {}", e.what());
    return kExitFailure;
  }
  for (;;) {
    int received = 0;
    if (sigwait(&signals, &received) != 0) continue;
    if (received == SIGHUP) {
      log->info("SIGHUP: configuration reload is not supported yet; restart to apply changes");
      continue;
    }
    log->info("{}: stopping", received == SIGINT ? "SIGINT" : "SIGTERM");
    break;
  }
  daemon->stop();
  daemon->wait();
  log->info("stopped");
  return requested_exit_code.load();
}

}  // namespace flexmon
