// The collector's receive path. I/O model: poll(2) and recvmmsg(2) on plain
// threads (receiver, writer, syncer), not the Asio loop the manager and the
// prober use. Kept for its batching: the receiver reads up to kReceiveBurst
// datagrams per system call and hands the writer whole bursts, which an
// Asio async_receive_from (one datagram per completion) does not do, and the
// group commit and its acks are sized by what those bursts gather. With this
// model the collector commits ~161,000 results/s in bench/run-collector's
// closed loop and keeps the ack p99 under 20 ms at 100,000 results/s offered
// (docs/performance.md, "The collector's goals", 2026-11-30); an Asio
// variant was not measured.
#include "collector/collector.h"

#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "collector/datagram.h"
#include "common/log.h"
#include "common/seal.h"
#include "storage/cache_writer.h"
#include "wire.pb.h"

namespace flexmon {

namespace {

using Mono = std::chrono::steady_clock;

// Datagrams the receiver reads before it hands them to the writer.
constexpr std::size_t kMaxReceiveDatagrams = 4096;
// Decoded datagrams waiting for the writer; beyond this the receiver stops
// reading and the socket's buffer holds the rest.
constexpr std::size_t kMaxQueuedDatagrams = 8192;
// Datagrams read per recvmmsg call.
constexpr std::size_t kReceiveBurst = 32;
constexpr std::size_t kMaxDatagramBytes = 65536;
// Ack datagrams stay small: at most this many ranges each.
constexpr int kMaxRangesPerAck = 64;
// While the cache cannot be written, how often the writer says so again.
constexpr auto kUnwritableReportEvery = std::chrono::seconds(60);

struct Peer {
  sockaddr_storage address{};
  socklen_t length = 0;
  bool operator<(const Peer& other) const {
    if (length != other.length) return length < other.length;
    return std::memcmp(&address, &other.address, length) < 0;
  }
  std::string to_string() const {
    char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";
    getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, host, sizeof host, port,
                sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
    return fmt::format("{}:{}", host, port);
  }
};

struct Accepted {
  Peer from;
  const Sealer* key = nullptr;                     // what verified it; its acks are sealed under it
  std::unique_ptr<google::protobuf::Arena> arena;  // owns *message
  const wire::Message* message = nullptr;
  Mono::time_point queued{};  // when the receiver handed it to the writer
};

// The seqs of one (node, epoch) to acknowledge to one sender.
struct AckList {
  std::string node;
  std::uint64_t boot_epoch = 0;
  Peer to;
  const Sealer* key = nullptr;
  std::vector<std::uint64_t> seqs;
};

// Acks of one batch; they may go out once every commit up to `after_commit`
// is on disk (the duplicates among them may have been stored by an earlier
// commit that is not yet synced).
struct PendingAcks {
  std::uint64_t after_commit = 0;
  std::vector<AckList> lists;
  // The batch's datagrams, freed by the syncer, which mostly waits for the
  // disk: freeing them is ~7 % of the writer's work otherwise.
  std::vector<Accepted> spent;
};

// Wall time from `since` to `until` (default: now), in ns.
std::int64_t elapsed_ns(Mono::time_point since, Mono::time_point until = Mono::now()) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(until - since).count();
}

// CPU time the calling thread has used.
std::uint64_t thread_cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<std::uint64_t>(t.tv_sec) * 1'000'000'000 +
         static_cast<std::uint64_t>(t.tv_nsec);
}

// Seqs as inclusive ranges, sorted and merged.
std::vector<std::pair<std::uint64_t, std::uint64_t>> to_ranges(std::vector<std::uint64_t> seqs) {
  std::sort(seqs.begin(), seqs.end());
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (auto seq : seqs) {
    if (!ranges.empty() && seq <= ranges.back().second + 1)
      ranges.back().second = std::max(ranges.back().second, seq);
    else
      ranges.emplace_back(seq, seq);
  }
  return ranges;
}

