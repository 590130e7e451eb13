// The synchronous probe tools on loopback: every latency method, statuses,
// outage bound, sealed abw / throughput against a real responder, caps, JSON,
// the netns check, and workers that stop while measurements run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <future>

#include "prober/event_loop.h"
#include "prober/measurements.h"
#include "prober/responder.h"
#include "prober/tools.h"
#include "prober/tools_internal.h"
#include "test_util.h"
#include "wire.pb.h"

namespace flexmon::prober {
namespace {

const std::string kKey = "0123456789abcdef0123456789abcdef";

struct Lab {
  EventLoop loop;
  std::unique_ptr<Responder> responder;
  Lab() {
    responder = std::make_unique<Responder>(loop, "127.0.0.1", 0, 16, 1472);
    responder->set_peer_keys({{"n1", kKey}});
    loop.start();
  }
  ~Lab() {
    loop.stop();
    loop.join();
  }
};

ToolContext context(std::string key = kKey) {
  ToolContext c;
  c.node = "n1";
  c.key = std::move(key);
  c.source_address = "127.0.0.1";
  c.outage.spacing_ms = 10;
  c.outage.max_probes = 5;
  return c;
}

wire::Stream latency(const std::string& method, std::uint16_t port, std::uint32_t count = 5) {
  wire::Stream s;
  s.set_key("k");
  s.set_tool("latency");
  s.set_src("n1");
  s.set_dst("n2");
  s.set_dst_address("127.0.0.1");
  s.set_dst_port(port);
  auto* a = s.mutable_latency();
  a->set_method(method);
  a->set_count(count);
  a->set_spacing_ms(5);
  a->set_size(64);
  a->set_timeout_ms(1000);
  return s;
}

// A UDP port bound but never read: probes to it get no reply and no error.
using SilentPort = test::LoopbackUdpSocket;

TEST(Tools, UdpAndTcpAgainstTheResponder) {
  Lab lab;
  for (const char* method : {"udp", "tcp"}) {
    auto r = run_measurement(latency(method, lab.responder->port()), context());
    EXPECT_EQ(r.status(), wire::OK) << method << ": " << r.error();
    EXPECT_EQ(r.latency().sent(), 5U);
    EXPECT_EQ(r.latency().received(), 5U);
    EXPECT_EQ(r.latency().rtt_ns_size(), 5);
    EXPECT_GT(r.latency().min_ns(), 0);
    EXPECT_FALSE(r.has_outage());
  }
}

TEST(Tools, IcmpToLoopback) {
  auto r = run_measurement(latency("icmp", 0, 3), context());
  if (r.status() == wire::ERROR) GTEST_SKIP() << "no ICMP socket here: " << r.error();
  EXPECT_EQ(r.status(), wire::OK) << r.error();
  EXPECT_EQ(r.latency().received(), 3U);
}

// Every echo's RTT runs from the kernel's send stamp (taken in the device's
// transmit path, after the send call's own work), so it is the inner part of
// what a pinger that stamps before sendto measures for the same echo.
TEST(Tools, IcmpRttsRunFromTheKernelSendStamp) {
  std::string error;
  auto dst = tools::resolve("127.0.0.1", 0, error);
  ASSERT_TRUE(dst) << error;
  tools::PingPlan plan;
  plan.method = "icmp";
  plan.count = 5;
  plan.spacing_ns = 2'000'000;
  auto out = tools::ping(*dst, plan, context(), "");
  if (!out.error.empty()) GTEST_SKIP() << "no ICMP socket here: " << out.error;
  EXPECT_EQ(out.received, 5U);
  EXPECT_EQ(out.kernel_tx_stamps, out.sent);
}

TEST(Tools, Statuses) {
  Lab lab;
  SilentPort silent;
  int closed_fd = socket(AF_INET, SOCK_STREAM, 0);  // bound, not listening: RST
  const std::uint16_t closed_port = test::bind_loopback(closed_fd);
  auto r = run_measurement(latency("tcp", closed_port, 2), context());
  EXPECT_EQ(r.status(), wire::REFUSED) << r.error();
  close(closed_fd);

  auto s = latency("udp", silent.port, 2);
  s.mutable_latency()->set_timeout_ms(50);
  r = run_measurement(s, context());
  EXPECT_EQ(r.status(), wire::TIMEOUT) << r.error();
  // The outage probing is bounded: 5 extra probes, no answer, no end.
  ASSERT_TRUE(r.has_outage());
  EXPECT_EQ(r.outage().probes_sent(), 5U);
  EXPECT_EQ(r.outage().end_ns(), 0);
  EXPECT_EQ(r.outage().start_ns(), r.start_ns());

  s.set_dst_address("no-such-host.invalid");
  r = run_measurement(s, context());
  EXPECT_EQ(r.status(), wire::RESOLVE_FAILURE);
  EXPECT_NE(r.error().find("no-such-host.invalid"), std::string::npos);

  s = latency("udp", lab.responder->port(), 1);
  s.set_netns("/nonexistent/netns");
  r = run_measurement(s, context());
  EXPECT_EQ(r.status(), wire::ERROR);
  EXPECT_NE(r.error().find("/nonexistent/netns"), std::string::npos);
}

wire::Stream abw(std::uint16_t port, std::uint64_t max_bytes) {
  wire::Stream s;
  s.set_key("a");
  s.set_tool("abw");
  s.set_dst_address("127.0.0.1");
  s.set_dst_port(port);
  s.mutable_abw()->set_max_rate_bps(50'000'000);
  s.mutable_abw()->set_max_bytes(max_bytes);
  s.mutable_abw()->set_max_duration_ms(3000);
  return s;
}

TEST(Tools, AbwNeedsAValidSealAndKeepsItsCaps) {
  Lab lab;
  auto r = run_measurement(abw(lab.responder->port(), 300'000), context());
  EXPECT_EQ(r.status(), wire::OK) << r.error();
  EXPECT_LE(r.abw().bytes_sent(), 300'000U);
  EXPECT_LE(r.abw().duration_ns(), 3'000'000'000);
  EXPECT_LE(r.abw().upper_bps(), 50e6);
  EXPECT_LE(r.abw().lower_bps(), r.abw().estimate_bps());
  EXPECT_GT(lab.responder->counters().abw_answered.load(), 0U);

  auto bad = run_measurement(abw(lab.responder->port(), 300'000),
                             context("ffffffffffffffffffffffffffffffff"));
  EXPECT_EQ(bad.status(), wire::TIMEOUT) << bad.error();
  EXPECT_GT(lab.responder->counters().abw_rejected.load(), 0U);
}

TEST(Tools, ThroughputStopsAtMaxBytesAndNeedsASeal) {
  Lab lab;
  wire::Stream s;
  s.set_key("t");
  s.set_tool("throughput");
  s.set_dst_address("127.0.0.1");
  s.set_dst_port(lab.responder->port());
  s.mutable_throughput()->set_duration_ms(2000);
  s.mutable_throughput()->set_max_bytes(1'000'000);
  auto r = run_measurement(s, context());
  EXPECT_EQ(r.status(), wire::OK) << r.error();
  EXPECT_LE(r.throughput().bytes_sent(), 1'000'000U + 64);
  EXPECT_GT(r.throughput().throughput_bps(), 0);
  EXPECT_EQ(lab.responder->counters().throughput_bytes.load() + 64, r.throughput().bytes_sent());

  auto bad = run_measurement(s, context("ffffffffffffffffffffffffffffffff"));
  EXPECT_NE(bad.status(), wire::OK);
  EXPECT_GT(lab.responder->counters().throughput_rejected.load(), 0U);
}

TEST(Tools, DaemonDispatchFollowsAnOutageOfUdpStreams) {
  Lab lab;
  SilentPort silent;
  OutageOptions outage;
  outage.spacing_ms = 10;
  outage.max_probes = 3;
  Measurements m(lab.loop, "127.0.0.1", "n1", kKey, 2, outage);
  auto promise = std::make_shared<std::promise<wire::Result>>();
  auto future = promise->get_future();
  auto s = latency("udp", silent.port, 2);
  s.mutable_latency()->set_timeout_ms(50);
  lab.loop.post([&m, s, promise] {
    m.measure(s, [promise](wire::Result r) { promise->set_value(std::move(r)); });
  });
  ASSERT_EQ(future.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  auto r = future.get();
  EXPECT_EQ(r.status(), wire::TIMEOUT);
  ASSERT_TRUE(r.has_outage());
  EXPECT_EQ(r.outage().probes_sent(), 3U);

  auto promise2 = std::make_shared<std::promise<wire::Result>>();
  auto future2 = promise2->get_future();
  m.measure(latency("tcp", lab.responder->port(), 2),
            [promise2](wire::Result r) { promise2->set_value(std::move(r)); });
  ASSERT_EQ(future2.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(future2.get().status(), wire::OK);
}

// Ends open() calls of `fifo` that wait for a writer (what the netns check
// prevents), so that a test of a prober without it fails instead of hanging.
template <typename Future>
void release_fifo_readers(const std::filesystem::path& fifo, Future& pending) {
  for (int round = 0; round < 10'000; ++round) {
    if (pending.wait_for(std::chrono::milliseconds(10)) == std::future_status::ready) return;
    int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
  }
}

// Regression: a netns naming a FIFO blocked the measurement in open() for
// good (and with it a worker of the daemon). Whatever is named that is not a
// network namespace is refused at once, with the path and what it is.
TEST(Tools, NetnsThatIsNotANetworkNamespaceIsRefusedAtOnce) {
  Lab lab;
  test::TempDir dir;
  const auto fifo = dir.path / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto file = dir.path / "file";
  std::ofstream(file) << "not a namespace\n";
  const auto folder = dir.path / "folder";
  std::filesystem::create_directory(folder);
  const std::pair<std::string, std::string> cases[] = {
      {fifo.string(), "a FIFO"},
      {file.string(), "a regular file"},
      {folder.string(), "a directory"},
      {(dir.path / "missing").string(), "No such file or directory"},
      {"/dev/null", "a character device"},
      {"/proc/self/ns/uts", "a UTS namespace"},
  };
  for (const auto& [path, what] : cases) {
    for (const char* method : {"udp", "tcp"}) {
      auto s = latency(method, lab.responder->port(), 2);
      s.set_netns(path);
      auto pending = std::async(std::launch::async, [s] { return run_measurement(s, context()); });
      if (pending.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
        ADD_FAILURE() << method << " with netns " << path << " is still blocked after 30 s";
        release_fifo_readers(fifo, pending);
      }
      auto r = pending.get();
      EXPECT_EQ(r.status(), wire::ERROR) << path;
      EXPECT_NE(r.error().find(path), std::string::npos) << r.error();
      EXPECT_NE(r.error().find(what), std::string::npos) << r.error();
    }
  }
}

TEST(Tools, NetnsOfTheProcessItselfIsANetworkNamespace) {
  if (geteuid() != 0) GTEST_SKIP() << "setns() into a network namespace needs root";
  Lab lab;
  auto s = latency("udp", lab.responder->port(), 2);
  s.set_netns("/proc/self/ns/net");
  auto r = run_measurement(s, context());
  EXPECT_EQ(r.status(), wire::OK) << r.error();
}

// Regression: with a FIFO as netns, the daemon's worker blocked, and every
// measurement queued behind it (every user's) waited with it.
TEST(Tools, AFifoNetnsLeavesTheOtherMeasurementsRunning) {
  Lab lab;
  test::TempDir dir;
  const auto fifo = dir.path / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  Measurements m(lab.loop, "127.0.0.1", "n1", kKey, 1);  // one worker: nothing can go around it
  auto blocked = std::make_shared<std::promise<wire::Result>>();
  auto other = std::make_shared<std::promise<wire::Result>>();
  auto blocked_result = blocked->get_future();
  auto other_result = other->get_future();
  auto hostile = latency("udp", lab.responder->port(), 2);
  hostile.set_netns(fifo.string());
  m.measure(hostile, [blocked](wire::Result r) { blocked->set_value(std::move(r)); });
  m.measure(latency("tcp", lab.responder->port(), 2),
            [other](wire::Result r) { other->set_value(std::move(r)); });
  if (other_result.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "the measurement behind the FIFO netns did not run within 30 s";
    release_fifo_readers(fifo, other_result);
  }
  ASSERT_EQ(blocked_result.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(other_result.get().status(), wire::OK);
  auto r = blocked_result.get();
  EXPECT_EQ(r.status(), wire::ERROR);
  EXPECT_NE(r.error().find(fifo.string() + ": a FIFO, not a network namespace"), std::string::npos)
      << r.error();
}

// Regression: the prober's SIGTERM destroys its ToolRunner, which joins the
// workers; a worker blocked on a FIFO netns never ended, and one waiting for
// its next probe ended only when that wait did (up to the spacing). Both end
// as soon as the runner stops.
TEST(Tools, StoppingTheWorkersEndsTheMeasurementsTheyRun) {
  test::TempDir dir;
  const auto fifo = dir.path / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  SilentPort silent;
  auto runner = std::make_unique<ToolRunner>(context(), 2);
  auto waiting = latency("udp", silent.port, 2);
  waiting.mutable_latency()->set_spacing_ms(120'000);  // longer than any wait below
  waiting.mutable_latency()->set_timeout_ms(120'000);
  runner->measure(waiting, [](wire::Result) {});
  auto hostile = latency("udp", silent.port, 2);
  hostile.set_netns(fifo.string());
  runner->measure(hostile, [](wire::Result) {});
  ASSERT_TRUE(silent.receive()) << "the first probe never came: the measurement is not running";
  auto stopped = std::async(std::launch::async, [&runner] { runner.reset(); });
  if (stopped.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "the workers did not stop within 30 s";
    release_fifo_readers(fifo, stopped);
  }
  stopped.get();
}

TEST(Tools, CheckToolArgsAndJson) {
  EXPECT_EQ(check_tool_args(latency("icmp", 0)), "");
  EXPECT_NE(check_tool_args(latency("sctp", 0)).find("method"), std::string::npos);
  wire::Stream s;
  s.set_tool("traceroute");
  EXPECT_NE(check_tool_args(s).find("tool"), std::string::npos);
  EXPECT_NE(check_tool_args(abw(1, 10)).find("max_bytes"), std::string::npos);

  wire::Result r;
  r.set_tool("latency");
  r.set_status(wire::TIMEOUT);
  r.mutable_latency()->set_sent(2);
  r.mutable_latency()->add_rtt_ns(-1);
  r.mutable_outage()->set_start_ns(5);
  auto json = result_json(r);
  EXPECT_NE(json.find("\"status\":\"timeout\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"rtt_ns\":[-1]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"outage\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"loss_pct\":100.0"), std::string::npos) << json;
}

}  // namespace
}  // namespace flexmon::prober
