// flexmon-netlab-relay: a delay/jitter emulator between two TUN devices.
//
// The relay attaches to two existing (persistent) TUN devices, each possibly in
// another network namespace, reads every IP packet from one side, holds it
// for `delay + jitter` and writes it to the other side. Order is kept per
// direction (FIFO):
//
//   release = max(previous release, arrival + delay + jitter)
//
// Jitter is drawn from a seeded std::mt19937_64:
//   uniform: jitter ~ U(-J, +J)          (mean delay = D while D >= J)
//   normal:  jitter ~ N(0, J) clamped to [-D, 4J]
// and the sum is clamped at 0.
//
// Arrival: by default the hold runs from the kernel's stamp of the moment the
// packet entered the TUN device (a packet socket on each device sees every
// packet the stack transmits there, stamped with SO_TIMESTAMPNS before it is
// queued for the relay), not from the relay's read. The relay's wake-up and
// read (tens to hundreds of microseconds in a VM, varying from minute to
// minute) are then part of the delay instead of added to it, so a link of
// delay D adds D, not D plus the relay's own latency. --arrival read holds
// from the read instead.
//
// Timing: CLOCK_MONOTONIC absolute deadlines on a timerfd armed `spin` early,
// then a busy-wait until the deadline (the TUN fds are still drained while
// spinning). Timer slack is set to 1 ns. By
// default the spin margin adapts: it follows the ~95th percentile of the last
// 64 observed timerfd wake-up latencies plus 10 us, within [20 us, 1 ms], so
// a machine with slow wake-ups (VMs) spins longer and a quiet one barely.
//
// Scheduling (best effort each; a refusal is logged and the relay runs
// anyway): --rt N runs it SCHED_FIFO, --cpu N on that one CPU; its memory is
// locked. Why one CPU: the far host's echo runs inside the relay's write(),
// so its cost (5 us to 50 us here) depends on the state of the CPU the relay
// is on; relays of links that are compared with each other give each the
// same CPU state when they share the CPU.
//
// Output: one line "ready" on stdout once both devices are attached; on exit
// (SIGTERM/SIGINT, or when a device disappears) a statistics line on stderr.
// SIGUSR1 prints the statistics without exiting.
//
// Ground truth per packet (--truth FILE): for every ICMP echo request or reply
// it releases, the relay appends "DIR TYPE ID SEQ HELD_NS" (DIR ab or ba,
// HELD_NS = write time - arrival time: the delay it really applied, jitter and
// its own lateness included). A benchmark pairs a request with its reply and
// gets the emulated part of each probe's RTT exactly, free of the jitter's
// sampling noise.

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
// net/if.h before linux/if.h: the kernel header then leaves out what libc defines.
#include <linux/filter.h>
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_dump = 0;

void OnSignal(int sig) {
  if (sig == SIGUSR1) {
    g_dump = 1;
  } else {
    g_stop = 1;
  }
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "flexmon-netlab-relay: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// One direction's settings.
struct DirConfig {
  int64_t delay_ns = 0;
  int64_t jitter_ns = 0;
};

struct Config {
  std::string a_ns, a_dev, b_ns, b_dev;  // netns name ("" = current) and device
  DirConfig ab, ba;
  bool normal = false;  // jitter distribution
  uint64_t seed = 1;
  int64_t spin_ns = -1;  // busy-wait before each release; -1 = adaptive
  bool poll = false;     // never sleep (lowest error, one core at 100 %)
  size_t queue_packets = 4096;
  size_t slot_bytes = 2048;  // >= MTU of the TUN devices
  bool die_with_parent = false;
  int rt_priority = 0;         // SCHED_FIFO priority, 0 = normal scheduling
  int cpu = -1;                // the one CPU to run on, -1 = any
  std::string truth_path;      // per-packet log of ICMP echo hold times, "" = none
  bool kernel_arrival = true;  // hold from the kernel's transmit stamp, not the read
};

// Runs `open_fd` inside network namespace `ns` ("" = the current one) and
// returns to the relay's own namespace afterwards.
template <typename OpenFd>
int InNamespace(const std::string& ns, OpenFd open_fd) {
  int self_ns = -1;
  if (!ns.empty()) {
    self_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self_ns < 0) Die("open /proc/self/ns/net");
    std::string path = "/run/netns/" + ns;
    int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (target < 0) Die("open " + path);
    if (setns(target, CLONE_NEWNET) != 0) Die("setns " + path);
    close(target);
  }
  int fd = open_fd();
  if (self_ns >= 0) {
    if (setns(self_ns, CLONE_NEWNET) != 0) Die("setns back");
    close(self_ns);
  }
  return fd;
}

