#include "prober/responder.h"

#include <sys/socket.h>

#include <array>
#include <cerrno>

#include <fmt/format.h>

#include "common/log.h"
#include "prober/asio_loop.h"
#include "prober/probe_packet.h"

namespace flexmon::prober {

using asio::ip::udp;

struct Responder::Impl {
  udp::socket socket;
  std::size_t min_size;
  std::size_t max_size;
  ResponderCounters counters;
  std::array<std::uint8_t, 65536> buffer{};

  Impl(asio::io_context& io, const std::string& address, std::uint16_t port, std::size_t min,
       std::size_t max)
      : socket(io), min_size(min), max_size(max) {
    boost::system::error_code ec;
    auto ip = asio::ip::make_address(address, ec);
    if (ec) throw std::runtime_error(fmt::format("responder: bad address '{}'", address));
    udp::endpoint local(ip, port);
    socket.open(local.protocol(), ec);
    if (!ec) socket.bind(local, ec);
    if (!ec) socket.non_blocking(true, ec);
    if (ec)
      throw std::runtime_error(
          fmt::format("responder: cannot bind UDP {}:{}: {}", address, port, ec.message()));
  }

  void arm() {
    socket.async_wait(udp::socket::wait_read, [this](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted) return;
      drain();
      arm();
    });
  }

  void drain() {
    // Bounded per wake-up so that probing on the same loop is never starved.
    for (int i = 0; i < 256; ++i) {
      sockaddr_storage from{};
      socklen_t from_len = sizeof from;
      ssize_t n = ::recvfrom(socket.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT,
                             reinterpret_cast<sockaddr*>(&from), &from_len);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        continue;  // an ICMP error for an earlier reply; nothing to do
      }
      auto packet = std::span<std::uint8_t>(buffer.data(), static_cast<std::size_t>(n));
      auto header = decode_probe(packet, min_size, max_size);
      if (!header || header->kind != ProbeKind::request || source_port(from) == 0) {
        ++counters.malformed;
        continue;
      }
      packet[5] = static_cast<std::uint8_t>(ProbeKind::reply);
      if (::sendto(socket.native_handle(), packet.data(), packet.size(), MSG_DONTWAIT,
                   reinterpret_cast<sockaddr*>(&from), from_len) == n)
        ++counters.echoed;
      else
        ++counters.send_errors;
    }
  }

  static std::uint16_t source_port(const sockaddr_storage& from) {
    if (from.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in&>(from).sin_port;
    if (from.ss_family == AF_INET6) return reinterpret_cast<const sockaddr_in6&>(from).sin6_port;
    return 0;
  }
};

Responder::Responder(EventLoop& loop, const std::string& address, std::uint16_t port,
                     std::size_t min_size, std::size_t max_size)
    : impl_(std::make_unique<Impl>(io_of(loop), address, port, min_size, max_size)) {
  impl_->arm();
}

Responder::~Responder() = default;

std::uint16_t Responder::port() const { return impl_->socket.local_endpoint().port(); }

const ResponderCounters& Responder::counters() const { return impl_->counters; }

}  // namespace flexmon::prober
