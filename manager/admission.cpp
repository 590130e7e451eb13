#include "manager/admission.h"

#include <fmt/format.h>

namespace flexmon::manager {

namespace {

// A relative tolerance: sums of doubles must not refuse what exactly fits.
bool over(double value, double limit) { return limit > 0 && value > limit * (1 + 1e-9) + 1e-6; }

std::string cost_text(double v) { return fmt::format("{:.0f}", v); }

}  // namespace

Budget user_budget(const Budgets& budgets, const std::string& name) {
  auto it = budgets.users.find(name);
  return it == budgets.users.end() ? budgets.user : it->second;
}

std::optional<std::string> breaks_shared_budget(const Budgets& budgets, const StreamIndex& index,
                                                const StreamIndex::Delta& delta) {
  auto check = [](const std::string& name, const Cost& now, const Cost& d,
                  const Budget& budget) -> std::optional<std::string> {
    if (d.bps > 1e-9 && over(now.bps + d.bps, budget.bps))
      return fmt::format("budget {} bps: {:.0f} bit/s with this change, {:.0f} allowed", name,
                         now.bps + d.bps, budget.bps);
    if (d.bytes_per_day > 1e-9 && over(now.bytes_per_day + d.bytes_per_day, budget.bytes_per_day))
      return fmt::format(
          "budget {} bytes_per_day: {:.0f} bytes/day with this change, {:.0f} allowed", name,
          now.bytes_per_day + d.bytes_per_day, budget.bytes_per_day);
    return std::nullopt;
  };
  if (auto why = check("global", index.global(), delta.global, budgets.global)) return why;
  for (const auto& [id, d] : delta.nodes)
    if (auto why = check("node " + id, index.node(id), d, budgets.node)) return why;
  return std::nullopt;
}

Admission::Admission(const Config& config) : config_(config) {}

std::optional<ApiFault> Admission::check(const UserConfig& owner, const Request* before,
                                         const Request& after, const StreamIndex& index) const {
  // The owner's tallies without `before`, which `after` replaces.
  Tally u = tally(after.owner);
  if (before) {
    u.requests -= 1;
    u.paths -= before->spec.paths.size();
    if (auto r = reserved_.find(before->num); r != reserved_.end()) u.reserved -= r->second;
  }

  const EffectiveLimits limits = config_.limits_for(owner.role);
  const std::string role = role_name(owner.role);
  if (u.requests + 1 > limits.max_requests_per_user)
    return ApiFault(kLimitExceeded,
                    fmt::format("limit max_requests_per_user: {} active requests with this one, {} "
                                "allowed (role {})",
                                u.requests + 1, limits.max_requests_per_user, role));
  if (u.paths + after.spec.paths.size() > limits.max_paths_per_user)
    return ApiFault(
        kLimitExceeded,
        fmt::format("limit max_paths_per_user: {} paths with this request, {} allowed "
                    "(role {})",
                    u.paths + after.spec.paths.size(), limits.max_paths_per_user, role));

  // The user budget counts what the owner's requests would cost alone.
  const Budget budget = user_budget(config_.budgets, after.owner);
  const Cost total = u.reserved + standalone_cost(after.spec, &index.history());
  if (over(total.bps, budget.bps))
    return ApiFault(kBudgetExceeded,
                    fmt::format("budget user {} bps: {} bit/s with this request, {} allowed",
                                after.owner, cost_text(total.bps), cost_text(budget.bps)));
  if (over(total.bytes_per_day, budget.bytes_per_day))
    return ApiFault(
        kBudgetExceeded,
        fmt::format("budget user {} bytes_per_day: {} bytes/day with this request, {} "
                    "allowed",
                    after.owner, cost_text(total.bytes_per_day), cost_text(budget.bytes_per_day)));

  // The shared budgets count what the running streams add, after sharing.
  if (auto why = breaks_shared_budget(config_.budgets, index, index.simulate(before, &after)))
    return ApiFault(kBudgetExceeded, *why);
  return std::nullopt;
}

void Admission::apply(const Request* before, const Request* after, const History& history) {
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
    Cost c = standalone_cost(after->spec, &history);
    reserved_[after->num] = c;
    u.reserved += c;
  }
}

Admission::Tally Admission::tally(const std::string& user) const {
  auto it = users_.find(user);
  return it == users_.end() ? Tally{} : it->second;
}

}  // namespace flexmon::manager
