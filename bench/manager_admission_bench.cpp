// Admission and stream recomputation on a 300-node testbed with overlapping
// meshes: the time of RequestBook::admit() (checks, SQLite insert, incremental
// stream update, assignments built for the changed probers) for requests
// around the 10,000th. Prints figures one per line.
#include <chrono>

#include "bench/manager_bench_util.h"
#include "common/log.h"
#include "manager/request_book.h"

using namespace flexmon;
using namespace flexmon::manager;

namespace {

struct CountingSink : AssignmentSink {
  std::size_t assignments = 0, streams = 0;
  void push(const std::string&, std::uint64_t, wire::Assignment a) override {
    ++assignments;
    streams += static_cast<std::size_t>(a.streams_size());
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int nodes = 300, requests = argc > 1 ? std::atoi(argv[1]) : 10'000;
  const int mesh = 8;
  logger("manager")->set_level(spdlog::level::warn);
  auto dir = bench::temp_dir("flexmon-admission-bench");
  Config config = bench::config_with_nodes(dir, nodes);
  RequestBook book(config, std::make_unique<RequestStore>(dir / "state.db"));
  CountingSink sink;
  book.fleet().set_sink(&sink);
  for (int i = 1; i <= nodes; ++i) book.fleet().on_register(fmt::format("n{}", i), i);
  std::mt19937 rng(42);
  const double intervals[] = {10, 30, 60, 300};
  std::vector<double> ms;
  std::size_t pushed = 0;
  for (int k = 1; k <= requests; ++k) {
    // Overlapping meshes: 8 nodes from a window of 40 around a random centre.
    RequestSpec spec;
    spec.interval_s = intervals[rng() % 4];
    spec.priority = static_cast<std::int32_t>(rng() % 3);
    if (rng() % 4 == 0) spec.latency.count = 10;
    std::vector<int> ids;
    int centre = static_cast<int>(rng() % nodes);
    while (static_cast<int>(ids.size()) < mesh) {
      int id = (centre + static_cast<int>(rng() % 40)) % nodes + 1;
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
    for (int s : ids)
      for (int d : ids)
        if (s != d) spec.paths.push_back({fmt::format("n{}", s), fmt::format("n{}", d)});
    UserConfig caller{fmt::format("u{}", k % 64), {}, Role::user};
    const std::size_t before = sink.assignments;
    auto t0 = std::chrono::steady_clock::now();
    book.admit(caller, spec, false);
    auto t1 = std::chrono::steady_clock::now();
    if (k > requests - 200) {
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      pushed += sink.assignments - before;
    }
  }
  std::size_t streams = 0;
  for (const auto& [n, s] : book.current_streams()) streams += s.size();
  fmt::print("nodes {}\nrequests {}\npaths_per_request {}\nstreams {}\n", nodes, requests,
             mesh * (mesh - 1), streams);
  fmt::print("assignments_per_admission {:.1f}\n", static_cast<double>(pushed) / ms.size());
  fmt::print("admit_p50_ms {:.3f}\n", bench::quantile(ms, 0.5));
  fmt::print("admit_p99_ms {:.3f}\n", bench::quantile(ms, 0.99));
  fmt::print("admit_max_ms {:.3f}\n", bench::quantile(ms, 1.0));
  std::filesystem::remove_all(dir);
}
