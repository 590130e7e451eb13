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
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "manager/model.h"
#include "manager/store.h"

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
  Request add_request(const std::string& owner, const RequestSpec& spec);
  std::optional<Request> find(std::uint64_t num) const;
  // The requests of `owner`, or all of them when nullopt; oldest first.
  std::vector<Request> list(const std::optional<std::string>& owner) const;
  // Cancels an active request of the caller (an admin may cancel any).
  // Returns the request as it is now; a finished one is returned unchanged.
  Request cancel(std::uint64_t num, const UserConfig& caller);
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

  // The stream sets as last derived (tests, diagnostics).
  StreamSets current_streams() const;

 private:
  struct NodeState {
    std::optional<MonoClock::time_point> last_contact_mono;
    std::optional<UtcNs> last_contact_utc;
    double load = 0;
    std::uint32_t streams = 0;
    std::uint64_t session = 0;  // 0: no registered session
    std::string fingerprint;    // of the continuous streams last assigned
  };
  struct Sent {
    std::uint64_t num;
    Path path;
  };

  StreamSets derive_locked(UtcNs now) const;
  void recompute_locked(UtcNs now);
  wire::Assignment assignment_locked(const std::string& node, std::vector<wire::Stream> streams);
  void touch_locked(const std::string& node);
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
  AssignmentSink* sink_ = nullptr;
  bool stopping_ = false;  // mu_
  bool wake_ = false;      // mu_
  std::condition_variable cv_;
  std::thread worker_;
};

}  // namespace flexmon::manager