// Opens /dev/net/tun attached to device `dev` in network namespace `ns`.
int OpenTun(const std::string& ns, const std::string& dev) {
  return InNamespace(ns, [&] {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) Die("open /dev/net/tun");
    ifreq ifr{};
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (dev.size() >= IFNAMSIZ) {
      errno = ENAMETOOLONG;
      Die("device " + dev);
    }
    std::memcpy(ifr.ifr_name, dev.data(), dev.size());
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) Die("TUNSETIFF " + dev + " in netns '" + ns + "'");
    return fd;
  });
}

// Opens a packet socket that sees every packet the stack of namespace `ns`
// transmits on `dev`, stamped by the kernel (SO_TIMESTAMPNS) as it enters the
// device, before the TUN queue. Returns -1 (errno set) when the kernel refuses.
int OpenArrivalTap(const std::string& ns, const std::string& dev) {
  return InNamespace(ns, [&] {
    // Protocol 0 until bound: the socket sees nothing before its filter is on.
    int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    // Outgoing packets only (the relay's own writes come in on the same device).
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_PKTTYPE)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0xFFFF),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
    int on = 1, rcvbuf = 4 << 20;
    unsigned index = if_nametoindex(dev.c_str());
    sockaddr_ll addr{};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = static_cast<int>(index);
    if (index == 0 || setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0 ||
        bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      int saved = errno;
      close(fd);
      errno = saved;
      return -1;
    }
    // Room for a burst while the relay sleeps; best effort (falls back to rmem_max).
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    return fd;
  });
}

// The kernel's transmit time of each packet the relay reads from a TUN
// device, from the device's arrival tap (OpenArrivalTap). The tap sees the
// same packets in the same order as the TUN queue, plus any the TUN queue
// dropped, so each packet read is matched to the first stamp whose packet has
// the same length and leading bytes; stamps skipped over belong to dropped
// packets. Without a match (the tap's own buffer overflowed) the read time
// stands in and the packet is counted as unstamped.
class ArrivalTap {
 public:
  explicit ArrivalTap(int fd) : fd_(fd) {}

