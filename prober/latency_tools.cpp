// Latency methods icmp / udp / tcp on one synchronous engine: sends on an
// absolute monotonic schedule, receives with kernel timestamps (rx:
// SO_TIMESTAMPNS; tx: SO_TIMESTAMPING TX_SOFTWARE from the error queue, else
// the time right before sendto), and probes a dead path faster until it
// answers (outage). Method details and why: schemas/tools.md.
//
// Why UDP has a second engine here beside LatencyProber (latency_prober.h),
// kept on purpose: this one owns a socket per measurement, opened in the
// stream's network namespace, blocks its thread (the one-shot CLI, the
// ToolRunner's workers), stops at the first reply (outage probing) and
// shares its matching with ICMP; LatencyProber holds thousands of streams on
// one socket of the daemon's namespace on the event loop (one sendmmsg per
// due batch, probe_sched_bench: ~10 % of a core for 10,000 streams at 1/s).
// Moving these four jobs into LatencyProber would give it per-namespace
// sockets, a blocking face and early stops: not done in issue 15. Both apply
// one RTT rule (probe_rtt_ns, timestamped_socket.h) and one probe format
// (probe_packet.h). The I/O model (ppoll on the measurement's own sockets) is
// the synchronous tools'; precise spacing comes from an absolute schedule
// with 1 ns timer slack on the worker.
#include <fcntl.h>
#include <linux/errqueue.h>
#include <linux/icmp.h>
#include <linux/net_tstamp.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <random>

#include <fmt/format.h>

#include "common/clock.h"
#include "prober/latency_stats.h"
#include "prober/probe_packet.h"
#include "prober/timestamped_socket.h"
#include "prober/tools_internal.h"
#include "wire.pb.h"

namespace flexmon::prober {
namespace tools {

namespace {

std::uint16_t checksum(const std::uint8_t* p, std::size_t n) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += (std::uint32_t{p[i]} << 8) | p[i + 1];
  if (n % 2) sum += std::uint32_t{p[n - 1]} << 8;
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

std::int64_t ts_ns(const timespec& t) { return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; }

// One datagram socket (ICMP echo, or UDP to a responder) with its matching rules.
class DatagramPinger {
 public:
  DatagramPinger(const Address& dst, const PingPlan& plan, const ToolContext& context,
                 const std::string& netns, PingOutcome& out)
      : dst_(dst), plan_(plan), out_(out) {
    std::random_device rd;
    cookie_ = (std::uint64_t{rd()} << 32 | rd()) | 1;
    ident_ = static_cast<std::uint16_t>(rd());
    std::string error;
    if (plan.method == "icmp") {
      if (dst.family() != AF_INET) {
        out_.error = "icmp: only IPv4 targets are supported";
        return;
      }
      // Unprivileged ICMP datagram socket where net.ipv4.ping_group_range
      // allows it; else a raw socket (CAP_NET_RAW).
      fd_ = open_socket_in(netns, AF_INET, SOCK_DGRAM, IPPROTO_ICMP, error);
      if (fd_ < 0) {
        fd_ = open_socket_in(netns, AF_INET, SOCK_RAW, IPPROTO_ICMP, error);
        raw_ = fd_ >= 0;
      }
      if (raw_) {
        icmp_filter filter{};
        filter.data = ~((1U << ICMP_ECHOREPLY) | (1U << ICMP_DEST_UNREACH) |
                        (1U << ICMP_TIME_EXCEEDED) | (1U << ICMP_PARAMETERPROB));
        setsockopt(fd_, SOL_RAW, ICMP_FILTER, &filter, sizeof filter);
      }
    } else {
      fd_ = open_socket_in(netns, dst.family(), SOCK_DGRAM, 0, error);
    }
    if (fd_ < 0) {
      out_.error = plan.method + ": " + error;
      return;
    }
    if (!bind_source(fd_, context.source_address, dst.family(), error)) {
      out_.error = error;
      return;
    }
    int one = 1;
    enable_rx_timestamps(fd_);
    bool v6 = dst.family() == AF_INET6;
    setsockopt(fd_, v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_RECVERR : IP_RECVERR, &one, sizeof one);
    int buf = 1 << 20;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    unsigned flags = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
                     SOF_TIMESTAMPING_OPT_TSONLY | SOF_TIMESTAMPING_OPT_ID;
    if (setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) == 0) {
      tx_stamps_ = opt_id_ = true;
    } else {
      flags &= ~static_cast<unsigned>(SOF_TIMESTAMPING_OPT_ID);
      tx_stamps_ = setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) == 0;
    }
    fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
  }

