// flexmon-collector: receives sealed result datagrams from probers over UDP,
// checks them (seal, known node, a node reports only its own results),
// commits them to the cache in one transaction per batch of datagrams (group
// commit of whatever is waiting), and acknowledges them to their sender only
// once that commit is on disk.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "common/clock.h"
#include "common/config.h"
#include "common/daemon.h"
#include "common/histogram.h"
#include "storage/cache_writer.h"

namespace flexmon {

// The writer's counters (commits, syncs, checkpoints: CacheWriterCounters)
// and the collector's own.
struct CollectorCounters : CacheWriterCounters {
  std::atomic<std::uint64_t> datagrams{0};   // received
  std::atomic<std::uint64_t> stored{0};      // results newly stored
  std::atomic<std::uint64_t> duplicates{0};  // results already stored, acked again
  std::atomic<std::uint64_t> acks{0};        // ack datagrams sent
  // Datagrams neither stored nor acknowledged because the cache's files
  // could not be written (immutable, read-only): their probers send them again.
  std::atomic<std::uint64_t> unwritable_datagrams{0};
  // CPU time of the writer thread (ns), the one whose work per result bounds
  // the committed rate: results stored per CPU-second of it.
  std::atomic<std::uint64_t> writer_cpu_ns{0};
  // Results refused by the cache (StoreOutcome::rejected), acked anyway.
  std::atomic<std::uint64_t> refused{0};
  // Rejected datagrams, by reason.
  std::atomic<std::uint64_t> malformed{0};  // not a sealed frame, wrong version
  std::atomic<std::uint64_t> unknown_node{0};
  std::atomic<std::uint64_t> unknown_key{0};  // a key id the node does not have
  std::atomic<std::uint64_t> retired_key{0};  // sealed properly under a retired key
  std::atomic<std::uint64_t> bad_seal{0};     // forged or altered
  std::atomic<std::uint64_t> not_results{0};  // another kind of message
  std::atomic<std::uint64_t> bad_results{0};  // src is not the sender, seq 0, epoch 0, empty
  // Results (not datagrams) further than kSeqWindow above the high-water mark.
  std::atomic<std::uint64_t> outside_window{0};
  // Per datagram, ns from the receiver queueing it to the syncer sending its
  // batch's acks (commit, sync and the waits between), since start: the
  // collector's own share of a prober's ack latency.
  Histogram ack_delay;
};

class Collector : public Daemon {
 public:
  // The bound UDP address (its port when config asked for port 0).
  virtual Endpoint local_endpoint() const = 0;
  virtual const CollectorCounters& counters() const = 0;
};

// How the collector trades commit size and WAL size against ack latency
// (the WAL's knobs are the cache writer's: CacheWriterTuning). The defaults
// are what flexmon-collector runs with; tests make them small.
struct CollectorTuning : CacheWriterTuning {
  // A group commit takes the datagrams waiting, whole, until it holds this
  // many results: a commit's duration (and the ack latency of what waits
  // behind it) stays bounded when a backlog arrives at once. Not smaller:
  // larger commits cost less per result (each rewrites the index pages it
  // touches once), and at 512 the collector used 10-20 % more CPU per result
  // under a saturating load than at 4096 (collector_bench, open loop).
  std::size_t max_batch_results = 4096;
  // While fewer than gather_results results wait, the writer waits for more
  // until the oldest of them has waited gather_wait. A commit costs the
  // writer about the same fixed work whatever its size (each page it touches
  // goes to the WAL in two write calls; the index pages are the same for
  // 100 results as for 1000), so fewer, larger commits leave it more time:
  // at 100k results/s offered (collector_bench open loop) commits grew from
  // ~150 to ~330 results and the collector's results per CPU-second from
  // ~90k to ~105k; the ack p50 grew by ~1.5 ms, the p99 fell.
  std::size_t gather_results = 1024;
  std::chrono::microseconds gather_wait{2000};
  // The monotonic clock that paces the collector's housekeeping: its report
  // every minute, and how often it says again that the cache cannot be
  // written. Tests may step it.
  std::function<MonoClock::time_point()> mono_now = MonoClock::now;
};

// Opens the cache (its CacheWriter), binds config.collector.listen and starts
// the receiver, writer and syncer threads. Throws on a start-up failure.
std::unique_ptr<Collector> start_collector(const Config& config,
                                           const CollectorTuning& tuning = {});

// The flexmon-collector process, assembled as the other daemons are
// (common/daemon.h; collector/main.cpp only names them): the collector, the
// write-back flush of its cache to the archive and, when archive.dump_weekly
// is set, the weekly public dump, each on its own thread.
void check_collector_config(const Config& config);
// What only --check-config checks: the archive and the dump folder, which the
// running collector rides out (flushing waits for the archive).
void check_collector_reachable(const Config& config);
std::unique_ptr<Daemon> start_collector_process(const Config& config);

}  // namespace flexmon
