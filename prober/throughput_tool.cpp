// Achievable TCP throughput (tool "throughput"), iperf style: one TCP
// connection to the peer's responder, a sealed hello, then data for
// `duration_ms` or until `max_bytes`; the responder reports the bytes it
// received, and throughput = received bits / (its report - first byte).
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "common/clock.h"
#include "prober/tools_internal.h"
#include "wire.pb.h"

namespace flexmon::prober::tools {

namespace {

// Waits for `events` on fd until mono deadline; false on timeout or when
// the measurement is asked to stop.
bool wait_fd(int fd, short events, std::int64_t deadline, const ToolContext& context) {
  for (;;) {
    std::int64_t left = deadline - mono_ns();
    if (left <= 0 || (context.stop && context.stop->load())) return false;
    pollfd p{fd, events, 0};
    int n = poll_or_stop(&p, 1, left, context);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

}  // namespace

// The hello a throughput client sends first (64 bytes): magic, version,
// node length, nonce, node (32 bytes, zero padded), seal over bytes 0..48.
std::vector<std::uint8_t> throughput_hello(const std::string& node, const std::string& key) {
  std::vector<std::uint8_t> h(64, 0);
  put_be(&h[0], kTputMagic, 4);
  h[4] = 1;
  std::size_t len = std::min<std::size_t>(node.size(), 32);
  h[5] = static_cast<std::uint8_t>(len);
  std::random_device rd;
  put_be(&h[8], (std::uint64_t{rd()} << 32) | rd(), 8);
  std::memcpy(&h[16], node.data(), len);
  auto mac = seal16(Sealer(key), h.data(), 48);
  std::memcpy(&h[48], mac.data(), mac.size());
  return h;
}

wire::Result measure_throughput(const wire::Stream& stream, const ToolContext& context) {
  wire::Result r = new_result(stream, context.node);
  auto fail = [&](wire::Status status, std::string why) {
    r.set_status(status);
    r.set_error(std::move(why));
    return r;
  };
  std::uint32_t port = stream.dst_tcp_port() ? stream.dst_tcp_port() : stream.dst_port();
  std::string error;
  auto dst = resolve(stream.dst_address(), static_cast<std::uint16_t>(port), error);
  if (!dst) return fail(wire::RESOLVE_FAILURE, error);
  if (context.key.empty() || context.node.empty())
    return fail(wire::ERROR, "throughput: the node id and key are needed to seal the hello");
  int fd = open_socket_in(stream.netns(), dst->family(), SOCK_STREAM | SOCK_NONBLOCK, 0, error);
  if (fd < 0) return fail(wire::ERROR, "throughput: " + error);
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  if (!bind_source(fd, context.source_address, dst->family(), error))
    return fail(wire::ERROR, error);
  const auto& args = stream.throughput();
  std::int64_t start = mono_ns();
  std::int64_t duration = std::int64_t{args.duration_ms()} * 1'000'000;
  std::uint64_t max_bytes = args.max_bytes() ? args.max_bytes() : UINT64_MAX;
  if (::connect(fd, dst->get(), dst->length) != 0 && errno != EINPROGRESS)
    return fail(errno == ECONNREFUSED ? wire::REFUSED : wire::UNREACHABLE,
                fmt::format("connect {}: {}", dst->to_string(), std::strerror(errno)));
  if (!wait_fd(fd, POLLOUT, start + std::min<std::int64_t>(duration, 3'000'000'000), context))
    return fail(wire::TIMEOUT, "connect timed out");
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0)
    return fail(err == ECONNREFUSED ? wire::REFUSED : wire::UNREACHABLE,
                fmt::format("connect {}: {}", dst->to_string(), std::strerror(err)));
  r.set_start_ns(utc_now_ns());
  auto hello = throughput_hello(context.node, context.key);
  if (::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(hello.size()))
    return fail(wire::ERROR, "throughput: cannot send hello");
  std::vector<std::uint8_t> chunk(128 * 1024, 0x5A);
  std::uint64_t sent = 0;
  std::int64_t first = mono_ns();
  std::int64_t end = first + duration;
  while (sent < max_bytes && mono_ns() < end) {
    if (context.stop && context.stop->load()) break;
    if (!wait_fd(fd, POLLOUT, end, context)) break;
    std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), max_bytes - sent));
    ssize_t n = ::send(fd, chunk.data(), want, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<std::uint64_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return fail(wire::ERROR, fmt::format("throughput: send: {}", std::strerror(errno)));
    }
  }
  shutdown(fd, SHUT_WR);
  // The responder answers with the bytes it received (8 bytes, big endian)
  // once it has read everything: the transfer's real end.
  std::uint8_t report[8];
  std::size_t got = 0;
  std::int64_t report_deadline = mono_ns() + 10'000'000'000;
  while (got < sizeof report && wait_fd(fd, POLLIN, report_deadline, context)) {
    ssize_t n = ::recv(fd, report + got, sizeof report - got, MSG_DONTWAIT);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  std::int64_t done = mono_ns();
  auto* v = r.mutable_throughput();
  v->set_bytes_sent(sent + hello.size());
  v->set_duration_ns(done - first);
  if (got < sizeof report)
    return fail(wire::ERROR, "throughput: the responder sent no byte count (seal refused?)");
  std::uint64_t received = get_be(report, 8);
  v->set_throughput_bps(done > first ? received * 8.0 * 1e9 / static_cast<double>(done - first)
                                     : 0);
  r.set_status(wire::OK);
  return r;
}

}  // namespace flexmon::prober::tools
