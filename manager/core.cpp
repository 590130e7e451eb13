#include "manager/core.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

#include "common/log.h"
#include "manager/api_types.h"

namespace flexmon::manager {

namespace {

auto log() { return logger("manager"); }

std::string fingerprint(const std::vector<wire::Stream>& streams) {
  std::string fp;
  for (const auto& s : streams) {
    if (s.oneshot()) continue;
    std::string bytes = s.SerializeAsString();
    fp += std::to_string(bytes.size()) + ":" + bytes;
  }
  return fp;
}

// The request number of a one-shot stream key ("/once-r<N>" at the end).
std::optional<std::uint64_t> oneshot_request(const std::string& key) {
  auto at = key.rfind("/once-");
  if (at == std::string::npos) return std::nullopt;
  return parse_request_id(std::string_view(key).substr(at + 6));
}

}  // namespace

std::string_view liveness_name(Liveness l) {
  switch (l) {
    case Liveness::alive:
      return "alive";
    case Liveness::suspect:
      return "suspect";
    case Liveness::dead:
      return "dead";
  }
  return "dead";
}

Liveness liveness(std::optional<double> age, double dead_after_s) {
  if (!age) return Liveness::dead;
  if (*age < dead_after_s / 2) return Liveness::alive;
  if (*age < dead_after_s) return Liveness::suspect;
  return Liveness::dead;
}

Core::Core(const Config& config, std::unique_ptr<RequestStore> store)
    : config_(config),
      store_(std::move(store)),
      // Generations stay increasing across manager restarts: they start
      // from the wall clock in microseconds.
      generation_(static_cast<std::uint64_t>(utc_now_ns() / 1000)) {
  for (auto& r : store_->load_all()) requests_.emplace(r.num, std::move(r));
  for (const auto& n : config_.nodes) nodes_[n.id];
  std::lock_guard lock(mu_);
  recompute_locked(utc_now_ns());
}

Core::~Core() { stop(); }

void Core::set_sink(AssignmentSink* sink) {
  std::lock_guard lock(mu_);
  sink_ = sink;
}

void Core::start() {
  worker_ = std::thread([this] { run(); });
}

void Core::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void Core::run() {
  for (;;) {
    try {
      housekeeping(utc_now_ns());
    } catch (const std::exception& e) {
      log()->error("housekeeping failed: {}", e.what());
    }
    std::unique_lock lock(mu_);
    if (stopping_) return;
    // Sleep until the next request ends, a change wakes us, or a minute.
    std::int64_t wait_ns = 60'000'000'000;
    const UtcNs now = utc_now_ns();
    for (const auto& [num, r] : requests_)
      if (r.state == RequestState::active && r.ends_ns)
        wait_ns = std::min<std::int64_t>(wait_ns, std::max<std::int64_t>(*r.ends_ns - now, 0));
    cv_.wait_for(lock, std::chrono::nanoseconds(wait_ns) + std::chrono::milliseconds(1),
                 [this] { return stopping_ || wake_; });
    wake_ = false;
    if (stopping_) return;
  }
}

void Core::housekeeping(UtcNs now) {
  std::lock_guard store_lock(store_mu_);
  std::vector<std::pair<std::uint64_t, RequestState>> changes;
  {
    std::lock_guard lock(mu_);
    for (auto& [num, r] : requests_) {
      if (r.state != RequestState::active) continue;
      if (r.spec.mode == Mode::continuous && r.ends_ns && *r.ends_ns <= now) {
        r.state = RequestState::expired;
        changes.emplace_back(num, r.state);
      } else if (r.spec.mode == Mode::oneshot) {
        auto it = delivered_.find(num);
        std::size_t delivered = it == delivered_.end() ? 0 : it->second.size();
        if (delivered >= r.spec.paths.size()) {
          r.state = RequestState::done;
          delivered_.erase(num);
          changes.emplace_back(num, r.state);
        }
      }
    }
    if (!changes.empty()) recompute_locked(now);
  }
  for (auto [num, state] : changes) {
    log()->info("request r{}: {}", num, state_name(state));
    store_->set_state(num, state);
  }
}

Request Core::add_request(const std::string& owner, const RequestSpec& spec) {
  std::lock_guard store_lock(store_mu_);
  Request r = store_->add(owner, spec, utc_now_ns());
  {
    std::lock_guard lock(mu_);
    requests_.emplace(r.num, r);
    recompute_locked(utc_now_ns());
    wake_ = true;
  }
  cv_.notify_all();
  log()->info("request {} by {}: {} {} paths, interval {} s", r.id(), owner, mode_name(spec.mode),
              spec.paths.size(), spec.interval_s);
  return r;
}

std::optional<Request> Core::find(std::uint64_t num) const {
  std::lock_guard lock(mu_);
  auto it = requests_.find(num);
  if (it == requests_.end()) return std::nullopt;
  return it->second;
}

std::vector<Request> Core::list(const std::optional<std::string>& owner) const {
  std::lock_guard lock(mu_);
  std::vector<Request> out;
  for (const auto& [num, r] : requests_)
    if (!owner || r.owner == *owner) out.push_back(r);
  return out;
}

Request Core::cancel(std::uint64_t num, const UserConfig& caller) {
  std::lock_guard store_lock(store_mu_);
  {
    std::lock_guard lock(mu_);
    auto it = requests_.find(num);
    if (it == requests_.end()) throw ApiFault(kNoSuchRequest, fmt::format("no request r{}", num));
    if (it->second.owner != caller.name && caller.role != Role::admin)
      throw ApiFault(kNotPermitted, fmt::format("request r{} belongs to another user", num));
    if (it->second.state != RequestState::active) return it->second;
  }
  store_->set_state(num, RequestState::cancelled);
  std::lock_guard lock(mu_);
  Request& r = requests_.at(num);
  r.state = RequestState::cancelled;
  delivered_.erase(num);
  recompute_locked(utc_now_ns());
  log()->info("request {} cancelled by {}", r.id(), caller.name);
  return r;
}

std::vector<NodeView> Core::nodes() const {
  std::lock_guard lock(mu_);
  const auto now = MonoClock::now();
  std::vector<NodeView> out;
  for (const auto& n : config_.nodes) {
    NodeView v;
    v.id = n.id;
    v.site = n.site;
    v.address = n.address;
    auto it = nodes_.find(n.id);
    if (it != nodes_.end()) {
      const NodeState& s = it->second;
      std::optional<double> age;
      if (s.last_contact_mono)
        age = std::chrono::duration<double>(now - *s.last_contact_mono).count();
      v.state = liveness(age, config_.manager.dead_after_s);
      v.last_contact = s.last_contact_utc;
      v.load = s.load;
      v.streams = s.streams;
    }
    out.push_back(std::move(v));
  }
  return out;
}

StreamSets Core::derive_locked(UtcNs now) const {
  std::vector<const Request*> active;
  for (const auto& [num, r] : requests_)
    if (r.state == RequestState::active) active.push_back(&r);
  return derive_streams(active, config_, now);
}

StreamSets Core::current_streams() const {
  std::lock_guard lock(mu_);
  return derive_locked(utc_now_ns());
}

wire::Assignment Core::assignment_locked(const std::string& node,
                                         std::vector<wire::Stream> streams) {
  wire::Assignment a;
  a.set_generation(++generation_);
  for (auto& s : streams) {
    if (s.oneshot()) {
      if (auto num = oneshot_request(s.key())) {
        Path path{s.src(), s.dst()};
        requests_.at(*num).oneshot_sent.insert(path);
        inflight_[node][a.generation()].push_back({*num, path});
      }
    }
    *a.add_streams() = std::move(s);
  }
  return a;
}

void Core::recompute_locked(UtcNs now) {
  StreamSets sets = derive_locked(now);
  for (auto& [node, streams] : sets) {
    NodeState& n = nodes_[node];
    std::string fp = fingerprint(streams);
    bool has_oneshot =
        std::any_of(streams.begin(), streams.end(), [](const auto& s) { return s.oneshot(); });
    if (fp == n.fingerprint && !has_oneshot) continue;
    n.fingerprint = std::move(fp);
    // Without a session the full set goes out at registration.
    if (!n.session || !sink_) continue;
    auto a = assignment_locked(node, std::move(streams));
    log()->debug("node {}: assignment {} with {} streams", node, a.generation(), a.streams_size());
    sink_->push(node, n.session, std::move(a));
  }
}

void Core::touch_locked(const std::string& node) {
  NodeState& n = nodes_[node];
  n.last_contact_mono = MonoClock::now();
  n.last_contact_utc = utc_now_ns();
}

wire::Assignment Core::on_register(const std::string& node, std::uint64_t session) {
  std::lock_guard lock(mu_);
  touch_locked(node);
  NodeState& n = nodes_[node];
  n.session = session;
  StreamSets sets = derive_locked(utc_now_ns());
  auto& streams = sets[node];
  n.fingerprint = fingerprint(streams);
  return assignment_locked(node, std::move(streams));
}

void Core::on_heartbeat(const std::string& node, const wire::Heartbeat& heartbeat) {
  std::lock_guard lock(mu_);
  touch_locked(node);
  NodeState& n = nodes_[node];
  n.load = std::isfinite(heartbeat.load()) ? heartbeat.load() : 0.0;
  n.streams = heartbeat.streams();
}

void Core::on_delivered(const std::string& node, std::uint64_t session, std::uint64_t generation,
                        bool ok) {
  bool finished = false;
  {
    std::lock_guard lock(mu_);
    auto per_node = inflight_.find(node);
    if (per_node == inflight_.end()) return;
    auto it = per_node->second.find(generation);
    if (it == per_node->second.end()) return;
    std::vector<Sent> sent = std::move(it->second);
    per_node->second.erase(it);
    for (const auto& s : sent) {
      auto r = requests_.find(s.num);
      if (r == requests_.end() || r->second.state != RequestState::active) continue;
      if (ok) {
        auto& d = delivered_[s.num];
        d.insert(s.path);
        finished = finished || d.size() >= r->second.spec.paths.size();
      } else {
        r->second.oneshot_sent.erase(s.path);
      }
    }
    if (!ok) {
      log()->info("node {}: assignment {} not delivered (session {} closed)", node, generation,
                  session);
      recompute_locked(utc_now_ns());
    }
    if (finished) wake_ = true;
  }
  if (finished) cv_.notify_all();
}

void Core::on_disconnect(const std::string& node, std::uint64_t session) {
  std::lock_guard lock(mu_);
  NodeState& n = nodes_[node];
  if (n.session == session) n.session = 0;
}

}  // namespace flexmon::manager
