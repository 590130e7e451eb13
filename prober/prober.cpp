#include "prober/prober.h"

#include <map>

#include <fmt/format.h>

#include "common/config_files.h"
#include "common/log.h"
#include "prober/boot_epoch.h"
#include "prober/control_client.h"
#include "prober/event_loop.h"
#include "prober/measurements.h"
#include "prober/responder.h"
#include "prober/result_sender.h"
#include "prober/stream_runner.h"
#include "wire.pb.h"

#ifndef FLEXMON_VERSION
#define FLEXMON_VERSION "unknown"
#endif

namespace flexmon {

using namespace prober;

void check_prober_config(const Config& config, const std::string& node_id) {
  if (!config.find_node(node_id))
    throw ConfigError(
        fmt::format("{}: --node {}: no such node in nodes[]", config.file.string(), node_id));
  check_writable_location(config, "prober.state_dir", config.prober.state_dir / node_id);
  check_sqlite_file(config, "prober.state_dir", config.prober.state_dir / node_id / "spool.db");
}

namespace {

class ProberDaemon : public Daemon {
 public:
  ProberDaemon(const Config& config, const NodeConfig& node) {
    auto log = logger("prober");
    std::uint64_t epoch = next_boot_epoch(config.prober.state_dir / node.id);
    responder_ = std::make_unique<Responder>(
        loop_, node.address, config.responder_port(node),
        std::max<std::size_t>(16, config.limits.latency.min_size), config.limits.latency.max_size);
    std::map<std::string, std::string> peer_keys;  // whose abw / throughput probes we serve
    for (const auto& n : config.nodes) peer_keys[n.id] = n.key;
    responder_->set_peer_keys(std::move(peer_keys));
    measurements_ = std::make_unique<Measurements>(loop_, node.address, node.id, node.key);
    SenderOptions s;
    s.node = node.id;
    s.key = node.key;
    s.key_id = node.key_id;
    s.boot_epoch = epoch;
    s.source_address = node.address;
    s.collectors = config.collectors_for_probers();
    auto spool_file = config.prober.state_dir / node.id / "spool.db";
    auto spool = std::make_unique<SqliteSpool>(
        spool_file, SqliteSpoolOptions{static_cast<std::size_t>(config.prober.spool_max_results),
                                       config.prober.spool_history});
    if (spool->last_key().epoch >= epoch)
      throw std::runtime_error(fmt::format(
          "prober {}: {} holds results of boot epoch {} but this start's epoch is {}: the "
          "boot_epoch file went back; refusing to reuse (epoch, seq) keys",
          node.id, spool_file.string(), spool->last_key().epoch, epoch));
    sender_ = std::make_unique<ResultSender>(loop_, s, std::move(spool));
    runner_ = std::make_unique<StreamRunner>(
        loop_, node.id, config.limits,
        [this](std::shared_ptr<const wire::Stream> stream, MonoTime due,
               std::function<void(wire::Result)> done) {
          measurements_->measure(std::move(stream), due, std::move(done));
        },
        [this](wire::Result result) { sender_->submit(std::move(result)); },
        // A nearly full spool pauses the lowest priorities first (never drops).
        [this](int priority) { return sender_->accepting(priority); });
    ControlOptions c;
    c.node = node.id;
    c.key = node.key;
    c.key_id = node.key_id;
    c.manager = config.manager_for_probers();
    c.boot_epoch = epoch;
    c.software_version = FLEXMON_VERSION;
    c.heartbeat_s = config.prober.heartbeat_s;
    control_ = std::make_unique<ControlClient>(
        loop_, c,
        [this](std::vector<wire::Stream> streams) { runner_->assign(std::move(streams)); },
        [this](wire::Heartbeat& h) {
          h.set_load(runner_->load());
          h.set_streams(static_cast<std::uint32_t>(runner_->streams()));
          Shortfall f = runner_->take_shortfall();
          h.set_skipped_slots(f.skipped_slots);
          h.set_shortfall(f.per_second);
          h.set_behind_streams(f.behind_streams);
          h.set_spooled(sender_->counters().spooled);
          h.set_spool_paused(sender_->counters().paused);
          h.set_spool_lost(sender_->counters().spool_full);
          sender_->set_load(runner_->load());
        });
    loop_.start();
    log->info("prober {}: boot epoch {}, responder on {}:{}, manager {}, collector {}", node.id,
              epoch, node.address, responder_->port(), c.manager.to_string(),
              s.collectors.front().to_string());
  }

  ~ProberDaemon() override {
    stop();
    wait();
    // Components go before the loop (declared first), which outlives them.
  }

  void stop() override { loop_.stop(); }
  void wait() override { loop_.join(); }

 private:
  EventLoop loop_;
  std::unique_ptr<Responder> responder_;
  std::unique_ptr<Measurements> measurements_;
  std::unique_ptr<ResultSender> sender_;
  std::unique_ptr<StreamRunner> runner_;
  std::unique_ptr<ControlClient> control_;
};

}  // namespace

std::unique_ptr<Daemon> start_prober(const Config& config, const std::string& node_id) {
  check_prober_config(config, node_id);
  return std::make_unique<ProberDaemon>(config, *config.find_node(node_id));
}

}  // namespace flexmon
