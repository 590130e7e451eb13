// XML-RPC calls per second with 16 clients on probe.get and on
// query.latency (one path, limit 100: 50 rows from the cache and 50 from the
// archive), with HTTP keep-alive and with one call per connection; p50 and
// p99 latency. The real manager in-process on loopback; clients speak raw
// HTTP/1.1 and read every byte of each response. Figures one per line.
// The manager keeps rows it sent as XML (manager.rendered_rows_mb), so from
// the second call on, every call reads the page's keys only: the same call
// is also measured on a manager with that off (query_latency_100_unrendered_*),
// where every call reads and writes out all 100 rows.
// The peer in the same run: a server that does no work, sending the same
// query answer's bytes to the same clients (the loopback ceiling of calls of
// that size on this machine).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "bench/manager_bench_util.h"
#include "common/log.h"
#include "manager/call_handler.h"
#include "manager/manager.h"
#include "storage/cache.h"
#include "storage/flusher.h"
#include "storage/reader.h"
#include "tests/manager/http_post.h"
#include "wire.pb.h"

using namespace flexmon;
using Clock = std::chrono::steady_clock;

namespace {

// A connection to the manager with Nagle off, as a client that writes each
// call at once would use; -1 when there is none.
int dial(std::uint16_t port) {
  int fd = manager::testing::dial_loopback(port);
  if (fd < 0) return -1;
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

// CPU time of the whole process (server and clients), user and system.
double process_cpu_s() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct Figures {
  double calls_per_s = 0, p50_ms = 0, p99_ms = 0;
  double cpu_us_per_call = 0;  // load on other processes barely moves it
  std::uint64_t errors = 0;
};

Figures run(std::uint16_t port, const std::string& body, bool keepalive, int clients,
            double seconds) {
  std::string request =
      "POST /RPC2 HTTP/1.1\r\nHost: bench\r\nContent-Type: text/xml\r\n"
      "Authorization: Basic YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==\r\n" +
      std::string(keepalive ? "" : "Connection: close\r\n") +
      "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> errors{0};
  std::vector<std::vector<double>> latencies(clients);
  std::vector<std::thread> threads;
  auto start = Clock::now();
  const double cpu_start = process_cpu_s();
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
  const double cpu = process_cpu_s() - cpu_start;
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  Figures f;
  f.calls_per_s = static_cast<double>(all.size()) / elapsed;
  f.p50_ms = bench::quantile(all, 0.5);
  f.p99_ms = bench::quantile(all, 0.99);
  f.errors = errors;
  if (!all.empty()) f.cpu_us_per_call = cpu * 1e6 / static_cast<double>(all.size());
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

// The ceiling of this machine for these calls: a server that does no work
// at all, answering every request on its connection with the same bytes the
// manager sent for one query.latency call (headers included), measured with
// the same clients.
class CannedServer {
 public:
  explicit CannedServer(std::string answer) : answer_(std::move(answer)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof at;
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&at), size) != 0 ||
        listen(listen_fd_, 64) != 0)
      throw std::runtime_error("canned server: cannot listen on loopback");
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&at), &size);
    port_ = ntohs(at.sin_port);
    acceptor_ = std::thread([this] {
      for (int conn; (conn = accept(listen_fd_, nullptr, nullptr)) >= 0;) {
        std::lock_guard lock(mu_);
        connections_.push_back(conn);
        servers_.emplace_back([this, conn] { serve(conn); });
      }
    });
  }

  ~CannedServer() {
    shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    close(listen_fd_);
    for (int conn : connections_) shutdown(conn, SHUT_RDWR);
    for (auto& t : servers_) t.join();
    for (int conn : connections_) close(conn);
  }

  std::uint16_t port() const { return port_; }

 private:
  // Reads each request whole (headers and Content-Length body), then sends
  // the answer, until the client goes away.
  void serve(int conn) {
    std::string pending;
    char chunk[16384];
    for (;;) {
      auto end = pending.find("\r\n\r\n");
      if (end != std::string::npos) {
        auto length = pending.find("Content-Length: ");
        std::size_t need = end + 4 + (length < end ? std::stoul(pending.substr(length + 16)) : 0);
        if (pending.size() >= need) {
          pending.erase(0, need);
          std::string_view out(answer_);
          while (!out.empty()) {
            ssize_t n = send(conn, out.data(), out.size(), MSG_NOSIGNAL);
            if (n <= 0) return;
            out.remove_prefix(static_cast<std::size_t>(n));
          }
          continue;
        }
      }
      ssize_t n = recv(conn, chunk, sizeof chunk, 0);
      if (n <= 0) return;
      pending.append(chunk, static_cast<std::size_t>(n));
    }
  }

  std::string answer_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> connections_;
  std::vector<std::thread> servers_;
};

}  // namespace

