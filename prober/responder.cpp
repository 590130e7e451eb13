#include "prober/responder.h"

#include <openssl/crypto.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "common/log.h"
#include "prober/asio_loop.h"
#include "prober/probe_packet.h"
#include "prober/timestamped_socket.h"
#include "prober/tools_internal.h"

namespace flexmon::prober {

using asio::ip::tcp;
using asio::ip::udp;

namespace {
constexpr std::size_t kMaxTcpConnections = 64;
}

struct Responder::Impl : std::enable_shared_from_this<Responder::Impl> {
  asio::io_context& io;
  udp::socket socket;
  tcp::acceptor acceptor;
  std::size_t min_size;
  std::size_t max_size;
  ResponderCounters counters;
  std::array<std::uint8_t, 65536> buffer{};
  std::mutex keys_mutex;
  // Each peer's key, keyed once (every abw probe is checked).
  std::map<std::string, std::shared_ptr<const Sealer>> keys;
  std::atomic<std::size_t> connections{0};

  Impl(asio::io_context& context, const std::string& address, std::uint16_t port, std::size_t min,
       std::size_t max)
      : io(context), socket(context), acceptor(context), min_size(min), max_size(max) {
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
    enable_rx_timestamps(socket.native_handle());
    int buf = 4 << 20;
    if (setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) != 0)
      setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    // TCP on the same port: latency method tcp and the throughput tool.
    tcp::endpoint tcp_local(ip, socket.local_endpoint().port());
    acceptor.open(tcp_local.protocol(), ec);
    if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(tcp_local, ec);
    if (!ec) acceptor.listen(256, ec);
    if (ec) {
      logger("prober")->warn("responder: no TCP listener on {}:{}: {}", address, tcp_local.port(),
                             ec.message());
      boost::system::error_code ignored;
      acceptor.close(ignored);
    }
  }

  void arm() {
    socket.async_wait(udp::socket::wait_read,
                      [weak = weak_from_this()](const boost::system::error_code& ec) {
                        if (ec == asio::error::operation_aborted) return;
                        if (auto self = weak.lock()) {
                          self->drain();
                          self->arm();
                        }
                      });
  }

  void drain() {
    // Bounded per wake-up so that probing on the same loop is never starved.
    for (int i = 0; i < 256; ++i) {
      auto received = recv_timestamped(socket.native_handle(), buffer);
      if (!received) continue;  // an ICMP error for an earlier reply; nothing to do
      if (!*received) return;
      Datagram& d = **received;
      auto packet = std::span<std::uint8_t>(buffer.data(), d.bytes);
      if (source_port(d.from) == 0) {
        ++counters.malformed;
        continue;
      }
      if (d.bytes >= 4 && get_be(buffer.data(), 4) == tools::kAbwMagic) {
        answer_abw(packet, d.rx_utc_ns, d.from, d.from_length);
        continue;
      }
      auto header = decode_probe(packet, min_size, max_size);
      if (!header || header->kind != ProbeKind::request) {
        ++counters.malformed;
        continue;
      }
      packet[5] = static_cast<std::uint8_t>(ProbeKind::reply);
      if (::sendto(socket.native_handle(), packet.data(), packet.size(), MSG_DONTWAIT,
                   reinterpret_cast<sockaddr*>(&d.from),
                   d.from_length) == static_cast<ssize_t>(d.bytes))
        ++counters.echoed;
      else
        ++counters.send_errors;
    }
  }

  // The key of `node`, or empty.
  std::shared_ptr<const Sealer> key_of(const std::string& node) {
    std::lock_guard lock(keys_mutex);
    auto it = keys.find(node);
    return it == keys.end() ? nullptr : it->second;
  }

  bool sealed_by_peer(const std::uint8_t* p, std::size_t node_at, std::size_t node_len,
                      std::size_t sealed, std::size_t seal_at) {
    if (node_len == 0 || node_len > 32) return false;
    std::string node(reinterpret_cast<const char*>(p + node_at), node_len);
    auto key = key_of(node);
    if (!key) return false;
    auto mac = tools::seal16(*key, p, sealed);
    return CRYPTO_memcmp(mac.data(), p + seal_at, mac.size()) == 0;
  }

