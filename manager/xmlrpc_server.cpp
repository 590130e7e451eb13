#include "manager/xmlrpc_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <variant>

#include <fmt/format.h>

#include "common/http_request.h"
#include "common/log.h"
#include "manager/call_handler.h"

namespace flexmon::manager {

namespace {

auto log() { return logger("manager"); }

// The request line and headers of one call; Basic credentials fit easily.
constexpr std::size_t kMaxHeaderBytes = 4096;

// Answer buffer a connection keeps between calls: a 100-row page fits.
constexpr std::size_t kKeptAnswerBytes = 1 << 20;

// A listening TCP socket on `endpoint`, with a clear error on failure.
int listen_on(const Endpoint& endpoint, int backlog) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  std::string port = std::to_string(endpoint.port);
  if (int rc = getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    throw std::runtime_error(
        fmt::format("XML-RPC address {}: {}", endpoint.to_string(), gai_strerror(rc)));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> holder(found, freeaddrinfo);
  int fd = socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol);
  if (fd < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
    int err = errno;
    close(fd);
    throw std::runtime_error(
        fmt::format("XML-RPC: cannot listen on {}: {}", endpoint.to_string(), std::strerror(err)));
  }
  return fd;
}

}  // namespace

// Connections are accepted here and each is served on its own thread by a
// small, strict HTTP/1.1 loop (below) that hands each body to the xmlrpc-c
// registry. Abyss's serverAbyss::runConn() forces one call per connection
// (it sets keepalivemaxconn = 1), and its run() waits in 2 s steps; here the
// manager knows every open connection, serves keep-alive, and stop() wakes
// every connection thread at once with shutdown(SHUT_RDWR).
struct XmlRpcServer::Impl {
  const Config& config;
  CallHandler calls;
  int fd = -1;
  int wake_pipe[2] = {-1, -1};
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  std::thread thread;
  std::atomic<bool> stopping{false};

  std::mutex mu;
  std::condition_variable idle;
  std::set<int> connections;  // guarded by mu
  std::uint64_t refused = 0;  // guarded by mu

  Impl(const Config& c, std::vector<ApiMethod> methods) : config(c), calls(c, std::move(methods)) {
    fd = listen_on(c.manager.xmlrpc, 64);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
      throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  }

  ~Impl() {
    for (int f : {fd, wake_pipe[0], wake_pipe[1]})
      if (f >= 0) close(f);
  }

  std::uint16_t port() const {
    if (bound.ss_family == AF_INET6)
      return ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
    return ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  }

  void accept_loop() {
    for (;;) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {wake_pipe[0], POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        log()->critical("XML-RPC: poll: {}", std::strerror(errno));
        return;
      }
      if (stopping || fds[1].revents) return;
      if (!(fds[0].revents & POLLIN)) continue;
      int conn = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
          log()->warn("XML-RPC: accept: {}", std::strerror(errno));
        if (errno == EMFILE || errno == ENFILE)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      std::unique_lock lock(mu);
      if (connections.size() >= config.manager.max_connections) {
        ++refused;
        lock.unlock();
        static const char kBusy[] =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        (void)send(conn, kBusy, sizeof kBusy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        close(conn);
        log()->warn("XML-RPC: {} connections open, the limit; refused one",
                    config.manager.max_connections);
        continue;
      }
      connections.insert(conn);
      lock.unlock();
      std::thread([this, conn] { serve(conn); }).detach();
    }
  }

  // Appends what the connection sends next to `buffer`; false on EOF, error,
  // timeout (SO_RCVTIMEO: config.manager.http_timeout_s) or stop (stop()
  // shuts the socket down, which ends a wait at once). One system call per
  // read rather than a poll and then a read: every call of a keep-alive
  // connection waits here for its request.
  bool receive_some(int conn, std::string& buffer) {
    char chunk[16384];
    for (;;) {
      ssize_t n = recv(conn, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR && !stopping) continue;
      if (n <= 0 || stopping) return false;
      buffer.append(chunk, static_cast<std::size_t>(n));
      return true;
    }
  }

