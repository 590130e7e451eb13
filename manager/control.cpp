#include "manager/control.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
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
// Bytes read from a socket at a time, into the server's one scratch buffer,
// then appended to the frame: a frame's buffer is what has arrived of it.
constexpr std::size_t kReadChunk = 64 * 1024;
// A frame buffer larger than this is given back once its frame is handled.
constexpr std::size_t kKeptBufferBytes = 64 * 1024;
// Pauses of the accept loop after an accept failed for want of resources
// (EMFILE, ENFILE, ENOBUFS, ENOMEM): doubling from the first to the last.
constexpr auto kFirstAcceptPause = std::chrono::milliseconds(10);
constexpr auto kLastAcceptPause = std::chrono::milliseconds(1000);

struct Outgoing {
  std::string bytes;
  std::uint64_t generation = 0;  // an assignment's, 0 for other messages
};

std::chrono::steady_clock::duration seconds(std::uint32_t s) { return std::chrono::seconds(s); }

// Accept failures that concern one connection that went away before it was
// taken: the next accept may succeed at once. Anything else (EMFILE above
// all) persists until something changes, and is retried after a pause.
bool passing_accept_error(const boost::system::error_code& ec) {
  return ec == asio::error::connection_aborted || ec == asio::error::connection_reset ||
         ec == boost::system::errc::protocol_error || ec == asio::error::try_again ||
         ec == asio::error::interrupted;
}

}  // namespace

struct Session;

struct ControlServer::Impl {
  const Config& config;
  const ManagerConfig& limits;
  Fleet& fleet;
  KeyRing keys;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_pause{io};
  std::chrono::milliseconds next_pause = kFirstAcceptPause;
  std::thread thread;
  // Every line a connection that has not proven who it is can cause goes
  // through this, so that no flood of them floods the log.
  RateLimitedLog outsiders{log(), 20, std::chrono::seconds(10)};
  // Asio thread only:
  std::set<std::shared_ptr<Session>> sessions;
  std::map<std::string, std::weak_ptr<Session>> registered;
  // Unregistered connections, oldest first (by accept serial), and how
  // many each peer address holds.
  std::map<std::uint64_t, std::weak_ptr<Session>> unregistered;
  std::map<std::string, std::uint32_t> unregistered_per_address;
  std::array<char, kReadChunk> scratch{};
  std::uint64_t next_serial = 0;
  std::uint64_t next_accept = 0;
  // Read from any thread:
  std::atomic<std::uint64_t> n_sessions{0}, seal_failures{0}, retired_keys{0}, bad_messages{0},
      refused{0}, evicted{0}, timeouts{0}, accept_errors{0}, open{0}, n_unregistered{0},
      buffered{0};
  std::atomic<std::uint16_t> bound_port{0};
  bool stopped = false;

  Impl(const Config& c, Fleet& f) : config(c), limits(c.manager), fleet(f) {
    for (const auto& n : c.nodes) keys.add(n);
  }
  void accept();
  void on_accepted(tcp::socket socket);
  void pause_accepting(const boost::system::error_code& ec);
  bool evict_oldest_unregistered(const char* why);
};

struct Session : std::enable_shared_from_this<Session> {
  ControlServer::Impl& server;
  tcp::socket socket;
  asio::steady_timer timer;        // register, then heartbeat deadline
  asio::steady_timer frame_timer;  // from a frame's length to its last byte
  std::string address;             // the peer's IP address
  std::string peer;                // address:port, for the log
  std::uint64_t accept_serial = 0;
  std::string nonce;
  std::string node;             // set at registration
  const Sealer* key = nullptr;  // the key the prober registered with; it seals our replies
  std::uint64_t serial = 0;     // 0 until registered
  std::uint64_t expected = 1;   // counter of the next message from the prober
  std::uint64_t sent = 0;       // counter of the last message to the prober
  std::uint8_t header[kFrameHeaderBytes];
  std::size_t frame_bytes = 0;  // announced length of the frame being read
  std::string body;             // what has arrived of it
  std::size_t counted = 0;      // body.capacity() as added to server.buffered
  std::deque<Outgoing> queue;
  bool writing = false;
  bool close_after_write = false;
  bool closed = false;

