// The per-packet RTTs of a latency result as stored (column rtts_ns): a JSON
// array of integer nanoseconds with null for a lost packet, "[123,null,456]".
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace flexmon {

// Calls visit(std::optional<std::int64_t>) for each packet in order: the RTT
// in ns, or nullopt for a lost packet. Only what the collector writes is
// read: anything other than digits, "null", commas and brackets is skipped.
template <typename Visit>
void visit_rtts(std::string_view json, Visit&& visit) {
  std::int64_t value = 0;
  bool in_number = false;
  for (char ch : json) {
    if (ch >= '0' && ch <= '9') {
      value = value * 10 + (ch - '0');
      in_number = true;
      continue;
    }
    if (in_number)
      visit(std::optional<std::int64_t>(value));
    else if (ch == 'n')
      visit(std::optional<std::int64_t>());  // null
    value = 0;
    in_number = false;
  }
}

}  // namespace flexmon
