#include "manager/control.h"

#include <openssl/rand.h>

#include <atomic>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <boost/asio.hpp>

#include "common/framing.h"
#include "common/log.h"
#include "common/seal.h"
#include "wire.pb.h"

namespace flexmon::manager {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

auto log() { return logger("manager"); }

constexpr std::size_t kNonceBytes = 16;
constexpr auto kRegisterTimeout = std::chrono::seconds(10);

struct Outgoing {
  std::string bytes;
  std::uint64_t generation = 0;  // an assignment's, 0 for other messages
};

}  // namespace

struct Session;

struct ControlServer::Impl {
  const Config& config;
  Core& core;
  KeyRing keys;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread thread;
  // Asio thread only:
  std::set<std::shared_ptr<Session>> sessions;
  std::map<std::string, std::weak_ptr<Session>> registered;
  std::uint64_t next_serial = 0;
  // Read from any thread:
  std::atomic<std::uint64_t> n_sessions{0}, seal_failures{0}, bad_messages{0};
  std::atomic<std::uint16_t> bound_port{0};
  bool stopped = false;

  Impl(const Config& c, Core& k) : config(c), core(k) {
    for (const auto& n : c.nodes) keys.add(n.id, n.key);
  }
  void accept();
};

struct Session : std::enable_shared_from_this<Session> {
  ControlServer::Impl& server;
  tcp::socket socket;
  asio::steady_timer timer;
  std::string peer;
  std::string nonce;
  std::string node;  // set at registration
  const Sealer* key = nullptr;
  std::uint64_t serial = 0;    // 0 until registered
  std::uint64_t expected = 1;  // counter of the next message from the prober
  std::uint64_t sent = 0;      // counter of the last message to the prober
  std::uint8_t header[kFrameHeaderBytes];
  std::string body;
  std::deque<Outgoing> queue;
  bool writing = false;
  bool closed = false;

  Session(ControlServer::Impl& s, tcp::socket sock)
      : server(s), socket(std::move(sock)), timer(s.io) {
    boost::system::error_code ec;
    auto ep = socket.remote_endpoint(ec);
    peer = ec ? "unknown peer" : fmt::format("{}:{}", ep.address().to_string(), ep.port());
  }

  std::string who() const { return node.empty() ? peer : fmt::format("node {} ({})", node, peer); }

  void begin() {
    nonce.resize(kNonceBytes);
    if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), kNonceBytes) != 1) {
      log()->error("control {}: RAND_bytes failed; closing", peer);
      close();
      return;
    }
    wire::Message hello;
    hello.mutable_hello()->set_session(nonce);
    hello.mutable_hello()->set_version(kWireVersion);
    enqueue({length_prefixed(unsealed_frame(hello)), 0});
    arm(kRegisterTimeout, "no register");
    read_header();
  }

  void arm(std::chrono::steady_clock::duration after, const char* why) {
    timer.expires_after(after);
    timer.async_wait([self = shared_from_this(), why](boost::system::error_code ec) {
      if (ec || self->closed) return;
      log()->warn("control {}: {} within the timeout; closing", self->who(), why);
      self->close();
    });
  }

  void read_header() {
    asio::async_read(socket, asio::buffer(header),
                     [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                       if (self->closed) return;
                       if (ec) {
                         log()->info("control {}: connection closed ({})", self->who(),
                                     ec.message());
                         return self->close();
                       }
                       auto length = frame_length(self->header);
                       if (!length) return self->bad(length.error().message);
                       self->body.resize(*length);
                       self->read_body();
                     });
  }

  void read_body() {
    asio::async_read(socket, asio::buffer(body),
                     [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                       if (self->closed) return;
                       if (ec) {
                         log()->info("control {}: connection closed ({})", self->who(),
                                     ec.message());
                         return self->close();
                       }
                       if (self->handle()) self->read_header();
                     });
  }

  void bad(const std::string& reason) {
    ++server.bad_messages;
    log()->warn("control {}: bad message: {}; closing the session", who(), reason);
    close();
  }

  void seal_failure(const std::string& reason) {
    ++server.seal_failures;
    log()->warn("control {}: seal failure: {}; closing the session", who(), reason);
    close();
  }

  // Handles one frame; false when the session was closed.
  bool handle() {
    wire::Sealed outer;
    if (!outer.ParseFromString(body)) {
      bad(fmt::format("malformed frame ({} bytes)", body.size()));
      return false;
    }
    auto opened = key ? open_from(body, node, *key) : server.keys.open(body);
    if (!opened) {
      seal_failure(opened.error().message);
      return false;
    }
    wire::Message& m = *opened;
    if (m.session() != nonce) {
      bad("wrong session nonce");
      return false;
    }
    if (m.counter() != expected) {
      bad(fmt::format("counter {} where {} was expected", m.counter(), expected));
      return false;
    }
    ++expected;
    if (!key) {
      if (!m.has_register_()) {
        bad("the first message must be a register");
        return false;
      }
      register_as(m);
      return !closed;
    }
    if (!m.has_heartbeat()) {
      bad(fmt::format("unexpected message kind {} after registration",
                      static_cast<int>(m.kind_case())));
      return false;
    }
    server.core.on_heartbeat(node, m.heartbeat());
    arm_idle();
    return true;
  }

  void arm_idle() {
    double seconds =
        std::max(server.config.manager.dead_after_s, 3 * server.config.prober.heartbeat_s);
    arm(std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000)), "no heartbeat");
  }

  void register_as(const wire::Message& m) {
    node = m.node();
    key = server.keys.find(node);
    serial = ++server.next_serial;
    ++server.n_sessions;
    if (auto old = server.registered[node].lock(); old && old.get() != this) {
      log()->info("control node {}: new session from {} replaces the one from {}", node, peer,
                  old->peer);
      old->close();
    }
    server.registered[node] = weak_from_this();
    log()->info("control node {}: registered from {} (boot epoch {}, software '{}')", node, peer,
                m.register_().boot_epoch(), m.register_().software_version().substr(0, 64));
    arm_idle();
    send_assignment(server.core.on_register(node, serial));
  }

  void send_assignment(wire::Assignment assignment) {
    const auto generation = assignment.generation();
    wire::Message m;
    m.set_node(node);
    m.set_session(nonce);
    m.set_counter(++sent);
    *m.mutable_assignment() = std::move(assignment);
    std::string frame = seal(m, *key);
    if (frame.size() > kMaxControlFrame) {
      log()->error(
          "control node {}: assignment {} of {} streams is {} bytes, above the frame "
          "limit; not sent",
          node, generation, m.assignment().streams_size(), frame.size());
      --sent;
      server.core.on_delivered(node, serial, generation, false);
      return;
    }
    log()->debug("control node {}: assignment {} with {} streams", node, generation,
                 m.assignment().streams_size());
    enqueue({length_prefixed(frame), generation});
  }

  void enqueue(Outgoing out) {
    queue.push_back(std::move(out));
    if (!writing) write_next();
  }

  void write_next() {
    if (queue.empty() || closed) return;
    writing = true;
    asio::async_write(socket, asio::buffer(queue.front().bytes),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                        self->writing = false;
                        if (self->queue.empty()) return;
                        Outgoing done = std::move(self->queue.front());
                        self->queue.pop_front();
                        if (done.generation)
                          self->server.core.on_delivered(self->node, self->serial, done.generation,
                                                         !ec);
                        if (ec) {
                          if (!self->closed)
                            log()->info("control {}: write failed ({})", self->who(), ec.message());
                          return self->close();
                        }
                        self->write_next();
                      });
  }

  void close() {
    if (closed) return;
    closed = true;
    boost::system::error_code ignored;
    timer.cancel();
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    if (serial) {
      auto it = server.registered.find(node);
      if (it != server.registered.end() && it->second.lock().get() == this)
        server.registered.erase(it);
      server.core.on_disconnect(node, serial);
      // Assignments still queued were not delivered (the one being
      // written is reported by its completion handler).
      for (std::size_t i = writing ? 1 : 0; i < queue.size(); ++i)
        if (queue[i].generation) server.core.on_delivered(node, serial, queue[i].generation, false);
      if (writing && queue.size() > 1) queue.resize(1);
      if (!writing) queue.clear();
    }
    server.sessions.erase(shared_from_this());
  }
};

