// Summary statistics of one latency measurement, fping style: per-packet RTTs
// (-1 = lost) in, wire::LatencyValues out.
#pragma once

#include <cstdint>
#include <vector>

namespace flexmon::wire {
class LatencyValues;
}

namespace flexmon::prober {

// Fills `out` from per-packet RTTs in send order (-1 = lost), the number of
// packets actually sent and the duplicate replies seen. min/avg/median/max and
// the population stddev are over received packets only; 0 when none came back.
void summarize_latency(const std::vector<std::int64_t>& rtt_ns, std::uint32_t sent,
                       std::uint32_t duplicates, wire::LatencyValues& out);

}  // namespace flexmon::prober
