#include "manager/streams.h"

#include <algorithm>
#include <limits>

#include "manager/admission.h"

namespace flexmon::manager {

namespace {

bool is_oneshot(const Request& r) { return r.spec.mode == Mode::oneshot; }

double entry_cost_interval(const wire::Stream& s) {
  return s.oneshot() ? kOneshotInterval : s.interval_s();
}

}  // namespace

StreamIndex::StreamIndex(const Config& config) : config_(config) {
  for (const auto& n : config.nodes) known_.insert(n.id);
}

Cost StreamIndex::node(const std::string& id) const {
  auto it = node_cost_.find(id);
  return it == node_cost_.end() ? Cost{} : it->second;
}

bool StreamIndex::endpoints_alive(const Entry& e) const {
  return !dead_.contains(e.stream.src()) && !dead_.contains(e.stream.dst());
}

bool StreamIndex::running(const Entry& e) const { return endpoints_alive(e) && !e.held; }

void StreamIndex::account(Entry& e) {
  Cost now = running(e) ? cost_of(e.bytes, entry_cost_interval(e.stream)) : Cost{};
  Cost diff = now - e.counted;
  global_ += diff;
  node_cost_[e.stream.src()] += diff;
  node_cost_[e.stream.dst()] += diff;
  e.counted = now;
}

void StreamIndex::refresh(const std::string& key, Entry& e, bool was_running, double old_interval,
                          std::int32_t old_priority) {
  const std::string src = e.stream.src();
  if (e.sharers.empty()) {
    e.held = true;  // not running: account() takes its cost off the totals
    account(e);
    by_src_[src].erase(key);
    by_node_[src].erase(key);
    by_node_[e.stream.dst()].erase(key);
    held_.erase(key);
    streams_.erase(key);
    if (was_running && !quiet_) dirty_.insert(src);
    return;
  }
  double interval = std::numeric_limits<double>::infinity();
  std::int32_t priority = std::numeric_limits<std::int32_t>::min();
  for (const auto& [num, s] : e.sharers) {
    interval = std::min(interval, s.interval);
    priority = std::max(priority, s.priority);
  }
  e.stream.set_interval_s(interval);
  e.stream.set_priority(priority);
  account(e);
  const bool now_running = running(e);
  if (now_running != was_running ||
      (now_running && (interval != old_interval || priority != old_priority)))
    dirty_.insert(src);
}

void StreamIndex::attach_key(const Request& r, const Path& path, bool oneshot) {
  if (!known_.contains(path.src) || !known_.contains(path.dst)) return;
  std::optional<std::uint64_t> once = oneshot ? std::optional(r.num) : std::nullopt;
  std::string key = stream_key(r.spec, path, once);
  auto [it, inserted] = streams_.try_emplace(key);
  Entry& e = it->second;
  bool was_running = false;
  double old_interval = 0;
  std::int32_t old_priority = 0;
  if (inserted) {
    e.stream = make_stream(r.spec, path, config_, once);
    e.bytes = measurement_bytes(r.spec, path, &history_);
    by_src_[path.src].insert(key);
    by_node_[path.src].insert(key);
    by_node_[path.dst].insert(key);
  } else {
    was_running = running(e);
    old_interval = e.stream.interval_s();
    old_priority = e.stream.priority();
  }
  e.sharers[r.num] = {r.spec.interval_s, r.spec.priority};
  refresh(key, e, was_running, old_interval, old_priority);
}

void StreamIndex::detach_key(const Request& r, const Path& path, bool oneshot) {
  std::optional<std::uint64_t> once = oneshot ? std::optional(r.num) : std::nullopt;
  std::string key = stream_key(r.spec, path, once);
  auto it = streams_.find(key);
  if (it == streams_.end()) return;
  Entry& e = it->second;
  if (!e.sharers.erase(r.num)) return;
  refresh(key, e, running(e), e.stream.interval_s(), e.stream.priority());
}

void StreamIndex::attach(const Request& r) {
  for (const auto& p : r.spec.paths) {
    if (is_oneshot(r) && r.oneshot_sent.contains(p)) continue;
    attach_key(r, p, is_oneshot(r));
  }
}

void StreamIndex::detach(const Request& r) {
  for (const auto& p : r.spec.paths) detach_key(r, p, is_oneshot(r));
  retry_held();
}

void StreamIndex::replace(const Request& before, const Request& after) {
  // A stream the edit keeps is updated in place, so one held for budget
  // stays held (recreating it would start it running unchecked).
  auto key_of = [](const Request& r, const Path& p) {
    return stream_key(r.spec, p, is_oneshot(r) ? std::optional(r.num) : std::nullopt);
  };
  std::set<std::string> kept;
  for (const auto& p : after.spec.paths) kept.insert(key_of(after, p));
  for (const auto& p : before.spec.paths)
    if (!kept.contains(key_of(before, p))) detach_key(before, p, is_oneshot(before));
  attach(after);
  retry_held();
}

void StreamIndex::attach_path(const Request& r, const Path& path) {
  attach_key(r, path, is_oneshot(r));
}

void StreamIndex::detach_path(const Request& r, const Path& path) {
  detach_key(r, path, is_oneshot(r));
  retry_held();
}

void StreamIndex::detach_sent(const Request& r, const Path& path) {
  quiet_ = true;
  detach_key(r, path, is_oneshot(r));
  quiet_ = false;
  retry_held();
}

StreamIndex::Delta StreamIndex::simulate(const Request* before, const Request* after) const {
  struct Change {
    Path path;
    const Request* request = nullptr;  // whose spec builds a new stream
    bool removed = false;
    std::optional<double> added;
  };
  std::map<std::string, Change> changes;
  auto key_of = [](const Request& r, const Path& p) {
    return stream_key(r.spec, p, is_oneshot(r) ? std::optional(r.num) : std::nullopt);
  };
  if (before)
    for (const auto& p : before->spec.paths) {
      if (is_oneshot(*before) && before->oneshot_sent.contains(p)) continue;
      Change& c = changes[key_of(*before, p)];
      c.path = p;
      c.request = before;
      c.removed = true;
    }
  if (after)
    for (const auto& p : after->spec.paths) {
      if (!known_.contains(p.src) || !known_.contains(p.dst)) continue;
      if (is_oneshot(*after) && after->oneshot_sent.contains(p)) continue;
      Change& c = changes[key_of(*after, p)];
      c.path = p;
      c.request = after;
      c.added = after->spec.interval_s;
    }
  Delta delta;
  for (const auto& [key, c] : changes) {
    auto it = streams_.find(key);
    const Entry* e = it == streams_.end() ? nullptr : &it->second;
    const std::uint64_t num = c.request->num;
    double interval = std::numeric_limits<double>::infinity();
    bool any = false;
    if (e)
      for (const auto& [n, s] : e->sharers) {
        if (c.removed && n == num) continue;
        if (c.added && n == num) continue;  // replaced below
        interval = std::min(interval, s.interval);
        any = true;
      }
    if (c.added) {
      interval = std::min(interval, *c.added);
      any = true;
    }
    Cost now;
    if (any) {
      const bool held = e && e->held;
      const bool alive = !dead_.contains(c.path.src) && !dead_.contains(c.path.dst);
      if (alive && !held) {
        const double bytes = e ? e->bytes : measurement_bytes(c.request->spec, c.path, &history_);
        now = cost_of(bytes, is_oneshot(*c.request) ? kOneshotInterval : interval);
      }
    }
    Cost d = now - (e ? e->counted : Cost{});
    delta.global += d;
    delta.nodes[c.path.src] += d;
    delta.nodes[c.path.dst] += d;
  }
  return delta;
}

void StreamIndex::set_dead(const std::string& id, bool is_dead) {
  if (dead_.contains(id) == is_dead) return;
  std::vector<std::pair<std::string, bool>> before;
  for (const auto& key : by_node_[id]) before.emplace_back(key, running(streams_.at(key)));
  if (is_dead)
    dead_.insert(id);
  else
    dead_.erase(id);
  for (const auto& [key, was_running] : before) {
    Entry& e = streams_.at(key);
    if (is_dead) {
      if (e.held) held_.erase(key);
      e.held = false;
      account(e);
      if (was_running) dirty_.insert(e.stream.src());
    } else if (endpoints_alive(e)) {
      // Resumes through the held queue, so that budgets hold.
      e.held = true;
      held_.insert(key);
    }
  }
  retry_held();
}

void StreamIndex::retry_held() {
  if (held_.empty()) return;
  std::vector<std::string> order(held_.begin(), held_.end());
  std::stable_sort(order.begin(), order.end(), [this](const auto& a, const auto& b) {
    return streams_.at(a).stream.priority() > streams_.at(b).stream.priority();
  });
  for (const auto& key : order) {
    Entry& e = streams_.at(key);
    Cost c = cost_of(e.bytes, entry_cost_interval(e.stream));
    Delta d;
    d.global = c;
    d.nodes[e.stream.src()] += c;
    d.nodes[e.stream.dst()] += c;
    if (breaks_shared_budget(config_.budgets, *this, d)) continue;
    e.held = false;
    held_.erase(key);
    account(e);
    dirty_.insert(e.stream.src());
  }
}

void StreamIndex::set_history(History history) {
  history_ = std::move(history);
  for (auto& [key, e] : streams_) {
    const auto tool = parse_tool(e.stream.tool());
    if (!tool || !is_bandwidth_tool(*tool)) continue;
    RequestSpec spec;
    spec.tool = *tool;
    spec.abw = {e.stream.abw().max_rate_bps(), e.stream.abw().max_bytes(),
                e.stream.abw().max_duration_ms()};
    spec.throughput = {e.stream.throughput().duration_ms(), e.stream.throughput().max_bytes()};
    e.bytes = measurement_bytes(spec, {e.stream.src(), e.stream.dst()}, &history_);
    account(e);
  }
  retry_held();
}

std::vector<wire::Stream> StreamIndex::streams_of(const std::string& id) const {
  std::vector<wire::Stream> out;
  auto it = by_src_.find(id);
  if (it == by_src_.end()) return out;
  out.reserve(it->second.size());
  for (const auto& key : it->second) {
    const Entry& e = streams_.at(key);
    if (running(e)) out.push_back(e.stream);
  }
  return out;
}

std::set<std::string> StreamIndex::take_dirty() { return std::exchange(dirty_, {}); }

std::size_t StreamIndex::paused() const {
  std::size_t n = 0;
  for (const auto& [key, e] : streams_) n += !running(e);
  return n;
}

std::size_t StreamIndex::paused_on(const std::string& id) const {
  auto it = by_src_.find(id);
  if (it == by_src_.end()) return 0;
  std::size_t n = 0;
  for (const auto& key : it->second) n += !running(streams_.at(key));
  return n;
}

std::size_t StreamIndex::sharers(const std::string& key) const {
  auto it = streams_.find(key);
  return it == streams_.end() ? 0 : it->second.sharers.size();
}

Cost StreamIndex::charged(const std::string& key, std::uint64_t num) const {
  auto it = streams_.find(key);
  if (it == streams_.end() || !running(it->second)) return {};
  const Entry& e = it->second;
  std::vector<double> rates;
  std::size_t mine = e.sharers.size();
  for (const auto& [n, s] : e.sharers) {
    if (n == num) mine = rates.size();
    rates.push_back(1.0 / (e.stream.oneshot() ? kOneshotInterval : s.interval));
  }
  if (mine == e.sharers.size()) return {};
  const double share = shared_rates(rates)[mine];
  return {e.bytes * 8.0 * share, e.bytes * 86'400.0 * share};
}

}  // namespace flexmon::manager
