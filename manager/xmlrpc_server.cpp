#include "manager/xmlrpc_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
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

struct XmlRpcServer::Impl {
  const Config& config;
  Authenticator auth;
  xmlrpc_c::registry registry;
  int fd = -1;
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  std::unique_ptr<xmlrpc_c::serverAbyss> server;
  std::thread thread;
  std::atomic<bool> stopping{false};

  Impl(const Config& c, std::vector<ApiMethod> methods) : config(c), auth(c.users) {
    for (auto& m : methods) {
      std::string name = m.name;
      registry.addMethod(name, xmlrpc_c::methodPtr(new AuthMethod(std::move(m), auth)));
    }
    // Process-wide limits of the XML parser, set before any request.
    xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, c.manager.max_request_bytes);
    xmlrpc_limit_set(XMLRPC_NESTING_LIMIT_ID, c.manager.max_nesting);
    const unsigned backlog = 16;
    fd = listen_on(c.manager.xmlrpc, static_cast<int>(backlog));
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
    server = std::make_unique<xmlrpc_c::serverAbyss>(xmlrpc_c::serverAbyss::constrOpt()
                                                         .registryP(&registry)
                                                         .socketFd(fd)
                                                         .maxConn(c.manager.max_connections)
                                                         .maxConnBacklog(backlog)
                                                         .timeout(c.manager.http_timeout_s)
                                                         .keepaliveTimeout(c.manager.http_timeout_s)
                                                         .keepaliveMaxConn(100)
                                                         .uriPath("/RPC2")
                                                         .dontAdvertise(true)
                                                         .serverOwnsSignals(false));
  }

  std::uint16_t port() const {
    if (bound.ss_family == AF_INET6)
      return ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
    return ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  }

  // A loopback connection that makes a blocked accept() return.
  void wake() {
    int s = socket(bound.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return;
    sockaddr_storage to = bound;
    if (to.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&to);
      if (in->sin_addr.s_addr == htonl(INADDR_ANY)) in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (to.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&to);
      if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) in6->sin6_addr = in6addr_loopback;
    }
    (void)connect(s, reinterpret_cast<sockaddr*>(&to), bound_len);
    close(s);
  }
};

XmlRpcServer::XmlRpcServer(const Config& config, std::vector<ApiMethod> methods)
    : impl_(std::make_unique<Impl>(config, std::move(methods))) {}

XmlRpcServer::~XmlRpcServer() {
  stop();
  if (impl_->fd >= 0) close(impl_->fd);
}

std::uint16_t XmlRpcServer::port() const { return impl_->port(); }

void XmlRpcServer::start() {
  impl_->thread = std::thread([this] {
    try {
      impl_->server->run();
    } catch (const std::exception& e) {
      log()->critical("XML-RPC server failed: {}", e.what());
    }
  });
  log()->info("XML-RPC API on {} port {}", impl_->config.manager.xmlrpc.host, port());
}

void XmlRpcServer::stop() {
  if (impl_->stopping.exchange(true)) return;
  if (!impl_->thread.joinable()) return;
  impl_->server->terminate();
  impl_->wake();
  impl_->thread.join();
}

}  // namespace flexmon::manager
