#include "prober/result_sender.h"

#include <array>
#include <limits>
#include <map>
#include <random>

#include <fmt/format.h>

#include "common/log.h"
#include "common/seal.h"
#include "prober/asio_loop.h"
#include "prober/backoff.h"
#include "wire.pb.h"

namespace flexmon::prober {

using asio::ip::udp;
using Mono = std::chrono::steady_clock;

namespace {

// Results sent at least once and not yet acknowledged are at most this many;
// the rest wait in the spool, so a dead collector costs a bounded rate.
constexpr std::size_t kWindow = 1024;
// Part of the spool's capacity kept for measurements that were running when
// every stream paused: 5 %, at most this many results.
constexpr std::size_t kSpoolReserve = 10'000;

struct InFlight {
  Mono::time_point due;
  int attempts = 0;
  std::string bytes;  // the serialized wire::Result, as spooled
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
  SpoolKey next_unsent{0, 0};
  std::map<SpoolKey, InFlight> in_flight;
  // Progress: the last valid ack, or the last failover.
  Mono::time_point last_progress = Mono::now();
  bool waiting = false;  // results were in flight since last_progress
  Mono::time_point last_full_log{};
  Mono::time_point last_sync_log{};
  std::atomic<std::size_t> spool_size{0};
  std::size_t spool_capacity = 0;
  std::size_t full_at = 0;  // every stream pauses (capacity less the reserve)
  std::size_t soft_at = 0;  // streams below the top priority pause
  std::atomic<int> top_priority{std::numeric_limits<int>::min()};
  std::atomic<double> load{-1};
  Backoff backoff{options.initial_backoff_s, options.max_backoff_s};
  std::mt19937_64 random{std::random_device{}()};
  std::array<char, 65536> buffer{};
  udp::endpoint ack_from;
  std::shared_ptr<spdlog::logger> log = logger("prober");

  Impl(asio::io_context& context, SenderOptions o, std::unique_ptr<Spool> s)
      : io(context),
        options(std::move(o)),
        sealer(options.key, options.key_id),
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
    spool_size = spool->size();
    spool_capacity = spool->capacity();
    full_at = spool_capacity - std::min(kSpoolReserve, spool_capacity / 20);
    soft_at = static_cast<std::size_t>(kSpoolSoftFill * static_cast<double>(full_at));
    counters.spooled = spool_size.load();
    if (spool_size > 0)
      log->info("prober {}: {} results of earlier boot epochs spooled, sending them first",
                options.node, spool_size.load());
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
    bool kept = false;
    try {
      kept = spool->put(SpoolKey{options.boot_epoch, next_seq}, result.SerializeAsString());
    } catch (const std::exception& e) {
      log->error("prober {}: cannot spool a result: {}", options.node, e.what());
    }
    if (!kept) {
      ++counters.spool_full;
      auto now = Mono::now();
      if (now - last_full_log > std::chrono::seconds(10)) {
        last_full_log = now;
        log->error(
            "prober {}: SPOOL FULL ({} results unacknowledged, capacity {}): a result of stream "
            "'{}' is LOST; is collector {} reachable?",
            options.node, spool->size(), spool_capacity, result.stream(),
            options.collectors[current].to_string());
      }
      return;
    }
    ++next_seq;
    ++counters.results;
    note_size();
  }

  void note_size() {
    auto before = spool_size.load();
    spool_size = spool->size();
    counters.spooled = spool_size.load();
    auto soft = soft_at;
    if (before < soft && spool_size >= soft)
      log->error(
          "prober {}: SPOOL {}% FULL ({} of {} results unacknowledged): pausing streams below "
          "the highest priority; collector {} does not acknowledge",
          options.node, static_cast<int>(kSpoolSoftFill * 100), spool_size.load(), spool_capacity,
          options.collectors[current].to_string());
    if (before < full_at && spool_size >= full_at)
      log->error("prober {}: SPOOL FULL ({} of {} results): pausing every stream", options.node,
                 spool_size.load(), spool_capacity);
    if (before >= soft && spool_size < soft)
      log->warn("prober {}: spool below {}% again ({} results): every stream runs", options.node,
                static_cast<int>(kSpoolSoftFill * 100), spool_size.load());
  }

  bool accepting(int priority) {
    int top = top_priority.load();
    while (priority > top && !top_priority.compare_exchange_weak(top, priority)) {
    }
    auto size = spool_size.load();
    bool ok = size < soft_at || (size < full_at && priority >= top_priority.load());
    if (!ok) ++counters.paused;
    return ok;
  }

