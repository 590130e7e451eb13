// The real manager on loopback ports chosen by the kernel, driven over raw
// HTTP and a raw control-channel connection. No wall-clock assertions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "common/framing.h"
#include "common/seal.h"
#include "manager/call_handler.h"
#include "manager/manager.h"
#include "tests/manager/control_frames.h"
#include "tests/manager/http_post.h"
#include "tests/manager/test_config.h"
#include "wire.pb.h"

namespace flexmon::manager {
namespace {

// A connection to the manager's port; the test fails when there is none.
int dial(std::uint16_t port) {
  int fd = testing::dial_loopback(port);
  EXPECT_GE(fd, 0) << "connect to 127.0.0.1:" << port << ": " << std::strerror(errno);
  return fd;
}

// One XML-RPC call over HTTP; returns the whole response.
std::string call(std::uint16_t port, const std::string& auth, const std::string& body) {
  return testing::post_xmlrpc(dial(port), auth, body);
}

const std::string kAlice = testing::kAliceAuth;

std::string method_call(const std::string& method, const std::string& params = "") {
  return "<?xml version=\"1.0\"?><methodCall><methodName>" + method + "</methodName><params>" +
         params + "</params></methodCall>";
}

// A connection to 127.0.0.1:port from `source` (another loopback address),
// as a second client would have; -1 when there is none.
int dial_from(const char* source, std::uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    if (fd >= 0) close(fd);
    ADD_FAILURE() << "connect from " << source << ": " << std::strerror(errno);
    return -1;
  }
  return fd;
}

// True when the peer has sent something or closed within `ms`.
bool readable_within(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

// What the peer sends until it closes; "RESET" when it resets the connection.
std::string read_to_end(int fd) {
  const timeval patience{.tv_sec = 30, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
  std::string out;
  char buffer[4096];
  for (;;) {
    ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n == 0) return out;
    if (n < 0) return out + (errno == ECONNRESET ? "RESET" : "ERROR");
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

TEST(Server, AnswersAuthenticatesAndSurvivesBadInput) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  const auto port = manager->xmlrpc_port();

  auto ok =
      call(port, kAlice,
           method_call("probe.request",
                       "<param><value><struct>"
                       "<member><name>tool</name><value><string>latency</string></value></member>"
                       "<member><name>interval</name><value><double>5</double></value></member>"
                       "<member><name>nodes</name><value><array><data>"
                       "<value><string>n1</string></value><value><string>n2</string></value>"
                       "</data></array></value></member></struct></value></param>"));
  EXPECT_NE(ok.find("<string>r1</string>"), std::string::npos) << ok;

  auto anonymous = call(port, "", method_call("probe.list"));
  EXPECT_NE(anonymous.find("<i4>4010</i4>"), std::string::npos) << anonymous;
  auto wrong = call(port, "Basic YWxpY2U6d3Jvbmc=", method_call("probe.list"));
  EXPECT_NE(wrong.find("<i4>4010</i4>"), std::string::npos) << wrong;
  auto huge = call(port, "Basic " + std::string(6000, 'A'), method_call("probe.list"));
  EXPECT_EQ(huge.find("200 OK\r\n"), std::string::npos);  // refused one way or another
  auto missing = call(
      port, kAlice, method_call("probe.get", "<param><value><string>r9</string></value></param>"));
  EXPECT_NE(missing.find("<i4>4040</i4>"), std::string::npos) << missing;

  // Above manager.max_request_bytes (64 KiB here): refused, not a crash.
  auto big = call(port, kAlice,
                  method_call("probe.get", "<param><value><string>" + std::string(100000, 'x') +
                                               "</string></value></param>"));
  EXPECT_EQ(big.find("<string>r"), std::string::npos);
  auto garbage = call(port, kAlice, "<methodCall><<<");
  EXPECT_EQ(garbage.find("<string>r"), std::string::npos);

  // Still serving.
  auto list = call(port, kAlice, method_call("probe.list"));
  EXPECT_NE(list.find("<string>r1</string>"), std::string::npos) << list;

  // An idle connection does not hold up the stop.
  int idle = dial(port);
  manager->stop();
  manager->wait();
  close(idle);
}

TEST(Server, KeepAliveServesSeveralCallsOnOneConnectionAndStopsPromptly) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  int fd = dial(manager->xmlrpc_port());
  const std::string body = method_call("probe.list");
  const std::string request = "POST /RPC2 HTTP/1.1\r\nHost: test\r\nAuthorization: " + kAlice +
                              "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                              body;
  // Two calls pipelined on one connection: two answers, the connection open.
  const std::string twice = request + request;
  ASSERT_EQ(send(fd, twice.data(), twice.size(), MSG_NOSIGNAL), static_cast<ssize_t>(twice.size()));
  std::string got;
  char buf[4096];
  while (got.find("</methodResponse>", got.find("</methodResponse>") + 1) == std::string::npos) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0) << got;
    got.append(buf, static_cast<std::size_t>(n));
  }
  EXPECT_NE(got.find("Connection: keep-alive"), got.rfind("Connection: keep-alive")) << got;
  EXPECT_NE(got.find("Connection: keep-alive"), std::string::npos) << got;
  // The connection stays open and idle: stop does not wait for it.
  manager->stop();
  EXPECT_EQ(testing::read_until_closed(fd), "");
  close(fd);
}

