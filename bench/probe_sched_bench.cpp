// probe_sched_bench: one prober's scheduling path (StreamRunner ->
// LatencyProber, UDP to a responder on loopback) holding N latency streams at
// one measurement per second each. Prints one `sched` line: send lateness
// against each stream's absolute schedule (p50, p99, max), and CPU used (the
// whole process, responder included, as % of one core).
//
// Lateness of call k of a stream = t_k - (anchor + k * interval), with the
// anchor the stream's earliest t_k - k * interval (so it is a lower bound).
//   probe_sched_bench [--streams 10000] [--seconds 10]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "prober/event_loop.h"
#include "prober/latency_prober.h"
#include "prober/responder.h"
#include "prober/stream_runner.h"
#include "wire.pb.h"

using namespace flexmon;
using namespace flexmon::prober;
using Mono = std::chrono::steady_clock;

namespace {
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
}  // namespace

int main(int argc, char** argv) {
  int streams = 10000;
  double seconds = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--streams")) streams = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
  }
  std::mutex mutex;
  std::map<std::string, std::vector<std::int64_t>> calls;  // per stream: call times, ns
  std::uint64_t results = 0, ok = 0;
  std::vector<std::string> errors;
  {
    EventLoop loop;
    Responder responder(loop, "127.0.0.1", 0, 16, 1472);
    LatencyProber latency(loop, "127.0.0.1", "n1");
    Limits limits;
    limits.latency.max_count = 100;
    StreamRunner runner(
        loop, "n1", limits,
        [&](const wire::Stream& s, std::function<void(wire::Result)> done) {
          auto now = Mono::now().time_since_epoch().count();
          calls[s.key()].push_back(now);  // loop thread only
          latency.measure(s, std::move(done));
        },
        [&](wire::Result r) {
          ++results;
          ok += r.status() == wire::OK;
          if (r.status() != wire::OK && errors.size() < 3) errors.push_back(r.error() + "/" + std::to_string(r.status()));
        });
    std::vector<wire::Stream> set;
    for (int i = 0; i < streams; ++i) {
      wire::Stream s;
      s.set_key("latency/bench/" + std::to_string(i));
      s.set_tool("latency");
      s.set_src("n1");
      s.set_dst("n2");
      s.set_dst_address("127.0.0.1");
      s.set_dst_port(responder.port());
      s.set_interval_s(1.0);
      auto* a = s.mutable_latency();
      a->set_method("udp");
      a->set_count(1);
      a->set_spacing_ms(0);
      a->set_size(64);
      a->set_timeout_ms(500);
      set.push_back(std::move(s));
    }
    loop.start();
    runner.assign(std::move(set));
    std::this_thread::sleep_for(std::chrono::seconds(2));  // warm-up: every stream started
    double cpu0 = cpu_seconds();
    auto wall0 = Mono::now();
    loop.post([&] { calls.clear(); });
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    double cpu = cpu_seconds() - cpu0;
    double wall = std::chrono::duration<double>(Mono::now() - wall0).count();
    std::vector<std::int64_t> late;
    std::mutex done_mutex;
    bool done = false;
    loop.post([&] {
      for (auto& [key, t] : calls) {
        std::int64_t anchor = INT64_MAX;
        for (std::size_t k = 0; k < t.size(); ++k)
          anchor =
              std::min<std::int64_t>(anchor, t[k] - static_cast<std::int64_t>(k) * 1'000'000'000);
        for (std::size_t k = 0; k < t.size(); ++k)
          late.push_back(t[k] - static_cast<std::int64_t>(k) * 1'000'000'000 - anchor);
      }
      std::lock_guard lock(done_mutex);
      done = true;
    });
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard lock(done_mutex);
        if (done) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    loop.stop();
    loop.join();
    std::sort(late.begin(), late.end());
    auto pct = [&](double p) {
      return late.empty()
                 ? 0.0
                 : late[std::min(late.size() - 1, static_cast<std::size_t>(p * late.size()))] / 1e3;
    };
    std::printf(
        "sched streams=%d rate_per_s=%d calls=%zu late_p50_us=%.1f late_p99_us=%.1f "
        "late_max_us=%.1f cpu_pct_of_core=%.1f results=%llu ok=%llu skipped_slots=%llu\n",
        streams, streams, late.size(), pct(0.5), pct(0.99), late.empty() ? 0.0 : late.back() / 1e3,
        100 * cpu / wall, static_cast<unsigned long long>(results),
        static_cast<unsigned long long>(ok),
        static_cast<unsigned long long>(runner.counters().skipped_slots.load()));
    for (auto& e : errors) std::fprintf(stderr, "not ok: %s\n", e.c_str());
  }
  return 0;
}
