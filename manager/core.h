// The manager's state, shared by the XML-RPC threads, the control channel's
// thread and a housekeeping thread: requests (in memory, written through to
// the request store), node liveness, and the stream sets last assigned to each
// prober. Lock order: store_mu_ before mu_; the control thread takes only mu_
// and never waits on SQLite.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "manager/cost.h"
#include "manager/model.h"
#include "manager/store.h"
#include "manager/streams.h"

namespace flexmon::manager {

enum class Liveness { alive, suspect, dead };
std::string_view liveness_name(Liveness l);
// alive below dead_after_s / 2 since the last contact, suspect below
// dead_after_s, dead after that or when never seen.
Liveness liveness(std::optional<double> seconds_since_contact, double dead_after_s);

struct NodeView {
  std::string id, site, address;
  Liveness state = Liveness::dead;
  std::optional<UtcNs> last_contact;
  double load = 0;
  std::uint32_t streams = 0;  // as reported by the prober's last heartbeat
  // Shortfall from the last heartbeat: what the prober could not run.
  std::uint64_t skipped_slots = 0;
  double shortfall = 0;
  std::uint32_t behind_streams = 0;
  std::uint32_t paused_streams = 0;  // its streams paused (a dead end) or held (budget)
  Cost cost;                         // probe traffic it sends or receives
};

// What probe.request answers (also for a dry run).
struct Admission {
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

// Where assignments go: the control channel. push() is called with the core's
// lock held, so it must only queue (never block, never call back into Core).
class AssignmentSink {
 public:
  virtual ~AssignmentSink() = default;
  virtual void push(const std::string& node, std::uint64_t session,
                    wire::Assignment assignment) = 0;
};

class Core {
 public:
  Core(const Config& config, std::unique_ptr<RequestStore> store);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // Set before start(); may be null (tests).
  void set_sink(AssignmentSink* sink);
  // Starts the housekeeping thread (expiry of requests, one-shots done).
  void start();
  void stop();

  // --- XML-RPC side (may wait on SQLite). Throw ApiFault or SqliteError.
  // Checks the per-user limits and every budget, then stores the request and
  // updates the streams (unless `dry_run`: then only answers).
  Admission admit(const UserConfig& caller, const RequestSpec& spec, bool dry_run);
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
  std::vector<NodeView> nodes() const;

  // --- Control side (never waits on SQLite).
  // A node registered `session`: returns the full set to send to it now.
  wire::Assignment on_register(const std::string& node, std::uint64_t session);
  void on_heartbeat(const std::string& node, const wire::Heartbeat& heartbeat);
  // An assignment was written to the session (ok) or could not be (!ok).
  void on_delivered(const std::string& node, std::uint64_t session, std::uint64_t generation,
                    bool ok);
  void on_disconnect(const std::string& node, std::uint64_t session);

  // Expires requests past their end and finishes delivered one-shots; what
  // the housekeeping thread runs. Public so tests can pass their own time.
  void housekeeping(UtcNs now);

  // The stream sets as they stand, from the incremental index (tests).
  StreamSets current_streams() const;
  // The same, derived from scratch from the requests (the reference).
  StreamSets derived_streams() const;
  // Budget totals now: global and per node (tests, diagnostics).
  Cost global_cost() const;
  Cost node_cost(const std::string& node) const;
  // Replaces the bandwidth history (tests; housekeeping reads the cache).
  void set_history(History history);
  // Marks a node dead or alive as liveness would (tests).
  void set_node_dead_for_test(const std::string& node, bool dead);

 private:
  struct NodeState {
    std::optional<MonoClock::time_point> last_contact_mono;
    std::optional<UtcNs> last_contact_utc;
    double load = 0;
    std::uint32_t streams = 0;
    std::uint64_t skipped_slots = 0;
    double shortfall = 0;
    std::uint32_t behind_streams = 0;
    std::uint64_t session = 0;  // 0: no registered session
  };
  struct Sent {
    std::uint64_t num;
    Path path;
  };
  struct UserState {
    std::size_t requests = 0, paths = 0;
    Cost reserved;
  };

  // Throws ApiFault(4290/4291) naming the limit or budget that `after`
  // (replacing `before`, if any) would break.
  void check_locked(const UserConfig& caller, const Request* before, const Request& after) const;
  void apply_locked(const Request* before, const Request* after);
  Cost charged_locked(const Request& r) const;
  void publish_locked();
  void update_liveness_locked();
  wire::Assignment assignment_locked(const std::string& node);
  void touch_locked(const std::string& node);
  const UserConfig& user_of(const std::string& name) const;
  void run();

  const Config& config_;
  std::unique_ptr<RequestStore> store_;
  mutable std::mutex store_mu_;  // guards store_ and every change of a request's state

  mutable std::mutex mu_;
  std::map<std::uint64_t, Request> requests_;                                   // guarded by mu_
  std::map<std::string, NodeState> nodes_;                                      // guarded by mu_
  std::map<std::string, std::map<std::uint64_t, std::vector<Sent>>> inflight_;  // mu_
  std::map<std::uint64_t, std::set<Path>> delivered_;  // one-shot paths, mu_
  std::uint64_t generation_;                           // mu_
  StreamIndex index_;                                  // mu_
  std::map<std::string, UserState> users_;             // mu_
  std::map<std::uint64_t, Cost> reserved_;             // standalone cost per active request, mu_
  std::set<std::string> forced_dead_;                  // tests, mu_
  MonoClock::time_point started_ = MonoClock::now();
  UtcNs history_loaded_ = 0;
  AssignmentSink* sink_ = nullptr;
  bool stopping_ = false;  // mu_
  bool wake_ = false;      // mu_
  std::condition_variable cv_;
  std::thread worker_;
};

}  // namespace flexmon::manager
