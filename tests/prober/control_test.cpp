// The control channel client against a fake manager: a TCP socket in the test
// that speaks the manager's side of schemas/wire.md.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <sstream>

#include <spdlog/sinks/ostream_sink.h>

#include "common/framing.h"
#include "common/log.h"
#include "common/seal.h"
#include "prober/control_client.h"
#include "prober/event_loop.h"
#include "test_util.h"
#include "wire.pb.h"

namespace flexmon::prober {
namespace {

const std::string kKey = "fedcba9876543210fedcba9876543210";

struct FakeManager {
  int listener;
  std::uint16_t port;
  FakeManager() {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(listener, 4);
    socklen_t len = sizeof a;
    getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~FakeManager() { close(listener); }

  int accept_within_10s() {
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, 10'000) != 1) return -1;
    return accept(listener, nullptr, nullptr);
  }
};

bool read_exactly(int fd, char* out, std::size_t n) {
  while (n > 0) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10'000) != 1) return false;
    ssize_t got = recv(fd, out, n, 0);
    if (got <= 0) return false;
    out += got;
    n -= static_cast<std::size_t>(got);
  }
  return true;
}

std::optional<std::string> read_frame(int fd) {
  std::uint8_t header[kFrameHeaderBytes];
  if (!read_exactly(fd, reinterpret_cast<char*>(header), sizeof header)) return std::nullopt;
  auto length = frame_length(header);
  if (!length) return std::nullopt;
  std::string body(*length, '\0');
  if (!read_exactly(fd, body.data(), body.size())) return std::nullopt;
  return body;
}

void write_frame(int fd, const std::string& frame) {
  auto bytes = length_prefixed(frame);
  ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

TEST(ControlClient, RegistersAppliesAssignmentsHeartbeatsAndDropsBadCounters) {
  FakeManager manager;
  Sealer sealer(kKey);
  EventLoop loop;
  std::mutex mutex;
  std::vector<std::string> assigned;
  ControlOptions o;
  o.node = "n1";
  o.key = kKey;
  o.manager = Endpoint{"127.0.0.1", manager.port};
  o.boot_epoch = 5;
  o.software_version = "test";
  o.heartbeat_s = 0.05;
  o.initial_backoff_s = 0.05;
  auto client = std::make_unique<ControlClient>(
      loop, o,
      [&](std::vector<wire::Stream> streams) {
        std::lock_guard lock(mutex);
        for (const auto& s : streams) assigned.push_back(s.key());
      },
      [](wire::Heartbeat& h) {
        h.set_streams(1);
        h.set_spooled(2);
      });
  loop.start();

  int fd = manager.accept_within_10s();
  ASSERT_GE(fd, 0);
  std::string nonce(16, '\x5a');
  wire::Message hello;
  hello.mutable_hello()->set_session(nonce);
  hello.mutable_hello()->set_version(1);
  write_frame(fd, unsealed_frame(hello));

  auto frame = read_frame(fd);
  ASSERT_TRUE(frame);
  auto reg = open_from(*frame, "n1", sealer);
  ASSERT_TRUE(reg) << reg.error().message;
  ASSERT_TRUE(reg->has_register_());
  EXPECT_EQ(reg->session(), nonce);
  EXPECT_EQ(reg->counter(), 1u);
  EXPECT_EQ(reg->register_().boot_epoch(), 5u);
  EXPECT_EQ(reg->register_().software_version(), "test");

  wire::Message assignment;
  assignment.set_node("n1");
  assignment.set_session(nonce);
  assignment.set_counter(1);
  assignment.mutable_assignment()->set_generation(1);
  assignment.mutable_assignment()->add_streams()->set_key("s1");
  write_frame(fd, seal(assignment, sealer));
  EXPECT_TRUE(test::eventually([&] {
    std::lock_guard lock(mutex);
    return assigned.size() == 1;
  }));

  auto beat = read_frame(fd);
  ASSERT_TRUE(beat);
  auto hb = open_from(*beat, "n1", sealer);
  ASSERT_TRUE(hb);
  ASSERT_TRUE(hb->has_heartbeat());
  EXPECT_EQ(hb->counter(), 2u);
  EXPECT_EQ(hb->heartbeat().spooled(), 2u);

  // A replayed counter: the client drops the connection and dials again.
  write_frame(fd, seal(assignment, sealer));
  EXPECT_TRUE(test::eventually([&] { return client->counters().protocol_errors.load() == 1; }));
  int again = manager.accept_within_10s();
  EXPECT_GE(again, 0) << "the client reconnects";
  EXPECT_EQ(client->counters().assignments.load(), 1u);

  loop.stop();
  loop.join();
  client.reset();
  close(fd);
  if (again >= 0) close(again);
}

TEST(ControlClient, ForgedAssignmentIsRejected) {
  FakeManager manager;
  EventLoop loop;
  std::atomic<int> assignments{0};
  ControlOptions o;
  o.node = "n1";
  o.key = kKey;
  o.manager = Endpoint{"127.0.0.1", manager.port};
  o.initial_backoff_s = 0.05;
  auto client = std::make_unique<ControlClient>(
      loop, o, [&](std::vector<wire::Stream>) { ++assignments; }, [](wire::Heartbeat&) {});
  loop.start();
  int fd = manager.accept_within_10s();
  ASSERT_GE(fd, 0);
  wire::Message hello;
  hello.mutable_hello()->set_session(std::string(16, 'n'));
  write_frame(fd, unsealed_frame(hello));
  ASSERT_TRUE(read_frame(fd));  // register
  wire::Message assignment;
  assignment.set_node("n1");
  assignment.set_session(std::string(16, 'n'));
  assignment.set_counter(1);
  assignment.mutable_assignment()->add_streams()->set_key("evil");
  write_frame(fd, seal(assignment, Sealer("not the node's key at all")));
  EXPECT_TRUE(test::eventually([&] { return client->counters().protocol_errors.load() == 1; }));
  EXPECT_EQ(assignments.load(), 0);
  loop.stop();
  loop.join();
  client.reset();
  close(fd);
}

// Key rotation at the prober: it seals under its key id and takes from the
// manager only frames under that same id (the manager answers under the
// key of the Register). A Refusal's reason is outside bytes: logged escaped.
TEST(ControlClient, SealsUnderItsKeyIdAndEscapesTheRefusalReason) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto log = logger("prober");
  log->sinks().push_back(sink);
  FakeManager manager;
  EventLoop loop;
  std::atomic<int> assignments{0};
  ControlOptions o;
  o.node = "n1";
  o.key = kKey;
  o.key_id = 2;
  o.manager = Endpoint{"127.0.0.1", manager.port};
  o.initial_backoff_s = 0.05;
  auto client = std::make_unique<ControlClient>(
      loop, o, [&](std::vector<wire::Stream>) { ++assignments; }, [](wire::Heartbeat&) {});
  loop.start();
  int fd = manager.accept_within_10s();
  ASSERT_GE(fd, 0);
  wire::Message hello;
  hello.mutable_hello()->set_session(std::string(16, 'n'));
  write_frame(fd, unsealed_frame(hello));
  auto reg = read_frame(fd);
  ASSERT_TRUE(reg);
  wire::Sealed frame;
  ASSERT_TRUE(frame.ParseFromString(*reg));
  EXPECT_EQ(frame.key_id(), 2u);
  EXPECT_TRUE(open_from(*reg, "n1", Sealer(kKey, 2)).ok());
  // The right key bytes under another id: not this session's key.
  wire::Message assignment;
  assignment.set_node("n1");
  assignment.set_session(std::string(16, 'n'));
  assignment.set_counter(1);
  assignment.mutable_assignment();
  write_frame(fd, seal(assignment, Sealer(kKey, 1)));
  ASSERT_TRUE(test::eventually([&] { return client->counters().protocol_errors.load() == 1; }));
  EXPECT_EQ(assignments.load(), 0);
  close(fd);

  fd = manager.accept_within_10s();
  ASSERT_GE(fd, 0);
  write_frame(fd, unsealed_frame(hello));
  ASSERT_TRUE(read_frame(fd));
  wire::Message refusal;
  refusal.set_session(std::string(16, 'n'));
  refusal.mutable_refusal()->set_reason("no\n2026-12-04T00:00:00Z prober info: FORGED");
  write_frame(fd, unsealed_frame(refusal));
  ASSERT_TRUE(test::eventually([&] { return client->counters().refusals.load() == 1; }));
  loop.stop();
  loop.join();
  client.reset();
  close(fd);
  log->sinks().pop_back();
  const std::string text = out.str();
  EXPECT_NE(text.find("manager refused the session: no\\x0a2026-12-04T00:00:00Z prober info: "
                      "FORGED"),
            std::string::npos)
      << text;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    EXPECT_NE(line.rfind("2026-12-04T00:00:00Z prober info: FORGED", 0), 0u) << line;
}

}  // namespace
}  // namespace flexmon::prober
