#include "prober/result_sender.h"

#include <array>
#include <cmath>
#include <map>
#include <random>

#include <fmt/format.h>

#include "common/log.h"
#include "common/seal.h"
#include "prober/asio_loop.h"
#include "wire.pb.h"

namespace flexmon::prober {

using asio::ip::udp;
using Mono = std::chrono::steady_clock;

namespace {

// Results sent at least once and not yet acknowledged are at most this many;
// the rest wait in the spool, so a dead collector costs a bounded rate.
constexpr std::size_t kWindow = 1024;

struct InFlight {
  Mono::time_point due;
  int attempts = 0;
};

}  // namespace

struct ResultSender::Impl : std::enable_shared_from_this<ResultSender::Impl> {
  asio::io_context& io;
  SenderOptions options;
  Sealer sealer;
  std::unique_ptr<Spool> spool;
  udp::socket socket;
  std::vector<udp::endpoint> collectors;
  std::size_t current = 0;
  std::atomic<std::size_t> current_public{0};
  asio::steady_timer tick;
  SenderCounters counters;
  std::uint64_t next_seq = 1;
  std::uint64_t next_unsent = 1;
  std::map<std::uint64_t, InFlight> in_flight;
  int unanswered_rounds = 0;
  bool acked_since_round = false;
  Mono::time_point last_full_log{};
  std::mt19937_64 random{std::random_device{}()};
  std::array<char, 65536> buffer{};
  udp::endpoint ack_from;
  std::shared_ptr<spdlog::logger> log = logger("prober");

  Impl(asio::io_context& context, SenderOptions o, std::unique_ptr<Spool> s)
      : io(context),
        options(std::move(o)),
        sealer(options.key),
        spool(std::move(s)),
        socket(context),
        tick(context) {
    if (options.collectors.empty()) throw std::runtime_error("prober: no collector configured");
    boost::system::error_code ec;
    auto ip = asio::ip::make_address(options.source_address, ec);
    if (ec)
      throw std::runtime_error(
          fmt::format("prober: bad source address '{}'", options.source_address));
    udp::endpoint local(ip, 0);
    socket.open(local.protocol(), ec);
    if (!ec) socket.bind(local, ec);
    if (!ec) socket.non_blocking(true, ec);
    if (ec)
      throw std::runtime_error(fmt::format("prober: cannot bind the result socket to {}: {}",
                                           options.source_address, ec.message()));
    udp::resolver resolver(context);
    for (const auto& c : options.collectors) {
      auto found = resolver.resolve(c.host, std::to_string(c.port), ec);
      udp::endpoint chosen;
      bool ok = false;
      for (const auto& entry : found) {
        if (entry.endpoint().address().is_v6() == ip.is_v6()) {
          chosen = entry.endpoint();
          ok = true;
          break;
        }
      }
      if (ec || !ok)
        throw std::runtime_error(
            fmt::format("prober: cannot resolve collector {}: {}", c.to_string(),
                        ec ? ec.message() : "no address of the source's family"));
      collectors.push_back(chosen);
    }
  }

  void start() {
    receive();
    arm_tick();
  }

