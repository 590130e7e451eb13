// Nanosecond values in log-linear buckets (32 per power of two: within 3.2 %),
// for percentiles without keeping every value. Recording is lock-free; any
// thread may read. The prober's send lateness and the collector's ack delay.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace flexmon {

class Histogram {
 public:
  void record(std::int64_t ns);
  std::uint64_t count() const;
  // The upper bound of the bucket holding the p-quantile (0 <= p <= 1); 0 if empty.
  std::int64_t percentile(double p) const;
  std::int64_t max() const { return max_.load(std::memory_order_relaxed); }
  void reset();

 private:
  static constexpr int kSub = 32;
  static constexpr std::size_t kBuckets = 64 * kSub;
  static std::size_t bucket(std::int64_t ns);
  static std::int64_t upper(std::size_t bucket);
  std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
  std::atomic<std::int64_t> max_{0};
};

}  // namespace flexmon
