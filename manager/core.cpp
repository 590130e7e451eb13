#include "manager/core.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

#include "common/log.h"
#include "manager/fault_codes.h"

namespace flexmon::manager {

namespace {

auto log() { return logger("manager"); }

bool is_active(const Request& r) { return r.state == RequestState::active; }

std::string cost_text(double v) { return fmt::format("{:.0f}", v); }

// How often the bandwidth history is read from the cache.
constexpr std::int64_t kHistoryEveryNs = 60'000'000'000;
// Results of the last day make the history.
constexpr std::int64_t kHistorySpanNs = 86'400'000'000'000;

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
      generation_(static_cast<std::uint64_t>(utc_now_ns() / 1000)),
      index_(config) {
  for (auto& r : store_->load_all()) requests_.emplace(r.num, std::move(r));
  for (const auto& n : config_.nodes) nodes_[n.id];
  std::lock_guard lock(mu_);
  const UtcNs now = utc_now_ns();
  for (auto& [num, r] : requests_) {
    if (!is_active(r)) continue;
    if (r.ends_ns && *r.ends_ns <= now) continue;  // expired by the first housekeeping
    apply_locked(nullptr, &r);
  }
  index_.take_dirty();  // nobody is registered yet
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
      const UtcNs now = utc_now_ns();
      if (now - history_loaded_ >= kHistoryEveryNs) {
        history_loaded_ = now;
        set_history(load_history(config_.collector.cache_db, now - kHistorySpanNs));
      }
      housekeeping(now);
    } catch (const std::exception& e) {
      log()->error("housekeeping failed: {}", e.what());
    }
    std::unique_lock lock(mu_);
    if (stopping_) return;
    // Sleep until the next request ends or reverts, a change wakes us, or
    // a quarter of the liveness timeout (nodes die on time).
    std::int64_t wait_ns = std::min<std::int64_t>(
        60'000'000'000, static_cast<std::int64_t>(config_.manager.dead_after_s / 4 * 1e9));
    const UtcNs now = utc_now_ns();
    for (const auto& [num, r] : requests_) {
      if (!is_active(r)) continue;
      if (r.ends_ns)
        wait_ns = std::min<std::int64_t>(wait_ns, std::max<std::int64_t>(*r.ends_ns - now, 0));
      if (r.revert)
        wait_ns = std::min<std::int64_t>(wait_ns, std::max<std::int64_t>(r.revert->at_ns - now, 0));
    }
    cv_.wait_for(lock, std::chrono::nanoseconds(wait_ns) + std::chrono::milliseconds(1),
                 [this] { return stopping_ || wake_; });
    wake_ = false;
    if (stopping_) return;
  }
}

const UserConfig& Core::user_of(const std::string& name) const {
  static const UserConfig kUnknown{"", {}, Role::user};
  const UserConfig* u = config_.find_user(name);
  return u ? *u : kUnknown;
}

void Core::apply_locked(const Request* before, const Request* after) {
  if (before && after)
    index_.replace(*before, *after);
  else if (before)
    index_.detach(*before);
  else if (after)
    index_.attach(*after);
  if (before) {
    auto& u = users_[before->owner];
    u.requests -= 1;
    u.paths -= before->spec.paths.size();
    u.reserved -= reserved_[before->num];
    reserved_.erase(before->num);
  }
  if (after) {
    auto& u = users_[after->owner];
    u.requests += 1;
    u.paths += after->spec.paths.size();
    Cost c = standalone_cost(after->spec, &index_.history());
    reserved_[after->num] = c;
    u.reserved += c;
  }
}

void Core::check_locked(const UserConfig& caller, const Request* before,
                        const Request& after) const {
  const EffectiveLimits limits = config_.limits_for(caller.role);
  const std::string role = role_name(caller.role);
  auto it = users_.find(after.owner);
  UserState u = it == users_.end() ? UserState{} : it->second;
  Cost reserved = u.reserved;
  if (before) {
    u.requests -= 1;
    u.paths -= before->spec.paths.size();
    auto r = reserved_.find(before->num);
    if (r != reserved_.end()) reserved -= r->second;
  }
  if (u.requests + 1 > limits.max_requests_per_user)
    throw ApiFault(kLimitExceeded,
                   fmt::format("limit max_requests_per_user: {} active requests with this one, {} "
                               "allowed (role {})",
                               u.requests + 1, limits.max_requests_per_user, role));
  if (u.paths + after.spec.paths.size() > limits.max_paths_per_user)
    throw ApiFault(kLimitExceeded,
                   fmt::format("limit max_paths_per_user: {} paths with this request, {} allowed "
                               "(role {})",
                               u.paths + after.spec.paths.size(), limits.max_paths_per_user, role));
  const Budget budget = config_.budget_for_user(after.owner);
  const Cost mine = standalone_cost(after.spec, &index_.history());
  const Cost total = reserved + mine;
  if (budget.bps > 0 && total.bps > budget.bps * (1 + 1e-9) + 1e-6)
    throw ApiFault(kBudgetExceeded,
                   fmt::format("budget user {} bps: {} bit/s with this request, {} allowed",
                               after.owner, cost_text(total.bps), cost_text(budget.bps)));
  if (budget.bytes_per_day > 0 && total.bytes_per_day > budget.bytes_per_day * (1 + 1e-9) + 1e-6)
    throw ApiFault(
        kBudgetExceeded,
        fmt::format("budget user {} bytes_per_day: {} bytes/day with this request, {} "
                    "allowed",
                    after.owner, cost_text(total.bytes_per_day), cost_text(budget.bytes_per_day)));
  if (auto why = index_.breaks_budget(index_.simulate(before, &after)))
    throw ApiFault(kBudgetExceeded, *why);
}

Admission Core::admit(const UserConfig& caller, const RequestSpec& spec, bool dry_run) {
  std::unique_lock store_lock(store_mu_);
  Admission a;
  a.paths = spec.paths.size();
  Request candidate;
  candidate.num = 0;  // not a sharer of anything yet
  candidate.owner = caller.name;
  candidate.spec = spec;
  {
    std::lock_guard lock(mu_);
    // A number no stored request has, so that simulate() sees a new sharer.
    candidate.num = requests_.empty() ? 1 : requests_.rbegin()->first + 1;
    a.standalone = standalone_cost(spec, &index_.history());
    a.added = index_.simulate(nullptr, &candidate).global;
    for (const auto& p : spec.paths) {
      auto key = stream_key(
          spec, p, spec.mode == Mode::oneshot ? std::optional(candidate.num) : std::nullopt);
      if (index_.sharers(key))
        ++a.shared_streams;
      else
        ++a.new_streams;
    }
    try {
      check_locked(caller, nullptr, candidate);
    } catch (const ApiFault& f) {
      if (!dry_run) throw;
      a.refusal_code = f.code();
      a.refusal = f.what();
      return a;
    }
    a.admitted = true;
    if (dry_run) return a;
  }
  // The store assigns the number; the checks hold since store_mu_ is held
  // (every change of requests takes it first).
  Request r = store_->add(caller.name, spec, utc_now_ns());
  {
    std::lock_guard lock(mu_);
    // The control thread may have resumed streams since the check: check
    // again, so that no budget is ever exceeded.
    try {
      check_locked(caller, nullptr, r);
    } catch (const ApiFault&) {
      store_->set_state(r.num, RequestState::cancelled);
      throw;
    }
    auto [it, inserted] = requests_.emplace(r.num, r);
    apply_locked(nullptr, &it->second);
    publish_locked();
    wake_ = true;
  }
  cv_.notify_all();
  log()->info("request {} by {}: {} {} {} paths, interval {} s, {:.0f} bit/s alone, +{:.0f} bit/s",
              r.id(), caller.name, spec.tool, mode_name(spec.mode), spec.paths.size(),
              spec.interval_s, a.standalone.bps, a.added.bps);
  a.request = std::move(r);
  return a;
}

Request Core::add_request(const std::string& owner, const RequestSpec& spec) {
  UserConfig caller = user_of(owner);
  caller.name = owner;
  return *admit(caller, spec, false).request;
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
  apply_locked(&r, nullptr);
  r.state = RequestState::cancelled;
  r.revert.reset();
  delivered_.erase(num);
  publish_locked();
  log()->info("request {} cancelled by {}", r.id(), caller.name);
  return r;
}

Request Core::edit(std::uint64_t num, const UserConfig& caller, const RequestSpec& spec,
                   std::optional<double> for_s) {
  std::lock_guard store_lock(store_mu_);
  Request updated;
  {
    std::lock_guard lock(mu_);
    auto it = requests_.find(num);
    if (it == requests_.end()) throw ApiFault(kNoSuchRequest, fmt::format("no request r{}", num));
    Request& r = it->second;
    if (r.owner != caller.name && caller.role != Role::admin)
      throw ApiFault(kNotPermitted, fmt::format("request r{} belongs to another user", num));
    if (!is_active(r))
      throw ApiFault(kBadArgument,
                     fmt::format("request r{} is {}: only active requests can be edited", num,
                                 state_name(r.state)));
    updated = r;
    updated.spec = spec;
    updated.spec.paths = r.spec.paths;
    updated.spec.tool = r.spec.tool;
    updated.spec.mode = r.spec.mode;
    if (spec.duration_s != r.spec.duration_s)
      updated.ends_ns =
          spec.duration_s ? std::optional(r.created_ns + static_cast<UtcNs>(*spec.duration_s * 1e9))
                          : std::nullopt;
    if (for_s) {
      // Back to what it was before the first pending temporary edit.
      Revert back = r.revert ? *r.revert : Revert{0, r.spec, r.ends_ns};
      back.at_ns = utc_now_ns() + static_cast<UtcNs>(*for_s * 1e9);
      updated.revert = back;
    } else {
      updated.revert.reset();  // a lasting edit becomes the new base
    }
    // The owner's limits apply, also when an admin edits.
    UserConfig owner = user_of(r.owner);
    owner.name = r.owner;
    check_locked(owner, &r, updated);
  }
  store_->update(updated);
  std::lock_guard lock(mu_);
  Request& r = requests_.at(num);
  if (!is_active(r)) return r;  // finished meanwhile (housekeeping)
  const Request before = r;
  r.spec = updated.spec;
  r.ends_ns = updated.ends_ns;
  r.revert = updated.revert;
  apply_locked(&before, &r);
  publish_locked();
  wake_ = true;
  cv_.notify_all();
  log()->info("request {} edited by {}{}", r.id(), caller.name,
              for_s ? fmt::format(" for {} s", *for_s) : std::string());
  return r;
}

Cost Core::charged(const Request& r) const {
  std::lock_guard lock(mu_);
  return charged_locked(r);
}

Cost Core::charged_locked(const Request& r) const {
  Cost total;
  if (!is_active(r)) return total;
  for (const auto& p : r.spec.paths) {
    if (r.spec.mode == Mode::oneshot && r.oneshot_sent.contains(p)) continue;
    total += index_.charged(
        stream_key(r.spec, p, r.spec.mode == Mode::oneshot ? std::optional(r.num) : std::nullopt),
        r.num);
  }
  return total;
}

Usage Core::usage(const std::string& user) const {
  std::lock_guard lock(mu_);
  Usage u;
  u.user = user;
  const UserConfig& cfg = user_of(user);
  u.limits = config_.limits_for(cfg.role);
  u.budget = config_.budget_for_user(user);
  if (auto it = users_.find(user); it != users_.end()) {
    u.requests = it->second.requests;
    u.paths = it->second.paths;
    u.reserved = it->second.reserved;
  }
  for (const auto& [num, r] : requests_)
    if (r.owner == user) u.charged += charged_locked(r);
  return u;
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

StreamSets Core::current_streams() const {
  std::lock_guard lock(mu_);
  StreamSets sets;
  for (const auto& n : config_.nodes) sets[n.id] = index_.streams_of(n.id);
  return sets;
}

StreamSets Core::derived_streams() const {
  std::lock_guard lock(mu_);
  std::vector<const Request*> active;
  for (const auto& [num, r] : requests_)
    if (is_active(r)) active.push_back(&r);
  StreamSets sets = derive_streams(active, config_, utc_now_ns());
  // Streams from or to a dead node, and held ones, do not run.
  for (auto& [node, streams] : sets) {
    auto running = index_.streams_of(node);
    std::set<std::string> keys;
    for (const auto& s : running) keys.insert(s.key());
    std::erase_if(streams, [&](const wire::Stream& s) {
      return index_.dead(s.src()) || index_.dead(s.dst()) ||
             (!keys.contains(s.key()) && index_.sharers(s.key()) > 0);
    });
  }
  return sets;
}

Cost Core::global_cost() const {
  std::lock_guard lock(mu_);
  return index_.global();
}

Cost Core::node_cost(const std::string& node) const {
  std::lock_guard lock(mu_);
  return index_.node(node);
}

void Core::set_history(History history) {
  std::lock_guard lock(mu_);
  index_.set_history(std::move(history));
  publish_locked();
}

void Core::set_node_dead_for_test(const std::string& node, bool dead) {
  std::lock_guard lock(mu_);
  if (dead)
    forced_dead_.insert(node);
  else
    forced_dead_.erase(node);
  index_.set_dead(node, dead);
  publish_locked();
}

void Core::housekeeping(UtcNs now) {
  std::lock_guard store_lock(store_mu_);
  std::vector<std::pair<std::uint64_t, RequestState>> changes;
  std::vector<Request> reverted;
  {
    std::lock_guard lock(mu_);
    update_liveness_locked();
    for (auto& [num, r] : requests_) {
      if (!is_active(r)) continue;
      if (r.spec.mode == Mode::continuous && r.ends_ns && *r.ends_ns <= now) {
        apply_locked(&r, nullptr);
        r.state = RequestState::expired;
        r.revert.reset();
        changes.emplace_back(num, r.state);
      } else if (r.spec.mode == Mode::oneshot) {
        auto it = delivered_.find(num);
        std::size_t delivered = it == delivered_.end() ? 0 : it->second.size();
        if (delivered >= r.spec.paths.size()) {
          apply_locked(&r, nullptr);
          r.state = RequestState::done;
          delivered_.erase(num);
          changes.emplace_back(num, r.state);
        }
      } else if (r.revert && r.revert->at_ns <= now) {
        Request back = r;
        back.spec = r.revert->spec;
        back.ends_ns = r.revert->ends_ns;
        back.revert.reset();
        try {
          UserConfig owner = user_of(r.owner);
          owner.name = r.owner;
          check_locked(owner, &r, back);
        } catch (const ApiFault& f) {
          log()->warn("request {}: temporary edit not reverted yet: {}", r.id(), f.what());
          continue;  // tried again at the next housekeeping
        }
        const Request before = r;
        r.spec = back.spec;
        r.ends_ns = back.ends_ns;
        r.revert.reset();
        apply_locked(&before, &r);
        reverted.push_back(r);
      }
    }
    publish_locked();
  }
  for (auto [num, state] : changes) {
    log()->info("request r{}: {}", num, state_name(state));
    store_->set_state(num, state);
  }
  for (const auto& r : reverted) {
    log()->info("request {}: temporary edit over, back to interval {} s", r.id(),
                r.spec.interval_s);
    store_->update(r);
  }
}

void Core::update_liveness_locked() {
  const auto now = MonoClock::now();
  for (const auto& n : config_.nodes) {
    const NodeState& s = nodes_[n.id];
    auto since = s.last_contact_mono ? *s.last_contact_mono : started_;
    bool dead = std::chrono::duration<double>(now - since).count() >= config_.manager.dead_after_s;
    if (forced_dead_.contains(n.id)) dead = true;
    if (dead != index_.dead(n.id))
      log()->info("node {}: {}; its streams {}", n.id, dead ? "dead" : "alive again",
                  dead ? "pause" : "resume");
    index_.set_dead(n.id, dead);
  }
}

wire::Assignment Core::assignment_locked(const std::string& node) {
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

void Core::publish_locked() {
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

void Core::touch_locked(const std::string& node) {
  NodeState& n = nodes_[node];
  n.last_contact_mono = MonoClock::now();
  n.last_contact_utc = utc_now_ns();
  if (index_.dead(node) && !forced_dead_.contains(node)) {
    log()->info("node {}: alive again; its streams resume", node);
    index_.set_dead(node, false);
  }
}

wire::Assignment Core::on_register(const std::string& node, std::uint64_t session) {
  std::lock_guard lock(mu_);
  touch_locked(node);
  NodeState& n = nodes_[node];
  n.session = session;
  auto a = assignment_locked(node);
  // Resumed streams of other nodes go out now; this node's are in `a`.
  publish_locked();
  return a;
}

void Core::on_heartbeat(const std::string& node, const wire::Heartbeat& heartbeat) {
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
        index_.attach_path(r->second, s.path);
      }
    }
    if (!ok) {
      log()->info("node {}: assignment {} not delivered (session {} closed)", node, generation,
                  session);
      publish_locked();
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
