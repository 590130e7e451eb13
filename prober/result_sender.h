// The result sender: numbers each result (seq 1, 2, ... within the boot
// epoch), keeps it in the spool, makes the spool durable, and only then sends
// pending results (of this epoch and of earlier ones still spooled) to a
// collector as sealed UDP datagrams (ResultBatch, under kMaxResultDatagram
// bytes) until an Ack names them. Unacknowledged results are sent again with
// backoff (0.5 s doubling to 8 s, with jitter); after kFailoverRounds rounds
// without any valid ack the next collector of the list takes over.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/wire_limits.h"
#include "prober/event_loop.h"
#include "prober/spool.h"

namespace flexmon::wire {
class Result;
}

namespace flexmon::prober {

constexpr std::size_t kMaxResultDatagram = 1400;
constexpr int kFailoverRounds = 4;
// Fill of the spool (fraction of its capacity less a reserve of 5 %) from
// which only the streams of the highest priority seen keep running; at 1.0
// every stream pauses, and the reserve takes the measurements in progress.
constexpr double kSpoolSoftFill = 0.9;
struct SenderOptions {
  std::string node;
  std::string key;  // the node's newest active key (raw bytes): it seals every datagram
  std::uint32_t key_id = 1;
  std::uint64_t boot_epoch = 1;
  std::string source_address;  // the node's address; the socket binds there
  std::vector<Endpoint> collectors;
  double initial_backoff_s = 0.5;
  double max_backoff_s = 8.0;
  double tick_s = 0.05;  // how often due retransmissions are looked for
};

struct SenderCounters {
  std::atomic<std::uint64_t> results{0};
  std::atomic<std::uint64_t> datagrams{0};
  std::atomic<std::uint64_t> retransmitted{0};  // results sent again
  std::atomic<std::uint64_t> acked{0};          // results removed by acks
  std::atomic<std::uint64_t> bad_acks{0};       // did not verify, or not for this epoch
  std::atomic<std::uint64_t> spool_full{0};     // results dropped: spool full
  std::atomic<std::uint64_t> paused{0};         // measurements not started: spool full
  std::atomic<std::uint64_t> failovers{0};
  std::atomic<std::uint64_t> send_errors{0};
  std::atomic<std::uint64_t> spooled{0};        // results waiting for an ack
  std::atomic<std::uint64_t> sync_failures{0};  // spool commits that failed (nothing sent)
};

class ResultSender {
 public:
  // Binds its UDP socket and resolves the collectors; throws on failure.
  ResultSender(EventLoop& loop, SenderOptions options, std::unique_ptr<Spool> spool);
  ~ResultSender();

  // Numbers, spools and sends a result. Any thread.
  void submit(wire::Result result);

  // Whether a measurement of a stream of this priority should start now: false
  // when the spool is nearly full (see kSpoolSoftFill); counts the refusals.
  // Any thread; the stream runner calls it before each measurement.
  bool accepting(int priority);

  // Tells the sender the node's configured load (results per second), so it
  // logs how many hours the spool holds at that load (warning under 24 h).
  void set_load(double results_per_second);

  const SenderCounters& counters() const;
  // The collector results go to now (index into options.collectors).
  std::size_t current_collector() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
