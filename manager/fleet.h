// The fleet: the probers as the manager sees them. Liveness (from the last
// contact), what the control channel reports (registrations, heartbeats,
// deliveries, disconnects), and delivery of assignments: each prober whose
// running set changed gets its full set, one-shot streams are handed out
// once and count as delivered only when written to the prober's session.
//
// The fleet shares the request book's state lock (manager/request_book.h):
// the control-side calls below take it and never wait on SQLite; the
// `_locked` ones are for the book, which holds it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "manager/cost.h"
#include "manager/model.h"
#include "manager/streams.h"
#include "wire.pb.h"

namespace flexmon::manager {

enum class Liveness { alive, suspect, dead };
std::string_view liveness_name(Liveness l);
// alive below dead_after_s / 2 since the last contact, suspect below
// dead_after_s, dead after that or when never seen.
Liveness liveness(std::optional<double> seconds_since_contact, double dead_after_s);

// A node as node.list shows it.
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

// Where assignments go: the control channel. push() is called with the state
// lock held, so it must only queue (never block, never call back).
class AssignmentSink {
 public:
  virtual ~AssignmentSink() = default;
  virtual void push(const std::string& node, std::uint64_t session,
                    wire::Assignment assignment) = 0;
};

class Fleet {
 public:
  // `mu` guards `requests` and `index` (the book's); `wake_housekeeping` is
  // called, without the lock, when a one-shot request got every path
  // delivered (the book's housekeeping marks it done).
  Fleet(const Config& config, const TimeSource& clock, std::mutex& mu, RequestMap& requests,
        StreamIndex& index, std::function<void()> wake_housekeeping);

  // Set before the control channel starts; may be null (tests).
  void set_sink(AssignmentSink* sink);

  // --- Control side (takes the lock; never waits on SQLite).
  // A node registered `session`: returns the full set to send to it now.
  wire::Assignment on_register(const std::string& node, std::uint64_t session);
  void on_heartbeat(const std::string& node, const wire::Heartbeat& heartbeat);
  // An assignment was written to the session (ok) or could not be (!ok).
  void on_delivered(const std::string& node, std::uint64_t session, std::uint64_t generation,
                    bool ok);
  void on_disconnect(const std::string& node, std::uint64_t session);

  // Every configured node as node.list shows it (takes the lock).
  std::vector<NodeView> nodes() const;

  // --- For the book, with the lock held.
  // Sends each prober whose running set changed its new set.
  void publish_locked();
  // Pauses the streams of nodes not heard from for dead_after_s.
  void update_liveness_locked();
  // Whether every path of one-shot request `r` was delivered.
  bool delivered_locked(const Request& r) const;
  // Forgets the deliveries of a request that finished.
  void forget_locked(std::uint64_t num);

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
  // A one-shot path in an assignment not yet written.
  struct Sent {
    std::uint64_t num;
    Path path;
  };

  wire::Assignment assignment_locked(const std::string& node);
  void touch_locked(const std::string& node);

  const Config& config_;
  const TimeSource& clock_;
  std::mutex& mu_;
  RequestMap& requests_;  // mu_
  StreamIndex& index_;    // mu_
  std::function<void()> wake_housekeeping_;
  const MonoClock::time_point started_;
  // All guarded by mu_:
  std::map<std::string, NodeState> nodes_;
  std::map<std::string, std::map<std::uint64_t, std::vector<Sent>>> inflight_;  // node, generation
  std::map<std::uint64_t, std::set<Path>> delivered_;  // one-shot paths per request
  std::uint64_t generation_;
  AssignmentSink* sink_ = nullptr;
};

}  // namespace flexmon::manager
