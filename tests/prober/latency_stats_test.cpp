#include "prober/latency_stats.h"

#include <gtest/gtest.h>

#include "wire.pb.h"

namespace flexmon::prober {
namespace {

TEST(LatencyStats, OddCountMedianIsTheMiddle) {
  wire::LatencyValues v;
  summarize_latency({300, 100, 200}, 3, 0, v);
  EXPECT_EQ(v.sent(), 3u);
  EXPECT_EQ(v.received(), 3u);
  EXPECT_EQ(v.min_ns(), 100);
  EXPECT_EQ(v.max_ns(), 300);
  EXPECT_EQ(v.avg_ns(), 200);
  EXPECT_EQ(v.median_ns(), 200);
  // Population stddev of 100, 200, 300: sqrt(20000/3) = 81.65
  EXPECT_EQ(v.stddev_ns(), 82);
  ASSERT_EQ(v.rtt_ns_size(), 3);
  EXPECT_EQ(v.rtt_ns(0), 300);  // send order kept
}

TEST(LatencyStats, EvenCountMedianIsTheMeanOfTheMiddleTwo) {
  wire::LatencyValues v;
  summarize_latency({40, 10, 30, 20}, 4, 0, v);
  EXPECT_EQ(v.median_ns(), 25);
  EXPECT_EQ(v.avg_ns(), 25);
  // Population stddev of 10, 20, 30, 40: sqrt(125) = 11.18
  EXPECT_EQ(v.stddev_ns(), 11);
}

TEST(LatencyStats, LostPacketsAreMinusOneAndLeftOutOfTheStatistics) {
  wire::LatencyValues v;
  summarize_latency({-1, 1000, -1, 3000}, 4, 2, v);
  EXPECT_EQ(v.sent(), 4u);
  EXPECT_EQ(v.received(), 2u);
  EXPECT_EQ(v.duplicates(), 2u);
  EXPECT_EQ(v.min_ns(), 1000);
  EXPECT_EQ(v.max_ns(), 3000);
  EXPECT_EQ(v.median_ns(), 2000);
  EXPECT_EQ(v.stddev_ns(), 1000);
  ASSERT_EQ(v.rtt_ns_size(), 4);
  EXPECT_EQ(v.rtt_ns(0), -1);
  EXPECT_EQ(v.rtt_ns(2), -1);
}

TEST(LatencyStats, NothingReceivedLeavesZeroes) {
  wire::LatencyValues v;
  summarize_latency({-1, -1}, 2, 0, v);
  EXPECT_EQ(v.received(), 0u);
  EXPECT_EQ(v.min_ns(), 0);
  EXPECT_EQ(v.stddev_ns(), 0);
}

TEST(LatencyStats, SinglePacketHasZeroSpread) {
  wire::LatencyValues v;
  summarize_latency({777}, 1, 0, v);
  EXPECT_EQ(v.median_ns(), 777);
  EXPECT_EQ(v.stddev_ns(), 0);
}

}  // namespace
}  // namespace flexmon::prober