  ~DatagramPinger() {
    if (fd_ >= 0) close(fd_);
  }

  bool ok() const { return fd_ >= 0 && out_.error.empty(); }
  int fd() const { return fd_; }

  std::vector<std::uint8_t> packet(std::uint32_t index) const {
    std::size_t size = std::max<std::size_t>(plan_.size, 16);
    if (plan_.method == "udp") {
      auto p = encode_probe(
          ProbeHeader{ProbeKind::request, static_cast<std::uint16_t>(index), cookie_}, size);
      return {p.begin(), p.end()};
    }
    std::vector<std::uint8_t> p(8 + size, 0);
    p[0] = ICMP_ECHO;
    put_be(&p[4], ident_, 2);
    put_be(&p[6], index, 2);
    put_be(&p[8], cookie_, 8);
    if (raw_) put_be(&p[2], checksum(p.data(), p.size()), 2);
    return p;
  }

  // Sends probe `index`; records the user-space send time as a fallback.
  bool send(std::uint32_t index, std::int64_t& tx_mono) {
    auto p = packet(index);
    for (int attempt = 0; attempt < 2; ++attempt) {
      tx_mono = mono_ns();
      out_.tx_utc[index] = utc_now_ns();
      ssize_t n = ::sendto(fd_, p.data(), p.size(), 0, dst_.get(), dst_.length);
      if (n == static_cast<ssize_t>(p.size())) {
        sends_.push_back(index);
        return true;
      }
      // A pending ICMP error of an earlier probe is reported by this send.
      if (n < 0 && attempt == 0 &&
          (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH))
        continue;
      if (out_.error.empty())
        out_.error = fmt::format("sendto {}: {}", dst_.to_string(),
                                 n < 0 ? std::strerror(errno) : "short write");
      out_.tx_utc[index] = 0;
      return false;
    }
    return false;
  }

  // Reads everything queued. `on_reply(index, rx_utc, rx_mono)`.
  template <typename F>
  void drain(F&& on_reply) {
    drain_errors();
    std::array<std::uint8_t, 65536> buf;
    for (int i = 0; i < 1024; ++i) {
      auto received = recv_timestamped(fd_, buf);
      if (!received) {
        drain_errors();
        continue;
      }
      if (!*received) return;
      const Datagram& d = **received;
      std::int64_t rx_mono = mono_ns();
      auto index = match(buf.data(), d.bytes, d.from);
      if (index) on_reply(*index, d.rx_utc_ns, rx_mono);
    }
  }

  // The kernel's send timestamp of probe `index`, or 0.
  std::int64_t tx_stamp(std::uint32_t index) const {
    auto it = kernel_tx_.find(index);
    return it == kernel_tx_.end() ? 0 : it->second;
  }

 private:
  std::optional<std::uint32_t> match(const std::uint8_t* p, std::size_t n,
                                     const sockaddr_storage& from) {
    if (plan_.method == "udp") {
      auto h = decode_probe(std::span(p, n));
      if (!h || h->kind != ProbeKind::reply || h->measurement != cookie_) return std::nullopt;
      if (from.ss_family != dst_.family() ||
          std::memcmp(&from, &dst_.storage,
                      dst_.family() == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)) != 0)
        return std::nullopt;
      return h->index;
    }
    std::size_t off = 0;
    if (raw_) {
      if (n < 20) return std::nullopt;
      off = static_cast<std::size_t>(p[0] & 0x0F) * 4;
    }
    if (n < off + 16) return std::nullopt;
    const std::uint8_t* icmp = p + off;
    std::uint8_t type = icmp[0];
    if (raw_ &&
        (type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB)) {
      // The quoted original: IP header + the first 8 bytes of our echo.
      std::size_t inner = off + 8;
      if (n < inner + 20) return std::nullopt;
      std::size_t ihl = static_cast<std::size_t>(p[inner] & 0x0F) * 4;
      if (n < inner + ihl + 8) return std::nullopt;
      const std::uint8_t* echo = p + inner + ihl;
      if (echo[0] != ICMP_ECHO || get_be(echo + 4, 2) != ident_) return std::nullopt;
      note_icmp_error(type, icmp[1]);
      return std::nullopt;
    }
    if (type != ICMP_ECHOREPLY) return std::nullopt;
    if (raw_ && get_be(icmp + 4, 2) != ident_) return std::nullopt;
    if (get_be(icmp + 8, 8) != cookie_) return std::nullopt;
    return static_cast<std::uint32_t>(get_be(icmp + 6, 2));
  }

