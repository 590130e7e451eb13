// The result sender against a fake collector: a UDP socket in the test.
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <mutex>

#include "common/seal.h"
#include "prober/event_loop.h"
#include "prober/latency_prober.h"
#include "prober/responder.h"
#include "prober/result_sender.h"
#include "prober/spool.h"
#include "prober/stream_runner.h"
#include "test_util.h"
#include "wire.pb.h"

namespace flexmon::prober {
namespace {

const std::string kKey = "0123456789abcdef0123456789abcdef";

// The collector is the test's socket: it reads the sender's datagrams and
// answers with acks.
using FakeCollector = test::LoopbackUdpSocket;

wire::Result result_with_rtts(int packets) {
  wire::Result r;
  r.set_stream("latency/udp/n1/n2/count=100");
  r.set_tool("latency");
  r.set_src("n1");
  r.set_dst("n2");
  r.set_start_ns(1'700'000'000'000'000'000);
  r.set_status(wire::OK);
  for (int i = 0; i < packets; ++i) r.mutable_latency()->add_rtt_ns(123'456 + i);
  return r;
}

struct Fixture {
  EventLoop loop;
  FakeCollector collector;
  std::unique_ptr<ResultSender> sender;
  Sealer sealer{kKey};
  explicit Fixture(double initial_backoff_s = 0.5) {
    SenderOptions o;
    o.node = "n1";
    o.key = kKey;
    o.boot_epoch = 7;
    o.source_address = "127.0.0.1";
    o.collectors = {Endpoint{"127.0.0.1", collector.port}};
    o.initial_backoff_s = initial_backoff_s;
    sender = std::make_unique<ResultSender>(loop, o, std::make_unique<MemorySpool>());
    loop.start();
  }
  ~Fixture() {
    loop.stop();
    loop.join();
  }
  std::string ack(std::uint64_t epoch, std::uint64_t first, std::uint64_t last, const Sealer& key) {
    wire::Message m;
    m.set_node("n1");
    m.mutable_ack()->set_boot_epoch(epoch);
    auto* range = m.mutable_ack()->add_ranges();
    range->set_first(first);
    range->set_last(last);
    return seal(m, key);
  }
};

TEST(ResultSender, NumbersBatchesUnder1400BytesAndForgetsAckedResults) {
  Fixture f;
  for (int i = 0; i < 30; ++i) f.sender->submit(result_with_rtts(20));
  std::set<std::uint64_t> seen;
  sockaddr_in from{};
  while (seen.size() < 30) {
    auto datagram = f.collector.receive();
    ASSERT_TRUE(datagram) << "no datagram";
    from = datagram->second;
    EXPECT_LE(datagram->first.size(), kMaxResultDatagram);
    auto m = open_from(datagram->first, "n1", f.sealer);
    ASSERT_TRUE(m) << m.error().message;
    ASSERT_TRUE(m->has_results());
    EXPECT_EQ(m->results().boot_epoch(), 7u);
    EXPECT_GT(m->results().results_size(), 1) << "results are packed";
    for (const auto& r : m->results().results()) seen.insert(r.seq());
  }
  EXPECT_EQ(*seen.begin(), 1u);
  EXPECT_EQ(*seen.rbegin(), 30u);
  EXPECT_TRUE(test::eventually([&] { return f.sender->counters().spooled.load() == 30; }));

  // An ack under the wrong key, and one for a later epoch, are dropped; one for
  // an earlier epoch is valid but removes nothing of this one.
  f.collector.send(f.ack(7, 1, 30, Sealer("another key, 16 bytes or more")), from);
  f.collector.send(f.ack(8, 1, 30, f.sealer), from);
  f.collector.send(f.ack(6, 1, 30, f.sealer), from);
  EXPECT_TRUE(test::eventually([&] { return f.sender->counters().bad_acks.load() == 2; }));
  EXPECT_EQ(f.sender->counters().spooled.load(), 30u);

  f.collector.send(f.ack(7, 1, 30, f.sealer), from);
  EXPECT_TRUE(test::eventually([&] { return f.sender->counters().spooled.load() == 0; }));
  EXPECT_EQ(f.sender->counters().acked.load(), 30u);
}

TEST(ResultSender, RetransmitsUntilAcknowledged) {
  Fixture f(0.1);
  f.sender->submit(result_with_rtts(3));
  auto first = f.collector.receive();
  ASSERT_TRUE(first);
  auto again = f.collector.receive();  // no ack: it comes again
  ASSERT_TRUE(again);
  auto m = open_from(again->first, "n1", f.sealer);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->results().results(0).seq(), 1u);
  EXPECT_GE(f.sender->counters().retransmitted.load(), 1u);
  f.collector.send(f.ack(7, 1, 1, f.sealer), again->second);
  EXPECT_TRUE(test::eventually([&] { return f.sender->counters().spooled.load() == 0; }));
}

// Issue 4: a full spool pauses the lowest priorities first, then every
// stream, and drops nothing; acknowledgements make room and they resume.
// Real spool (SQLite, 100 results), real responder, prober and runner on
// loopback; the collector is the test's socket, silent until it acknowledges.
TEST(SpoolFull, LowerPrioritiesPauseFirstNothingIsDroppedAndStreamsResume) {
  test::TempDir dir;
  EventLoop loop;
  FakeCollector collector;
  Responder responder(loop, "127.0.0.1", 0, 16, 1472);
  LatencyProber prober(loop, "127.0.0.1", "n1");
  SenderOptions o;
  o.node = "n1";
  o.key = kKey;
  o.boot_epoch = 7;
  o.source_address = "127.0.0.1";
  o.collectors = {Endpoint{"127.0.0.1", collector.port}};
  o.initial_backoff_s = 5;  // the silent collector is not flooded meanwhile
  // Capacity 100: a reserve of 5, lower priorities pause from 85, all from 95.
  ResultSender sender(
      loop, o, std::make_unique<SqliteSpool>(dir.path / "spool.db", SqliteSpoolOptions{100}));
  std::mutex mu;
  std::vector<std::int32_t> spooled_priorities;  // of each result, in order
  StreamRunner runner(
      loop, "n1", Limits{},
      [&](std::shared_ptr<const wire::Stream> s, MonoTime due,
          std::function<void(wire::Result)> done) { prober.measure(*s, due, std::move(done)); },
      [&](wire::Result r) {
        {
          std::lock_guard lock(mu);
          spooled_priorities.push_back(r.dst() == "n3" ? 9 : 1);
        }
        sender.submit(std::move(r));
      },
      [&](int priority) { return sender.accepting(priority); });
  auto stream = [&](const std::string& key, const std::string& dst, int priority) {
    wire::Stream s;
    s.set_key(key);
    s.set_tool("latency");
    s.set_src("n1");
    s.set_dst(dst);
    s.set_dst_address("127.0.0.1");
    s.set_dst_port(responder.port());
    s.set_interval_s(0.01);
    s.set_priority(priority);
    auto* a = s.mutable_latency();
    a->set_method("udp");
    a->set_count(1);
    a->set_size(64);
    a->set_timeout_ms(200);
    return s;
  };
  loop.start();
  runner.assign({stream("low", "n2", 1), stream("high", "n3", 9)});

  // Both streams pause once the spool is full; nothing is lost.
  ASSERT_TRUE(test::eventually([&] { return runner.counters().paused_streams.load() == 2; },
                               std::chrono::seconds(30)));
  EXPECT_GT(runner.counters().paused_slots.load(), 0U);
  EXPECT_GT(sender.counters().paused.load(), 0U);
  EXPECT_EQ(sender.counters().spool_full.load(), 0U) << "a result was dropped";
  EXPECT_LE(sender.counters().spooled.load(), 100U);
  std::size_t before_resume;
  {
    std::lock_guard lock(mu);
    before_resume = spooled_priorities.size();
    ASSERT_GE(before_resume, 90U);
    // Between 85 and 95 results only the higher priority ran (a margin for
    // the measurements in flight at the threshold).
    for (std::size_t i = 89; i < 93; ++i) EXPECT_EQ(spooled_priorities[i], 9) << "result " << i;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(spooled_priorities.size(), before_resume) << "a paused stream ran";
  }

  // The collector acknowledges everything: room again, both streams resume.
  auto datagram = collector.receive();
  ASSERT_TRUE(datagram);
  Sealer sealer(kKey);
  wire::Message ack;
  ack.set_node("n1");
  ack.mutable_ack()->set_boot_epoch(7);
  auto* range = ack.mutable_ack()->add_ranges();
  range->set_first(1);
  range->set_last(1'000'000);
  collector.send(seal(ack, sealer), datagram->second);
  ASSERT_TRUE(test::eventually([&] { return runner.counters().paused_streams.load() == 0; },
                               std::chrono::seconds(30)));
  ASSERT_TRUE(test::eventually(
      [&] {
        std::lock_guard lock(mu);
        return std::count(spooled_priorities.begin() + static_cast<std::ptrdiff_t>(before_resume),
                          spooled_priorities.end(), 1) > 0;
      },
      std::chrono::seconds(30)))
      << "the lower priority did not resume";
  EXPECT_EQ(sender.counters().spool_full.load(), 0U);
  loop.stop();
  loop.join();
}

}  // namespace
}  // namespace flexmon::prober