  Session(ControlServer::Impl& s, tcp::socket sock, std::string addr, std::string who)
      : server(s),
        socket(std::move(sock)),
        timer(s.io),
        frame_timer(s.io),
        address(std::move(addr)),
        peer(std::move(who)) {}

  std::string who() const { return node.empty() ? peer : fmt::format("node {} ({})", node, peer); }

  // The log for what this connection causes: rate-limited until it has
  // registered (anyone can connect), then the node's own lines.
  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    if (serial)
      log()->warn(format, std::forward<Args>(args)...);
    else
      server.outsiders.warn(format, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void info(fmt::format_string<Args...> format, Args&&... args) {
    if (serial)
      log()->info(format, std::forward<Args>(args)...);
    else
      server.outsiders.info(format, std::forward<Args>(args)...);
  }

  void begin() {
    nonce.resize(kNonceBytes);
    if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), kNonceBytes) != 1) {
      log()->error("control {}: RAND_bytes failed; closing", peer);
      close();
      return;
    }
    boost::system::error_code ignored;
    socket.non_blocking(true, ignored);
    wire::Message hello;
    hello.mutable_hello()->set_session(nonce);
    hello.mutable_hello()->set_version(kWireVersion);
    enqueue({length_prefixed(unsealed_frame(hello)), 0});
    arm(seconds(server.limits.control_register_timeout_s), "no register");
    read_header();
  }

  void arm(std::chrono::steady_clock::duration after, const char* why) {
    timer.expires_after(after);
    timer.async_wait([self = shared_from_this(), why](boost::system::error_code ec) {
      if (ec || self->closed) return;
      self->timed_out(why);
    });
  }

  void timed_out(const char* why) {
    ++server.timeouts;
    warn("control {}: {} within the timeout; closing", who(), why);
    close();
  }

  void read_header() {
    asio::async_read(
        socket, asio::buffer(header),
        [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
          if (self->closed) return;
          if (ec) return self->ended(ec);
          auto length = frame_length(self->header);
          if (!length) return self->bad(length.error().message);
          if (!self->serial && *length > kMaxRegisterFrame)
            return self->bad(fmt::format("a frame of {} bytes before registering (at most {})",
                                         *length, kMaxRegisterFrame));
          self->frame_bytes = *length;
          self->frame_timer.expires_after(seconds(self->server.limits.control_frame_timeout_s));
          self->frame_timer.async_wait(
              [weak = self->weak_from_this()](boost::system::error_code ec) {
                auto s = weak.lock();
                if (ec || !s || s->closed) return;
                s->timed_out("frame not complete");
              });
          self->read_body();
        });
  }

  // Waits until the socket has bytes, then takes what is there (up to the
  // frame's end): the frame's buffer grows by what arrives, never by what
  // its length announced.
  void read_body() {
    socket.async_wait(tcp::socket::wait_read,
                      [self = shared_from_this()](boost::system::error_code ec) {
                        if (self->closed) return;
                        if (ec) return self->ended(ec);
                        self->take_available();
                      });
  }

  void take_available() {
    for (;;) {
      std::size_t want = std::min(frame_bytes - body.size(), server.scratch.size());
      boost::system::error_code ec;
      std::size_t n = socket.read_some(asio::buffer(server.scratch.data(), want), ec);
      if (ec == asio::error::would_block) return read_body();
      if (ec) return ended(ec);
      body.append(server.scratch.data(), n);
      account();
      if (body.size() < frame_bytes) continue;
      frame_timer.cancel();
      bool open = handle();
      release_buffer();
      if (open) read_header();
      return;
    }
  }

  void account() {
    server.buffered += body.capacity() - counted;
    counted = body.capacity();
  }

  void release_buffer() {
    if (body.capacity() > kKeptBufferBytes)
      std::string().swap(body);
    else
      body.clear();
    server.buffered -= counted - body.capacity();
    counted = body.capacity();
  }

  void ended(const boost::system::error_code& ec) {
    info("control {}: connection closed ({})", who(), ec.message());
    close();
  }

  void bad(const std::string& reason) {
    ++server.bad_messages;
    warn("control {}: bad message: {}; closing the session", who(), reason);
    close();
  }

  // Handles one frame; false when the session was closed (or is closing).
  bool handle() {
    wire::Message m;
    if (!key) {
      auto opened = server.keys.open(body, m);
      if (!opened.ok()) {
        refused_frame(opened);
        return false;
      }
      key = opened.key;
    } else {
      auto next = open_from(body, node, *key);
      if (!next) {
        ++server.seal_failures;
        warn("control {}: seal failure: {}; closing the session", who(), next.error().message);
        close();
        return false;
      }
      m = std::move(*next);
    }
    if (m.session() != nonce) {
      bad("wrong session nonce");
      return false;
    }
    if (m.counter() != expected) {
      bad(fmt::format("counter {} where {} was expected", m.counter(), expected));
      return false;
    }
    ++expected;
    if (!serial) {
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
    server.fleet.on_heartbeat(node, m.heartbeat());
    arm_idle();
    return true;
  }

  // A first frame that does not open. A prober whose config lags behind
  // (a node or key the manager does not know, a retired key) is told why in
  // an unsealed Refusal; a forgery or garbage learns nothing.
  void refused_frame(const Opened& opened) {
    switch (opened.fault) {
      case OpenFault::malformed:
        return bad(opened.why);
      case OpenFault::retired_key:
        ++server.retired_keys;
        break;
      default:
        ++server.seal_failures;
        break;
    }
    warn("control {}: refused: {}; closing the session", who(), opened.why);
    if (opened.fault == OpenFault::bad_seal) return close();
    wire::Message refusal;
    refusal.set_session(nonce);
    refusal.mutable_refusal()->set_reason(opened.why);
    close_after_write = true;
    enqueue({length_prefixed(unsealed_frame(refusal)), 0});
  }

  void arm_idle() {
    double seconds =
        std::max(server.config.manager.dead_after_s, 3 * server.config.prober.heartbeat_s);
    arm(std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000)), "no heartbeat");
  }

  void register_as(const wire::Message& m) {
    node = m.node();
    serial = ++server.next_serial;
    ++server.n_sessions;
    no_longer_unregistered();
    if (auto old = server.registered[node].lock(); old && old.get() != this) {
      log()->info("control node {}: new session from {} replaces the one from {}", node, peer,
                  old->peer);
      old->close();
    }
    server.registered[node] = weak_from_this();
    log()->info("control node {}: registered from {} under key {} (boot epoch {}, software '{}')",
                node, peer, key->id(), m.register_().boot_epoch(),
                escaped(m.register_().software_version(), 64));
    arm_idle();
    send_assignment(server.fleet.on_register(node, serial));
  }

  void no_longer_unregistered() {
    if (!server.unregistered.erase(accept_serial)) return;
    --server.n_unregistered;
    auto it = server.unregistered_per_address.find(address);
    if (it != server.unregistered_per_address.end() && --it->second == 0)
      server.unregistered_per_address.erase(it);
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
      server.fleet.on_delivered(node, serial, generation, false);
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
                          self->server.fleet.on_delivered(self->node, self->serial, done.generation,
                                                          !ec);
                        if (ec) {
                          if (!self->closed)
                            self->info("control {}: write failed ({})", self->who(), ec.message());
                          return self->close();
                        }
                        if (self->close_after_write && self->queue.empty()) return self->close();
                        self->write_next();
                      });
  }

  void close() {
    if (closed) return;
    closed = true;
    boost::system::error_code ignored;
    timer.cancel();
    frame_timer.cancel();
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    std::string().swap(body);
    server.buffered -= counted;
    counted = 0;
    no_longer_unregistered();
    --server.open;
    if (serial) {
      auto it = server.registered.find(node);
      if (it != server.registered.end() && it->second.lock().get() == this)
        server.registered.erase(it);
      server.fleet.on_disconnect(node, serial);
      // Assignments still queued were not delivered (the one being
      // written is reported by its completion handler).
      for (std::size_t i = writing ? 1 : 0; i < queue.size(); ++i)
        if (queue[i].generation)
          server.fleet.on_delivered(node, serial, queue[i].generation, false);
      if (writing && queue.size() > 1) queue.resize(1);
      if (!writing) queue.clear();
    }
    server.sessions.erase(shared_from_this());
  }
};

