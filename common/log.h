// Logging: one named spdlog logger per component, writing to stderr.
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace flexmon {

// Returns the logger called `name`, creating it on first use.
std::shared_ptr<spdlog::logger> logger(const std::string& name);

// Sets the level of every logger ("trace" ... "off"); throws on an unknown one.
void set_log_level(const std::string& level);

}  // namespace flexmon
