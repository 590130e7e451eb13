#include "manager/fleet.h"

#include <cmath>

#include "common/log.h"

namespace flexmon::manager {

namespace {

auto log() { return logger("manager"); }

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

Fleet::Fleet(const Config& config, const TimeSource& clock, std::mutex& mu, RequestMap& requests,
             StreamIndex& index, std::function<void()> wake_housekeeping)
    : config_(config),
      clock_(clock),
      mu_(mu),
      requests_(requests),
      index_(index),
      wake_housekeeping_(std::move(wake_housekeeping)),
      started_(clock.mono()),
      // Generations stay increasing across manager restarts: they start
      // from the wall clock in microseconds.
      generation_(static_cast<std::uint64_t>(clock.utc() / 1000)) {
  for (const auto& n : config_.nodes) nodes_[n.id];
}

void Fleet::set_sink(AssignmentSink* sink) {
  std::lock_guard lock(mu_);
  sink_ = sink;
}

std::vector<NodeView> Fleet::nodes() const {
  std::lock_guard lock(mu_);
  const auto now = clock_.mono();
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
      // Never heard from since the manager started: suspect during the
      // grace period (its streams keep counting), then dead.
      if (!age && !index_.dead(n.id)) v.state = Liveness::suspect;
      v.last_contact = s.last_contact_utc;
      v.load = s.load;
      v.streams = s.streams;
      v.skipped_slots = s.skipped_slots;
      v.shortfall = s.shortfall;
      v.behind_streams = s.behind_streams;
    }
    v.paused_streams = static_cast<std::uint32_t>(index_.paused_on(n.id));
    v.cost = index_.node(n.id);
    out.push_back(std::move(v));
  }
  return out;
}

void Fleet::update_liveness_locked() {
  const auto now = clock_.mono();
  for (const auto& n : config_.nodes) {
    const NodeState& s = nodes_[n.id];
    auto since = s.last_contact_mono ? *s.last_contact_mono : started_;
    bool dead = std::chrono::duration<double>(now - since).count() >= config_.manager.dead_after_s;
    if (dead != index_.dead(n.id))
      log()->info("node {}: {}; its streams {}", n.id, dead ? "dead" : "alive again",
                  dead ? "pause" : "resume");
    index_.set_dead(n.id, dead);
  }
}

bool Fleet::delivered_locked(const Request& r) const {
  auto it = delivered_.find(r.num);
  return (it == delivered_.end() ? 0 : it->second.size()) >= r.spec.paths.size();
}

void Fleet::forget_locked(std::uint64_t num) { delivered_.erase(num); }

wire::Assignment Fleet::assignment_locked(const std::string& node) {
  wire::Assignment a;
  a.set_generation(++generation_);
  auto streams = index_.streams_of(node);
  for (auto& s : streams) {
    if (s.oneshot()) {
      if (auto num = oneshot_request(s.key())) {
        Path path{s.src(), s.dst()};
        Request& r = requests_.at(*num);
        r.oneshot_sent.insert(path);
        index_.detach_sent(r, path);
        inflight_[node][a.generation()].push_back({*num, path});
      }
    }
    *a.add_streams() = std::move(s);
  }
  return a;
}

void Fleet::publish_locked() {
  // Handing out one-shots may resume held streams elsewhere: loop until
  // nothing is dirty.
  for (int round = 0; round < 4; ++round) {
    auto dirty = index_.take_dirty();
    if (dirty.empty()) return;
    for (const auto& node : dirty) {
      NodeState& n = nodes_[node];
      // Without a session the full set goes out at registration.
      if (!n.session || !sink_) continue;
      auto a = assignment_locked(node);
      log()->debug("node {}: assignment {} with {} streams", node, a.generation(),
                   a.streams_size());
      sink_->push(node, n.session, std::move(a));
    }
  }
}

void Fleet::touch_locked(const std::string& node) {
  NodeState& n = nodes_[node];
  n.last_contact_mono = clock_.mono();
  n.last_contact_utc = clock_.utc();
  if (index_.dead(node)) {
    log()->info("node {}: alive again; its streams resume", node);
    index_.set_dead(node, false);
  }
}

wire::Assignment Fleet::on_register(const std::string& node, std::uint64_t session) {
  std::lock_guard lock(mu_);
  touch_locked(node);
  NodeState& n = nodes_[node];
  n.session = session;
  auto a = assignment_locked(node);
  // Resumed streams of other nodes go out now; this node's are in `a`.
  publish_locked();
  return a;
}

void Fleet::on_heartbeat(const std::string& node, const wire::Heartbeat& heartbeat) {
  std::lock_guard lock(mu_);
  touch_locked(node);
  NodeState& n = nodes_[node];
  n.load = std::isfinite(heartbeat.load()) ? heartbeat.load() : 0.0;
  n.streams = heartbeat.streams();
  n.skipped_slots = heartbeat.skipped_slots();
  n.shortfall = std::isfinite(heartbeat.shortfall()) ? heartbeat.shortfall() : 0.0;
  n.behind_streams = heartbeat.behind_streams();
  publish_locked();
}

void Fleet::on_delivered(const std::string& node, std::uint64_t session, std::uint64_t generation,
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
        index_.attach_path(r->second, s.path);
      }
    }
    if (!ok) {
      log()->info("node {}: assignment {} not delivered (session {} closed)", node, generation,
                  session);
      publish_locked();
    }
  }
  if (finished && wake_housekeeping_) wake_housekeeping_();
}

void Fleet::on_disconnect(const std::string& node, std::uint64_t session) {
  std::lock_guard lock(mu_);
  NodeState& n = nodes_[node];
  if (n.session == session) n.session = 0;
}

}  // namespace flexmon::manager