void ControlServer::Impl::accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (stopped || ec == asio::error::operation_aborted) return;
    if (!ec) {
      next_pause = kFirstAcceptPause;
      on_accepted(std::move(socket));
    } else if (!passing_accept_error(ec)) {
      return pause_accepting(ec);
    }
    accept();
  });
}

// Out of descriptors (or memory): the pending connection stays in the
// listen backlog, so accepting again at once fails again, forever (this
// loop once wrote 3.6 million log lines in 8 s). Make room by closing the
// oldest unregistered connection, and try again after a pause.
void ControlServer::Impl::pause_accepting(const boost::system::error_code& ec) {
  ++accept_errors;
  evict_oldest_unregistered("descriptors ran out");
  outsiders.warn("control: cannot accept a connection: {}; trying again in {} ms", ec.message(),
                 next_pause.count());
  accept_pause.expires_after(next_pause);
  next_pause = std::min(next_pause * 2, kLastAcceptPause);
  accept_pause.async_wait([this](boost::system::error_code wait_ec) {
    if (wait_ec || stopped) return;
    accept();
  });
}

bool ControlServer::Impl::evict_oldest_unregistered(const char* why) {
  while (!unregistered.empty()) {
    auto oldest = unregistered.begin()->second.lock();
    if (!oldest) {
      unregistered.erase(unregistered.begin());
      continue;
    }
    ++evicted;
    outsiders.info("control {}: closed, not registered yet, to make room ({})", oldest->peer, why);
    oldest->close();
    return true;
  }
  return false;
}

