// Absolute schedules: slot k of a stream starts at anchor + k * interval on
// the monotonic clock, so lateness never accumulates (no drift). A run that
// starts late does not move later slots; slots that have fully passed are
// skipped and counted.
#pragma once

#include <chrono>
#include <cstdint>

#include "common/clock.h"

namespace flexmon::prober {

using Nanos = std::chrono::nanoseconds;

struct Slot {
  std::uint64_t index = 0;
  MonoTime at;
  std::uint64_t skipped = 0;  // slots passed over to reach this one
};

class Schedule {
 public:
  // `anchor` is slot 0; `interval` must be positive.
  Schedule(MonoTime anchor, Nanos interval);

  MonoTime slot_time(std::uint64_t index) const;
  // The slot after `current` that has not started yet at `now`; the slots in
  // between (missed because a run or the process was late) are counted.
  Slot next_after(std::uint64_t current, MonoTime now) const;

  MonoTime anchor() const { return anchor_; }
  Nanos interval() const { return interval_; }

 private:
  MonoTime anchor_;
  Nanos interval_;
};

}  // namespace flexmon::prober
