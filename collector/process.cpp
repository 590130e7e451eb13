// The flexmon-collector process (collector/collector.h): the collector and
// its storage jobs, assembled here as the manager and the prober assemble
// theirs in their libraries.
#include <memory>

#include "collector/collector.h"
#include "common/config_files.h"
#include "storage/flusher.h"
#include "storage/weekly_dump.h"

namespace flexmon {

namespace {

// The collector and its storage jobs, stopped together: the jobs first (they
// return within moments, rolling back what they were doing), then the
// receiver, which commits and acknowledges what it already took in.
class CollectorProcess : public Daemon {
 public:
  explicit CollectorProcess(const Config& config)
      : collector_(start_collector(config)), flusher_(config) {
    flusher_.start();
    if (config.archive.dump_weekly) {
      dump_ = std::make_unique<WeeklyDump>(config);
      dump_->start();
    }
  }
  void stop() override {
    flusher_.request_stop();
    if (dump_) dump_->request_stop();
    collector_->stop();
  }
  void wait() override {
    flusher_.stop();
    if (dump_) dump_->stop();
    collector_->wait();
  }

 private:
  std::unique_ptr<Collector> collector_;
  Flusher flusher_;
  std::unique_ptr<WeeklyDump> dump_;
};

}  // namespace

void check_collector_config(const Config& config) {
  check_sqlite_file(config, "collector.cache_db", config.collector.cache_db);
}

void check_collector_reachable(const Config& config) {
  if (config.archive.postgres.empty())
    check_sqlite_file(config, "archive.sqlite_db", config.archive.sqlite_db);
  if (config.archive.dump_weekly)
    check_writable_location(config, "archive.dump_dir", config.archive.dump_dir);
}

std::unique_ptr<Daemon> start_collector_process(const Config& config) {
  return std::make_unique<CollectorProcess>(config);
}

}  // namespace flexmon
