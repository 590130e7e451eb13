// collector_bench: simulated probers on loopback push sealed result datagrams
// through the real collector (collector/collector.h) into the real cache with
// the durable settings (WAL, window in the same transaction, the WAL synced
// to disk before any ack), each keeping a bounded number of datagrams
// unacknowledged, as the prober's sender does. Then SQLite's own ceiling: the
// same rows written through Cache::store_many in batches of the size the
// collector committed, each commit synced (synchronous=FULL). Prints one
// figure per line; `collector_bench --help` lists the options, and
// bench/run-collector runs it several times in both loops and prints medians.
// Every datagram is built and sealed before the clock starts: real probers
// seal on their own machines, and on this 2-core machine the simulated ones
// sealing while they send took ~0.5 of a core from the collector at 100k
// results/s. While timed, the probers only send, resend and open acks.
// With --rate 0 the probers send whenever their window has room (closed
// loop): the collector runs flat out, and since the window keeps window x
// nodes datagrams unacknowledged, the mean ack latency is that many results
// over the committed rate. With a rate, the probers together send that many
// results per second (open loop, as a fleet does; the window then only bounds
// what is unacknowledged): the ack latency at that load. Let an open-loop
// run last well past the time the WAL takes to reach collector.max_wal_mb
// (about 2.5 s at 100,000 results/s with the default 256), e.g.
// `collector_bench --results 1500000 --window 64 --rate 100000` (15 s), so
// that its figures hold the holds of the WAL's restarts in their due share.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "collector/collector.h"
#include "common/log.h"
#include "common/seal.h"
#include "common/sqlite.h"
#include "storage/cache.h"
#include "wire.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace flexmon;

