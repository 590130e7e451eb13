#include "common/log.h"

#include <algorithm>
#include <iterator>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace flexmon {

namespace {
std::mutex registry_mutex;
spdlog::level::level_enum current_level = spdlog::level::info;
}  // namespace

std::shared_ptr<spdlog::logger> logger(const std::string& name) {
  std::lock_guard lock(registry_mutex);
  if (auto existing = spdlog::get(name)) return existing;
  auto created = spdlog::stderr_color_mt(name);
  created->set_level(current_level);
  created->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %n %^%l%$: %v", spdlog::pattern_time_type::utc);
  return created;
}

void set_log_level(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off")
    throw std::invalid_argument("unknown log level '" + level + "'");
  std::lock_guard lock(registry_mutex);
  current_level = parsed;
  spdlog::set_level(parsed);
}

std::string escaped(std::string_view outside, std::size_t max_bytes) {
  std::string out;
  const std::size_t shown = std::min(outside.size(), max_bytes);
  out.reserve(shown + 16);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(outside[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\')
      out.push_back(static_cast<char>(c));
    else
      fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
  }
  if (outside.size() > shown)
    fmt::format_to(std::back_inserter(out), "...({} more bytes)", outside.size() - shown);
  return out;
}

bool RateLimitedLog::admit() {
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= window_) {
    if (suppressed_ > 0)
      log_->warn("{} similar messages suppressed in the last {} s", suppressed_, window_.count());
    window_start_ = now;
    in_window_ = 0;
    suppressed_ = 0;
  }
  if (in_window_ < burst_) {
    ++in_window_;
    return true;
  }
  ++suppressed_;
  ++suppressed_total_;
  return false;
}

std::uint64_t RateLimitedLog::suppressed_total() const {
  std::lock_guard lock(mutex_);
  return suppressed_total_;
}

}  // namespace flexmon
