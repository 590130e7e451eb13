#include "storage/cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "common/config.h"
#include "common/sqlite.h"
#include "storage/archive.h"
#include "storage/flusher.h"
#include "storage/reader.h"
#include "tests/storage/cache_rows.h"
#include "wire.pb.h"

namespace flexmon {
namespace {

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("flexmon-cache-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static wire::Result latency(std::uint64_t seq, const std::string& src, const std::string& dst,
                              UtcNs start, std::vector<std::int64_t> rtts) {
    wire::Result r;
    r.set_seq(seq);
    r.set_stream("latency/udp/" + src + ">" + dst);
    r.set_tool("latency");
    r.set_src(src);
    r.set_dst(dst);
    r.set_start_ns(start);
    auto* l = r.mutable_latency();
    l->set_sent(static_cast<std::uint32_t>(rtts.size()));
    std::uint32_t received = 0;
    for (auto rtt : rtts) {
      l->add_rtt_ns(rtt);
      if (rtt >= 0) ++received;
    }
    l->set_received(received);
    r.set_status(received > 0 ? wire::OK : wire::TIMEOUT);
    if (received > 0) {
      l->set_min_ns(100);
      l->set_avg_ns(150);
      l->set_median_ns(150);
      l->set_max_ns(200);
      l->set_stddev_ns(50);
    }
    return r;
  }

  // Stores results 1..count of node n1, then stamps each as committed at
  // stamp(id): the clock as the collector would have read it.
  void store_committed(int count, const std::function<UtcNs(std::int64_t id)>& stamp) {
    {
      Cache cache(dir_ / "cache.db");
      std::vector<wire::Result> results;
      for (int seq = 1; seq <= count; ++seq)
        results.push_back(latency(static_cast<std::uint64_t>(seq), "n1", "n2", seq, {100}));
      std::vector<const wire::Result*> batch;
      for (const auto& r : results) batch.push_back(&r);
      ASSERT_EQ(cache.store("n1", 1, batch).stored, static_cast<std::size_t>(count));
    }
    sqlite::Database db(dir_ / "cache.db");
    auto update = db.prepare("UPDATE results SET committed_ns = ?2 WHERE id = ?1");
    for (std::int64_t id = 1; id <= count; ++id) update.bind(1, id).bind(2, stamp(id)).run();
  }

  // Results of the cache that are in the archive, by their cache id.
  std::vector<std::int64_t> archived_ids() {
    sqlite::Database archive(dir_ / "archive.db");
    auto select = archive.prepare("SELECT id FROM results ORDER BY id");
    std::vector<std::int64_t> ids;
    while (select.step()) ids.push_back(select.int64(0));
    return ids;
  }

  Config flush_config(double horizon_s) {
    Config config;
    config.collector.cache_db = dir_ / "cache.db";
    config.archive.sqlite_db = dir_ / "archive.db";
    config.archive.horizon_s = horizon_s;
    config.archive.retention_s = 0;  // every archived row may go at once
    return config;
  }

  static std::vector<std::int64_t> ids(std::int64_t first, std::int64_t last) {
    std::vector<std::int64_t> out;
    for (std::int64_t id = first; id <= last; ++id) out.push_back(id);
    return out;
  }