// A client that opens a connection and sends half a request, or nothing,
// does not hold a connection past manager.http_timeout_s: the server closes
// the idle one and answers the half request 408, and keeps serving.
TEST(Server, ClosesConnectionsThatSendNothingForHttpTimeout) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  config.manager.http_timeout_s = 1;
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  const auto port = manager->xmlrpc_port();
  int silent = dial(port), half = dial(port);
  const std::string partial = "POST /RPC2 HTTP/1.1\r\nHost: test\r\nContent-Length: 500\r\n\r\n<x";
  ASSERT_EQ(send(half, partial.data(), partial.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(partial.size()));
  // read_to_end waits far longer than the server's timeout: a read that
  // ends by its own timeout ("ERROR") means the server never closed it.
  EXPECT_EQ(read_to_end(silent), "");
  EXPECT_EQ(read_to_end(half).rfind("HTTP/1.1 408 ", 0), 0u);
  close(silent);
  close(half);
  auto list = call(port, kAlice, method_call("probe.list"));
  EXPECT_NE(list.find("200 OK"), std::string::npos) << list;
  manager->stop();
}

// The old server applied http_timeout_s to each recv(): a client that sent
// one byte a little more often than that kept its connection (and, with a
// thread per connection, a slot) for ever. The deadline now runs from a
// request's first byte to its last: the trickle is answered 408 and closed.
TEST(Server, TrickleIsClosedAtItsRequestDeadline) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  config.manager.http_timeout_s = 1;
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  int fd = dial(manager->xmlrpc_port());
  const std::string request =
      "POST /RPC2 HTTP/1.1\r\nHost: test\r\nContent-Length: 4000\r\n\r\n" + std::string(4000, 'x');
  // One byte every 200 ms, for at most 100 bytes (20 s, far past the 1 s
  // deadline): the server must end it before the bytes run out.
  bool ended = false;
  for (std::size_t at = 0; at < 100 && !ended; ++at) {
    if (send(fd, request.data() + at, 1, MSG_NOSIGNAL) != 1) break;
    ended = readable_within(fd, 200);
  }
  ASSERT_TRUE(ended) << "the server still reads a trickle after 20 s";
  EXPECT_NE(read_to_end(fd).find("HTTP/1.1 408 "), std::string::npos);
  close(fd);
  manager->stop();
}

