#include "common/histogram.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace flexmon {
namespace {

// Each percentile is the upper bound of its bucket: at most 1/32 above the
// true value, never below it, and never above the largest value recorded.
TEST(Histogram, PercentilesAreWithinOneBucketAbove) {
  Histogram h;
  EXPECT_EQ(h.percentile(0.5), 0);
  for (std::int64_t us = 1; us <= 10'000; ++us) h.record(us * 1000);
  EXPECT_EQ(h.count(), 10'000u);
  for (double p : {0.0, 0.25, 0.5, 0.9, 0.99, 0.999}) {
    auto truth = static_cast<std::int64_t>(1000 * (1 + p * 9'999));
    EXPECT_GE(h.percentile(p), truth) << p;
    EXPECT_LE(h.percentile(p), truth + truth / 32 + 1) << p;
  }
  EXPECT_EQ(h.percentile(1.0), 10'000'000);
  EXPECT_EQ(h.max(), 10'000'000);
  h.reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.max(), 0);
}

// Small values have a bucket each; negative ones count as 0; huge ones land
// in the last bucket and the maximum stays exact.
TEST(Histogram, SmallNegativeAndHugeValues) {
  Histogram h;
  h.record(-5);
  h.record(3);
  h.record(3);
  h.record(INT64_MAX);
  EXPECT_EQ(h.percentile(0.0), 0);
  EXPECT_EQ(h.percentile(0.5), 3);
  EXPECT_EQ(h.percentile(1.0), INT64_MAX);
}

TEST(Histogram, ThreadsRecordWithoutLosingCounts) {
  Histogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 50'000; ++i) h.record(static_cast<std::int64_t>(t * 1000 + i % 997));
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.count(), 200'000u);
}

}  // namespace
}  // namespace flexmon
