// Real sockets on loopback: a responder and latency measurements against it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <memory>

#include "prober/event_loop.h"
#include "prober/latency_prober.h"
#include "prober/probe_packet.h"
#include "prober/responder.h"
#include "prober/stream_runner.h"
#include "test_util.h"
#include "wire.pb.h"

namespace flexmon::prober {
namespace {

// Components must be destroyed after the loop has stopped.
struct Loop {
  EventLoop loop;
  Loop() { loop.start(); }
  ~Loop() {
    loop.stop();
    loop.join();
  }
};

wire::Stream stream_to(std::uint16_t port, std::uint32_t count) {
  wire::Stream s;
  s.set_key("latency/test");
  s.set_tool("latency");
  s.set_src("n1");
  s.set_dst("n2");
  s.set_dst_address("127.0.0.1");
  s.set_dst_port(port);
  s.set_interval_s(1);
  auto* a = s.mutable_latency();
  a->set_method("udp");
  a->set_count(count);
  a->set_spacing_ms(10);
  a->set_size(100);
  a->set_timeout_ms(2000);
  return s;
}

wire::Result measure(LatencyProber& prober, const wire::Stream& stream) {
  auto promise = std::make_shared<std::promise<wire::Result>>();
  auto future = promise->get_future();
  prober.measure(stream, [promise](wire::Result r) { promise->set_value(std::move(r)); });
  // A bound against a hang, not a timing assertion.
  if (future.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "measurement did not finish";
    return {};
  }
  return future.get();
}

// A UDP port on 127.0.0.1 that nothing listens on.
std::uint16_t closed_port() {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  auto port = test::bind_loopback(fd);
  close(fd);
  return port;
}

TEST(Latency, MeasuresAgainstARealResponder) {
  Loop l;
  Responder responder(l.loop, "127.0.0.1", 0, 16, 1472);
  LatencyProber prober(l.loop, "127.0.0.1", "n1");
  auto r = measure(prober, stream_to(responder.port(), 5));
  EXPECT_EQ(r.status(), wire::OK) << r.error();
  EXPECT_EQ(r.src(), "n1");
  EXPECT_EQ(r.dst(), "n2");
  EXPECT_EQ(r.stream(), "latency/test");
  EXPECT_GT(r.start_ns(), 0);
  const auto& v = r.latency();
  EXPECT_EQ(v.sent(), 5u);
  EXPECT_EQ(v.received(), 5u);
  EXPECT_EQ(v.duplicates(), 0u);
  ASSERT_EQ(v.rtt_ns_size(), 5);
  for (auto rtt : v.rtt_ns()) EXPECT_GT(rtt, 0);
  EXPECT_GT(v.min_ns(), 0);
  EXPECT_LE(v.min_ns(), v.median_ns());
  EXPECT_LE(v.median_ns(), v.max_ns());
  EXPECT_EQ(responder.counters().echoed.load(), 5u);
}

TEST(Latency, ManyConcurrentMeasurementsShareOneSocket) {
  Loop l;
  Responder responder(l.loop, "127.0.0.1", 0, 16, 1472);
  LatencyProber prober(l.loop, "127.0.0.1", "n1");
  std::vector<std::future<wire::Result>> futures;
  for (int i = 0; i < 20; ++i) {
    auto promise = std::make_shared<std::promise<wire::Result>>();
    futures.push_back(promise->get_future());
    prober.measure(stream_to(responder.port(), 3),
                   [promise](wire::Result r) { promise->set_value(std::move(r)); });
  }
  for (auto& f : futures) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    auto r = f.get();
    EXPECT_EQ(r.status(), wire::OK);
    EXPECT_EQ(r.latency().received(), 3u);
  }
  EXPECT_EQ(prober.counters().unmatched.load(), 0u);
}

TEST(Latency, ClosedPortIsRefusedOrTimesOut) {
  Loop l;
  LatencyProber prober(l.loop, "127.0.0.1", "n1");
  auto stream = stream_to(closed_port(), 2);
  stream.mutable_latency()->set_timeout_ms(300);
  auto r = measure(prober, stream);
  EXPECT_TRUE(r.status() == wire::REFUSED || r.status() == wire::TIMEOUT)
      << wire::Status_Name(r.status()) << " " << r.error();
  RecordProperty("result_status", wire::Status_Name(r.status()));
  EXPECT_EQ(r.latency().received(), 0u);
  EXPECT_EQ(r.latency().sent(), 2u);
  ASSERT_EQ(r.latency().rtt_ns_size(), 2);
  EXPECT_EQ(r.latency().rtt_ns(0), -1);
}

TEST(Latency, BadDestinationAddressIsAResultNotACrash) {
  Loop l;
  LatencyProber prober(l.loop, "127.0.0.1", "n1");
  auto stream = stream_to(9, 1);
  stream.set_dst_address("not-an-address");
  auto r = measure(prober, stream);
  EXPECT_EQ(r.status(), wire::RESOLVE_FAILURE);
  EXPECT_FALSE(r.error().empty());
}

TEST(Latency, ASendTheKernelRefusesIsAnErrorResultAndLaterMeasurementsStillRun) {
  Loop l;
  Responder responder(l.loop, "127.0.0.1", 0, 16, 1472);
  LatencyProber prober(l.loop, "0.0.0.0", "n1");
  // Broadcast without SO_BROADCAST: sendmmsg fails with EACCES.
  auto refused = stream_to(9, 2);
  refused.set_dst_address("255.255.255.255");
  auto r = measure(prober, refused);
  EXPECT_EQ(r.status(), wire::ERROR);
  EXPECT_NE(r.error().find("sendmmsg"), std::string::npos) << r.error();
  EXPECT_EQ(r.latency().sent(), 0U);
  auto ok = measure(prober, stream_to(responder.port(), 2));
  EXPECT_EQ(ok.status(), wire::OK) << ok.error();
  EXPECT_EQ(prober.running(), 0U);
}

TEST(Responder, DropsMalformedPacketsAndNeverAmplifies) {
  Loop l;
  Responder responder(l.loop, "127.0.0.1", 0, 16, 1472);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(responder.port());
  auto send = [&](const std::string& p) {
    sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  };
  send("garbage");
  send(std::string(64, 'x'));
  send(encode_probe(ProbeHeader{ProbeKind::reply, 0, 1}, 64));      // a reply is not echoed
  send(encode_probe(ProbeHeader{ProbeKind::request, 0, 1}, 2000));  // above max_size
  send(encode_probe(ProbeHeader{ProbeKind::request, 0, 1}, 40));    // the one good request
  EXPECT_TRUE(test::eventually([&] { return responder.counters().malformed.load() == 4; }));
  EXPECT_TRUE(test::eventually([&] { return responder.counters().echoed.load() == 1; }));
  char reply[4096];
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n = recv(fd, reply, sizeof reply, 0);
  EXPECT_EQ(n, 40) << "the reply has the request's size";
  auto header = decode_probe(std::span(reinterpret_cast<std::uint8_t*>(reply), n > 0 ? n : 0));
  ASSERT_TRUE(header);
  EXPECT_EQ(header->kind, ProbeKind::reply);
  close(fd);
}

TEST(StreamRunner, OneshotRunsOnceThenIsDropped) {
  Loop l;
  Responder responder(l.loop, "127.0.0.1", 0, 16, 1472);
  LatencyProber prober(l.loop, "127.0.0.1", "n1");
  std::atomic<int> results{0};
  StreamRunner runner(
      l.loop, "n1", Limits{},
      [&](std::shared_ptr<const wire::Stream> s, MonoTime due,
          std::function<void(wire::Result)> done) { prober.measure(*s, due, std::move(done)); },
      [&](wire::Result r) {
        EXPECT_EQ(r.status(), wire::OK);
        ++results;
      });
  auto s = stream_to(responder.port(), 2);
  s.set_oneshot(true);
  auto bad = s;
  bad.set_key("other");
  bad.set_src("n9");  // not this node: left out
  runner.assign({s, bad});
  EXPECT_TRUE(test::eventually([&] { return results.load() == 1; }));
  EXPECT_TRUE(test::eventually([&] { return runner.streams() == 0; }));
  EXPECT_EQ(runner.counters().rejected_streams.load(), 1u);
  // The manager lists it again: it does not run twice.
  runner.assign({s});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(results.load(), 1);
}

TEST(StreamRunner, ReplacingTheSetStopsRemovedStreams) {
  Loop l;
  std::atomic<int> started{0};
  StreamRunner runner(
      l.loop, "n1", Limits{},
      [&](std::shared_ptr<const wire::Stream>, MonoTime, std::function<void(wire::Result)> done) {
        ++started;
        done(wire::Result{});
      },
      [](wire::Result) {});
  auto a = stream_to(9, 1);
  a.set_key("a");
  a.set_interval_s(0.05);
  auto b = a;
  b.set_key("b");
  runner.assign({a, b});
  EXPECT_TRUE(test::eventually([&] { return runner.streams() == 2; }));
  EXPECT_NEAR(runner.load(), 40.0, 1e-9);
  runner.assign({b});
  EXPECT_TRUE(test::eventually([&] { return runner.streams() == 1; }));
  runner.assign({});
  EXPECT_TRUE(test::eventually([&] { return runner.streams() == 0; }));
  int after = started.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(started.load(), after) << "no stream runs after an empty assignment";
}

}  // namespace
}  // namespace flexmon::prober
