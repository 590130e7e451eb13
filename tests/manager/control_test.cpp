// The control channel's edge against connections that never register: the
// real manager on a loopback port, raw TCP connections from 127.0.0.0/8
// addresses. Item 4 of issue 14 (connection limits, memory by bytes that
// arrived, deadlines), item 9 (log injection) and key rotation at the
// manager. Waits are bounded; nothing asserts on wall-clock time.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
#include <vector>

#include "common/framing.h"
#include "common/log.h"
#include "common/seal.h"
#include "manager/control.h"
#include "manager/request_book.h"
#include "manager/store.h"
#include "tests/manager/control_frames.h"
#include "tests/manager/test_config.h"
#include "wire.pb.h"

namespace flexmon::manager {
namespace {

const std::string kKey1 = "000102030405060708090a0b0c0d0e0f";  // n1's, as in test_config.h
const std::string kKey2 = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

bool eventually(const std::function<bool()>& done) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

// The resident memory of this process, in bytes.
std::int64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

// A TCP connection from `from` (an address of 127.0.0.0/8) to the port on
// 127.0.0.1, with reads that give up after 30 s; -1 when there is none.
int dial(std::uint16_t port, const char* from = "127.0.0.1") {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  inet_pton(AF_INET, from, &local.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const timeval patience{.tv_sec = 30, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

using testing::read_frame;

// True when the server closes the connection without sending anything more.
bool closed_by_server(int fd) {
  char byte;
  return recv(fd, &byte, 1, 0) == 0;
}

void send_all(int fd, const std::string& bytes) {
  ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

std::string header_for(std::uint32_t length) {
  std::string h(4, '\0');
  h[0] = static_cast<char>(length >> 24);
  h[1] = static_cast<char>(length >> 16);
  h[2] = static_cast<char>(length >> 8);
  h[3] = static_cast<char>(length);
  return h;
}

// A register of `node` for the session that `hello` opened.
std::string register_frame(const std::string& hello, const std::string& node, const Sealer& key) {
  auto opened = open_hello(hello);
  EXPECT_TRUE(opened) << (opened ? "" : opened.error().message);
  wire::Message reg;
  reg.set_node(node);
  reg.set_session(opened ? opened->hello().session() : "");
  reg.set_counter(1);
  reg.mutable_register_()->set_boot_epoch(1);
  return length_prefixed(seal(reg, key));
}

// A manager's request book and control server on an ephemeral port, with
// the housekeeping thread as the daemon runs it.
struct Edge {
  std::filesystem::path dir = testing::temp_dir();
  Config config;
  std::unique_ptr<RequestBook> book;
  std::thread housekeeping;
  std::unique_ptr<ControlServer> control;
  std::vector<int> fds;

  explicit Edge(const std::function<void(Config&)>& adjust = {}) {
    config = testing::test_config(dir);
    if (adjust) adjust(config);
    book = std::make_unique<RequestBook>(config,
                                         std::make_unique<RequestStore>(config.manager.state_db));
    control = std::make_unique<ControlServer>(config, book->fleet());
    book->fleet().set_sink(control.get());
    housekeeping = std::thread([this] { book->run_housekeeping(); });
    control->start();
  }
  ~Edge() {
    for (int fd : fds) close(fd);
    control->stop();
    book->stop_housekeeping();
    housekeeping.join();
    std::filesystem::remove_all(dir);
  }
  int connect(const char* from = "127.0.0.1") {
    int fd = dial(control->port(), from);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    fds.push_back(fd);
    return fd;
  }
  ControlCounters counters() const { return control->counters(); }
};

// Before, every connection was accepted and kept; now a peer address holds at
// most control_max_unregistered_per_address connections that have not
// registered, and a registered one no longer counts.
TEST(ControlEdge, UnregisteredConnectionsPerAddressAreLimited) {
  Edge edge([](Config& c) { c.manager.control_max_unregistered_per_address = 4; });
  std::vector<int> first;
  for (int i = 0; i < 4; ++i) {
    first.push_back(edge.connect());
    ASSERT_FALSE(read_frame(first.back()).empty()) << "a hello for connection " << i;
  }
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(closed_by_server(edge.connect())) << i;
  EXPECT_EQ(edge.counters().refused_connections, 6u);
  EXPECT_EQ(edge.counters().unregistered, 4u);
  // Another address has its own share.
  EXPECT_FALSE(read_frame(edge.connect("127.0.0.2")).empty());

  // A connection that registers frees its place.
  int registered = edge.connect("127.0.0.3");
  send_all(registered, register_frame(read_frame(registered), "n1", Sealer(unhex(kKey1))));
  ASSERT_FALSE(read_frame(registered).empty()) << "the assignment";
  close(first[0]);
  ASSERT_TRUE(eventually([&] { return edge.counters().unregistered == 5; }));
  EXPECT_FALSE(read_frame(edge.connect()).empty()) << "room again on 127.0.0.1";
}

// When control_max_connections are open, a new connection takes the place of
// the oldest unregistered one; registered sessions are never evicted.
TEST(ControlEdge, FullServerEvictsTheOldestUnregisteredConnection) {
  Edge edge([](Config& c) {
    c.manager.control_max_connections = 3;
    c.manager.control_max_unregistered_per_address = 100;
  });
  int registered = edge.connect();
  send_all(registered, register_frame(read_frame(registered), "n1", Sealer(unhex(kKey1))));
  ASSERT_FALSE(read_frame(registered).empty());
  int oldest = edge.connect();
  ASSERT_FALSE(read_frame(oldest).empty());
  int second = edge.connect();
  ASSERT_FALSE(read_frame(second).empty());
  int newest = edge.connect();
  ASSERT_FALSE(read_frame(newest).empty()) << "the new connection is served";
  EXPECT_TRUE(closed_by_server(oldest));
  EXPECT_EQ(edge.counters().evicted, 1u);
  EXPECT_EQ(edge.counters().open_connections, 3u);
  EXPECT_EQ(edge.counters().sessions, 1u);
}

// Item 4: 300 connections that each announce a 1 MiB frame cost 1 MiB each
// at once, kept (+300 MB); now a frame's buffer holds what arrived of it, and
// a connection that has not registered may not announce more than a
// Register needs. The manager runs in this process: its RSS is ours.
TEST(ControlEdge, MemoryFollowsTheBytesSentNotTheAnnouncedLength) {
  constexpr int kConnections = 300;
  Edge edge([](Config& c) {
    c.manager.control_max_unregistered_per_address = 1000;
    c.manager.control_max_connections = 1000;
  });
  const auto before = rss_bytes();
  const std::string partial = header_for(kMaxRegisterFrame) + std::string(100, 'x');
  for (int i = 0; i < kConnections; ++i) {
    int announced_huge = edge.connect();
    ASSERT_FALSE(read_frame(announced_huge).empty());
    send_all(announced_huge, header_for(kMaxControlFrame) + "x");
    int trickling = edge.connect();
    ASSERT_FALSE(read_frame(trickling).empty());
    send_all(trickling, partial);
  }
  EXPECT_TRUE(eventually([&] {
    auto c = edge.counters();
    return c.bad_messages == kConnections && c.buffered_bytes >= kConnections * 100;
  })) << "bad messages "
      << edge.counters().bad_messages << ", buffered " << edge.counters().buffered_bytes;
  const auto c = edge.counters();
  EXPECT_EQ(c.unregistered, static_cast<std::uint64_t>(kConnections));
  // What arrived, and the slack of a string that grew by appends.
  EXPECT_LE(c.buffered_bytes, 2u * kConnections * 100 + kConnections * 64);
  const auto grown = rss_bytes() - before;
  EXPECT_LT(grown, 32 << 20) << "RSS grew by " << grown / (1 << 20) << " MiB";

  for (int fd : edge.fds) close(fd);
  edge.fds.clear();
  ASSERT_TRUE(eventually([&] { return edge.counters().open_connections == 0; }));
  EXPECT_EQ(edge.counters().buffered_bytes, 0u) << "memory comes back when they close";
}

// A registered session's frame grows by what arrives too: a node announcing
// 1 MiB and sending 1000 bytes holds about 1000 bytes.
TEST(ControlEdge, RegisteredSessionBuffersWhatArrived) {
  Edge edge;
  int fd = edge.connect();
  send_all(fd, register_frame(read_frame(fd), "n1", Sealer(unhex(kKey1))));
  ASSERT_FALSE(read_frame(fd).empty());
  send_all(fd, header_for(kMaxControlFrame) + std::string(1000, 'x'));
  ASSERT_TRUE(eventually([&] { return edge.counters().buffered_bytes >= 1000; }));
  EXPECT_LT(edge.counters().buffered_bytes, 64u * 1024);
}

// Before, a connection could stay unregistered, or a frame incomplete,
// forever; now each has a deadline (control_register_timeout_s,
// control_frame_timeout_s), and the server closes it.
TEST(ControlEdge, DeadlinesCloseSilentAndStalledConnections) {
  Edge edge([](Config& c) {
    c.manager.control_register_timeout_s = 1;
    c.manager.control_frame_timeout_s = 1;
  });
  int silent = edge.connect();
  ASSERT_FALSE(read_frame(silent).empty());
  EXPECT_TRUE(closed_by_server(silent));

  int stalled = edge.connect("127.0.0.2");
  send_all(stalled, register_frame(read_frame(stalled), "n2",
                                   Sealer(unhex("101112131415161718191a1b1c1d1e1f"))));
  ASSERT_FALSE(read_frame(stalled).empty());
  send_all(stalled, header_for(500) + "part of a heartbeat");
  EXPECT_TRUE(closed_by_server(stalled));
  ASSERT_TRUE(eventually([&] { return edge.counters().open_connections == 0; }));
  EXPECT_EQ(edge.counters().timeouts, 2u);
}

// Item 9: a node name with a newline in a control frame, before its seal is
// checked, wrote a forged line into the manager's log; now it is escaped.
TEST(ControlEdge, NodeNameWithANewlineIsLoggedEscaped) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto log = logger("manager");
  log->sinks().push_back(sink);
  {
    Edge edge;
    int fd = edge.connect();
    const std::string forged = "n1\n2026-12-04T00:00:00Z manager info: FORGED";
    send_all(fd, register_frame(read_frame(fd), forged, Sealer(unhex(kKey1))));
    auto refusal = read_frame(fd);  // unsealed: the manager does not know that node
    wire::Sealed frame;
    wire::Message message;
    ASSERT_TRUE(frame.ParseFromString(refusal));
    ASSERT_TRUE(message.ParseFromString(frame.body()));
    EXPECT_EQ(message.refusal().reason(),
              "unknown node 'n1\\x0a2026-12-04T00:00:00Z manager info: FORGED'");
    EXPECT_TRUE(closed_by_server(fd));
    EXPECT_EQ(edge.counters().seal_failures, 1u);
  }
  log->sinks().pop_back();
  const std::string text = out.str();
  EXPECT_NE(text.find("n1\\x0a2026-12-04T00:00:00Z manager info: FORGED"), std::string::npos)
      << text;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    EXPECT_NE(line.rfind("2026-12-04T00:00:00Z manager info: FORGED", 0), 0u) << line;
}

// Key rotation at the manager: with keys 1 and 2 active a prober registers
// under either and the manager answers under the same key; with key 1
// retired, a register under it is refused with a Refusal and counted.
TEST(ControlEdge, KeyRotation) {
  auto rotate = [](bool retire_1) {
    return [retire_1](Config& c) {
      NodeConfig& n1 = c.nodes[0];
      n1.keys = {NodeKey{2, unhex(kKey2), false}, NodeKey{1, unhex(kKey1), retire_1}};
      n1.key = unhex(kKey2);
      n1.key_id = 2;
    };
  };
  {
    Edge both(rotate(false));
    for (std::uint32_t id : {1u, 2u}) {
      Sealer key(unhex(id == 1 ? kKey1 : kKey2), id);
      int fd = both.connect();
      send_all(fd, register_frame(read_frame(fd), "n1", key));
      auto assignment = open_from(read_frame(fd), "n1", key);
      ASSERT_TRUE(assignment) << assignment.error().message;
      EXPECT_TRUE(assignment->has_assignment());
    }
  }
  Edge retired(rotate(true));
  int fd = retired.connect();
  send_all(fd, register_frame(read_frame(fd), "n1", Sealer(unhex(kKey1), 1)));
  wire::Sealed frame;
  wire::Message message;
  ASSERT_TRUE(frame.ParseFromString(read_frame(fd)));
  ASSERT_TRUE(message.ParseFromString(frame.body()));
  EXPECT_EQ(message.refusal().reason(), "node 'n1' sealed with key 1, which is retired");
  EXPECT_TRUE(closed_by_server(fd));
  EXPECT_EQ(retired.counters().retired_keys, 1u);
  EXPECT_EQ(retired.counters().sessions, 0u);
  // A forgery that claims key 1 is a seal failure, not a retired key.
  fd = retired.connect();
  send_all(fd, register_frame(read_frame(fd), "n1", Sealer(std::string(16, 'f'), 1)));
  EXPECT_TRUE(closed_by_server(fd));
  EXPECT_EQ(retired.counters().seal_failures, 1u);
  EXPECT_EQ(retired.counters().retired_keys, 1u);
}

}  // namespace
}  // namespace flexmon::manager
