// Admission: every per-user limit and every bandwidth budget a request must
// fit, in one place (schemas/xmlrpc-api.md, "Limits" and "Costs and
// budgets"). check() is the one yes-or-no with the fault; the tallies it
// reads (each user's active requests, paths and reserved cost) are kept here
// too. The per-request bounds (interval, duration, paths per request, tool
// arguments, netns) are checked when a spec is parsed (manager/spec.h).
// Not thread-safe: the request book holds its lock (manager/request_book.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/config.h"
#include "manager/cost.h"
#include "manager/fault_codes.h"
#include "manager/model.h"
#include "manager/streams.h"

namespace flexmon::manager {

// The budget of user `name`: budgets.users[name], else budgets.user.
Budget user_budget(const Budgets& budgets, const std::string& name);

// Whether the shared budgets (global, each node) hold with `delta` added to
// what `index` counts now: nullopt, or which one breaks, as
// "budget NAME: VALUE UNIT with this change, LIMIT allowed". The stream
// index asks it too, before a held stream resumes.
std::optional<std::string> breaks_shared_budget(const Budgets& budgets, const StreamIndex& index,
                                                const StreamIndex::Delta& delta);

class Admission {
 public:
  explicit Admission(const Config& config);

  // A user's tallies over their active requests.
  struct Tally {
    std::size_t requests = 0, paths = 0;
    Cost reserved;  // the sum of the requests' standalone costs
  };

  // Whether `after` may replace `before` (null: a new request) for its
  // owner, whose role is `owner.role`: nullopt (yes), or the fault naming
  // the limit or budget it would break (4290 a limit, 4291 a budget).
  // In this order: max_requests_per_user, max_paths_per_user, the user's
  // budget (bps, then bytes_per_day, of what the owner's requests cost
  // alone), then the global and node budgets (what the streams add after
  // sharing, `index` simulating the change).
  std::optional<ApiFault> check(const UserConfig& owner, const Request* before,
                                const Request& after, const StreamIndex& index) const;

  // Records that `after` replaced `before` (either may be null) in the
  // tallies; `history` prices the standalone cost.
  void apply(const Request* before, const Request* after, const History& history);

  Tally tally(const std::string& user) const;
  EffectiveLimits limits(Role role) const { return config_.limits_for(role); }
  Budget budget(const std::string& user) const { return user_budget(config_.budgets, user); }

 private:
  const Config& config_;
  std::map<std::string, Tally> users_;
  std::map<std::uint64_t, Cost> reserved_;  // standalone cost per active request
};

}  // namespace flexmon::manager
