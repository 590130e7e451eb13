// Many deadlines on one timer: an indexed binary heap of absolute deadlines
// on the monotonic clock, driven by one timerfd armed (TFD_TIMER_ABSTIME) at
// the earliest one. Thousands of streams and measurements cost one wake-up
// per distinct due time, not one kernel timer each; everything due at a
// wake-up runs in one batch, after which each client may flush what it
// gathered (e.g. one sendmmsg for every packet that fell due together).
// Loop thread only (a client's deadlines die with it, so a client may be
// destroyed on another thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/clock.h"
#include "prober/event_loop.h"

namespace flexmon::prober {

// Receives the deadlines it scheduled.
class DeadlineClient {
 public:
  virtual ~DeadlineClient() = default;
  // Deadline `cookie`, due at `due`, has come (now >= due).
  virtual void on_deadline(std::uint64_t cookie, MonoTime due) = 0;
  // Every deadline due at this wake-up has run.
  virtual void after_batch() {}
};

class DeadlineTimers {
 public:
  // Identifies one scheduled deadline; 0 is never used.
  using Id = std::uint32_t;

  // Creates the timerfd and waits on it in `loop`. Throws on failure.
  explicit DeadlineTimers(EventLoop& loop);
  ~DeadlineTimers();
  DeadlineTimers(const DeadlineTimers&) = delete;
  DeadlineTimers& operator=(const DeadlineTimers&) = delete;

  // `client` is told after every batch while it lives.
  void add_client(std::weak_ptr<DeadlineClient> client);

  // Calls client->on_deadline(cookie, due) once `due` has come, if the
  // client still lives (clients may be destroyed on any thread).
  Id schedule(MonoTime due, std::weak_ptr<DeadlineClient> client, std::uint64_t cookie);
  // Moves a scheduled deadline (cheaper than cancel + schedule).
  void reschedule(Id id, MonoTime due);
  // Forgets a deadline that has not run; ids of run or cancelled deadlines
  // may be reused, so callers drop theirs (set it to 0).
  void cancel(Id id);

  // True while a batch of deadlines runs.
  bool in_batch() const;
  std::size_t size() const;
  // Wake-ups (batches) so far.
  std::uint64_t wakeups() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
