// Available bandwidth (tool "abw"), pathload family: periodic UDP streams at
// rate R to the peer's responder, which answers each packet with its kernel
// receive time; a stream whose one-way delays trend upward (or that loses)
// means R > available bandwidth A. A short train's dispersion rate gives the
// first guesses, then a binary search with streams sized to the resolution
// it needs brackets A. Hard caps: rate, bytes, duration (never exceeded), and
// a measurement costs at most kIntrusionSeconds' worth of A. Every probe
// carries the sender's node id and a truncated HMAC under its key. Why this
// estimator and these parameters: schemas/tools.md.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
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

// Search parameters; schemas/tools.md says why these values.
constexpr std::uint32_t kTrain = 12;         // packets of the first train
constexpr std::uint32_t kPrimer = 3;         // back-to-back packets opening a stream
constexpr double kRisePackets = 1.5;         // trend threshold, bottleneck packet times
constexpr double kMinRiseNs = 150'000;       // ... and at least this (stamp noise)
constexpr double kFinestResolution = 0.05;   // smallest K/n a stream is sized for
constexpr std::uint32_t kMinStream = 10;     // packets per stream, at least
constexpr std::uint32_t kMaxStream = 300;    // ... at most
constexpr double kMinStreamSeconds = 0.004;  // ... and at least this long
constexpr double kLowGuess = 0.7;            // first two tests: 0.7 and 1.1 x dispersion
constexpr double kHighGuess = 1.1;
constexpr double kBurstTolerance = 1.15;    // sent faster than this x R: not a test of R
constexpr int kResends = 3;                 // a disturbed stream is sent again this often
constexpr double kIntrusionSeconds = 0.18;  // bytes <= this many seconds at A
constexpr double kStopWidth = 0.2;          // stop: bracket within 20 % of its middle

struct Probe {
  std::int64_t tx = 0;  // sender UTC, ns
  std::int64_t rx = 0;  // responder's kernel receive time, UTC ns; 0 = lost
};

enum class Trend { unknown, increasing, flat, disturbed };

// While a stream is paced, the sending thread asks for SCHED_FIFO (best
// effort: needs CAP_SYS_NICE, silently skipped without it). A stream lasts
// milliseconds; an ordinary thread on a busy host is preempted for several
// of them, and a stream with a stall in it did not probe its rate and must
// be sent again. The old policy is restored as soon as the stream is out.
class RealtimeWhileSending {
 public:
  RealtimeWhileSending() {
    if (pthread_getschedparam(pthread_self(), &policy_, &old_) != 0) return;
    sched_param fifo{};
    fifo.sched_priority = 1;
    raised_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &fifo) == 0;
  }
  ~RealtimeWhileSending() { end(); }
  RealtimeWhileSending(const RealtimeWhileSending&) = delete;
  RealtimeWhileSending& operator=(const RealtimeWhileSending&) = delete;
  void end() {
    if (raised_) pthread_setschedparam(pthread_self(), policy_, &old_);
    raised_ = false;
  }

 private:
  int policy_ = SCHED_OTHER;
  sched_param old_{};
  bool raised_ = false;
};

