// probe_sched_bench: one prober's scheduling path (StreamRunner ->
// LatencyProber, UDP to a real responder on loopback) holding N latency
// streams at one measurement per second each. Prints one `sched` line:
//
// - send lateness p50 / p99 / max: each packet's actual send (the kernel's
//   send timestamp, else the time right before sendmmsg) minus the time its
//   stream's absolute schedule gave it (LatencyCounters::send_lateness,
//   log-linear buckets, within 3.2 %), over the measured window only;
// - CPU of the prober process over the window (getrusage, user + system,
//   every thread) as % of one core, and the CPU seconds themselves; the
//   responder runs in its own process (the peer's, in a real deployment) and
//   its CPU is printed apart;
// - wake-ups of the loop's deadline timer and sendmmsg calls per second.
//
//   probe_sched_bench [--streams 10000] [--destinations N] [--seconds 10]
//                     [--warmup 2]
// --destinations: distinct destination nodes the streams spread over
// (default: one per stream, as in a full mesh); the runner starts at most one
// measurement per destination at a time.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "prober/deadline_timers.h"
#include "prober/event_loop.h"
#include "prober/latency_prober.h"
#include "prober/responder.h"
#include "prober/stream_runner.h"
#include "wire.pb.h"

using namespace flexmon;
using namespace flexmon::prober;
using Mono = std::chrono::steady_clock;

namespace {

double self_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// utime + stime of another process, from /proc (clock ticks).
double process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields;
  std::string field;
  for (std::size_t i = close + 2; i <= line.size(); ++i) {
    if (i == line.size() || line[i] == ' ') {
      fields.push_back(field);
      field.clear();
    } else {
      field += line[i];
    }
  }
  // Fields after the name start at 3 (state); utime is 14, stime 15.
  if (fields.size() < 13) return 0;
  double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The responder in a child process: returns its pid and UDP port.
std::pair<pid_t, std::uint16_t> start_responder() {
  int fds[2];
  if (pipe(fds) != 0) std::exit(2);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    EventLoop loop;
    Responder responder(loop, "127.0.0.1", 0, 16, 1472);
    loop.start();
    std::uint16_t port = responder.port();
    if (write(fds[1], &port, sizeof port) != sizeof port) _exit(2);
    pause();  // until the parent's SIGTERM
    _exit(0);
  }
  close(fds[1]);
  std::uint16_t port = 0;
  if (read(fds[0], &port, sizeof port) != sizeof port) {
    std::fprintf(stderr, "probe_sched_bench: the responder did not start\n");
    std::exit(2);
  }
  close(fds[0]);
  return {pid, port};
}

template <typename F>
auto on_loop(EventLoop& loop, F f) {
  std::promise<decltype(f())> promise;
  auto future = promise.get_future();
  loop.post([&] { promise.set_value(f()); });
  return future.get();
}

}  // namespace

int main(int argc, char** argv) {
  int streams = 10000;
  int destinations = 0;
  double seconds = 10;
  double warmup = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--streams")) streams = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--destinations")) destinations = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--warmup")) warmup = std::atof(argv[i + 1]);
  }
  if (destinations <= 0) destinations = streams;
  auto [responder_pid, port] = start_responder();

  std::uint64_t results = 0, ok = 0;  // loop thread only
  std::string first_error;
  {
    EventLoop loop;
    LatencyProber latency(loop, "127.0.0.1", "n1");
    Limits limits;
    StreamRunner runner(
        loop, "n1", limits,
        [&](std::shared_ptr<const wire::Stream> s, MonoTime due,
            std::function<void(wire::Result)> done) { latency.measure(*s, due, std::move(done)); },
        [&](wire::Result r) {
          ++results;
          ok += r.status() == wire::OK;
          if (r.status() != wire::OK && first_error.empty())
            first_error = std::to_string(r.status()) + " " + r.error();
        });
    std::vector<wire::Stream> set;
    for (int i = 0; i < streams; ++i) {
      wire::Stream s;
      s.set_key("latency/bench/" + std::to_string(i));
      s.set_tool("latency");
      s.set_src("n1");
      s.set_dst("d" + std::to_string(i % destinations));
      s.set_dst_address("127.0.0.1");
      s.set_dst_port(port);
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
    // Warm-up: every stream has started (first slots fall within 1 s).
    std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
    struct Snapshot {
      std::uint64_t sent, stamped, send_calls, wakeups, skipped, results, ok;
    };
    auto snapshot = [&] {
      return on_loop(loop, [&] {
        const auto& c = latency.counters();
        return Snapshot{c.packets_sent.load(),
                        c.kernel_tx_stamps.load(),
                        c.send_calls.load(),
                        loop.deadlines().wakeups(),
                        runner.counters().skipped_slots.load(),
                        results,
                        ok};
      });
    };
    on_loop(loop, [&] {
      latency.counters().send_lateness.reset();
      return 0;
    });
    Snapshot s0 = snapshot();
    double cpu0 = self_cpu_seconds();
    double rcpu0 = process_cpu_seconds(responder_pid);
    auto wall0 = Mono::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    double cpu = self_cpu_seconds() - cpu0;
    double rcpu = process_cpu_seconds(responder_pid) - rcpu0;
    double wall = std::chrono::duration<double>(Mono::now() - wall0).count();
    Snapshot s1 = snapshot();
    const Histogram& late = latency.counters().send_lateness;
    std::uint64_t lateness_count = late.count();
    std::int64_t p50 = late.percentile(0.5), p99 = late.percentile(0.99), max = late.max();
    loop.stop();
    loop.join();
    auto per_s = [&](std::uint64_t a, std::uint64_t b) {
      return static_cast<double>(b - a) / wall;
    };
    std::printf(
        "sched streams=%d destinations=%d seconds=%.1f sends=%llu late_p50_us=%.1f "
        "late_p99_us=%.1f late_max_us=%.1f kernel_stamped_pct=%.1f cpu_pct_of_core=%.2f "
        "cpu_s=%.3f responder_cpu_pct_of_core=%.2f results=%llu ok=%llu skipped_slots=%llu "
        "wakeups_per_s=%.0f sendmmsg_per_s=%.0f\n",
        streams, destinations, wall, static_cast<unsigned long long>(lateness_count), p50 / 1e3,
        p99 / 1e3, max / 1e3,
        s1.sent > s0.sent ? 100.0 * static_cast<double>(s1.stamped - s0.stamped) /
                                static_cast<double>(s1.sent - s0.sent)
                          : 0.0,
        100 * cpu / wall, cpu, 100 * rcpu / wall,
        static_cast<unsigned long long>(s1.results - s0.results),
        static_cast<unsigned long long>(s1.ok - s0.ok),
        static_cast<unsigned long long>(s1.skipped - s0.skipped), per_s(s0.wakeups, s1.wakeups),
        per_s(s0.send_calls, s1.send_calls));
    if (!first_error.empty())
      std::fprintf(stderr, "first result not ok: %s\n", first_error.c_str());
  }
  kill(responder_pid, SIGTERM);
  waitpid(responder_pid, nullptr, 0);
  return 0;
}