  // Kernel arrival on CLOCK_MONOTONIC of the packet just read, if known.
  std::optional<int64_t> Arrival(const uint8_t* packet, size_t len) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      for (size_t i = 0; i < count_; ++i) {
        const Entry& e = ring_[(head_ + i) % kRing];
        if (e.len == len && std::memcmp(e.head, packet, std::min(len, kHeadBytes)) == 0) {
          skipped_ += i;
          head_ = (head_ + i + 1) % kRing;
          count_ -= i + 1;
          ++stamped_;
          return e.mono_ns;
        }
      }
      Fill();  // the stamp is queued before the packet reaches the TUN queue
    }
    ++unstamped_;
    return std::nullopt;
  }

  void Print(const char* name) const {
    std::fprintf(stderr,
                 "flexmon-netlab-relay: %s arrival=kernel stamped=%" PRIu64 " unstamped=%" PRIu64
                 " tap_skipped=%" PRIu64 "\n",
                 name, stamped_, unstamped_, skipped_);
  }

 private:
  static constexpr size_t kRing = 4096;
  static constexpr size_t kHeadBytes = 64;  // IPv4 + ICMP/UDP/TCP headers and some payload
  static constexpr unsigned kBatch = 64;
  struct Entry {
    int64_t mono_ns;
    size_t len;
    uint8_t head[kHeadBytes];
  };

  // Reads every stamp waiting on the tap (bounded), oldest first.
  void Fill() {
    timespec real{}, mono{};
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    const int64_t real_minus_mono =
        (int64_t{real.tv_sec} - mono.tv_sec) * 1'000'000'000 + (real.tv_nsec - mono.tv_nsec);
    for (int round = 0; round < 16; ++round) {
      std::array<mmsghdr, kBatch> msgs{};
      std::array<iovec, kBatch> iovs{};
      for (unsigned i = 0; i < kBatch; ++i) {
        iovs[i] = {bufs_[i].data(), kHeadBytes};
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = controls_[i].data();
        msgs[i].msg_hdr.msg_controllen = controls_[i].size();
      }
      // MSG_TRUNC: each msg_len is the packet's real length, not the copied part.
      int n = recvmmsg(fd_, msgs.data(), kBatch, MSG_DONTWAIT | MSG_TRUNC, nullptr);
      if (n <= 0) return;
      for (int i = 0; i < n; ++i) {
        int64_t stamp = 0;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c;
             c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            timespec ts;
            std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
            stamp = int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec - real_minus_mono;
          }
        }
        if (stamp == 0) continue;
        if (count_ == kRing) {  // oldest stamp lost: its packet will not match
          head_ = (head_ + 1) % kRing;
          --count_;
        }
        Entry& e = ring_[(head_ + count_++) % kRing];
        e.mono_ns = stamp;
        e.len = msgs[i].msg_len;
        std::memcpy(e.head, bufs_[i].data(), std::min<size_t>(e.len, kHeadBytes));
      }
      if (static_cast<unsigned>(n) < kBatch) return;
    }
  }

  int fd_;
  std::array<Entry, kRing> ring_{};
  size_t head_ = 0, count_ = 0;
  std::array<std::array<uint8_t, kHeadBytes>, kBatch> bufs_{};
  std::array<std::array<char, CMSG_SPACE(sizeof(timespec))>, kBatch> controls_{};
  uint64_t stamped_ = 0, unstamped_ = 0, skipped_ = 0;
};

// Fixed-capacity FIFO of packets with their release deadlines.
class PacketQueue {
 public:
  PacketQueue(size_t capacity, size_t slot_bytes)
      : slot_bytes_(slot_bytes),
        data_(capacity * slot_bytes),
        len_(capacity),
        due_(capacity),
        arrived_(capacity) {}

  bool Empty() const { return count_ == 0; }
  bool Full() const { return count_ == len_.size(); }
  int64_t HeadDue() const { return due_[head_]; }
  int64_t HeadArrived() const { return arrived_[head_]; }
  int64_t LastDue() const { return last_due_; }

  // Returns the slot to read the next packet into (valid while !Full()).
  uint8_t* TailSlot() { return &data_[Tail() * slot_bytes_]; }
  void Push(size_t len, int64_t arrived, int64_t due) {
    size_t t = Tail();
    len_[t] = len;
    due_[t] = due;
    arrived_[t] = arrived;
    last_due_ = due;
    ++count_;
  }
  const uint8_t* HeadData() const { return &data_[head_ * slot_bytes_]; }
  size_t HeadLen() const { return len_[head_]; }
  void Pop() {
    head_ = (head_ + 1) % len_.size();
    --count_;
  }

 private:
  size_t Tail() const { return (head_ + count_) % len_.size(); }
  size_t slot_bytes_;
  std::vector<uint8_t> data_;
  std::vector<size_t> len_;
  std::vector<int64_t> due_;
  std::vector<int64_t> arrived_;
  size_t head_ = 0, count_ = 0;
  int64_t last_due_ = 0;
};

struct Stats {
  uint64_t packets = 0, bytes = 0, queue_drops = 0, oversize_drops = 0, write_errors = 0;
  std::vector<int32_t> late_ns;  // release lateness samples (bounded reservoir)
};

// One direction: read from `in`, delay, write to `out`.
class Direction {
 public:
  Direction(const char* name, int in, int out, ArrivalTap* tap, const DirConfig& cfg,
            const Config& all, std::mt19937_64* rng, FILE* truth)
      : name_(name),
        in_(in),
        tap_(tap),
        out_(out),
        cfg_(cfg),
        normal_(all.normal),
        rng_(rng),
        queue_(all.queue_packets, all.slot_bytes),
        slot_bytes_(all.slot_bytes),
        scratch_(65536),
        truth_(truth) {
    stats_.late_ns.reserve(kMaxSamples);
  }

