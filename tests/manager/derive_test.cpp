// Stream derivation (pure) and the request book's and fleet's bookkeeping of
// what each prober was assigned: dedupe, shortest interval, cancel, one-shots, expiry.
#include <gtest/gtest.h>

#include "manager/model.h"
#include "manager/request_book.h"
#include "tests/manager/test_config.h"

namespace flexmon::manager {
namespace {

Request request(std::uint64_t num, double interval, std::vector<Path> paths,
                Mode mode = Mode::continuous) {
  Request r;
  r.num = num;
  r.owner = "alice";
  r.spec.interval_s = interval;
  r.spec.mode = mode;
  r.spec.paths = std::move(paths);
  return r;
}

TEST(Derive, SameArgsDifferentIntervalsMakeOneStreamAtTheShorter) {
  Config config = testing::test_config(testing::temp_dir());
  Request a = request(1, 30, {{"n1", "n2"}});
  Request b = request(2, 5, {{"n1", "n2"}, {"n3", "n1"}});
  auto sets = derive_streams({&a, &b}, config, 0);
  ASSERT_EQ(sets.size(), 3u);  // every node, n2 empty
  ASSERT_EQ(sets["n1"].size(), 1u);
  const auto& s = sets["n1"][0];
  EXPECT_EQ(s.key(), "latency/udp/c5/s100/z64/t1000/n1>n2");
  EXPECT_EQ(s.interval_s(), 5);
  EXPECT_EQ(s.dst_address(), "127.0.0.2");
  EXPECT_EQ(s.dst_port(), 8473u);
  EXPECT_FALSE(s.oneshot());
  EXPECT_TRUE(sets["n2"].empty());
  ASSERT_EQ(sets["n3"].size(), 1u);
  EXPECT_EQ(sets["n3"][0].dst(), "n1");

  // Cancelling the faster request slows the stream down; cancelling both removes it.
  b.state = RequestState::cancelled;
  sets = derive_streams({&a, &b}, config, 0);
  ASSERT_EQ(sets["n1"].size(), 1u);
  EXPECT_EQ(sets["n1"][0].interval_s(), 30);
  EXPECT_TRUE(sets["n3"].empty());
  a.state = RequestState::cancelled;
  EXPECT_TRUE(derive_streams({&a, &b}, config, 0)["n1"].empty());
}

TEST(Derive, DifferentArgsMakeDifferentStreams) {
  Config config = testing::test_config(testing::temp_dir());
  Request a = request(1, 10, {{"n1", "n3"}});
  Request b = request(2, 10, {{"n1", "n3"}});
  b.spec.latency.count = 20;
  auto sets = derive_streams({&a, &b}, config, 0);
  ASSERT_EQ(sets["n1"].size(), 2u);
  EXPECT_EQ(sets["n1"][0].dst_port(), 9000u);
  EXPECT_NE(sets["n1"][0].key(), sets["n1"][1].key());
}

TEST(Derive, EndedAndOneshotRequests) {
  Config config = testing::test_config(testing::temp_dir());
  Request a = request(1, 10, {{"n1", "n2"}});
  a.ends_ns = 1000;
  EXPECT_EQ(derive_streams({&a}, config, 999)["n1"].size(), 1u);
  EXPECT_TRUE(derive_streams({&a}, config, 1000)["n1"].empty());

  Request o = request(7, 0, {{"n1", "n2"}, {"n2", "n1"}}, Mode::oneshot);
  auto sets = derive_streams({&o}, config, 0);
  ASSERT_EQ(sets["n1"].size(), 1u);
  EXPECT_TRUE(sets["n1"][0].oneshot());
  EXPECT_EQ(sets["n1"][0].key(), "latency/udp/c5/s100/z64/t1000/n1>n2/once-r7");
  o.oneshot_sent.insert({"n1", "n2"});
  sets = derive_streams({&o}, config, 0);
  EXPECT_TRUE(sets["n1"].empty());
  EXPECT_EQ(sets["n2"].size(), 1u);
}

// Records what the fleet pushes.
struct Sink : AssignmentSink {
  std::vector<std::pair<std::string, wire::Assignment>> pushed;
  void push(const std::string& node, std::uint64_t, wire::Assignment a) override {
    pushed.emplace_back(node, std::move(a));
  }
};

RequestSpec spec(double interval, std::vector<Path> paths, Mode mode = Mode::continuous) {
  RequestSpec s;
  s.interval_s = interval;
  s.mode = mode;
  s.paths = std::move(paths);
  return s;
}

TEST(RequestBook, OnlyChangedProbersGetAnAssignment) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  testing::SteppedClock clock;
  RequestBook book(config, std::make_unique<RequestStore>(dir / "state.db"), clock.clock());
  Sink sink;
  book.fleet().set_sink(&sink);
  auto first = book.fleet().on_register("n1", 1);
  EXPECT_EQ(first.streams_size(), 0);
  book.fleet().on_register("n3", 2);

