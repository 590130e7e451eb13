#include "prober/stream_runner.h"

#include <cmath>
#include <future>
#include <map>
#include <random>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "common/log.h"
#include "common/tool.h"
#include "prober/asio_loop.h"
#include "prober/deadline_timers.h"
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
  if (parse_tool(s.tool()) != Tool::kLatency)
    return {};  // abw / throughput: caps checked by check_tool_args
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

// Slots fall on multiples of this (monotonic clock) where intervals allow:
// streams whose slots coincide start in one timer wake-up and their packets
// leave in one sendmmsg, so thousands of streams cost at most 500 wake-ups a
// second instead of one each, and no slot is late for it. Small enough that
// a burst stays short (10,000 streams at 1/s: 20 probes, ~13 us at 1 Gbit/s).
constexpr Nanos kSlotGrid = std::chrono::milliseconds(2);

// Streams towards one destination: at most one of their measurements runs.
struct Destination {
  std::size_t streams = 0;
  bool busy = false;
};

struct Running {
  std::shared_ptr<const wire::Stream> stream;
  std::uint32_t generation = 0;  // tells a replaced stream's callbacks apart
  bool live = false;             // this slab entry holds a stream
  Schedule schedule{MonoTime{}, Nanos(1)};
  std::uint64_t slot = 0;
  DeadlineTimers::Id timer = 0;
  Destination* destination = nullptr;  // entries of an unordered_map never move
  bool bandwidth = false;
  bool busy = false;    // a measurement runs
  bool queued = false;  // its slot came; waiting for its destination or the bandwidth turn
  bool paused = false;  // its last slot was not admitted (spool full)
};

bool is_bandwidth(const wire::Stream& s) {
  auto tool = parse_tool(s.tool());
  return tool && is_bandwidth_tool(*tool);
}

// A stream's slab index and generation, in one deadline cookie.
std::uint64_t cookie_of(std::uint32_t index, std::uint32_t generation) {
  return std::uint64_t{generation} << 32 | index;
}

// Order of the ready queue: higher priority first, then the earlier slot.
struct Ready {
  std::int32_t priority;
  MonoTime due;
  std::uint64_t cookie;
  bool operator<(const Ready& o) const {
    if (priority != o.priority) return priority > o.priority;
    if (due != o.due) return due < o.due;
    return cookie < o.cookie;
  }
};

}  // namespace

struct StreamRunner::Impl : DeadlineClient, std::enable_shared_from_this<StreamRunner::Impl> {
  EventLoop& loop;
  asio::io_context& io;
  DeadlineTimers& timers;
  std::string node;
  Limits limits;
  Measure measure;
  Sink sink;
  Admit admit;
  RunnerCounters counters;
  std::vector<Running> slab;  // streams by index; cookies name (index, generation)
  std::vector<std::uint32_t> free_slots;
  std::unordered_map<std::string, std::uint32_t> by_key;
  std::unordered_map<std::string, Destination> destinations;  // node-stable addresses
  // Measurements still running for streams removed meanwhile, by cookie.
  struct Orphan {
    std::string dst;
    bool bandwidth = false;
  };
  std::unordered_map<std::uint64_t, Orphan> orphans;
  std::set<std::string> oneshots_done;  // kept while assignments still list them
  std::set<Ready> ready;                // slots due that wait for their destination or turn
  bool bandwidth_busy = false;          // an abw or throughput measurement runs
  bool dispatching = false, dispatch_again = false;
  // Shortfall of the current heartbeat period.
  std::uint64_t period_skipped = 0;
  std::set<std::uint64_t> period_behind;  // cookies of streams that skipped a slot
  MonoTime period_start = Mono::now();
  // Spool pausing: logged when the first stream pauses and when the last resumes.
  std::uint32_t paused_now = 0;
  std::uint64_t paused_since_log = 0;
  std::atomic<std::size_t> stream_count{0};
  std::atomic<double> load{0};
  std::mt19937_64 random{std::random_device{}()};
  std::shared_ptr<spdlog::logger> log = logger("prober");

  Impl(EventLoop& l, std::string n, Limits li, Measure m, Sink s, Admit a)
      : loop(l),
        io(io_of(l)),
        timers(l.deadlines()),
        node(std::move(n)),
        limits(li),
        measure(std::move(m)),
        sink(std::move(s)),
        admit(std::move(a)) {}

