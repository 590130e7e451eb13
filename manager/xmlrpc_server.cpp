// I/O model: Asio, as everywhere in the manager's networking: one event loop
// thread reads, writes and times every connection; calls are answered on a
// pool of blocking worker threads, because xmlrpc-c's parser and registry and
// the SQLite reads behind query.* block (a large page takes milliseconds) and
// would stall every other connection on the loop.
#include "manager/xmlrpc_server.h"

#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <variant>

#include <fmt/format.h>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include "common/http_request.h"
#include "common/log.h"
#include "manager/call_handler.h"

namespace flexmon::manager {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using asio::ip::tcp;

namespace {

auto log() { return logger("manager"); }

// The request line and headers of one call; Basic credentials fit easily.
constexpr std::size_t kMaxHeaderBytes = 4096;

// Answer buffer a connection keeps between calls: a 100-row page fits.
constexpr std::size_t kKeptAnswerBytes = 1 << 20;

// What one read takes off a connection at most. Each connection has its own
// (it is part of the connection object): 1,000 connections hold 8 MiB.
constexpr std::size_t kReadChunkBytes = 8192;

// Lingering close: after the last response, what the client still sends is
// read and dropped for this long and up to max_request_bytes plus this much,
// so that a refusal sent before the body was read reaches the client
// instead of being destroyed by the reset that closing a socket with unread
// input sends.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr std::size_t kLingerExtraBytes = 1 << 20;

// After accept() fails for want of file descriptors, accepting resumes after
// this pause (the pending connection stays in the backlog meanwhile).
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// Memory that many connections held goes back to the system once this many
// of them have closed (checked every kTrimEvery): glibc keeps freed heap
// memory for later otherwise, and a flood of hostile connections would
// leave the manager's RSS at its peak for good.
constexpr std::size_t kTrimAfterClosed = 64;
constexpr auto kTrimEvery = std::chrono::seconds(5);

// Calls are answered on this many worker threads, so a slow call (a large
// query) never stalls the event loop that reads and writes every connection.
unsigned worker_count() { return std::clamp(std::thread::hardware_concurrency(), 4u, 16u); }

// Every connection needs a descriptor: raise the soft limit to the hard one,
// and say so when even that cannot hold max_connections.
void raise_fd_limit(std::uint32_t max_connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  // Databases, the control channel and the listeners need some too.
  constexpr rlim_t kOtherFds = 256;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < max_connections + kOtherFds)
    log()->warn(
        "XML-RPC: the file descriptor limit ({}) is below manager.max_connections ({}) plus {} "
        "for the rest of the manager: connections past it wait in the backlog",
        limit.rlim_cur, max_connections, kOtherFds);
}

// The TLS context of the API, from manager.tls_*; throws naming the key and
// file when one cannot be used.
std::unique_ptr<ssl::context> tls_context(const ManagerConfig& m) {
  auto context = std::make_unique<ssl::context>(ssl::context::tls_server);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use);
  // SSL_MODE_RELEASE_BUFFERS would save an idle connection OpenSSL's two
  // record buffers (~34 KiB), but freeing and allocating them on every call
  // cost a fifth of keep-alive TLS throughput (manager_transport_bench).
  auto load = [](const char* key, const std::filesystem::path& file, auto&& action) {
    boost::system::error_code error;
    action(file.string(), error);
    if (error)
      throw std::runtime_error(
          fmt::format("manager.{}: cannot use {}: {}", key, file.string(), error.message()));
  };
  load("tls_cert", m.tls_cert, [&](const std::string& f, boost::system::error_code& e) {
    context->use_certificate_chain_file(f, e);
  });
  load("tls_key", m.tls_key, [&](const std::string& f, boost::system::error_code& e) {
    context->use_private_key_file(f, ssl::context::pem, e);
  });
  if (SSL_CTX_check_private_key(context->native_handle()) != 1)
    throw std::runtime_error(
        fmt::format("manager.tls_key: {} is not the key of manager.tls_cert {}", m.tls_key.string(),
                    m.tls_cert.string()));
  if (!m.tls_client_ca.empty()) {
    load("tls_client_ca", m.tls_client_ca, [&](const std::string& f, boost::system::error_code& e) {
      context->load_verify_file(f, e);
    });
    context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  return context;
}

}  // namespace

