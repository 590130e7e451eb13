// Sharing safely: limits and budgets refused with their documented faults,
// the charging rule, liveness pauses, restart, and randomized invariants
// over many request sequences (admit, edit, cancel, expire, nodes dying):
// no budget ever exceeded, every active request served at its interval or
// faster, no stream without a request, and the incremental stream index
// always equal to a derivation from scratch.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "manager/cost.h"
#include "manager/fault_codes.h"
#include "manager/request_book.h"
#include "tests/manager/test_config.h"

namespace flexmon::manager {
namespace {

RequestSpec spec(double interval, std::vector<Path> paths, Tool tool = Tool::kLatency) {
  RequestSpec s;
  s.tool = tool;
  s.interval_s = interval;
  s.paths = std::move(paths);
  return s;
}

// The bit rate of one default latency stream every `interval` seconds.
double latency_bps(double interval) { return 2.0 * 5 * (64 + 28) * 8 / interval; }

int fault_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const ApiFault& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return 0;
}

struct Lab {
  std::filesystem::path dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  testing::SteppedClock clock;
  std::unique_ptr<RequestBook> book;
  Lab() { config.limits.max_paths_per_request = 100; }
  std::set<std::string> dead;
  void open() {
    book = std::make_unique<RequestBook>(config, std::make_unique<RequestStore>(dir / "s.db"),
                                         clock.clock());
    dead.clear();
  }
  // Kills or revives `node` as liveness does: a node not heard from for
  // dead_after_s is dead (the others send heartbeats meanwhile); a
  // heartbeat brings it back.
  void set_dead(const std::string& node, bool is_dead) {
    if (!is_dead) {
      dead.erase(node);
      book->fleet().on_heartbeat(node, {});
      return;
    }
    dead.insert(node);
    clock.mono += std::chrono::duration_cast<MonoClock::duration>(
        std::chrono::duration<double>(config.manager.dead_after_s));
    for (const auto& n : config.nodes)
      if (!dead.contains(n.id)) book->fleet().on_heartbeat(n.id, {});
    book->housekeeping();
  }
  const UserConfig& bob() const { return *config.find_user("bob"); }
  const UserConfig& alice() const { return *config.find_user("alice"); }
};

TEST(ChargingRule, SharesAddUpToTheFastestAndNeverExceedOnesOwnRate) {
  // 10 s, 5 s, 5 s: layer 0.1 split 3 ways, layer 0.1 split 2 ways.
  auto shares = shared_rates({0.1, 0.2, 0.2});
  EXPECT_NEAR(shares[0], 0.1 / 3, 1e-12);
  EXPECT_NEAR(shares[1], 0.1 / 3 + 0.05, 1e-12);
  EXPECT_NEAR(shares[2], shares[1], 1e-12);
  EXPECT_NEAR(shares[0] + shares[1] + shares[2], 0.2, 1e-12);
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::vector<double> rates(1 + rng() % 8);
    for (auto& r : rates) r = 1.0 / (1 + rng() % 60);
    auto s = shared_rates(rates);
    double sum = 0, top = 0;
    for (std::size_t i = 0; i < rates.size(); ++i) {
      EXPECT_LE(s[i], rates[i] + 1e-12);
      EXPECT_GT(s[i], 0);
      sum += s[i];
      top = std::max(top, rates[i]);
    }
    EXPECT_NEAR(sum, top, 1e-9);
  }
}

TEST(ChargingRule, TheBookChargesSharersByTheRule) {
  Lab lab;
  lab.open();
  auto a = lab.book->add_request("alice", spec(10, {{"n1", "n2"}}));
  auto b = lab.book->add_request("bob", spec(5, {{"n1", "n2"}}));
  const double stream = latency_bps(5);
  EXPECT_NEAR(lab.book->global_cost().bps, stream, 1e-6);
  const double ca = lab.book->charged(*lab.book->find(a.num)).bps;
  const double cb = lab.book->charged(*lab.book->find(b.num)).bps;
  EXPECT_NEAR(ca, latency_bps(10) / 2, 1e-6);
  EXPECT_NEAR(ca + cb, stream, 1e-6);
  // Usage: reserved is what each request costs alone.
  EXPECT_NEAR(lab.book->usage("alice").reserved.bps, latency_bps(10), 1e-6);
  EXPECT_NEAR(lab.book->usage("bob").charged.bps, cb, 1e-6);
  lab.book->cancel(b.num, lab.bob());
  EXPECT_NEAR(lab.book->charged(*lab.book->find(a.num)).bps, latency_bps(10), 1e-6);
}

