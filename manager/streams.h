// The stream index: the streams derived from the active requests, kept up
// to date incrementally (a request's paths are attached or detached one by
// one), with the cost totals of the budgets (global and per node) and the
// probers whose stream sets changed. derive_streams() in model.h is the
// reference it must always agree with (tests check it). The budgets a held
// stream must fit to resume are admission's (manager/admission.h). Not
// thread-safe: the request book holds its lock (manager/request_book.h).
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/config.h"
#include "manager/cost.h"
#include "manager/model.h"

namespace flexmon::manager {

class StreamIndex {
 public:
  explicit StreamIndex(const Config& config);

  // Totals change by this when a change is applied: the global total and
  // each touched node's (as the source or destination).
  struct Delta {
    Cost global;
    std::map<std::string, Cost> nodes;
  };

  // What replacing `before` by `after` would change (either may be null:
  // admission has no before, cancel no after). Pure.
  Delta simulate(const Request* before, const Request* after) const;

  // Attaches or detaches every path of `r` that maps to a stream (one-shot
  // paths already sent are skipped).
  void attach(const Request& r);
  void detach(const Request& r);
  // `before` becomes `after` (an edit) in one step, as the admission check
  // simulated it: a kept stream that is held stays held, and other held
  // streams get the chance to resume only after the swap, never on the
  // budget `before` frees for a moment.
  void replace(const Request& before, const Request& after);
  // One path only (a one-shot handed to its prober, or handed back).
  void attach_path(const Request& r, const Path& path);
  void detach_path(const Request& r, const Path& path);
  // A one-shot stream handed to its prober leaves the index without marking
  // the prober dirty (its next assignment simply omits it).
  void detach_sent(const Request& r, const Path& path);

  // A node died or came back: its streams pause (and stop counting) or
  // resume; a stream that would break a budget when resuming stays held,
  // and held streams resume, highest priority first, when budget frees.
  void set_dead(const std::string& node, bool dead);
  bool dead(const std::string& node) const { return dead_.contains(node); }

  // New costs of the bandwidth tools from the cache's history.
  void set_history(History history);
  const History& history() const { return history_; }

  // The running (not paused) streams of prober `node`, sorted by key.
  std::vector<wire::Stream> streams_of(const std::string& node) const;
  // Probers whose running set changed since the last call.
  std::set<std::string> take_dirty();

  Cost global() const { return global_; }
  Cost node(const std::string& id) const;
  std::size_t size() const { return streams_.size(); }
  std::size_t paused() const;
  std::size_t paused_on(const std::string& node) const;

  // The rate share (Shapley, see cost.h) of request `num` in the stream of
  // `key`, as a cost; zero when the stream is paused or absent.
  Cost charged(const std::string& key, std::uint64_t num) const;
  // The number of requests sharing the stream of `key` (0 if none).
  std::size_t sharers(const std::string& key) const;

 private:
  struct Sharer {
    double interval = 0;
    std::int32_t priority = 0;
  };
  struct Entry {
    wire::Stream stream;  // interval and priority are the merged ones
    std::map<std::uint64_t, Sharer> sharers;
    double bytes = 0;   // per measurement
    Cost counted;       // what this stream adds to the totals now
    bool held = false;  // both ends alive but over a budget
  };

  void attach_key(const Request& r, const Path& path, bool oneshot);
  void detach_key(const Request& r, const Path& path, bool oneshot);
  // Recomputes an entry's merged interval/priority and counted cost and
  // marks its prober dirty if what it runs changed.
  void refresh(const std::string& key, Entry& e, bool was_running, double old_interval,
               std::int32_t old_priority);
  bool running(const Entry& e) const;
  bool endpoints_alive(const Entry& e) const;
  void account(Entry& e);
  void retry_held();

  const Config& config_;
  std::unordered_set<std::string> known_;  // configured node ids
  std::unordered_map<std::string, Entry> streams_;
  std::map<std::string, std::set<std::string>> by_src_;   // node -> keys it runs
  std::map<std::string, std::set<std::string>> by_node_;  // node -> keys from or to it
  std::set<std::string> dead_;
  std::set<std::string> held_;
  std::set<std::string> dirty_;
  bool quiet_ = false;  // detach_sent() in progress
  History history_;
  Cost global_;
  std::map<std::string, Cost> node_cost_;
};

}  // namespace flexmon::manager