  // abw probe (schemas/tools.md): 64 sealed bytes + 16-byte seal + padding.
  void answer_abw(std::span<std::uint8_t> p, std::int64_t rx, const sockaddr_storage& from,
                  socklen_t from_len) {
    if (p.size() < 80 || p[4] != 1 || !sealed_by_peer(p.data(), 32, p[6], 64, 64)) {
      ++counters.abw_rejected;
      return;
    }
    std::array<std::uint8_t, 32> reply{};
    put_be(&reply[0], tools::kAbwReplyMagic, 4);
    reply[4] = 1;
    std::memcpy(&reply[8], &p[8], 14);  // session, index, stream number
    put_be(&reply[24], static_cast<std::uint64_t>(rx), 8);
    if (::sendto(socket.native_handle(), reply.data(), reply.size(), MSG_DONTWAIT,
                 reinterpret_cast<const sockaddr*>(&from), from_len) == 32)
      ++counters.abw_answered;
    else
      ++counters.send_errors;
  }

  static std::uint16_t source_port(const sockaddr_storage& from) {
    if (from.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in&>(from).sin_port;
    if (from.ss_family == AF_INET6) return reinterpret_cast<const sockaddr_in6&>(from).sin6_port;
    return 0;
  }

  // --- TCP: a handshake-only peer closes at once; a throughput peer sends a
  // sealed 64-byte hello, then data until it shuts down its side; we answer
  // with the byte count (8 bytes, big endian) and close.
  struct Conn {
    explicit Conn(asio::io_context& io) : sock(io) {}
    tcp::socket sock;
    std::array<std::uint8_t, 64 * 1024> buf{};
    std::size_t have = 0;
    bool sealed = false;
    std::uint64_t bytes = 0;
    std::array<std::uint8_t, 8> report{};
  };

  void accept() {
    if (!acceptor.is_open()) return;
    auto conn = std::make_shared<Conn>(io);
    acceptor.async_accept(conn->sock,
                          [weak = weak_from_this(), conn](const boost::system::error_code& ec) {
                            if (ec == asio::error::operation_aborted) return;
                            auto self = weak.lock();
                            if (!self) return;
                            if (!ec) {
                              ++self->counters.tcp_accepted;
                              if (self->connections < kMaxTcpConnections) {
                                ++self->connections;
                                self->read(conn);
                              }
                            }
                            self->accept();
                          });
  }

  void end(const std::shared_ptr<Conn>& conn) {
    boost::system::error_code ignored;
    conn->sock.close(ignored);
    --connections;
  }

  void read(std::shared_ptr<Conn> conn) {
    auto space = conn->sealed ? asio::buffer(conn->buf)
                              : asio::buffer(&conn->buf[conn->have], 64 - conn->have);
    conn->sock.async_read_some(
        space, [weak = weak_from_this(), conn](const boost::system::error_code& ec, std::size_t n) {
          auto self = weak.lock();
          if (!self || ec == asio::error::operation_aborted) return;
          if (ec) {
            if (conn->sealed && ec == asio::error::eof) return self->report(conn);
            return self->end(conn);
          }
          if (conn->sealed) {
            conn->bytes += n;
            self->counters.throughput_bytes += n;
            return self->read(conn);
          }
          conn->have += n;
          if (conn->have < 64) return self->read(conn);
          const auto* p = conn->buf.data();
          if (get_be(p, 4) != tools::kTputMagic || p[4] != 1 ||
              !self->sealed_by_peer(p, 16, p[5], 48, 48)) {
            ++self->counters.throughput_rejected;
            return self->end(conn);
          }
          conn->sealed = true;
          conn->bytes = 64;
          self->read(conn);
        });
  }

  void report(std::shared_ptr<Conn> conn) {
    put_be(conn->report.data(), conn->bytes, 8);
    asio::async_write(
        conn->sock, asio::buffer(conn->report),
        [weak = weak_from_this(), conn](const boost::system::error_code&, std::size_t) {
          if (auto self = weak.lock()) self->end(conn);
        });
  }
};

Responder::Responder(EventLoop& loop, const std::string& address, std::uint16_t port,
                     std::size_t min_size, std::size_t max_size)
    : impl_(std::make_shared<Impl>(io_of(loop), address, port, min_size, max_size)) {
  impl_->arm();
  impl_->accept();
}

Responder::~Responder() {
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  impl_->socket.close(ignored);
}

void Responder::set_peer_keys(std::map<std::string, std::string> keys) {
  std::map<std::string, std::shared_ptr<const Sealer>> sealers;
  for (const auto& [node, key] : keys)
    if (!key.empty()) sealers.emplace(node, std::make_shared<const Sealer>(key));
  std::lock_guard lock(impl_->keys_mutex);
  impl_->keys = std::move(sealers);
}

std::uint16_t Responder::port() const { return impl_->socket.local_endpoint().port(); }

std::uint16_t Responder::tcp_port() const {
  boost::system::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

const ResponderCounters& Responder::counters() const { return impl_->counters; }

}  // namespace flexmon::prober
