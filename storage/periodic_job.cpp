#include "storage/periodic_job.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/log.h"

namespace flexmon {

// Shared by the PeriodicJob and its thread, so that a detached thread never
// touches freed memory.
struct PeriodicJob::State {
  std::string name;
  Run run;
  std::stop_source stop;
  std::mutex mutex;
  std::condition_variable_any changed;
  bool ended = false;
  std::thread thread;

  void loop() {
    std::stop_token token = stop.get_token();
    while (!token.stop_requested()) {
      std::chrono::duration<double> delay{0};
      try {
        delay = run(token);
      } catch (const std::exception& e) {
        // The jobs report their own expected failures; this is a last resort
        // that keeps the thread alive for the next run.
        logger(name)->error("{}: {}", name, e.what());
        delay = std::chrono::seconds(60);
      }
      std::unique_lock lock(mutex);
      changed.wait_for(lock, token, delay, [] { return false; });
    }
    std::lock_guard lock(mutex);
    ended = true;
    changed.notify_all();
  }
};

PeriodicJob::PeriodicJob(std::string name, Run run) : state_(std::make_shared<State>()) {
  state_->name = std::move(name);
  state_->run = std::move(run);
}

PeriodicJob::~PeriodicJob() { stop(); }

void PeriodicJob::start() {
  if (state_->thread.joinable()) return;
  state_->thread = std::thread([state = state_] { state->loop(); });
}

void PeriodicJob::request_stop() { state_->stop.request_stop(); }

void PeriodicJob::stop(std::chrono::milliseconds grace) {
  request_stop();
  if (!state_->thread.joinable()) return;
  bool ended;
  {
    std::unique_lock lock(state_->mutex);
    ended = state_->changed.wait_for(lock, grace, [&] { return state_->ended; });
  }
  if (ended) {
    state_->thread.join();
    return;
  }
  logger(state_->name)
      ->warn(
          "{}: still running {} ms after the stop request; leaving it to the process exit "
          "(its transaction is rolled back)",
          state_->name, grace.count());
  state_->thread.detach();
}

}  // namespace flexmon
