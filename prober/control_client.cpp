#include "prober/control_client.h"

#include <netinet/tcp.h>

#include <deque>
#include <random>

#include <fmt/format.h>

#include "common/framing.h"
#include "common/log.h"
#include "common/seal.h"
#include "prober/asio_loop.h"
#include "prober/backoff.h"
#include "wire.pb.h"

namespace flexmon::prober {

using asio::ip::tcp;

namespace {

constexpr std::size_t kNonceBytes = 16;

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

// A Refusal the manager could not seal (it does not know the node or its
// key): an unsealed frame, like the Hello. Anything else is an error.
Result<wire::Message> open_unsealed_refusal(std::string_view bytes) {
  wire::Sealed frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) ||
      frame.version() != kWireVersion || !frame.node().empty() || !frame.mac().empty() ||
      frame.key_id() != 0)
    return fail(ErrorCode::kInvalidInput, "not an unsealed frame");
  wire::Message message;
  if (!message.ParseFromString(frame.body()) || !message.has_refusal())
    return fail(ErrorCode::kInvalidInput, "unsealed frame is not a refusal");
  return message;
}

}  // namespace

struct Session;

struct ControlClient::Impl : std::enable_shared_from_this<ControlClient::Impl> {
  asio::io_context& io;
  ControlOptions options;
  Sealer sealer;
  OnAssignment on_assignment;
  HeartbeatSource heartbeat;
  ControlCounters counters;
  std::atomic<bool> connected{false};
  std::shared_ptr<Session> session;
  asio::steady_timer retry;
  Backoff backoff;
  int failed_sessions = 0;  // since the last working one: the next retry's attempt number - 1
  std::mt19937_64 random{std::random_device{}()};
  std::shared_ptr<spdlog::logger> log = logger("prober");

  Impl(asio::io_context& context, ControlOptions o, OnAssignment a, HeartbeatSource h)
      : io(context),
        options(std::move(o)),
        sealer(options.key, options.key_id),
        on_assignment(std::move(a)),
        heartbeat(std::move(h)),
        retry(context),
        backoff{options.initial_backoff_s, options.max_backoff_s} {}

  void connect();
  void session_ended(const std::string& reason, bool protocol_error);
};

// One TCP connection to the manager; handlers of an ended session do nothing.
struct Session : std::enable_shared_from_this<Session> {
  std::weak_ptr<ControlClient::Impl> owner;
  ControlClient::Impl& impl;
  tcp::resolver resolver;
  tcp::socket socket;
  asio::steady_timer hello_timer;
  asio::steady_timer heartbeat_timer;
  std::uint8_t header[kFrameHeaderBytes]{};
  std::string body;
  std::deque<std::string> writes;
  std::string nonce;
  std::uint64_t in_counter = 0;   // last counter received from the manager
  std::uint64_t out_counter = 0;  // last counter sent
  bool ended = false;

  explicit Session(const std::shared_ptr<ControlClient::Impl>& o)
      : owner(o),
        impl(*o),
        resolver(o->io),
        socket(o->io),
        hello_timer(o->io),
        heartbeat_timer(o->io) {}

  std::string where() const { return impl.options.manager.to_string(); }

