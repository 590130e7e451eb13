// A real collector on an ephemeral loopback port with a temp SQLite cache.
#include "collector/collector.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/sinks/ringbuffer_sink.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <sstream>

#include <spdlog/sinks/ostream_sink.h>
#include <fstream>

#include "common/log.h"
#include "common/seal.h"
#include "common/sqlite.h"
#include "prober/event_loop.h"
#include "prober/result_sender.h"
#include "prober/spool.h"
#include "storage/cache.h"
#include "storage/seq_window.h"
#include "test_util.h"
#include "tests/storage/cache_rows.h"
#include "wire.pb.h"

namespace flexmon {
namespace {

const std::string kKey1 = "key-of-node-n1-0123456789abcdef";
const std::string kKey2 = "key-of-node-n2-0123456789abcdef";

struct Fixture {
  test::TempDir dir;
  Config config;
  std::unique_ptr<Collector> collector;
  int fd = -1;
  sockaddr_in to{};

  // max_wal_mb: 4 makes a filled WAL file of 20 MiB per test.
  // `adjust` changes the config before the collector starts.
  explicit Fixture(const CollectorTuning& tuning = {}, std::uint32_t max_wal_mb = 4,
                   const std::function<void(Config&)>& adjust = {}) {
    config.collector.listen = Endpoint{"127.0.0.1", 0};
    config.collector.cache_db = dir.path / "cache.db";
    config.collector.max_wal_mb = max_wal_mb;
    config.nodes.push_back(NodeConfig{"n1", "utah", "127.0.0.1", 0, kKey1});
    config.nodes.push_back(NodeConfig{"n2", "utah", "127.0.0.2", 0, kKey2});
    if (adjust) adjust(config);
    collector = start_collector(config, tuning);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    to.sin_port = htons(collector->local_endpoint().port);
  }
  ~Fixture() {
    collector->stop();
    collector->wait();
    close(fd);
  }

  void send(const std::string& datagram) {
    sendto(fd, datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  }

  // The next datagram back, within 10 s.
  std::optional<std::string> receive() {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10'000) != 1) return std::nullopt;
    char buffer[65536];
    ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n < 0) return std::nullopt;
    return std::string(buffer, n);
  }

  std::int64_t stored_rows() {
    return test::count_cache_results(config.collector.cache_db, /*read_only=*/true);
  }

  // Waits until the collector has looked at `n` datagrams.
  bool processed(std::uint64_t n) {
    return test::eventually([&] { return collector->counters().datagrams.load() >= n; });
  }
};

wire::Message batch(const std::string& node, std::uint64_t epoch, std::uint64_t first,
                    std::uint64_t last, const std::string& src) {
  wire::Message m;
  m.set_node(node);
  auto* b = m.mutable_results();
  b->set_boot_epoch(epoch);
  for (auto seq = first; seq <= last; ++seq) {
    auto* r = b->add_results();
    r->set_seq(seq);
    r->set_stream("latency/udp/" + src + "/n2");
    r->set_tool("latency");
    r->set_src(src);
    r->set_dst("n2");
    r->set_start_ns(1'700'000'000'000'000'000 + static_cast<std::int64_t>(seq));
    r->set_status(wire::OK);
    auto* l = r->mutable_latency();
    l->set_sent(2);
    l->set_received(2);
    l->add_rtt_ns(1000);
    l->add_rtt_ns(3000);
    l->set_min_ns(1000);
    l->set_max_ns(3000);
    l->set_avg_ns(2000);
    l->set_median_ns(2000);
    l->set_stddev_ns(1000);
  }
  return m;
}

void expect_ack(const std::optional<std::string>& datagram, std::uint64_t epoch,
                std::uint64_t first, std::uint64_t last) {
  ASSERT_TRUE(datagram) << "no ack";
  auto m = open_from(*datagram, "n1", Sealer(kKey1));
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_TRUE(m->has_ack());
  EXPECT_EQ(m->ack().boot_epoch(), epoch);
  ASSERT_EQ(m->ack().ranges_size(), 1);
  EXPECT_EQ(m->ack().ranges(0).first(), first);
  EXPECT_EQ(m->ack().ranges(0).last(), last);
}

TEST(Collector, StoresASealedBatchThenAcksIt) {
  Fixture f;
  f.send(seal(batch("n1", 3, 1, 5, "n1"), Sealer(kKey1)));
  expect_ack(f.receive(), 3, 1, 5);
  EXPECT_EQ(f.stored_rows(), 5);
  EXPECT_EQ(f.collector->counters().stored.load(), 5u);
  // The datagram's time from queue to ack: it waited for its commit and sync.
  const auto& delay = f.collector->counters().ack_delay;
  EXPECT_EQ(delay.count(), 1u);
  EXPECT_GT(delay.max(), 0);
  auto rows = test::cached_latency(f.config.collector.cache_db);
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0].src, "n1");
  EXPECT_EQ(rows[0].median_ns, 2000);
}

