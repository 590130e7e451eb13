// Available bandwidth (tool "abw"), pathload family: periodic UDP streams at
// rate R to the peer's responder, which answers each packet with its kernel
// receive time; a stream whose one-way delays trend upward (or that the path
// delivers slower than it was sent, or loses) means R > available bandwidth.
// A binary search over R between an initial dispersion estimate and zero
// brackets the estimate. Hard caps: rate, bytes, duration (never exceeded).
// Every probe carries the sender's node id and a truncated HMAC under its key.
// Why this estimator: schemas/tools.md.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "common/clock.h"
#include "prober/tools_internal.h"
#include "wire.pb.h"

namespace flexmon::prober::tools {

namespace {

constexpr std::size_t kPayload = 972;      // UDP payload: 1000-byte IP packets
constexpr std::size_t kWireOverhead = 28;  // IPv4 + UDP headers
constexpr std::size_t kReplyBytes = 32 + kWireOverhead;
constexpr std::size_t kSealedPrefix = 64;  // bytes covered by the seal

struct Probe {
  std::int64_t tx = 0;  // sender UTC, ns
  std::int64_t rx = 0;  // responder's kernel receive time, UTC ns; 0 = lost
};

enum class Trend { increasing, flat, grey, disturbed };

class AbwSession {
 public:
  AbwSession(const Address& dst, const wire::Stream& stream, const ToolContext& context)
      : dst_(dst), context_(context), args_(stream.abw()) {
    std::random_device rd;
    session_ = (std::uint64_t{rd()} << 32) | rd();
    fd_ = open_socket_in(stream.netns(), dst.family(), SOCK_DGRAM, 0, error_);
    if (fd_ >= 0 && !bind_source(fd_, context.source_address, dst.family(), error_)) {
      close(fd_);
      fd_ = -1;
    }
    if (fd_ >= 0) {
      int buf = 4 << 20;
      setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
      setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
      fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
    }
    start_ = mono_ns();
    deadline_ = start_ + std::int64_t{args_.max_duration_ms()} * 1'000'000;
  }
  ~AbwSession() {
    if (fd_ >= 0) close(fd_);
  }

  const std::string& error() const { return error_; }
  bool ok() const { return fd_ >= 0; }
  std::uint64_t bytes() const { return bytes_; }
  std::int64_t elapsed() const { return mono_ns() - start_; }

  // Cost of a stream of n packets, both directions, IP bytes.
  static std::uint64_t cost(std::uint32_t n) {
    return std::uint64_t{n} * (kPayload + kWireOverhead + kReplyBytes);
  }

  // Whether a stream of n packets at `rate` still fits every cap.
  bool fits(std::uint32_t n, double rate) const {
    double seconds = n * (kPayload + kWireOverhead) * 8.0 / rate;
    std::int64_t need = static_cast<std::int64_t>(seconds * 1e9) + wait_ns(seconds);
    return rate <= static_cast<double>(args_.max_rate_bps()) &&
           bytes_ + cost(n) <= args_.max_bytes() && mono_ns() + need <= deadline_ &&
           !(context_.stop && context_.stop->load());
  }