void ControlServer::Impl::on_accepted(tcp::socket socket) {
  boost::system::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return;  // gone already; the socket closes with this scope
  std::string address = ep.address().to_string();
  std::string peer = fmt::format("{}:{}", address, ep.port());
  auto held = unregistered_per_address.find(address);
  if (held != unregistered_per_address.end() &&
      held->second >= limits.control_max_unregistered_per_address) {
    ++refused;
    outsiders.warn(
        "control {}: refused: {} connections from {} are not registered yet "
        "(manager.control_max_unregistered_per_address)",
        peer, held->second, address);
    return;
  }
  if (sessions.size() >= limits.control_max_connections &&
      !evict_oldest_unregistered("manager.control_max_connections reached")) {
    ++refused;
    outsiders.warn(
        "control {}: refused: {} connections open, all registered "
        "(manager.control_max_connections)",
        peer, sessions.size());
    return;
  }
  auto session = std::make_shared<Session>(*this, std::move(socket), address, std::move(peer));
  session->accept_serial = ++next_accept;
  ++unregistered_per_address[session->address];
  unregistered.emplace(session->accept_serial, session);
  ++n_unregistered;
  ++open;
  sessions.insert(session);
  session->begin();
}

ControlServer::ControlServer(const Config& config, Fleet& fleet)
    : impl_(std::make_shared<Impl>(config, fleet)) {
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
  const Impl& i = *impl_;
  return {i.n_sessions, i.seal_failures, i.retired_keys, i.bad_messages,   i.refused, i.evicted,
          i.timeouts,   i.accept_errors, i.open,         i.n_unregistered, i.buffered};
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
    impl->accept_pause.cancel();
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
      impl->fleet.on_delivered(node, session, a.generation(), false);
      return;
    }
    s->send_assignment(std::move(a));
  });
}

}  // namespace flexmon::manager