  static constexpr std::int64_t kMinute = 60'000'000'000;
  std::filesystem::path dir_;
};

TEST_F(CacheTest, StoresOnceAndCountsDuplicates) {
  Cache cache(dir_ / "cache.db");
  auto a = latency(1, "n1", "n2", 1000, {100, 200});
  auto b = latency(2, "n1", "n3", 2000, {-1, -1});
  auto first = cache.store("n1", 7, {&a, &b});
  EXPECT_EQ(first.stored, 2u);
  EXPECT_EQ(first.duplicates, 0u);
  auto again = cache.store("n1", 7, {&a, &b});
  EXPECT_EQ(again.stored, 0u);
  EXPECT_EQ(again.duplicates, 2u);
  // The same seq in another boot epoch is another result.
  auto next_epoch = cache.store("n1", 8, {&a});
  EXPECT_EQ(next_epoch.stored, 1u);
  EXPECT_EQ(test::count_cache_results(dir_ / "cache.db"), 3);
}

// Many results go in statements of many rows; each row must come back as the
// one-row statement writes it, and duplicates inside such a statement must be
// counted, not stored.
TEST_F(CacheTest, ManyRowsPerStatementStoreEveryColumnAndCountDuplicates) {
  Cache cache(dir_ / "cache.db");
  std::vector<wire::Result> results;
  for (std::uint64_t seq = 1; seq <= 100; ++seq)
    results.push_back(latency(seq, "n1", "n" + std::to_string(2 + seq % 3),
                              static_cast<UtcNs>(seq) * 1000,
                              {static_cast<std::int64_t>(seq), -1, 7}));
  std::vector<const wire::Result*> first, second;
  for (std::size_t i = 0; i < 40; ++i) first.push_back(&results[i]);
  // Alternating old and new, so that every statement mixes both.
  for (std::size_t i = 0; i < 80; ++i) second.push_back(&results[i % 2 == 0 ? i / 2 : 40 + i / 2]);
  for (std::size_t i = 80; i < 100; ++i) second.push_back(&results[i]);
  EXPECT_EQ(cache.store("n1", 1, first).stored, 40u);
  auto outcome = cache.store("n1", 1, second);
  EXPECT_EQ(outcome.stored, 60u);
  EXPECT_EQ(outcome.duplicates, 40u);
  EXPECT_EQ(test::count_cache_results(dir_ / "cache.db"), 100);
  auto rows = test::cached_latency(dir_ / "cache.db");
  ASSERT_EQ(rows.size(), 100u);
  for (const auto& row : rows) {
    auto seq = static_cast<std::int64_t>(row.start_ns / 1000);
    EXPECT_EQ(row.src, "n1");
    EXPECT_EQ(row.dst, "n" + std::to_string(2 + seq % 3));
    EXPECT_EQ(row.status, "ok");
    EXPECT_EQ(row.sent, 3);
    EXPECT_EQ(row.received, 2);
    EXPECT_EQ(row.median_ns, 150);
    EXPECT_EQ(row.rtts_ns, (std::vector<std::int64_t>{seq, -1, 7}));
  }
}

TEST_F(CacheTest, QueryFiltersAndOrders) {
  Cache cache(dir_ / "cache.db");
  auto r1 = latency(1, "n1", "n2", 1000, {100, 200});
  auto r2 = latency(2, "n1", "n2", 3000, {100, -1});
  auto r3 = latency(3, "n1", "n3", 2000, {-1});
  cache.store("n1", 1, {&r1, &r2, &r3});

  // Read as the product reads: through storage's ResultReader.
  Config config;
  config.collector.cache_db = dir_ / "cache.db";
  config.archive.sqlite_db = dir_ / "archive.db";
  ResultReader reader(config);
  auto read = [&](const ResultFilter& filter, std::uint32_t limit = 1000,
                  bool latest_per_path = false) {
    PageQuery query;
    query.filter = filter;
    query.filter.tool = Tool::kLatency;
    query.limit = limit;
    query.latest_per_path = latest_per_path;
    auto page = reader.results(query);
    EXPECT_TRUE(page.ok()) << (page.ok() ? "" : page.error().message);
    return page.ok() ? page->rows : std::vector<ResultRow>{};
  };

  auto all = read({});
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].start_ns, 3000);  // newest first
  EXPECT_EQ(test::decode_rtts(all[0].rtts), (std::vector<std::int64_t>{100, -1}));
  EXPECT_EQ(all[0].received, 1);

  ResultFilter path;
  path.src = "n1";
  path.dst = "n3";
  auto only = read(path);
  ASSERT_EQ(only.size(), 1u);
  EXPECT_EQ(only[0].status, "timeout");
  EXPECT_FALSE(only[0].rtt_min_ns.has_value());

  ResultFilter window;
  window.from = 1000;
  window.to = 3000;
  EXPECT_EQ(read(window).size(), 2u);

  auto newest = read({}, 1000, /*latest_per_path=*/true);
  ASSERT_EQ(newest.size(), 2u);
  EXPECT_EQ(newest[0].start_ns, 3000);
  EXPECT_EQ(newest[1].start_ns, 2000);

  EXPECT_EQ(read({}, /*limit=*/1).size(), 1u);
}

// Connections that open a new file at the same moment (the flush and a
// reader opening a new archive, the collector and the manager a new cache)
// all find its schema, though one of them applies it between the others'
// looks at the file's version and at its tables.
TEST_F(CacheTest, ConnectionsOpeningANewFileTogetherAllFindItsSchema) {
  constexpr int kRounds = 50;
  constexpr int kConnections = 4;
  for (int round = 0; round < kRounds; ++round) {
    const auto file = dir_ / fmt::format("new-{}.db", round);
    std::latch start(kConnections);
    std::vector<std::string> failures(kConnections);
    std::vector<std::thread> connections;
    for (int i = 0; i < kConnections; ++i)
      connections.emplace_back([&, i] {
        start.arrive_and_wait();
        try {
          storage::open_cache_db(file);
        } catch (const std::exception& e) {
          failures[static_cast<std::size_t>(i)] = e.what();
        }
      });
    for (auto& c : connections) c.join();
    for (const auto& failure : failures) ASSERT_EQ(failure, "") << "round " << round;
  }
}