TEST(CostModel, ArgumentsAndHistory) {
  RequestSpec abw = spec(60, {{"n1", "n2"}}, Tool::kAbw);
  abw.abw = {8'000'000, 5'000'000, 1000};  // 1 MB by rate x duration, below max_bytes
  EXPECT_DOUBLE_EQ(measurement_bytes(abw, abw.paths[0], nullptr), 1'000'000);
  History h{{{"abw", "n1", "n2"}, 250'000}};
  EXPECT_DOUBLE_EQ(measurement_bytes(abw, abw.paths[0], &h), 250'000);
  h[{"abw", "n1", "n2"}] = 9e9;  // never above the arguments' bound
  EXPECT_DOUBLE_EQ(measurement_bytes(abw, abw.paths[0], &h), 1'000'000);
  RequestSpec tp = spec(300, {{"n1", "n2"}}, Tool::kThroughput);
  EXPECT_DOUBLE_EQ(measurement_bytes(tp, tp.paths[0], nullptr), 10'000'000);
  RequestSpec tcp = spec(10, {{"n1", "n2"}});
  tcp.latency.method = "tcp";
  EXPECT_DOUBLE_EQ(measurement_bytes(tcp, tcp.paths[0], nullptr), 5 * kTcpProbeBytes);
  auto c = cost_of(1000, 10);
  EXPECT_DOUBLE_EQ(c.bps, 800);
  EXPECT_DOUBLE_EQ(c.bytes_per_day, 8'640'000);

  // The book uses the history: a throughput path that carried 1 MB costs that.
  Lab lab;
  lab.open();
  lab.book->add_request("bob", tp);
  EXPECT_NEAR(lab.book->global_cost().bps, 10e6 * 8 / 300, 1e-6);
  lab.book->set_history({{{"throughput", "n1", "n2"}, 1e6}});
  EXPECT_NEAR(lab.book->global_cost().bps, 1e6 * 8 / 300, 1e-6);
}

TEST(Limits, EachIsRefusedWithItsDocumentedFault) {
  Lab lab;
  lab.config.limits.max_requests_per_user = 2;
  lab.config.limits.max_paths_per_user = 3;
  lab.config.budgets.user.bps = latency_bps(1) * 10;
  lab.config.budgets.global.bps = latency_bps(1) * 12;
  lab.config.budgets.node.bps = latency_bps(1) * 8;
  lab.config.limits.admin.max_requests_per_user = 50;
  lab.config.limits.admin.max_paths_per_user = 50;
  lab.config.budgets.users["alice"] = {latency_bps(1) * 100, 0};
  lab.open();
  std::string message;
  RequestBook& book = *lab.book;

  book.add_request("bob", spec(10, {{"n1", "n2"}}));
  book.add_request("bob", spec(10, {{"n2", "n1"}}));
  EXPECT_EQ(fault_of(
                [&] {
                  book.add_request("bob", spec(10, {{"n1", "n3"}}));
                },
                &message),
            kLimitExceeded);
  EXPECT_EQ(message,
            "limit max_requests_per_user: 3 active requests with this one, 2 allowed (role user)");
  // A dry run says the same without throwing, and admits nothing.
  auto dry = book.admit(lab.bob(), spec(10, {{"n1", "n3"}}), true);
  EXPECT_FALSE(dry.admitted);
  EXPECT_EQ(dry.refusal_code, kLimitExceeded);
  EXPECT_EQ(book.list(std::string("bob")).size(), 2u);

  lab.config.limits.max_requests_per_user = 10;
  EXPECT_EQ(fault_of(
                [&] {
                  book.add_request("bob", spec(10, {{"n1", "n3"}, {"n3", "n1"}}));
                },
                &message),
            kLimitExceeded);
  EXPECT_EQ(message, "limit max_paths_per_user: 4 paths with this request, 3 allowed (role user)");

  // User budget: what bob's requests cost alone (2 paths at 10 s so far).
  EXPECT_EQ(fault_of([&] { book.add_request("bob", spec(1, {{"n3", "n2"}})); }, &message), 0);
  lab.config.limits.max_paths_per_user = 10;
  EXPECT_EQ(fault_of([&] { book.add_request("bob", spec(1, {{"n3", "n1"}, {"n1", "n3"}})); }), 0);
  // bob: 0.2 + 3 = 3.2 units; 6 paths at 1.4 units would be 11.6 > 10.
  lab.config.limits.max_paths_per_user = 20;
  std::vector<Path> six = {{"n1", "n2"}, {"n2", "n1"}, {"n2", "n3"},
                           {"n3", "n2"}, {"n1", "n3"}, {"n3", "n1"}};
  auto seven = spec(1, six);
  seven.latency.count = 7;
  EXPECT_EQ(fault_of([&] { book.add_request("bob", seven); }, &message), kBudgetExceeded);
  EXPECT_TRUE(message.starts_with("budget user bob bps: ")) << message;
  EXPECT_NE(message.find("bit/s with this request"), std::string::npos) << message;

  // Node budget: n3 carries 3 units (n3>n2, n3>n1, n1>n3 at 1 s); alice
  // (large user budget) adds 8 more on n3: 11 > 8.
  lab.config.budgets.global.bps = 0;  // unlimited for this step
  EXPECT_EQ(fault_of(
                [&] {
                  auto s = spec(1, {{"n1", "n3"}, {"n3", "n1"}});
                  s.latency.count = 20;  // another stream: 4 units per path
                  book.add_request("alice", s);
                },
                &message),
            kBudgetExceeded);
  EXPECT_TRUE(message.starts_with("budget node n")) << message;

  // Global budget: 12 units; a new 1 s stream of 50 packets adds 10.
  lab.config.budgets.global.bps = latency_bps(1) * 12;
  lab.config.budgets.node.bps = 0;
  auto big = spec(1, {{"n1", "n2"}});
  big.latency.count = 50;
  EXPECT_EQ(fault_of([&] { book.add_request("alice", big); }, &message), kBudgetExceeded);
  EXPECT_TRUE(message.starts_with("budget global bps: ")) << message;
  EXPECT_LE(book.global_cost().bps, lab.config.budgets.global.bps * (1 + 1e-9));
}

TEST(Liveness, StreamsOfADeadNodePauseStopCountingAndResume) {
  Lab lab;
  lab.config.budgets.global.bps = latency_bps(1) * 2.5;
  lab.open();
  RequestBook& book = *lab.book;
  book.add_request("bob", spec(1, {{"n1", "n2"}, {"n2", "n3"}}));
  EXPECT_NEAR(book.global_cost().bps, 2 * latency_bps(1), 1e-6);
  lab.set_dead("n1", true);
  EXPECT_TRUE(book.current_streams()["n1"].empty());
  EXPECT_EQ(book.current_streams()["n2"].size(), 1u);
  EXPECT_NEAR(book.global_cost().bps, latency_bps(1), 1e-6);
  // The freed budget can be used meanwhile...
  book.add_request("alice", spec(1, {{"n3", "n2"}}));
  EXPECT_NEAR(book.global_cost().bps, 2 * latency_bps(1), 1e-6);
  // ...and then the returning node's stream is held, not over the budget.
  lab.set_dead("n1", false);
  EXPECT_TRUE(book.current_streams()["n1"].empty());
  EXPECT_LE(book.global_cost().bps, lab.config.budgets.global.bps);
  auto nodes = book.fleet().nodes();
  EXPECT_EQ(nodes[0].paused_streams, 1u);
  // Once budget frees, it resumes.
  for (const auto& r : book.list(std::string("alice"))) book.cancel(r.num, lab.alice());
  EXPECT_EQ(book.current_streams()["n1"].size(), 1u);
}

// An edit swaps a request's streams in one step: a held stream must not
// resume on the budget the old version frees for a moment (the admission
// check simulated the swap with the held stream still held).
TEST(Edit, HeldStreamDoesNotResumeOnTheBudgetAnEditFreesForAMoment) {
  Lab lab;
  lab.config.budgets.node.bps = latency_bps(1) * 2;
  lab.open();
  RequestBook& book = *lab.book;
  auto a = book.add_request("alice", spec(1, {{"n1", "n2"}}));
  book.add_request("bob", spec(1, {{"n1", "n3"}}));
  lab.set_dead("n3", true);
  book.add_request("bob", spec(1, {{"n2", "n1"}}));
  lab.set_dead("n3", false);  // n1 is full: n1 -> n3 stays held
  ASSERT_NEAR(book.node_cost("n1").bps, 2 * latency_bps(1), 1e-6);

  RequestSpec same_cost = a.spec;
  same_cost.priority = 3;
  book.edit(a.num, lab.alice(), same_cost, std::nullopt);
  EXPECT_LE(book.node_cost("n1").bps, lab.config.budgets.node.bps * (1 + 1e-9));
  book.edit(a.num, lab.alice(), a.spec, 60.0);
  lab.clock.utc_ns += 61'000'000'000;  // the temporary edit reverts
  book.housekeeping();
  EXPECT_LE(book.node_cost("n1").bps, lab.config.budgets.node.bps * (1 + 1e-9));
  EXPECT_EQ(book.fleet().nodes()[0].paused_streams, 1u);
}

// Editing the only request of a stream held for budget keeps it held: the
// admission check does not count held streams, so the edit must not start it.
TEST(Edit, AStreamHeldForBudgetStaysHeldWhenItsRequestIsEdited) {
  Lab lab;
  lab.config.budgets.node.bps = latency_bps(1) * 2;
  lab.open();
  RequestBook& book = *lab.book;
  book.add_request("alice", spec(1, {{"n1", "n2"}}));
  book.add_request("alice", spec(1, {{"n2", "n1"}}));
  lab.set_dead("n3", true);
  auto held = book.add_request("bob", spec(10, {{"n1", "n3"}}));
  lab.set_dead("n3", false);  // n1 is full: n1 -> n3 is held
  ASSERT_EQ(book.fleet().nodes()[0].paused_streams, 1u);

  RequestSpec faster = held.spec;
  faster.interval_s = 5;
  book.edit(held.num, lab.bob(), faster, std::nullopt);
  EXPECT_LE(book.node_cost("n1").bps, lab.config.budgets.node.bps * (1 + 1e-9));
  EXPECT_EQ(book.fleet().nodes()[0].paused_streams, 1u);
}

TEST(Edit, TemporaryChangeRevertsAndSurvivesRestart) {
  Lab lab;
  lab.open();
  auto r = lab.book->add_request("bob", spec(30, {{"n1", "n2"}}));
  RequestSpec faster = r.spec;
  faster.interval_s = 2;
  faster.priority = 5;
  auto edited = lab.book->edit(r.num, lab.bob(), faster, 600.0);
  ASSERT_TRUE(edited.revert);
  EXPECT_EQ(lab.book->current_streams()["n1"][0].interval_s(), 2);
  EXPECT_EQ(lab.book->current_streams()["n1"][0].priority(), 5);
  const UtcNs at = edited.revert->at_ns;
  // A second temporary edit still returns to the original.
  faster.interval_s = 1;
  edited = lab.book->edit(r.num, lab.bob(), faster, 60.0);
  EXPECT_EQ(edited.revert->spec.interval_s, 30);

  lab.book.reset();  // manager restart
  lab.open();
  auto back = lab.book->find(r.num);
  ASSERT_TRUE(back && back->revert);
  EXPECT_EQ(back->spec.interval_s, 1);
  EXPECT_EQ(back->revert->spec.interval_s, 30);
  EXPECT_EQ(lab.book->current_streams()["n1"][0].interval_s(), 1);
  lab.clock.utc_ns = at + 1;
  lab.book->housekeeping();
  EXPECT_EQ(lab.book->find(r.num)->spec.interval_s, 30);
  EXPECT_FALSE(lab.book->find(r.num)->revert);
  EXPECT_EQ(lab.book->current_streams()["n1"][0].interval_s(), 30);
  EXPECT_EQ(lab.book->current_streams()["n1"][0].priority(), 0);
  // Persisted too.
  lab.book.reset();
  lab.open();
  EXPECT_EQ(lab.book->find(r.num)->spec.interval_s, 30);
  EXPECT_FALSE(lab.book->find(r.num)->revert);
}

TEST(Edit, BudgetsAndOwnershipApply) {
  Lab lab;
  lab.config.budgets.user.bps = latency_bps(5);
  lab.open();
  auto r = lab.book->add_request("bob", spec(10, {{"n1", "n2"}}));
  RequestSpec s = r.spec;
  s.interval_s = 1;
  EXPECT_EQ(fault_of([&] { lab.book->edit(r.num, lab.bob(), s, std::nullopt); }), kBudgetExceeded);
  EXPECT_EQ(lab.book->find(r.num)->spec.interval_s, 10);
  UserConfig carol{"carol", {}, Role::user};
  EXPECT_EQ(fault_of([&] { lab.book->edit(r.num, carol, s, std::nullopt); }), kNotPermitted);
  s.interval_s = 5;
  EXPECT_EQ(lab.book->edit(r.num, lab.alice(), s, std::nullopt).spec.interval_s, 5);
}

// Stream sets compared by what probers run: key, interval, priority.
std::map<std::string, std::pair<double, int>> flat(const StreamSets& sets) {
  std::map<std::string, std::pair<double, int>> out;
  for (const auto& [node, streams] : sets)
    for (const auto& s : streams) out[s.key()] = {s.interval_s(), s.priority()};
  return out;
}

TEST(Invariants, RandomSequencesKeepBudgetsServeEveryRequestAndMatchTheReference) {
  for (unsigned seed = 1; seed <= 12; ++seed) {
    Lab lab;
    const std::vector<std::string> ids = {"n1", "n2", "n3"};
    lab.config.budgets.global.bps = latency_bps(1) * 6;
    lab.config.budgets.node.bps = latency_bps(1) * 4.5;
    lab.config.budgets.user.bps = latency_bps(1) * 4;
    lab.config.limits.max_requests_per_user = 6;
    lab.open();
    RequestBook& book = *lab.book;
    std::mt19937 rng(seed);
    auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
    const std::vector<double> intervals = {1, 2, 3, 5, 10, 30};
    std::size_t admitted = 0, refused = 0;
    for (int step = 0; step < 300; ++step) {
      const int op = static_cast<int>(pick(10));
      const UserConfig& who = pick(2) ? lab.bob() : lab.alice();
      auto mine = book.list(who.name);
      std::erase_if(mine, [](const Request& r) { return r.state != RequestState::active; });
      if (op < 5) {
        std::vector<Path> paths;
        for (const auto& s : ids)
          for (const auto& d : ids)
            if (s != d && pick(3) == 0) paths.push_back({s, d});
        if (paths.empty()) paths.push_back({"n1", "n2"});
        RequestSpec sp = spec(intervals[pick(intervals.size())], paths);
        sp.priority = static_cast<std::int32_t>(pick(3));
        if (pick(4) == 0) sp.latency.count = 10;  // a second argument set
        if (pick(3) == 0) sp.duration_s = 1 + pick(20);
        const int code = fault_of([&] { book.admit(who, sp, false); });
        EXPECT_TRUE(code == 0 || code == kLimitExceeded || code == kBudgetExceeded) << code;
        (code == 0 ? admitted : refused) += 1;
      } else if (op == 5 && !mine.empty()) {
        book.cancel(mine[pick(mine.size())].num, who);
      } else if (op == 6 && !mine.empty()) {
        const Request& r = mine[pick(mine.size())];
        RequestSpec sp = r.spec;
        sp.interval_s = intervals[pick(intervals.size())];
        sp.priority = static_cast<std::int32_t>(pick(5));
        std::optional<double> for_s;
        if (pick(2)) for_s = 1 + pick(10);
        const int code = fault_of([&] { book.edit(r.num, who, sp, for_s); });
        EXPECT_TRUE(code == 0 || code == kBudgetExceeded || code == kLimitExceeded) << code;
      } else if (op == 7) {
        lab.clock.utc_ns += static_cast<UtcNs>(1 + pick(8)) * 1'000'000'000;  // expiries, reverts
        book.housekeeping();
      } else if (op == 8) {
        lab.set_dead(ids[pick(ids.size())], pick(3) == 0);
      }

      // The incremental index equals a derivation from scratch.
      ASSERT_EQ(flat(book.current_streams()), flat(book.derived_streams()))
          << "seed " << seed << " step " << step;
      // No budget is ever exceeded.
      const double eps = 1e-6;
      Cost recomputed;
      std::map<std::string, double> per_node;
      for (const auto& [node, streams] : book.current_streams())
        for (const auto& s : streams) {
          RequestSpec k;
          k.latency.count = s.latency().count();
          double bps =
              cost_of(measurement_bytes(k, {s.src(), s.dst()}, nullptr), s.interval_s()).bps;
          recomputed.bps += bps;
          per_node[s.src()] += bps;
          per_node[s.dst()] += bps;
        }
      const std::string at = fmt::format("seed {} step {} op {}", seed, step, op);
      ASSERT_NEAR(book.global_cost().bps, recomputed.bps, 1e-3) << at;
      ASSERT_LE(recomputed.bps, lab.config.budgets.global.bps * (1 + 1e-9) + eps) << at;
      for (const auto& [node, bps] : per_node)
        ASSERT_LE(bps, lab.config.budgets.node.bps * (1 + 1e-9) + eps) << node << " " << at;
      for (const auto* user : {"alice", "bob"}) {
        Usage u = book.usage(user);
        ASSERT_LE(u.reserved.bps, lab.config.budgets.user.bps * (1 + 1e-9) + eps);
        ASSERT_LE(u.charged.bps, u.reserved.bps + eps);
        ASSERT_LE(u.requests, lab.config.limits.max_requests_per_user);
      }
      // Every active request is served at its interval or faster on every
      // path whose ends are alive, unless held for budget (then paused).
      auto running = flat(book.current_streams());
      for (const auto& r : book.list(std::nullopt)) {
        if (r.state != RequestState::active) continue;
        for (const auto& p : r.spec.paths) {
          auto it = running.find(stream_key(r.spec, p, std::nullopt));
          if (it == running.end()) continue;  // paused: a dead end or held
          ASSERT_LE(it->second.first, r.spec.interval_s);
          ASSERT_GE(it->second.second, r.spec.priority);
        }
      }
    }
    EXPECT_GT(admitted, 10u) << seed;
    EXPECT_GT(refused, 0u) << seed;
  }
}

TEST(Restart, MidRunLosesNoRequest) {
  Lab lab;
  lab.open();
  std::vector<std::uint64_t> nums;
  for (int i = 0; i < 20; ++i) {
    auto s = spec(1 + i, {{"n1", "n2"}, {"n2", "n3"}});
    if (i % 3 == 0) s.tool = Tool::kAbw, s.interval_s = 60 + i;
    if (i % 4 == 0) s.priority = i;
    nums.push_back(lab.book->add_request(i % 2 ? "bob" : "alice", s).num);
  }
  lab.book->cancel(nums[3], lab.alice());
  auto before = lab.book->list(std::nullopt);
  auto streams = flat(lab.book->current_streams());
  lab.book.reset();
  lab.open();
  auto after = lab.book->list(std::nullopt);
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].num, before[i].num);
    EXPECT_EQ(after[i].state, before[i].state);
    EXPECT_EQ(after[i].spec.tool, before[i].spec.tool);
    EXPECT_EQ(after[i].spec.priority, before[i].spec.priority);
    EXPECT_EQ(after[i].spec.interval_s, before[i].spec.interval_s);
    EXPECT_EQ(after[i].spec.abw, before[i].spec.abw);
  }
  EXPECT_EQ(flat(lab.book->current_streams()), streams);
  // A prober that registers gets its full assignment.
  auto a = lab.book->fleet().on_register("n1", 9);
  EXPECT_EQ(static_cast<std::size_t>(a.streams_size()), lab.book->current_streams()["n1"].size());
}

}  // namespace
}  // namespace flexmon::manager