  // Reads every packet that is waiting. Returns false if the device is gone.
  bool Drain() {
    for (int i = 0; i < 256; ++i) {  // bounded so one side cannot starve the other
      uint8_t* buf = queue_.Full() ? scratch_.data() : queue_.TailSlot();
      size_t cap = queue_.Full() ? scratch_.size() : slot_bytes_;
      ssize_t n = read(in_, buf, cap);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        return false;  // EBADFD / EIO: device removed
      }
      if (n == 0) return true;
      const int64_t now = NowNs();
      if (queue_.Full()) {
        ++stats_.queue_drops;
        continue;
      }
      if (static_cast<size_t>(n) >= cap) {  // possibly truncated: bigger than a slot
        ++stats_.oversize_drops;
        continue;
      }
      // The hold runs from when the packet entered the device, so the time
      // the relay took to wake up and read it is part of the delay, not added.
      int64_t arrived = now;
      if (tap_) {
        std::optional<int64_t> stamp = tap_->Arrival(buf, static_cast<size_t>(n));
        if (stamp && *stamp <= now && now - *stamp < kMaxArrivalAge) arrived = *stamp;
      }
      int64_t due = std::max(arrived, arrived + cfg_.delay_ns + Jitter());
      if (!queue_.Empty() || have_last_) due = std::max(due, queue_.LastDue());
      have_last_ = true;
      queue_.Push(static_cast<size_t>(n), arrived, due);
    }
    return true;
  }

  // Writes every packet whose deadline has passed.
  void Release(int64_t now) {  // `now` is refreshed after each write
    while (!queue_.Empty() && queue_.HeadDue() <= now) {
      int64_t late = now - queue_.HeadDue();  // release lateness (write cost excluded)
      int64_t written = NowNs();
      ssize_t n = write(out_, queue_.HeadData(), queue_.HeadLen());
      if (n < 0) {
        ++stats_.write_errors;
      } else {
        ++stats_.packets;
        stats_.bytes += static_cast<uint64_t>(n);
        Sample(late);
        if (truth_) LogEcho(queue_.HeadData(), queue_.HeadLen(), written - queue_.HeadArrived());
      }
      now = NowNs();  // the write may run the receiving stack inline
      queue_.Pop();
    }
  }

  // One truth line for an IPv4 ICMP echo request (8) or reply (0).
  void LogEcho(const uint8_t* p, size_t len, int64_t held_ns) {
    if (len < 20 || (p[0] >> 4) != 4 || p[9] != 1) return;
    size_t ihl = static_cast<size_t>(p[0] & 0x0F) * 4;
    if (len < ihl + 8 || (p[ihl] != 0 && p[ihl] != 8)) return;
    unsigned id = (unsigned{p[ihl + 4]} << 8) | p[ihl + 5];
    unsigned seq = (unsigned{p[ihl + 6]} << 8) | p[ihl + 7];
    std::fprintf(truth_, "%s %u %u %u %" PRId64 "\n", name_[0] == 'a' ? "ab" : "ba", p[ihl], id,
                 seq, held_ns);
    std::fflush(truth_);
  }

  bool HasNext() const { return !queue_.Empty(); }
  int64_t NextDue() const { return queue_.HeadDue(); }

  void Print() {
    if (tap_) tap_->Print(name_);
    auto& v = stats_.late_ns;
    int64_t p50 = 0, p99 = 0, mx = 0;
    if (!v.empty()) {
      std::vector<int32_t> s = v;
      std::sort(s.begin(), s.end());
      p50 = s[s.size() / 2];
      p99 = s[std::min(s.size() - 1, s.size() * 99 / 100)];
      mx = s.back();
    }
    std::fprintf(stderr,
                 "flexmon-netlab-relay: %s packets=%" PRIu64 " bytes=%" PRIu64
                 " queue_drops=%" PRIu64 " oversize_drops=%" PRIu64 " write_errors=%" PRIu64
                 " late_us_p50=%.1f late_us_p99=%.1f late_us_max=%.1f\n",
                 name_, stats_.packets, stats_.bytes, stats_.queue_drops, stats_.oversize_drops,
                 stats_.write_errors, p50 / 1e3, p99 / 1e3, mx / 1e3);
  }

 private:
  static constexpr size_t kMaxSamples = 100000;
  // A stamp older than this belongs to another packet (a mismatch): use the read time.
  static constexpr int64_t kMaxArrivalAge = 1'000'000'000;

  int64_t Jitter() {
    if (cfg_.jitter_ns == 0) return 0;
    double j = static_cast<double>(cfg_.jitter_ns);
    if (normal_) {
      std::normal_distribution<double> d(0.0, j);
      double x = std::clamp(d(*rng_), -static_cast<double>(cfg_.delay_ns), 4 * j);
      return static_cast<int64_t>(x);
    }
    std::uniform_real_distribution<double> d(-j, j);
    return static_cast<int64_t>(d(*rng_));
  }

  void Sample(int64_t late) {
    late = std::clamp<int64_t>(late, INT32_MIN, INT32_MAX);
    if (stats_.late_ns.size() < kMaxSamples) {
      stats_.late_ns.push_back(static_cast<int32_t>(late));
    } else {  // reservoir sampling keeps the percentile estimate unbiased
      std::uniform_int_distribution<uint64_t> d(0, stats_.packets - 1);
      uint64_t k = d(sample_rng_);
      if (k < kMaxSamples) stats_.late_ns[k] = static_cast<int32_t>(late);
    }
  }

  const char* name_;
  int in_;
  ArrivalTap* tap_;  // nullptr: arrival = read time
  int out_;
  DirConfig cfg_;
  bool normal_;
  std::mt19937_64* rng_;
  std::mt19937_64 sample_rng_{12345};
  PacketQueue queue_;
  size_t slot_bytes_;
  std::vector<uint8_t> scratch_;
  FILE* truth_;
  bool have_last_ = false;
  Stats stats_;
};