// The WAL is synced before the first ack goes out (synchronous=NORMAL on the
// cache connection: the commit alone does not reach the disk).
TEST(Collector, SyncsTheWalBeforeAcking) {
  Fixture f;
  f.send(seal(batch("n1", 3, 1, 2, "n1"), Sealer(kKey1)));
  expect_ack(f.receive(), 3, 1, 2);
  EXPECT_GE(f.collector->counters().syncs.load(), 1u);
  EXPECT_EQ(f.collector->counters().sync_failures.load(), 0u);
}

// A result the cache refuses (start before 1970) is counted and acked all the
// same: resending cannot make it storable.
TEST(Collector, RefusedResultsAreCountedAndAcked) {
  Fixture f;
  auto m = batch("n1", 1, 1, 3, "n1");
  m.mutable_results()->mutable_results(1)->set_start_ns(-1);
  f.send(seal(m, Sealer(kKey1)));
  expect_ack(f.receive(), 1, 1, 3);
  EXPECT_EQ(f.stored_rows(), 2);
  EXPECT_EQ(f.collector->counters().refused.load(), 1u);
  EXPECT_EQ(f.collector->counters().stored.load(), 2u);
}

TEST(Collector, SameBatchTwiceIsStoredOnceAndAckedTwice) {
  Fixture f;
  auto datagram = seal(batch("n1", 1, 10, 12, "n1"), Sealer(kKey1));
  f.send(datagram);
  expect_ack(f.receive(), 1, 10, 12);
  f.send(datagram);
  expect_ack(f.receive(), 1, 10, 12);
  EXPECT_EQ(f.stored_rows(), 3);
  EXPECT_EQ(f.collector->counters().stored.load(), 3u);
  EXPECT_EQ(f.collector->counters().duplicates.load(), 3u);
  // The same seqs in another boot epoch are other results.
  f.send(seal(batch("n1", 2, 10, 12, "n1"), Sealer(kKey1)));
  expect_ack(f.receive(), 2, 10, 12);
  EXPECT_EQ(f.stored_rows(), 6);
}

TEST(Collector, DedupeSurvivesRestartAndTrimmedResults) {
  auto f = std::make_unique<Fixture>();
  auto datagram = seal(batch("n1", 4, 1, 3, "n1"), Sealer(kKey1));
  f->send(datagram);
  expect_ack(f->receive(), 4, 1, 3);
  // Retention trims the rows; the collector restarts on the same cache.
  {
    sqlite::Database db(f->config.collector.cache_db);
    db.exec("DELETE FROM results");
  }
  f->collector->stop();
  f->collector->wait();
  f->collector = start_collector(f->config);
  f->to.sin_port = htons(f->collector->local_endpoint().port);
  f->send(datagram);
  expect_ack(f->receive(), 4, 1, 3);
  EXPECT_EQ(f->stored_rows(), 0) << "acked again, not stored again";
  EXPECT_EQ(f->collector->counters().duplicates.load(), 3u);
}

