#include "collector/collector.h"

#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "cache/cache.h"
#include "collector/datagram.h"
#include "collector/window.h"
#include "common/log.h"
#include "common/seal.h"
#include "common/sqlite.h"
#include "wire.pb.h"

namespace flexmon {

namespace {

using Mono = std::chrono::steady_clock;

// A group commit takes what has arrived, up to this many datagrams or for up
// to this long, whichever comes first.
constexpr std::size_t kMaxBatchDatagrams = 512;
constexpr auto kMaxBatchTime = std::chrono::milliseconds(5);
// Ack datagrams stay small: at most this many ranges each.
constexpr int kMaxRangesPerAck = 64;

// At most `burst` messages per `window`; the rest are counted and summarised,
// so a flood of bad datagrams cannot flood the log.
class RateLimitedLog {
 public:
  RateLimitedLog(std::shared_ptr<spdlog::logger> log, int burst, std::chrono::seconds window)
      : log_(std::move(log)), burst_(burst), window_(window) {}

  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    auto now = Mono::now();
    if (now - window_start_ >= window_) {
      if (suppressed_ > 0)
        log_->warn("{} similar messages suppressed in the last {} s", suppressed_, window_.count());
      window_start_ = now;
      in_window_ = 0;
      suppressed_ = 0;
    }
    if (in_window_++ < burst_)
      log_->warn(format, std::forward<Args>(args)...);
    else
      ++suppressed_;
  }

 private:
  std::shared_ptr<spdlog::logger> log_;
  int burst_;
  std::chrono::seconds window_;
  Mono::time_point window_start_{};
  int in_window_ = 0;
  std::uint64_t suppressed_ = 0;
};

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
  wire::Message message;
};

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

