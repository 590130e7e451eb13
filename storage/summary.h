// Internal to flexmon_storage: per-path summaries (count, loss, RTT
// percentiles, bandwidth median) with memory bounded per path, shared by
// query.summary and the weekly dump.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string_view>

#include "storage/archive.h"
#include "storage/reader.h"
#include "storage/rtts.h"

namespace flexmon::storage {

// Columns a SummaryAccumulator reads, in this order.
inline constexpr const char* kSummaryColumns =
    "tool, src, dst, start_ns, status, sent, received, rtt_min_ns, rtts_ns, estimate_bps, "
    "throughput_bps";

// Counts of positive values in buckets 1 % wide (log scale): quantiles within
// 0.5 %, a few hundred buckets whatever the number of values.
class LogHistogram {
 public:
  void add(double value) {
    if (!(value > 0)) return;
    ++buckets_[static_cast<int>(std::floor(std::log(value) / kLogBase))];
    ++count_;
  }
  std::int64_t count() const { return count_; }
  // The q-quantile (0 < q <= 1) as the bucket's geometric middle.
  std::optional<double> quantile(double q) const {
    if (count_ == 0) return std::nullopt;
    auto rank = static_cast<std::int64_t>(std::ceil(q * static_cast<double>(count_)));
    rank = std::max<std::int64_t>(rank, 1);
    std::int64_t seen = 0;
    for (const auto& [bucket, n] : buckets_) {
      seen += n;
      if (seen >= rank) return std::exp((bucket + 0.5) * kLogBase);
    }
    return std::exp((buckets_.rbegin()->first + 0.5) * kLogBase);
  }

 private:
  static constexpr double kLogBase = 0.00995033085316808;  // log(1.01)
  std::map<int, std::int64_t> buckets_;
  std::int64_t count_ = 0;
};

class SummaryAccumulator {
 public:
  // Adds a row of kSummaryColumns.
  void add(const Cursor& c) {
    UtcNs start = c.int64(3);
    if (count_ == 0 || start < first_) first_ = start;
    if (count_ == 0 || start > last_) last_ = start;
    ++count_;
    if (c.text(4) == "ok") ++ok_;
    if (!c.is_null(5)) sent_ += c.int64(5);
    if (!c.is_null(6)) received_ += c.int64(6);
    if (!c.is_null(7)) min_ = std::min(min_, c.int64(7));
    if (!c.is_null(8)) add_rtts(c.text(8));
    if (!c.is_null(9)) bandwidth_.add(c.real(9));
    if (!c.is_null(10)) bandwidth_.add(c.real(10));
  }

  // Adds a row read in full (the dump).
  void add(const ResultRow& r) {
    if (count_ == 0 || r.start_ns < first_) first_ = r.start_ns;
    if (count_ == 0 || r.start_ns > last_) last_ = r.start_ns;
    ++count_;
    if (r.status == "ok") ++ok_;
    if (r.sent) sent_ += *r.sent;
    if (r.received) received_ += *r.received;
    if (r.rtt_min_ns) min_ = std::min(min_, *r.rtt_min_ns);
    if (r.rtts) add_rtts(r.rtts->stored());
    if (r.estimate_bps) bandwidth_.add(*r.estimate_bps);
    if (r.throughput_bps) bandwidth_.add(*r.throughput_bps);
  }

  PathSummary finish() const {
    PathSummary s;
    s.count = count_;
    s.ok = ok_;
    s.sent = sent_;
    s.received = received_;
    s.first_ns = first_;
    s.last_ns = last_;
    if (sent_ > 0) s.loss = static_cast<double>(sent_ - received_) / static_cast<double>(sent_);
    if (min_ != std::numeric_limits<std::int64_t>::max()) s.rtt_min_ns = min_;
    auto ns = [](std::optional<double> v) -> std::optional<std::int64_t> {
      if (!v) return std::nullopt;
      return std::llround(*v);
    };
    s.rtt_p50_ns = ns(rtts_.quantile(0.5));
    s.rtt_p90_ns = ns(rtts_.quantile(0.9));
    s.rtt_p99_ns = ns(rtts_.quantile(0.99));
    s.bandwidth_median_bps = bandwidth_.quantile(0.5);
    return s;
  }

 private:
  // The received packets' RTTs.
  void add_rtts(std::string_view json) {
    visit_rtts(json, [&](std::optional<std::int64_t> rtt_ns) {
      if (rtt_ns) rtts_.add(static_cast<double>(*rtt_ns));
    });
  }

  std::int64_t count_ = 0, ok_ = 0, sent_ = 0, received_ = 0;
  std::int64_t min_ = std::numeric_limits<std::int64_t>::max();
  UtcNs first_ = 0, last_ = 0;
  LogHistogram rtts_, bandwidth_;
};

}  // namespace flexmon::storage
