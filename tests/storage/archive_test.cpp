// The storage layer against real databases: SQLite archive always, and a real
// PostgreSQL cluster started by scripts/pg-test-cluster (CTest fixture
// `postgres`); without one, the PostgreSQL cases skip and say why.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "common/config.h"
#include "common/sqlite.h"
#include "storage/archive.h"
#include "storage/cache.h"
#include "storage/flusher.h"
#include "storage/reader.h"
#include "storage/weekly_dump.h"
#include "tests/storage/cache_rows.h"
#include "wire.pb.h"

namespace flexmon {
namespace {

std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The test cluster's connection string, or why there is none.
std::string pg_base(std::string& why) {
  const char* dir = std::getenv("FLEXMON_TEST_PG_DIR");
  if (!dir) {
    why = "FLEXMON_TEST_PG_DIR is not set (run through ctest, which starts the cluster)";
    return "";
  }
  if (std::filesystem::exists(std::filesystem::path(dir) / "unavailable")) {
    why = "no PostgreSQL: " + slurp(std::filesystem::path(dir) / "unavailable");
    return "";
  }
  std::string conninfo = slurp(std::filesystem::path(dir) / "conninfo");
  while (!conninfo.empty() && conninfo.back() == '\n') conninfo.pop_back();
  if (conninfo.empty()) why = std::string("no conninfo in ") + dir;
  return conninfo;
}

// Runs SQL on PostgreSQL; returns the first column of every row.
std::vector<std::string> pg(const std::string& conninfo, const std::string& sql,
                            std::string* error = nullptr) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  std::vector<std::string> out;
  PGresult* result = PQexec(conn, sql.c_str());
  auto status = PQresultStatus(result);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    if (error)
      *error = PQerrorMessage(conn);
    else
      ADD_FAILURE() << sql << ": " << PQerrorMessage(conn);
  }
  for (int i = 0; i < PQntuples(result); ++i) out.push_back(PQgetvalue(result, i, 0));
  PQclear(result);
  PQfinish(conn);
  return out;
}