  Running* find(std::uint64_t cookie) {
    auto index = static_cast<std::uint32_t>(cookie);
    if (index >= slab.size()) return nullptr;
    Running& r = slab[index];
    return r.live && r.generation == static_cast<std::uint32_t>(cookie >> 32) ? &r : nullptr;
  }

  std::uint64_t cookie(const Running& r) const {
    return cookie_of(static_cast<std::uint32_t>(&r - slab.data()), r.generation);
  }

  void assign(std::vector<wire::Stream> incoming) {
    std::map<std::string, wire::Stream> wanted;
    for (auto& s : incoming) {
      if (auto why = check_stream(s, node, limits); !why.empty()) {
        ++counters.rejected_streams;
        log->warn("prober {}: stream '{}' left out: {}", node, escaped(s.key(), 200),
                  escaped(why, 300));
        continue;
      }
      wanted.insert_or_assign(s.key(), std::move(s));
    }
    for (auto it = oneshots_done.begin(); it != oneshots_done.end();)
      it = wanted.contains(*it) ? std::next(it) : oneshots_done.erase(it);
    for (auto it = by_key.begin(); it != by_key.end();) {
      Running& r = slab[it->second];
      auto w = wanted.find(it->first);
      if (w == wanted.end()) {
        remove(r);
        it = by_key.erase(it);
        continue;
      }
      bool same = w->second.interval_s() == r.stream->interval_s() &&
                  w->second.oneshot() == r.stream->oneshot() &&
                  w->second.dst() == r.stream->dst() && is_bandwidth(w->second) == r.bandwidth;
      if (!same) {
        remove(r);  // rescheduled below with the new timing or destination
        it = by_key.erase(it);
        continue;
      }
      // A running measurement keeps the stream it started with.
      r.stream = std::make_shared<const wire::Stream>(std::move(w->second));
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
    // within the first 100 ms), on the slot grid when the interval is a
    // multiple of it.
    auto spread = s.oneshot() ? Nanos(100'000'000) : interval;
    auto offset = Nanos(std::uniform_int_distribution<std::int64_t>(0, spread.count() - 1)(random));
    MonoTime first = Mono::now() + offset;
    if (interval % kSlotGrid == Nanos(0))
      first = MonoTime((first.time_since_epoch() + kSlotGrid - Nanos(1)) / kSlotGrid * kSlotGrid);
    std::uint32_t index;
    if (free_slots.empty()) {
      index = static_cast<std::uint32_t>(slab.size());
      slab.emplace_back();
    } else {
      index = free_slots.back();
      free_slots.pop_back();
    }
    Running& r = slab[index];
    r.live = true;
    ++r.generation;
    r.schedule = Schedule(first, interval);
    r.slot = 0;
    r.busy = r.queued = r.paused = false;
    r.bandwidth = is_bandwidth(s);
    Destination& d = destinations[s.dst()];
    ++d.streams;
    r.destination = &d;
    by_key[s.key()] = index;
    r.stream = std::make_shared<const wire::Stream>(std::move(s));
    r.timer = timers.schedule(r.schedule.slot_time(0), weak_from_this(), cookie(r));
  }

  // Stops a stream: its pending slot, queue entry and callbacks find nothing.
  // A measurement still running keeps its destination (and the bandwidth
  // turn) until it ends.
  void remove(Running& r) {
    timers.cancel(r.timer);
    r.timer = 0;
    if (r.paused) resume(r);
    if (r.busy) orphans[cookie(r)] = Orphan{r.stream->dst(), r.bandwidth};
    --r.destination->streams;
    forget_if_unused(r.stream->dst());
    r.destination = nullptr;
    r.live = false;
    r.stream.reset();
    free_slots.push_back(static_cast<std::uint32_t>(&r - slab.data()));
  }

  void forget_if_unused(const std::string& dst) {
    auto it = destinations.find(dst);
    if (it != destinations.end() && it->second.streams == 0 && !it->second.busy)
      destinations.erase(it);
  }

  void skip(std::uint64_t cookie, std::uint64_t n) {
    counters.skipped_slots += n;
    period_skipped += n;
    period_behind.insert(cookie);
  }

  // A slot came: start it, or queue it for its turn, or pause it.
  void on_deadline(std::uint64_t cookie, MonoTime due) override {
    Running* r = find(cookie);
    if (!r) return;
    r->timer = 0;
    if (r->busy || r->queued) {
      skip(cookie, 1);  // the previous run (or wait) outlasts the interval
    } else if (admit && !admit(r->stream->priority())) {
      pause(*r);
    } else {
      if (r->paused) resume(*r);
      if (!r->destination->busy && !(r->bandwidth && bandwidth_busy)) {
        start(*r, due);
      } else {
        r->queued = true;
        ready.insert({r->stream->priority(), due, cookie});
      }
    }
    // start() may have ended a one-shot synchronously.
    r = find(cookie);
    if (r && !r->stream->oneshot() && r->timer == 0) {
      Slot next = r->schedule.next_after(r->slot, Mono::now());
      if (next.skipped > 0) {
        skip(cookie, next.skipped);
        log->debug("prober {}: stream '{}' skipped {} slots", node, r->stream->key(), next.skipped);
      }
      r->slot = next.index;
      r->timer = timers.schedule(next.at, weak_from_this(), cookie);
    }
  }

  void pause(Running& r) {
    ++counters.paused_slots;
    ++paused_since_log;
    if (r.paused) return;
    r.paused = true;
    if (paused_now++ == 0)
      log->error(
          "prober {}: SPOOL NEARLY FULL: pausing stream '{}' (priority {}) and every stream the "
          "spool cannot take now; nothing is dropped, they resume when the collector acknowledges",
          node, r.stream->key(), r.stream->priority());
    counters.paused_streams = paused_now;
  }

  void resume(Running& r) {
    r.paused = false;
    if (--paused_now == 0) {
      log->warn("prober {}: spool has room again: every paused stream resumed ({} slots paused)",
                node, paused_since_log);
      paused_since_log = 0;
    }
    counters.paused_streams = paused_now;
  }

  // Starts what may start from the ready queue, highest priority first: at
  // most one measurement per destination, and one bandwidth measurement per node.
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
      Running* r = find(it->cookie);
      if (!r) {
        it = ready.erase(it);
        continue;
      }
      if (r->destination->busy || (r->bandwidth && bandwidth_busy)) {
        ++it;
        continue;
      }
      MonoTime due = it->due;
      ready.erase(it);
      start(*r, due);
      it = ready.begin();  // start() may have changed the queue
    }
  }

  void start(Running& run, MonoTime due) {
    run.queued = false;
    run.busy = true;
    run.destination->busy = true;
    if (run.bandwidth) bandwidth_busy = true;
    ++counters.started;
    measure(run.stream, due, [weak = weak_from_this(), cookie = cookie(run)](wire::Result result) {
      if (auto self = weak.lock()) self->finished(cookie, std::move(result));
    });
  }

  void finished(std::uint64_t cookie, wire::Result result) {
    sink(std::move(result));
    if (Running* r = find(cookie)) {
      r->busy = false;
      r->destination->busy = false;
      if (r->bandwidth) bandwidth_busy = false;
      if (r->stream->oneshot()) {
        oneshots_done.insert(r->stream->key());
        by_key.erase(r->stream->key());
        remove(*r);
        refresh_stats();
      }
    } else if (auto it = orphans.find(cookie); it != orphans.end()) {
      // The stream was removed while this measurement ran.
      if (it->second.bandwidth) bandwidth_busy = false;
      if (auto d = destinations.find(it->second.dst); d != destinations.end()) {
        d->second.busy = false;
        forget_if_unused(it->second.dst);
      }
      orphans.erase(it);
    }
    dispatch();
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
    for (const auto& r : slab)
      if (r.live && !r.stream->oneshot()) per_second += 1.0 / r.stream->interval_s();
    stream_count = by_key.size();
    load = per_second;
  }
};

StreamRunner::StreamRunner(EventLoop& loop, std::string node, Limits limits, Measure measure,
                           Sink sink, Admit admit)
    : impl_(std::make_shared<Impl>(loop, std::move(node), limits, std::move(measure),
                                   std::move(sink), std::move(admit))) {}

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
