#include "common/log.h"

#include <mutex>
#include <stdexcept>

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

}  // namespace flexmon
