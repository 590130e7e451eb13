#include "prober/stream_runner.h"

#include <cmath>
#include <future>
#include <map>
#include <random>
#include <set>

#include <fmt/format.h>

#include "common/log.h"
#include "prober/asio_loop.h"
#include "prober/schedule.h"
#include "prober/tools.h"
#include "wire.pb.h"

namespace flexmon::prober {

using Mono = std::chrono::steady_clock;

std::string check_stream(const wire::Stream& s, const std::string& node, const Limits& limits) {
  const auto& l = limits.latency;
  const auto& a = s.latency();
  if (s.key().empty()) return "stream has no key";
  if (s.src() != node) return fmt::format("src '{}' is not this node '{}'", s.src(), node);
  if (auto why = check_tool_args(s); !why.empty()) return why;
  if (!(s.interval_s() >= 0.001 && s.interval_s() <= limits.max_interval_s) && !s.oneshot())
    return fmt::format("interval_s {} is out of bounds", s.interval_s());
  if (s.tool() != "latency") return {};  // abw / throughput: caps checked by check_tool_args
  if (a.count() < 1 || a.count() > l.max_count || a.count() > 65535)
    return fmt::format("count {} is out of bounds 1..{}", a.count(), l.max_count);
  if (a.spacing_ms() > l.max_spacing_ms)
    return fmt::format("spacing_ms {} exceeds {}", a.spacing_ms(), l.max_spacing_ms);
  if (a.size() < l.min_size || a.size() > l.max_size || a.size() < 16)
    return fmt::format("size {} is out of bounds {}..{}", a.size(), l.min_size, l.max_size);
  if (a.timeout_ms() < 1 || a.timeout_ms() > l.max_timeout_ms)
    return fmt::format("timeout_ms {} is out of bounds 1..{}", a.timeout_ms(), l.max_timeout_ms);
  if (s.dst_port() == 0 || s.dst_port() > 65535)
    return fmt::format("dst_port {} is not a port", s.dst_port());
  return {};
}

namespace {

struct Running {
  wire::Stream stream;
  std::uint64_t instance = 0;  // tells a replaced stream's callbacks apart
  Schedule schedule;
  std::uint64_t slot = 0;
  bool busy = false;    // a measurement runs
  bool queued = false;  // its slot came; waiting for its destination or the bandwidth turn
  std::unique_ptr<asio::steady_timer> timer;
};

bool is_bandwidth(const wire::Stream& s) { return s.tool() == "abw" || s.tool() == "throughput"; }

// Order of the ready queue: higher priority first, then the earlier slot.
struct Ready {
  std::int32_t priority;
  MonoTime due;
  std::string key;
  std::uint64_t instance;
  bool operator<(const Ready& o) const {
    if (priority != o.priority) return priority > o.priority;
    if (due != o.due) return due < o.due;
    return key < o.key;
  }
};

}  // namespace

struct StreamRunner::Impl : std::enable_shared_from_this<StreamRunner::Impl> {
  asio::io_context& io;
  std::string node;
  Limits limits;
  Measure measure;
  Sink sink;
  RunnerCounters counters;
  std::map<std::string, Running> streams;
  std::set<std::string> oneshots_done;  // kept while assignments still list them
  std::set<Ready> ready;                // slots due, not started yet
  std::set<std::string> busy_dst;       // destinations with a measurement running
  bool bandwidth_busy = false;          // an abw or throughput measurement runs
  bool dispatching = false, dispatch_again = false;
  // Shortfall of the current heartbeat period.
  std::uint64_t period_skipped = 0;
  std::set<std::string> period_behind;
  MonoTime period_start = Mono::now();
  std::uint64_t next_instance = 1;
  std::atomic<std::size_t> stream_count{0};
  std::atomic<double> load{0};
  std::mt19937_64 random{std::random_device{}()};
  std::shared_ptr<spdlog::logger> log = logger("prober");

  Impl(asio::io_context& context, std::string n, Limits l, Measure m, Sink s)
      : io(context), node(std::move(n)), limits(l), measure(std::move(m)), sink(std::move(s)) {}

  void assign(std::vector<wire::Stream> incoming) {
    std::map<std::string, wire::Stream> wanted;
    for (auto& s : incoming) {
      if (auto why = check_stream(s, node, limits); !why.empty()) {
        ++counters.rejected_streams;
        log->warn("prober {}: stream '{}' left out: {}", node, s.key().substr(0, 200), why);
        continue;
      }
      wanted.insert_or_assign(s.key(), std::move(s));
    }
    for (auto it = oneshots_done.begin(); it != oneshots_done.end();)
      it = wanted.contains(*it) ? std::next(it) : oneshots_done.erase(it);
    for (auto it = streams.begin(); it != streams.end();) {
      auto w = wanted.find(it->first);
      if (w == wanted.end()) {
        it = streams.erase(it);  // the timer's cancelled wait finds no stream
        continue;
      }
      bool same_timing = w->second.interval_s() == it->second.stream.interval_s() &&
                         w->second.oneshot() == it->second.stream.oneshot();
      it->second.stream = w->second;
      if (!same_timing) {
        it = streams.erase(it);
        continue;  // rescheduled below with the new interval
      }
      wanted.erase(w);
      ++it;
    }
    for (auto& [key, s] : wanted) {
      if (s.oneshot() && oneshots_done.contains(key)) continue;
      add(std::move(s));
    }
    refresh_stats();
  }

