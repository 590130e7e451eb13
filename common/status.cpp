#include "common/status.h"

#include <array>
#include <utility>

namespace flexmon {

namespace {
constexpr std::array<std::pair<wire::Status, std::string_view>, 6> kNames{{
    {wire::OK, "ok"},
    {wire::TIMEOUT, "timeout"},
    {wire::UNREACHABLE, "unreachable"},
    {wire::RESOLVE_FAILURE, "resolve-failure"},
    {wire::REFUSED, "refused"},
    {wire::ERROR, "error"},
}};
}

std::string_view status_name(wire::Status status) {
  for (const auto& [value, name] : kNames)
    if (value == status) return name;
  return "error";
}

std::optional<wire::Status> status_from_name(std::string_view name) {
  for (const auto& [value, text] : kNames)
    if (text == name) return value;
  return std::nullopt;
}

}  // namespace flexmon
