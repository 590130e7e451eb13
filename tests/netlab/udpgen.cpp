// flexmon-netlab-udpgen: constant-rate UDP cross traffic for the network lab.
//
//   flexmon-netlab-udpgen --dst 10.77.0.2 [--port 9] --rate 5mbit [--size 1000]
//                         --duration 10s [--rt N]
//
// --rate counts IP packet bytes (IPv4 header + UDP header + payload), so the
// load a tbf on the path sees is the configured rate. --size is the IP packet
// size (>= 29). Packets leave on an absolute CLOCK_MONOTONIC schedule
// (start + i * interval); when the sender falls behind it does not burst to
// catch up more than 8 packets. Send errors (ENOBUFS from a full qdisc) are
// counted, not fatal. --rt N asks for SCHED_FIFO priority N (best effort) so
// that a loaded host does not turn the constant rate into bursts. Prints one
// summary line on stderr at the end.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// "5mbit", "100kbit", "1gbit", "64000" (bit/s).
double ParseRate(const std::string& s) {
  size_t pos = 0;
  double v = std::stod(s, &pos);
  std::string u = s.substr(pos);
  if (u.empty() || u == "bit" || u == "bps") return v;
  if (u == "k" || u == "kbit") return v * 1e3;
  if (u == "m" || u == "mbit") return v * 1e6;
  if (u == "g" || u == "gbit") return v * 1e9;
  throw std::invalid_argument("bad rate " + s);
}

// "10s", "500ms", "3" (seconds).
double ParseSeconds(const std::string& s) {
  size_t pos = 0;
  double v = std::stod(s, &pos);
  std::string u = s.substr(pos);
  if (u.empty() || u == "s") return v;
  if (u == "ms") return v / 1e3;
  if (u == "us") return v / 1e6;
  throw std::invalid_argument("bad duration " + s);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dst;
  int port = 9;
  double rate = 0, duration = -1;
  int size = 1000;
  bool die_with_parent = false;
  int rt_priority = 0;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument("missing value for " + a);
        return argv[++i];
      };
      if (a == "--dst") {
        dst = next();
      } else if (a == "--port") {
        port = std::stoi(next());
      } else if (a == "--rate") {
        rate = ParseRate(next());
      } else if (a == "--size") {
        size = std::stoi(next());
      } else if (a == "--duration") {
        duration = ParseSeconds(next());
      } else if (a == "--die-with-parent") {
        die_with_parent = true;
      } else if (a == "--rt") {
        rt_priority = std::stoi(next());
      } else {
        throw std::invalid_argument("unknown argument " + a);
      }
    }
    if (dst.empty() || rate <= 0 || duration <= 0 || size < 29 || size > 65507) {
      throw std::invalid_argument("need --dst, --rate > 0, --duration > 0, 29 <= --size");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "flexmon-netlab-udpgen: %s\nusage: flexmon-netlab-udpgen --dst ADDR [--port 9] "
                 "--rate RATE [--size BYTES] --duration SECONDS [--rt N] [--die-with-parent]\n",
                 e.what());
    return 2;
  }
  if (die_with_parent) prctl(PR_SET_PDEATHSIG, SIGTERM);
  prctl(PR_SET_TIMERSLACK, 1UL);
  if (rt_priority > 0) {
    sched_param sp{};
    sp.sched_priority = rt_priority;
    if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0)
      std::fprintf(stderr, "flexmon-netlab-udpgen: SCHED_FIFO %d refused (%s), running normal\n",
                   rt_priority, std::strerror(errno));
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaction(s, &sa, nullptr);

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::perror("socket");
    return 1;
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, dst.c_str(), &to.sin_addr) != 1) {
    std::fprintf(stderr, "flexmon-netlab-udpgen: bad address %s\n", dst.c_str());
    return 2;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    std::perror("connect");
    return 1;
  }
  std::vector<char> payload(static_cast<size_t>(size - 28), 'x');
  const int64_t interval = static_cast<int64_t>(size * 8.0 / rate * 1e9);
  const int64_t start = NowNs();
  const int64_t end = start + static_cast<int64_t>(duration * 1e9);
  uint64_t sent = 0, errors = 0;
  int64_t due = start;
  while (!g_stop && due < end) {
    int64_t now = NowNs();
    if (due > now) {
      timespec ts{static_cast<time_t>(due / 1'000'000'000), static_cast<long>(due % 1'000'000'000)};
      if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) continue;
    } else if (now - due > 8 * interval) {
      due = now - 8 * interval;  // bound the catch-up burst
    }
    if (send(fd, payload.data(), payload.size(), MSG_DONTWAIT) < 0) {
      ++errors;
    } else {
      ++sent;
    }
    due += interval;
  }
  double secs = (NowNs() - start) / 1e9;
  std::fprintf(stderr,
               "flexmon-netlab-udpgen: sent=%" PRIu64 " errors=%" PRIu64
               " seconds=%.3f offered_bps=%.0f\n",
               sent, errors, secs, secs > 0 ? sent * size * 8.0 / secs : 0.0);
  return 0;
}