  void note_icmp_error(int type, int code) {
    if (type == ICMP_DEST_UNREACH && code == ICMP_PORT_UNREACH) {
      ++out_.refused;
      if (out_.icmp_text.empty()) out_.icmp_text = "ICMP: port unreachable";
    } else {
      ++out_.unreachable;
      if (out_.icmp_text.empty())
        out_.icmp_text =
            fmt::format("ICMP type {} code {}: {}", type, code,
                        type == ICMP_TIME_EXCEEDED ? "time exceeded" : "destination unreachable");
    }
  }

  void drain_errors() {
    for (int i = 0; i < 1024; ++i) {
      std::array<std::uint8_t, 2048> data;
      iovec iov{data.data(), data.size()};
      alignas(cmsghdr) char control[512];
      sockaddr_storage offender{};
      msghdr msg{};
      msg.msg_name = &offender;
      msg.msg_namelen = sizeof offender;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(fd_, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
      if (n < 0) return;
      const sock_extended_err* err = nullptr;
      std::int64_t stamp = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
            (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR))
          err = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING) {
          timespec t[3]{};
          std::memcpy(&t, CMSG_DATA(c), sizeof t);
          stamp = ts_ns(t[0]);
        }
      }
      if (!err) continue;
      if (err->ee_origin == SO_EE_ORIGIN_TIMESTAMPING) {
        // Send k of this socket; OPT_ID numbers them from 0, else in order.
        std::size_t k = opt_id_ ? err->ee_data : next_stamp_;
        next_stamp_ = k + 1;
        if (stamp != 0 && k < sends_.size()) {
          kernel_tx_[sends_[k]] = stamp;
          ++out_.kernel_tx_stamps;
        }
        continue;
      }
      if (err->ee_origin != SO_EE_ORIGIN_ICMP && err->ee_origin != SO_EE_ORIGIN_ICMP6) continue;
      // Only errors about probes of this socket to this destination count.
      if (plan_.method == "udp") {
        auto h = decode_probe(std::span(data.data(), static_cast<std::size_t>(n)));
        if (!h || h->measurement != cookie_) continue;
      }
      if (err->ee_errno == ECONNREFUSED) {
        ++out_.refused;
        if (out_.icmp_text.empty()) out_.icmp_text = "ICMP: port unreachable";
      } else {
        ++out_.unreachable;
        if (out_.icmp_text.empty())
          out_.icmp_text = fmt::format("ICMP: {}", std::strerror(static_cast<int>(err->ee_errno)));
      }
    }
  }

  Address dst_;
  const PingPlan& plan_;
  PingOutcome& out_;
  int fd_ = -1;
  bool raw_ = false;
  bool tx_stamps_ = false;
  bool opt_id_ = false;
  std::uint64_t cookie_ = 0;
  std::uint16_t ident_ = 0;
  std::vector<std::uint32_t> sends_;  // probe index of each send, in order
  std::size_t next_stamp_ = 0;
  std::map<std::uint32_t, std::int64_t> kernel_tx_;
};

