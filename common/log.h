// Logging: one named spdlog logger per component, writing to stderr; and the
// two habits every line an outsider can trigger needs: its outside bytes
// escaped, and a rate limit.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

namespace flexmon {

// Returns the logger called `name`, creating it on first use.
std::shared_ptr<spdlog::logger> logger(const std::string& name);

// Sets the level of every logger ("trace" ... "off"); throws on an unknown one.
void set_log_level(const std::string& level);

// Bytes from outside (a node name in a datagram, a peer's header) made safe
// for one log line: printable ASCII stays, '\\' and every other byte become
// \\xNN, and text past `max_bytes` becomes "...(N more bytes)". A newline
// can then never start a forged line.
std::string escaped(std::string_view outside, std::size_t max_bytes = 128);

// At most `burst` messages per `window`; the rest are counted and summarised
// in one line when the next window starts, so a flood of bad input cannot
// flood the log. Thread-safe.
class RateLimitedLog {
 public:
  RateLimitedLog(std::shared_ptr<spdlog::logger> log, int burst, std::chrono::seconds window)
      : log_(std::move(log)), burst_(burst), window_(window) {}

  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    if (admit()) log_->warn(format, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void info(fmt::format_string<Args...> format, Args&&... args) {
    if (admit()) log_->info(format, std::forward<Args>(args)...);
  }

  // Messages suppressed since the start (for counters and tests).
  std::uint64_t suppressed_total() const;

 private:
  // True when this message may be written; writes the previous window's
  // summary first when a new window starts.
  bool admit();

  mutable std::mutex mutex_;
  std::shared_ptr<spdlog::logger> log_;
  int burst_;
  std::chrono::seconds window_;
  std::chrono::steady_clock::time_point window_start_{};
  int in_window_ = 0;
  std::uint64_t suppressed_ = 0;
  std::uint64_t suppressed_total_ = 0;
};

}  // namespace flexmon
