#include "prober/latency_prober.h"

#include <arpa/inet.h>
#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/log.h"
#include "prober/asio_loop.h"
#include "prober/deadline_timers.h"
#include "prober/latency_stats.h"
#include "prober/probe_packet.h"
#include "prober/timestamped_socket.h"
#include "prober/tools.h"
#include "wire.pb.h"

namespace flexmon::prober {

using Mono = std::chrono::steady_clock;

// --- LatencyProber

namespace {

// Replies, errors and stamps are read at least this often while measurements
// run, and at every timer wake-up that comes half of it after the last read:
// with the 2 ms slot grid, reads ride on the sends' wake-ups.
constexpr auto kPollPeriod = std::chrono::milliseconds(4);
// Packets gathered for one sendmmsg at most.
constexpr std::size_t kSendBatch = 256;
constexpr std::size_t kReceiveBatch = 64;
// Send numbers (SO_TIMESTAMPING OPT_ID) remembered until their stamp comes.
constexpr std::size_t kStampRing = 1 << 16;
// Deadline cookie of the periodic read; measurement ids are never 0.
constexpr std::uint64_t kPollCookie = 0;

std::int64_t ns_of(Mono::duration d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

// Family, port and address equal.
bool same_endpoint(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port &&
           std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
  }
  return false;
}

// Parses a numeric IPv4 or IPv6 address with `port`; family 0 if it is none.
sockaddr_storage parse_address(const std::string& text, std::uint16_t port, socklen_t& length) {
  sockaddr_storage out{};
  auto& v4 = reinterpret_cast<sockaddr_in&>(out);
  auto& v6 = reinterpret_cast<sockaddr_in6&>(out);
  if (inet_pton(AF_INET, text.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    length = sizeof v4;
  } else if (inet_pton(AF_INET6, text.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    length = sizeof v6;
  } else {
    out.ss_family = 0;
    length = 0;
  }
  return out;
}

}  // namespace

struct Measurement {
  std::uint64_t id = 0;  // random high half, slab index low half; 0 = free
  // The result skeleton's fields, kept as strings whose capacity the reused
  // record keeps: start() copies without allocating, before packet 0 leaves.
  std::string key, tool, dst_node, dst_text;
  std::int64_t start_ns = 0;
  sockaddr_storage dst{};
  socklen_t dst_length = 0;
  std::uint32_t count = 0;
  Mono::duration spacing{};
  Mono::duration timeout{};
  std::size_t size = 0;
  MonoTime due;     // the slot's time: packet 0's schedule
  MonoTime anchor;  // packet k's schedule is anchor + k * spacing (k >= 1)
  // Per packet; capacity is kept when the record is reused.
  std::vector<std::int64_t> tx_real;    // CLOCK_REALTIME right before the send, 0 = not sent
  std::vector<std::int64_t> tx_kernel;  // the kernel's send timestamp, 0 = none
  std::vector<MonoTime> tx_mono;
  std::vector<std::int64_t> rtt;  // -1 = lost
  std::uint32_t next = 0;         // next packet to queue
  std::uint32_t sent = 0;
  std::uint32_t received = 0;
  std::uint32_t duplicates = 0;
  std::uint32_t in_batch = 0;  // packets queued, not sent yet
  wire::Status icmp_status = wire::STATUS_UNSPECIFIED;
  std::string icmp_error;
  std::string local_error;
  DeadlineTimers::Id timer = 0;
  LatencyProber::Done done;
};

struct LatencyProber::Impl : DeadlineClient, std::enable_shared_from_this<LatencyProber::Impl> {
  asio::io_context& io;
  DeadlineTimers& timers;
  int fd = -1;
  int family = AF_INET;
  std::string node;
  LatencyCounters counters;
  std::vector<std::unique_ptr<Measurement>> slab;
  std::vector<std::uint32_t> free_slots;
  std::size_t running_now = 0;
  std::atomic<std::size_t> running_count{0};
  std::mt19937_64 random{std::random_device{}()};
  std::shared_ptr<spdlog::logger> log = logger("prober");
  // Kernel send timestamps (SO_TIMESTAMPING, OPT_ID): send number -> packet.
  bool tx_stamps = false;
  std::uint32_t sends = 0;
  struct Pending {
    std::uint32_t send = 0;  // OPT_ID key
    std::uint64_t id = 0;    // 0 = free
    std::uint32_t index = 0;
  };
  std::vector<Pending> unstamped = std::vector<Pending>(kStampRing);
  // Packets due now, sent together by flush().
  struct Outgoing {
    std::uint64_t id;
    std::uint32_t index;
  };
  std::vector<Outgoing> outgoing;
  std::vector<std::uint8_t> out_bytes;
  std::vector<iovec> out_iov = std::vector<iovec>(kSendBatch);
  std::vector<mmsghdr> out_msgs = std::vector<mmsghdr>(kSendBatch);
  bool flushing = false;
  bool flush_posted = false;
  // Reading.
  BatchReceiver replies{kReceiveBatch, 9216};  // probes up to a jumbo frame
  BatchReceiver errors{kReceiveBatch, 512};
  DeadlineTimers::Id poll_timer = 0;
  MonoTime last_poll{};

  Impl(EventLoop& loop, const std::string& source, std::string node_id)
      : io(io_of(loop)), timers(loop.deadlines()), node(std::move(node_id)) {
    socklen_t length = 0;
    sockaddr_storage local = parse_address(source, 0, length);
    if (local.ss_family == 0)
      throw std::runtime_error(fmt::format("prober: bad source address '{}'", source));
    family = local.ss_family;
    fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&local), length) != 0)
      throw std::runtime_error(fmt::format("prober: cannot bind UDP probing socket to {}: {}",
                                           source, std::strerror(errno)));
    int one = 1;
    // Thousands of streams share this socket: room for a loop stall's replies.
    int buf = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) != 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    bool v6 = family == AF_INET6;
    if (!enable_rx_timestamps(fd) ||
        setsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_RECVERR : IP_RECVERR, &one, sizeof one) !=
            0)
      throw std::runtime_error(
          fmt::format("prober: cannot enable timestamps / ICMP errors: {}", std::strerror(errno)));
    unsigned flags = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
                     SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY;
    tx_stamps = setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) == 0;
    outgoing.reserve(kSendBatch);
  }

  ~Impl() override {
    if (fd >= 0) ::close(fd);
  }

  Measurement* find(std::uint64_t id) {
    auto index = static_cast<std::uint32_t>(id);
    if (id == 0 || index >= slab.size()) return nullptr;
    Measurement* m = slab[index].get();
    return m->id == id ? m : nullptr;
  }

  Measurement& allocate() {
    std::uint32_t index;
    if (free_slots.empty()) {
      index = static_cast<std::uint32_t>(slab.size());
      slab.push_back(std::make_unique<Measurement>());
    } else {
      index = free_slots.back();
      free_slots.pop_back();
    }
    Measurement& m = *slab[index];
    std::uint64_t high;
    do {
      high = random() >> 32;
    } while (high == 0);
    m.id = high << 32 | index;
    ++running_now;
    running_count = running_now;
    return m;
  }

  void release(Measurement& m) {
    free_slots.push_back(static_cast<std::uint32_t>(m.id));
    m.id = 0;
    m.done = nullptr;
    --running_now;
    running_count = running_now;
  }

  void start(const wire::Stream& stream, MonoTime due, Done done) {
    ++counters.measurements;
    Measurement& m = allocate();
    m.done = std::move(done);
    m.dst_text = stream.dst_address();
    const auto& args = stream.latency();
    m.count = std::max<std::uint32_t>(1, args.count());
    m.spacing = std::chrono::milliseconds(args.spacing_ms());
    m.timeout = std::chrono::milliseconds(std::max<std::uint32_t>(1, args.timeout_ms()));
    m.size = std::max<std::size_t>(args.size(), kProbeHeaderBytes);
    m.tx_real.assign(m.count, 0);
    m.tx_kernel.assign(m.count, 0);
    m.tx_mono.assign(m.count, MonoTime{});
    m.rtt.assign(m.count, -1);
    m.next = m.sent = m.received = m.duplicates = m.in_batch = 0;
    m.icmp_status = wire::STATUS_UNSPECIFIED;
    m.icmp_error.clear();
    m.local_error.clear();
    m.timer = 0;
    m.due = due;
    m.key = stream.key();
    m.tool = stream.tool();
    m.dst_node = stream.dst();
    m.start_ns = utc_now_ns();
    m.dst = parse_address(stream.dst_address(), static_cast<std::uint16_t>(stream.dst_port()),
                          m.dst_length);
    if (m.dst.ss_family == 0 || stream.dst_port() == 0 || stream.dst_port() > 65535 ||
        m.dst.ss_family != family) {
      auto status = m.dst.ss_family == 0 ? wire::RESOLVE_FAILURE : wire::ERROR;
      deliver(
          m, status,
          fmt::format("cannot probe '{}' port {} from this node's {} socket", stream.dst_address(),
                      stream.dst_port(), family == AF_INET6 ? "IPv6" : "IPv4"));
      return;
    }
    m.anchor = Mono::now();
    queue_next(m);
  }

  // Queues packet m.next and sets the deadline for the one after it (or the end).
  void queue_next(Measurement& m) {
    std::uint32_t index = m.next++;
    if (outgoing.size() == kSendBatch) flush();
    outgoing.push_back({m.id, index});
    ++m.in_batch;
    MonoTime at = m.next < m.count ? m.anchor + m.spacing * m.next : Mono::now() + m.timeout;
    m.timer = timers.schedule(at, weak_from_this(), m.id);
    ensure_poll();
    if (!timers.in_batch() && !flushing && !flush_posted) {
      // Started outside a timer batch (another thread's request): send soon.
      flush_posted = true;
      asio::post(io, [weak = weak_from_this()] {
        if (auto self = weak.lock()) {
          self->flush_posted = false;
          self->flush();
        }
      });
    }
  }

  void on_deadline(std::uint64_t id, MonoTime) override {
    if (id == kPollCookie) {
      poll_timer = 0;
      poll();
      ensure_poll();
      return;
    }
    Measurement* m = find(id);
    if (!m) return;
    m->timer = 0;
    if (m->next < m->count) {
      queue_next(*m);
      return;
    }
    // Its timeout: what is queued for it may have come in time.
    poll();
    if ((m = find(id)) && m->timer == 0) finish(*m);
  }

  void after_batch() override {
    flush();
    if (running_now > 0 && Mono::now() - last_poll >= kPollPeriod / 2) {
      poll();
      flush();
    }
  }

  // A read at most kPollPeriod away while measurements run.
  void ensure_poll() {
    if (poll_timer != 0 || running_now == 0) return;
    poll_timer = timers.schedule(Mono::now() + kPollPeriod, weak_from_this(), kPollCookie);
  }

  // Sends every queued packet: one sendmmsg per kSendBatch.
  void flush() {
    if (flushing) return;
    std::vector<std::uint64_t> failed;
    // Ending a failed measurement may start others: their packets go too.
    while (!outgoing.empty()) {
      flushing = true;
      while (!outgoing.empty()) {
        std::size_t n = std::min(outgoing.size(), kSendBatch);
        out_bytes.clear();
        std::size_t total = 0;
        for (std::size_t i = 0; i < n; ++i)
          if (Measurement* m = find(outgoing[i].id)) total += m->size;
        out_bytes.resize(total);
        std::size_t at = 0;
        for (std::size_t i = 0; i < n; ++i) {
          Measurement* m = find(outgoing[i].id);
          std::size_t size = m ? m->size : 0;
          if (m)
            encode_probe(ProbeHeader{ProbeKind::request,
                                     static_cast<std::uint16_t>(outgoing[i].index), m->id},
                         std::span(out_bytes.data() + at, size));
          out_iov[i] = iovec{out_bytes.data() + at, size};
          mmsghdr& h = out_msgs[i];
          h = mmsghdr{};
          if (m) {
            h.msg_hdr.msg_name = &m->dst;
            h.msg_hdr.msg_namelen = m->dst_length;
          }
          h.msg_hdr.msg_iov = &out_iov[i];
          h.msg_hdr.msg_iovlen = 1;
          at += size;
        }
        send_all(n, failed);
        outgoing.erase(outgoing.begin(), outgoing.begin() + static_cast<std::ptrdiff_t>(n));
      }
      flushing = false;
      // Measurements whose every packet failed end now.
      for (auto id : failed)
        if (Measurement* m = find(id);
            m && m->next >= m->count && m->sent == 0 && m->in_batch == 0) {
          timers.cancel(m->timer);
          m->timer = 0;
          finish(*m);
        }
      failed.clear();
    }
  }

  void send_all(std::size_t n, std::vector<std::uint64_t>& failed) {
    std::size_t i = 0;
    bool retried = false;
    while (i < n) {
      // Skip packets of measurements that ended meanwhile.
      if (!find(outgoing[i].id)) {
        ++i;
        continue;
      }
      std::size_t run = i;
      while (run < n && find(outgoing[run].id)) ++run;
      auto mono = Mono::now();
      auto real = utc_now_ns();
      int sent = ::sendmmsg(fd, &out_msgs[i], static_cast<unsigned>(run - i), MSG_DONTWAIT);
      ++counters.send_calls;
      if (sent > 0) {
        for (int k = 0; k < sent; ++k) mark_sent(outgoing[i + k], mono, real);
        i += static_cast<std::size_t>(sent);
        retried = false;
        continue;
      }
      int error = errno;
      // With IP_RECVERR a pending ICMP error of any earlier packet on this
      // shared socket is reported by the next send; it is not this one's: retry.
      if (!retried && (error == ECONNREFUSED || error == EHOSTUNREACH || error == ENETUNREACH)) {
        retried = true;
        continue;
      }
      retried = false;
      Measurement& m = *find(outgoing[i].id);
      --m.in_batch;
      if (m.local_error.empty())
        m.local_error = fmt::format("sendmmsg {}: {}", m.dst_text, std::strerror(error));
      failed.push_back(m.id);
      ++i;
    }
  }

  void mark_sent(const Outgoing& o, MonoTime mono, std::int64_t real) {
    Measurement& m = *find(o.id);
    --m.in_batch;
    ++m.sent;
    ++counters.packets_sent;
    m.tx_mono[o.index] = mono;
    m.tx_real[o.index] = real;
    if (tx_stamps) {
      Pending& p = unstamped[sends % kStampRing];
      p = Pending{sends, m.id, o.index};
    }
    ++sends;
  }

  // Reads what is queued: send stamps and ICMP errors first, then replies.
  void poll() {
    last_poll = Mono::now();
    ++counters.receive_polls;
    // The periodic read moves on: this one counts as it.
    if (poll_timer != 0) timers.reschedule(poll_timer, last_poll + kPollPeriod);
    drain_errors();
    drain_replies();
  }

  void drain_replies() {
    for (int round = 0; round < 64; ++round) {
      auto got = replies.receive(fd);
      if (!got) continue;  // the socket's pending ICMP error, read from the error queue
      if (*got == 0) return;
      auto rx_mono = Mono::now();
      for (std::size_t i = 0; i < *got; ++i) match_reply(i, rx_mono);
      if (*got < kReceiveBatch) return;
    }
  }

  void match_reply(std::size_t i, MonoTime rx_mono) {
    const Datagram& d = replies.datagram(i);
    auto header = decode_probe(replies.payload(i));
    Measurement* m =
        header && header->kind == ProbeKind::reply ? find(header->measurement) : nullptr;
    if (!m || replies.truncated(i) || !same_endpoint(d.from, m->dst) || header->index >= m->next ||
        m->tx_real[header->index] == 0 || d.bytes != m->size) {
      ++counters.unmatched;
      return;
    }
    std::uint32_t index = header->index;
    if (m->rtt[index] >= 0) {
      ++m->duplicates;
      return;
    }
    std::int64_t rtt = probe_rtt_ns(m->tx_real[index], m->tx_kernel[index], d.rx_utc_ns,
                                    ns_of(rx_mono - m->tx_mono[index]));
    if (rtt > ns_of(m->timeout)) {
      ++counters.late;
      return;
    }
    m->rtt[index] = rtt;
    ++m->received;
    if (m->next >= m->count && m->received == m->sent && m->in_batch == 0) {
      timers.cancel(m->timer);
      m->timer = 0;
      finish(*m);
    }
  }

  void drain_errors() {
    for (int round = 0; round < 64; ++round) {
      auto got = errors.receive(fd, true);
      if (!got || *got == 0) return;
      for (std::size_t i = 0; i < *got; ++i) match_error(i);
      if (*got < kReceiveBatch) return;
    }
  }

  void match_error(std::size_t i) {
    const msghdr& msg = errors.header(i);
    const sock_extended_err* err = nullptr;
    std::int64_t stamp = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&msg), c)) {
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
      Pending& p = unstamped[err->ee_data % kStampRing];
      if (p.id != 0 && p.send == err->ee_data) {
        if (Measurement* m = find(p.id); m && p.index < m->tx_kernel.size() && stamp != 0) {
          m->tx_kernel[p.index] = stamp;
          ++counters.kernel_tx_stamps;
        }
        p.id = 0;
      }
      return;
    }
    if (!err || (err->ee_origin != SO_EE_ORIGIN_ICMP && err->ee_origin != SO_EE_ORIGIN_ICMP6))
      return;
    ++counters.icmp_errors;
    // The error queue returns the payload of the packet that caused it.
    auto header = decode_probe(errors.payload(i));
    if (!header || header->kind != ProbeKind::request) return;
    Measurement* m = find(header->measurement);
    if (!m || !same_endpoint(errors.datagram(i).from, m->dst)) return;
    m->icmp_status = err->ee_errno == ECONNREFUSED ? wire::REFUSED : wire::UNREACHABLE;
    if (m->icmp_error.empty())
      m->icmp_error = fmt::format("ICMP: {}", std::strerror(static_cast<int>(err->ee_errno)));
  }

  void finish(Measurement& m) {
    for (std::uint32_t k = 0; k < m.count; ++k) {
      if (m.tx_real[k] == 0) continue;
      MonoTime scheduled = k == 0 ? m.due : m.anchor + m.spacing * k;
      std::int64_t late = ns_of(m.tx_mono[k] - scheduled);
      if (std::int64_t stamp = m.tx_kernel[k];
          stamp >= m.tx_real[k] && stamp - m.tx_real[k] < 10'000'000)
        late += stamp - m.tx_real[k];
      counters.send_lateness.record(late);
    }
    if (m.received > 0)
      deliver(m, wire::OK, m.local_error);
    else if (!m.local_error.empty())
      deliver(m, wire::ERROR, m.local_error);
    else if (m.icmp_status != wire::STATUS_UNSPECIFIED)
      deliver(m, m.icmp_status, m.icmp_error);
    else
      deliver(m, wire::TIMEOUT, {});
  }

  // Builds the result, frees the record, then calls back (which may start
  // another measurement in the freed record).
  void deliver(Measurement& m, wire::Status status, const std::string& error) {
    wire::Result r = new_result(m.key, m.tool, node, m.dst_node, m.start_ns);
    r.set_status(status);
    if (!error.empty()) r.set_error(error);
    if (m.dst.ss_family != 0 && m.dst.ss_family == family)
      summarize_latency(m.rtt, m.sent, m.duplicates, *r.mutable_latency());
    auto done = std::move(m.done);
    release(m);
    if (done) done(std::move(r));
  }
};

LatencyProber::LatencyProber(EventLoop& loop, const std::string& source_address, std::string node)
    : impl_(std::make_shared<Impl>(loop, source_address, std::move(node))) {
  loop.deadlines().add_client(impl_);
}

LatencyProber::~LatencyProber() = default;

void LatencyProber::measure(const wire::Stream& stream, MonoTime due, Done done) {
  // On the loop thread (the stream runner) start at once: no queueing delay.
  if (impl_->io.get_executor().running_in_this_thread()) {
    impl_->start(stream, due, std::move(done));
    return;
  }
  asio::post(impl_->io,
             [weak = std::weak_ptr<Impl>(impl_), stream, due, done = std::move(done)]() mutable {
               if (auto self = weak.lock()) self->start(stream, due, std::move(done));
             });
}

void LatencyProber::measure(const wire::Stream& stream, Done done) {
  measure(stream, Mono::now(), std::move(done));
}

std::size_t LatencyProber::running() const { return impl_->running_count; }

const LatencyCounters& LatencyProber::counters() const { return impl_->counters; }
LatencyCounters& LatencyProber::counters() { return impl_->counters; }

}  // namespace flexmon::prober
