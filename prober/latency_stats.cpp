#include "prober/latency_stats.h"

#include <algorithm>
#include <cmath>

#include "wire.pb.h"

namespace flexmon::prober {

void summarize_latency(const std::vector<std::int64_t>& rtt_ns, std::uint32_t sent,
                       std::uint32_t duplicates, wire::LatencyValues& out) {
  out.Clear();
  out.set_sent(sent);
  out.set_duplicates(duplicates);
  std::vector<std::int64_t> got;
  for (std::int64_t rtt : rtt_ns) {
    out.add_rtt_ns(rtt < 0 ? -1 : rtt);
    if (rtt >= 0) got.push_back(rtt);
  }
  out.set_received(static_cast<std::uint32_t>(got.size()));
  if (got.empty()) return;
  std::sort(got.begin(), got.end());
  std::size_t n = got.size();
  // Sums in long double: 100 RTTs of seconds in ns stay exact enough.
  long double sum = 0;
  for (std::int64_t v : got) sum += v;
  long double mean = sum / n;
  long double squares = 0;
  for (std::int64_t v : got) squares += (v - mean) * (v - mean);
  out.set_min_ns(got.front());
  out.set_max_ns(got.back());
  out.set_avg_ns(std::llround(mean));
  out.set_median_ns(n % 2 == 1 ? got[n / 2] : (got[n / 2 - 1] + got[n / 2]) / 2);
  out.set_stddev_ns(std::llround(std::sqrt(squares / n)));
}

}  // namespace flexmon::prober
