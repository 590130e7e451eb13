// The measurement tools, as a type. Their names ("latency", "abw",
// "throughput") are what the wire (wire::Stream.tool), the SQL tables
// (results.tool) and the XML-RPC API carry; inside the code a Tool is
// compared, never a string.
#pragma once

#include <array>
#include <optional>
#include <string_view>

namespace flexmon {

enum class Tool { kLatency, kAbw, kThroughput };

inline constexpr std::array<Tool, 3> kAllTools = {Tool::kLatency, Tool::kAbw, Tool::kThroughput};

constexpr std::string_view tool_name(Tool tool) {
  switch (tool) {
    case Tool::kLatency:
      return "latency";
    case Tool::kAbw:
      return "abw";
    case Tool::kThroughput:
      return "throughput";
  }
  return "latency";
}

constexpr std::optional<Tool> parse_tool(std::string_view name) {
  for (Tool tool : kAllTools)
    if (tool_name(tool) == name) return tool;
  return std::nullopt;
}

// abw and throughput send traffic at a rate: the bandwidth budgets cover them.
constexpr bool is_bandwidth_tool(Tool tool) { return tool != Tool::kLatency; }

}  // namespace flexmon
