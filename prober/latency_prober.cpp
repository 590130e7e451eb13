#include "prober/latency_prober.h"

#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <random>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/log.h"
#include "prober/asio_loop.h"
#include "prober/latency_stats.h"
#include "prober/probe_packet.h"
#include "prober/timestamped_socket.h"
#include "wire.pb.h"

namespace flexmon::prober {

using asio::ip::udp;
using Mono = std::chrono::steady_clock;

namespace {

std::int64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

bool same_endpoint(const sockaddr_storage& a, const udp::endpoint& b) {
  udp::endpoint ea;
  if (a.ss_family == AF_INET) {
    const auto& s = reinterpret_cast<const sockaddr_in&>(a);
    asio::ip::address_v4::bytes_type bytes;
    std::memcpy(bytes.data(), &s.sin_addr, 4);
    ea = udp::endpoint(asio::ip::address_v4(bytes), ntohs(s.sin_port));
  } else if (a.ss_family == AF_INET6) {
    const auto& s = reinterpret_cast<const sockaddr_in6&>(a);
    asio::ip::address_v6::bytes_type bytes;
    std::memcpy(bytes.data(), &s.sin6_addr, 16);
    ea = udp::endpoint(asio::ip::address_v6(bytes), ntohs(s.sin6_port));
  } else {
    return false;
  }
  return ea == b;
}

}  // namespace

struct Measurement {
  std::uint64_t id = 0;
  wire::Result result;  // labels filled at start
  udp::endpoint dst;
  std::uint32_t count = 0;
  Mono::duration spacing{};
  Mono::duration timeout{};
  std::size_t size = 0;
  std::vector<std::int64_t> tx_real;    // CLOCK_REALTIME at send, 0 = not sent
  std::vector<std::int64_t> tx_kernel;  // the kernel's send timestamp, 0 = none
  std::vector<Mono::time_point> tx_mono;
  std::vector<std::int64_t> rtt;  // -1 = lost
  std::uint32_t next = 0;         // next packet to send
  std::uint32_t sent = 0;
  std::uint32_t received = 0;
  std::uint32_t duplicates = 0;
  wire::Status icmp_status = wire::STATUS_UNSPECIFIED;
  std::string local_error;
  Mono::time_point first_send;
  asio::steady_timer timer;
  LatencyProber::Done done;

  explicit Measurement(asio::io_context& io) : timer(io) {}
};

struct LatencyProber::Impl : std::enable_shared_from_this<LatencyProber::Impl> {
  asio::io_context& io;
  udp::socket socket;
  std::string node;
  LatencyCounters counters;
  std::unordered_map<std::uint64_t, std::unique_ptr<Measurement>> running;
  std::atomic<std::size_t> running_count{0};
  std::mt19937_64 random{std::random_device{}()};
  std::array<std::uint8_t, 65536> buffer{};
  std::shared_ptr<spdlog::logger> log = logger("prober");
  // Kernel send timestamps (SO_TIMESTAMPING, OPT_ID): send number -> probe.
  bool tx_stamps = false;
  std::uint32_t sends = 0;
  std::unordered_map<std::uint32_t, std::pair<std::uint64_t, std::uint32_t>> unstamped;