// One event loop (one thread) accepts, reads, writes and times every
// connection; calls are answered on the worker pool. A connection costs a
// descriptor and a small object while it waits, so hundreds of idle or
// trickling ones cost little, and each is closed at its deadline: a
// request must arrive whole (TLS handshake included) within
// manager.http_timeout_s of its first byte, a kept-alive connection may stay
// idle that long, and a response must be taken within that long. Limits on
// connections in total and per client address are checked at accept.
struct XmlRpcServer::Impl {
  const Config& config;
  CallHandler calls;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_pause{io};
  std::unique_ptr<ssl::context> tls;
  asio::thread_pool workers{worker_count()};
  std::thread loop;
  std::atomic<bool> stopping{false};
  std::uint16_t bound_port = 0;
  RateLimitedLog refusals{log(), 10, std::chrono::seconds(60)};

  // Loop thread only:
  std::set<std::shared_ptr<Connection>> connections;
  std::map<asio::ip::address, std::uint32_t> per_client;
  std::size_t most_since_trim = 0;  // connections open at once since the last trim
  asio::steady_timer trim_timer{io};

  Impl(const Config& c, std::vector<ApiMethod> methods);
  void accept();
  void admit(tcp::socket socket);
  void forget(const std::shared_ptr<Connection>& connection, const asio::ip::address& client);
  void trim_memory();
};

