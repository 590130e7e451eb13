// Internal to flexmon_storage: a job that runs on its own thread, again and
// again, for the collector's flush and weekly dump. Stopping never waits long:
// the job sees the stop through its std::stop_token and rolls back; one that
// is stuck (a server that stopped answering mid-transaction) is left to the
// process exit after a grace period, which is safe because every job's work
// is one transaction that its database rolls back.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>

namespace flexmon {

class PeriodicJob {
 public:
  // Runs once now, then again after the delay each run returns.
  using Run = std::function<std::chrono::duration<double>(std::stop_token)>;

  PeriodicJob(std::string name, Run run);
  ~PeriodicJob();  // stop()
  PeriodicJob(const PeriodicJob&) = delete;
  PeriodicJob& operator=(const PeriodicJob&) = delete;

  void start();
  // Asks the job to stop and returns at once.
  void request_stop();
  // Asks, then waits up to `grace` for the run in progress to end; after that
  // the thread is detached (and logged as such).
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace flexmon
