#include "manager/xmlrpc_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <xmlrpc-c/abyss.h>
#include <xmlrpc-c/util.h>
#include <xmlrpc-c/registry.hpp>
#include <xmlrpc-c/server_abyss.hpp>

#include "common/log.h"
#include "manager/api_types.h"
#include "manager/auth.h"

namespace flexmon::manager {

namespace {

auto log() { return logger("manager"); }

xmlrpc_c::fault make_fault(int code, const std::string& message) {
  return xmlrpc_c::fault(message, static_cast<xmlrpc_c::fault::code_t>(code));
}

// One API method behind authentication, with every exception caught here.
class AuthMethod : public xmlrpc_c::method2 {
 public:
  AuthMethod(ApiMethod method, const Authenticator& auth)
      : method_(std::move(method)), auth_(auth) {
    _signature = method_.signature;
    _help = method_.help;
  }

  void execute(const xmlrpc_c::paramList& params, const xmlrpc_c::callInfo* info,
               xmlrpc_c::value* result) override {
    try {
      const UserConfig* caller = nullptr;
      if (auto* abyss = dynamic_cast<const xmlrpc_c::callInfo_serverAbyss*>(info)) {
        const char* header = RequestHeaderValue(abyss->abyssSessionP, "authorization");
        if (header) caller = auth_.authenticate(header);
      }
      if (!caller)
        throw ApiFault(kNotAuthenticated,
                       "not authenticated: send HTTP Basic credentials user:token that are "
                       "valid for this manager");
      *result = method_.run(*caller, params);
    } catch (const ApiFault& f) {
      throw make_fault(f.code(), f.what());
    } catch (const xmlrpc_c::fault&) {
      throw;
    } catch (const std::exception& e) {
      log()->error("{}: internal error: {}", method_.name, e.what());
      throw make_fault(kInternal, "internal error (logged by the manager)");
    } catch (...) {
      log()->error("{}: internal error: unknown exception", method_.name);
      throw make_fault(kInternal, "internal error (logged by the manager)");
    }
  }

 private:
  ApiMethod method_;
  const Authenticator& auth_;
};

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

// Connections are accepted here, not by Abyss, and each is served by
// serverAbyss::runConn() on its own thread (one request per connection). So
// the manager knows every open connection and stop() can close them at once:
// Abyss's own run() waits in 2 s steps, and for idle keep-alive clients.
struct XmlRpcServer::Impl {
  const Config& config;
  Authenticator auth;
  xmlrpc_c::registry registry;
  int fd = -1;
  int wake_pipe[2] = {-1, -1};
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  std::unique_ptr<xmlrpc_c::serverAbyss> server;
  std::thread thread;
  std::atomic<bool> stopping{false};

  std::mutex mu;
  std::condition_variable idle;
  std::set<int> connections;  // guarded by mu
  std::uint64_t refused = 0;  // guarded by mu

  Impl(const Config& c, std::vector<ApiMethod> methods) : config(c), auth(c.users) {
    for (auto& m : methods) {
      std::string name = m.name;
      registry.addMethod(name, xmlrpc_c::methodPtr(new AuthMethod(std::move(m), auth)));
    }
    // Process-wide limits of the XML parser, set before any request.
    xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, c.manager.max_request_bytes);
    xmlrpc_limit_set(XMLRPC_NESTING_LIMIT_ID, c.manager.max_nesting);
    fd = listen_on(c.manager.xmlrpc, 64);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
      throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
    server = std::make_unique<xmlrpc_c::serverAbyss>(xmlrpc_c::serverAbyss::constrOpt()
                                                         .registryP(&registry)
                                                         .timeout(c.manager.http_timeout_s)
                                                         .keepaliveTimeout(c.manager.http_timeout_s)
                                                         .keepaliveMaxConn(1)
                                                         .uriPath("/RPC2")
                                                         .dontAdvertise(true)
                                                         .serverOwnsSignals(false));
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

  void serve(int conn) {
    try {
      server->runConn(conn);
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
