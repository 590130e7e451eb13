// Reading the manager's control channel from a test's plain socket.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "common/framing.h"

namespace flexmon::manager::testing {

// One length-prefixed frame; empty when the connection ends first.
inline std::string read_frame(int fd) {
  std::uint8_t header[kFrameHeaderBytes];
  if (recv(fd, header, sizeof header, MSG_WAITALL) != sizeof header) return {};
  auto length = frame_length(header);
  if (!length) return {};
  std::string body(*length, '\0');
  if (recv(fd, body.data(), body.size(), MSG_WAITALL) != static_cast<ssize_t>(body.size()))
    return {};
  return body;
}

}  // namespace flexmon::manager::testing
