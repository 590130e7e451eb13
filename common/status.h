// Names of result statuses as stored and served: ok, timeout, unreachable,
// resolve-failure, refused, error.
#pragma once

#include <optional>
#include <string_view>

#include "wire.pb.h"

namespace flexmon {

std::string_view status_name(wire::Status status);
std::optional<wire::Status> status_from_name(std::string_view name);

}  // namespace flexmon
