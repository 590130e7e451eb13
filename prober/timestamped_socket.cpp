#include "prober/timestamped_socket.h"

#include <time.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace flexmon::prober {

namespace {

std::int64_t to_ns(const timespec& t) { return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; }

}  // namespace

bool enable_rx_timestamps(int fd) {
  int one = 1;
  return setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) == 0;
}

Result<std::optional<Datagram>> recv_timestamped(int fd, std::span<std::uint8_t> buffer) {
  Datagram d;
  iovec iov{buffer.data(), buffer.size()};
  // Room for SCM_TIMESTAMPNS, SCM_TIMESTAMPING and a few more (e.g. IP_PKTINFO).
  alignas(cmsghdr) char control[256];
  msghdr msg{};
  msg.msg_name = &d.from;
  msg.msg_namelen = sizeof d.from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return std::optional<Datagram>();
    return fail(fmt::format("recvmsg: {}", std::strerror(errno)));
  }
  d.bytes = static_cast<std::size_t>(n);
  d.from_length = msg.msg_namelen;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_TIMESTAMPNS) {
      timespec t{};
      std::memcpy(&t, CMSG_DATA(c), sizeof t);
      d.rx_utc_ns = to_ns(t);
    } else if (c->cmsg_type == SCM_TIMESTAMPING && d.rx_utc_ns == 0) {
      timespec t[3]{};
      std::memcpy(&t, CMSG_DATA(c), sizeof t);
      d.rx_utc_ns = to_ns(t[0]);
    }
  }
  d.kernel_stamped = d.rx_utc_ns != 0;
  if (!d.kernel_stamped) {
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    d.rx_utc_ns = to_ns(now);
  }
  return std::optional<Datagram>(d);
}

}  // namespace flexmon::prober
