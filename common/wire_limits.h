// Numbers both ends of the result channel must agree on (schemas/wire.md).
#pragma once

#include <cstdint>

namespace flexmon {

// A prober sends a result of seq s of an epoch only while s < (its lowest
// unacknowledged seq of that epoch) + kSeqWindow; the collector drops, and
// does not acknowledge, a seq further than kSeqWindow above its high-water
// mark (collector/window.h).
constexpr std::uint64_t kSeqWindow = 1 << 16;

}  // namespace flexmon