PingOutcome ping_datagram(const Address& dst, const PingPlan& plan, const ToolContext& context,
                          const std::string& netns) {
  PingOutcome out;
  out.rtt.assign(plan.count, -1);
  out.tx_utc.assign(plan.count, 0);
  DatagramPinger pinger(dst, plan, context, netns, out);
  if (!pinger.ok()) return out;
  std::vector<std::int64_t> tx_mono(plan.count, 0);
  std::vector<std::int64_t> rx_utc(plan.count, 0);
  std::vector<std::int64_t> rx_mono(plan.count, 0);
  std::int64_t first = mono_ns();
  std::uint32_t next = 0;
  bool stop = false;
  auto on_reply = [&](std::uint32_t i, std::int64_t rx, std::int64_t rxm) {
    if (i >= next || out.tx_utc[i] == 0) return;
    if (rx_utc[i] != 0) {
      ++out.duplicates;
      return;
    }
    if (rxm - tx_mono[i] > plan.timeout_ns) return;  // late: lost, like fping
    rx_utc[i] = rx;
    rx_mono[i] = rxm;
    ++out.received;
    if (out.first_answered < 0 || static_cast<std::uint32_t>(out.first_answered) > i)
      out.first_answered = static_cast<int>(i);
    if (plan.stop_on_reply) stop = true;
  };
  // Bounded: every iteration either sends, or waits for a deadline that moves on.
  while (!stop) {
    if (context.stop && context.stop->load()) break;
    std::int64_t now = mono_ns();
    if (next < plan.count && now >= first + plan.spacing_ns * next) {
      if (pinger.send(next, tx_mono[next])) ++out.sent;
      ++next;
      continue;
    }
    std::int64_t end = 0;
    for (std::uint32_t i = 0; i < next; ++i)
      if (out.tx_utc[i] != 0 && rx_utc[i] == 0) end = std::max(end, tx_mono[i] + plan.timeout_ns);
    if (next >= plan.count && (end == 0 || now >= end)) break;
    std::int64_t wake = next < plan.count ? first + plan.spacing_ns * next : end;
    pollfd p{pinger.fd(), POLLIN, 0};
    if (poll_or_stop(&p, 1, wake - now, context) > 0) pinger.drain(on_reply);
  }
  // Late tx timestamps (error queue) of answered probes.
  pinger.drain([](std::uint32_t, std::int64_t, std::int64_t) {});
  for (std::uint32_t i = 0; i < plan.count; ++i) {
    if (rx_utc[i] == 0) continue;
    out.rtt[i] =
        probe_rtt_ns(out.tx_utc[i], pinger.tx_stamp(i), rx_utc[i], rx_mono[i] - tx_mono[i]);
  }
  return out;
}

