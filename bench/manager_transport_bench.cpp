// The XML-RPC transport under attack and over TLS, the real manager
// in-process on loopback. Figures one per line:
// - probe.list latency (p50, p99) from one legitimate keep-alive client
//   while 1,000 hostile connections are open (half idle, half trickling a
//   header one byte a second), against the same client on a quiet manager
//   in the same run, alternated. The hostile connections come from
//   127.0.0.2..127.0.0.21, 50 from each, under the per-client limit of 64;
//   manager.http_timeout_s is 120 s so that none of them expires during a
//   measurement, and keepalive_max_requests is raised so that each client
//   keeps its one connection.
// - keep-alive probe.list calls per second over TLS and over plain HTTP,
//   4 clients each, alternated, and their ratio (goal: at least 0.8).
// The certificate is made with the openssl command in a temporary folder.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/manager_bench_util.h"
#include "common/log.h"
#include "manager/call_handler.h"
#include "manager/manager.h"

using namespace flexmon;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kList =
    "<?xml version=\"1.0\"?><methodCall><methodName>probe.list</methodName><params></params>"
    "</methodCall>";
const std::string kRequest =
    "POST /RPC2 HTTP/1.1\r\nHost: bench\r\nContent-Type: text/xml\r\n"
    "Authorization: Basic YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==\r\nContent-Length: " +
    std::to_string(kList.size()) + "\r\n\r\n" + kList;

