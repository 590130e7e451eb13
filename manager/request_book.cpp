#include "manager/request_book.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/log.h"
#include "manager/fault_codes.h"

namespace flexmon::manager {

namespace {

auto log() { return logger("manager"); }

bool is_active(const Request& r) { return r.state == RequestState::active; }

// How often the bandwidth history is read from the cache.
constexpr std::int64_t kHistoryEveryNs = 60'000'000'000;
// Results of the last day make the history.
constexpr std::int64_t kHistorySpanNs = 86'400'000'000'000;

}  // namespace

RequestBook::RequestBook(const Config& config, std::unique_ptr<RequestStore> store,
                         TimeSource clock)
    : config_(config),
      clock_(std::move(clock)),
      store_(std::move(store)),
      index_(config),
      admission_(config),
      fleet_(config_, clock_, mu_, requests_, index_, [this] { wake_housekeeping(); }) {
  for (auto& r : store_->load_all()) requests_.emplace(r.num, std::move(r));
  std::lock_guard lock(mu_);
  const UtcNs now = clock_.utc();
  for (auto& [num, r] : requests_) {
    if (!is_active(r)) continue;
    if (r.ends_ns && *r.ends_ns <= now) continue;  // expired by the first housekeeping
    apply_locked(nullptr, &r);
  }
  index_.take_dirty();  // nobody is registered yet
}

void RequestBook::wake_housekeeping() {
  {
    std::lock_guard lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

void RequestBook::stop_housekeeping() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

void RequestBook::run_housekeeping() {
  for (;;) {
    try {
      const UtcNs now = clock_.utc();
      if (now - history_loaded_ >= kHistoryEveryNs) {
        history_loaded_ = now;
        set_history(load_history(config_.collector.cache_db, now - kHistorySpanNs));
      }
      housekeeping();
    } catch (const std::exception& e) {
      log()->error("housekeeping failed: {}", e.what());
    }
    std::unique_lock lock(mu_);
    if (stopping_) return;
    // Sleep until the next request ends or reverts, a change wakes us, or
    // a quarter of the liveness timeout (nodes die on time).
    std::int64_t wait_ns = std::min<std::int64_t>(
        60'000'000'000, static_cast<std::int64_t>(config_.manager.dead_after_s / 4 * 1e9));
    const UtcNs now = clock_.utc();
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

const UserConfig& RequestBook::user_of(const std::string& name) const {
  static const UserConfig kUnknown{"", {}, Role::user};
  const UserConfig* u = config_.find_user(name);
  return u ? *u : kUnknown;
}

void RequestBook::apply_locked(const Request* before, const Request* after) {
  if (before && after)
    index_.replace(*before, *after);
  else if (before)
    index_.detach(*before);
  else if (after)
    index_.attach(*after);
  admission_.apply(before, after, index_.history());
}

std::optional<ApiFault> RequestBook::check_owner_locked(const Request* before,
                                                        const Request& after) const {
  // The owner's limits apply, also when an admin edits.
  return admission_.check(user_of(after.owner), before, after, index_);
}

AdmissionAnswer RequestBook::admit(const UserConfig& caller, const RequestSpec& spec,
                                   bool dry_run) {
  std::unique_lock store_lock(store_mu_);
  AdmissionAnswer a;
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
    if (auto refusal = admission_.check(caller, nullptr, candidate, index_)) {
      if (!dry_run) throw *refusal;
      a.refusal_code = refusal->code();
      a.refusal = refusal->what();
      return a;
    }
    a.admitted = true;
    if (dry_run) return a;
  }
  // The store assigns the number; the check holds since store_mu_ is held
  // (every change of requests takes it first).
  Request r = store_->add(caller.name, spec, clock_.utc());
  {
    std::lock_guard lock(mu_);
    // The control thread may have resumed streams since the check: check
    // again, so that no budget is ever exceeded.
    if (auto refusal = admission_.check(caller, nullptr, r, index_)) {
      store_->set_state(r.num, RequestState::cancelled);
      throw *refusal;
    }
    auto [it, inserted] = requests_.emplace(r.num, r);
    apply_locked(nullptr, &it->second);
    fleet_.publish_locked();
    wake_ = true;
  }
  cv_.notify_all();
  log()->info("request {} by {}: {} {} {} paths, interval {} s, {:.0f} bit/s alone, +{:.0f} bit/s",
              r.id(), caller.name, tool_name(spec.tool), mode_name(spec.mode), spec.paths.size(),
              spec.interval_s, a.standalone.bps, a.added.bps);
  a.request = std::move(r);
  return a;
}

Request RequestBook::add_request(const std::string& owner, const RequestSpec& spec) {
  UserConfig caller = user_of(owner);
  caller.name = owner;
  return *admit(caller, spec, false).request;
}

std::optional<Request> RequestBook::find(std::uint64_t num) const {
  std::lock_guard lock(mu_);
  auto it = requests_.find(num);
  if (it == requests_.end()) return std::nullopt;
  return it->second;
}

std::vector<Request> RequestBook::list(const std::optional<std::string>& owner) const {
  std::lock_guard lock(mu_);
  std::vector<Request> out;
  for (const auto& [num, r] : requests_)
    if (!owner || r.owner == *owner) out.push_back(r);
  return out;
}

Request RequestBook::cancel(std::uint64_t num, const UserConfig& caller) {
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
  fleet_.forget_locked(num);
  fleet_.publish_locked();
  log()->info("request {} cancelled by {}", r.id(), caller.name);
  return r;
}

Request RequestBook::edit(std::uint64_t num, const UserConfig& caller, const RequestSpec& spec,
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
      back.at_ns = clock_.utc() + static_cast<UtcNs>(*for_s * 1e9);
      updated.revert = back;
    } else {
      updated.revert.reset();  // a lasting edit becomes the new base
    }
    if (auto refusal = check_owner_locked(&r, updated)) throw *refusal;
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
  fleet_.publish_locked();
  wake_ = true;
  cv_.notify_all();
  log()->info("request {} edited by {}{}", r.id(), caller.name,
              for_s ? fmt::format(" for {} s", *for_s) : std::string());
  return r;
}

Cost RequestBook::charged(const Request& r) const {
  std::lock_guard lock(mu_);
  return charged_locked(r);
}

Cost RequestBook::charged_locked(const Request& r) const {
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

Usage RequestBook::usage(const std::string& user) const {
  std::lock_guard lock(mu_);
  Usage u;
  u.user = user;
  u.limits = admission_.limits(user_of(user).role);
  u.budget = admission_.budget(user);
  const Admission::Tally tally = admission_.tally(user);
  u.requests = tally.requests;
  u.paths = tally.paths;
  u.reserved = tally.reserved;
  for (const auto& [num, r] : requests_)
    if (r.owner == user) u.charged += charged_locked(r);
  return u;
}

StreamSets RequestBook::current_streams() const {
  std::lock_guard lock(mu_);
  StreamSets sets;
  for (const auto& n : config_.nodes) sets[n.id] = index_.streams_of(n.id);
  return sets;
}

StreamSets RequestBook::derived_streams() const {
  std::lock_guard lock(mu_);
  std::vector<const Request*> active;
  for (const auto& [num, r] : requests_)
    if (is_active(r)) active.push_back(&r);
  StreamSets sets = derive_streams(active, config_, clock_.utc());
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

Cost RequestBook::global_cost() const {
  std::lock_guard lock(mu_);
  return index_.global();
}

Cost RequestBook::node_cost(const std::string& node) const {
  std::lock_guard lock(mu_);
  return index_.node(node);
}

void RequestBook::set_history(History history) {
  std::lock_guard lock(mu_);
  index_.set_history(std::move(history));
  fleet_.publish_locked();
}

void RequestBook::housekeeping() {
  const UtcNs now = clock_.utc();
  std::lock_guard store_lock(store_mu_);
  std::vector<std::pair<std::uint64_t, RequestState>> changes;
  std::vector<Request> reverted;
  {
    std::lock_guard lock(mu_);
    fleet_.update_liveness_locked();
    for (auto& [num, r] : requests_) {
      if (!is_active(r)) continue;
      if (r.spec.mode == Mode::continuous && r.ends_ns && *r.ends_ns <= now) {
        apply_locked(&r, nullptr);
        r.state = RequestState::expired;
        r.revert.reset();
        changes.emplace_back(num, r.state);
      } else if (r.spec.mode == Mode::oneshot) {
        if (fleet_.delivered_locked(r)) {
          apply_locked(&r, nullptr);
          r.state = RequestState::done;
          fleet_.forget_locked(num);
          changes.emplace_back(num, r.state);
        }
      } else if (r.revert && r.revert->at_ns <= now) {
        Request back = r;
        back.spec = r.revert->spec;
        back.ends_ns = r.revert->ends_ns;
        back.revert.reset();
        if (auto refusal = check_owner_locked(&r, back)) {
          log()->warn("request {}: temporary edit not reverted yet: {}", r.id(), refusal->what());
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
    fleet_.publish_locked();
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

}  // namespace flexmon::manager