class AbwSession {
 public:
  AbwSession(const Address& dst, const wire::Stream& stream, const ToolContext& context)
      : dst_(dst), context_(context), sealer_(context.key), args_(stream.abw()) {
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

  // Sends n packets at `rate` bit/s (IP bytes), the first `burst` of them
  // back to back, then collects replies.
  std::vector<Probe> stream(std::uint32_t n, double rate, std::uint32_t burst = 0) {
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
    RealtimeWhileSending realtime;
    std::int64_t t0 = mono_ns() + 100'000;
    for (std::uint32_t i = 0; i < n; ++i) {
      std::int64_t at = t0 + period * (i < burst ? 0 : i - burst + 1);
      // Sleep for most of the gap, then spin: the period is tens of us.
      if (at - mono_ns() > 200'000) sleep_until(at - 100'000);
      while (mono_ns() < at) {
      }
      put_be(&packet[16], i, 4);
      std::int64_t tx = utc_now_ns();
      put_be(&packet[24], static_cast<std::uint64_t>(tx), 8);
      auto mac = seal16(sealer_, packet.data(), kSealedPrefix);
      std::memcpy(&packet[kSealedPrefix], mac.data(), mac.size());
      if (::sendto(fd_, packet.data(), packet.size(), 0, dst_.get(), dst_.length) ==
          static_cast<ssize_t>(packet.size())) {
        probes[i].tx = tx;
        bytes_ += kPayload + kWireOverhead;
      }
    }
    realtime.end();
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
      if (context_.stop && context_.stop->load()) break;
      pollfd p{fd_, POLLIN, 0};
      if (poll_or_stop(&p, 1, left, context_) <= 0) continue;
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
        std::int64_t rtt = std::max<std::int64_t>(1, utc_now_ns() - probes[i].tx);
        if (rtt_ns_ == 0 || rtt < rtt_ns_) rtt_ns_ = rtt;
      }
    }
  }

  Address dst_;
  const ToolContext& context_;
  Sealer sealer_;  // keyed once: every probe is sealed
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

constexpr double kPacketBits = (kPayload + kWireOverhead) * 8.0;

// What one stream says about its rate R against the available bandwidth A.
struct StreamVerdict {
  Trend trend = Trend::unknown;
  double in_rate = 0;   // bit/s the sender achieved (its own stamps)
  double out_rate = 0;  // bit/s the responder received them at (its kernel stamps)
};

// Output and input rate of the stream's packets from `from` on (the first
// packets may pass a shaper's bucket faster than its rate).
void rates(const std::vector<Probe>& probes, std::size_t from, StreamVerdict& v) {
  std::vector<const Probe*> got;
  for (const auto& p : probes)
    if (p.tx != 0 && p.rx != 0) got.push_back(&p);
  if (got.size() < from + 3) return;
  const Probe& a = *got[from];
  const Probe& b = *got.back();
  double bits = static_cast<double>(got.size() - 1 - from) * kPacketBits;
  if (b.rx > a.rx) v.out_rate = bits * 1e9 / static_cast<double>(b.rx - a.rx);
  if (b.tx > a.tx) v.in_rate = bits * 1e9 / static_cast<double>(b.tx - a.tx);
}

// Whether the sender was descheduled mid-stream (a gap of several periods):
// the stream did not probe rate R; pathload discards such streams too.
bool disturbed(const std::vector<Probe>& probes) {
  std::int64_t prev = 0, first = 0, last = 0, worst = 0, sent = 0;
  for (const auto& p : probes) {
    if (p.tx == 0) continue;
    if (prev != 0) worst = std::max(worst, p.tx - prev);
    if (first == 0) first = p.tx;
    last = p.tx;
    prev = p.tx;
    ++sent;
  }
  if (sent < 3) return false;
  double period = static_cast<double>(last - first) / static_cast<double>(sent - 1);
  return worst > std::max(4 * period, period + 1'000'000.0);
}

// Theil-Sen slope of the one-way delays over the send times: the median of
// the slopes between every pair of packets, robust to the few packets that a
// loaded host stamps or schedules late (up to ~29 % of them).
double delay_slope(const std::vector<Probe>& probes) {
  std::vector<const Probe*> got;
  for (const auto& p : probes)
    if (p.tx != 0 && p.rx != 0) got.push_back(&p);
  std::vector<double> slopes;
  slopes.reserve(got.size() * got.size() / 2);
  for (std::size_t i = 0; i < got.size(); ++i)
    for (std::size_t j = i + 1; j < got.size(); ++j) {
      auto dt = got[j]->tx - got[i]->tx;
      if (dt <= 0) continue;
      auto dd = (got[j]->rx - got[j]->tx) - (got[i]->rx - got[i]->tx);
      slopes.push_back(static_cast<double>(dd) / static_cast<double>(dt));
    }
  if (slopes.empty()) return 0;
  std::nth_element(slopes.begin(), slopes.begin() + slopes.size() / 2, slopes.end());
  return slopes[slopes.size() / 2];
}