int64_t ParseDuration(std::string_view s) {
  // Accepts "<number>[ns|us|ms|s]"; plain numbers are microseconds.
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) throw std::invalid_argument("bad duration: " + std::string(s));
  double v = std::stod(std::string(s.substr(0, i)));
  std::string_view unit = s.substr(i);
  double mul = 1e3;
  if (unit == "ns") {
    mul = 1;
  } else if (unit == "us" || unit.empty()) {
    mul = 1e3;
  } else if (unit == "ms") {
    mul = 1e6;
  } else if (unit == "s") {
    mul = 1e9;
  } else {
    throw std::invalid_argument("bad duration unit: " + std::string(s));
  }
  return static_cast<int64_t>(v * mul + 0.5);
}

void SplitNsDev(const std::string& arg, std::string* ns, std::string* dev) {
  auto colon = arg.find(':');
  if (colon == std::string::npos) {
    ns->clear();
    *dev = arg;
  } else {
    *ns = arg.substr(0, colon);
    *dev = arg.substr(colon + 1);
  }
}

void Usage() {
  std::fprintf(stderr,
               "usage: flexmon-netlab-relay --a NETNS:DEV --b NETNS:DEV [options]\n"
               "  --delay D         one-way delay, both directions (e.g. 10ms, 250us)\n"
               "  --delay-ab D / --delay-ba D   per direction\n"
               "  --jitter J        jitter, both directions; --jitter-ab / --jitter-ba\n"
               "  --dist uniform|normal   jitter distribution (uniform: U(-J,J); normal: "
               "N(0,J))\n"
               "  --seed N          RNG seed (default 1)\n"
               "  --spin D          fixed busy-wait before each release (default: adaptive)\n"
               "  --poll            never sleep; lowest error, burns one core\n"
               "  --queue N         packets queued per direction before tail drop (4096)\n"
               "  --slot N          max packet size in bytes (2048; must exceed MTU)\n"
               "  --rt N            SCHED_FIFO priority N (best effort)\n"
               "  --cpu N           run on CPU N only (best effort)\n"
               "  --arrival kernel|read  hold from the kernel's transmit stamp of each packet\n"
               "                    (default) or from the relay's read (wake-up time added)\n"
               "  --truth FILE      log each ICMP echo's applied delay (DIR TYPE ID SEQ NS)\n"
               "  --die-with-parent exit when the parent process exits\n"
               "  --lab NAME        label only (lets 'netlab cleanup' find the process)\n");
}

