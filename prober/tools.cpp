// run_measurement and its helpers: dispatch by tool, addresses, clocks,
// sockets inside a network namespace, the bandwidth seal, JSON output, and
// the daemon's worker pool (ToolRunner).
#include "prober/tools.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <netdb.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/status.h"
#include "common/tool.h"
#include "prober/tools_internal.h"
#include "wire.pb.h"

namespace flexmon::prober {

namespace tools {

std::string Address::to_string() const {
  char text[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(storage).sin_addr, text, sizeof text);
  else if (family() == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(storage).sin6_addr, text,
              sizeof text);
  return text;
}

std::optional<Address> resolve(const std::string& host, std::uint16_t port, std::string& error) {
  if (host.empty()) {
    error = "no target address";
    return std::nullopt;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* list = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &list);
  if (rc != 0 || !list) {
    error = fmt::format("cannot resolve '{}': {}", host, gai_strerror(rc));
    return std::nullopt;
  }
  const addrinfo* pick = list;
  for (const addrinfo* a = list; a; a = a->ai_next)
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  Address out;
  std::memcpy(&out.storage, pick->ai_addr, pick->ai_addrlen);
  out.length = pick->ai_addrlen;
  if (out.family() == AF_INET)
    reinterpret_cast<sockaddr_in&>(out.storage).sin_port = htons(port);
  else if (out.family() == AF_INET6)
    reinterpret_cast<sockaddr_in6&>(out.storage).sin6_port = htons(port);
  freeaddrinfo(list);
  return out;
}

bool bind_source(int fd, const std::string& source, int family, std::string& error) {
  if (source.empty()) return true;
  std::string e;
  auto a = resolve(source, 0, e);
  if (!a || a->family() != family) {
    error = fmt::format("source address '{}' unusable for this target", source);
    return false;
  }
  if (::bind(fd, a->get(), a->length) != 0) {
    error = fmt::format("bind {}: {}", source, std::strerror(errno));
    return false;
  }
  return true;
}

std::int64_t mono_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

void sleep_until(std::int64_t deadline) {
  timespec t{static_cast<time_t>(deadline / 1'000'000'000),
             static_cast<long>(deadline % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, nullptr) == EINTR) {
  }
}

void min_timer_slack() { prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); }

int poll_or_stop(pollfd* fds, std::size_t count, std::int64_t timeout_ns,
                 const ToolContext& context) {
  timespec t{static_cast<time_t>(std::max<std::int64_t>(0, timeout_ns) / 1'000'000'000),
             static_cast<long>(std::max<std::int64_t>(0, timeout_ns) % 1'000'000'000)};
  if (context.stop_fd < 0) return ::ppoll(fds, count, &t, nullptr);
  std::vector<pollfd> all(fds, fds + count);
  all.push_back({context.stop_fd, POLLIN, 0});
  int n = ::ppoll(all.data(), all.size(), &t, nullptr);
  if (n <= 0) return n;
  if (all.back().revents) --n;
  for (std::size_t i = 0; i < count; ++i) fds[i].revents = all[i].revents;
  return n;
}

std::array<std::uint8_t, kSealBytes> seal16(const Sealer& key, const std::uint8_t* data,
                                            std::size_t size) {
  auto full = key.mac(std::string_view(reinterpret_cast<const char*>(data), size));
  std::array<std::uint8_t, kSealBytes> out{};
  std::memcpy(out.data(), full.data(), kSealBytes);
  return out;
}

}  // namespace tools

namespace {

// What a file that is not a network namespace is, for the message that refuses it.
std::string file_kind(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFIFO:
      return "a FIFO";
    case S_IFREG:
      return "a regular file";
    case S_IFDIR:
      return "a directory";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    case S_IFSOCK:
      return "a socket";
    default:
      return fmt::format("a file of type {:o}", mode & S_IFMT);
  }
}

std::string namespace_kind(int type) {
  switch (type) {
    case CLONE_NEWNS:
      return "a mount namespace";
    case CLONE_NEWUTS:
      return "a UTS namespace";
    case CLONE_NEWIPC:
      return "an IPC namespace";
    case CLONE_NEWUSER:
      return "a user namespace";
    case CLONE_NEWPID:
      return "a PID namespace";
    case CLONE_NEWCGROUP:
      return "a cgroup namespace";
    default:
      return fmt::format("a namespace of type {:#x}", type);
  }
}

// An fd of network namespace `path` for setns(), or -1 with `error` naming
// the path and what it is instead. Never blocks and has no side effect on
// the file: a FIFO or a device opened for reading may wait for a writer or
// act on the open, so the path is first opened with O_PATH (no open of the
// file itself), and only a file of nsfs is then opened for reading, through
// that very descriptor (/proc/self/fd), so the file checked is the file used.
int open_netns(const std::string& path, std::string& error) {
  int probe = ::open(path.c_str(), O_PATH | O_CLOEXEC);
  if (probe < 0) {
    error = fmt::format("netns {}: {}", path, std::strerror(errno));
    return -1;
  }
  struct stat st {};
  struct statfs fs {};
  if (::fstat(probe, &st) != 0 || ::fstatfs(probe, &fs) != 0) {
    error = fmt::format("netns {}: {}", path, std::strerror(errno));
    ::close(probe);
    return -1;
  }
  if (fs.f_type != NSFS_MAGIC) {
    error = fmt::format("netns {}: {}, not a network namespace", path, file_kind(st.st_mode));
    ::close(probe);
    return -1;
  }
  int fd = ::open(fmt::format("/proc/self/fd/{}", probe).c_str(), O_RDONLY | O_CLOEXEC);
  int saved = errno;
  ::close(probe);
  if (fd < 0) {
    error = fmt::format("netns {}: {}", path, std::strerror(saved));
    return -1;
  }
  int type = ::ioctl(fd, NS_GET_NSTYPE);
  if (type >= 0 && type != CLONE_NEWNET) {
    error = fmt::format("netns {}: {}, not a network namespace", path, namespace_kind(type));
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int open_socket_in(const std::string& netns, int domain, int type, int protocol,
                   std::string& error) {
  if (netns.empty()) {
    int fd = ::socket(domain, type | SOCK_CLOEXEC, protocol);
    if (fd < 0) error = fmt::format("socket: {}", std::strerror(errno));
    return fd;
  }
  std::string path = netns.find('/') == std::string::npos ? "/run/netns/" + netns : netns;
  int target = open_netns(path, error);
  if (target < 0) return -1;
  int fd = -1;
  // setns() changes only the calling thread: a helper thread enters the
  // namespace, creates the socket (which keeps that namespace) and returns.
  std::thread helper([&] {
    int own = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (setns(target, CLONE_NEWNET) != 0) {
      error = fmt::format("setns {}: {}", path, std::strerror(errno));
    } else {
      fd = ::socket(domain, type | SOCK_CLOEXEC, protocol);
      if (fd < 0) error = fmt::format("socket in {}: {}", path, std::strerror(errno));
      if (own >= 0) setns(own, CLONE_NEWNET);
    }
    if (own >= 0) ::close(own);
  });
  helper.join();
  ::close(target);
  return fd;
}

wire::Result new_result(const std::string& stream_key, const std::string& tool,
                        const std::string& node, const std::string& dst, std::int64_t start_ns) {
  wire::Result r;
  r.set_stream(stream_key);
  r.set_tool(tool);
  r.set_src(node);
  r.set_dst(dst);
  r.set_start_ns(start_ns);
  return r;
}

wire::Result new_result(const wire::Stream& stream, const std::string& node) {
  return new_result(stream.key(), stream.tool(), node, stream.dst(), utc_now_ns());
}

std::string check_tool_args(const wire::Stream& s) {
  auto tool = parse_tool(s.tool());
  if (!tool) return fmt::format("tool '{}' is not one of latency, abw, throughput", s.tool());
  if (*tool == Tool::kLatency) {
    const auto& m = s.latency().method();
    if (m != "udp" && m != "icmp" && m != "tcp")
      return fmt::format("latency method '{}' is not one of udp, icmp, tcp", m);
    if (m == "udp" && s.latency().size() < 16) return "udp probes need size >= 16";
    return {};
  }
  if (*tool == Tool::kAbw) {
    const auto& a = s.abw();
    if (a.max_rate_bps() < 100'000) return "abw: max_rate_bps must be >= 100000";
    if (a.max_bytes() < 100'000) return "abw: max_bytes must be >= 100000";
    if (a.max_duration_ms() < 200) return "abw: max_duration_ms must be >= 200";
    return {};
  }
  if (s.throughput().duration_ms() < 100) return "throughput: duration_ms must be >= 100";
  return {};
}

wire::Result run_measurement(const wire::Stream& stream, const ToolContext& context) {
  if (auto why = check_tool_args(stream); !why.empty()) {
    wire::Result r = new_result(stream, context.node);
    r.set_status(wire::ERROR);
    r.set_error(why);
    return r;
  }
  switch (*parse_tool(stream.tool())) {  // checked above
    case Tool::kAbw:
      return tools::measure_abw(stream, context);
    case Tool::kThroughput:
      return tools::measure_throughput(stream, context);
    case Tool::kLatency:
      break;
  }
  return tools::measure_latency(stream, context);
}

std::string result_json(const wire::Result& r) {
  nlohmann::ordered_json j;
  j["stream"] = r.stream();
  j["tool"] = r.tool();
  j["src"] = r.src();
  j["dst"] = r.dst();
  j["start_ns"] = r.start_ns();
  j["start"] = format_utc(r.start_ns());
  j["status"] = std::string(status_name(r.status()));
  if (!r.error().empty()) j["error"] = r.error();
  if (r.has_latency()) {
    const auto& l = r.latency();
    auto& o = j["latency"];
    o["sent"] = l.sent();
    o["received"] = l.received();
    o["duplicates"] = l.duplicates();
    o["loss_pct"] = l.sent() ? 100.0 * (l.sent() - std::min(l.sent(), l.received())) / l.sent() : 0;
    o["min_ns"] = l.min_ns();
    o["avg_ns"] = l.avg_ns();
    o["median_ns"] = l.median_ns();
    o["max_ns"] = l.max_ns();
    o["stddev_ns"] = l.stddev_ns();
    o["rtt_ns"] = std::vector<std::int64_t>(l.rtt_ns().begin(), l.rtt_ns().end());
  }
  if (r.has_abw()) {
    const auto& a = r.abw();
    j["abw"] = {{"estimate_bps", a.estimate_bps()},
                {"lower_bps", a.lower_bps()},
                {"upper_bps", a.upper_bps()},
                {"bytes_sent", a.bytes_sent()},
                {"duration_ns", a.duration_ns()}};
  }
  if (r.has_throughput()) {
    const auto& t = r.throughput();
    j["throughput"] = {{"throughput_bps", t.throughput_bps()},
                       {"bytes_sent", t.bytes_sent()},
                       {"duration_ns", t.duration_ns()}};
  }
  if (r.has_outage()) {
    const auto& o = r.outage();
    j["outage"] = {{"start_ns", o.start_ns()},
                   {"end_ns", o.end_ns()},
                   {"probes_sent", o.probes_sent()},
                   {"resolution_ns", o.resolution_ns()}};
  }
  return j.dump();
}

struct ToolRunner::Impl {
  ToolContext context;
  std::atomic<bool> stopping{false};
  int stop_fd = -1;  // readable once stopping: wakes the measurements' waits
  std::mutex mutex;
  std::condition_variable wake;
  struct Job {
    wire::Stream stream;
    Done done;
    std::optional<wire::Result> outage_of;  // set: follow an outage, not measure
  };
  std::deque<Job> queue;
  std::mutex bandwidth;  // one abw / throughput measurement at a time per node
  std::vector<std::thread> workers;

  void work() {
    tools::min_timer_slack();
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mutex);
        wake.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;
        job = std::move(queue.front());
        queue.pop_front();
      }
      wire::Result r;
      if (job.outage_of) {
        r = std::move(*job.outage_of);
        prober::follow_outage(job.stream, context, r);
      } else if (parse_tool(job.stream.tool()) == Tool::kLatency) {
        r = run_measurement(job.stream, context);
      } else {
        std::lock_guard lock(bandwidth);
        r = run_measurement(job.stream, context);
      }
      if (job.done && !stopping) job.done(std::move(r));
    }
  }
};

ToolRunner::ToolRunner(ToolContext context, unsigned threads) : impl_(std::make_unique<Impl>()) {
  impl_->context = std::move(context);
  impl_->context.stop = &impl_->stopping;
  impl_->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl_->stop_fd < 0)
    throw std::runtime_error(fmt::format("prober: eventfd: {}", std::strerror(errno)));
  impl_->context.stop_fd = impl_->stop_fd;
  for (unsigned i = 0; i < std::max(1U, threads); ++i)
    impl_->workers.emplace_back([this] { impl_->work(); });
}

ToolRunner::~ToolRunner() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(impl_->stop_fd, &one, sizeof one);
  impl_->wake.notify_all();
  for (auto& t : impl_->workers) t.join();
  ::close(impl_->stop_fd);
}

void ToolRunner::measure(const wire::Stream& stream, Done done) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->queue.push_back({stream, std::move(done), std::nullopt});
  }
  impl_->wake.notify_one();
}

void ToolRunner::follow_outage(const wire::Stream& stream, wire::Result result, Done done) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->queue.push_back({stream, std::move(done), std::move(result)});
  }
  impl_->wake.notify_one();
}

}  // namespace flexmon::prober
