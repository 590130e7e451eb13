// The request store keeps requests across a reopen and never reuses ids.
#include "manager/store.h"

#include <gtest/gtest.h>

#include "manager/request_book.h"
#include "tests/manager/test_config.h"

namespace flexmon::manager {
namespace {

TEST(Store, SurvivesReopening) {
  auto dir = testing::temp_dir();
  RequestSpec spec;
  spec.interval_s = 2.5;
  spec.duration_s = 60;
  spec.latency.count = 9;
  spec.paths = {{"n1", "n2"}, {"n2", "n1"}};
  std::uint64_t first = 0;
  {
    RequestStore store(dir / "state.db");
    first = store.add("alice", spec, 1'000'000'000).num;
    auto second = store.add("bob", spec, 2'000'000'000);
    store.set_state(second.num, RequestState::cancelled);
  }
  RequestStore store(dir / "state.db");
  auto all = store.load_all();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].num, first);
  EXPECT_EQ(all[0].owner, "alice");
  EXPECT_EQ(all[0].state, RequestState::active);
  EXPECT_EQ(all[0].spec.interval_s, 2.5);
  EXPECT_EQ(all[0].spec.duration_s, 60);
  EXPECT_EQ(all[0].ends_ns, 61'000'000'000);
  EXPECT_EQ(all[0].spec.latency.count, 9u);
  EXPECT_EQ(all[0].spec.paths, spec.paths);
  EXPECT_EQ(all[1].state, RequestState::cancelled);
  EXPECT_GT(store.add("carol", spec, 3).num, all[1].num);
}

TEST(Store, RequestBookReloadsRequests) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  RequestSpec spec;
  spec.interval_s = 10;
  spec.paths = {{"n1", "n3"}};
  std::uint64_t num = 0;
  {
    RequestBook book(config, std::make_unique<RequestStore>(dir / "state.db"));
    num = book.add_request("bob", spec).num;
  }
  RequestBook book(config, std::make_unique<RequestStore>(dir / "state.db"));
  ASSERT_TRUE(book.find(num));
  EXPECT_EQ(book.find(num)->owner, "bob");
  EXPECT_EQ(book.current_streams()["n1"].size(), 1u);
  EXPECT_GT(book.add_request("bob", spec).num, num);
}

}  // namespace
}  // namespace flexmon::manager
