#include "manager/cost.h"

#include <algorithm>
#include <numeric>

#include "common/log.h"
#include "common/sqlite.h"

namespace flexmon::manager {

double measurement_bytes(const RequestSpec& spec, const Path& path, const History* history) {
  if (is_bandwidth_tool(spec.tool)) {
    double bound = 0;
    if (spec.tool == Tool::kAbw) {
      const auto& a = spec.abw;
      bound = std::min(static_cast<double>(a.max_bytes),
                       static_cast<double>(a.max_rate_bps) / 8.0 * a.max_duration_ms / 1000.0);
    } else {
      bound = static_cast<double>(spec.throughput.max_bytes);
    }
    if (history) {
      auto it = history->find({std::string(tool_name(spec.tool)), path.src, path.dst});
      if (it != history->end() && it->second > 0) return std::min(bound, it->second);
    }
    return bound;
  }
  const auto& l = spec.latency;
  if (l.method == "tcp") return l.count * kTcpProbeBytes;
  return 2.0 * l.count * (l.size + kUdpOverhead);
}

double cost_interval(const RequestSpec& spec) {
  return spec.mode == Mode::oneshot ? kOneshotInterval : spec.interval_s;
}

Cost cost_of(double bytes, double interval_s) {
  if (!(interval_s > 0)) return {};
  return {bytes * 8.0 / interval_s, bytes * 86'400.0 / interval_s};
}

Cost standalone_cost(const RequestSpec& spec, const History* history) {
  Cost total;
  const double interval = cost_interval(spec);
  for (const auto& p : spec.paths) total += cost_of(measurement_bytes(spec, p, history), interval);
  return total;
}

std::vector<double> shared_rates(const std::vector<double>& rates) {
  std::vector<std::size_t> order(rates.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return rates[a] < rates[b]; });
  std::vector<double> shares(rates.size(), 0.0);
  double below = 0, accumulated = 0;
  for (std::size_t k = 0; k < order.size(); ++k) {
    const double layer = rates[order[k]] - below;
    accumulated += layer / static_cast<double>(order.size() - k);
    shares[order[k]] = accumulated;
    below = rates[order[k]];
  }
  return shares;
}

History load_history(const std::filesystem::path& cache_db, UtcNs since) {
  History history;
  std::error_code ec;
  if (!std::filesystem::exists(cache_db, ec)) return history;
  try {
    sqlite::Database db(cache_db, /*read_only=*/true);
    auto select = db.prepare(
        "SELECT tool, src, dst, MAX(bytes_sent) FROM results "
        "WHERE tool IN ('abw', 'throughput') AND start_ns >= ? AND bytes_sent IS NOT NULL "
        "GROUP BY tool, src, dst");
    select.bind(1, static_cast<std::int64_t>(since));
    while (select.step())
      history[{select.text(0), select.text(1), select.text(2)}] =
          static_cast<double>(select.int64(3));
  } catch (const std::exception& e) {
    logger("manager")->warn("cost history from {}: {}; using argument bounds", cache_db.string(),
                            e.what());
    history.clear();
  }
  return history;
}

}  // namespace flexmon::manager
