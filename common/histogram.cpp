#include "common/histogram.h"

#include <algorithm>
#include <bit>

namespace flexmon {

std::size_t Histogram::bucket(std::int64_t ns) {
  auto v = static_cast<std::uint64_t>(std::max<std::int64_t>(ns, 0));
  if (v < 2 * kSub) return static_cast<std::size_t>(v);
  int e = std::bit_width(v) - 1;  // v in [2^e, 2^(e+1)), e >= 6
  auto sub = static_cast<std::size_t>((v >> (e - 5)) & (kSub - 1));
  return static_cast<std::size_t>(e - 4) * kSub + sub;
}

std::int64_t Histogram::upper(std::size_t b) {
  if (b < 2 * kSub) return static_cast<std::int64_t>(b);
  int e = static_cast<int>(b / kSub) + 4;
  std::uint64_t low = (kSub + b % kSub) << (e - 5);
  return static_cast<std::int64_t>(low + (std::uint64_t{1} << (e - 5)) - 1);
}

void Histogram::record(std::int64_t ns) {
  buckets_[std::min(bucket(ns), kBuckets - 1)].fetch_add(1, std::memory_order_relaxed);
  auto seen = max_.load(std::memory_order_relaxed);
  while (ns > seen && !max_.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
  }
}

std::uint64_t Histogram::count() const {
  std::uint64_t n = 0;
  for (const auto& b : buckets_) n += b.load(std::memory_order_relaxed);
  return n;
}

std::int64_t Histogram::percentile(double p) const {
  std::uint64_t total = count();
  if (total == 0) return 0;
  auto rank = static_cast<std::uint64_t>(std::clamp(p, 0.0, 1.0) * static_cast<double>(total - 1));
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < kBuckets; ++b) {
    seen += buckets_[b].load(std::memory_order_relaxed);
    if (seen > rank) return std::min(upper(b), max());
  }
  return max();
}

void Histogram::reset() {
  for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
  max_.store(0, std::memory_order_relaxed);
}

}  // namespace flexmon
