// Runs every example query of schemas/researchers.md: the psql ones on a
// real PostgreSQL archive, the sqlite3 ones on the SQLite archive and the
// cache; and checks that flexmon_reader can read but not write.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "common/config.h"
#include "common/sqlite.h"
#include "storage/cache.h"
#include "storage/flusher.h"
#include "wire.pb.h"

namespace flexmon {
namespace {

struct Example {
  std::string engine, sql;
};

std::vector<Example> examples() {
  std::ifstream in(std::string(FLEXMON_SOURCE_DIR) + "/schemas/researchers.md");
  std::stringstream text;
  text << in.rdbuf();
  std::string doc = text.str();
  std::regex block("```sql (psql|sqlite3)\n([\\s\\S]*?)```");
  std::vector<Example> out;
  for (std::sregex_iterator it(doc.begin(), doc.end(), block), end; it != end; ++it)
    out.push_back({(*it)[1].str(), (*it)[2].str()});
  return out;
}

// Fills a cache with a day of latency, abw and throughput on two paths and
// flushes half of it.
Config populate(const std::filesystem::path& dir, const std::string& postgres) {
  Config config;
  config.collector.cache_db = dir / "cache.db";
  config.archive.sqlite_db = dir / "archive.db";
  config.archive.postgres = postgres;
  config.archive.horizon_s = 0;
  Cache cache(config.collector.cache_db);
  const std::int64_t monday = 1'779'667'200'000'000'000;  // 2026-05-25
  std::vector<wire::Result> results;
  for (int i = 0; i < 300; ++i) {
    wire::Result r;
    r.set_seq(static_cast<std::uint64_t>(i + 1));
    const char* tools[] = {"latency", "latency", "abw", "throughput"};
    r.set_tool(tools[i % 4]);
    r.set_src("n1");
    r.set_dst(i % 8 < 4 ? "n2" : "n3");
    r.set_stream(r.tool() + "/" + r.dst());
    r.set_start_ns(monday + static_cast<std::int64_t>(i) * 300'000'000'000);
    r.set_status(wire::OK);
    if (r.tool() == "latency") {
      auto* l = r.mutable_latency();
      l->set_sent(2);
      l->set_received(1);
      l->add_rtt_ns(1'000'000 + i);
      l->add_rtt_ns(-1);
      l->set_min_ns(1'000'000 + i);
      l->set_avg_ns(1'000'000 + i);
      l->set_median_ns(1'000'000 + i);
      l->set_max_ns(1'000'000 + i);
    } else if (r.tool() == "abw") {
      r.mutable_abw()->set_estimate_bps(5e8 + i);
    } else {
      r.mutable_throughput()->set_throughput_bps(2e8 + i);
    }
    results.push_back(r);
  }
  std::vector<const wire::Result*> first, second;
  for (std::size_t i = 0; i < results.size(); ++i)
    (i < 150 ? first : second).push_back(&results[i]);
  cache.store("n1", 1, first);
  EXPECT_TRUE(flush_once(config).archive_ok);
  cache.store("n1", 1, second);
  return config;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  std::string out = s.str();
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class ResearchersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / fmt::format("flexmon-researchers-{}", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

// The page promises every example for both databases: a psql block and a
// sqlite3 block next to each other.
TEST(ResearchersDoc, EveryExampleHasAPsqlAndASqlite3Version) {
  auto all = examples();
  ASSERT_EQ(all.size() % 2, 0u);
  for (std::size_t i = 0; i < all.size(); i += 2) {
    EXPECT_EQ(all[i].engine, "psql") << "example " << i / 2 + 1 << ":\n" << all[i].sql;
    EXPECT_EQ(all[i + 1].engine, "sqlite3") << "example " << i / 2 + 1 << ":\n" << all[i + 1].sql;
  }
}

TEST_F(ResearchersTest, ExamplesRunInSqlite) {
  auto all = examples();
  ASSERT_GE(all.size(), 8u);
  Config config = populate(dir_, "");
  for (const auto& file : {config.archive.sqlite_db, config.collector.cache_db}) {
    sqlite::Database db(file, /*read_only=*/true);
    for (const auto& example : all) {
      if (example.engine != "sqlite3") continue;
      try {
        auto statement = db.prepare(example.sql);
        int rows = 0;
        while (statement.step()) ++rows;
        EXPECT_GT(rows, 0) << file << ": no rows from\n" << example.sql;
      } catch (const sqlite::SqliteError& e) {
        ADD_FAILURE() << file << ": " << e.what() << "\n" << example.sql;
      }
    }
  }
}

TEST_F(ResearchersTest, ExamplesRunInPostgresAsTheReadOnlyRole) {
  const char* pg_dir = std::getenv("FLEXMON_TEST_PG_DIR");
  if (!pg_dir) GTEST_SKIP() << "FLEXMON_TEST_PG_DIR is not set (run through ctest)";
  if (std::filesystem::exists(std::filesystem::path(pg_dir) / "unavailable"))
    GTEST_SKIP() << "no PostgreSQL: " << read_file(std::filesystem::path(pg_dir) / "unavailable");
  std::string base = read_file(std::filesystem::path(pg_dir) / "conninfo");
  std::string db = fmt::format("flexmon_r{}", ::getpid());
  auto run = [](const std::string& conninfo, const std::string& sql, int* rows = nullptr) {
    PGconn* conn = PQconnectdb(conninfo.c_str());
    PGresult* result = PQexec(conn, sql.c_str());
    auto status = PQresultStatus(result);
    std::string error = (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK)
                            ? ""
                            : std::string(PQerrorMessage(conn));
    if (rows) *rows = PQntuples(result);
    PQclear(result);
    PQfinish(conn);
    return error;
  };
  run(base, "DROP DATABASE IF EXISTS " + db);
  ASSERT_EQ(run(base, "CREATE DATABASE " + db), "");
  std::string conninfo = std::regex_replace(base, std::regex("dbname=\\S+"), "dbname=" + db);
  populate(dir_, conninfo);
  for (const auto& example : examples()) {
    if (example.engine != "psql") continue;
    int rows = 0;
    EXPECT_EQ(run(conninfo, "SET ROLE flexmon_reader; " + example.sql, &rows), "") << example.sql;
    EXPECT_GT(rows, 0) << "no rows from\n" << example.sql;
  }
  EXPECT_NE(run(conninfo, "SET ROLE flexmon_reader; DELETE FROM results"), "");
  EXPECT_NE(run(conninfo, "SET ROLE flexmon_reader; SELECT * FROM flush_state"), "");
  run(base, "DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
}

}  // namespace
}  // namespace flexmon