// The one-way delay trend of a stream: a queue that grows through the stream
// means R > A. The delays are the responder's kernel rx stamp minus the
// sender's stamp (the clock offset cancels); their rise over the stream is the
// robust slope times the stream's duration. Rising by more than `threshold_ns`
// is increasing; losing more than 10 % is too (the queue overflowed).
// `threshold_ns` is a few packet times at the bottleneck: a queue of a packet
// or two comes and goes by chance (cross traffic arriving with ours), a growth
// beyond that does not.
StreamVerdict classify(const std::vector<Probe>& probes, double threshold_ns) {
  StreamVerdict v;
  std::size_t sent = 0, got = 0;
  std::int64_t first = 0, last = 0;
  for (const auto& p : probes) {
    if (p.tx == 0) continue;
    ++sent;
    got += p.rx != 0;
    if (first == 0) first = p.tx;
    last = p.tx;
  }
  rates(probes, 2, v);
  if (sent == 0) return v;
  if (disturbed(probes)) {
    v.trend = Trend::disturbed;
    return v;
  }
  if (got < sent * 9 / 10 || got < 6) {
    v.trend = Trend::increasing;
    return v;
  }
  double rise = delay_slope(probes) * static_cast<double>(last - first);
  v.trend = rise > threshold_ns ? Trend::increasing : Trend::flat;
  if (std::getenv("FLEXMON_ABW_DEBUG"))
    std::fprintf(stderr, "abw:   n=%zu/%zu rise=%.0fus threshold=%.0fus in=%.2f out=%.2f -> %s\n",
                 got, sent, rise / 1e3, threshold_ns / 1e3, v.in_rate / 1e6, v.out_rate / 1e6,
                 v.trend == Trend::increasing ? "increasing" : "flat");
  return v;
}

}  // namespace

