// The durable spool (SqliteSpool) and the sender over it: what is synced
// survives reopening, results of an earlier epoch are sent after a restart,
// and only acknowledged results leave the spool.
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <set>

#include "common/seal.h"
#include "prober/event_loop.h"
#include "prober/result_sender.h"
#include "prober/spool.h"
#include "test_util.h"
#include "wire.pb.h"

namespace flexmon::prober {
namespace {

const std::string kKey = "0123456789abcdef0123456789abcdef";

std::vector<SpoolKey> keys_of(Spool& spool) {
  std::vector<SpoolKey> keys;
  spool.scan({0, 0}, [&](SpoolKey k, const std::string&) {
    keys.push_back(k);
    return true;
  });
  return keys;
}

TEST(SqliteSpool, SyncedResultsSurviveReopenInKeyOrder) {
  test::TempDir dir;
  auto file = dir.path / "spool.db";
  {
    SqliteSpool spool(file, {});
    EXPECT_TRUE(spool.put({2, 1}, "b1"));
    EXPECT_TRUE(spool.put({1, 5}, "a5"));
    EXPECT_TRUE(spool.put({1, 6}, std::string("\0x", 2)));
    spool.sync();
    EXPECT_EQ(spool.erase(1, 6, 6), 1u);
    spool.sync();
  }
  SqliteSpool spool(file, {});
  EXPECT_EQ(spool.size(), 2u);
  auto keys = keys_of(spool);
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0], (SpoolKey{1, 5}));
  EXPECT_EQ(keys[1], (SpoolKey{2, 1}));
  std::string bytes;
  spool.scan({2, 0}, [&](SpoolKey, const std::string& b) {
    bytes = b;
    return false;
  });
  EXPECT_EQ(bytes, "b1");
}

TEST(SqliteSpool, BoundedAndRecordsHistoryWhenAsked) {
  test::TempDir dir;
  SqliteSpool spool(dir.path / "spool.db", SqliteSpoolOptions{2, true});
  EXPECT_TRUE(spool.put({1, 1}, "a"));
  EXPECT_TRUE(spool.put({1, 2}, "b"));
  EXPECT_FALSE(spool.put({1, 3}, "c")) << "full";
  EXPECT_EQ(spool.erase(1, 1, 2), 2u);
  EXPECT_EQ(spool.erase(1, 9, 1), 0u) << "inverted range";
  spool.sync();
  EXPECT_EQ(spool.size(), 0u);
  EXPECT_EQ(spool.last_key(), (SpoolKey{1, 2})) << "history remembers erased keys";
}

// The test's socket as the collector: opens node n1's datagrams, sends acks.
struct FakeCollector : test::LoopbackUdpSocket {
  std::optional<std::pair<wire::Message, sockaddr_in>> receive(const Sealer& key) {
    auto datagram = LoopbackUdpSocket::receive();
    if (!datagram) return std::nullopt;
    auto m = open_from(datagram->first, "n1", key);
    if (!m) return std::nullopt;
    return std::make_pair(std::move(*m), datagram->second);
  }
  void ack(const Sealer& key, std::uint64_t epoch, std::uint64_t first, std::uint64_t last,
           const sockaddr_in& to) {
    wire::Message m;
    m.set_node("n1");
    m.mutable_ack()->set_boot_epoch(epoch);
    auto* r = m.mutable_ack()->add_ranges();
    r->set_first(first);
    r->set_last(last);
    send(seal(m, key), to);
  }
};

wire::Result a_result() {
  wire::Result r;
  r.set_stream("latency/udp/n1/n2");
  r.set_tool("latency");
  r.set_src("n1");
  r.set_dst("n2");
  r.set_status(wire::OK);
  return r;
}

SenderOptions options(std::uint64_t epoch, std::uint16_t port) {
  SenderOptions o;
  o.node = "n1";
  o.key = kKey;
  o.boot_epoch = epoch;
  o.source_address = "127.0.0.1";
  o.collectors = {Endpoint{"127.0.0.1", port}};
  o.initial_backoff_s = 0.2;
  return o;
}

TEST(ResultSender, SendsEarlierEpochsAfterRestartAndErasesOnlyWhatIsAcked) {
  test::TempDir dir;
  auto file = dir.path / "spool.db";
  FakeCollector collector;
  Sealer key{kKey};
  {
    // Epoch 1: three results spooled, never acknowledged, then the "crash".
    EventLoop loop;
    ResultSender sender(loop, options(1, collector.port),
                        std::make_unique<SqliteSpool>(file, SqliteSpoolOptions{}));
    loop.start();
    for (int i = 0; i < 3; ++i) sender.submit(a_result());
    ASSERT_TRUE(test::eventually([&] { return sender.counters().datagrams > 0; }));
    loop.stop();
    loop.join();
  }
  EventLoop loop;
  ResultSender sender(loop, options(2, collector.port),
                      std::make_unique<SqliteSpool>(file, SqliteSpoolOptions{}));
  loop.start();
  sender.submit(a_result());
  std::set<std::pair<std::uint64_t, std::uint64_t>> seen;
  sockaddr_in from{};
  while (seen.size() < 4) {
    auto got = collector.receive(key);
    ASSERT_TRUE(got) << "every spooled result arrives";
    from = got->second;
    for (const auto& r : got->first.results().results())
      seen.emplace(got->first.results().boot_epoch(), r.seq());
  }
  EXPECT_TRUE(seen.count({1, 1}) && seen.count({1, 2}) && seen.count({1, 3}) && seen.count({2, 1}));
  collector.ack(key, 1, 1, 2, from);
  collector.ack(key, 2, 1, 1, from);
  ASSERT_TRUE(test::eventually([&] { return sender.counters().spooled == 1; }));
  // Only (1, 3) is left, and it keeps coming back.
  bool again = false;
  for (int i = 0; i < 20 && !again; ++i) {
    auto got = collector.receive(key);
    ASSERT_TRUE(got);
    for (const auto& r : got->first.results().results())
      if (got->first.results().boot_epoch() == 1 && r.seq() == 3) again = true;
  }
  EXPECT_TRUE(again);
}

TEST(ResultSender, PausesLowerPrioritiesWhenTheSpoolFills) {
  FakeCollector collector;  // never acks
  EventLoop loop;
  // Capacity 100: reserve 5, every stream pauses at 95, lower priorities at 85.5.
  ResultSender sender(loop, options(1, collector.port), std::make_unique<MemorySpool>(100));
  loop.start();
  EXPECT_TRUE(sender.accepting(5));
  EXPECT_TRUE(sender.accepting(1));
  auto fill_to = [&](std::uint64_t n) {
    while (sender.counters().results < n) {
      auto before = sender.counters().results.load();
      sender.submit(a_result());
      ASSERT_TRUE(test::eventually([&] { return sender.counters().results > before; }));
    }
  };
  fill_to(86);
  EXPECT_FALSE(sender.accepting(1)) << "90 % full: lower priority pauses";
  EXPECT_TRUE(sender.accepting(5)) << "the highest priority still runs";
  fill_to(95);
  EXPECT_FALSE(sender.accepting(5)) << "full: everything pauses";
  EXPECT_GE(sender.counters().paused, 2u);
  fill_to(100);  // measurements that were running: kept in the reserve
  EXPECT_EQ(sender.counters().spool_full, 0u);
  sender.submit(a_result());
  ASSERT_TRUE(test::eventually([&] { return sender.counters().spool_full == 1u; }))
      << "beyond the reserve a result is lost, counted and logged";
  loop.stop();
  loop.join();
}

}  // namespace
}  // namespace flexmon::prober
