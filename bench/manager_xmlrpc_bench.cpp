// XML-RPC calls per second with 16 clients on probe.get and on
// query.latency (one path, limit 100: 50 rows from the cache and 50 from the
// archive), with HTTP keep-alive and with one call per connection; p50 and
// p99 latency. The real manager in-process on loopback; clients speak raw
// HTTP/1.1 and read every byte of each response. Figures one per line.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "bench/manager_bench_util.h"
#include "cache/cache.h"
#include "cache/flusher.h"
#include "common/log.h"
#include "manager/manager.h"
#include "wire.pb.h"

using namespace flexmon;
using Clock = std::chrono::steady_clock;

namespace {

int dial(std::uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Sends one call and reads its response; false on any failure. `closing`
// is set when the server ends the connection after this answer.
bool call(int fd, const std::string& request, std::string& buffer, bool* closing = nullptr) {
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    return false;
  buffer.clear();
  char chunk[65536];
  std::size_t need = std::string::npos;
  for (;;) {
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(n));
    if (need == std::string::npos) {
      auto end = buffer.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      auto cl = buffer.find("Content-Length: ");
      if (cl == std::string::npos || cl > end) return false;
      need = end + 4 + std::stoul(buffer.substr(cl + 16));
      if (buffer.compare(0, 12, "HTTP/1.1 200") != 0) return false;
      if (closing) *closing = buffer.find("Connection: close") < end;
    }
    // A fault answer opens with <fault> right after <methodResponse>: look
    // there, not through the whole answer (the client shares the CPUs).
    if (buffer.size() >= need)
      return std::string_view(buffer).substr(0, 512).find("<fault>") == std::string_view::npos;
  }
}

struct Figures {
  double calls_per_s = 0, p50_ms = 0, p99_ms = 0;
  std::uint64_t errors = 0;
};

Figures run(std::uint16_t port, const std::string& body, bool keepalive, int clients,
            double seconds) {
  std::string request =
      "POST /RPC2 HTTP/1.1\r\nHost: bench\r\nContent-Type: text/xml\r\n"
      "Authorization: Basic YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OQ==\r\n" +
      std::string(keepalive ? "" : "Connection: close\r\n") +
      "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> errors{0};
  std::vector<std::vector<double>> latencies(clients);
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      std::string buffer;
      int fd = -1;
      while (!done) {
        if (fd < 0) fd = dial(port);
        auto t0 = Clock::now();
        bool closing = false;
        bool ok = fd >= 0 && call(fd, request, buffer, &closing);
        auto t1 = Clock::now();
        if (ok)
          latencies[c].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        else
          ++errors;
        if (!ok || !keepalive || closing) {
          if (fd >= 0) close(fd);
          fd = -1;
        }
      }
      if (fd >= 0) close(fd);
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  done = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  Figures f;
  f.calls_per_s = static_cast<double>(all.size()) / elapsed;
  f.p50_ms = bench::quantile(all, 0.5);
  f.p99_ms = bench::quantile(all, 0.99);
  f.errors = errors;
  return f;
}

// Stores `per_path` latency results (5 packets each, one per second) on
// every ordered pair of n1..n3, starting at `first_s`.
void store_results(Cache& cache, std::uint64_t epoch, int per_path, std::int64_t first_s) {
  const char* nodes[] = {"n1", "n2", "n3"};
  std::vector<wire::Result> results;
  results.reserve(static_cast<std::size_t>(per_path) * 6);
  std::uint64_t seq = 0;
  for (const char* src : nodes)
    for (const char* dst : nodes) {
      if (std::string_view(src) == dst) continue;
      for (int i = 0; i < per_path; ++i) {
        auto& r = results.emplace_back();
        r.set_seq(++seq);
        r.set_stream(fmt::format("latency/udp/c5/s100/z64/t1000/{}>{}", src, dst));
        r.set_tool("latency");
        r.set_src(src);
        r.set_dst(dst);
        r.set_start_ns((first_s + i) * 1'000'000'000 + seq % 1000);
        r.set_status(wire::OK);
        auto* l = r.mutable_latency();
        l->set_sent(5);
        l->set_received(5);
        for (int k = 0; k < 5; ++k) l->add_rtt_ns(100'000 + 37 * k + i % 100);
        l->set_min_ns(100'000);
        l->set_avg_ns(100'074);
        l->set_median_ns(100'074);
        l->set_max_ns(100'148);
        l->set_stddev_ns(52);
      }
    }
  std::vector<const wire::Result*> ptrs;
  for (const auto& r : results) ptrs.push_back(&r);
  cache.store("n1", epoch, ptrs);
}

// 2,000 results per path archived (SQLite archive, as with no PostgreSQL
// configured), then 50 newer per path in the cache only: the 100-row page of
// one path merges 50 cache rows above the flush watermark with 50 archived.
void fill_results(const Config& config) {
  constexpr std::int64_t kStart = 1'700'000'000;
  {
    Cache cache(config.collector.cache_db);
    store_results(cache, 1, 2000, kStart);
  }
  Config flush_all = config;
  flush_all.archive.horizon_s = 0;
  FlushReport report = flush_once(flush_all);
  if (!report.archive_ok || report.rows != 12'000)
    fmt::print(stderr, "flush: archived {} rows, {}\n", report.rows, report.error);
  Cache cache(config.collector.cache_db);
  store_results(cache, 2, 50, kStart + 2000);
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  const int clients = 16;
  logger("manager")->set_level(spdlog::level::warn);
  auto dir = bench::temp_dir("flexmon-xmlrpc-bench");
  Config config = bench::config_with_nodes(dir, 3);
  config.manager.max_connections = 64;
  fill_results(config);
  auto manager = start_manager_daemon(config);
  const auto port = manager->xmlrpc_port();
  std::string buffer;
  int fd = dial(port);
  std::string spec =
      "<?xml version=\"1.0\"?><methodCall><methodName>probe.request</methodName><params><param>"
      "<value><struct><member><name>tool</name><value><string>latency</string></value></member>"
      "<member><name>interval</name><value><double>10</double></value></member>"
      "<member><name>nodes</name><value><array><data><value><string>n1</string></value>"
      "<value><string>n2</string></value><value><string>n3</string></value></data></array>"
      "</value></member></struct></value></param></params></methodCall>";
  std::string req =
      "POST /RPC2 HTTP/1.1\r\nHost: b\r\nAuthorization: Basic "
      "YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OQ==\r\nContent-Length: " +
      std::to_string(spec.size()) + "\r\n\r\n" + spec;
  if (!call(fd, req, buffer)) fmt::print(stderr, "probe.request failed: {}\n", buffer);
  close(fd);
  const std::string get =
      "<?xml version=\"1.0\"?><methodCall><methodName>probe.get</methodName><params><param>"
      "<value><string>r1</string></value></param></params></methodCall>";
  const std::string query =
      "<?xml version=\"1.0\"?><methodCall><methodName>query.latency</methodName><params><param>"
      "<value><struct><member><name>limit</name><value><int>100</int></value></member>"
      "<member><name>src</name><value><string>n1</string></value></member>"
      "<member><name>dst</name><value><string>n2</string></value></member>"
      "</struct></value></param></params></methodCall>";
  {
    // What each query call receives: a full page of 100 rows.
    std::string request =
        "POST /RPC2 HTTP/1.1\r\nHost: b\r\nAuthorization: Basic "
        "YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OQ==\r\nContent-Length: " +
        std::to_string(query.size()) + "\r\n\r\n" + query;
    int probe = dial(port);
    bool ok = call(probe, request, buffer);
    close(probe);
    std::size_t rows = 0;
    for (auto at = buffer.find("<name>node</name>"); at != std::string::npos;
         at = buffer.find("<name>node</name>", at + 1))
      ++rows;
    fmt::print("query_latency_100_rows {}\n", ok ? rows : 0);
    fmt::print("query_latency_100_response_bytes {}\n", buffer.size());
  }
  for (auto [name, body] : {std::pair{"probe_get", get}, std::pair{"query_latency_100", query}})
    for (bool keepalive : {true, false}) {
      Figures f = run(port, body, keepalive, clients, seconds);
      const char* mode = keepalive ? "keepalive" : "close";
      fmt::print("{}_{}_calls_per_s {:.0f}\n", name, mode, f.calls_per_s);
      fmt::print("{}_{}_p50_ms {:.3f}\n", name, mode, f.p50_ms);
      fmt::print("{}_{}_p99_ms {:.3f}\n", name, mode, f.p99_ms);
      fmt::print("{}_{}_errors {}\n", name, mode, f.errors);
    }
  manager->stop();
  std::filesystem::remove_all(dir);
}