TEST(Collector, ResultsOutsideTheWindowAreDroppedNotAcked) {
  Fixture f;
  f.send(seal(batch("n1", 1, kSeqWindow, kSeqWindow, "n1"), Sealer(kKey1)));
  expect_ack(f.receive(), 1, kSeqWindow, kSeqWindow);
  f.send(seal(batch("n1", 1, kSeqWindow + 1, kSeqWindow + 1, "n1"), Sealer(kKey1)));
  ASSERT_TRUE(f.processed(2));
  f.send(seal(batch("n1", 1, 1, 1, "n1"), Sealer(kKey1)));
  expect_ack(f.receive(), 1, 1, 1);  // and no ack for window + 1 came before it
  EXPECT_EQ(f.collector->counters().outside_window.load(), 1u);
  EXPECT_EQ(f.stored_rows(), 2);
}

TEST(Collector, RejectsForgedTruncatedAndMisattributedDatagrams) {
  Fixture f;
  auto good = seal(batch("n1", 1, 1, 2, "n1"), Sealer(kKey1));
  f.send(seal(batch("n1", 1, 1, 2, "n1"), Sealer("a forged key of the right length")));
  f.send(good.substr(0, good.size() / 2));
  f.send("");
  f.send(std::string(500, '\xff'));
  // n2 reports a measurement of n1's: a node reports only its own.
  f.send(seal(batch("n2", 1, 1, 2, "n1"), Sealer(kKey2)));
  // An unknown node.
  f.send(seal(batch("n9", 1, 1, 2, "n9"), Sealer(kKey2)));
  // Not a result batch.
  wire::Message heartbeat;
  heartbeat.set_node("n1");
  heartbeat.mutable_heartbeat()->set_streams(1);
  f.send(seal(heartbeat, Sealer(kKey1)));
  // Seq 0 and epoch 0.
  f.send(seal(batch("n1", 1, 0, 0, "n1"), Sealer(kKey1)));
  f.send(seal(batch("n1", 0, 1, 1, "n1"), Sealer(kKey1)));
  ASSERT_TRUE(f.processed(9));
  EXPECT_EQ(f.stored_rows(), 0);
  const auto& c = f.collector->counters();
  EXPECT_EQ(c.bad_seal.load(), 1u);
  EXPECT_EQ(c.malformed.load() + c.unknown_node.load(), 4u);  // truncated, empty, junk, n9
  EXPECT_EQ(c.not_results.load(), 1u);
  EXPECT_EQ(c.bad_results.load(), 3u);
  EXPECT_EQ(c.acks.load(), 0u);
  // And it still works.
  f.send(good);
  expect_ack(f.receive(), 1, 1, 2);
  EXPECT_EQ(f.stored_rows(), 2);
}

TEST(Collector, ManyDatagramsAreGroupCommitted) {
  Fixture f;
  for (std::uint64_t i = 0; i < 50; ++i)
    f.send(seal(batch("n1", 1, i * 4 + 1, i * 4 + 4, "n1"), Sealer(kKey1)));
  std::set<std::uint64_t> acked;
  while (acked.size() < 200) {
    auto datagram = f.receive();
    ASSERT_TRUE(datagram) << "missing acks; have " << acked.size();
    auto m = open_from(*datagram, "n1", Sealer(kKey1));
    ASSERT_TRUE(m);
    for (const auto& r : m->ack().ranges())
      for (auto s = r.first(); s <= r.last(); ++s) acked.insert(s);
  }
  EXPECT_EQ(f.stored_rows(), 200);
  EXPECT_LE(f.collector->counters().commits.load(), 50u);
}

// A burst waiting behind a long commit is committed in batches of at most
// max_batch_results results (whole datagrams), not in one long transaction
// that every ack of the burst would wait for.
TEST(Collector, ABurstIsCommittedInBoundedBatches) {
  CollectorTuning tuning;
  tuning.max_batch_results = 50;
  Fixture f(tuning);
  {
    // Holds the cache's write lock, so that the writer's first commit waits
    // while the receiver queues the rest of the burst.
    sqlite::Database other(f.config.collector.cache_db);
    other.exec("BEGIN IMMEDIATE");
    for (std::uint64_t i = 0; i < 100; ++i)
      f.send(seal(batch("n1", 1, i * 10 + 1, i * 10 + 10, "n1"), Sealer(kKey1)));
    ASSERT_TRUE(f.processed(100));
    other.exec("COMMIT");
  }
  ASSERT_TRUE(test::eventually([&] { return f.collector->counters().stored.load() == 1000; }));
  // 1000 results, at most 50 (5 datagrams) per commit.
  EXPECT_GE(f.collector->counters().commits.load(), 20u);
}

