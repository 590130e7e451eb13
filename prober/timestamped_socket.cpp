#include "prober/timestamped_socket.h"

#include <time.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/clock.h"

namespace flexmon::prober {

namespace {

std::int64_t to_ns(const timespec& t) { return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; }

// The kernel's receive stamp among the control messages, or 0.
std::int64_t rx_stamp(msghdr& msg) {
  std::int64_t stamp = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_TIMESTAMPNS) {
      timespec t{};
      std::memcpy(&t, CMSG_DATA(c), sizeof t);
      stamp = to_ns(t);
    } else if (c->cmsg_type == SCM_TIMESTAMPING && stamp == 0) {
      timespec t[3]{};
      std::memcpy(&t, CMSG_DATA(c), sizeof t);
      stamp = to_ns(t[0]);
    }
  }
  return stamp;
}

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
    return fail(ErrorCode::kIoError, fmt::format("recvmsg: {}", std::strerror(errno)));
  }
  d.bytes = static_cast<std::size_t>(n);
  d.from_length = msg.msg_namelen;
  d.rx_utc_ns = rx_stamp(msg);
  d.kernel_stamped = d.rx_utc_ns != 0;
  if (!d.kernel_stamped) d.rx_utc_ns = utc_now_ns();
  return std::optional<Datagram>(d);
}

BatchReceiver::BatchReceiver(std::size_t batch, std::size_t max_bytes)
    : max_bytes_(max_bytes),
      data_(batch * max_bytes),
      control_(batch * kControlBytes + alignof(cmsghdr)),
      iov_(batch),
      headers_(batch),
      datagrams_(batch) {}

Result<std::size_t> BatchReceiver::receive(int fd, bool error_queue) {
  auto* control = reinterpret_cast<std::uint8_t*>(
      (reinterpret_cast<std::uintptr_t>(control_.data()) + alignof(cmsghdr) - 1) &
      ~(std::uintptr_t{alignof(cmsghdr)} - 1));
  for (std::size_t i = 0; i < headers_.size(); ++i) {
    iov_[i] = iovec{data_.data() + i * max_bytes_, max_bytes_};
    msghdr& m = headers_[i].msg_hdr;
    m = msghdr{};
    m.msg_name = &datagrams_[i].from;
    m.msg_namelen = sizeof datagrams_[i].from;
    m.msg_iov = &iov_[i];
    m.msg_iovlen = 1;
    m.msg_control = control + i * kControlBytes;
    m.msg_controllen = kControlBytes;
    headers_[i].msg_len = 0;
  }
  int n = ::recvmmsg(fd, headers_.data(), static_cast<unsigned>(headers_.size()),
                     MSG_DONTWAIT | (error_queue ? MSG_ERRQUEUE : 0), nullptr);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return std::size_t{0};
    return fail(ErrorCode::kIoError, fmt::format("recvmmsg: {}", std::strerror(errno)));
  }
  std::int64_t now = 0;
  for (int i = 0; i < n; ++i) {
    Datagram& d = datagrams_[i];
    msghdr& m = headers_[i].msg_hdr;
    d.bytes = headers_[i].msg_len;
    d.from_length = m.msg_namelen;
    d.rx_utc_ns = error_queue ? 0 : rx_stamp(m);
    d.kernel_stamped = d.rx_utc_ns != 0;
    if (!d.kernel_stamped && !error_queue) d.rx_utc_ns = now ? now : (now = utc_now_ns());
  }
  return static_cast<std::size_t>(n);
}

std::span<std::uint8_t> BatchReceiver::payload(std::size_t i) {
  return {data_.data() + i * max_bytes_, std::min(datagrams_[i].bytes, max_bytes_)};
}

bool BatchReceiver::truncated(std::size_t i) const {
  return (headers_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
}

}  // namespace flexmon::prober
