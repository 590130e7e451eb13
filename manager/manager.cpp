#include "manager/manager.h"

#include <thread>

#include <fmt/format.h>

#include "common/config_files.h"
#include "common/log.h"
#include "manager/api.h"
#include "manager/control.h"
#include "manager/request_book.h"
#include "manager/store.h"
#include "manager/xmlrpc_server.h"

namespace flexmon {

namespace {

// The manager's threads: the XML-RPC server's workers call the request
// book; the control channel's Asio thread reports to the fleet; the
// housekeeping thread (started here, joined in stop()) expires requests,
// reverts temporary edits, finishes delivered one-shots, watches liveness
// and reads the bandwidth history (RequestBook::run_housekeeping).
class Manager : public ManagerDaemon {
 public:
  explicit Manager(const Config& config)
      : config_(config),
        book_(config_, std::make_unique<manager::RequestStore>(config_.manager.state_db)),
        queries_(config_),
        control_(config_, book_.fleet()),
        xmlrpc_(config_, manager::api_methods(config_, book_, book_.fleet(), queries_)) {
    book_.fleet().set_sink(&control_);
    housekeeping_ = std::thread([this] { book_.run_housekeeping(); });
    try {
      control_.start();
      xmlrpc_.start();
    } catch (...) {
      control_.stop();
      book_.stop_housekeeping();
      housekeeping_.join();
      throw;
    }
  }
  ~Manager() override { stop(); }

  void stop() override {
    std::lock_guard lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    xmlrpc_.stop();
    control_.stop();
    book_.stop_housekeeping();
    housekeeping_.join();
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
  manager::RequestBook book_;
  manager::QueryService queries_;
  manager::ControlServer control_;
  manager::XmlRpcServer xmlrpc_;
  std::thread housekeeping_;
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
