// The stream runner's sharing rules with a fake tool that holds each
// measurement until the test completes it: one measurement per destination,
// bandwidth measurements never overlapping, higher priority first when a
// node cannot keep up, and the shortfall counted. No wall-clock assertions.
#include <gtest/gtest.h>

#include <mutex>

#include "prober/stream_runner.h"
#include "tests/prober/test_util.h"
#include "wire.pb.h"

namespace flexmon::prober {
namespace {

using test::eventually;

wire::Stream make(const std::string& key, const std::string& dst, const std::string& tool,
                  double interval, int priority = 0) {
  wire::Stream s;
  s.set_key(key);
  s.set_tool(tool);
  s.set_src("n1");
  s.set_dst(dst);
  s.set_dst_address("127.0.0.2");
  s.set_dst_port(8473);
  s.set_interval_s(interval);
  s.set_priority(priority);
  if (tool == "latency") {
    auto* a = s.mutable_latency();
    a->set_method("udp");
    a->set_count(1);
    a->set_spacing_ms(10);
    a->set_size(64);
    a->set_timeout_ms(100);
  } else if (tool == "abw") {
    s.mutable_abw()->set_max_rate_bps(1'000'000);
    s.mutable_abw()->set_max_bytes(1'000'000);
    s.mutable_abw()->set_max_duration_ms(1000);
  } else {
    s.mutable_throughput()->set_duration_ms(1000);
    s.mutable_throughput()->set_max_bytes(1'000'000);
  }
  return s;
}

// Holds every measurement until released; records what ran at once.
struct Fake {
  std::mutex mu;
  std::vector<std::pair<wire::Stream, std::function<void(wire::Result)>>> running;
  std::vector<std::string> started;  // keys in start order
  std::size_t max_same_dst = 0, max_bandwidth = 0, results = 0;

  void measure(const wire::Stream& s, std::function<void(wire::Result)> done) {
    std::lock_guard lock(mu);
    running.emplace_back(s, std::move(done));
    started.push_back(s.key());
    std::map<std::string, std::size_t> per_dst;
    std::size_t bandwidth = 0;
    for (const auto& [r, d] : running) {
      max_same_dst = std::max(max_same_dst, ++per_dst[r.dst()]);
      if (r.tool() != "latency") ++bandwidth;
    }
    max_bandwidth = std::max(max_bandwidth, bandwidth);
  }
  std::size_t in_flight() {
    std::lock_guard lock(mu);
    return running.size();
  }
  std::size_t started_count() {
    std::lock_guard lock(mu);
    return started.size();
  }
  // Completes the oldest running measurement on the loop thread.
  void release_one(EventLoop& loop) {
    std::function<void(wire::Result)> done;
    {
      std::lock_guard lock(mu);
      if (running.empty()) return;
      done = std::move(running.front().second);
      running.erase(running.begin());
    }
    loop.post([this, done = std::move(done)] {
      done(wire::Result());
      std::lock_guard lock(mu);
      ++results;
    });
  }
};

struct Rig {
  EventLoop loop;
  Fake fake;
  std::unique_ptr<StreamRunner> runner;
  Rig() {
    runner = std::make_unique<StreamRunner>(
        loop, "n1", Limits{},
        [this](std::shared_ptr<const wire::Stream> s, MonoTime,
               std::function<void(wire::Result)> d) { fake.measure(*s, std::move(d)); },
        [](wire::Result) {});
    loop.start();
  }
  ~Rig() {
    loop.stop();
    loop.join();
  }
};

TEST(Runner, OneMeasurementPerDestinationAndBandwidthNeverOverlaps) {
  Rig rig;
  rig.runner->assign({make("a", "n2", "latency", 0.01), make("b", "n2", "latency", 0.01),
                      make("c", "n3", "abw", 0.01), make("d", "n4", "throughput", 0.01),
                      make("e", "n5", "latency", 0.01)});
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(eventually([&] { return rig.fake.in_flight() > 0; }));
    rig.fake.release_one(rig.loop);
  }
  EXPECT_GE(rig.fake.started_count(), 60u);
  EXPECT_EQ(rig.fake.max_same_dst, 1u);
  EXPECT_EQ(rig.fake.max_bandwidth, 1u);
  std::lock_guard lock(rig.fake.mu);
  for (const auto* key : {"a", "b", "c", "d", "e"})
    EXPECT_NE(std::find(rig.fake.started.begin(), rig.fake.started.end(), key),
              rig.fake.started.end())
        << key;
}

TEST(Runner, HigherPriorityGoesFirstAndTheShortfallIsReported) {
  Rig rig;
  // Three streams to one destination: only one runs at a time, so the node
  // cannot keep up; the blocker is held until the others are queued.
  rig.runner->assign({make("low", "n2", "latency", 0.02, 0), make("high", "n2", "latency", 0.02, 9),
                      make("mid", "n2", "latency", 0.02, 5)});
  ASSERT_TRUE(eventually([&] { return rig.fake.in_flight() == 1; }));
  ASSERT_TRUE(eventually([&] { return rig.runner->take_shortfall().waiting == 2; }));
  std::string first;
  {
    std::lock_guard lock(rig.fake.mu);
    first = rig.fake.started.front();
  }
  rig.fake.release_one(rig.loop);
  ASSERT_TRUE(eventually([&] { return rig.fake.started_count() == 2; }));
  {
    std::lock_guard lock(rig.fake.mu);
    // The highest waiting priority runs next.
    EXPECT_EQ(rig.fake.started[1], first == "high" ? "mid" : "high");
  }
  // Slots keep coming while the measurement is held: skipped and reported.
  ASSERT_TRUE(eventually([&] { return rig.runner->counters().skipped_slots > 3; }));
  Shortfall f = rig.runner->take_shortfall();
  EXPECT_GT(f.skipped_slots, 3u);
  EXPECT_GE(f.behind_streams, 1u);
  while (rig.fake.in_flight()) rig.fake.release_one(rig.loop);
}

}  // namespace
}  // namespace flexmon::prober