// 32 idle or trickling connections used to take every slot: probe.list
// answered 503 to everyone. Now 200 of them are open (from other loopback
// addresses, under the per-client limit) and a legitimate client is served.
TEST(Server, LegitimateClientIsServedWhileManyConnectionsTrickleOrIdle) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  config.manager.max_connections_per_client = 64;
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  const auto port = manager->xmlrpc_port();
  std::vector<int> hostile;
  const char* sources[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"};
  for (int i = 0; i < 200; ++i) {
    int fd = dial_from(sources[i % 4], port);
    ASSERT_GE(fd, 0);
    if (i % 2) (void)send(fd, "POST /RPC2 HTTP/1.1\r\n", 21, MSG_NOSIGNAL);
    hostile.push_back(fd);
  }
  for (int round = 0; round < 3; ++round) {
    auto list = call(port, kAlice, method_call("probe.list"));
    EXPECT_NE(list.find("200 OK"), std::string::npos) << list;
    for (std::size_t i = 1; i < hostile.size(); i += 2)
      (void)send(hostile[i], "X", 1, MSG_NOSIGNAL);
  }
  for (int fd : hostile) close(fd);
  manager->stop();
}

TEST(Server, ConnectionsPerClientAreLimited) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  config.manager.max_connections_per_client = 4;
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  const auto port = manager->xmlrpc_port();
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) held.push_back(dial_from("127.0.0.2", port));
  // The manager has taken the four (a call on a fifth from elsewhere proves
  // the accepts happened in order).
  EXPECT_NE(call(port, kAlice, method_call("probe.list")).find("200 OK"), std::string::npos);
  int fifth = dial_from("127.0.0.2", port);
  EXPECT_NE(read_to_end(fifth).find("HTTP/1.1 503 "), std::string::npos);
  close(fifth);
  // Another client is not affected, and the first gets a place back when
  // one of its connections ends.
  auto other =
      testing::post_xmlrpc(dial_from("127.0.0.3", port), kAlice, method_call("probe.list"));
  EXPECT_NE(other.find("200 OK"), std::string::npos) << other;
  close(held.back());
  held.pop_back();
  std::string again;
  // The close reaches the manager's loop soon; each try is one bounded call.
  for (int attempt = 0; attempt < 50 && again.find("200 OK") == std::string::npos; ++attempt) {
    again = testing::post_xmlrpc(dial_from("127.0.0.2", port), kAlice, method_call("probe.list"));
    if (again.find("200 OK") == std::string::npos)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(again.find("200 OK"), std::string::npos) << again;
  for (int fd : held) close(fd);
  manager->stop();
}

// A 413 was sent and the socket closed with the body unread: the kernel
// then resets the connection, and a client that sent its whole body before
// reading (as every XML-RPC client does) saw a reset, not the 413. Now the
// server stops sending, drains what comes for a bounded time, then closes.
TEST(Server, RefusalBeforeTheBodyReachesTheClient) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);  // max_request_bytes: 65536
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  int fd = dial(manager->xmlrpc_port());
  const std::string body(400'000, 'x');
  const std::string request = "POST /RPC2 HTTP/1.1\r\nHost: test\r\nAuthorization: " + kAlice +
                              "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                              body;
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  EXPECT_EQ(sent, request.size()) << std::strerror(errno);
  const auto response = read_to_end(fd);
  EXPECT_EQ(response.rfind("HTTP/1.1 413 ", 0), 0u) << response;
  EXPECT_EQ(response.find("RESET"), std::string::npos) << response;
  close(fd);
  manager->stop();
}

// schemas/xmlrpc-api.md says chunked bodies are refused; they were answered.
TEST(Server, ChunkedBodiesAreRefusedWith411) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  const std::string body = method_call("probe.list");
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  const std::string request = "POST /RPC2 HTTP/1.1\r\nHost: test\r\nAuthorization: " + kAlice +
                              "\r\nTransfer-Encoding: chunked\r\n\r\n" + size + "\r\n" + body +
                              "\r\n0\r\n\r\n";
  int fd = dial(manager->xmlrpc_port());
  (void)send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  const auto response = read_to_end(fd);
  EXPECT_EQ(response.rfind("HTTP/1.1 411 ", 0), 0u) << response;
  close(fd);
  manager->stop();
}