// TCP: the time of the handshake (SYN -> SYN-ACK), from the kernel's own RTT
// sample (TCP_INFO, microseconds) when it has one.
PingOutcome ping_tcp(const Address& dst, const PingPlan& plan, const ToolContext& context,
                     const std::string& netns) {
  PingOutcome out;
  out.rtt.assign(plan.count, -1);
  out.tx_utc.assign(plan.count, 0);
  struct Conn {
    int fd = -1;
    std::uint32_t index = 0;
    std::int64_t tx_mono = 0;
  };
  std::vector<Conn> open;
  // An ICMP error that came while connect() held the socket lock is only a
  // soft error for TCP (the SYN is retried); IP_RECVERR queues it for us.
  auto icmp_error = [&](Conn& c) {
    std::array<std::uint8_t, 256> data;
    iovec iov{data.data(), data.size()};
    alignas(cmsghdr) char control[512];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (::recvmsg(c.fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return;
    for (cmsghdr* m = CMSG_FIRSTHDR(&msg); m; m = CMSG_NXTHDR(&msg, m)) {
      if (!((m->cmsg_level == SOL_IP && m->cmsg_type == IP_RECVERR) ||
            (m->cmsg_level == SOL_IPV6 && m->cmsg_type == IPV6_RECVERR)))
        continue;
      const auto* e = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(m));
      if (e->ee_origin != SO_EE_ORIGIN_ICMP && e->ee_origin != SO_EE_ORIGIN_ICMP6) continue;
      if (e->ee_errno == ECONNREFUSED) {
        ++out.refused;
      } else {
        ++out.unreachable;
        if (out.icmp_text.empty())
          out.icmp_text = fmt::format("ICMP: {}", std::strerror(static_cast<int>(e->ee_errno)));
      }
      return;
    }
  };
  auto close_conn = [](Conn& c) {
    linger l{1, 0};  // RST: no TIME_WAIT per probe on either side
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(c.fd);
    c.fd = -1;
  };
  std::int64_t first = mono_ns();
  std::uint32_t next = 0;
  bool stop = false;
  while (!stop) {
    if (context.stop && context.stop->load()) break;
    std::int64_t now = mono_ns();
    for (auto& c : open)
      if (c.fd >= 0 && now - c.tx_mono > plan.timeout_ns) {
        icmp_error(c);
        close_conn(c);
      }
    std::erase_if(open, [](const Conn& c) { return c.fd < 0; });
    if (next < plan.count && now >= first + plan.spacing_ns * next) {
      std::uint32_t i = next++;
      std::string error;
      int fd = open_socket_in(netns, dst.family(), SOCK_STREAM | SOCK_NONBLOCK, 0, error);
      if (fd < 0 || !bind_source(fd, context.source_address, dst.family(), error)) {
        if (fd >= 0) close(fd);
        if (out.error.empty()) out.error = "tcp: " + error;
        continue;
      }
      int one = 1;
      bool v6 = dst.family() == AF_INET6;
      setsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_RECVERR : IP_RECVERR, &one, sizeof one);
      Conn c{fd, i, mono_ns()};
      out.tx_utc[i] = utc_now_ns();
      int r = ::connect(fd, dst.get(), dst.length);
      ++out.sent;
      if (r == 0 || errno == EINPROGRESS) {
        open.push_back(c);
      } else {
        if (errno == ECONNREFUSED) {
          ++out.refused;
        } else if (errno == ENETUNREACH || errno == EHOSTUNREACH) {
          ++out.unreachable;
          if (out.icmp_text.empty()) out.icmp_text = std::strerror(errno);
        } else if (out.error.empty()) {
          out.error = fmt::format("connect {}: {}", dst.to_string(), std::strerror(errno));
        }
        close(fd);
      }
      continue;
    }
    if (next >= plan.count && open.empty()) break;
    std::int64_t wake = next < plan.count ? first + plan.spacing_ns * next : now + plan.timeout_ns;
    for (auto& c : open) wake = std::min(wake, c.tx_mono + plan.timeout_ns + 1);
    std::vector<pollfd> fds;
    for (auto& c : open) fds.push_back({c.fd, POLLOUT, 0});
    if (poll_or_stop(fds.data(), fds.size(), wake - now, context) <= 0) continue;
    std::int64_t rx_mono = mono_ns();
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if (!fds[k].revents) continue;
      Conn& c = open[k];
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) {
        tcp_info info{};
        socklen_t il = sizeof info;
        std::int64_t rtt = rx_mono - c.tx_mono;
        if (getsockopt(c.fd, IPPROTO_TCP, TCP_INFO, &info, &il) == 0 && info.tcpi_rtt > 0 &&
            std::int64_t{info.tcpi_rtt} * 1000 <= rtt + 1'000'000)
          rtt = std::int64_t{info.tcpi_rtt} * 1000;
        if (rx_mono - c.tx_mono <= plan.timeout_ns) {
          out.rtt[c.index] = std::max<std::int64_t>(rtt, 1);
          ++out.received;
          if (out.first_answered < 0 || static_cast<std::uint32_t>(out.first_answered) > c.index)
            out.first_answered = static_cast<int>(c.index);
          if (plan.stop_on_reply) stop = true;
        }
      } else if (err == ECONNREFUSED) {
        ++out.refused;
      } else if (err == ETIMEDOUT) {
        // the kernel gave up retrying the SYN: lost
      } else {
        ++out.unreachable;
        if (out.icmp_text.empty()) out.icmp_text = std::strerror(err);
      }
      close_conn(c);
    }
    std::erase_if(open, [](const Conn& c) { return c.fd < 0; });
  }
  for (auto& c : open)
    if (c.fd >= 0) {
      icmp_error(c);
      close_conn(c);
    }
  return out;
}

}  // namespace

