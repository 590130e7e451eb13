#include "common/framing.h"

#include <fmt/format.h>

namespace flexmon {

std::string length_prefixed(std::string_view frame) {
  auto length = static_cast<std::uint32_t>(frame.size());
  std::string out;
  out.reserve(kFrameHeaderBytes + frame.size());
  out.push_back(static_cast<char>(length >> 24));
  out.push_back(static_cast<char>(length >> 16));
  out.push_back(static_cast<char>(length >> 8));
  out.push_back(static_cast<char>(length));
  out.append(frame);
  return out;
}

Result<std::size_t> frame_length(const std::uint8_t (&header)[kFrameHeaderBytes]) {
  std::size_t length = (std::size_t{header[0]} << 24) | (std::size_t{header[1]} << 16) |
                       (std::size_t{header[2]} << 8) | std::size_t{header[3]};
  if (length == 0) return fail(ErrorCode::kInvalidInput, "empty control frame");
  if (length > kMaxControlFrame)
    return fail(
        ErrorCode::kInvalidInput,
        fmt::format("control frame of {} bytes exceeds the limit of {}", length, kMaxControlFrame));
  return length;
}

}  // namespace flexmon