  void start() {
    hello_timer.expires_after(seconds(impl.options.hello_timeout_s));
    hello_timer.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec && self->nonce.empty()) self->end("no hello from the manager in time", false);
    });
    resolver.async_resolve(
        impl.options.manager.host, std::to_string(impl.options.manager.port),
        [self = shared_from_this()](const boost::system::error_code& ec,
                                    tcp::resolver::results_type results) {
          if (self->ended) return;
          if (ec) return self->end(fmt::format("cannot resolve: {}", ec.message()), false);
          asio::async_connect(self->socket, results,
                              [self](const boost::system::error_code& ec, const tcp::endpoint&) {
                                if (self->ended) return;
                                if (ec)
                                  return self->end(fmt::format("cannot connect: {}", ec.message()),
                                                   false);
                                self->connected();
                              });
        });
  }

  void connected() {
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    socket.set_option(asio::socket_base::keep_alive(true), ignored);
    // Unacknowledged writes for 30 s end the connection (a vanished manager).
    int timeout_ms = 30'000;
    setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms,
               sizeof timeout_ms);
    read_header();
  }

  void read_header() {
    asio::async_read(socket, asio::buffer(header),
                     [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
                       if (self->ended) return;
                       if (ec) return self->end(fmt::format("read: {}", ec.message()), false);
                       auto length = frame_length(self->header);
                       if (!length) return self->end(length.error().message, true);
                       self->body.resize(*length);
                       self->read_body();
                     });
  }

  void read_body() {
    asio::async_read(socket, asio::buffer(body),
                     [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
                       if (self->ended) return;
                       if (ec) return self->end(fmt::format("read: {}", ec.message()), false);
                       self->on_frame();
                       if (!self->ended) self->read_header();
                     });
  }

  void on_frame() {
    if (nonce.empty()) {
      auto hello = open_hello(body);
      if (!hello) return end(fmt::format("bad hello: {}", hello.error().message), true);
      if (hello->hello().session().size() != kNonceBytes)
        return end(fmt::format("hello session nonce has {} bytes, expected {}",
                               hello->hello().session().size(), kNonceBytes),
                   true);
      nonce = hello->hello().session();
      hello_timer.cancel();
      ++impl.counters.connects;
      impl.connected = true;
      wire::Message message;
      auto* r = message.mutable_register_();
      r->set_boot_epoch(impl.options.boot_epoch);
      r->set_software_version(impl.options.software_version);
      send(message);
      impl.log->info("prober {}: registered with manager {} (boot epoch {})", impl.options.node,
                     where(), impl.options.boot_epoch);
      arm_heartbeat();
      return;
    }
    auto message = open_from(body, impl.options.node, impl.sealer);
    if (!message) {
      auto refusal = open_unsealed_refusal(body);
      if (refusal && refusal->session() == nonce) return refused(refusal->refusal().reason());
      return end(message.error().message, true);
    }
    if (message->session() != nonce) return end("message of another session", true);
    if (message->counter() != in_counter + 1)
      return end(fmt::format("counter {} where {} was due", message->counter(), in_counter + 1),
                 true);
    in_counter = message->counter();
    if (message->has_refusal()) return refused(message->refusal().reason());
    if (!message->has_assignment())
      return end(
          fmt::format("unexpected message (kind {})", static_cast<int>(message->kind_case())),
          true);
    ++impl.counters.assignments;
    impl.failed_sessions = 0;  // a working session: the backoff restarts
    const auto& a = message->assignment();
    impl.log->info("prober {}: assignment generation {} with {} streams", impl.options.node,
                   a.generation(), a.streams_size());
    impl.on_assignment(std::vector<wire::Stream>(a.streams().begin(), a.streams().end()));
  }

  void refused(const std::string& reason) {
    ++impl.counters.refusals;
    end(fmt::format("manager refused the session: {}", escaped(reason, 500)), false);
  }

  void arm_heartbeat() {
    heartbeat_timer.expires_after(seconds(impl.options.heartbeat_s));
    heartbeat_timer.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->ended) return;
      wire::Message message;
      self->impl.heartbeat(*message.mutable_heartbeat());
      self->send(message);
      ++self->impl.counters.heartbeats;
      self->arm_heartbeat();
    });
  }

  void send(wire::Message& message) {
    message.set_node(impl.options.node);
    message.set_session(nonce);
    message.set_counter(++out_counter);
    writes.push_back(length_prefixed(seal(message, impl.sealer)));
    if (writes.size() == 1) write_next();
  }

  void write_next() {
    asio::async_write(
        socket, asio::buffer(writes.front()),
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
          if (self->ended) return;
          if (ec) return self->end(fmt::format("write: {}", ec.message()), false);
          self->writes.pop_front();
          if (!self->writes.empty()) self->write_next();
        });
  }

  void end(const std::string& reason, bool protocol_error) {
    if (ended) return;
    ended = true;
    boost::system::error_code ignored;
    resolver.cancel();
    socket.close(ignored);
    hello_timer.cancel();
    heartbeat_timer.cancel();
    if (auto o = owner.lock()) o->session_ended(reason, protocol_error);
  }
};

void ControlClient::Impl::connect() {
  session = std::make_shared<Session>(shared_from_this());
  session->start();
}

void ControlClient::Impl::session_ended(const std::string& reason, bool protocol_error) {
  connected = false;
  ++counters.disconnects;
  if (protocol_error) ++counters.protocol_errors;
  double delay = backoff.delay(++failed_sessions, random).count();
  auto level = protocol_error ? spdlog::level::warn : spdlog::level::info;
  log->log(level, "prober {}: control channel to {}: {}; retrying in {:.1f} s", options.node,
           options.manager.to_string(), reason, delay);
  retry.expires_after(seconds(delay));
  retry.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->connect();
  });
}

ControlClient::ControlClient(EventLoop& loop, ControlOptions options, OnAssignment on_assignment,
                             HeartbeatSource heartbeat)
    : impl_(std::make_shared<Impl>(io_of(loop), std::move(options), std::move(on_assignment),
                                   std::move(heartbeat))) {
  asio::post(impl_->io, [weak = std::weak_ptr<Impl>(impl_)] {
    if (auto self = weak.lock()) self->connect();
  });
}

ControlClient::~ControlClient() {
  // Sessions hold the client by reference; close the live one so its
  // handlers, if ever run, find it ended.
  if (impl_->session) impl_->session->ended = true;
}

const ControlCounters& ControlClient::counters() const { return impl_->counters; }

bool ControlClient::connected() const { return impl_->connected; }

}  // namespace flexmon::prober