class CollectorDaemon : public Collector {
 public:
  explicit CollectorDaemon(const Config& config)
      : cache_(config.collector.cache_db),
        log_(logger("collector")),
        rejects_(log_, 20, std::chrono::seconds(10)) {
    for (const auto& node : config.nodes) keys_.add(node.id, node.key);
    // FULL: every commit is fsynced (WAL) before it is acknowledged, so an ack
    // survives power loss as well as a crash (schemas/wire.md, stable commit).
    cache_.database().exec("PRAGMA synchronous=FULL");
    // The indexes of `results` stay in memory while a batch is inserted.
    cache_.database().exec("PRAGMA cache_size=-65536");
    windows_ = load_windows(cache_.database());
    bind(config.collector.listen);
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) throw std::runtime_error(fmt::format("eventfd: {}", std::strerror(errno)));
    log_->info("collector: listening on UDP {}, cache {}, {} nodes", local_.to_string(),
               config.collector.cache_db.string(), config.nodes.size());
    thread_ = std::thread([this] { run(); });
  }

  ~CollectorDaemon() override {
    stop();
    wait();
    if (socket_ >= 0) ::close(socket_);
    if (stop_fd_ >= 0) ::close(stop_fd_);
  }

  void stop() override {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
  }

  void wait() override {
    if (thread_.joinable()) thread_.join();
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
    int buffer = 4 << 20;  // ride out bursts while a commit runs
    setsockopt(socket_, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    Peer bound;
    bound.length = sizeof bound.address;
    getsockname(socket_, reinterpret_cast<sockaddr*>(&bound.address), &bound.length);
    auto text = bound.to_string();
    local_.host = listen.host;
    local_.port = static_cast<std::uint16_t>(std::stoi(text.substr(text.rfind(':') + 1)));
  }

  void run() {
    auto last_report = Mono::now();
    for (;;) {
      pollfd fds[2] = {{socket_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      int n = ::poll(fds, 2, 1000);
      if (n < 0 && errno != EINTR) {
        log_->error("collector: poll: {}", std::strerror(errno));
        return;
      }
      if (fds[1].revents) return;
      if (n > 0 && fds[0].revents) {
        try {
          handle(drain());
        } catch (const std::exception& e) {
          rejects_.warn("collector: unexpected failure handling a batch: {}", e.what());
        }
      }
      if (Mono::now() - last_report >= std::chrono::seconds(60)) {
        last_report = Mono::now();
        report();
      }
    }
  }

  std::vector<Accepted> drain() {
    std::vector<Accepted> accepted;
    auto deadline = Mono::now() + kMaxBatchTime;
    for (std::size_t i = 0; i < kMaxBatchDatagrams && Mono::now() < deadline; ++i) {
      Peer from;
      from.length = sizeof from.address;
      ssize_t n = ::recvfrom(socket_, buffer_.data(), buffer_.size(), MSG_DONTWAIT,
                             reinterpret_cast<sockaddr*>(&from.address), &from.length);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        continue;  // e.g. ICMP for an earlier ack
      }
      ++counters_.datagrams;
      if (auto message = check(std::string_view(buffer_.data(), static_cast<std::size_t>(n)), from))
        accepted.push_back(Accepted{from, std::move(*message)});
    }
    return accepted;
  }

  // The message if the datagram is a well-formed, verified result batch in
  // which the sealing node reports only its own results (collector/datagram.h).
  std::optional<wire::Message> check(std::string_view datagram, const Peer& from) {
    auto decoded = decode_result_datagram(datagram, keys_);
    switch (decoded.reject) {
      case DatagramReject::none:
        return std::move(decoded.message);
      case DatagramReject::malformed:
        ++counters_.malformed;
        break;
      case DatagramReject::unknown_node:
        ++counters_.unknown_node;
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
    return std::nullopt;
  }

  // Sorts the drained results into fresh (stored now), duplicates (acked
  // again) and outside the window (dropped); commits the fresh ones with the
  // windows that record them in one transaction; then acks.
  void handle(const std::vector<Accepted>& accepted) {
    if (accepted.empty()) return;
    std::map<WindowKey, std::size_t> index;
    std::vector<Cache::StoreGroup> groups;
    std::map<WindowKey, SeqWindow> touched;  // windows as they will be after the commit
    std::map<std::tuple<std::string, std::uint64_t, Peer>, std::vector<std::uint64_t>> acks;
    std::uint64_t duplicates = 0, outside = 0;
    for (const auto& a : accepted) {
      const auto& batch = a.message.results();
      WindowKey key{a.message.node(), batch.boot_epoch()};
      auto w = touched.find(key);
      if (w == touched.end()) {
        auto committed = windows_.find(key);
        w = touched.emplace(key, committed != windows_.end() ? committed->second : SeqWindow{})
                .first;
      }
      auto& seqs = acks[{key.first, key.second, a.from}];
      for (const auto& r : batch.results()) {
        switch (w->second.classify(r.seq())) {
          case SeqWindow::Verdict::duplicate:
            ++duplicates;
            seqs.push_back(r.seq());
            break;
          case SeqWindow::Verdict::outside:
            ++outside;
            break;
          case SeqWindow::Verdict::fresh: {
            w->second.add(r.seq());
            auto [g, added] = index.emplace(key, groups.size());
            if (added) groups.push_back(Cache::StoreGroup{key.first, key.second, {}});
            groups[g->second].results.push_back(&r);
            seqs.push_back(r.seq());
            break;
          }
        }
      }
    }
    if (outside > 0) {
      counters_.outside_window += outside;
      rejects_.warn("collector: dropped {} results outside the window of {} seqs", outside,
                    kSeqWindow);
    }
    if (!groups.empty()) {
      std::vector<StoreOutcome> outcomes;
      try {
        outcomes = cache_.store_many(groups, [&](sqlite::Database& db) {
          std::map<WindowKey, SeqWindow> changed;
          for (const auto& g : groups) {
            WindowKey key{g.node, g.boot_epoch};
            changed.emplace(key, touched.at(key));
          }
          save_windows(db, changed);
        });
      } catch (const std::exception& e) {
        ++counters_.commit_failures;
        rejects_.warn("collector: commit of {} datagrams failed, not acknowledged: {}",
                      accepted.size(), e.what());
        return;
      }
      ++counters_.commits;
      for (const auto& o : outcomes) {
        counters_.stored += o.stored;
        // Present in the results but not in the window: a cache written before
        // the window existed. Still stored once (UNIQUE), still acked.
        counters_.duplicates += o.duplicates;
      }
      for (const auto& g : groups) {
        WindowKey key{g.node, g.boot_epoch};
        windows_.insert_or_assign(key, touched.at(key));
      }
    }
    counters_.duplicates += duplicates;
    for (auto& [key, seqs] : acks)
      if (!seqs.empty()) send_acks(std::get<0>(key), std::get<1>(key), std::get<2>(key), seqs);
  }

  void send_acks(const std::string& node, std::uint64_t epoch, const Peer& to,
                 std::vector<std::uint64_t> seqs) {
    const Sealer* key = keys_.find(node);
    auto ranges = to_ranges(std::move(seqs));
    for (std::size_t start = 0; start < ranges.size(); start += kMaxRangesPerAck) {
      wire::Message message;
      message.set_node(node);
      auto* ack = message.mutable_ack();
      ack->set_boot_epoch(epoch);
      for (std::size_t i = start; i < std::min(ranges.size(), start + kMaxRangesPerAck); ++i) {
        auto* range = ack->add_ranges();
        range->set_first(ranges[i].first);
        range->set_last(ranges[i].second);
      }
      auto frame = seal(message, *key);
      if (::sendto(socket_, frame.data(), frame.size(), MSG_DONTWAIT,
                   reinterpret_cast<const sockaddr*>(&to.address), to.length) < 0) {
        rejects_.warn("collector: cannot ack node '{}' at {}: {}", node, to.to_string(),
                      std::strerror(errno));
        continue;
      }
      ++counters_.acks;
    }
  }

  void report() {
    const auto& c = counters_;
    log_->info(
        "collector: {} datagrams, {} results stored, {} duplicates, {} acks, {} commits ({} "
        "failed); rejected: {} malformed, {} unknown node, {} bad seal, {} not results, {} bad "
        "results, {} outside the window",
        c.datagrams.load(), c.stored.load(), c.duplicates.load(), c.acks.load(), c.commits.load(),
        c.commit_failures.load(), c.malformed.load(), c.unknown_node.load(), c.bad_seal.load(),
        c.not_results.load(), c.bad_results.load(), c.outside_window.load());
  }

  Cache cache_;  // used by the receiver thread only, once started
  KeyRing keys_;
  std::shared_ptr<spdlog::logger> log_;
  RateLimitedLog rejects_;
  CollectorCounters counters_;
  Endpoint local_;
  int socket_ = -1;
  int stop_fd_ = -1;
  std::array<char, 65536> buffer_{};
  std::map<WindowKey, SeqWindow> windows_;  // as committed
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Collector> start_collector(const Config& config) {
  return std::make_unique<CollectorDaemon>(config);
}

}  // namespace flexmon
