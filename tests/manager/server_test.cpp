// The real manager on loopback ports chosen by the kernel, driven over raw
// HTTP and a raw control-channel connection. No wall-clock assertions.
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "common/framing.h"
#include "common/seal.h"
#include "manager/manager.h"
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

TEST(Server, AnswersAuthenticatesAndSurvivesBadInput) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
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
// does not hold a connection thread past manager.http_timeout_s: the server
// closes it (the read below gives 0, end of stream), and keeps serving.
TEST(Server, ClosesConnectionsThatSendNothingForHttpTimeout) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  config.manager.http_timeout_s = 1;
  auto manager = start_manager_daemon(config);
  const auto port = manager->xmlrpc_port();
  int silent = dial(port), half = dial(port);
  const std::string partial = "POST /RPC2 HTTP/1.1\r\nHost: test\r\nContent-Length: 500\r\n\r\n<x";
  ASSERT_EQ(send(half, partial.data(), partial.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(partial.size()));
  for (int fd : {silent, half}) {
    // Far longer than the server's timeout: a read that ends by this one
    // (EAGAIN) means the server never closed the connection.
    const timeval patience{.tv_sec = 60, .tv_usec = 0};
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience), 0);
    char byte;
    EXPECT_EQ(recv(fd, &byte, 1, 0), 0) << std::strerror(errno);
    close(fd);
  }
  auto list = call(port, kAlice, method_call("probe.list"));
  EXPECT_NE(list.find("200 OK"), std::string::npos) << list;
  manager->stop();
}

// Reads one length-prefixed frame.
std::string read_frame(int fd) {
  std::uint8_t header[kFrameHeaderBytes];
  if (recv(fd, header, sizeof header, MSG_WAITALL) != sizeof header) return {};
  auto length = frame_length(header);
  if (!length) return {};
  std::string body(*length, '\0');
  if (recv(fd, body.data(), body.size(), MSG_WAITALL) != static_cast<ssize_t>(body.size()))
    return {};
  return body;
}

TEST(Server, ControlChannelRegistersAndAssigns) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
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
