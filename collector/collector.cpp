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
#include "common/log.h"
#include "common/seal.h"
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
  // which the sealing node reports only its own results.
  std::optional<wire::Message> check(std::string_view datagram, const Peer& from) {
    wire::Sealed frame;
    if (!frame.ParseFromArray(datagram.data(), static_cast<int>(datagram.size())) ||
        frame.version() != kWireVersion) {
      ++counters_.malformed;
      rejects_.warn("collector: dropped a malformed datagram ({} bytes) from {}", datagram.size(),
                    from.to_string());
      return std::nullopt;
    }
    if (!keys_.find(frame.node())) {
      ++counters_.unknown_node;
      rejects_.warn("collector: dropped a datagram of unknown node '{}' from {}",
                    frame.node().substr(0, 64), from.to_string());
      return std::nullopt;
    }
    auto message = keys_.open(datagram);
    if (!message) {
      ++counters_.bad_seal;
      rejects_.warn("collector: dropped a datagram from {}: {}", from.to_string(),
                    message.error().message);
      return std::nullopt;
    }
    if (!message->has_results()) {
      ++counters_.not_results;
      rejects_.warn("collector: dropped a datagram of node '{}' from {}: not a result batch",
                    message->node(), from.to_string());
      return std::nullopt;
    }
    std::string why;
    const auto& batch = message->results();
    if (batch.boot_epoch() == 0) why = "boot epoch 0";
    if (batch.results_size() == 0) why = "no results";
    for (const auto& r : batch.results()) {
      if (!why.empty()) break;
      if (r.src() != message->node())
        why = fmt::format("result {} has src '{}'", r.seq(), r.src().substr(0, 64));
      else if (r.seq() == 0)
        why = "a result has seq 0";
    }
    if (!why.empty()) {
      ++counters_.bad_results;
      rejects_.warn("collector: dropped a batch of node '{}' from {}: {}", message->node(),
                    from.to_string(), why);
      return std::nullopt;
    }
    return std::move(*message);
  }

  void handle(const std::vector<Accepted>& accepted) {
    if (accepted.empty()) return;
    // One group per (node, epoch); every datagram's results go in one commit.
    std::map<std::pair<std::string, std::uint64_t>, std::size_t> index;
    std::vector<Cache::StoreGroup> groups;
    std::map<std::tuple<std::string, std::uint64_t, Peer>, std::vector<std::uint64_t>> acks;
    for (const auto& a : accepted) {
      const auto& batch = a.message.results();
      auto key = std::make_pair(a.message.node(), batch.boot_epoch());
      auto [it, added] = index.emplace(key, groups.size());
      if (added) groups.push_back(Cache::StoreGroup{key.first, key.second, {}});
      auto& seqs = acks[{key.first, key.second, a.from}];
      for (const auto& r : batch.results()) {
        groups[it->second].results.push_back(&r);
        seqs.push_back(r.seq());
      }
    }
    std::vector<StoreOutcome> outcomes;
    try {
      outcomes = cache_.store_many(groups);
    } catch (const std::exception& e) {
      ++counters_.commit_failures;
      rejects_.warn("collector: commit of {} datagrams failed, not acknowledged: {}",
                    accepted.size(), e.what());
      return;
    }
    ++counters_.commits;
    for (const auto& o : outcomes) {
      counters_.stored += o.stored;
      counters_.duplicates += o.duplicates;
    }
    for (auto& [key, seqs] : acks)
      send_acks(std::get<0>(key), std::get<1>(key), std::get<2>(key), seqs);
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
        "results",
        c.datagrams.load(), c.stored.load(), c.duplicates.load(), c.acks.load(), c.commits.load(),
        c.commit_failures.load(), c.malformed.load(), c.unknown_node.load(), c.bad_seal.load(),
        c.not_results.load(), c.bad_results.load());
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
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Collector> start_collector(const Config& config) {
  return std::make_unique<CollectorDaemon>(config);
}

}  // namespace flexmon