wire::Result measure_abw(const wire::Stream& stream, const ToolContext& context) {
  wire::Result r = new_result(stream, context.node);
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
  const bool debug = std::getenv("FLEXMON_ABW_DEBUG") != nullptr;
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
  // 1. A short train at the highest allowed rate. Past the bottleneck it
  //    comes out at its dispersion rate D = R·C/(R+X) (C capacity, X cross
  //    traffic), between A and C when R > A. Receive stamps of a loaded host
  //    can make D far off, so it only places the first guesses, never bounds.
  if (!s.fits(kTrain, max_rate)) return finish(wire::ERROR, "abw: caps too small for one train");
  auto train = s.stream(kTrain, max_rate);
  std::size_t answered = 0;
  for (auto& p : train) answered += p.rx != 0;
  if (answered == 0)
    return finish(wire::TIMEOUT,
                  "abw: no reply from the responder (is it running, "
                  "and does it know this node's key?)");
  StreamVerdict first;
  rates(train, 2, first);
  const double dispersion = first.out_rate > 0 ? first.out_rate : max_rate / 2;
  if (debug)
    std::fprintf(stderr, "abw: train %zu/%u answered, in %.2f out %.2f Mbit/s\n", answered, kTrain,
                 first.in_rate / 1e6, first.out_rate / 1e6);
  // A queue of a packet or two at the bottleneck comes and goes by chance; a
  // trend must rise beyond that: kRisePackets packet times at the bottleneck,
  // and at least kMinRiseNs (receive stamps of a loaded host wander by tens
  // of microseconds). The bottleneck is at least as fast as any rate the
  // responder saw packets arrive at (the train's or a stream's), so one
  // packet's time at the fastest of them bounds its packet time from above.
  double fastest = dispersion;
  auto threshold_of = [&](double out_rate) {
    fastest = std::max(fastest, out_rate);
    return std::max(kMinRiseNs, kRisePackets * kPacketBits / fastest * 1e9);
  };
  // 2. Binary search for A, starting with two guesses around the dispersion
  //    rate D (A is at most D when the path is loaded, and typically above
  //    half of it): 0.7 D and 1.1 D bracket A cheaply.
  //
  //    A stream of n paced packets at R tests A against R' = R(1 - K/n), K =
  //    kRisePackets: at R > A the bottleneck queue grows by (R - A)·T bits,
  //    i.e. by (R - A)/R · n packets, and the trend is called increasing when
  //    that exceeds K packets; so increasing means A < R', flat A >= R'. To
  //    test a rate R' we send at R'/(1 - K/n). n is sized to the resolution
  //    the bracket needs (K/n = a quarter of its width relative to R'):
  //    short streams while it is wide, long ones only at the end.
  //
  //    Each stream starts with kPrimer packets back to back: they empty a
  //    token bucket on the path (a shaper lets its bucket through faster than
  //    its rate, which would hide the first packets' worth of queue growth);
  //    on a plain link they only add a small queue that drains if R < A.
  std::vector<double> guesses{kLowGuess * dispersion, kHighGuess * dispersion};
  for (int step = 0; step < 16 && hi - lo > kStopWidth * (hi + lo) / 2; ++step) {
    double target = (lo + hi) / 2;
    while (!guesses.empty()) {
      double g = guesses.front();
      guesses.erase(guesses.begin());
      if (g > lo && g < hi) {
        target = g;
        break;
      }
    }
    if (target < 50'000) break;
    double resolution = std::clamp((hi - lo) / (4 * target), kFinestResolution, 0.5);
    // At least kMinStreamSeconds long: on fast paths a few packets last
    // less than the cross traffic's own irregularity (a sender that pauses
    // for a millisecond), and the byte budget there is ample.
    double wanted = std::max({kRisePackets / resolution, static_cast<double>(kMinStream),
                              kMinStreamSeconds * target / kPacketBits});
    auto n =
        static_cast<std::uint32_t>(std::min(std::ceil(wanted), static_cast<double>(kMaxStream)));
    double shrink = 1 - kRisePackets / n;
    double rate = std::min(max_rate, target / shrink);
    // Low intrusion: never more than kIntrusionSeconds' worth of what the
    // path has to spare, as far as the bracket tells (after the guesses).
    double budget = kIntrusionSeconds * (lo + hi) / 2 / 8;
    if (debug)
      std::fprintf(stderr, "abw: [%.2f, %.2f] test %.2f: %u at %.2f Mbit/s, %.0f / %.0f KB\n",
                   lo / 1e6, hi / 1e6, target / 1e6, n, rate / 1e6, s.bytes() / 1e3, budget / 1e3);
    if (!s.fits(n + kPrimer, rate)) break;
    if (step >= 2 && static_cast<double>(s.bytes() + AbwSession::cost(n + kPrimer)) > budget) break;
    double threshold_ns = 0;
    auto send = [&] {
      auto probes = s.stream(n + kPrimer, rate, kPrimer);
      probes.erase(probes.begin(), probes.begin() + kPrimer);
      StreamVerdict out;
      rates(probes, 0, out);
      threshold_ns = threshold_of(out.out_rate);
      auto verdict = classify(probes, threshold_ns);
      // A stream sent faster than R (the sender caught up after a stall)
      // did not probe R either: it is sent again, like a disturbed one.
      if (verdict.in_rate > rate * kBurstTolerance) verdict.trend = Trend::disturbed;
      return verdict;
    };
    auto verdict = send();
    for (int again = 0;
         again < kResends && verdict.trend == Trend::disturbed && s.fits(n + kPrimer, rate);
         ++again)
      verdict = send();
    // What the stream probed is the rate it left at (a loaded sender may not
    // keep up with R), less the growth the threshold let pass unseen.
    double packets_unseen = threshold_ns / (kPacketBits / fastest * 1e9);
    double probed = (verdict.in_rate > 0 ? std::min(rate, verdict.in_rate) : rate) *
                    std::max(0.5, 1 - packets_unseen / n);
    if (verdict.trend == Trend::increasing)
      hi = std::max(lo, std::min(hi, probed));
    else if (verdict.trend == Trend::flat)
      lo = std::min(hi, std::max(lo, probed));
    else
      break;  // disturbed every time: this host cannot pace a stream now
  }
  return finish(wire::OK, "");
}

}  // namespace flexmon::prober::tools
