// Internal to flexmon_storage: a job that runs on its own thread, again and
// again, for the collector's flush and weekly dump. Stopping never waits long:
// the job sees the stop through its std::stop_token and rolls back.
//
// Why a stuck job's thread is detached, not joined: a job blocked in a
// database call (a PostgreSQL server that stopped answering mid-transaction,
// or the dump's archive read, which has no stop token) cannot be woken from
// outside, and a daemon that waited for it would not stop on SIGTERM. So
// stop() waits `grace` and then detaches the thread, which owns everything it
// touches (State below): it is left to the process exit, which is safe
// because every job's work is one transaction that its database rolls back.
// This is the daemon's choice, not a library's: a PeriodicJob (through
// Flusher and WeeklyDump) is only for a process that exits soon after
// stopping it, as the collector does (its main stops them, then returns).
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