  // Sends n packets at `rate` bit/s (IP bytes), then collects replies.
  std::vector<Probe> stream(std::uint32_t n, double rate) {
    std::vector<Probe> probes(n);
    std::vector<std::uint8_t> packet(kPayload, 0);
    put_be(&packet[0], kAbwMagic, 4);
    packet[4] = 1;
    std::size_t node_len = std::min<std::size_t>(context_.node.size(), 32);
    packet[6] = static_cast<std::uint8_t>(node_len);
    put_be(&packet[8], session_, 8);
    put_be(&packet[20], stream_no_, 2);
    std::memcpy(&packet[32], context_.node.data(), node_len);
    auto period = static_cast<std::int64_t>((kPayload + kWireOverhead) * 8.0 / rate * 1e9);
    std::int64_t t0 = mono_ns() + 100'000;
    for (std::uint32_t i = 0; i < n; ++i) {
      std::int64_t at = t0 + period * i;
      // Sleep for most of the gap, then spin: the period is tens of us.
      if (at - mono_ns() > 200'000) sleep_until(at - 100'000);
      while (mono_ns() < at) {
      }
      put_be(&packet[16], i, 4);
      std::int64_t tx = realtime_ns();
      put_be(&packet[24], static_cast<std::uint64_t>(tx), 8);
      auto mac = seal16(context_.key, packet.data(), kSealedPrefix);
      std::memcpy(&packet[kSealedPrefix], mac.data(), mac.size());
      if (::sendto(fd_, packet.data(), packet.size(), 0, dst_.get(), dst_.length) ==
          static_cast<ssize_t>(packet.size())) {
        probes[i].tx = tx;
        bytes_ += kPayload + kWireOverhead;
      }
    }
    double seconds = n * period / 1e9;
    collect(probes, mono_ns() + wait_ns(seconds));
    ++stream_no_;
    return probes;
  }

 private:
  // Replies may trail the last probe by one RTT plus the queue it built.
  std::int64_t wait_ns(double stream_seconds) const {
    if (rtt_ns_ == 0) return 1'000'000'000;  // no RTT yet: wait up to 1 s
    return rtt_ns_ * 2 + 50'000'000 + static_cast<std::int64_t>(stream_seconds * 1e9);
  }