// A TCP connection to 127.0.0.1:port from `source`, Nagle off; -1 on failure.
int dial(std::uint16_t port, const char* source = "127.0.0.1") {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in from{}, to{};
  from.sin_family = to.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// One keep-alive client connection, plain or TLS.
class Client {
 public:
  Client(std::uint16_t port, SSL_CTX* tls) : fd_(dial(port)) {
    if (fd_ < 0 || !tls) return;
    ssl_ = SSL_new(tls);
    SSL_set_fd(ssl_, fd_);
    if (SSL_connect(ssl_) != 1) {
      SSL_free(ssl_);
      ssl_ = nullptr;
      close(fd_);
      fd_ = -1;
    }
  }
  ~Client() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  // One probe.list call; false on any failure or a non-200 answer.
  bool call() {
    if (!write(kRequest)) return false;
    buffer_.clear();
    std::size_t need = std::string::npos;
    char chunk[16384];
    while (need == std::string::npos || buffer_.size() < need) {
      int n = read(chunk, sizeof chunk);
      if (n <= 0) return false;
      buffer_.append(chunk, static_cast<std::size_t>(n));
      if (need != std::string::npos) continue;
      auto end = buffer_.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      auto length = buffer_.find("Content-Length: ");
      if (length == std::string::npos || length > end) return false;
      need = end + 4 + std::stoul(buffer_.substr(length + 16));
    }
    return buffer_.compare(0, 12, "HTTP/1.1 200") == 0;
  }

 private:
  bool write(const std::string& bytes) {
    if (ssl_) return SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) > 0;
    return send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  int read(char* into, std::size_t size) {
    if (ssl_) return SSL_read(ssl_, into, static_cast<int>(size));
    return static_cast<int>(recv(fd_, into, size, 0));
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string buffer_;
};

struct Latency {
  double p50_ms = 0, p99_ms = 0;
  std::uint64_t calls = 0, errors = 0;
};

// One client, one keep-alive connection, calls back to back for `seconds`.
Latency measure_latency(std::uint16_t port, double seconds) {
  Client client(port, nullptr);
  std::vector<double> ms;
  Latency out;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (client.ok() && Clock::now() < end) {
    auto t0 = Clock::now();
    if (!client.call()) {
      ++out.errors;
      break;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  out.calls = ms.size();
  out.p50_ms = bench::quantile(ms, 0.5);
  out.p99_ms = bench::quantile(ms, 0.99);
  return out;
}

// `count` hostile connections from 127.0.0.2 on, `per_source` from each:
// even ones idle, odd ones with a header begun. Returns the descriptors.
std::vector<int> open_hostile(std::uint16_t port, int count, int per_source) {
  std::vector<int> fds;
  for (int i = 0; i < count; ++i) {
    const std::string source = fmt::format("127.0.0.{}", 2 + i / per_source);
    int fd = dial(port, source.c_str());
    if (fd < 0) continue;
    if (i % 2) (void)send(fd, "POST /RPC2 HTTP/1.1\r\n", 21, MSG_NOSIGNAL);
    fds.push_back(fd);
  }
  return fds;
}

// The trickle: one more header byte on every odd connection.
void trickle(const std::vector<int>& fds) {
  for (std::size_t i = 1; i < fds.size(); i += 2) (void)send(fds[i], "X", 1, MSG_NOSIGNAL);
}

// Keep-alive calls per second from `clients` connections for `seconds`.
double calls_per_s(std::uint16_t port, SSL_CTX* tls, int clients, double seconds,
                   std::uint64_t& errors) {
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> calls{0}, failed{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&] {
      Client client(port, tls);
      if (!client.ok()) {
        ++failed;
        return;
      }
      while (!done) {
        if (!client.call()) {
          ++failed;
          return;
        }
        ++calls;
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  done = true;
  for (auto& t : threads) t.join();
  errors += failed;
  return static_cast<double>(calls) / std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"XML-RPC transport under 1,000 hostile connections, and TLS against plain",
               "manager_transport_bench"};
  double seconds = 3;
  int rounds = 3, hostile_count = 1000, clients = 4;
  app.add_option("--seconds", seconds, "seconds per measurement")->capture_default_str();
  app.add_option("--rounds", rounds, "alternated rounds of each pair")->capture_default_str();
  app.add_option("--hostile", hostile_count, "hostile connections")->capture_default_str();
  app.add_option("--clients", clients, "keep-alive clients for calls per second")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  logger("manager")->set_level(spdlog::level::err);

  auto dir = bench::temp_dir("flexmon-transport-bench");
  const auto cert = dir / "api.pem", key = dir / "api.key";
  const std::string make_cert = fmt::format(
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
      "-subj /CN=127.0.0.1 -keyout {} -out {} 2>/dev/null",
      key.string(), cert.string());
  if (std::system(make_cert.c_str()) != 0) {
    fmt::print(stderr, "manager_transport_bench: openssl could not make a certificate\n");
    return 1;
  }

  Config plain = bench::config_with_nodes(dir, 3);
  plain.manager.max_connections = 4096;
  plain.manager.max_connections_per_client = 64;
  plain.manager.http_timeout_s = 120;
  // One connection per client for the whole run: keep-alive without a reconnect.
  plain.manager.keepalive_max_requests = 100'000'000;
  Config tls = plain;
  tls.manager.tls_cert = cert;
  tls.manager.tls_key = key;
  tls.manager.state_db = dir / "tls-manager.db";
  manager::configure_xmlrpc_limits(plain.manager);  // as flexmon-manager's main does
  auto manager = start_manager_daemon(plain);
  auto tls_manager = start_manager_daemon(tls);

  SSL_CTX* client_tls = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(client_tls, cert.c_str(), nullptr);
  SSL_CTX_set_verify(client_tls, SSL_VERIFY_PEER, nullptr);

  std::vector<double> quiet_p50, quiet_p99, hostile_p50, hostile_p99;
  std::uint64_t errors = 0;
  std::size_t hostile_open = 0;
  for (int round = 0; round < rounds; ++round) {
    auto quiet = measure_latency(manager->xmlrpc_port(), seconds);
    auto fds = open_hostile(manager->xmlrpc_port(), hostile_count, 50);
    hostile_open = fds.size();
    std::atomic<bool> attacking{true};
    std::thread trickler([&] {
      while (attacking) {
        trickle(fds);
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    });
    auto attacked = measure_latency(manager->xmlrpc_port(), seconds);
    attacking = false;
    trickler.join();
    for (int fd : fds) close(fd);
    errors += quiet.errors + attacked.errors;
    quiet_p50.push_back(quiet.p50_ms);
    quiet_p99.push_back(quiet.p99_ms);
    hostile_p50.push_back(attacked.p50_ms);
    hostile_p99.push_back(attacked.p99_ms);
    // The manager sees the closes and frees their places.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  auto median = [](std::vector<double> v) { return bench::quantile(v, 0.5); };
  fmt::print("hostile_connections_open {}\n", hostile_open);
  fmt::print("probe_list_quiet_p50_ms {:.3f}\n", median(quiet_p50));
  fmt::print("probe_list_quiet_p99_ms {:.3f}\n", median(quiet_p99));
  fmt::print("probe_list_hostile_p50_ms {:.3f}\n", median(hostile_p50));
  fmt::print("probe_list_hostile_p99_ms {:.3f}\n", median(hostile_p99));

  std::vector<double> plain_rate, tls_rate, ratio;
  for (int round = 0; round < rounds; ++round) {
    const double p = calls_per_s(manager->xmlrpc_port(), nullptr, clients, seconds, errors);
    const double t = calls_per_s(tls_manager->xmlrpc_port(), client_tls, clients, seconds, errors);
    plain_rate.push_back(p);
    tls_rate.push_back(t);
    ratio.push_back(p > 0 ? t / p : 0);
  }
  fmt::print("keepalive_plain_calls_per_s {:.0f}\n", median(plain_rate));
  fmt::print("keepalive_tls_calls_per_s {:.0f}\n", median(tls_rate));
  fmt::print("keepalive_tls_to_plain_ratio {:.2f}\n", median(ratio));
  fmt::print("errors {}\n", errors);

  SSL_CTX_free(client_tls);
  tls_manager->stop();
  manager->stop();
  std::filesystem::remove_all(dir);
}
