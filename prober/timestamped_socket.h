// Private to prober/*.cpp: receiving a datagram together with the kernel's
// receive timestamp (SO_TIMESTAMPNS, or SO_TIMESTAMPING software stamps),
// written once for every prober socket that measures time.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <span>

#include "common/result.h"

namespace flexmon::prober {

// One datagram read from a socket.
struct Datagram {
  std::size_t bytes = 0;  // payload bytes placed at the start of the buffer
  sockaddr_storage from{};
  socklen_t from_length = 0;
  // UTC ns when the kernel received it; taken right after the read (with
  // kernel_stamped false) when the kernel gave no stamp.
  std::int64_t rx_utc_ns = 0;
  bool kernel_stamped = false;
};

// Turns on SO_TIMESTAMPNS (kernel receive timestamps) on `fd`; false with
// errno set when the kernel refuses.
bool enable_rx_timestamps(int fd);

// Reads one queued datagram from `fd` without blocking. nullopt: nothing is
// queued. Error: the socket reported an error instead (e.g. a pending ICMP
// error of an earlier send, with IP_RECVERR), named in the message.
Result<std::optional<Datagram>> recv_timestamped(int fd, std::span<std::uint8_t> buffer);

}  // namespace flexmon::prober
