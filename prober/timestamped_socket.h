// Private to prober/*.cpp: receiving a datagram together with the kernel's
// receive timestamp (SO_TIMESTAMPNS, or SO_TIMESTAMPING software stamps),
// written once for every prober socket that measures time.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

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

// The RTT of one UDP / ICMP probe, the rule both latency engines apply
// (latency_prober.cpp, latency_tools.cpp): the kernel's receive stamp `rx`
// minus the send time, which is the kernel's send stamp `tx_kernel` when it
// is plausible (after our own `tx_user`, within 10 ms of it, before the
// reply; 0 = none) and `tx_user` otherwise. A wall clock stepped between
// send and receive (RTT <= 0, or 1 ms above the monotonic interval
// `mono_rtt`, an upper bound read after the stamp) falls back to `mono_rtt`.
// At least 1 ns.
inline std::int64_t probe_rtt_ns(std::int64_t tx_user, std::int64_t tx_kernel, std::int64_t rx,
                                 std::int64_t mono_rtt) {
  std::int64_t tx = tx_user;
  if (tx_kernel >= tx_user && tx_kernel - tx_user < 10'000'000 && tx_kernel < rx) tx = tx_kernel;
  std::int64_t rtt = rx - tx;
  if (rtt <= 0 || rtt > mono_rtt + 1'000'000) rtt = mono_rtt;
  return rtt < 1 ? 1 : rtt;
}

// Reads one queued datagram from `fd` without blocking. nullopt: nothing is
// queued. Error: the socket reported an error instead (e.g. a pending ICMP
// error of an earlier send, with IP_RECVERR), named in the message.
Result<std::optional<Datagram>> recv_timestamped(int fd, std::span<std::uint8_t> buffer);

// Reads queued datagrams in batches with one recvmmsg call each, with the
// same kernel timestamps as recv_timestamped. Buffers are allocated once.
class BatchReceiver {
 public:
  // Up to `batch` datagrams per call, each up to `max_bytes` (longer ones
  // are cut and flagged `truncated`).
  BatchReceiver(std::size_t batch, std::size_t max_bytes);

  // Reads what is queued (up to the batch size) from the receive queue, or
  // with `error_queue` from the socket's error queue (MSG_ERRQUEUE: ICMP
  // errors, send timestamps). Empty: nothing is queued. Error: as
  // recv_timestamped.
  Result<std::size_t> receive(int fd, bool error_queue = false);

  // Datagram i of the last receive(), its payload and its control messages.
  const Datagram& datagram(std::size_t i) const { return datagrams_[i]; }
  std::span<std::uint8_t> payload(std::size_t i);
  bool truncated(std::size_t i) const;
  // The msghdr of datagram i (for the error queue's control messages).
  const msghdr& header(std::size_t i) const { return headers_[i].msg_hdr; }

 private:
  std::size_t max_bytes_;
  static constexpr std::size_t kControlBytes = 512;
  std::vector<std::uint8_t> data_;
  std::vector<std::uint8_t> control_;  // kControlBytes per datagram, cmsghdr-aligned
  std::vector<iovec> iov_;
  std::vector<mmsghdr> headers_;
  std::vector<Datagram> datagrams_;
};

}  // namespace flexmon::prober