// Three threads in a pipeline, so that verifying, writing and waiting for the
// disk overlap (schemas/wire.md, "Collector"):
// - receiver: reads datagrams, decodes and verifies them, queues them;
// - writer: takes everything queued, has storage's CacheWriter classify it
//   against the dedupe windows and commit the fresh results (the commit does
//   not wait for the disk);
// - syncer: has the CacheWriter sync (fdatasync of the cache's WAL), then
//   sends the acks of every batch committed before that sync began;
// and the CacheWriter's own checkpointer (storage/cache_writer.h).
class CollectorDaemon : public Collector {
 public:
  CollectorDaemon(const Config& config, const CollectorTuning& tuning)
      : tuning_(tuning),
        log_(logger("collector")),
        rejects_(log_, 20, std::chrono::seconds(10)),
        cache_(config.collector.cache_db,
               static_cast<std::int64_t>(config.collector.max_wal_mb) << 20, tuning, counters_) {
    for (const auto& node : config.nodes) keys_.add(node);
    bind(config.collector.listen);
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) throw std::runtime_error(fmt::format("eventfd: {}", std::strerror(errno)));
    log_->info("collector: listening on UDP {}, cache {}, {} nodes", local_.to_string(),
               config.collector.cache_db.string(), config.nodes.size());
    receiver_ = std::thread([this] { receive_loop(); });
    writer_ = std::thread([this] { write_loop(); });
    syncer_ = std::thread([this] { sync_loop(); });
  }

  ~CollectorDaemon() override {
    stop();
    wait();
    if (socket_ >= 0) ::close(socket_);
    if (stop_fd_ >= 0) ::close(stop_fd_);
  }

  void stop() override {
    stopping_ = true;
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
  }

  // The receiver ends first; the writer commits what was queued, the syncer
  // acks it, then they end, and the cache's checkpointer last.
  void wait() override {
    const bool ran = receiver_.joinable();
    if (receiver_.joinable()) receiver_.join();
    if (writer_.joinable()) writer_.join();
    if (syncer_.joinable()) syncer_.join();
    cache_.close();
    if (ran) report();  // the final counts, rejected datagrams by reason among them
  }

  Endpoint local_endpoint() const override { return local_; }
  const CollectorCounters& counters() const override { return counters_; }

 private:
  void bind(const Endpoint& listen) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    auto port = std::to_string(listen.port);
    int rc = getaddrinfo(listen.host.empty() ? nullptr : listen.host.c_str(), port.c_str(), &hints,
                         &found);
    if (rc != 0)
      throw std::runtime_error(
          fmt::format("collector: cannot resolve {}: {}", listen.to_string(), gai_strerror(rc)));
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(found, freeaddrinfo);
    socket_ = ::socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (socket_ < 0 || ::bind(socket_, found->ai_addr, found->ai_addrlen) != 0)
      throw std::runtime_error(fmt::format("collector: cannot bind UDP {}: {}", listen.to_string(),
                                           std::strerror(errno)));
    int buffer = 4 << 20;  // ride out bursts while the writer is busy
    setsockopt(socket_, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    Peer bound;
    bound.length = sizeof bound.address;
    getsockname(socket_, reinterpret_cast<sockaddr*>(&bound.address), &bound.length);
    auto text = bound.to_string();
    local_.host = listen.host;
    local_.port = static_cast<std::uint16_t>(std::stoi(text.substr(text.rfind(':') + 1)));
  }

  void receive_loop() {
    std::vector<std::array<char, kMaxDatagramBytes>> buffers(kReceiveBurst);
    std::array<iovec, kReceiveBurst> iovecs{};
    std::array<mmsghdr, kReceiveBurst> headers{};
    std::array<Peer, kReceiveBurst> from{};
    auto last_report = tuning_.mono_now();
    for (;;) {
      pollfd fds[2] = {{socket_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      int n = ::poll(fds, 2, 1000);
      if (n < 0 && errno != EINTR) {
        log_->error("collector: poll: {}", std::strerror(errno));
        break;
      }
      if (n > 0 && fds[1].revents) break;
      if (n > 0 && fds[0].revents) {
        std::vector<Accepted> accepted;
        for (std::size_t round = 0; round < kMaxReceiveDatagrams / kReceiveBurst; ++round) {
          for (std::size_t i = 0; i < kReceiveBurst; ++i) {
            iovecs[i] = {buffers[i].data(), buffers[i].size()};
            from[i].length = sizeof from[i].address;
            headers[i].msg_hdr = {};
            headers[i].msg_hdr.msg_name = &from[i].address;
            headers[i].msg_hdr.msg_namelen = from[i].length;
            headers[i].msg_hdr.msg_iov = &iovecs[i];
            headers[i].msg_hdr.msg_iovlen = 1;
          }
          int got = ::recvmmsg(socket_, headers.data(), kReceiveBurst, MSG_DONTWAIT, nullptr);
          if (got <= 0) break;  // EAGAIN, or e.g. ICMP for an earlier ack
          for (std::size_t i = 0; i < static_cast<std::size_t>(got); ++i) {
            ++counters_.datagrams;
            from[i].length = headers[i].msg_hdr.msg_namelen;
            std::string_view datagram(buffers[i].data(), headers[i].msg_len);
            if (auto decoded = check(datagram, from[i]); decoded.message)
              accepted.push_back(Accepted{from[i], decoded.key, std::move(decoded.arena),
                                          decoded.message, Mono::time_point{}});
          }
          if (static_cast<std::size_t>(got) < kReceiveBurst) break;
        }
        if (!enqueue(std::move(accepted))) break;
      }
      if (auto now = tuning_.mono_now(); now - last_report >= std::chrono::seconds(60)) {
        last_report = now;
        report();
      }
    }
    std::lock_guard lock(queue_mutex_);
    receiving_done_ = true;
    queue_ready_.notify_all();
  }

  // Hands datagrams to the writer, waiting while it is far behind; false
  // when asked to stop meanwhile.
  bool enqueue(std::vector<Accepted> accepted) {
    if (accepted.empty()) return true;
    std::unique_lock lock(queue_mutex_);
    while (queue_.size() >= kMaxQueuedDatagrams) {
      if (stopping_) return false;
      // A bounded wait: stop() does not take this lock to wake us.
      queue_space_.wait_for(lock, std::chrono::milliseconds(100));
    }
    auto now = Mono::now();
    for (auto& a : accepted) {
      queued_results_ += static_cast<std::size_t>(a.message->results().results_size());
      a.queued = now;
      queue_.push_back(std::move(a));
    }
    queue_ready_.notify_one();
    return true;
  }

  void write_loop() {
    for (;;) {
      std::vector<Accepted> batch;
      {
        std::unique_lock lock(queue_mutex_);
        queue_ready_.wait(lock, [&] { return !queue_.empty() || receiving_done_; });
        if (queue_.empty()) break;
        // A small batch waits a little for company (CollectorTuning::gather_results).
        auto gathered_by = queue_.front().queued + tuning_.gather_wait;
        while (!receiving_done_ && queued_results_ < tuning_.gather_results &&
               queue_ready_.wait_until(lock, gathered_by) == std::cv_status::no_timeout) {
        }
        // Whole datagrams up to tuning_.max_batch_results results (at least one).
        std::size_t take = 0, results = 0;
        for (; take < queue_.size() && results < tuning_.max_batch_results; ++take)
          results += static_cast<std::size_t>(queue_[take].message->results().results_size());
        queued_results_ -= results;
        batch.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(take)));
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(take));
        queue_space_.notify_one();
      }
      try {
        commit(std::move(batch));
      } catch (const std::exception& e) {
        rejects_.warn("collector: unexpected failure handling a batch: {}", e.what());
      }
      counters_.writer_cpu_ns = thread_cpu_ns();
    }
    std::lock_guard lock(ack_mutex_);
    writing_done_ = true;
    ack_ready_.notify_all();
  }

  // The decoded datagram; its message is set if it is a well-formed, verified
  // result batch in which the sealing node reports only its own results
  // (collector/datagram.h), else the reject is counted and logged.
  DecodedDatagram check(std::string_view datagram, const Peer& from) {
    auto decoded = decode_result_datagram(datagram, keys_);
    switch (decoded.reject) {
      case DatagramReject::none:
        return decoded;
      case DatagramReject::malformed:
        ++counters_.malformed;
        break;
      case DatagramReject::unknown_node:
        ++counters_.unknown_node;
        break;
      case DatagramReject::unknown_key:
        ++counters_.unknown_key;
        break;
      case DatagramReject::retired_key:
        ++counters_.retired_key;
        break;
      case DatagramReject::bad_seal:
        ++counters_.bad_seal;
        break;
      case DatagramReject::not_results:
        ++counters_.not_results;
        break;
      case DatagramReject::bad_results:
        ++counters_.bad_results;
        break;
    }
    rejects_.warn("collector: dropped a datagram from {}: {}", from.to_string(), decoded.why);
    return decoded;
  }

  // Has the cache writer sort a batch into fresh (stored now), duplicates
  // (acked again) and outside the window (dropped) and commit the fresh ones;
  // then hands the acks to the syncer.
  void commit(std::vector<Accepted> accepted) {
    if (accepted.empty()) return;
    WriteBatch batch = cache_.begin();
    // By (node, epoch, sender, key): a prober that restarted under its new key
    // may have datagrams of both keys in one batch.
    std::map<std::tuple<std::string, std::uint64_t, Peer, std::uint32_t>,
             std::pair<const Sealer*, std::vector<std::uint64_t>>>
        acks;
    std::uint64_t duplicates = 0, outside = 0;
    for (const auto& a : accepted) {
      const auto& results = a.message->results();
      auto& target = batch.target(a.message->node(), results.boot_epoch());
      auto& [sealer, seqs] = acks[{a.message->node(), results.boot_epoch(), a.from, a.key->id()}];
      sealer = a.key;
      for (const auto& r : results.results()) {
        switch (batch.offer(target, r)) {
          case SeqWindow::Verdict::duplicate:
            ++duplicates;
            seqs.push_back(r.seq());
            break;
          case SeqWindow::Verdict::outside:
            ++outside;
            break;
          case SeqWindow::Verdict::fresh:
            seqs.push_back(r.seq());
            break;
        }
      }
    }
    if (outside > 0) {
      counters_.outside_window += outside;
      rejects_.warn("collector: dropped {} results outside the window of {} seqs", outside,
                    kSeqWindow);
    }
    const bool writes = !batch.empty();
    auto committed = cache_.commit(std::move(batch));
    if (!committed) {
      if (committed.error().code == ErrorCode::kUnavailable)
        cache_unwritable(committed.error().message, accepted.size());
      else
        rejects_.warn("collector: commit of {} datagrams failed, not acknowledged: {}",
                      accepted.size(), committed.error().message);
      return;
    }
    if (writes) {
      if (unwritable_since_) cache_writable_again();
      for (std::size_t i = 0; i < committed->outcomes.size(); ++i) {
        const auto& o = committed->outcomes[i];
        const auto& group = committed->groups[i];
        counters_.stored += o.stored;
        // Present in the results but not in the window: a cache written before
        // the window existed. Still stored once (UNIQUE), still acked.
        counters_.duplicates += o.duplicates;
        // Acked all the same: resending cannot make them storable.
        if (o.rejected > 0) {
          counters_.refused += o.rejected;
          rejects_.warn("collector: refused {} results of node '{}' epoch {}, acked: {}",
                        o.rejected, group.node, group.boot_epoch, o.rejection);
        }
      }
    }
    counters_.duplicates += duplicates;
    PendingAcks pending;
    pending.after_commit = committed->sync_through;
    for (auto& [key, list] : acks)
      if (!list.second.empty())
        pending.lists.push_back(AckList{std::get<0>(key), std::get<1>(key), std::get<2>(key),
                                        list.first, std::move(list.second)});
    if (pending.lists.empty()) return;
    pending.spent = std::move(accepted);
    std::lock_guard lock(ack_mutex_);
    acks_.push_back(std::move(pending));
    ack_ready_.notify_one();
  }

  // The writer's commit did not begin: the cache's files cannot be written
  // (sqlite::Transaction checks before each one). SQLite writes the -shm
  // through a shared mapping, and its first write to a page there after the
  // file became unwritable (chattr +i: ext4's page_mkwrite refuses it) would
  // be a SIGBUS, so nothing was tried. The batch is neither stored nor
  // acknowledged: its probers keep the results and send them again, and the
  // first commit that begins again ends the pause. Said when it begins, every
  // minute while it lasts, and when it ends.
  void cache_unwritable(const std::string& why, std::size_t datagrams) {
    auto now = tuning_.mono_now();
    if (!unwritable_since_) {
      unwritable_since_ = unwritable_reported_ = now;
      unwritable_datagrams_before_ = counters_.unwritable_datagrams.load();
      log_->error(
          "collector: cannot write the cache ({}); storing and acknowledging nothing until it can "
          "be written again (the probers keep their results and send them again)",
          why);
    } else if (now - unwritable_reported_ >= kUnwritableReportEvery) {
      unwritable_reported_ = now;
      log_->error(
          "collector: still cannot write the cache ({}) after {:.0f} s; {} datagrams left "
          "unacknowledged so far",
          why, std::chrono::duration<double>(now - *unwritable_since_).count(),
          counters_.unwritable_datagrams.load() - unwritable_datagrams_before_ + datagrams);
    }
    counters_.unwritable_datagrams += datagrams;
  }

  void cache_writable_again() {
    log_->info(
        "collector: the cache can be written again after {:.0f} s ({} datagrams were left "
        "unacknowledged meanwhile); storing and acknowledging resume",
        std::chrono::duration<double>(tuning_.mono_now() - *unwritable_since_).count(),
        counters_.unwritable_datagrams.load() - unwritable_datagrams_before_);
    unwritable_since_.reset();
  }

  void sync_loop() {
    bool failed = false;
    for (;;) {
      std::vector<PendingAcks> pending;
      {
        std::unique_lock lock(ack_mutex_);
        ack_ready_.wait(lock, [&] { return !acks_.empty() || writing_done_; });
        if (acks_.empty()) break;
        pending.swap(acks_);
      }
      if (failed) continue;  // stopping: nothing more is acknowledged
      std::uint64_t needed = 0;
      for (const auto& p : pending) needed = std::max(needed, p.after_commit);
      if (auto synced = cache_.sync(needed); !synced) {
        // Nothing written since can be trusted to be on disk: acknowledge
        // nothing more and stop.
        log_->error(
            "collector: fdatasync of the cache's WAL failed ({}); stopping, nothing "
            "more is acknowledged",
            synced.error().message);
        failed = true;
        request_exit(kExitFailure);
        continue;
      }
      // Recorded before the acks go out, so that a prober holding its ack
      // finds its datagram counted.
      auto acked = Mono::now();
      for (auto& p : pending) {
        for (const auto& a : p.spent) counters_.ack_delay.record(elapsed_ns(a.queued, acked));
        for (auto& list : p.lists) send_acks(list);
      }
    }
  }

  void send_acks(AckList& list) {
    auto ranges = to_ranges(std::move(list.seqs));
    for (std::size_t start = 0; start < ranges.size(); start += kMaxRangesPerAck) {
      wire::Message message;
      message.set_node(list.node);
      auto* ack = message.mutable_ack();
      ack->set_boot_epoch(list.boot_epoch);
      for (std::size_t i = start; i < std::min(ranges.size(), start + kMaxRangesPerAck); ++i) {
        auto* range = ack->add_ranges();
        range->set_first(ranges[i].first);
        range->set_last(ranges[i].second);
      }
      auto frame = seal(message, *list.key);
      if (::sendto(socket_, frame.data(), frame.size(), MSG_DONTWAIT,
                   reinterpret_cast<const sockaddr*>(&list.to.address), list.to.length) < 0) {
        rejects_.warn("collector: cannot ack node '{}' at {}: {}", list.node, list.to.to_string(),
                      std::strerror(errno));
        continue;
      }
      ++counters_.acks;
    }
  }

  void report() {
    const auto& c = counters_;
    log_->info(
        "collector: {} datagrams, {} results stored, {} duplicates, {} refused, {} acks, {} "
        "commits ({} failed), {} syncs ({} failed), {} checkpoints ({} failed, {} WAL restarts); "
        "rejected: {} malformed, {} unknown node, {} unknown key, {} retired key, {} "
        "bad seal, {} not results, {} bad results, {} outside the window; since start: ack delay "
        "p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms; commit p99 {:.1f} ms, WAL sync p99 {:.1f} ms",
        c.datagrams.load(), c.stored.load(), c.duplicates.load(), c.refused.load(), c.acks.load(),
        c.commits.load(), c.commit_failures.load(), c.syncs.load(), c.sync_failures.load(),
        c.checkpoints.load(), c.checkpoint_failures.load(), c.wal_restarts.load(),
        c.malformed.load(), c.unknown_node.load(), c.unknown_key.load(), c.retired_key.load(),
        c.bad_seal.load(), c.not_results.load(), c.bad_results.load(), c.outside_window.load(),
        c.ack_delay.percentile(0.5) / 1e6, c.ack_delay.percentile(0.99) / 1e6,
        static_cast<double>(c.ack_delay.max()) / 1e6, c.commit_time.percentile(0.99) / 1e6,
        c.sync_time.percentile(0.99) / 1e6);
  }

  const CollectorTuning tuning_;
  KeyRing keys_;
  std::shared_ptr<spdlog::logger> log_;
  RateLimitedLog rejects_;
  CollectorCounters counters_;  // before cache_, which counts into it
  CacheWriter cache_;           // the writer's commits, the syncer's syncs
  Endpoint local_;
  int socket_ = -1;
  int stop_fd_ = -1;
  std::atomic<bool> stopping_{false};
  // Since when the cache could not be written (cache_unwritable), when that
  // was last said, and unwritable_datagrams when it began; the writer's.
  std::optional<Mono::time_point> unwritable_since_;
  Mono::time_point unwritable_reported_{};
  std::uint64_t unwritable_datagrams_before_ = 0;

  std::mutex queue_mutex_;  // receiver -> writer
  std::condition_variable queue_ready_, queue_space_;
  std::deque<Accepted> queue_;
  std::size_t queued_results_ = 0;  // in queue_
  bool receiving_done_ = false;

  std::mutex ack_mutex_;  // writer -> syncer
  std::condition_variable ack_ready_;
  std::vector<PendingAcks> acks_;
  bool writing_done_ = false;

  std::thread receiver_, writer_, syncer_;
};

}  // namespace

std::unique_ptr<Collector> start_collector(const Config& config, const CollectorTuning& tuning) {
  // 0 would let the writer take no datagram, ever, and spin.
  if (tuning.max_batch_results == 0)
    throw std::invalid_argument("collector: max_batch_results must be at least 1");
  return std::make_unique<CollectorDaemon>(config, tuning);
}

}  // namespace flexmon
