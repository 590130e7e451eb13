// flexmon-collector --config FILE: the result collector (collector/collector.h),
// with the write-back flush of its cache to the archive and, when
// archive.dump_weekly is set, the weekly public dump, each on its own thread.
#include "collector/collector.h"
#include "common/config_files.h"
#include "common/daemon.h"
#include "storage/flusher.h"
#include "storage/weekly_dump.h"

namespace {

// The collector and its storage jobs, stopped together: the jobs first (they
// return within moments, rolling back what they were doing), then the
// receiver, which commits and acknowledges what it already took in.
class CollectorProcess : public flexmon::Daemon {
 public:
  explicit CollectorProcess(const flexmon::Config& config)
      : collector_(flexmon::start_collector(config)), flusher_(config) {
    flusher_.start();
    if (config.archive.dump_weekly) {
      dump_ = std::make_unique<flexmon::WeeklyDump>(config);
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
  std::unique_ptr<flexmon::Collector> collector_;
  flexmon::Flusher flusher_;
  std::unique_ptr<flexmon::WeeklyDump> dump_;
};

}  // namespace

int main(int argc, char** argv) {
  flexmon::DaemonSpec spec;
  spec.name = "flexmon-collector";
  spec.summary =
      "flexmon collector: verifies result datagrams, commits them to the cache, acks; flushes the "
      "cache to the archive";
  spec.check = [](const flexmon::Config& config) {
    flexmon::check_sqlite_file(config, "collector.cache_db", config.collector.cache_db);
  };
  spec.check_reachable = [](const flexmon::Config& config) {
    if (config.archive.postgres.empty())
      flexmon::check_sqlite_file(config, "archive.sqlite_db", config.archive.sqlite_db);
    if (config.archive.dump_weekly)
      flexmon::check_writable_location(config, "archive.dump_dir", config.archive.dump_dir);
  };
  spec.start = [](const flexmon::Config& config) -> std::unique_ptr<flexmon::Daemon> {
    return std::make_unique<CollectorProcess>(config);
  };
  return flexmon::daemon_main(argc, argv, spec);
}