  void add(wire::Stream s) {
    auto interval = std::chrono::duration_cast<Nanos>(
        std::chrono::duration<double>(s.oneshot() ? 1.0 : s.interval_s()));
    // Spread: the first slot falls anywhere in the first interval (a one-shot
    // within the first 100 ms).
    auto spread = s.oneshot() ? Nanos(100'000'000) : interval;
    auto offset = Nanos(std::uniform_int_distribution<std::int64_t>(0, spread.count() - 1)(random));
    Running r{std::move(s),
              next_instance++,
              Schedule(Mono::now() + offset, interval),
              0,
              false,
              false,
              std::make_unique<asio::steady_timer>(io)};
    auto key = r.stream.key();
    auto [it, inserted] = streams.insert_or_assign(key, std::move(r));
    arm(it->second);
  }

  void arm(Running& r) {
    r.timer->expires_at(r.schedule.slot_time(r.slot));
    r.timer->async_wait([weak = weak_from_this(), key = r.stream.key(),
                         instance = r.instance](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted) return;
      if (auto self = weak.lock()) self->fire(key, instance);
    });
  }

  Running* find(const std::string& key, std::uint64_t instance) {
    auto it = streams.find(key);
    return it != streams.end() && it->second.instance == instance ? &it->second : nullptr;
  }

  void skip(const std::string& key, std::uint64_t n) {
    counters.skipped_slots += n;
    period_skipped += n;
    period_behind.insert(key);
  }

  // A slot came: the measurement waits in the ready queue for its turn.
  void fire(const std::string& key, std::uint64_t instance) {
    Running* r = find(key, instance);
    if (!r) return;
    if (r->busy || r->queued) {
      skip(key, 1);  // the previous run (or wait) outlasts the interval
    } else {
      r->queued = true;
      ready.insert({r->stream.priority(), r->schedule.slot_time(r->slot), key, instance});
    }
    if (!r->stream.oneshot()) {
      Slot next = r->schedule.next_after(r->slot, Mono::now());
      if (next.skipped > 0) {
        skip(key, next.skipped);
        log->debug("prober {}: stream '{}' skipped {} slots", node, key, next.skipped);
      }
      r->slot = next.index;
      arm(*r);
    }
    dispatch();
  }

  // Starts what may start, highest priority first: at most one measurement
  // per destination, and one bandwidth measurement per node.
  void dispatch() {
    // A tool that completes synchronously calls back into dispatch() from
    // start(): the outer call picks up what it asks for.
    if (dispatching) {
      dispatch_again = true;
      return;
    }
    dispatching = true;
    do {
      dispatch_again = false;
      dispatch_once();
    } while (dispatch_again);
    dispatching = false;
  }

  void dispatch_once() {
    for (auto it = ready.begin(); it != ready.end();) {
      Running* r = find(it->key, it->instance);
      if (!r) {
        it = ready.erase(it);
        continue;
      }
      const bool bandwidth = is_bandwidth(r->stream);
      if (busy_dst.contains(r->stream.dst()) || (bandwidth && bandwidth_busy)) {
        ++it;
        continue;
      }
      const std::string key = it->key;
      const std::uint64_t instance = it->instance;
      ready.erase(it);
      start(*r, key, instance, bandwidth);
      it = ready.begin();  // start() may have changed the queue
    }
  }

  void start(Running& run, const std::string& key, std::uint64_t instance, bool bandwidth) {
    run.queued = false;
    run.busy = true;
    busy_dst.insert(run.stream.dst());
    if (bandwidth) bandwidth_busy = true;
    ++counters.started;
    measure(run.stream, [weak = weak_from_this(), key, instance, dst = run.stream.dst(),
                         bandwidth](wire::Result result) {
      auto self = weak.lock();
      if (!self) return;
      self->sink(std::move(result));
      self->busy_dst.erase(dst);
      if (bandwidth) self->bandwidth_busy = false;
      if (Running* r = self->find(key, instance)) {
        r->busy = false;
        if (r->stream.oneshot()) {
          self->oneshots_done.insert(key);
          self->streams.erase(key);
          self->refresh_stats();
        }
      }
      self->dispatch();
    });
  }

  Shortfall take_shortfall() {
    Shortfall f;
    const auto now = Mono::now();
    const double seconds = std::chrono::duration<double>(now - period_start).count();
    f.skipped_slots = counters.skipped_slots;
    f.per_second = seconds > 0 ? static_cast<double>(period_skipped) / seconds : 0;
    f.behind_streams = static_cast<std::uint32_t>(period_behind.size());
    f.waiting = ready.size();
    period_skipped = 0;
    period_behind.clear();
    period_start = now;
    return f;
  }

  void refresh_stats() {
    double per_second = 0;
    for (const auto& [key, r] : streams)
      if (!r.stream.oneshot()) per_second += 1.0 / r.stream.interval_s();
    stream_count = streams.size();
    load = per_second;
  }
};

StreamRunner::StreamRunner(EventLoop& loop, std::string node, Limits limits, Measure measure,
                           Sink sink)
    : impl_(std::make_shared<Impl>(io_of(loop), std::move(node), limits, std::move(measure),
                                   std::move(sink))) {}

StreamRunner::~StreamRunner() = default;

void StreamRunner::assign(std::vector<wire::Stream> streams) {
  asio::post(impl_->io,
             [weak = std::weak_ptr<Impl>(impl_), streams = std::move(streams)]() mutable {
               if (auto self = weak.lock()) self->assign(std::move(streams));
             });
}

std::size_t StreamRunner::streams() const { return impl_->stream_count; }

Shortfall StreamRunner::take_shortfall() {
  std::promise<Shortfall> promise;
  auto future = promise.get_future();
  if (impl_->io.get_executor().running_in_this_thread()) return impl_->take_shortfall();
  asio::post(impl_->io, [impl = impl_, &promise] { promise.set_value(impl->take_shortfall()); });
  return future.get();
}
double StreamRunner::load() const { return impl_->load; }
const RunnerCounters& StreamRunner::counters() const { return impl_->counters; }

}  // namespace flexmon::prober
