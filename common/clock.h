// Time: UTC wall time with nanoseconds labels results; the monotonic clock
// schedules and measures intervals. The two never share a variable.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace flexmon {

// Nanoseconds since the Unix epoch, UTC. utc_now_ns() reads CLOCK_REALTIME
// (libstdc++'s system_clock), the clock of the kernel's socket timestamps
// (SO_TIMESTAMPNS, SO_TIMESTAMPING), so the prober subtracts one from the other.
using UtcNs = std::int64_t;

inline UtcNs utc_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Where behaviour depends on the time of day (schedules, ages, retention),
// code takes a UtcClock, utc_now_ns in the daemons, so tests can step time.
using UtcClock = std::function<UtcNs()>;

using MonoClock = std::chrono::steady_clock;  // CLOCK_MONOTONIC
using MonoTime = MonoClock::time_point;

// The clocks a component reads where its behaviour depends on time
// (housekeeping, liveness, expiries), so that tests can step them.
struct TimeSource {
  UtcClock utc = utc_now_ns;
  std::function<MonoTime()> mono = MonoClock::now;
};

// "2026-11-22T06:30:00.123456789Z"
std::string format_utc(UtcNs t);

}  // namespace flexmon