Config ParseArgs(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument("missing value for " + a);
      return argv[++i];
    };
    if (a == "--a") {
      SplitNsDev(next(), &c.a_ns, &c.a_dev);
    } else if (a == "--b") {
      SplitNsDev(next(), &c.b_ns, &c.b_dev);
    } else if (a == "--delay") {
      c.ab.delay_ns = c.ba.delay_ns = ParseDuration(next());
    } else if (a == "--delay-ab") {
      c.ab.delay_ns = ParseDuration(next());
    } else if (a == "--delay-ba") {
      c.ba.delay_ns = ParseDuration(next());
    } else if (a == "--jitter") {
      c.ab.jitter_ns = c.ba.jitter_ns = ParseDuration(next());
    } else if (a == "--jitter-ab") {
      c.ab.jitter_ns = ParseDuration(next());
    } else if (a == "--jitter-ba") {
      c.ba.jitter_ns = ParseDuration(next());
    } else if (a == "--dist") {
      std::string d = next();
      if (d != "uniform" && d != "normal") throw std::invalid_argument("bad --dist " + d);
      c.normal = d == "normal";
    } else if (a == "--seed") {
      c.seed = std::stoull(next());
    } else if (a == "--spin") {
      c.spin_ns = ParseDuration(next());
    } else if (a == "--poll") {
      c.poll = true;
    } else if (a == "--queue") {
      c.queue_packets = std::max<size_t>(1, std::stoul(next()));
    } else if (a == "--slot") {
      c.slot_bytes = std::max<size_t>(128, std::stoul(next()));
    } else if (a == "--rt") {
      c.rt_priority = std::stoi(next());
    } else if (a == "--cpu") {
      c.cpu = std::stoi(next());
      if (c.cpu < 0 || c.cpu >= CPU_SETSIZE)
        throw std::invalid_argument(std::string("bad --cpu ") + argv[i]);
    } else if (a == "--die-with-parent") {
      c.die_with_parent = true;
    } else if (a == "--arrival") {
      std::string v = next();
      if (v != "kernel" && v != "read") throw std::invalid_argument("bad --arrival " + v);
      c.kernel_arrival = v == "kernel";
    } else if (a == "--truth") {
      c.truth_path = next();
    } else if (a == "--lab") {
      next();
    } else if (a == "-h" || a == "--help") {
      Usage();
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown argument " + a);
    }
  }
  if (c.a_dev.empty() || c.b_dev.empty()) throw std::invalid_argument("--a and --b are required");
  return c;
}

void SetTimer(int tfd, int64_t abs_ns) {
  itimerspec its{};
  if (abs_ns > 0) {
    its.it_value.tv_sec = abs_ns / 1'000'000'000;
    its.it_value.tv_nsec = abs_ns % 1'000'000'000;
  }
  if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, nullptr) != 0) Die("timerfd_settime");
}