  book.add_request("bob", spec(30, {{"n1", "n2"}}));
  ASSERT_EQ(sink.pushed.size(), 1u);
  EXPECT_EQ(sink.pushed[0].first, "n1");
  EXPECT_GT(sink.pushed[0].second.generation(), first.generation());
  sink.pushed.clear();

  // Same stream, slower: nothing changes for anyone.
  book.add_request("bob", spec(60, {{"n1", "n2"}}));
  EXPECT_TRUE(sink.pushed.empty());
  // Faster: n1's set changes.
  auto fast = book.add_request("bob", spec(5, {{"n1", "n2"}}));
  ASSERT_EQ(sink.pushed.size(), 1u);
  EXPECT_EQ(sink.pushed[0].second.streams(0).interval_s(), 5);
  sink.pushed.clear();
  book.cancel(fast.num, *config.find_user("bob"));
  ASSERT_EQ(sink.pushed.size(), 1u);
  EXPECT_EQ(sink.pushed[0].second.streams(0).interval_s(), 30);
}

TEST(RequestBook, OneshotIsSentOnceAndDoneWhenDelivered) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  testing::SteppedClock clock;
  RequestBook book(config, std::make_unique<RequestStore>(dir / "state.db"), clock.clock());
  Sink sink;
  book.fleet().set_sink(&sink);
  book.fleet().on_register("n1", 1);
  auto r = book.add_request("bob", spec(0, {{"n1", "n2"}, {"n2", "n1"}}, Mode::oneshot));
  ASSERT_EQ(sink.pushed.size(), 1u);  // n2 has no session yet
  auto gen1 = sink.pushed[0].second.generation();
  EXPECT_TRUE(sink.pushed[0].second.streams(0).oneshot());
  book.fleet().on_delivered("n1", 1, gen1, true);
  book.housekeeping();
  EXPECT_EQ(book.find(r.num)->state, RequestState::active);

  auto a2 = book.fleet().on_register("n2", 2);
  ASSERT_EQ(a2.streams_size(), 1);
  // A lost write puts the stream back for the next session.
  book.fleet().on_disconnect("n2", 2);
  book.fleet().on_delivered("n2", 2, a2.generation(), false);
  auto a3 = book.fleet().on_register("n2", 3);
  ASSERT_EQ(a3.streams_size(), 1);
  book.fleet().on_delivered("n2", 3, a3.generation(), true);
  book.housekeeping();
  EXPECT_EQ(book.find(r.num)->state, RequestState::done);
  // Never sent again.
  EXPECT_EQ(book.fleet().on_register("n2", 4).streams_size(), 0);
}

TEST(RequestBook, ContinuousRequestExpiresAtItsEnd) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  testing::SteppedClock clock;
  RequestBook book(config, std::make_unique<RequestStore>(dir / "state.db"), clock.clock());
  RequestSpec s = spec(10, {{"n1", "n2"}});
  s.duration_s = 60;
  auto r = book.add_request("bob", s);
  clock.utc_ns = *r.ends_ns - 1;
  book.housekeeping();
  EXPECT_EQ(book.find(r.num)->state, RequestState::active);
  clock.utc_ns = *r.ends_ns;
  book.housekeeping();
  EXPECT_EQ(book.find(r.num)->state, RequestState::expired);
  EXPECT_TRUE(book.current_streams()["n1"].empty());
}

TEST(Liveness, FromLastContact) {
  EXPECT_EQ(liveness(std::nullopt, 30), Liveness::dead);
  EXPECT_EQ(liveness(0, 30), Liveness::alive);
  EXPECT_EQ(liveness(14.9, 30), Liveness::alive);
  EXPECT_EQ(liveness(15, 30), Liveness::suspect);
  EXPECT_EQ(liveness(29.9, 30), Liveness::suspect);
  EXPECT_EQ(liveness(30, 30), Liveness::dead);
}

}  // namespace
}  // namespace flexmon::manager