  Impl(asio::io_context& context, const std::string& source, std::string node_id)
      : io(context), socket(context), node(std::move(node_id)) {
    boost::system::error_code ec;
    auto ip = asio::ip::make_address(source, ec);
    if (ec) throw std::runtime_error(fmt::format("prober: bad source address '{}'", source));
    udp::endpoint local(ip, 0);
    socket.open(local.protocol(), ec);
    if (!ec) socket.bind(local, ec);
    if (!ec) socket.non_blocking(true, ec);
    if (ec)
      throw std::runtime_error(
          fmt::format("prober: cannot bind UDP probing socket to {}: {}", source, ec.message()));
    int one = 1;
    int fd = socket.native_handle();
    // Thousands of streams share this socket: room for a loop stall's replies.
    int buf = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) != 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    bool v6 = ip.is_v6();
    if (!enable_rx_timestamps(fd) ||
        setsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_RECVERR : IP_RECVERR, &one, sizeof one) !=
            0)
      throw std::runtime_error(
          fmt::format("prober: cannot enable timestamps / ICMP errors: {}", std::strerror(errno)));
    unsigned flags = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
                     SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY;
    tx_stamps = setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) == 0;
  }

  void arm() {
    socket.async_wait(udp::socket::wait_read,
                      [weak = weak_from_this()](const boost::system::error_code& ec) {
                        if (ec == asio::error::operation_aborted) return;
                        if (auto self = weak.lock()) {
                          self->drain_errors();
                          self->drain_replies();
                          self->arm();
                        }
                      });
  }

  void start(const wire::Stream& stream, Done done) {
    ++counters.measurements;
    auto m = std::make_unique<Measurement>(io);
    do {
      m->id = random();
    } while (m->id == 0 || running.contains(m->id));
    m->done = std::move(done);
    auto& r = m->result;
    r.set_stream(stream.key());
    r.set_tool(stream.tool());
    r.set_src(node);
    r.set_dst(stream.dst());
    const auto& args = stream.latency();
    m->count = std::max<std::uint32_t>(1, args.count());
    m->spacing = std::chrono::milliseconds(args.spacing_ms());
    m->timeout = std::chrono::milliseconds(std::max<std::uint32_t>(1, args.timeout_ms()));
    m->size = std::max<std::size_t>(args.size(), kProbeHeaderBytes);
    m->tx_real.assign(m->count, 0);
    m->tx_kernel.assign(m->count, 0);
    m->tx_mono.assign(m->count, {});
    m->rtt.assign(m->count, -1);

    boost::system::error_code ec;
    auto ip = asio::ip::make_address(stream.dst_address(), ec);
    if (ec || stream.dst_port() == 0 || stream.dst_port() > 65535 ||
        ip.is_v6() != socket.local_endpoint().address().is_v6()) {
      r.set_start_ns(utc_now_ns());
      r.set_status(ec ? wire::RESOLVE_FAILURE : wire::ERROR);
      r.set_error(fmt::format("cannot probe '{}' port {} from {}", stream.dst_address(),
                              stream.dst_port(), socket.local_endpoint().address().to_string()));
      finish_now(std::move(m));
      return;
    }
    m->dst = udp::endpoint(ip, static_cast<std::uint16_t>(stream.dst_port()));
    std::uint64_t id = m->id;
    running.emplace(id, std::move(m));
    running_count = running.size();
    send_next(id);
  }

  // Sends the due packet, then arms the timer for the next send or the end.
  void send_next(std::uint64_t id) {
    auto it = running.find(id);
    if (it == running.end()) return;
    Measurement& m = *it->second;
    std::uint32_t index = m.next++;
    auto packet = encode_probe(
        ProbeHeader{ProbeKind::request, static_cast<std::uint16_t>(index), id}, m.size);
    if (index == 0) {
      m.first_send = Mono::now();
      m.result.set_start_ns(utc_now_ns());
    }
    if (send_packet(m, index, packet)) ++m.sent;
    auto at = m.next < m.count ? m.first_send + m.spacing * m.next : m.tx_mono[index] + m.timeout;
    if (m.next >= m.count && m.sent == 0) at = Mono::now();
    m.timer.expires_at(at);
    m.timer.async_wait([weak = weak_from_this(), id](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted) return;
      auto self = weak.lock();
      if (!self) return;
      auto it = self->running.find(id);
      if (it == self->running.end()) return;
      if (it->second->next < it->second->count)
        self->send_next(id);
      else
        self->finish(id);
    });
  }

  bool send_packet(Measurement& m, std::uint32_t index, const std::string& packet) {
    const auto* dst = m.dst.data();
    for (int attempt = 0; attempt < 2; ++attempt) {
      m.tx_mono[index] = Mono::now();
      m.tx_real[index] = realtime_ns();
      ssize_t n = ::sendto(socket.native_handle(), packet.data(), packet.size(), MSG_DONTWAIT, dst,
                           static_cast<socklen_t>(m.dst.size()));
      if (n == static_cast<ssize_t>(packet.size())) {
        if (tx_stamps) {
          if (unstamped.size() > 65536) unstamped.clear();  // stamps stopped coming
          unstamped[sends] = {m.id, index};
        }
        ++sends;
        return true;
      }
      // With IP_RECVERR a pending ICMP error of any earlier packet on this
      // shared socket is reported by the next sendto; it is not ours: retry.
      if (n < 0 && (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) &&
          attempt == 0)
        continue;
      if (m.local_error.empty())
        m.local_error = fmt::format("sendto {}: {}", m.dst.address().to_string(),
                                    n < 0 ? std::strerror(errno) : "short write");
      m.tx_real[index] = 0;
      return false;
    }
    return false;
  }

  void drain_replies() {
    for (int i = 0; i < 256; ++i) {
      auto received = recv_timestamped(socket.native_handle(), buffer);
      if (!received) continue;  // the socket's pending ICMP error, read from the error queue
      if (!*received) return;
      const Datagram& d = **received;
      auto rx_mono = Mono::now();
      std::int64_t rx_real = d.rx_utc_ns;
      const sockaddr_storage& from = d.from;
      const auto n = d.bytes;
      auto header = decode_probe(std::span(buffer.data(), n));
      if (!header || header->kind != ProbeKind::reply) {
        ++counters.unmatched;
        continue;
      }
      auto it = running.find(header->measurement);
      if (it == running.end() || !same_endpoint(from, it->second->dst) ||
          header->index >= it->second->next || it->second->tx_real[header->index] == 0) {
        ++counters.unmatched;
        continue;
      }
      Measurement& m = *it->second;
      std::uint32_t index = header->index;
      if (n != m.size) {
        ++counters.unmatched;
        continue;
      }
      if (m.rtt[index] >= 0) {
        ++m.duplicates;
        continue;
      }
      auto mono_rtt =
          std::chrono::duration_cast<std::chrono::nanoseconds>(rx_mono - m.tx_mono[index]);
      if (rx_mono - m.tx_mono[index] > m.timeout) {
        ++counters.late;
        continue;
      }
      std::int64_t tx = m.tx_real[index];
      // The kernel's stamp (at the device) comes after ours, before the reply.
      if (std::int64_t k = m.tx_kernel[index]; k >= tx && k - tx < 10'000'000 && k < rx_real)
        tx = k;
      std::int64_t rtt = rx_real - tx;
      // The wall clock was stepped between send and receive: fall back to the
      // monotonic interval (slightly longer: it includes the wake-up).
      if (rtt <= 0 || rtt > mono_rtt.count() + 1'000'000) rtt = mono_rtt.count();
      m.rtt[index] = std::max<std::int64_t>(rtt, 1);
      ++m.received;
      if (m.next >= m.count && m.received == m.sent) finish(m.id);
    }
  }

  void drain_errors() {
    for (int i = 0; i < 256; ++i) {
      sockaddr_storage offender{};
      std::array<std::uint8_t, 512> data{};
      iovec iov{data.data(), data.size()};
      alignas(cmsghdr) char control[512];
      msghdr msg{};
      msg.msg_name = &offender;
      msg.msg_namelen = sizeof offender;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(socket.native_handle(), &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
      if (n < 0) return;
      const sock_extended_err* err = nullptr;
      std::int64_t stamp = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
            (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR))
          err = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING) {
          timespec ts[3]{};
          std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
          stamp = std::int64_t{ts[0].tv_sec} * 1'000'000'000 + ts[0].tv_nsec;
        }
      }
      if (err && err->ee_origin == SO_EE_ORIGIN_TIMESTAMPING) {
        auto it = unstamped.find(err->ee_data);
        if (it != unstamped.end()) {
          auto m = running.find(it->second.first);
          if (m != running.end() && it->second.second < m->second->tx_kernel.size())
            m->second->tx_kernel[it->second.second] = stamp;
          unstamped.erase(it);
        }
        continue;
      }
      if (!err || (err->ee_origin != SO_EE_ORIGIN_ICMP && err->ee_origin != SO_EE_ORIGIN_ICMP6))
        continue;
      ++counters.icmp_errors;
      // The error queue returns the payload of the packet that caused it.
      auto header = decode_probe(std::span(data.data(), static_cast<std::size_t>(n)));
      if (!header || header->kind != ProbeKind::request) continue;
      auto it = running.find(header->measurement);
      if (it == running.end() || !same_endpoint(offender, it->second->dst)) continue;
      it->second->icmp_status = err->ee_errno == ECONNREFUSED ? wire::REFUSED : wire::UNREACHABLE;
      if (it->second->result.error().empty())
        it->second->result.set_error(fmt::format("ICMP: {}", std::strerror(err->ee_errno)));
    }
  }

  void finish(std::uint64_t id) {
    auto it = running.find(id);
    if (it == running.end()) return;
    auto m = std::move(it->second);
    running.erase(it);
    running_count = running.size();
    m->timer.cancel();
    auto& r = m->result;
    summarize_latency(m->rtt, m->sent, m->duplicates, *r.mutable_latency());
    if (m->received > 0) {
      r.set_status(wire::OK);
      r.clear_error();
      if (!m->local_error.empty()) r.set_error(m->local_error);
    } else if (!m->local_error.empty()) {
      r.set_status(wire::ERROR);
      r.set_error(m->local_error);
    } else if (m->icmp_status != wire::STATUS_UNSPECIFIED) {
      r.set_status(m->icmp_status);
    } else {
      r.set_status(wire::TIMEOUT);
      r.clear_error();
    }
    finish_now(std::move(m));
  }

  void finish_now(std::unique_ptr<Measurement> m) {
    auto done = std::move(m->done);
    wire::Result result = std::move(m->result);
    // Destroying the timer queues its cancelled handler, which holds only the
    // id and finds no entry.
    m.reset();
    if (done) done(std::move(result));
  }
};

LatencyProber::LatencyProber(EventLoop& loop, const std::string& source_address, std::string node)
    : impl_(std::make_shared<Impl>(io_of(loop), source_address, std::move(node))) {
  impl_->arm();
}

LatencyProber::~LatencyProber() = default;

void LatencyProber::measure(const wire::Stream& stream, Done done) {
  // On the loop thread (the stream runner) start at once: no queueing delay.
  if (impl_->io.get_executor().running_in_this_thread()) {
    impl_->start(stream, std::move(done));
    return;
  }
  asio::post(impl_->io,
             [weak = std::weak_ptr<Impl>(impl_), stream, done = std::move(done)]() mutable {
               if (auto self = weak.lock()) self->start(stream, std::move(done));
             });
}

std::size_t LatencyProber::running() const { return impl_->running_count; }

const LatencyCounters& LatencyProber::counters() const { return impl_->counters; }

}  // namespace flexmon::prober
