#include "manager/cost.h"

#include <algorithm>
#include <numeric>

#include "common/log.h"
#include "common/tool.h"
#include "storage/reader.h"

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
  auto paths = largest_bytes_sent(cache_db, since);
  if (!paths) {
    logger("manager")->warn("cost history from {}: {}; using argument bounds", cache_db.string(),
                            paths.error().message);
    return history;
  }
  for (const PathBytesSent& p : *paths)
    history[{std::string(tool_name(p.tool)), p.src, p.dst}] = static_cast<double>(p.max_bytes_sent);
  return history;
}

}  // namespace flexmon::manager