// Busy-wait margin before a deadline. Fixed, or adaptive: about the 95th
// percentile of the last 64 timerfd wake-up latencies, plus 10 us.
class SpinMargin {
 public:
  explicit SpinMargin(int64_t fixed_ns) : fixed_(fixed_ns) {}
  int64_t Get() const { return fixed_ >= 0 ? fixed_ : margin_; }
  void Observe(int64_t wake_latency_ns) {
    window_[next_++ % window_.size()] = wake_latency_ns;
    if (next_ < 8) return;  // keep the initial margin until a few samples exist
    size_t n = std::min(next_, window_.size());
    std::array<int64_t, 64> s;
    std::copy_n(window_.begin(), n, s.begin());
    size_t k = n - 1 - n / 20;
    std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(k),
                     s.begin() + static_cast<std::ptrdiff_t>(n));
    margin_ = std::clamp<int64_t>(s[k] + 10'000, 20'000, 1'000'000);
  }
  void Print() const {
    std::fprintf(stderr, "flexmon-netlab-relay: spin_margin_us=%.1f (%s)\n", Get() / 1e3,
                 fixed_ >= 0 ? "fixed" : "adaptive");
  }

 private:
  int64_t fixed_;
  int64_t margin_ = 100'000;
  std::array<int64_t, 64> window_{};
  size_t next_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  try {
    cfg = ParseArgs(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flexmon-netlab-relay: %s\n", e.what());
    Usage();
    return 2;
  }
  if (cfg.die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 0;  // parent already gone
  }
  prctl(PR_SET_TIMERSLACK, 1UL);

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: epoll_wait returns EINTR
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaction(s, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  int fa = OpenTun(cfg.a_ns, cfg.a_dev);
  int fb = OpenTun(cfg.b_ns, cfg.b_dev);
  std::optional<ArrivalTap> tap_a, tap_b;  // packets a sends, packets b sends
  if (cfg.kernel_arrival) {
    int ta = OpenArrivalTap(cfg.a_ns, cfg.a_dev);
    int tb = ta < 0 ? -1 : OpenArrivalTap(cfg.b_ns, cfg.b_dev);
    if (ta < 0 || tb < 0) {
      std::fprintf(stderr, "flexmon-netlab-relay: no arrival tap (%s): holding from read times\n",
                   std::strerror(errno));
      if (ta >= 0) close(ta);
    } else {
      tap_a.emplace(ta);
      tap_b.emplace(tb);
    }
  }

  if (cfg.rt_priority > 0) {
    // Best effort: without it the relay still works, only with the wake-up
    // latency of an ordinary process (milliseconds on a loaded host).
    sched_param sp{};
    sp.sched_priority = cfg.rt_priority;
    if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0)
      std::fprintf(stderr, "flexmon-netlab-relay: SCHED_FIFO %d refused (%s), running normal\n",
                   cfg.rt_priority, std::strerror(errno));
  }
  if (cfg.cpu >= 0) {
    // Best effort, like --rt: without it the relay runs wherever the
    // scheduler puts it.
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cfg.cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
      std::fprintf(stderr, "flexmon-netlab-relay: CPU %d refused (%s), running on any\n", cfg.cpu,
                   std::strerror(errno));
  }
  mlockall(MCL_CURRENT | MCL_FUTURE);  // best effort: avoid page faults on the fast path

  FILE* truth = nullptr;
  if (!cfg.truth_path.empty()) {
    truth = std::fopen(cfg.truth_path.c_str(), "a");
    if (!truth) Die("open " + cfg.truth_path);
  }
  std::mt19937_64 rng(cfg.seed);
  Direction ab("a->b", fa, fb, tap_a ? &*tap_a : nullptr, cfg.ab, cfg, &rng, truth);
  Direction ba("b->a", fb, fa, tap_b ? &*tap_b : nullptr, cfg.ba, cfg, &rng, truth);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (ep < 0 || tfd < 0) Die("epoll/timerfd");
  for (int fd : {fa, fb, tfd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) Die("epoll_ctl");
  }

  std::printf("ready\n");
  std::fflush(stdout);

  SpinMargin spin(cfg.spin_ns);
  int64_t armed = 0;
  int rc = 0;
  while (!g_stop) {
    if (g_dump) {
      g_dump = 0;
      ab.Print();
      ba.Print();
      spin.Print();
    }
    if (!ab.Drain() || !ba.Drain()) {
      std::fprintf(stderr, "flexmon-netlab-relay: device gone, exiting\n");
      rc = 0;
      break;
    }
    int64_t now = NowNs();
    ab.Release(now);
    ba.Release(now);

    int64_t next = 0;
    if (ab.HasNext()) next = ab.NextDue();
    if (ba.HasNext()) next = next ? std::min(next, ba.NextDue()) : ba.NextDue();

    if (cfg.poll) continue;  // spin on everything
    now = NowNs();
    const int64_t margin = spin.Get();
    if (next != 0 && next - now <= margin) continue;  // busy-wait close to the deadline

    int64_t wake = next ? next - margin : 0;
    if (wake != armed) {
      SetTimer(tfd, wake);
      armed = wake;
    }
    epoll_event evs[4];
    int n = epoll_wait(ep, evs, 4, -1);
    if (n < 0 && errno != EINTR) Die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.fd == tfd) {
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) Die("timerfd");
        if (armed != 0) spin.Observe(NowNs() - armed);
        armed = 0;
      } else if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
        g_stop = 1;
      }
    }
  }
  ab.Print();
  ba.Print();
  spin.Print();
  return rc;
}