// Usage: manager_xmlrpc_bench [SECONDS_PER_RUN] [NAME...]; NAMEs (probe_get,
// query_latency_100) pick the calls measured, all by default.
int main(int argc, char** argv) {
  flexmon::keep_freed_memory_for_result_pages();  // as flexmon-manager's main does
  const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  const std::vector<std::string_view> only(argv + std::min(argc, 2), argv + argc);
  const int clients = 16;
  logger("manager")->set_level(spdlog::level::warn);
  auto dir = bench::temp_dir("flexmon-xmlrpc-bench");
  Config config = bench::config_with_nodes(dir, 3);
  config.manager.max_connections = 64;
  fill_results(config);
  manager::configure_xmlrpc_limits(config.manager);  // as flexmon-manager's main does
  auto manager = start_manager_daemon(config);
  Config unrendered = config;  // outlives the manager started with it
  unrendered.manager.rendered_rows_mb = 0;
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
      "YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==\r\nContent-Length: " +
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
  std::string query_answer;
  {
    // What each query call receives: a full page of 100 rows.
    std::string request =
        "POST /RPC2 HTTP/1.1\r\nHost: b\r\nAuthorization: Basic "
        "YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==\r\nContent-Length: " +
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
    query_answer = buffer;
  }
  double query_keepalive_calls_per_s = 0;
  for (auto [name, body] : {std::pair{"probe_get", get}, std::pair{"query_latency_100", query}})
    for (bool keepalive : {true, false}) {
      if (!only.empty() && std::find(only.begin(), only.end(), name) == only.end()) continue;
      Figures f = run(port, body, keepalive, clients, seconds);
      const char* mode = keepalive ? "keepalive" : "close";
      fmt::print("{}_{}_calls_per_s {:.0f}\n", name, mode, f.calls_per_s);
      fmt::print("{}_{}_p50_ms {:.3f}\n", name, mode, f.p50_ms);
      fmt::print("{}_{}_p99_ms {:.3f}\n", name, mode, f.p99_ms);
      fmt::print("{}_{}_errors {}\n", name, mode, f.errors);
      fmt::print("{}_{}_cpu_us_per_call {:.0f}\n", name, mode, f.cpu_us_per_call);
      if (std::string_view(name) == "query_latency_100" && keepalive)
        query_keepalive_calls_per_s = f.calls_per_s;
    }
  if (query_keepalive_calls_per_s > 0) {
    manager->stop();
    manager = start_manager_daemon(unrendered);
    Figures f = run(manager->xmlrpc_port(), query, true, clients, seconds);
    fmt::print("query_latency_100_unrendered_keepalive_calls_per_s {:.0f}\n", f.calls_per_s);
    fmt::print("query_latency_100_unrendered_keepalive_p50_ms {:.3f}\n", f.p50_ms);
    fmt::print("query_latency_100_unrendered_keepalive_p99_ms {:.3f}\n", f.p99_ms);
    fmt::print("query_latency_100_unrendered_keepalive_errors {}\n", f.errors);
    fmt::print("query_latency_100_unrendered_keepalive_cpu_us_per_call {:.0f}\n",
               f.cpu_us_per_call);
  }
  if (query_keepalive_calls_per_s > 0) {
    CannedServer canned(query_answer);
    Figures f = run(canned.port(), query, true, clients, seconds);
    fmt::print("canned_query_answer_keepalive_calls_per_s {:.0f}\n", f.calls_per_s);
    fmt::print("canned_query_answer_keepalive_cpu_us_per_call {:.0f}\n", f.cpu_us_per_call);
    fmt::print("query_latency_100_keepalive_share_of_canned {:.2f}\n",
               query_keepalive_calls_per_s / f.calls_per_s);
  }
  manager->stop();
  std::filesystem::remove_all(dir);
}