  void collect(std::vector<Probe>& probes, std::int64_t until) {
    std::size_t expected = 0;
    for (auto& p : probes) expected += p.tx != 0;
    std::size_t got = 0;
    std::array<std::uint8_t, 2048> buf;
    while (got < expected) {
      std::int64_t left = until - mono_ns();
      if (left <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      timespec t{static_cast<time_t>(left / 1'000'000'000),
                 static_cast<long>(left % 1'000'000'000)};
      if (ppoll(&p, 1, &t, nullptr) <= 0) continue;
      for (int k = 0; k < 4096; ++k) {
        ssize_t n = ::recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0) break;
        if (n < 32 || get_be(&buf[0], 4) != kAbwReplyMagic || get_be(&buf[8], 8) != session_ ||
            get_be(&buf[20], 2) != stream_no_)
          continue;
        auto i = get_be(&buf[16], 4);
        if (i >= probes.size() || probes[i].tx == 0 || probes[i].rx != 0) continue;
        probes[i].rx = static_cast<std::int64_t>(get_be(&buf[24], 8));
        bytes_ += kReplyBytes;
        ++got;
        std::int64_t rtt = std::max<std::int64_t>(1, realtime_ns() - probes[i].tx);
        if (rtt_ns_ == 0 || rtt < rtt_ns_) rtt_ns_ = rtt;
      }
    }
  }

  Address dst_;
  const ToolContext& context_;
  const wire::AbwArgs& args_;
  std::string error_;
  int fd_ = -1;
  std::uint64_t session_ = 0;
  std::uint16_t stream_no_ = 0;
  std::uint64_t bytes_ = 0;
  std::int64_t start_ = 0;
  std::int64_t deadline_ = 0;
  std::int64_t rtt_ns_ = 0;
};

// Rate at which the path delivered the tail of a stream: bits / receive spread.
double delivery_rate(const std::vector<Probe>& probes) {
  std::vector<std::int64_t> rx;
  for (const auto& p : probes)
    if (p.rx != 0) rx.push_back(p.rx);
  if (rx.size() < 8) return 0;
  std::size_t from = rx.size() / 3;
  std::int64_t spread = rx.back() - rx[from];
  if (spread <= 0) return 0;
  return static_cast<double>(rx.size() - 1 - from) * (kPayload + kWireOverhead) * 8 * 1e9 / spread;
}

// Pathload's tests on the one-way delays: PCT (pairwise comparisons of group
// medians) and PDT (net change over total variation), plus loss and a
// delivery rate below the sending rate.
Trend classify(const std::vector<Probe>& probes, bool strict = true) {
  std::vector<std::int64_t> owd;
  std::size_t sent = 0;
  for (const auto& p : probes) {
    sent += p.tx != 0;
    if (p.tx != 0 && p.rx != 0) owd.push_back(p.rx - p.tx);
  }
  if (sent == 0) return Trend::grey;
  // The sender was descheduled mid-stream (a gap of several periods): the
  // stream did not probe rate R; pathload discards such streams too.
  if (strict) {
    std::int64_t prev = 0, first_tx = 0, last_tx = 0, gaps = 0, worst = 0;
    for (const auto& p : probes) {
      if (p.tx == 0) continue;
      if (prev != 0) worst = std::max(worst, p.tx - prev);
      if (first_tx == 0) first_tx = p.tx;
      last_tx = p.tx;
      prev = p.tx;
      ++gaps;
    }
    double period = gaps > 1 ? static_cast<double>(last_tx - first_tx) / (gaps - 1) : 0;
    if (period > 0 && worst > std::max(8 * period, period + 1'000'000.0)) return Trend::disturbed;
  }
  if (owd.size() < sent * 9 / 10) return Trend::increasing;  // >10 % lost: too fast
  std::size_t groups = std::max<std::size_t>(4, static_cast<std::size_t>(std::sqrt(owd.size())));
  std::size_t per = owd.size() / groups;
  if (per == 0) return Trend::grey;
  std::vector<std::int64_t> med;
  for (std::size_t g = 0; g < groups; ++g) {
    std::vector<std::int64_t> part(owd.begin() + g * per, owd.begin() + (g + 1) * per);
    std::nth_element(part.begin(), part.begin() + part.size() / 2, part.end());
    med.push_back(part[part.size() / 2]);
  }
  double up = 0, total = 0;
  for (std::size_t k = 1; k < med.size(); ++k) {
    up += med[k] > med[k - 1];
    total += std::abs(static_cast<double>(med[k] - med[k - 1]));
  }
  double pct = up / (med.size() - 1);
  double net = static_cast<double>(med.back() - med.front());
  double pdt = total > 0 ? net / total : 0;
  // A queue that grew must show as a net rise of the group medians beyond
  // scheduling noise: 2 % of the stream's duration, at least 100 us.
  std::int64_t span = 0;
  for (std::size_t i = probes.size(); i-- > 0;)
    if (probes[i].tx != 0) {
      span = probes[i].tx - probes.front().tx;
      break;
    }
  // A queue that built up within the stream (and drained when bursty cross
  // traffic paused) is also a sign that R exceeded the available bandwidth.
  double peak = static_cast<double>(*std::max_element(med.begin(), med.end()) - med.front());
  Trend t = Trend::grey;
  if (peak > std::max(500'000.0, 0.05 * static_cast<double>(span)) && pct >= 0.5)
    t = Trend::increasing;
  else if (net < std::max(100'000.0, 0.02 * static_cast<double>(span)))
    t = Trend::flat;
  else if (pct > 0.66 || pdt > 0.55)
    t = Trend::increasing;
  else if (pct < 0.54 && pdt < 0.45)
    t = Trend::flat;
  if (std::getenv("FLEXMON_ABW_DEBUG")) {
    std::string m;
    for (auto x : med) m += fmt::format(" {:.0f}", (x - med.front()) / 1e3);
    std::fprintf(stderr, "abw: n=%zu/%zu pct=%.2f pdt=%.2f net=%.0fus span=%.1fms -> %d |%s\n",
                 owd.size(), sent, pct, pdt, net / 1e3, span / 1e6, static_cast<int>(t), m.c_str());
  }
  return t;
}

}  // namespace

wire::Result measure_abw(const wire::Stream& stream, const ToolContext& context) {
  wire::Result r;
  r.set_stream(stream.key());
  r.set_tool(stream.tool());
  r.set_src(context.node);
  r.set_dst(stream.dst());
  r.set_start_ns(utc_now_ns());
  std::string error;
  auto dst = resolve(stream.dst_address(), static_cast<std::uint16_t>(stream.dst_port()), error);
  if (!dst) {
    r.set_status(wire::RESOLVE_FAILURE);
    r.set_error(error);
    return r;
  }
  if (context.key.empty() || context.node.empty()) {
    r.set_status(wire::ERROR);
    r.set_error("abw: the node id and key are needed to seal probes");
    return r;
  }
  min_timer_slack();
  AbwSession s(*dst, stream, context);
  if (!s.ok()) {
    r.set_status(wire::ERROR);
    r.set_error("abw: " + s.error());
    return r;
  }
  const double max_rate = static_cast<double>(stream.abw().max_rate_bps());
  constexpr std::uint32_t kTrain = 48;
  constexpr std::uint32_t kStream = 100;
  constexpr int kStreamsPerFleet = 2;
  double lo = 0, hi = max_rate;
  auto* v = r.mutable_abw();
  auto finish = [&](wire::Status status, const std::string& why) {
    v->set_lower_bps(lo);
    v->set_upper_bps(hi);
    v->set_estimate_bps((lo + hi) / 2);
    v->set_bytes_sent(s.bytes());
    v->set_duration_ns(s.elapsed());
    r.set_status(status);
    if (!why.empty()) r.set_error(why);
    return r;
  };
  // 1. A train at the highest allowed rate: its delivery rate bounds the
  //    search from above (with margin: cross traffic makes it noisy).
  if (!s.fits(kTrain, max_rate)) return finish(wire::ERROR, "abw: caps too small for one train");
  auto train = s.stream(kTrain, max_rate);
  std::size_t answered = 0;
  for (auto& p : train) answered += p.rx != 0;
  if (answered == 0)
    return finish(wire::TIMEOUT,
                  "abw: no reply from the responder (is it running, "
                  "and does it know this node's key?)");
  double adr = delivery_rate(train);
  if (std::getenv("FLEXMON_ABW_DEBUG"))
    std::fprintf(stderr, "abw: train %zu/%u answered, dispersion rate %.2f Mbit/s\n", answered,
                 kTrain, adr / 1e6);
  // 2. Binary search over the rate with fleets of streams; the first try is
  //    the train's dispersion rate (a guess near the answer, not a bound:
  //    noisy receive stamps can make it far too low or high).
  double first = adr > 0 ? std::min(adr, max_rate * 0.97) : max_rate / 2;
  for (int iteration = 0; iteration < 14 && hi - lo > 0.03 * hi; ++iteration) {
    double rate = iteration == 0 ? first : (lo + hi) / 2;
    if (std::getenv("FLEXMON_ABW_DEBUG"))
      std::fprintf(stderr, "abw: [%.2f, %.2f] try %.2f Mbit/s\n", lo / 1e6, hi / 1e6, rate / 1e6);
    if (rate < 50'000) break;
    int increasing = 0, flat = 0;
    // A stream lasts at least ~25 ms: long enough for a queue to outgrow a
    // bottleneck's token-bucket burst (a few ms of data) at R just above A.
    auto n = static_cast<std::uint32_t>(
        std::clamp(rate * 0.025 / ((kPayload + kWireOverhead) * 8.0), double{kStream}, 400.0));
    for (int k = 0; k < kStreamsPerFleet; ++k) {
      if (!s.fits(n, rate)) return finish(wire::OK, "");
      auto probes = s.stream(n, rate);
      auto t = classify(probes);
      for (int retry = 0; t == Trend::disturbed && retry < 1 && s.fits(n, rate); ++retry)
        t = classify(probes = s.stream(n, rate));
      if (t == Trend::disturbed) t = classify(probes, false);  // the best we could do
      increasing += t == Trend::increasing;
      flat += t == Trend::flat;
    }
    if (increasing > flat)
      hi = rate;
    else if (flat > increasing)
      lo = rate;
    else {  // the grey region: R is about the available bandwidth
      lo = std::max(lo, rate * 0.97);
      hi = std::min(hi, rate * 1.03);
      break;
    }
  }
  return finish(wire::OK, "");
}

}  // namespace flexmon::prober::tools