class XmlRpcServer::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(XmlRpcServer::Impl& server, tcp::socket socket, asio::ip::address client)
      : server_(server),
        socket_(std::move(socket)),
        client_(std::move(client)),
        timer_(server.io),
        reader_({.max_header_bytes = kMaxHeaderBytes,
                 .max_body_bytes = server.config.manager.max_request_bytes}) {
    if (server.tls) tls_ = std::make_unique<ssl::stream<tcp::socket&>>(socket_, *server.tls);
  }

  const asio::ip::address& client() const { return client_; }

  void start() {
    if (!tls_) {
      arm(timeout());  // idle: nothing received yet
      return read();
    }
    // The handshake is the first request's beginning: same deadline.
    phase_ = Phase::handshake;
    arm(timeout());
    tls_->async_handshake(ssl::stream_base::server,
                          [self = shared_from_this()](boost::system::error_code error) {
                            if (self->closed_) return;
                            if (error) {
                              self->server_.refusals.info("XML-RPC {}: TLS handshake failed: {}",
                                                          self->peer(), error.message());
                              return self->close();
                            }
                            self->read();
                          });
  }

  // Ends the connection now: pending operations complete with an error.
  void close() {
    if (closed_) return;
    closed_ = true;
    timer_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);
    server_.forget(shared_from_this(), client_);
  }

 private:
  enum class Phase { handshake, idle, reading, answering, writing, lingering };

  std::chrono::seconds timeout() const {
    return std::chrono::seconds(server_.config.manager.http_timeout_s);
  }

  std::string peer() const { return client_.to_string(); }

  // One deadline per phase; it is set when the phase begins, never pushed
  // back by bytes that trickle in.
  void arm(std::chrono::steady_clock::duration after) {
    timer_.expires_after(after);
    timer_.async_wait([self = shared_from_this(), phase = phase_](boost::system::error_code error) {
      if (error || self->closed_ || self->phase_ != phase) return;
      self->expired();
    });
  }

  void expired() {
    switch (phase_) {
      case Phase::reading:
        server_.refusals.info("XML-RPC {}: request not complete within {} s; refused with 408",
                              peer(), server_.config.manager.http_timeout_s);
        return refuse({408, "Request Timeout", "request not complete in time"});
      case Phase::handshake:
        server_.refusals.info("XML-RPC {}: no TLS handshake within {} s; closing", peer(),
                              server_.config.manager.http_timeout_s);
        return close();
      case Phase::writing:
        server_.refusals.info("XML-RPC {}: response not taken within {} s; closing", peer(),
                              server_.config.manager.http_timeout_s);
        return close();
      case Phase::idle:
      case Phase::lingering:
      case Phase::answering:
        return close();
    }
  }

  template <typename Handler>
  void read_some(Handler&& handler) {
    auto buffer = asio::buffer(chunk_);
    if (tls_)
      tls_->async_read_some(buffer, std::forward<Handler>(handler));
    else
      socket_.async_read_some(buffer, std::forward<Handler>(handler));
  }

  // Serves what is buffered, then waits for more.
  void read() {
    std::string_view unread(pending_);
    auto step = reader_.read(unread);
    pending_.erase(0, pending_.size() - unread.size());
    if (auto* request = std::get_if<http::Request>(&step)) return dispatch(std::move(*request));
    if (auto* refusal = std::get_if<http::Refusal>(&step)) {
      server_.refusals.info("XML-RPC {}: refused a request with {}: {}", peer(), refusal->status,
                            escaped(refusal->detail));
      return refuse(std::move(*refusal));
    }
    const Phase now = reader_.in_request() ? Phase::reading : Phase::idle;
    if (phase_ != now) {
      phase_ = now;
      arm(timeout());
    }
    if (reader_.take_continue()) {
      // Within the request's deadline, which keeps running.
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      return asio_write(asio::buffer(kContinue),
                        [self = shared_from_this()](boost::system::error_code error, std::size_t) {
                          if (self->closed_) return;
                          if (error) return self->close();
                          self->read();
                        });
    }
    read_some([self = shared_from_this()](boost::system::error_code error, std::size_t n) {
      if (self->closed_) return;
      if (error) return self->close();
      self->pending_.append(self->chunk_.data(), n);
      self->read();
    });
  }

  void dispatch(http::Request request) {
    if (request.method != "POST") return refuse({405, "Method Not Allowed", "only POST is served"});
    if (request.target != "/RPC2") return refuse({404, "Not Found", "only /RPC2 is served"});
    phase_ = Phase::answering;
    timer_.cancel();
    keep_alive_ = request.keep_alive;
    asio::post(server_.workers, [self = shared_from_this(), request = std::move(request)] {
      std::string failure;
      try {
        self->answer_.clear();
        self->server_.calls.answer(request.body, request.authorization, self->answer_);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      asio::post(self->server_.io, [self, failure = std::move(failure)]() mutable {
        if (self->closed_) return;
        if (!failure.empty()) {
          self->server_.refusals.warn("XML-RPC {}: call refused: {}", self->peer(),
                                      escaped(failure));
          return self->refuse({400, "Bad Request", std::move(failure)});
        }
        self->respond();
      });
    });
  }

  void respond() {
    ++served_;
    const bool last = !keep_alive_ || served_ >= server_.config.manager.keepalive_max_requests ||
                      server_.stopping;
    head_.clear();
    fmt::format_to(std::back_inserter(head_),
                   "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n"
                   "Connection: {}\r\n\r\n",
                   answer_.size(), last ? "close" : "keep-alive");
    parts_.clear();
    if (tls_) {
      // One buffer, so that the response goes out in as few TLS records
      // (and TCP segments) as it can: Asio's SSL stream writes one buffer
      // of a sequence at a time.
      flat_.assign(head_);
      flat_ += answer_.flattened();
      parts_.emplace_back(flat_.data(), flat_.size());
    } else {
      // The kept rows of a query answer are spliced in without a copy.
      auto add = [this](std::string_view bytes) {
        if (!bytes.empty()) parts_.emplace_back(bytes.data(), bytes.size());
      };
      add(head_);
      std::string_view text(answer_.text);
      std::size_t from = 0;
      for (const auto& s : answer_.splices) {
        add(text.substr(from, s.at - from));
        add(*s.piece);
        from = s.at;
      }
      add(text.substr(from));
    }
    write(last);
  }

  void write(bool last) {
    phase_ = Phase::writing;
    arm(timeout());
    auto done = [self = shared_from_this(), last](boost::system::error_code error, std::size_t) {
      if (self->closed_) return;
      if (error) return self->close();
      if (last) return self->linger();
      // A 10,000-row page is ~16 MB of XML: an idle connection does not keep
      // that much, only what a usual page needs. Nor the kept rows it sent.
      if (self->answer_.text.capacity() > kKeptAnswerBytes) std::string().swap(self->answer_.text);
      if (self->flat_.capacity() > kKeptAnswerBytes) std::string().swap(self->flat_);
      self->answer_.splices.clear();
      self->read();
    };
    asio_write(parts_, std::move(done));
  }

  template <typename Buffers, typename Handler>
  void asio_write(const Buffers& buffers, Handler&& handler) {
    if (tls_)
      asio::async_write(*tls_, buffers, std::forward<Handler>(handler));
    else
      asio::async_write(socket_, buffers, std::forward<Handler>(handler));
  }

  // Answers `refusal` and closes the connection the lingering way.
  void refuse(http::Refusal refusal) {
    head_ = fmt::format("HTTP/1.1 {} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        refusal.status, refusal.reason);
    parts_.assign(1, asio::const_buffer(head_.data(), head_.size()));
    write(true);
  }

  // The client has its last response: end the TLS session, stop sending,
  // and read whatever it still sends, within bounds, before closing (see
  // kLingerTime).
  void linger() {
    phase_ = Phase::lingering;
    arm(kLingerTime);
    if (!tls_) return drain();
    tls_->async_shutdown([self = shared_from_this()](boost::system::error_code) {
      if (!self->closed_) self->drain();
    });
  }

  void drain() {
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    socket_.async_read_some(
        asio::buffer(chunk_),
        [self = shared_from_this()](boost::system::error_code error, std::size_t n) {
          if (self->closed_) return;
          self->drained_ += n;
          if (error ||
              self->drained_ > self->server_.config.manager.max_request_bytes + kLingerExtraBytes)
            return self->close();
          self->drain();
        });
  }

  XmlRpcServer::Impl& server_;
  tcp::socket socket_;
  std::unique_ptr<ssl::stream<tcp::socket&>> tls_;  // set when the API speaks TLS
  asio::ip::address client_;
  asio::steady_timer timer_;
  http::RequestReader reader_;
  std::array<char, kReadChunkBytes> chunk_;
  std::string pending_;  // received, not yet taken by reader_ (at most a header)
  Phase phase_ = Phase::idle;
  bool closed_ = false;
  bool keep_alive_ = false;
  std::uint32_t served_ = 0;
  std::size_t drained_ = 0;
  // Kept across the connection's calls: their capacity is reused, so a
  // large answer is not allocated (and unmapped) again on every call. The
  // answer is written by a worker while the loop leaves it alone.
  XmlAnswer answer_;
  std::string head_, flat_;
  std::vector<asio::const_buffer> parts_;
};

XmlRpcServer::Impl::Impl(const Config& c, std::vector<ApiMethod> methods)
    : config(c), calls(c, std::move(methods)) {
  const auto& m = c.manager;
  if (!m.tls_cert.empty()) tls = tls_context(m);
  raise_fd_limit(m.max_connections);
  tcp::resolver resolver(io);
  boost::system::error_code error;
  auto found =
      resolver.resolve(m.xmlrpc.host, std::to_string(m.xmlrpc.port), tcp::resolver::passive, error);
  if (error || found.empty())
    throw std::runtime_error(
        fmt::format("XML-RPC address {}: {}", m.xmlrpc.to_string(), error.message()));
  const tcp::endpoint endpoint = found.begin()->endpoint();
  // A name in the config may resolve to an outside address: check what is bound.
  if (!tls && !m.insecure_plaintext && !endpoint.address().is_loopback())
    throw std::runtime_error(fmt::format(
        "manager.xmlrpc_listen: {} is not a loopback address: give manager.tls_cert and "
        "manager.tls_key (TLS), or set manager.insecure_plaintext: true to serve plain HTTP there",
        endpoint.address().to_string()));
  acceptor.open(endpoint.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error)
    throw std::runtime_error(
        fmt::format("XML-RPC: cannot listen on {}: {}", m.xmlrpc.to_string(), error.message()));
  bound_port = acceptor.local_endpoint().port();
}

void XmlRpcServer::Impl::accept() {
  acceptor.async_accept([this](boost::system::error_code error, tcp::socket socket) {
    if (stopping || !acceptor.is_open()) return;
    if (error) {
      if (error == asio::error::no_descriptors || error == asio::error::no_buffer_space ||
          error == asio::error::no_memory) {
        refusals.warn("XML-RPC: accept: {}; pausing accepts for {} ms", error.message(),
                      kAcceptBackoff.count());
        accept_pause.expires_after(kAcceptBackoff);
        accept_pause.async_wait([this](boost::system::error_code e) {
          if (!e && !stopping) accept();
        });
        return;
      }
      refusals.info("XML-RPC: accept: {}", error.message());
      return accept();
    }
    admit(std::move(socket));
    accept();
  });
}

void XmlRpcServer::Impl::admit(tcp::socket socket) {
  boost::system::error_code error;
  const auto remote = socket.remote_endpoint(error);
  if (error) return;  // gone already
  const auto& m = config.manager;
  const auto client = remote.address();
  auto& from_client = per_client[client];
  const char* limit = connections.size() >= m.max_connections       ? "max_connections"
                      : from_client >= m.max_connections_per_client ? "max_connections_per_client"
                                                                    : nullptr;
  if (limit) {
    if (from_client == 0) per_client.erase(client);
    refusals.warn("XML-RPC {}: manager.{} reached ({} open, {} from this client); refused",
                  client.to_string(), limit, connections.size(), from_client);
    // Best effort and never waiting: a plain-HTTP client may read why.
    if (!tls) {
      static constexpr std::string_view kBusy =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      socket.non_blocking(true, error);
      socket.send(asio::buffer(kBusy), 0, error);
    }
    socket.shutdown(tcp::socket::shutdown_both, error);
    return;
  }
  ++from_client;
  socket.set_option(tcp::no_delay(true), error);
  auto connection = std::make_shared<Connection>(*this, std::move(socket), client);
  connections.insert(connection);
  most_since_trim = std::max(most_since_trim, connections.size());
  connection->start();
}

void XmlRpcServer::Impl::trim_memory() {
  trim_timer.expires_after(kTrimEvery);
  trim_timer.async_wait([this](boost::system::error_code error) {
    if (error || stopping) return;
    if (most_since_trim >= connections.size() + kTrimAfterClosed) {
      // Every arena: the workers' too, where calls were answered.
      malloc_trim(0);
      most_since_trim = connections.size();
    }
    trim_memory();
  });
}

void XmlRpcServer::Impl::forget(const std::shared_ptr<Connection>& connection,
                                const asio::ip::address& client) {
  if (connections.erase(connection) == 0) return;
  auto it = per_client.find(client);
  if (it != per_client.end() && --it->second == 0) per_client.erase(it);
}

XmlRpcServer::XmlRpcServer(const Config& config, std::vector<ApiMethod> methods)
    : impl_(std::make_unique<Impl>(config, std::move(methods))) {}

XmlRpcServer::~XmlRpcServer() { stop(); }

std::uint16_t XmlRpcServer::port() const { return impl_->bound_port; }

void XmlRpcServer::start() {
  impl_->accept();
  impl_->trim_memory();
  impl_->loop = std::thread([impl = impl_.get()] {
    auto work = asio::make_work_guard(impl->io);
    for (;;) {
      try {
        impl->io.run();
        return;
      } catch (const std::exception& e) {
        log()->error("XML-RPC: event loop: {}", e.what());
      }
    }
  });
  log()->info("XML-RPC API on {} port {} ({})", impl_->config.manager.xmlrpc.host, port(),
              impl_->tls ? impl_->config.manager.tls_client_ca.empty()
                               ? "TLS"
                               : "TLS, client certificates required"
                         : "plain HTTP");
}

void XmlRpcServer::stop() {
  auto& impl = *impl_;
  if (impl.stopping.exchange(true)) return;
  // Stop accepting and end every connection; calls being answered finish
  // (they may use the manager's core, which stops after this returns), and
  // their answers find the connection closed.
  std::promise<void> closed;
  asio::post(impl.io, [&impl, &closed] {
    boost::system::error_code ignored;
    impl.acceptor.close(ignored);
    impl.accept_pause.cancel();
    impl.trim_timer.cancel();
    for (const auto& connection : std::vector(impl.connections.begin(), impl.connections.end()))
      connection->close();
    closed.set_value();
  });
  if (impl.loop.joinable()) closed.get_future().wait();
  impl.workers.join();
  impl.io.stop();
  if (impl.loop.joinable()) impl.loop.join();
}

}  // namespace flexmon::manager