wire::Result make_result(std::uint64_t seq, const std::string& src, const std::string& dst,
                         UtcNs start, const std::string& tool = "latency") {
  wire::Result r;
  r.set_seq(seq);
  r.set_stream(tool + "/" + src + ">" + dst);
  r.set_tool(tool);
  r.set_src(src);
  r.set_dst(dst);
  r.set_start_ns(start);
  r.set_status(wire::OK);
  if (tool == "latency") {
    auto* l = r.mutable_latency();
    l->set_sent(3);
    l->set_received(2);
    l->add_rtt_ns(1'000'000 + static_cast<std::int64_t>(seq % 7) * 1000);
    l->add_rtt_ns(-1);
    l->add_rtt_ns(2'000'000);
    l->set_min_ns(1'000'000);
    l->set_avg_ns(1'500'000);
    l->set_median_ns(1'500'000);
    l->set_max_ns(2'000'000);
    l->set_stddev_ns(500'000);
  } else if (tool == "abw") {
    auto* a = r.mutable_abw();
    a->set_estimate_bps(9.5e8);
    a->set_lower_bps(9e8);
    a->set_upper_bps(1e9);
    a->set_bytes_sent(123456);
    a->set_duration_ns(20'000'000);
  } else {
    auto* t = r.mutable_throughput();
    t->set_throughput_bps(4.25e8);
    t->set_bytes_sent(999);
    t->set_duration_ns(5'000'000'000);
  }
  return r;
}

constexpr UtcNs kMonday = 1'779'667'200'000'000'000;  // 2026-05-25T00:00:00Z, a Monday
constexpr std::int64_t kSecond = 1'000'000'000;

class StorageTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("flexmon-storage-{}-{}", ::getpid(), counter_++);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_.collector.cache_db = dir_ / "cache.db";
    config_.archive.sqlite_db = dir_ / "archive.db";
    config_.archive.horizon_s = 0;
    config_.archive.retention_s = 1e9;
    config_.nodes = {NodeConfig{"n1", "utah", "", 0, ""}, NodeConfig{"n2", "utah", "", 0, ""},
                     NodeConfig{"n3", "mit", "", 0, ""}};
    if (GetParam() == "postgres") {
      std::string why;
      base_ = pg_base(why);
      if (base_.empty()) GTEST_SKIP() << why;
      db_ = fmt::format("flexmon_t{}_{}", ::getpid(), counter_);
      pg(base_, "DROP DATABASE IF EXISTS " + db_);
      pg(base_, "CREATE DATABASE " + db_);
      config_.archive.postgres =
          std::regex_replace(base_, std::regex("dbname=\\S+"), "dbname=" + db_);
    }
  }
  void TearDown() override {
    if (!db_.empty()) pg(base_, "DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    std::filesystem::remove_all(dir_);
  }

  // Stores `count` results from node n1 (epoch 1), over several paths and tools.
  void store(int count, std::uint64_t first_seq = 1, UtcNs start = kMonday + kSecond) {
    Cache cache(config_.collector.cache_db);
    std::vector<wire::Result> results;
    const char* tools[] = {"latency", "latency", "abw", "throughput"};
    const char* dsts[] = {"n2", "n3"};
    for (int i = 0; i < count; ++i) {
      std::uint64_t seq = first_seq + static_cast<std::uint64_t>(i);
      results.push_back(make_result(seq, "n1", dsts[seq % 2],
                                    start + static_cast<UtcNs>(seq) * kSecond, tools[seq % 4]));
    }
    for (std::size_t i = 0; i < results.size(); i += 500) {
      std::vector<const wire::Result*> batch;
      for (std::size_t j = i; j < std::min(results.size(), i + 500); ++j)
        batch.push_back(&results[j]);
      cache.store("n1", 1, batch);
    }
  }

  // The archive's result keys "node/epoch/seq", sorted, with duplicates kept.
  std::vector<std::string> archive_keys() {
    std::vector<std::string> keys;
    std::string sql = "SELECT node || '/' || boot_epoch || '/' || seq FROM results ORDER BY 1";
    if (!config_.archive.postgres.empty()) return pg(config_.archive.postgres, sql);
    sqlite::Database db(config_.archive.sqlite_db);
    auto select = db.prepare(sql);
    while (select.step()) keys.push_back(select.text(0));
    return keys;
  }

  std::vector<std::string> expected_keys(int count, int first = 1) {
    std::vector<std::string> keys;
    for (int i = first; i < first + count; ++i) keys.push_back(fmt::format("n1/1/{}", i));
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  static inline int counter_ = 0;
  std::filesystem::path dir_;
  Config config_;
  std::string base_, db_;
};

INSTANTIATE_TEST_SUITE_P(Archive, StorageTest, ::testing::Values("sqlite", "postgres"));

TEST_P(StorageTest, FlushArchivesEachRowOnceThenRetentionTrims) {
  store(1000);
  auto first = flush_once(config_);
  ASSERT_TRUE(first.archive_ok) << first.error;
  EXPECT_EQ(first.rows, 1000);
  EXPECT_EQ(first.lag.rows, 0);
  auto again = flush_once(config_);
  EXPECT_EQ(again.rows, 0);
  EXPECT_EQ(archive_keys(), expected_keys(1000));
  // Nothing is old enough for retention yet; with retention 0 every flushed row goes.
  EXPECT_EQ(test::count_cache_results(config_.collector.cache_db), 1000);
  config_.archive.retention_s = 0;
  auto trimmed = flush_once(config_);
  EXPECT_EQ(trimmed.deleted, 1000);
  EXPECT_EQ(test::count_cache_results(config_.collector.cache_db), 0);
  EXPECT_EQ(archive_keys(), expected_keys(1000));
}

// The PostgreSQL flush writes each path's rows of a chunk together, oldest
// first: a one-path query then reads a few heap pages per flush, not one per row.
TEST_P(StorageTest, PostgresFlushWritesEachPathTogetherInTimeOrder) {
  if (GetParam() != "postgres") GTEST_SKIP() << "the SQLite archive keeps the cache's order";
  store(1000);  // paths n1>n2 and n1>n3 alternate
  ASSERT_TRUE(flush_once(config_).archive_ok);
  auto heap = pg(config_.archive.postgres,
                 "SELECT src || '>' || dst || ' ' || start_ns FROM results ORDER BY ctid");
  ASSERT_EQ(heap.size(), 1000u);
  int runs = 0;
  std::string path, last_start;
  for (const auto& line : heap) {
    auto space = line.find(' ');
    std::string this_path = line.substr(0, space), start = line.substr(space + 1);
    if (this_path != path) {
      ++runs;
      path = this_path;
    } else {
      EXPECT_LT(last_start, start) << path;  // same digit count: text order is numeric order
    }
    last_start = start;
  }
  EXPECT_EQ(runs, 2);
}

TEST_P(StorageTest, HorizonKeepsRecentRowsInTheCache) {
  store(10);
  config_.archive.horizon_s = 3600;
  auto report = flush_once(config_);
  ASSERT_TRUE(report.archive_ok) << report.error;
  EXPECT_EQ(report.rows, 0);
  EXPECT_EQ(report.lag.rows, 10);
  EXPECT_EQ(flush_lag(config_).rows, 10);
}

// A flush SIGKILLed at every named point, and at random moments, then run
// again: the archive holds every row exactly once.
TEST_P(StorageTest, FlushKilledAnywhereThenRerunGivesTheSameRows) {
  const int total = 6000;
  store(total);
  config_.archive.flush_batch_rows = 1000;
  config_.archive.retention_s = 0;  // retention runs too, and must never lose a row
  auto kill_at = [&](const std::string& point, int occurrence) {
    pid_t child = ::fork();
    if (child == 0) {
      int seen = 0;
      flush_once(config_, [&](std::string_view at) {
        if (at == point && ++seen == occurrence) ::raise(SIGKILL);
      });
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
  };
  for (const char* point : {"after_partitions", "after_copy", "before_archive_commit",
                            "after_archive_commit", "after_cache_mark"})
    kill_at(point, 1);
  std::mt19937 random(42);
  for (int i = 0; i < 4; ++i) {
    pid_t child = ::fork();
    if (child == 0) {
      flush_once(config_);
      ::_exit(0);
    }
    ::usleep(std::uniform_int_distribution<unsigned>(0, 30'000)(random));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
  }
  // More rows arrive meanwhile; then a clean flush.
  store(500, total + 1);
  auto report = flush_once(config_);
  ASSERT_TRUE(report.archive_ok) << report.error;
  EXPECT_EQ(archive_keys(), expected_keys(total + 500));
  EXPECT_EQ(report.lag.rows, 0);
}

TEST_P(StorageTest, ReadsDuringFlushSeeEveryRowOnce) {
  const int total = 3000;
  store(total);
  config_.archive.flush_batch_rows = 100;
  config_.archive.retention_s = 0;
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::string failure;
  std::thread reader_thread([&] {
    ResultReader reader(config_);
    while (!done || reads == 0) {
      PageQuery query;
      query.limit = 10000;
      auto page = reader.results(query);
      if (!page) {
        failure = page.error().message;
        return;
      }
      std::set<std::int64_t> seqs;
      for (const auto& row : page->rows) seqs.insert(row.seq);
      if (page->rows.size() != static_cast<std::size_t>(total) ||
          seqs.size() != page->rows.size()) {
        failure = fmt::format("read {} rows, {} distinct, expected {}", page->rows.size(),
                              seqs.size(), total);
        return;
      }
      ++reads;
    }
  });
  auto report = flush_once(config_);
  done = true;
  reader_thread.join();
  EXPECT_TRUE(report.archive_ok) << report.error;
  EXPECT_EQ(failure, "");
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(test::count_cache_results(config_.collector.cache_db), 0);
}

TEST_P(StorageTest, ArchiveOutageDelaysFlushingOnly) {
  store(200);
  Config broken = config_;
  if (GetParam() == "postgres")
    broken.archive.postgres = "host=" + dir_.string() + " port=1 dbname=none connect_timeout=2";
  else
    broken.archive.sqlite_db = dir_ / "missing" / "archive.db";
  broken.archive.retention_s = 0;
  auto down = flush_once(broken);
  EXPECT_FALSE(down.archive_ok);
  EXPECT_NE(down.error, "");
  EXPECT_EQ(down.lag.rows, 200);
  EXPECT_EQ(down.deleted, 0);
  EXPECT_EQ(test::count_cache_results(config_.collector.cache_db), 200);
  ResultReader reader(broken);
  EXPECT_FALSE(reader.results(PageQuery{}).ok());

  auto up = flush_once(config_);
  ASSERT_TRUE(up.archive_ok) << up.error;
  EXPECT_EQ(up.rows, 200);
  EXPECT_EQ(up.lag.rows, 0);
  EXPECT_EQ(archive_keys(), expected_keys(200));
}

// A stop requested in the middle of a flush (the collector's SIGTERM): the
// batch in progress is rolled back, and the next flush archives every row once.
TEST_P(StorageTest, FlushStoppedMidwayThenRerunGivesTheSameRows) {
  store(3000);
  config_.archive.flush_batch_rows = 1000;
  config_.archive.retention_s = 0;
  std::stop_source stop;
  int copies = 0;
  auto stopped = flush_once(
      config_,
      [&](std::string_view at) {
        if (at == "after_copy" && ++copies == 2) stop.request_stop();
      },
      stop.get_token());
  EXPECT_TRUE(stopped.cancelled);
  EXPECT_EQ(stopped.rows, 1000);
  EXPECT_EQ(stopped.deleted, 0);  // retention is skipped too
  EXPECT_EQ(archive_keys().size(), 1000u);
  EXPECT_EQ(flush_lag(config_).rows, 2000);

  // Already stopped: nothing is read or written.
  auto refused = flush_once(config_, {}, stop.get_token());
  EXPECT_TRUE(refused.cancelled);
  EXPECT_EQ(refused.rows, 0);

  auto rerun = flush_once(config_);
  ASSERT_TRUE(rerun.archive_ok) << rerun.error;
  EXPECT_EQ(rerun.rows, 2000);
  EXPECT_EQ(archive_keys(), expected_keys(3000));
}

// The Flusher thread flushes at once, records the status, and stops promptly.
TEST_P(StorageTest, FlusherThreadFlushesAndRecordsItsStatus) {
  store(500);
  config_.archive.flush_interval_s = 3600;
  Flusher flusher(config_);
  flusher.start();
  for (int i = 0; i < 300 && flusher.last().rows == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  flusher.stop();
  EXPECT_EQ(flusher.last().rows, 500);
  EXPECT_EQ(archive_keys(), expected_keys(500));
  auto status = last_flush(config_);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->archive_ok);
  EXPECT_EQ(status->rows, 500);
  EXPECT_EQ(status->lag.rows, 0);
  EXPECT_GT(status->last_ok_ns, 0);
}

TEST_P(StorageTest, LastFlushRecordsAnOutageAndKeepsTheLastSuccess) {
  EXPECT_FALSE(last_flush(config_).has_value());
  store(10);
  ASSERT_TRUE(flush_once(config_).archive_ok);
  UtcNs ok_at = last_flush(config_)->last_ok_ns;
  store(20, 11);
  Config broken = config_;
  broken.archive.postgres = GetParam() == "postgres" ? "host=" + dir_.string() + " port=1" : "";
  broken.archive.sqlite_db = dir_ / "missing" / "archive.db";
  auto down = flush_once(broken);
  EXPECT_FALSE(down.archive_ok);
  auto status = last_flush(config_);
  ASSERT_TRUE(status.has_value());
  EXPECT_FALSE(status->archive_ok);
  EXPECT_EQ(status->error, down.error);
  EXPECT_EQ(status->lag.rows, 20);
  EXPECT_EQ(status->last_ok_ns, ok_at);
  EXPECT_GE(status->at_ns, ok_at);
}

TEST_P(StorageTest, WeeklyDumpWritesTheDueWeekOnce) {
  // Results in the week of kMonday; "now" is two days after that week.
  store(40);
  config_.archive.dump_dir = dir_ / "dumps";
  config_.archive.dump_delay_s = 86'400;
  UtcNs now = kMonday + storage::kWeekNs + 2 * 86'400 * kSecond;
  auto first = weekly_dump_once(config_, now);
  EXPECT_EQ(first.outcome, WeeklyDumpRun::Outcome::written) << first.error;
  EXPECT_EQ(first.schedule.week, "2026-W22");
  EXPECT_EQ(first.rows, 40);
  auto manifest = dir_ / "dumps" / "2026-W22" / "manifest.json";
  ASSERT_TRUE(std::filesystem::exists(manifest));
  std::filesystem::last_write_time(manifest, std::filesystem::file_time_type());
  auto again = weekly_dump_once(config_, now);
  EXPECT_EQ(again.outcome, WeeklyDumpRun::Outcome::already_there);
  EXPECT_EQ(std::filesystem::last_write_time(manifest), std::filesystem::file_time_type());

  // A stop request abandons the dump and leaves no file of it behind.
  std::stop_source stop;
  stop.request_stop();
  config_.archive.dump_dir = dir_ / "stopped";
  auto stopped = weekly_dump_once(config_, now, stop.get_token());
  EXPECT_EQ(stopped.outcome, WeeklyDumpRun::Outcome::failed);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "stopped" / "2026-W22"));
}

// A collector that was down across week ends writes, at its next look, every
// week since its newest dump, oldest first; with no dump yet, the due week
// only.
TEST_P(StorageTest, WeeklyDumpFillsTheWeeksSinceItsNewestDump) {
  store(40);  // in 2026-W22, the week of kMonday
  const auto dumps = dir_ / "dumps";
  config_.archive.dump_dir = dumps;
  config_.archive.dump_delay_s = 0;
  const UtcNs hour = 3600 * kSecond;
  auto first = weekly_dump_once(config_, kMonday - storage::kWeekNs + hour);
  EXPECT_EQ(first.outcome, WeeklyDumpRun::Outcome::written) << first.error;
  EXPECT_EQ(first.written, std::vector<std::string>{"2026-W20"});
  EXPECT_EQ(first.rows, 0);
  EXPECT_FALSE(std::filesystem::exists(dumps / "2026-W19"));
  // Neither a folder without a manifest nor one of another name is a dump.
  std::filesystem::create_directories(dumps / "2026-W21");
  std::filesystem::create_directories(dumps / "2026-W22-old");
  std::ofstream(dumps / "2026-W22-old" / "manifest.json") << "{}";

  auto later = weekly_dump_once(config_, kMonday + storage::kWeekNs + hour);
  EXPECT_EQ(later.outcome, WeeklyDumpRun::Outcome::written) << later.error;
  EXPECT_EQ(later.schedule.week, "2026-W22");
  EXPECT_EQ(later.written, (std::vector<std::string>{"2026-W21", "2026-W22"}));
  EXPECT_EQ(later.rows, 40);
  for (const char* week : {"2026-W20", "2026-W21", "2026-W22"})
    EXPECT_TRUE(std::filesystem::exists(dumps / week / "manifest.json")) << week;
  auto again = weekly_dump_once(config_, kMonday + storage::kWeekNs + hour);
  EXPECT_EQ(again.outcome, WeeklyDumpRun::Outcome::already_there);
  EXPECT_TRUE(again.written.empty());
}

TEST_P(StorageTest, PagesFiltersSummaryAndPathsAcrossCacheAndArchive) {
  store(300);
  ASSERT_TRUE(flush_once(config_).archive_ok);
  store(100, 301);  // these stay in the cache only
  ResultReader reader(config_);

  PageQuery query;
  query.limit = 37;
  std::vector<ResultRow> all;
  for (int pages = 0; pages < 100; ++pages) {
    auto page = reader.results(query);
    ASSERT_TRUE(page.ok()) << page.error().message;
    all.insert(all.end(), page->rows.begin(), page->rows.end());
    if (page->next_cursor.empty()) break;
    query.cursor = page->next_cursor;
  }
  ASSERT_EQ(all.size(), 400u);
  for (std::size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(all[i].seq, static_cast<std::int64_t>(400 - i));  // newest first

  PageQuery abw;
  abw.filter.tool = Tool::kAbw;
  abw.filter.dst = "n3";  // abw rows have seq % 4 == 2: even seq -> n2
  EXPECT_EQ(reader.results(abw)->rows.size(), 0u);
  abw.filter.dst = "n2";
  auto abw_rows = reader.results(abw);
  ASSERT_EQ(abw_rows->rows.size(), 100u);
  EXPECT_EQ(abw_rows->rows[0].estimate_bps, 9.5e8);
  EXPECT_EQ(abw_rows->rows[0].bytes_sent, 123456);

  PageQuery site;
  site.filter.site = "mit";  // n3: odd seqs
  EXPECT_EQ(reader.results(site)->rows.size(), 200u);
  PageQuery window;
  window.filter.from = kMonday + 101 * kSecond;
  window.filter.to = kMonday + 201 * kSecond;  // seqs 100..199
  EXPECT_EQ(reader.results(window)->rows.size(), 100u);
  PageQuery bad;
  bad.cursor = "zz";
  EXPECT_FALSE(reader.results(bad).ok());

  ResultFilter latency;
  latency.tool = Tool::kLatency;
  auto summary = reader.summary(latency);
  ASSERT_TRUE(summary.ok()) << summary.error().message;
  ASSERT_EQ(summary->size(), 2u);  // n1>n2 and n1>n3
  const auto& s = (*summary)[0];
  EXPECT_EQ(s.count, 100);
  EXPECT_EQ(s.sent, 300);
  EXPECT_NEAR(*s.loss, 1.0 / 3, 1e-9);
  EXPECT_EQ(*s.rtt_min_ns, 1'000'000);
  EXPECT_NEAR(static_cast<double>(*s.rtt_p99_ns), 2e6, 2e4);
  ResultFilter tp;
  tp.tool = Tool::kThroughput;
  EXPECT_NEAR(*reader.summary(tp)->at(0).bandwidth_median_bps, 4.25e8, 4.25e6);

  auto paths = reader.paths({});
  ASSERT_TRUE(paths.ok());
  std::int64_t counted = 0;
  for (const auto& p : *paths) counted += p.count;
  EXPECT_EQ(paths->size(), 4u);
  EXPECT_EQ(counted, 400);
}

// A result before 1970 (or after 2099) has no weekly partition: the cache
// refuses it with a reason, stores the rest, and the flush goes through.
TEST_P(StorageTest, StartOutsideTheEpochRangeIsRejectedAtStore) {
  Cache cache(config_.collector.cache_db);
  auto good = make_result(1, "n1", "n2", kMonday);
  auto before = make_result(2, "n1", "n2", -1);
  auto after = make_result(3, "n1", "n2", kMaxStartNs);
  auto last = make_result(4, "n1", "n2", kMaxStartNs - 1);
  auto outcome = cache.store("n1", 1, {&good, &before, &after, &last});
  EXPECT_EQ(outcome.stored, 2u);
  EXPECT_EQ(outcome.duplicates, 0u);
  EXPECT_EQ(outcome.rejected, 2u);
  EXPECT_EQ(outcome.rejection,
            "result 2 of node 'n1': start_ns -1 is outside 1970-01-01..2100-01-01 UTC");
  EXPECT_EQ(test::count_cache_results(config_.collector.cache_db), 2);
  auto report = flush_once(config_);
  ASSERT_TRUE(report.archive_ok) << report.error;
  EXPECT_EQ(report.rows, 2);
  EXPECT_EQ(archive_keys(), (std::vector<std::string>{"n1/1/1", "n1/1/4"}));
}

TEST_P(StorageTest, DumpIsByteIdenticalAcrossRuns) {
  store(2000);
  config_.archive.flush_batch_rows = 700;
  ASSERT_TRUE(flush_once(config_).archive_ok);
  store(50, 2001);  // still in the cache: the dump reads both
  std::string week = iso_week_of(kMonday);
  EXPECT_EQ(week, "2026-W22");
  auto one = dump_week(config_, week, dir_ / "one");
  ASSERT_TRUE(one.ok()) << one.error().message;
  EXPECT_EQ(one->rows, 2050);
  auto two = dump_week(config_, week, dir_ / "two");
  ASSERT_TRUE(two.ok());
  for (const char* name :
       {"latency.csv.gz", "abw.csv.gz", "throughput.csv.gz", "summary.csv", "manifest.json"}) {
    std::string a = slurp(dir_ / "one" / week / name);
    EXPECT_FALSE(a.empty()) << name;
    EXPECT_EQ(a, slurp(dir_ / "two" / week / name)) << name;
  }
  std::string manifest = slurp(dir_ / "one" / week / "manifest.json");
  EXPECT_NE(manifest.find("\"rows\": 1025"), std::string::npos) << manifest;  // latency
  EXPECT_FALSE(parse_iso_week("2026-W54").ok());
  EXPECT_FALSE(parse_iso_week("2026-47").ok());
  EXPECT_EQ(*parse_iso_week("2026-W01"), 1'766'966'400'000'000'000);  // 2025-12-29
}

TEST(DumpSchedule, DueWeekIsTheLastOneEndedDelayAgo) {
  // 2026-06-03 (Wednesday of 2026-W23) 12:00 UTC.
  UtcNs wednesday = kMonday + storage::kWeekNs + (2 * 86'400 + 43'200) * kSecond;
  auto with_day = dump_schedule(wednesday, 86'400);
  EXPECT_EQ(with_day.week, "2026-W22");
  EXPECT_EQ(with_day.week_start_ns, kMonday);
  EXPECT_EQ(with_day.next_due_ns, kMonday + 2 * storage::kWeekNs + 86'400 * kSecond);
  // Six days of delay: W22 is not due before Sunday of W23, so W21 is.
  EXPECT_EQ(dump_schedule(wednesday, 6 * 86'400).week, "2026-W21");
  EXPECT_EQ(dump_schedule(kMonday + storage::kWeekNs, 0).week, "2026-W22");
}

TEST(ArchiveConfig, DumpKeysAreReadAndChecked) {
  Config config =
      parse_config("archive:\n  dump_weekly: true\n  dump_delay_s: 7200\n", "f.yaml", "/base");
  EXPECT_TRUE(config.archive.dump_weekly);
  EXPECT_EQ(config.archive.dump_delay_s, 7200);
  try {
    parse_config("archive:\n  dump_delay_s: 604800\n", "f.yaml", "/base");
    ADD_FAILURE() << "a week of delay was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("f.yaml:2: archive.dump_delay_s:"), std::string::npos)
        << e.what();
  }
  try {
    parse_config("archive:\n  dump_weekly: sometimes\n", "f.yaml", "/base");
    ADD_FAILURE() << "a non-boolean dump_weekly was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("archive.dump_weekly"), std::string::npos) << e.what();
  }
}

TEST(CacheSchema, StoresAbwAndThroughputValues) {
  auto dir = std::filesystem::temp_directory_path() / fmt::format("flexmon-schema-{}", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    Cache cache(dir / "cache.db");
    auto a = make_result(1, "n1", "n2", 5, "abw");
    auto t = make_result(2, "n1", "n2", 6, "throughput");
    cache.store("n1", 1, {&a, &t});
  }
  sqlite::Database db(dir / "cache.db");
  auto select = db.prepare(
      "SELECT estimate_bps, lower_bps, upper_bps, bytes_sent, duration_ns, throughput_bps FROM "
      "results ORDER BY seq");
  ASSERT_TRUE(select.step());
  EXPECT_EQ(select.real(0), 9.5e8);
  EXPECT_EQ(select.int64(3), 123456);
  EXPECT_TRUE(select.is_null(5));
  ASSERT_TRUE(select.step());
  EXPECT_EQ(select.real(5), 4.25e8);
  EXPECT_EQ(select.int64(4), 5'000'000'000);
  auto version = db.prepare("PRAGMA user_version");
  version.step();
  EXPECT_EQ(version.int64(0), 1);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace flexmon