// A listener that others can reach needs TLS or the config's explicit
// word: the config check says so naming the keys, and so does the server
// when it is handed such a config anyway. Nothing is bound to 0.0.0.0.
TEST(Server, PlainHttpOnANonLoopbackAddressDoesNotStart) {
  auto dir = testing::temp_dir();
  const std::string users =
      "users:\n  - {name: alice, token_hash: "
      "\"hmac-sha256:28:000102030405060708090a0b0c0d0e0f:"
      "95fd288ef5ebf6ed5816c420792ba921279f0d06ae564b38bdca924e2a39178b\", role: admin}\n";
  for (const char* listen : {"0.0.0.0:8470", "192.0.2.1:8470", "[::]:8470"}) {
    try {
      parse_config(std::string("manager:\n  xmlrpc_listen: \"") + listen + "\"\n" + users, "t.yaml",
                   dir);
      ADD_FAILURE() << listen << " accepted without TLS";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("manager.insecure_plaintext"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("manager.tls_cert"), std::string::npos) << e.what();
    }
  }
  for (const char* ok : {"manager:\n  xmlrpc_listen: 0.0.0.0:8470\n  insecure_plaintext: true\n",
                         "manager:\n  xmlrpc_listen: 127.0.0.2:8470\n",
                         "manager:\n  xmlrpc_listen: localhost:8470\n",
                         "manager:\n  xmlrpc_listen: \"[::1]:8470\"\n"})
    EXPECT_NO_THROW(parse_config(std::string(ok) + users, "t.yaml", dir)) << ok;
  EXPECT_THROW(parse_config("manager:\n  tls_cert: c.pem\n" + users, "t.yaml", dir), ConfigError);

  Config config = testing::test_config(dir);
  config.manager.xmlrpc.host = "0.0.0.0";
  try {
    configure_xmlrpc_limits(config.manager);
    auto manager = start_manager_daemon(config);
    ADD_FAILURE() << "started plain HTTP on 0.0.0.0";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("manager.insecure_plaintext"), std::string::npos)
        << e.what();
  }
}

using testing::read_frame;

TEST(Server, ControlChannelRegistersAndAssigns) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  int fd = dial(manager->control_port());
  auto hello = open_hello(read_frame(fd));
  ASSERT_TRUE(hello) << hello.error().message;
  const std::string nonce = hello->hello().session();
  EXPECT_EQ(nonce.size(), 16u);

  Sealer key(config.find_node("n1")->key);
  wire::Message reg;
  reg.set_node("n1");
  reg.set_session(nonce);
  reg.set_counter(1);
  reg.mutable_register_()->set_boot_epoch(3);
  auto frame = length_prefixed(seal(reg, key));
  ASSERT_EQ(send(fd, frame.data(), frame.size(), MSG_NOSIGNAL), static_cast<ssize_t>(frame.size()));
  auto assignment = open_from(read_frame(fd), "n1", key);
  ASSERT_TRUE(assignment) << assignment.error().message;
  EXPECT_TRUE(assignment->has_assignment());
  EXPECT_EQ(assignment->counter(), 1u);
  EXPECT_EQ(assignment->session(), nonce);

  // A heartbeat with a replayed counter closes the session.
  wire::Message beat;
  beat.set_node("n1");
  beat.set_session(nonce);
  beat.set_counter(1);
  beat.mutable_heartbeat()->set_streams(0);
  frame = length_prefixed(seal(beat, key));
  (void)send(fd, frame.data(), frame.size(), MSG_NOSIGNAL);
  EXPECT_EQ(testing::read_until_closed(fd), "");
  close(fd);

  // A register sealed with the wrong key is refused.
  fd = dial(manager->control_port());
  hello = open_hello(read_frame(fd));
  ASSERT_TRUE(hello);
  reg.set_session(hello->hello().session());
  Sealer wrong(std::string(32, 'k'));
  frame = length_prefixed(seal(reg, wrong));
  (void)send(fd, frame.data(), frame.size(), MSG_NOSIGNAL);
  EXPECT_EQ(testing::read_until_closed(fd), "");
  close(fd);
  manager->stop();
}

}  // namespace
}  // namespace flexmon::manager