wire::Result make_result(const std::string& node, std::uint64_t seq, std::mt19937_64& random) {
  wire::Result r;
  r.set_seq(seq);
  r.set_stream("latency/udp/count=5/" + node + "/peer");
  r.set_tool("latency");
  r.set_src(node);
  r.set_dst("peer");
  r.set_start_ns(1'760'000'000'000'000'000 + static_cast<std::int64_t>(seq) * 1'000'000'000);
  r.set_status(wire::OK);
  auto* l = r.mutable_latency();
  l->set_sent(5);
  l->set_received(5);
  for (int i = 0; i < 5; ++i) l->add_rtt_ns(200'000 + static_cast<std::int64_t>(random() % 50'000));
  l->set_min_ns(200'000);
  l->set_avg_ns(225'000);
  l->set_median_ns(224'000);
  l->set_max_ns(249'000);
  l->set_stddev_ns(12'000);
  return r;
}

// One sealed datagram, built before the clock starts.
struct Prepared {
  std::uint64_t first, last;
  std::string frame;
};

struct Outstanding {
  std::uint64_t first, last;
  Clock::time_point sent;
  const std::string* frame;  // in Node::datagrams
};

struct Node {
  std::string id;
  std::string key;
  std::unique_ptr<Sealer> sealer;
  int fd = -1;
  std::vector<Prepared> datagrams;  // results 1..per_node, each as full as fits
  std::size_t next_datagram = 0;
  std::map<std::uint64_t, Outstanding> outstanding;  // by last seq
};

// CPU seconds this process used so far (user + system): on a shared machine
// the wall-clock rates depend on the neighbours, CPU cost does not.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU seconds of the calling thread: the simulated probers run on the main
// thread, the collector on threads of its own.
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t total = 300'000;
  int node_count = 8;
  std::size_t window = 16;
  double rate = 0;
  CollectorTuning tuning;
  Config config;
  std::int64_t gather_us = tuning.gather_wait.count();
  CLI::App app{
      "Pushes sealed result datagrams from simulated probers on loopback through the real "
      "collector into a real cache, then writes the same rows through SQLite alone; prints one "
      "figure per line.",
      "collector_bench"};
  app.add_option("--results", total, "results in all, shared by the nodes")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}));
  app.add_option("--nodes", node_count, "simulated probers, each with its own socket and key")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--window", window, "datagrams each node keeps unacknowledged at most")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100'000}));
  app.add_option("--rate", rate,
                 "results per second the nodes offer together (open loop); 0 sends whenever a "
                 "window has room (closed loop)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e8));
  app.add_option("--max-batch-results", tuning.max_batch_results,
                 "CollectorTuning::max_batch_results")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}));
  app.add_option("--max-wal-mb", config.collector.max_wal_mb, "collector.max_wal_mb")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  app.add_option("--gather-results", tuning.gather_results, "CollectorTuning::gather_results")
      ->capture_default_str();
  app.add_option("--gather-us", gather_us, "CollectorTuning::gather_wait, in microseconds")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1'000'000}));
  CLI11_PARSE(app, argc, argv);
  if (total < static_cast<std::uint64_t>(node_count)) {
    std::fprintf(stderr, "collector_bench: --results %llu leaves some of the %d nodes nothing\n",
                 static_cast<unsigned long long>(total), node_count);
    return 64;
  }
  tuning.gather_wait = std::chrono::microseconds(gather_us);
  logger("collector")->set_level(spdlog::level::warn);
  auto dir = std::filesystem::temp_directory_path() /
             ("flexmon-collector-bench-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);

  config.collector.listen = Endpoint{"127.0.0.1", 0};
  config.collector.cache_db = dir / "cache.db";
  std::vector<Node> nodes(static_cast<std::size_t>(node_count));
  for (int i = 0; i < node_count; ++i) {
    auto& n = nodes[static_cast<std::size_t>(i)];
    n.id = "n" + std::to_string(i + 1);
    n.key = std::string(32, static_cast<char>('A' + i));
    n.sealer = std::make_unique<Sealer>(n.key);
    config.nodes.push_back(NodeConfig{n.id, "bench", "127.0.0.1", 0, n.key});
  }
  auto collector = start_collector(config, tuning);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(collector->local_endpoint().port);
  for (auto& n : nodes) {
    n.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(n.fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }

  std::mt19937_64 random(1);
  std::vector<double> ack_ms;
  std::uint64_t sent = 0, acked = 0, resent = 0;
  const std::uint64_t per_node = total / static_cast<std::uint64_t>(node_count);
  for (auto& n : nodes) {
    for (std::uint64_t next_seq = 1; next_seq <= per_node;) {
      wire::Message m;
      m.set_node(n.id);
      auto* batch = m.mutable_results();
      batch->set_boot_epoch(1);
      std::uint64_t first = next_seq;
      while (next_seq <= per_node) {
        *batch->add_results() = make_result(n.id, next_seq, random);
        if (m.ByteSizeLong() + 80 > 1400) {
          batch->mutable_results()->RemoveLast();
          break;
        }
        ++next_seq;
      }
      n.datagrams.push_back(Prepared{first, next_seq - 1, seal(m, *n.sealer)});
    }
  }
  auto start = Clock::now();
  double cpu_start = cpu_seconds();
  double probers_cpu_start = thread_cpu_seconds();
  auto limit = start + std::chrono::seconds(120);
  char buffer[65536];
  // Open loop: results each node has measured by now; a datagram goes once
  // its last result is measured.
  auto due = [&](Clock::time_point now) {
    if (rate <= 0) return per_node;
    double seconds = std::chrono::duration<double>(now - start).count();
    return std::min(per_node,
                    static_cast<std::uint64_t>(seconds * rate / static_cast<double>(node_count)));
  };
  while (acked < per_node * static_cast<std::uint64_t>(node_count) && Clock::now() < limit) {
    auto now = Clock::now();
    const std::uint64_t may_send = due(now);
    for (auto& n : nodes) {
      while (n.outstanding.size() < window && n.next_datagram < n.datagrams.size() &&
             n.datagrams[n.next_datagram].last <= may_send) {
        const auto& d = n.datagrams[n.next_datagram++];
        sendto(n.fd, d.frame.data(), d.frame.size(), 0, reinterpret_cast<sockaddr*>(&to),
               sizeof to);
        sent += d.last - d.first + 1;
        n.outstanding.emplace(d.last, Outstanding{d.first, d.last, now, &d.frame});
      }
      for (auto& [last, o] : n.outstanding) {  // lost on loopback (buffer full): again
        if (now - o.sent > std::chrono::seconds(1)) {
          sendto(n.fd, o.frame->data(), o.frame->size(), 0, reinterpret_cast<sockaddr*>(&to),
                 sizeof to);
          o.sent = now;  // latency of a resent datagram counts from the resend
          ++resent;
        }
      }
    }
    std::vector<pollfd> fds;
    for (auto& n : nodes) fds.push_back({n.fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), rate > 0 ? 1 : 5) <= 0) continue;
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      auto& n = nodes[i];
      for (;;) {
        ssize_t got = recv(n.fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (got <= 0) break;
        auto arrived = Clock::now();
        auto m =
            open_from(std::string_view(buffer, static_cast<std::size_t>(got)), n.id, *n.sealer);
        if (!m || !m->has_ack()) continue;
        for (const auto& range : m->ack().ranges()) {
          auto it = n.outstanding.lower_bound(range.first());
          while (it != n.outstanding.end() && it->second.first >= range.first() &&
                 it->second.last <= range.last()) {
            ack_ms.push_back(
                std::chrono::duration<double, std::milli>(arrived - it->second.sent).count());
            acked += it->second.last - it->second.first + 1;
            it = n.outstanding.erase(it);
          }
        }
      }
    }
  }
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  double process_cpu = cpu_seconds() - cpu_start;
  double collector_cpu = process_cpu - (thread_cpu_seconds() - probers_cpu_start);
  const auto& counters = collector->counters();
  // Copied before the collector (which owns the counters) goes away.
  struct {
    std::uint64_t stored, commits, syncs, checkpoints, wal_restarts, hold_ns, hold_max_ns,
        writer_cpu_ns;
  } c{counters.stored.load(),
      counters.commits.load(),
      counters.syncs.load(),
      counters.checkpoints.load(),
      counters.wal_restarts.load(),
      counters.wal_restart_hold_ns.load(),
      counters.wal_restart_hold_max_ns.load(),
      counters.writer_cpu_ns.load()};
  // The collector's own share of the ack latency (its ack_delay histogram).
  const double delay_p50_ms = static_cast<double>(counters.ack_delay.percentile(0.5)) / 1e6,
               delay_p99_ms = static_cast<double>(counters.ack_delay.percentile(0.99)) / 1e6,
               delay_max_ms = static_cast<double>(counters.ack_delay.max()) / 1e6;
  auto ms = [](const Histogram& h, double p) { return static_cast<double>(h.percentile(p)) / 1e6; };
  const double commit_p50_ms = ms(counters.commit_time, 0.5),
               commit_p99_ms = ms(counters.commit_time, 0.99),
               commit_max_ms = static_cast<double>(counters.commit_time.max()) / 1e6,
               sync_p50_ms = ms(counters.sync_time, 0.5),
               sync_p99_ms = ms(counters.sync_time, 0.99),
               sync_max_ms = static_cast<double>(counters.sync_time.max()) / 1e6;
  double per_commit =
      c.commits ? static_cast<double>(c.stored) / static_cast<double>(c.commits) : 1;
  collector->stop();
  collector->wait();
  collector.reset();

  // SQLite's ceiling: the same rows, same settings, batches of the size the
  // collector committed, no network, no seal, no window; one thread, so
  // SQLite's autocheckpoint runs inside its commits (the collector's
  // checkpointer thread can take the collector past this ceiling). The rows
  // come from the sealed datagrams, taken one per node in turn as the
  // collector received them, and opened one batch at a time outside the
  // clock, so that a large run does not hold every row twice.
  const std::size_t batch_rows = std::max<std::size_t>(1, static_cast<std::size_t>(per_commit));
  double ceiling_seconds = 0, ceiling_cpu = 0;
  std::uint64_t ceiling_rows = 0;
  {
    Cache cache(dir / "ceiling.db");
    cache.database().exec("PRAGMA synchronous=FULL");
    cache.database().exec("PRAGMA cache_size=-65536");  // as the collector sets it
    std::vector<wire::Message> opened;
    std::size_t opened_rows = 0;
    auto store_opened = [&] {
      std::map<std::string, Cache::StoreGroup> groups;
      for (const auto& m : opened) {
        auto& g = groups[m.node()];
        g.node = m.node();
        g.boot_epoch = m.results().boot_epoch();
        for (const auto& r : m.results().results()) g.results.push_back(&r);
      }
      std::vector<Cache::StoreGroup> list;
      for (auto& [node, g] : groups) list.push_back(std::move(g));
      auto t0 = Clock::now();
      double cpu0 = cpu_seconds();
      cache.store_many(list);
      ceiling_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
      ceiling_cpu += cpu_seconds() - cpu0;
      ceiling_rows += opened_rows;
      opened.clear();
      opened_rows = 0;
    };
    std::size_t most_datagrams = 0;
    for (const auto& n : nodes) most_datagrams = std::max(most_datagrams, n.datagrams.size());
    for (std::size_t d = 0; d < most_datagrams; ++d)
      for (const auto& n : nodes) {
        if (d >= n.datagrams.size()) continue;
        auto m = open_from(n.datagrams[d].frame, n.id, *n.sealer);
        if (!m) {
          std::fprintf(stderr, "collector_bench: cannot open its own datagram: %s\n",
                       m.error().message.c_str());
          return 1;
        }
        opened_rows += static_cast<std::size_t>(m->results().results_size());
        opened.push_back(std::move(*m));
        if (opened_rows >= batch_rows) store_opened();
      }
    if (!opened.empty()) store_opened();
  }
  double committed_rate = static_cast<double>(c.stored) / seconds;
  double ceiling = static_cast<double>(ceiling_rows) / ceiling_seconds;
  std::printf("offered_results_per_s %.0f\n", rate);
  std::printf("collector_committed_results_per_s %.0f\n", committed_rate);
  std::printf("collector_ack_latency_p50_ms %.2f\n", percentile(ack_ms, 0.50));
  std::printf("collector_ack_latency_p90_ms %.2f\n", percentile(ack_ms, 0.90));
  std::printf("collector_ack_latency_p99_ms %.2f\n", percentile(ack_ms, 0.99));
  std::printf("collector_ack_latency_p999_ms %.2f\n", percentile(ack_ms, 0.999));
  std::printf("collector_ack_latency_max_ms %.2f\n", percentile(ack_ms, 1.0));
  std::printf("collector_internal_ack_delay_p50_ms %.2f\n", delay_p50_ms);
  std::printf("collector_internal_ack_delay_p99_ms %.2f\n", delay_p99_ms);
  std::printf("collector_internal_ack_delay_max_ms %.2f\n", delay_max_ms);
  std::printf("collector_commit_ms_p50 %.2f\n", commit_p50_ms);
  std::printf("collector_commit_ms_p99 %.2f\n", commit_p99_ms);
  std::printf("collector_commit_ms_max %.2f\n", commit_max_ms);
  std::printf("collector_wal_sync_ms_p50 %.2f\n", sync_p50_ms);
  std::printf("collector_wal_sync_ms_p99 %.2f\n", sync_p99_ms);
  std::printf("collector_wal_sync_ms_max %.2f\n", sync_max_ms);
  std::printf("collector_results_stored %llu\n", static_cast<unsigned long long>(c.stored));
  std::printf("collector_results_per_commit %.0f\n", per_commit);
  std::printf("collector_datagrams_resent %llu\n", static_cast<unsigned long long>(resent));
  std::printf("sqlite_ceiling_results_per_s %.0f\n", ceiling);
  std::printf("collector_over_sqlite_ratio %.2f\n", committed_rate / ceiling);
  // Per CPU-second: of the collector's own threads, and of the whole process
  // (the simulated probers seal and send on the main thread).
  std::printf("collector_results_per_cpu_s %.0f\n", static_cast<double>(c.stored) / collector_cpu);
  std::printf("process_results_per_cpu_s %.0f\n", static_cast<double>(c.stored) / process_cpu);
  std::printf("collector_syncs %llu\n", static_cast<unsigned long long>(c.syncs));
  std::printf("collector_checkpoints %llu\n", static_cast<unsigned long long>(c.checkpoints));
  std::printf("collector_wal_restarts %llu\n", static_cast<unsigned long long>(c.wal_restarts));
  std::printf("collector_wal_restart_hold_ms_total %.1f\n", static_cast<double>(c.hold_ns) / 1e6);
  std::printf("collector_wal_restart_hold_ms_max %.1f\n", static_cast<double>(c.hold_max_ns) / 1e6);
  // The writer thread alone: its work per result bounds the committed rate.
  std::printf("collector_writer_results_per_cpu_s %.0f\n",
              static_cast<double>(c.stored) / (static_cast<double>(c.writer_cpu_ns) / 1e9));
  std::printf("sqlite_ceiling_results_per_cpu_s %.0f\n",
              static_cast<double>(ceiling_rows) / ceiling_cpu);
  std::printf("wall_s_collector_phase %.1f\n", seconds);
  std::filesystem::remove_all(dir);
  return acked == sent ? 0 : 1;
}