// Small datagrams wait for company (CollectorTuning::gather_results): forty
// one-result datagrams, each sent once the previous one was read, go into a
// single commit (without the wait, each could be one).
TEST(Collector, SmallDatagramsWaitForCompanyBeforeACommit) {
  CollectorTuning tuning;
  tuning.gather_results = 40;
  tuning.gather_wait = std::chrono::seconds(60);
  Fixture f(tuning);
  for (std::uint64_t seq = 1; seq <= 40; ++seq) {
    f.send(seal(batch("n1", 1, seq, seq, "n1"), Sealer(kKey1)));
    ASSERT_TRUE(f.processed(seq));
  }
  ASSERT_TRUE(test::eventually([&] { return f.collector->counters().stored.load() == 40; }));
  EXPECT_EQ(f.collector->counters().commits.load(), 1u);
}

// The wait is bounded: a datagram alone is committed and acked once it has
// waited gather_wait.
TEST(Collector, ALoneDatagramIsCommittedAfterTheGatherWait) {
  CollectorTuning tuning;
  tuning.gather_results = 1000;
  tuning.gather_wait = std::chrono::milliseconds(50);
  Fixture f(tuning);
  f.send(seal(batch("n1", 1, 1, 3, "n1"), Sealer(kKey1)));
  expect_ack(f.receive(), 1, 1, 3);
  EXPECT_EQ(f.stored_rows(), 3);
}

// Sends results 1..count of node n1, epoch 1, ten per datagram, a hundred
// datagrams at a time, each time waiting until they are stored.
bool store_results(Fixture& f, std::uint64_t count, std::uint64_t from = 1) {
  Sealer sealer(kKey1);
  const std::uint64_t end = from + count - 1;
  for (std::uint64_t first = from; first <= end; first += 1000) {
    std::uint64_t last = std::min(end, first + 999);
    for (auto seq = first; seq <= last; seq += 10)
      f.send(seal(batch("n1", 1, seq, std::min(last, seq + 9), "n1"), sealer));
    if (!test::eventually([&] { return f.collector->counters().stored.load() >= last; }))
      return false;
  }
  return true;
}

std::uintmax_t wal_bytes(const Fixture& f) {
  return std::filesystem::file_size(f.config.collector.cache_db.string() + "-wal");
}

