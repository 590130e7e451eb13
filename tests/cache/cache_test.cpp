#include "cache/cache.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "wire.pb.h"

namespace flexmon {
namespace {

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("flexmon-cache-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static wire::Result latency(std::uint64_t seq, const std::string& src, const std::string& dst,
                              UtcNs start, std::vector<std::int64_t> rtts) {
    wire::Result r;
    r.set_seq(seq);
    r.set_stream("latency/udp/" + src + ">" + dst);
    r.set_tool("latency");
    r.set_src(src);
    r.set_dst(dst);
    r.set_start_ns(start);
    auto* l = r.mutable_latency();
    l->set_sent(static_cast<std::uint32_t>(rtts.size()));
    std::uint32_t received = 0;
    for (auto rtt : rtts) {
      l->add_rtt_ns(rtt);
      if (rtt >= 0) ++received;
    }
    l->set_received(received);
    r.set_status(received > 0 ? wire::OK : wire::TIMEOUT);
    if (received > 0) {
      l->set_min_ns(100);
      l->set_avg_ns(150);
      l->set_median_ns(150);
      l->set_max_ns(200);
      l->set_stddev_ns(50);
    }
    return r;
  }

  std::filesystem::path dir_;
};

TEST_F(CacheTest, StoresOnceAndCountsDuplicates) {
  Cache cache(dir_ / "cache.db");
  auto a = latency(1, "n1", "n2", 1000, {100, 200});
  auto b = latency(2, "n1", "n3", 2000, {-1, -1});
  auto first = cache.store("n1", 7, {&a, &b});
  EXPECT_EQ(first.stored, 2u);
  EXPECT_EQ(first.duplicates, 0u);
  auto again = cache.store("n1", 7, {&a, &b});
  EXPECT_EQ(again.stored, 0u);
  EXPECT_EQ(again.duplicates, 2u);
  // The same seq in another boot epoch is another result.
  auto next_epoch = cache.store("n1", 8, {&a});
  EXPECT_EQ(next_epoch.stored, 1u);
  EXPECT_EQ(cache.count_results(), 3);
}

TEST_F(CacheTest, QueryFiltersAndOrders) {
  Cache cache(dir_ / "cache.db");
  auto r1 = latency(1, "n1", "n2", 1000, {100, 200});
  auto r2 = latency(2, "n1", "n2", 3000, {100, -1});
  auto r3 = latency(3, "n1", "n3", 2000, {-1});
  cache.store("n1", 1, {&r1, &r2, &r3});

  auto all = cache.query_latency({});
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].start_ns, 3000);  // newest first
  EXPECT_EQ(all[0].rtts_ns, (std::vector<std::int64_t>{100, -1}));
  EXPECT_EQ(all[0].received, 1);

  LatencyQuery path;
  path.src = "n1";
  path.dst = "n3";
  auto only = cache.query_latency(path);
  ASSERT_EQ(only.size(), 1u);
  EXPECT_EQ(only[0].status, "timeout");
  EXPECT_FALSE(only[0].min_ns.has_value());

  LatencyQuery window;
  window.from = 1000;
  window.to = 3000;
  EXPECT_EQ(cache.query_latency(window).size(), 2u);

  LatencyQuery latest;
  latest.latest_per_path = true;
  auto newest = cache.query_latency(latest);
  ASSERT_EQ(newest.size(), 2u);
  EXPECT_EQ(newest[0].start_ns, 3000);
  EXPECT_EQ(newest[1].start_ns, 2000);

  LatencyQuery limited;
  limited.limit = 1;
  EXPECT_EQ(cache.query_latency(limited).size(), 1u);
}

TEST_F(CacheTest, SurvivesReopen) {
  {
    Cache cache(dir_ / "cache.db");
    auto r = latency(1, "n2", "n1", 5, {42});
    cache.store("n2", 1, {&r});
  }
  Cache reopened(dir_ / "cache.db");
  EXPECT_EQ(reopened.count_results(), 1);
  Cache reader(dir_ / "cache.db", /*read_only=*/true);
  EXPECT_EQ(reader.query_latency({}).at(0).rtts_ns, std::vector<std::int64_t>{42});
}

}  // namespace
}  // namespace flexmon
