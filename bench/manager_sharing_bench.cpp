// Sharing: K users ask for overlapping meshes at different intervals; the
// probe packets the streams send per hour against the sum of what the
// requests asked, and against what the most demanding request of each path
// needs (the goal: exactly that, for every K). Figures one per line.
#include <map>

#include "bench/manager_bench_util.h"
#include "common/log.h"
#include "manager/request_book.h"

using namespace flexmon;
using namespace flexmon::manager;

int main() {
  logger("manager")->set_level(spdlog::level::warn);
  const double hour = 3600;
  for (int k : {1, 2, 4, 8, 16, 32, 64}) {
    auto dir = bench::temp_dir("flexmon-sharing-bench");
    Config config = bench::config_with_nodes(dir, 20);
    RequestBook book(config, std::make_unique<RequestStore>(dir / "state.db"));
    std::mt19937 rng(k);
    const double intervals[] = {1, 2, 5, 10, 30, 60};
    double asked = 0;
    std::map<std::string, double> need;  // stream key -> packets/hour of the most demanding
    for (int u = 0; u < k; ++u) {
      RequestSpec spec;
      spec.interval_s = intervals[rng() % 6];
      // Overlapping meshes: 6 of the first 10 nodes.
      std::vector<int> ids;
      while (ids.size() < 6) {
        int id = static_cast<int>(rng() % 10) + 1;
        if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
      }
      for (int s : ids)
        for (int d : ids)
          if (s != d) spec.paths.push_back({fmt::format("n{}", s), fmt::format("n{}", d)});
      book.add_request(fmt::format("u{}", u), spec);
      for (const auto& p : spec.paths) {
        double packets = spec.latency.count * hour / spec.interval_s;
        asked += packets;
        auto& n = need[stream_key(spec, p, std::nullopt)];
        n = std::max(n, packets);
      }
    }
    double sent = 0;
    for (const auto& [node, streams] : book.current_streams())
      for (const auto& s : streams) sent += s.latency().count() * hour / s.interval_s();
    double needed = 0;
    for (const auto& [key, n] : need) needed += n;
    fmt::print("k{}_packets_asked_per_hour {:.0f}\n", k, asked);
    fmt::print("k{}_packets_needed_per_hour {:.0f}\n", k, needed);
    fmt::print("k{}_packets_sent_per_hour {:.0f}\n", k, sent);
    fmt::print("k{}_sent_over_needed {:.6f}\n", k, sent / needed);
    fmt::print("k{}_sent_over_asked {:.4f}\n", k, sent / asked);
    std::filesystem::remove_all(dir);
  }
}