// The writer's connection never checkpoints (SQLite's autocheckpoint would,
// inside a commit, at 1000 WAL frames): with the checkpointer told never to
// run, the WAL holds every commit and the database file stays empty.
TEST(Collector, TheWriterNeverCheckpoints) {
  CollectorTuning tuning;
  tuning.checkpoint_every_frames = 1 << 30;
  tuning.fill_wal = false;  // the WAL's size is what this test reads
  Fixture f(tuning, 65536);
  ASSERT_TRUE(store_results(f, 30'000));
  EXPECT_GT(wal_bytes(f), 1500u * 4096u);  // well past the autocheckpoint's 1000 frames
  EXPECT_LT(std::filesystem::file_size(f.config.collector.cache_db), 64u * 1024u);
  EXPECT_EQ(f.collector->counters().checkpoints.load(), 0u);
}

// The checkpointer copies the WAL into the database file and, once the WAL
// is larger than max_wal_mb, restarts it between two commits: the WAL file
// keeps the size it was filled to while many times that is written.
TEST(Collector, TheCheckpointerKeepsTheWalBounded) {
  CollectorTuning tuning;
  tuning.checkpoint_every_frames = 50;
  // A commit per datagram or few: the WAL outgrows its bound within each
  // wave of store_results (gathered commits write less, and the PASSIVE
  // checkpoints catch up between waves, so no RESTART would be needed).
  tuning.gather_results = 0;
  Fixture f(tuning, 1);
  const std::uintmax_t filled = (1u << 20) + kWalFillMarginBytes;
  EXPECT_EQ(wal_bytes(f), filled);
  ASSERT_TRUE(store_results(f, 40'000));
  const auto& c = f.collector->counters();
  // A slow build (the sanitizers) gathers more results per commit anyway, and
  // the PASSIVE checkpoints may then keep up with a wave: more waves, at most
  // five, until the WAL reached its bound and needed a RESTART (this failed
  // now and then under the sanitizers with one wave).
  std::uint64_t stored = 40'000;
  for (int wave = 1; wave < 5 && c.wal_restarts.load() == 0; ++wave, stored += 40'000)
    ASSERT_TRUE(store_results(f, 40'000, stored + 1));
  EXPECT_GE(c.checkpoints.load(), 1u);
  EXPECT_GE(c.wal_restarts.load(), 1u);
  EXPECT_EQ(c.checkpoint_failures.load(), 0u);
  EXPECT_EQ(wal_bytes(f), filled);
  EXPECT_GT(std::filesystem::file_size(f.config.collector.cache_db), 1u << 20);
  EXPECT_EQ(f.stored_rows(), static_cast<std::int64_t>(stored));
}

// A fresh cache's WAL file is written full at start. A collector that starts
// on a WAL whose frames are not checkpointed (another connection kept it
// from being checkpointed and removed) writes no zero over them: every
// result is still there, and the next collector stores more.
TEST(Collector, FillingTheWalKeepsTheFramesItHolds) {
  CollectorTuning tuning;
  tuning.checkpoint_every_frames = 1 << 30;
  tuning.gather_results = 0;  // small commits: the WAL outgrows its fill soon
  Fixture f(tuning, 1);
  const std::uintmax_t filled = (1u << 20) + kWalFillMarginBytes;
  EXPECT_EQ(wal_bytes(f), filled);
  ASSERT_TRUE(store_results(f, 20'000));
  {
    // A connection that has read holds the WAL open past the collector's close.
    sqlite::Database held_open(f.config.collector.cache_db);
    held_open.exec("SELECT count(*) FROM results");
    f.collector->stop();
    f.collector->wait();
    // Every result is in the WAL only.
    EXPECT_LT(std::filesystem::file_size(f.config.collector.cache_db), 64u * 1024u);
    auto size = wal_bytes(f);
    f.collector = start_collector(f.config);
    f.to.sin_port = htons(f.collector->local_endpoint().port);
    EXPECT_EQ(wal_bytes(f), size);
    EXPECT_EQ(f.stored_rows(), 20'000);
  }
  f.send(seal(batch("n1", 2, 1, 10, "n1"), Sealer(kKey1)));
  EXPECT_TRUE(test::eventually([&] { return f.stored_rows() == 20'010; }));
}

// Tuning that would leave the writer spinning without ever committing is
// refused at start (a batch of at most 0 results took nothing, forever).
TEST(Collector, RefusesTuningThatWouldNeverCommit) {
  test::TempDir dir;
  Config config;
  config.collector.listen = Endpoint{"127.0.0.1", 0};
  config.collector.cache_db = dir.path / "cache.db";
  CollectorTuning tuning;
  tuning.max_batch_results = 0;
  EXPECT_THROW(start_collector(config, tuning), std::invalid_argument);
  tuning = CollectorTuning{};
  tuning.checkpoint_every_frames = 0;
  EXPECT_THROW(start_collector(config, tuning), std::invalid_argument);
}

// The prober's real result sender against the real collector.
TEST(Collector, ProberResultSenderDeliversAndIsAcked) {
  Fixture f;
  prober::EventLoop loop;
  prober::SenderOptions o;
  o.node = "n1";
  o.key = kKey1;
  o.boot_epoch = 4;
  o.source_address = "127.0.0.1";
  o.collectors = {f.collector->local_endpoint()};
  auto sender =
      std::make_unique<prober::ResultSender>(loop, o, std::make_unique<prober::MemorySpool>());
  loop.start();
  auto m = batch("n1", 4, 1, 25, "n1");
  for (const auto& r : m.results().results()) {
    auto copy = r;
    copy.clear_seq();
    sender->submit(copy);
  }
  EXPECT_TRUE(test::eventually([&] { return sender->counters().acked.load() == 25; }));
  EXPECT_EQ(sender->counters().spooled.load(), 0u);
  EXPECT_EQ(f.stored_rows(), 25);
  loop.stop();
  loop.join();
}

// Key rotation at the collector: with keys 1 and 2 of n1 active, a datagram
// under either is stored and acked under the key that sealed it (the prober
// opens acks with its own key only); with key 1 retired, a datagram under it
// is refused, counted as retired_key and not acked.
TEST(Collector, AcceptsEitherActiveKeyAndRefusesARetiredOne) {
  const std::string new_key = "new-key-of-n1-0123456789abcdef";
  {
    Fixture f({}, 4, [&](Config& c) {
      c.nodes[0].key = new_key;
      c.nodes[0].key_id = 2;
      c.nodes[0].keys = {NodeKey{2, new_key, false}, NodeKey{1, kKey1, false}};
    });
    f.send(seal(batch("n1", 1, 1, 2, "n1"), Sealer(kKey1, 1)));
    expect_ack(f.receive(), 1, 1, 2);  // opened with key 1
    f.send(seal(batch("n1", 1, 3, 4, "n1"), Sealer(new_key, 2)));
    auto ack = f.receive();
    ASSERT_TRUE(ack);
    auto m = open_from(*ack, "n1", Sealer(new_key, 2));
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ(m->ack().ranges(0).first(), 3u);
    EXPECT_EQ(f.stored_rows(), 4);

    // Key 1 retired: refused, counted, not acked; key 2 still works.
    f.collector->stop();
    f.collector->wait();
    f.config.nodes[0].keys[1].retired = true;
    f.collector = start_collector(f.config);
    f.to.sin_port = htons(f.collector->local_endpoint().port);
    f.send(seal(batch("n1", 1, 5, 5, "n1"), Sealer(kKey1, 1)));
    f.send(seal(batch("n1", 1, 6, 6, "n1"), Sealer(new_key, 2)));
    ack = f.receive();
    ASSERT_TRUE(ack);
    m = open_from(*ack, "n1", Sealer(new_key, 2));
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ(m->ack().ranges(0).first(), 6u) << "the datagram under key 1 is not acked";
    EXPECT_EQ(f.collector->counters().retired_key.load(), 1u);
    EXPECT_EQ(f.collector->counters().bad_seal.load(), 0u);
    EXPECT_EQ(f.stored_rows(), 5);
  }
}

// Item 9 of issue 14: a node name with a newline in a datagram is logged
// escaped; before, it wrote a line of its own into the collector's log.
TEST(Collector, NodeNameWithANewlineIsLoggedEscaped) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto log = logger("collector");
  log->sinks().push_back(sink);
  {
    Fixture f;
    f.send(seal(batch("n1\n2026-12-04T00:00:00Z collector info: FORGED", 1, 1, 1, "n1"),
                Sealer(kKey1)));
    ASSERT_TRUE(test::eventually([&] { return f.collector->counters().unknown_node.load() == 1; }));
  }
  log->sinks().pop_back();
  const std::string text = out.str();
  EXPECT_NE(text.find("unknown node 'n1\\x0a2026-12-04T00:00:00Z collector info: FORGED'"),
            std::string::npos)
      << text;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    EXPECT_NE(line.rfind("2026-12-04T00:00:00Z collector info: FORGED", 0), 0u) << line;
}

// Sets or clears the immutable attribute (chattr) of `files`; false if chattr
// failed (not root, or a file system without the attribute).
bool set_immutable(const std::vector<std::filesystem::path>& files, bool immutable) {
  std::string command = immutable ? "chattr +i" : "chattr -i";
  for (const auto& f : files) command += " '" + f.string() + "'";
  return std::system((command + " 2>/dev/null").c_str()) == 0;
}

// Whether chattr +i works here (root, and a file system that has it).
std::string why_no_chattr(const std::filesystem::path& dir) {
  if (geteuid() != 0) return "chattr +i needs root";
  auto probe = dir / "chattr-probe";
  std::ofstream(probe) << "x";
  if (!set_immutable({probe}, true))
    return "chattr +i does not work on " + dir.string() + " (file system without it?)";
  set_immutable({probe}, false);
  return {};
}

// The cache's files made immutable for the guard's life.
struct ImmutableCache {
  std::vector<std::filesystem::path> files;
  explicit ImmutableCache(const std::filesystem::path& cache)
      : files{cache, cache.string() + "-wal", cache.string() + "-shm"} {
    EXPECT_TRUE(set_immutable(files, true));
    // Writes back the -shm's dirty pages, so that the kernel write-protects
    // them: the next write there goes through ext4's page_mkwrite, which
    // refuses an immutable file with SIGBUS (what killed the collector).
    int fd = ::open(files[2].c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::fsync(fd), 0);
    ::close(fd);
  }
  ~ImmutableCache() { set_immutable(files, false); }
};

// Regression: with the cache's files made immutable under a running
// collector (chattr +i), the collector died of SIGBUS in SQLite's mapping of
// cache.db-shm, without a log line. It now says so, stores and acknowledges
// nothing while it lasts (the prober keeps its spool), and once the files can
// be written again every result arrives, each stored once.
TEST(Collector, KeepsRunningWhileTheCacheCannotBeWrittenAndLosesNothing) {
  test::TempDir probe_dir;
  if (auto why = why_no_chattr(probe_dir.path); !why.empty()) GTEST_SKIP() << why;
  auto lines = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  logger("collector")->sinks().push_back(lines);
  auto logged = [&](const std::string& text) {
    for (const auto& line : lines->last_formatted())
      if (line.find(text) != std::string::npos) return true;
    return false;
  };
  Fixture f;
  test::TempDir spool_dir;
  prober::EventLoop loop;
  prober::SenderOptions o;
  o.node = "n1";
  o.key = kKey1;
  o.boot_epoch = 7;
  o.source_address = "127.0.0.1";
  o.collectors = {f.collector->local_endpoint()};
  o.initial_backoff_s = 0.1;
  o.max_backoff_s = 0.5;
  auto sender = std::make_unique<prober::ResultSender>(
      loop, o,
      std::make_unique<prober::SqliteSpool>(spool_dir.path / "spool.db",
                                            prober::SqliteSpoolOptions{100'000, false}));
  loop.start();
  auto results = batch("n1", 7, 1, 40, "n1");
  auto submit = [&](int first, int last) {
    for (int i = first; i <= last; ++i) {
      auto copy = results.results().results(i - 1);
      copy.clear_seq();
      loop.post([&sender, copy] { sender->submit(copy); });
    }
  };
  submit(1, 20);
  ASSERT_TRUE(test::eventually([&] { return sender->counters().acked.load() == 20; }));
  {
    ImmutableCache immutable(f.config.collector.cache_db);
    submit(21, 40);
    // Sent, refused, sent again and refused again: the collector lives on.
    ASSERT_TRUE(
        test::eventually([&] { return f.collector->counters().unwritable_datagrams.load() >= 2; },
                         std::chrono::seconds(30)));
    EXPECT_TRUE(logged("collector: cannot write the cache (sqlite: not writing: " +
                       f.config.collector.cache_db.string() + " is immutable (chattr +i))"));
    EXPECT_EQ(sender->counters().acked.load(), 20u);
    EXPECT_EQ(sender->counters().spooled.load(), 20u);
    EXPECT_EQ(f.collector->counters().commit_failures.load(), 0u);
  }
  ASSERT_TRUE(test::eventually([&] { return sender->counters().acked.load() == 40; },
                               std::chrono::seconds(60)));
  EXPECT_EQ(sender->counters().spooled.load(), 0u);
  EXPECT_TRUE(logged("collector: the cache can be written again after"));
  loop.stop();
  loop.join();
  auto rows = test::cached_latency(f.config.collector.cache_db);
  EXPECT_EQ(rows.size(), 40u);
  EXPECT_EQ(f.stored_rows(), 40);
  logger("collector")->sinks().pop_back();
}

}  // namespace
}  // namespace flexmon
