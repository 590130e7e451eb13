#include "common/clock.h"

#include <ctime>

#include <fmt/format.h>

namespace flexmon {

std::string format_utc(UtcNs t) {
  std::int64_t seconds = t / 1'000'000'000;
  std::int64_t nanos = t % 1'000'000'000;
  if (nanos < 0) {
    nanos += 1'000'000'000;
    --seconds;
  }
  std::time_t as_time = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&as_time, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nanos);
}

}  // namespace flexmon