  void arm_tick() {
    tick.expires_after(
        std::chrono::duration_cast<Mono::duration>(std::chrono::duration<double>(options.tick_s)));
    tick.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted) return;
      if (auto self = weak.lock()) {
        self->flush();
        self->arm_tick();
      }
    });
  }

  void submit(wire::Result result) {
    result.set_seq(next_seq);
    if (!spool->put(next_seq, result.SerializeAsString())) {
      ++counters.spool_full;
      auto now = Mono::now();
      if (now - last_full_log > std::chrono::seconds(10)) {
        last_full_log = now;
        log->error(
            "prober {}: SPOOL FULL ({} results unacknowledged): dropping new results; "
            "is collector {} reachable?",
            options.node, spool->size(), options.collectors[current].to_string());
      }
      return;
    }
    ++next_seq;
    ++counters.results;
    counters.spooled = spool->size();
  }

  Mono::duration backoff(int attempts) {
    double d = options.initial_backoff_s * std::pow(2.0, std::min(attempts - 1, 30));
    d = std::min(d, options.max_backoff_s);
    d *= std::uniform_real_distribution<double>(0.8, 1.2)(random);
    return std::chrono::duration_cast<Mono::duration>(std::chrono::duration<double>(d));
  }

  void flush() {
    auto now = Mono::now();
    // Results enter the window in seq order.
    if (in_flight.size() < kWindow) {
      spool->scan(next_unsent, [&](std::uint64_t seq, const std::string&) {
        in_flight.emplace(seq, InFlight{now, 0});
        next_unsent = seq + 1;
        return in_flight.size() < kWindow;
      });
    }
    bool retransmission = false;
    wire::Message message;
    message.set_node(options.node);
    auto* batch = message.mutable_results();
    batch->set_boot_epoch(options.boot_epoch);
    std::vector<std::uint64_t> lost;  // in flight but gone from the spool
    for (auto& [seq, f] : in_flight) {
      if (f.due > now) continue;
      std::string bytes;
      spool->scan(seq, [&](std::uint64_t found, const std::string& b) {
        if (found == seq) bytes = b;
        return false;
      });
      if (bytes.empty()) {
        lost.push_back(seq);
        continue;
      }
      auto* added = batch->add_results();
      if (!added->ParseFromString(bytes)) {
        batch->mutable_results()->RemoveLast();
        lost.push_back(seq);
        continue;
      }
      if (sealed_size(message) > kMaxResultDatagram && batch->results_size() > 1) {
        batch->mutable_results()->RemoveLast();
        send(message);
        batch->clear_results();
        batch->add_results()->ParseFromString(bytes);
      }
      if (f.attempts > 0) {
        retransmission = true;
        ++counters.retransmitted;
      }
      ++f.attempts;
      f.due = now + backoff(f.attempts);
    }
    if (batch->results_size() > 0) send(message);
    for (auto seq : lost) in_flight.erase(seq);
    if (retransmission) round_without_ack();
  }

  // Outer-frame size of a sealed message, computed as seal() lays it out.
  std::size_t sealed_size(const wire::Message& message) const {
    auto varint = [](std::size_t v) {
      std::size_t n = 1;
      while (v >= 0x80) {
        v >>= 7;
        ++n;
      }
      return n;
    };
    std::size_t body = message.ByteSizeLong();
    std::size_t node = options.node.size();
    return 2 + (1 + varint(node) + node) + (1 + varint(body) + body) + (2 + kMacBytes);
  }

  void send(const wire::Message& message) {
    std::string frame = seal(message, sealer);
    if (frame.size() > kMaxResultDatagram)
      log->warn("prober {}: a result datagram of {} bytes exceeds {} (one large result)",
                options.node, frame.size(), kMaxResultDatagram);
    boost::system::error_code ec;
    socket.send_to(asio::buffer(frame), collectors[current], 0, ec);
    if (ec) {
      ++counters.send_errors;
      log->debug("prober {}: sending results to {}: {}", options.node,
                 options.collectors[current].to_string(), ec.message());
      return;
    }
    ++counters.datagrams;
  }

  void round_without_ack() {
    if (acked_since_round) {
      acked_since_round = false;
      unanswered_rounds = 0;
      return;
    }
    if (++unanswered_rounds < kFailoverRounds) return;
    unanswered_rounds = 0;
    if (collectors.size() < 2) {
      log->warn("prober {}: collector {} does not acknowledge; {} results spooled", options.node,
                options.collectors[current].to_string(), spool->size());
      return;
    }
    auto previous = current;
    current = (current + 1) % collectors.size();
    current_public = current;
    ++counters.failovers;
    log->warn(
        "prober {}: collector {} does not acknowledge; failing over to {} ({} results "
        "spooled)",
        options.node, options.collectors[previous].to_string(),
        options.collectors[current].to_string(), spool->size());
    auto now = Mono::now();
    for (auto& [seq, f] : in_flight) f = InFlight{now, 0};
  }

  void receive() {
    socket.async_receive_from(
        asio::buffer(buffer), ack_from,
        [weak = weak_from_this()](const boost::system::error_code& ec, std::size_t n) {
          if (ec == asio::error::operation_aborted) return;
          auto self = weak.lock();
          if (!self) return;
          if (!ec) self->on_datagram(std::string_view(self->buffer.data(), n));
          self->receive();
        });
  }

  void on_datagram(std::string_view frame) {
    auto message = open_from(frame, options.node, sealer);
    if (!message || !message->has_ack() || message->ack().boot_epoch() != options.boot_epoch) {
      ++counters.bad_acks;
      log->debug("prober {}: dropped a datagram from {}: {}", options.node,
                 ack_from.address().to_string(),
                 !message ? message.error().message : "not an ack of this boot epoch");
      return;
    }
    std::uint64_t removed = 0;
    for (const auto& range : message->ack().ranges()) {
      if (range.first() > range.last()) continue;
      removed += spool->erase(range.first(), range.last());
      in_flight.erase(in_flight.lower_bound(range.first()), in_flight.upper_bound(range.last()));
    }
    counters.acked += removed;
    counters.spooled = spool->size();
    acked_since_round = true;
    unanswered_rounds = 0;
  }
};

ResultSender::ResultSender(EventLoop& loop, SenderOptions options, std::unique_ptr<Spool> spool)
    : impl_(std::make_shared<Impl>(io_of(loop), std::move(options), std::move(spool))) {
  impl_->start();
}

ResultSender::~ResultSender() = default;

void ResultSender::submit(wire::Result result) {
  asio::post(impl_->io, [weak = std::weak_ptr<Impl>(impl_), result = std::move(result)]() mutable {
    if (auto self = weak.lock()) self->submit(std::move(result));
  });
}

const SenderCounters& ResultSender::counters() const { return impl_->counters; }

std::size_t ResultSender::current_collector() const { return impl_->current_public; }

}  // namespace flexmon::prober