PingOutcome ping(const Address& dst, const PingPlan& plan, const ToolContext& context,
                 const std::string& netns) {
  min_timer_slack();
  if (plan.method == "tcp") return ping_tcp(dst, plan, context, netns);
  return ping_datagram(dst, plan, context, netns);
}

wire::Result measure_latency(const wire::Stream& stream, const ToolContext& context) {
  wire::Result r = new_result(stream, context.node);
  const auto& args = stream.latency();
  PingPlan plan;
  plan.method = args.method().empty() ? "udp" : args.method();
  plan.count = std::max<std::uint32_t>(1, args.count());
  plan.spacing_ns = std::int64_t{args.spacing_ms()} * 1'000'000;
  plan.timeout_ns = std::int64_t{std::max<std::uint32_t>(1, args.timeout_ms())} * 1'000'000;
  plan.size = args.size() ? args.size() : (plan.method == "icmp" ? 56 : 64);
  std::uint32_t port =
      plan.method == "tcp" && stream.dst_tcp_port() ? stream.dst_tcp_port() : stream.dst_port();
  std::string error;
  auto dst = resolve(stream.dst_address(), static_cast<std::uint16_t>(port), error);
  if (!dst) {
    r.set_status(wire::RESOLVE_FAILURE);
    r.set_error(error);
    return r;
  }
  if (plan.method != "icmp" && (port == 0 || port > 65535)) {
    r.set_status(wire::ERROR);
    r.set_error(fmt::format("{}: no destination port", plan.method));
    return r;
  }
  auto out = ping(*dst, plan, context, stream.netns());
  for (auto t : out.tx_utc)
    if (t != 0) {
      r.set_start_ns(t);
      break;
    }
  summarize_latency(out.rtt, out.sent, out.duplicates, *r.mutable_latency());
  if (out.received > 0) {
    r.set_status(wire::OK);
  } else if (!out.error.empty()) {
    r.set_status(wire::ERROR);
    r.set_error(out.error);
  } else if (out.refused > 0) {
    r.set_status(wire::REFUSED);
    r.set_error(plan.method == "tcp" ? "connection refused (RST)" : out.icmp_text);
  } else if (out.unreachable > 0) {
    r.set_status(wire::UNREACHABLE);
    r.set_error(out.icmp_text);
  } else {
    r.set_status(wire::TIMEOUT);
  }
  if (out.sent > 0) follow_outage(stream, context, r);
  return r;
}

}  // namespace tools

void follow_outage(const wire::Stream& stream, const ToolContext& context, wire::Result& r) {
  using namespace tools;
  // Outage or heavy loss: probe the dead path faster until it answers.
  if (r.status() != wire::TIMEOUT && r.status() != wire::UNREACHABLE) return;
  if (r.latency().received() > 0 || !context.outage.enabled || context.outage.max_probes == 0)
    return;
  const auto& args = stream.latency();
  PingPlan fast;
  fast.method = args.method().empty() ? "udp" : args.method();
  fast.timeout_ns = std::int64_t{std::max<std::uint32_t>(1, args.timeout_ms())} * 1'000'000;
  fast.size = args.size() ? args.size() : (fast.method == "icmp" ? 56 : 64);
  fast.count = context.outage.max_probes;
  fast.spacing_ns = std::int64_t{std::max<std::uint32_t>(1, context.outage.spacing_ms)} * 1'000'000;
  fast.stop_on_reply = true;
  std::uint32_t port =
      fast.method == "tcp" && stream.dst_tcp_port() ? stream.dst_tcp_port() : stream.dst_port();
  std::string error;
  auto dst = resolve(stream.dst_address(), static_cast<std::uint16_t>(port), error);
  if (!dst) return;
  auto probe = ping(*dst, fast, context, stream.netns());
  auto* o = r.mutable_outage();
  o->set_start_ns(r.start_ns());
  o->set_probes_sent(probe.sent);
  o->set_resolution_ns(fast.spacing_ns);
  if (probe.first_answered >= 0) o->set_end_ns(probe.tx_utc[probe.first_answered]);
}

}  // namespace flexmon::prober
