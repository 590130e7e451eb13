// Framing of the control channel (TCP): each sealed frame is preceded by its
// length, 4 bytes big-endian, from 1 to kMaxControlFrame.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace flexmon {

constexpr std::size_t kFrameHeaderBytes = 4;
constexpr std::size_t kMaxControlFrame = 1 << 20;

// Prefixes `frame` with its length.
std::string length_prefixed(std::string_view frame);

// Reads a length header; an error for 0 or more than kMaxControlFrame.
Result<std::size_t> frame_length(const std::uint8_t (&header)[kFrameHeaderBytes]);

}  // namespace flexmon