// A file that is not SQLite's is refused with an error that names it, and
// the connection opened on it is closed (the sanitizer build finds a leak).
TEST_F(CacheTest, AFileThatIsNotADatabaseIsRefusedByName) {
  const auto file = dir_ / "notes.txt";
  std::ofstream(file) << "not a database, and longer than a header would need to be";
  try {
    Cache cache(file);
    ADD_FAILURE() << "a text file was opened as a cache";
  } catch (const sqlite::SqliteError& e) {
    EXPECT_NE(std::string(e.what()).find("not a database"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
  }
}

TEST_F(CacheTest, SurvivesReopen) {
  {
    Cache cache(dir_ / "cache.db");
    auto r = latency(1, "n2", "n1", 5, {42});
    cache.store("n2", 1, {&r});
  }
  Cache reopened(dir_ / "cache.db");
  EXPECT_EQ(test::count_cache_results(dir_ / "cache.db"), 1);
  EXPECT_EQ(test::cached_latency(dir_ / "cache.db", /*read_only=*/true).at(0).rtts_ns,
            std::vector<std::int64_t>{42});
}

// Caches written before 2026-11-30 (schema version 1 all the same) have an
// index on committed_ns; opening one for writing drops it and keeps the rows.
TEST_F(CacheTest, OpeningAnOldCacheDropsTheCommitIndex) {
  {
    Cache cache(dir_ / "cache.db");
    auto r = latency(1, "n1", "n2", 5, {42});
    cache.store("n1", 1, {&r});
    cache.database().exec("CREATE INDEX results_by_commit ON results (committed_ns)");
  }
  Cache reopened(dir_ / "cache.db");
  auto index = reopened.database().prepare(
      "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'results_by_commit'");
  index.step();
  EXPECT_EQ(index.int64(0), 0);
  auto version = reopened.database().prepare("PRAGMA user_version");
  version.step();
  EXPECT_EQ(version.int64(0), 1);
  auto r = latency(2, "n1", "n2", 6, {43});
  EXPECT_EQ(reopened.store("n1", 1, {&r}).stored, 1u);
  EXPECT_EQ(test::count_cache_results(dir_ / "cache.db"), 2);
}

// The flush takes every row committed before the horizon and none after,
// found by id: retention's gaps anywhere in the ids do not mislead it.
TEST_F(CacheTest, FlushHorizonFindsTheLastRowCommittedBeforeItAcrossGaps) {
  UtcNs now = utc_now_ns();
  // Row id committed (100 - id) minutes ago: rows 1..49 are older than 50.5.
  store_committed(100, [&](std::int64_t id) { return now - (100 - id) * kMinute; });
  {
    sqlite::Database db(dir_ / "cache.db");
    db.exec("DELETE FROM results WHERE id BETWEEN 40 AND 55 OR id IN (1, 2, 3, 38)");
  }
  auto report = flush_once(flush_config(50.5 * 60));
  ASSERT_TRUE(report.archive_ok) << report.error;
  std::vector<std::int64_t> expected = ids(4, 37);
  expected.push_back(39);
  EXPECT_EQ(archived_ids(), expected);
  EXPECT_EQ(report.lag.archived_id, 39);
  EXPECT_EQ(report.lag.rows, 45);  // 56..100
}

// A realtime clock that ran an hour ahead and was stepped back leaves ids
// whose committed_ns is not in order. The flush never takes a row that is
// not committed, retention never deletes a row that is not archived, and
// once the clock has passed the stamps of the step, every row is flushed.
TEST_F(CacheTest, FlushAfterTheClockSteppedBackFlushesEveryRowOnceItPassed) {
  UtcNs now = utc_now_ns();
  store_committed(100, [&](std::int64_t id) {
    if (id <= 30) return now - 3 * 60 * kMinute;  // before the clock ran ahead
    if (id <= 60) return now + 60 * kMinute;      // while it was an hour ahead
    return now - 30 * kMinute;                    // after it was stepped back
  });
  auto early = flush_once(flush_config(3600));
  ASSERT_TRUE(early.archive_ok) << early.error;
  EXPECT_EQ(archived_ids(), ids(1, 30));
  EXPECT_EQ(early.deleted, 30);
  EXPECT_EQ(early.lag.rows, 70);
  // Three hours later (the stamps moved back instead of the clock forward).
  {
    sqlite::Database db(dir_ / "cache.db");
    db.exec(fmt::format("UPDATE results SET committed_ns = committed_ns - {}", 180 * kMinute));
  }
  auto later = flush_once(flush_config(3600));
  ASSERT_TRUE(later.archive_ok) << later.error;
  EXPECT_EQ(archived_ids(), ids(1, 100));
  EXPECT_EQ(later.lag.rows, 0);
  EXPECT_EQ(test::count_cache_results(dir_ / "cache.db"), 0);
}

// chattr +i / -i on `files`; false when it failed.
bool set_immutable(const std::vector<std::filesystem::path>& files, bool immutable) {
  std::string command = immutable ? "chattr +i" : "chattr -i";
  for (const auto& f : files) command += " '" + f.string() + "'";
  return std::system((command + " 2>/dev/null").c_str()) == 0;
}

// Makes the database's three files immutable, then writes back the -shm's
// pages: the kernel write-protects them, and SQLite's next write to one is
// a SIGBUS (ext4's page_mkwrite refuses an immutable file). Clears it again
// at destruction. `supported` is false when chattr does not work here.
struct Immutable {
  std::vector<std::filesystem::path> files;
  bool supported = false;
  explicit Immutable(const std::filesystem::path& db)
      : files{db, db.string() + "-wal", db.string() + "-shm"} {
    if (geteuid() != 0 || !set_immutable(files, true)) return;
    supported = true;
    int fd = ::open(files[2].c_str(), O_RDONLY | O_CLOEXEC);
    ::fsync(fd);
    ::close(fd);
  }
  ~Immutable() {
    if (supported) set_immutable(files, false);
  }
};

// Regression (the collector's SIGBUS, and the manager's reader's): nothing
// begins on a database whose files cannot be written, since even a read may
// write its -shm; the error names the file.
TEST_F(CacheTest, NothingBeginsWhileTheFilesCannotBeWritten) {
  auto file = dir_ / "cache.db";
  Config config;
  config.collector.cache_db = file;
  config.archive.sqlite_db = dir_ / "archive.db";
  Cache cache(file);
  auto r = latency(1, "n1", "n2", 1'700'000'000'000'000'000, {100});
  cache.store("n1", 1, {&r});
  ResultReader reader(config);
  ASSERT_TRUE(reader.results(PageQuery{}));
  auto r2 = latency(2, "n1", "n2", 1'700'000'001'000'000'000, {100});
  cache.store("n1", 1, {&r2});  // a new WAL frame: the next read takes a new read mark
  Immutable immutable(file);
  if (!immutable.supported) GTEST_SKIP() << "chattr +i needs root and a file system that has it";
  const std::string why = file.string() + " is immutable (chattr +i)";
  try {
    cache.store("n1", 1, {&r});
    ADD_FAILURE() << "stored";
  } catch (const sqlite::UnwritableError& e) {
    EXPECT_EQ(std::string(e.what()), "sqlite: not writing: " + why);
  }
  auto page = reader.results(PageQuery{});
  ASSERT_FALSE(page);
  EXPECT_EQ(page.error().message,
            "the cache cannot be read while its files cannot be written: " + why);
  EXPECT_THROW(Cache{file}, sqlite::UnwritableError);
  EXPECT_THROW(flush_once(config), sqlite::UnwritableError);
  EXPECT_EQ(sqlite::unwritable_reason(dir_ / "absent.db"), "");
}

// What is left: a write between Database::unwritable()'s check and SQLite's
// write to the -shm. It ends the process at once with a line naming the
// file (and EX_IOERR), not a silent SIGBUS.
TEST_F(CacheTest, ASigbusInTheShmEndsTheProcessNamingTheFile) {
  auto file = dir_ / "race.db";
  {
    for (const char* name : {"probe", "probe-wal", "probe-shm"}) std::ofstream(dir_ / name) << "x";
    Immutable probe(dir_ / "probe");
    if (!probe.supported) GTEST_SKIP() << "chattr +i needs root and a file system that has it";
  }
  {
    sqlite::Database probe(file);
    probe.exec("CREATE TABLE t (x)");
  }
  GTEST_FLAG_SET(death_test_style, "fast");  // the child's files are the parent's to clean
  EXPECT_EXIT(
      {
        sqlite::Database db(file);
        sqlite3_exec(db.handle(), "PRAGMA wal_autocheckpoint=0", nullptr, nullptr, nullptr);
        db.exec("INSERT INTO t VALUES (1)");
        Immutable immutable(file);
        // Past the check, as if the file changed just after it.
        sqlite3_exec(db.handle(), "SELECT COUNT(*) FROM t", nullptr, nullptr, nullptr);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(sqlite::kExitMappedFileFault),
      "cache_test: SIGBUS writing 0x[0-9a-f]+ in .*race\\.db-shm, a file memory-mapped by SQLite");
  set_immutable({file, file.string() + "-wal", file.string() + "-shm"}, false);
}

}  // namespace
}  // namespace flexmon