void ControlServer::Impl::accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (stopped) return;
    if (!ec) {
      auto session = std::make_shared<Session>(*this, std::move(socket));
      sessions.insert(session);
      session->begin();
    } else {
      log()->warn("control: accept failed: {}", ec.message());
    }
    accept();
  });
}

ControlServer::ControlServer(const Config& config, Core& core)
    : impl_(std::make_shared<Impl>(config, core)) {
  const Endpoint& at = config.manager.control;
  try {
    tcp::resolver resolver(impl_->io);
    auto results = resolver.resolve(at.host, std::to_string(at.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service);
    tcp::endpoint endpoint = *results.begin();
    impl_->acceptor.open(endpoint.protocol());
    impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    impl_->acceptor.bind(endpoint);
    impl_->acceptor.listen();
    impl_->bound_port = impl_->acceptor.local_endpoint().port();
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error(
        fmt::format("control channel: cannot listen on {}: {}", at.to_string(), e.what()));
  }
}

ControlServer::~ControlServer() { stop(); }

std::uint16_t ControlServer::port() const { return impl_->bound_port; }

ControlCounters ControlServer::counters() const {
  return {impl_->n_sessions, impl_->seal_failures, impl_->bad_messages};
}

void ControlServer::start() {
  impl_->accept();
  impl_->thread = std::thread([impl = impl_] {
    for (;;) {
      try {
        impl->io.run();
        return;
      } catch (const std::exception& e) {
        log()->error("control: {}", e.what());
      }
    }
  });
  log()->info("control channel on {} port {}", impl_->config.manager.control.host, port());
}

void ControlServer::stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->io, [impl = impl_] {
    impl->stopped = true;
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
    auto sessions = impl->sessions;
    for (auto& s : sessions) s->close();
    impl->io.stop();
  });
  impl_->thread.join();
}

void ControlServer::push(const std::string& node, std::uint64_t session,
                         wire::Assignment assignment) {
  asio::post(impl_->io, [impl = impl_, node, session, a = std::move(assignment)]() mutable {
    auto it = impl->registered.find(node);
    auto s = it == impl->registered.end() ? nullptr : it->second.lock();
    if (!s || s->closed || s->serial != session || impl->stopped) {
      impl->core.on_delivered(node, session, a.generation(), false);
      return;
    }
    s->send_assignment(std::move(a));
  });
}

}  // namespace flexmon::manager
