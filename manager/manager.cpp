#include "manager/manager.h"

#include <fmt/format.h>

#include "common/config_files.h"
#include "common/log.h"
#include "manager/api.h"
#include "manager/control.h"
#include "manager/core.h"
#include "manager/store.h"
#include "manager/xmlrpc_server.h"

namespace flexmon {

namespace {

class Manager : public ManagerDaemon {
 public:
  explicit Manager(const Config& config)
      : config_(config),
        core_(config_, std::make_unique<manager::RequestStore>(config_.manager.state_db)),
        queries_(config_),
        control_(config_, core_),
        xmlrpc_(config_, manager::api_methods(config_, core_, queries_)) {
    core_.set_sink(&control_);
    core_.start();
    control_.start();
    xmlrpc_.start();
  }
  ~Manager() override { stop(); }

  void stop() override {
    std::lock_guard lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    xmlrpc_.stop();
    control_.stop();
    core_.stop();
    auto c = control_.counters();
    logger("manager")->info(
        "control: {} sessions, {} seal failures, {} retired key, {} bad messages, {} refused "
        "connections, {} evicted, {} timeouts, {} accept errors",
        c.sessions, c.seal_failures, c.retired_keys, c.bad_messages, c.refused_connections,
        c.evicted, c.timeouts, c.accept_errors);
  }
  void wait() override {}
  std::uint16_t xmlrpc_port() const override { return xmlrpc_.port(); }
  std::uint16_t control_port() const override { return control_.port(); }

 private:
  const Config config_;  // a copy: the threads outlive the caller's
  manager::Core core_;
  manager::QueryService queries_;
  manager::ControlServer control_;
  manager::XmlRpcServer xmlrpc_;
  std::mutex stop_mu_;
  bool stopped_ = false;
};

}  // namespace

void check_manager_config(const Config& config) {
  if (config.users.empty())
    throw ConfigError(fmt::format("{}: users: at least one user is needed to call the manager",
                                  config.file.string()));
  check_sqlite_file(config, "manager.state_db", config.manager.state_db);
}

void check_manager_reads(const Config& config) {
  check_sqlite_file(config, "collector.cache_db", config.collector.cache_db);
  if (config.archive.postgres.empty())
    check_sqlite_file(config, "archive.sqlite_db", config.archive.sqlite_db);
}

std::unique_ptr<ManagerDaemon> start_manager_daemon(const Config& config) {
  return std::make_unique<Manager>(config);
}

std::unique_ptr<Daemon> start_manager(const Config& config) { return start_manager_daemon(config); }

}  // namespace flexmon
