// The request book: every request, in memory and written through to the
// request store (manager/store.h), and the life cycle of each one: admit
// (after admission's check, manager/admission.h), edit (also temporarily),
// cancel, expire at its end, done when a one-shot was delivered. Each change
// updates the stream index, and the fleet (manager/fleet.h) sends the
// probers whose sets changed their new sets.
//
// Threads and locks: the XML-RPC threads call the book; the control
// channel's thread calls the fleet; the daemon's housekeeping thread runs
// run_housekeeping(). store_mu_ serialises every change of a request and the
// store (SQLite); mu_ guards the in-memory state (requests, stream index,
// admission's tallies, the fleet). Lock order: store_mu_ before mu_; the
// control thread takes only mu_ and never waits on SQLite.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "manager/admission.h"
#include "manager/cost.h"
#include "manager/fleet.h"
#include "manager/model.h"
#include "manager/store.h"
#include "manager/streams.h"

namespace flexmon::manager {

// What probe.request answers (also for a dry run).
struct AdmissionAnswer {
  bool admitted = false;           // a dry run: whether it would be
  std::optional<Request> request;  // the stored request (not for a dry run)
  std::size_t paths = 0;
  std::size_t new_streams = 0;     // streams this request creates
  std::size_t shared_streams = 0;  // existing streams it joins
  Cost standalone;                 // what it costs alone: counted against the user budget
  Cost added;                      // what the global total grows by, after deduplication
  int refusal_code = 0;            // a dry run that would be refused: the fault
  std::string refusal;
};

// A user's use of each limit, now (user.usage).
struct Usage {
  std::string user;
  std::size_t requests = 0, paths = 0;
  EffectiveLimits limits{};
  Cost reserved;  // sum of standalone costs of the active requests
  Cost charged;   // shares of the running streams (charging rule, cost.h)
  Budget budget;
};

class RequestBook {
 public:
  // Loads every stored request; `clock` is read for creation times,
  // temporary edits, expiries and liveness.
  RequestBook(const Config& config, std::unique_ptr<RequestStore> store, TimeSource clock = {});
  RequestBook(const RequestBook&) = delete;
  RequestBook& operator=(const RequestBook&) = delete;

  // The probers, for the control channel and node.list.
  Fleet& fleet() { return fleet_; }
  const Fleet& fleet() const { return fleet_; }

  // --- XML-RPC side (may wait on SQLite). Throw ApiFault or SqliteError.
  // Admission's check, then stores the request and updates the streams
  // (unless `dry_run`: then only answers).
  AdmissionAnswer admit(const UserConfig& caller, const RequestSpec& spec, bool dry_run);
  // admit() for the user named `owner` (role from the config; tests).
  Request add_request(const std::string& owner, const RequestSpec& spec);
  std::optional<Request> find(std::uint64_t num) const;
  // The requests of `owner`, or all of them when nullopt; oldest first.
  std::vector<Request> list(const std::optional<std::string>& owner) const;
  // Cancels an active request of the caller (an admin may cancel any).
  // Returns the request as it is now; a finished one is returned unchanged.
  Request cancel(std::uint64_t num, const UserConfig& caller);
  // Replaces an active request's spec (same paths and tool) after the same
  // checks as admit(); with `for_s`, it returns to the spec it had before the
  // first of its pending temporary edits after that many seconds.
  Request edit(std::uint64_t num, const UserConfig& caller, const RequestSpec& spec,
               std::optional<double> for_s);
  Usage usage(const std::string& user) const;
  // The cost model's view of one request: its share of each running stream.
  Cost charged(const Request& r) const;

  // --- Housekeeping.
  // One round at the clock's time: liveness, then requests past their end
  // expire, delivered one-shots are done, temporary edits over revert.
  void housekeeping();
  // The housekeeping thread's body: a round, the bandwidth history read
  // from the cache every minute, sleeping until the next end or revert, a
  // change, or a quarter of the liveness timeout; returns after
  // stop_housekeeping(). The daemon assembly runs it on its own thread.
  void run_housekeeping();
  void stop_housekeeping();

  // The stream sets as they stand, from the incremental index (tests).
  StreamSets current_streams() const;
  // The same, derived from scratch from the requests (the reference).
  StreamSets derived_streams() const;
  // Budget totals now: global and per node (tests, diagnostics).
  Cost global_cost() const;
  Cost node_cost(const std::string& node) const;
  // Replaces the bandwidth history (housekeeping reads it from the cache).
  void set_history(History history);

 private:
  // Applies the change of `before` into `after` (either null) to the
  // stream index and admission's tallies.
  void apply_locked(const Request* before, const Request* after);
  Cost charged_locked(const Request& r) const;
  // admission_.check() for the owner of `after` as the config knows them.
  std::optional<ApiFault> check_owner_locked(const Request* before, const Request& after) const;
  const UserConfig& user_of(const std::string& name) const;
  void wake_housekeeping();

  const Config& config_;
  const TimeSource clock_;
  std::unique_ptr<RequestStore> store_;
  mutable std::mutex store_mu_;  // guards store_ and every change of a request's state

  mutable std::mutex mu_;
  RequestMap requests_;       // mu_
  StreamIndex index_;         // mu_
  Admission admission_;       // mu_
  Fleet fleet_;               // mu_ (its control-side calls take it)
  UtcNs history_loaded_ = 0;  // housekeeping thread only
  bool stopping_ = false;     // mu_
  bool wake_ = false;         // mu_
  std::condition_variable cv_;
};

}  // namespace flexmon::manager