  void set_load(double per_second) {
    double before = load.exchange(per_second);
    if (before == per_second) return;
    if (per_second <= 0) {
      log->info("prober {}: spool capacity {} results (no periodic streams)", options.node,
                spool_capacity);
      return;
    }
    double hours = static_cast<double>(spool_capacity) / per_second / 3600.0;
    if (hours < 24.0)
      log->error(
          "prober {}: spool capacity {} results holds only {:.1f} h at the configured load of "
          "{:.2f} results/s (< 24 h): raise prober.spool.max_results to at least {:.0f}",
          options.node, spool_capacity, hours, per_second, per_second * 86'400.0);
    else
      log->info(
          "prober {}: spool capacity {} results = {:.1f} h at the configured load of {:.2f} "
          "results/s",
          options.node, spool_capacity, hours, per_second);
  }

  Mono::duration backoff_after(int attempts) {
    return std::chrono::duration_cast<Mono::duration>(backoff.delay(attempts, random));
  }

  // Whether `key` may enter the window: its epoch's lowest unacknowledged seq
  // (the first in flight of that epoch, as results enter in key order) is less
  // than kSeqWindow below it.
  bool within_seq_window(SpoolKey key) const {
    auto it = in_flight.lower_bound(SpoolKey{key.epoch, 0});
    return it == in_flight.end() || it->first.epoch != key.epoch ||
           key.seq - it->first.seq < kSeqWindow;
  }

  void flush() {
    // Durable before sent: commit what was spooled (and erased) since the
    // last tick, in one transaction.
    try {
      spool->sync();
    } catch (const std::exception& e) {
      ++counters.sync_failures;
      auto now = Mono::now();
      if (now - last_sync_log > std::chrono::seconds(10)) {
        last_sync_log = now;
        log->error("prober {}: cannot commit the spool, sending nothing until it works: {}",
                   options.node, e.what());
      }
      return;
    }
    auto now = Mono::now();
    if (in_flight.size() < kWindow) {
      spool->scan(next_unsent, [&](SpoolKey key, const std::string& bytes) {
        if (!within_seq_window(key)) return false;
        in_flight.emplace(key, InFlight{now, 0, bytes});
        next_unsent = SpoolKey{key.epoch, key.seq + 1};
        return in_flight.size() < kWindow;
      });
    }
    wire::Message message;
    message.set_node(options.node);
    auto* batch = message.mutable_results();
    std::uint64_t epoch = 0;
    for (auto& [key, f] : in_flight) {
      if (f.due > now) continue;
      // One epoch per datagram.
      if (batch->results_size() > 0 && key.epoch != epoch) {
        send(message);
        batch->clear_results();
      }
      epoch = key.epoch;
      batch->set_boot_epoch(epoch);
      auto* added = batch->add_results();
      if (!added->ParseFromString(f.bytes)) {
        // Cannot happen for what this prober wrote; sending it would stall
        // nothing, so it is sent as parsed so far and logged.
        log->error("prober {}: spooled result {}/{} does not parse", options.node, key.epoch,
                   key.seq);
      }
      if (sealed_size(message) > kMaxResultDatagram && batch->results_size() > 1) {
        batch->mutable_results()->RemoveLast();
        send(message);
        batch->clear_results();
        batch->add_results()->ParseFromString(f.bytes);
      }
      if (f.attempts > 0) ++counters.retransmitted;
      ++f.attempts;
      f.due = now + backoff_after(f.attempts);
      waiting = true;
    }
    if (batch->results_size() > 0) send(message);
    if (in_flight.empty()) {
      waiting = false;
      last_progress = now;
    }
    check_failover(now);
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
    return 2 + (1 + varint(node) + node) + (1 + varint(body) + body) + (2 + kMacBytes) +
           (1 + varint(options.key_id));
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

  // kFailoverRounds retransmission rounds (0.5 + 1 + 2 + 4 s with the
  // defaults) without any valid ack while results were in flight: the next
  // collector takes over and the backoff restarts.
  void check_failover(Mono::time_point now) {
    if (!waiting) return;
    double rounds_s = backoff.total_s(kFailoverRounds);
    if (now - last_progress < std::chrono::duration<double>(rounds_s)) return;
    last_progress = now;
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
    for (auto& [key, f] : in_flight) {
      f.due = now;
      f.attempts = 0;
    }
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
    if (!message || !message->has_ack() || message->ack().boot_epoch() == 0 ||
        message->ack().boot_epoch() > options.boot_epoch) {
      ++counters.bad_acks;
      log->debug("prober {}: dropped a datagram from {}: {}", options.node,
                 ack_from.address().to_string(),
                 !message ? message.error().message : "not an ack of a boot epoch of ours");
      return;
    }
    std::uint64_t epoch = message->ack().boot_epoch();
    std::uint64_t removed = 0;
    for (const auto& range : message->ack().ranges()) {
      if (range.first() > range.last()) continue;
      try {
        removed += spool->erase(epoch, range.first(), range.last());
      } catch (const std::exception& e) {
        // Not erased: it is sent again, and acknowledged again.
        log->error("prober {}: cannot erase acknowledged results: {}", options.node, e.what());
        continue;
      }
      in_flight.erase(in_flight.lower_bound(SpoolKey{epoch, range.first()}),
                      in_flight.upper_bound(SpoolKey{epoch, range.last()}));
    }
    counters.acked += removed;
    note_size();
    last_progress = Mono::now();
    waiting = !in_flight.empty();
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

bool ResultSender::accepting(int priority) { return impl_->accepting(priority); }

void ResultSender::set_load(double results_per_second) { impl_->set_load(results_per_second); }

const SenderCounters& ResultSender::counters() const { return impl_->counters; }

std::size_t ResultSender::current_collector() const { return impl_->current_public; }

}  // namespace flexmon::prober