  static bool send_all(int conn, std::string_view data) {
    while (!data.empty()) {
      ssize_t n = send(conn, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Sends `head` and then the answer (its text with the kept pieces spliced
  // in) with as few system calls as the socket allows, without copying them
  // into one buffer first: a query answer is ~160 KB, mostly kept rows.
  static bool send_answer(int conn, std::string_view head, const XmlAnswer& answer,
                          std::vector<iovec>& parts) {
    auto add = [&parts](std::string_view bytes) {
      if (!bytes.empty()) parts.push_back({const_cast<char*>(bytes.data()), bytes.size()});
    };
    parts.clear();
    add(head);
    std::string_view text(answer.text);
    std::size_t from = 0;
    for (const auto& s : answer.splices) {
      add(text.substr(from, s.at - from));
      add(*s.piece);
      from = s.at;
    }
    add(text.substr(from));
    for (std::size_t first = 0; first < parts.size();) {
      msghdr message{};
      message.msg_iov = parts.data() + first;
      message.msg_iovlen = std::min<std::size_t>(parts.size() - first, IOV_MAX);
      ssize_t n = sendmsg(conn, &message, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      // Skip what was sent: whole parts, then the front of a partly sent one.
      auto sent = static_cast<std::size_t>(n);
      while (sent > 0 && sent >= parts[first].iov_len) sent -= parts[first++].iov_len;
      if (sent > 0) {
        parts[first].iov_base = static_cast<char*>(parts[first].iov_base) + sent;
        parts[first].iov_len -= sent;
      }
    }
    return true;
  }

  static void refuse(int conn, int status, std::string_view reason) {
    send_all(conn, fmt::format("HTTP/1.1 {} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                               status, reason));
  }

  // Serves calls on one connection until the client closes, a limit, an
  // error, keepalive_max_requests calls, or stop.
  void serve_calls(int conn) {
    http::RequestReader reader(
        {.max_header_bytes = kMaxHeaderBytes, .max_body_bytes = config.manager.max_request_bytes});
    std::string buffer;
    // Kept across the connection's calls: their capacity is reused, so a
    // large answer is not allocated (and unmapped) again on every call.
    XmlAnswer response;
    std::string head;
    std::vector<iovec> parts;
    for (std::uint32_t served = 0; served < config.manager.keepalive_max_requests;) {
      std::string_view unread(buffer);
      auto step = reader.read(unread);
      buffer.erase(0, buffer.size() - unread.size());
      if (std::holds_alternative<http::NeedMore>(step)) {
        if (!receive_some(conn, buffer)) return;
        continue;
      }
      if (auto* refusal = std::get_if<http::Refusal>(&step)) {
        log()->warn("XML-RPC: refused a request with {}: {}", refusal->status, refusal->detail);
        return refuse(conn, refusal->status, refusal->reason);
      }
      auto& request = std::get<http::Request>(step);
      if (request.method != "POST") return refuse(conn, 405, "Method Not Allowed");
      if (request.target != "/RPC2") return refuse(conn, 404, "Not Found");
      response.clear();
      try {
        calls.answer(request.body, request.authorization, response);
      } catch (const std::exception& e) {
        log()->warn("XML-RPC: call refused: {}", e.what());
        return refuse(conn, 400, "Bad Request");
      }
      ++served;
      const bool last =
          !request.keep_alive || served >= config.manager.keepalive_max_requests || stopping;
      head.clear();
      fmt::format_to(std::back_inserter(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n"
                     "Connection: {}\r\n\r\n",
                     response.size(), last ? "close" : "keep-alive");
      if (!send_answer(conn, head, response, parts) || last) return;
      // A 10,000-row page is ~16 MB of XML: an idle connection does not keep
      // that much, only what a usual page needs. Nor the kept rows it sent.
      if (response.text.capacity() > kKeptAnswerBytes) std::string().swap(response.text);
      response.splices.clear();
    }
  }

  void serve(int conn) {
    try {
      const timeval wait{.tv_sec = static_cast<time_t>(config.manager.http_timeout_s),
                         .tv_usec = 0};
      if (setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait) != 0)
        log()->warn("XML-RPC: cannot set the connection's read timeout: {}", std::strerror(errno));
      else
        serve_calls(conn);
    } catch (const std::exception& e) {
      log()->error("XML-RPC connection: {}", e.what());
    } catch (...) {
      log()->error("XML-RPC connection: unknown exception");
    }
    std::lock_guard lock(mu);
    connections.erase(conn);
    close(conn);
    idle.notify_all();
  }
};

XmlRpcServer::XmlRpcServer(const Config& config, std::vector<ApiMethod> methods)
    : impl_(std::make_unique<Impl>(config, std::move(methods))) {}

XmlRpcServer::~XmlRpcServer() { stop(); }

std::uint16_t XmlRpcServer::port() const { return impl_->port(); }

void XmlRpcServer::start() {
  impl_->thread = std::thread([this] { impl_->accept_loop(); });
  log()->info("XML-RPC API on {} port {}", impl_->config.manager.xmlrpc.host, port());
}

void XmlRpcServer::stop() {
  if (impl_->stopping.exchange(true)) return;
  char byte = 1;
  (void)write(impl_->wake_pipe[1], &byte, 1);
  if (impl_->thread.joinable()) impl_->thread.join();
  // Wake every connection thread: a read in progress fails at once.
  std::unique_lock lock(impl_->mu);
  for (int conn : impl_->connections) shutdown(conn, SHUT_RDWR);
  impl_->idle.wait(lock, [this] { return impl_->connections.empty(); });
}

}  // namespace flexmon::manager
