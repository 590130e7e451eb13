// The real flexmon-collector process with a short flush interval: results it
// received and results already in its cache move to the archive (SQLite file,
// or the PostgreSQL test cluster), retention empties the cache, the flush
// status and lag are recorded and logged, the weekly dump is written, an
// archive outage only delays flushing, and SIGTERM stops everything.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/seal.h"
#include "common/sqlite.h"
#include "storage/archive.h"
#include "storage/cache.h"
#include "storage/flusher.h"
#include "storage/weekly_dump.h"
#include "tests/storage/cache_rows.h"
#include "wire.pb.h"

namespace flexmon {
namespace {

constexpr char kKeyHex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
constexpr std::int64_t kSecond = 1'000'000'000;

std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string key_bytes() {
  std::string bytes;
  for (std::size_t i = 0; i + 1 < sizeof kKeyHex; i += 2)
    bytes += static_cast<char>(std::stoi(std::string(kKeyHex + i, 2), nullptr, 16));
  return bytes;
}

// Polls `done` every 100 ms for at most `seconds`.
template <typename Predicate>
bool eventually(Predicate done, double seconds = 30) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

std::uint16_t free_udp_port() {
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

wire::Result latency_result(std::uint64_t seq, UtcNs start) {
  wire::Result r;
  r.set_seq(seq);
  r.set_stream("latency/udp/n1/n2");
  r.set_tool("latency");
  r.set_src("n1");
  r.set_dst("n2");
  r.set_start_ns(start);
  r.set_status(wire::OK);
  auto* l = r.mutable_latency();
  l->set_sent(1);
  l->set_received(1);
  l->add_rtt_ns(1000);
  l->set_min_ns(1000);
  l->set_max_ns(1000);
  l->set_avg_ns(1000);
  l->set_median_ns(1000);
  l->set_stddev_ns(0);
  return r;
}

// `flexmon-admin flush --config FILE --status`: its exit code and output.
std::pair<int, std::string> flush_status_command(const std::filesystem::path& config) {
  std::string command = std::string(FLEXMON_BIN_DIR) + "/flexmon-admin flush --status --config '" +
                        config.string() + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// The PostgreSQL test cluster's connection string (CTest fixture `postgres`).
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
  return conninfo;
}

std::int64_t pg_count(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  PGresult* result = PQexec(conn, sql.c_str());
  std::int64_t n = PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1
                       ? std::stoll(PQgetvalue(result, 0, 0))
                       : -1;
  PQclear(result);
  PQfinish(conn);
  return n;
}

void pg_exec(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  PQclear(PQexec(conn, sql.c_str()));
  PQfinish(conn);
}

class CollectorFlushTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / fmt::format("flexmon-cflush-{}", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    port_ = free_udp_port();
    if (GetParam() == "postgres") {
      std::string why;
      base_ = pg_base(why);
      if (base_.empty()) GTEST_SKIP() << why;
      db_ = fmt::format("flexmon_cflush_{}", ::getpid());
      pg_exec(base_, "DROP DATABASE IF EXISTS " + db_);
      pg_exec(base_, "CREATE DATABASE " + db_);
      postgres_ = std::regex_replace(base_, std::regex("dbname=\\S+"), "dbname=" + db_);
    }
  }
  void TearDown() override {
    stop();
    if (!db_.empty()) pg_exec(base_, "DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    std::filesystem::remove_all(dir_);
  }

  // Writes the config; `postgres` overrides the archive's connection string.
  Config write_config(const std::string& postgres) {
    std::string archive = postgres.empty() ? "" : fmt::format("  postgres: \"{}\"\n", postgres);
    std::ofstream(dir_ / "flexmon.yaml") << fmt::format(
        "data_dir: .\n"
        "collector:\n"
        "  listen: 127.0.0.1:{}\n"
        "  cache_db: cache.db\n"
        "archive:\n"
        "{}"
        "  sqlite_db: archive.db\n"
        "  flush_interval_s: 0.3\n"
        "  horizon_s: 0\n"
        "  retention_s: 0\n"
        "  dump_weekly: true\n"
        "  dump_delay_s: 0\n"
        "  dump_dir: dumps\n"
        "nodes:\n"
        "  - {{id: n1, site: lab, address: 127.0.0.1, key: {}}}\n",
        port_, archive, kKeyHex);
    return load_config(dir_ / "flexmon.yaml");
  }

  // Results of the last ISO week (the one the scheduled dump writes), put in
  // the cache before the collector starts.
  void store_last_week(const Config& config, int count) {
    UtcNs start = storage::week_start(utc_now_ns()) - storage::kWeekNs + 3600 * kSecond;
    std::vector<wire::Result> results;
    for (int i = 1; i <= count; ++i) results.push_back(latency_result(i, start + i * kSecond));
    std::vector<const wire::Result*> pointers;
    for (const auto& r : results) pointers.push_back(&r);
    Cache(config.collector.cache_db).store("n1", 7, pointers);
  }

  void start() {
    std::string binary = std::string(FLEXMON_BIN_DIR) + "/flexmon-collector";
    std::string config = (dir_ / "flexmon.yaml").string();
    std::string log = (dir_ / "collector.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      FILE* out = std::freopen(log.c_str(), "w", stderr);
      if (out) ::dup2(::fileno(stderr), STDOUT_FILENO);
      ::execl(binary.c_str(), binary.c_str(), "--config", config.c_str(), "--log-level", "info",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }

  // SIGTERM, then the exit status (-1 if it did not end within 30 s).
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    bool ended = eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; });
    if (!ended) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    return ended && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Sends results seq first..last of boot epoch 8 until the collector acks.
  bool send_until_acked(std::uint64_t first, std::uint64_t last) {
    wire::Message message;
    message.set_node("n1");
    auto* batch = message.mutable_results();
    batch->set_boot_epoch(8);
    for (auto seq = first; seq <= last; ++seq)
      *batch->add_results() = latency_result(seq, utc_now_ns() - 10 * kSecond);
    std::string frame = seal(message, Sealer(key_bytes()));
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    to.sin_port = htons(port_);
    bool acked = eventually([&] {
      ::sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      pollfd p{fd, POLLIN, 0};
      return ::poll(&p, 1, 200) == 1;
    });
    ::close(fd);
    return acked;
  }

  std::int64_t archive_rows(const Config& config) {
    if (!config.archive.postgres.empty())
      return pg_count(config.archive.postgres, "SELECT count(*) FROM results");
    if (!std::filesystem::exists(config.archive.sqlite_db)) return -1;
    try {
      sqlite::Database db(config.archive.sqlite_db);
      auto select = db.prepare("SELECT count(*) FROM results");
      return select.step() ? select.int64(0) : -1;
    } catch (const sqlite::SqliteError&) {
      return -1;  // not created yet
    }
  }

  std::int64_t cache_rows(const Config& config) {
    return test::count_cache_results(config.collector.cache_db, /*read_only=*/true);
  }

  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
  std::string base_, db_, postgres_;
  pid_t pid_ = -1;
};

INSTANTIATE_TEST_SUITE_P(Archive, CollectorFlushTest, ::testing::Values("sqlite", "postgres"));

TEST_P(CollectorFlushTest, RowsMoveToTheArchiveAndTheWeekIsDumped) {
  Config config = write_config(postgres_);
  store_last_week(config, 100);
  start();
  ASSERT_TRUE(send_until_acked(1, 50)) << slurp(dir_ / "collector.log");

  EXPECT_TRUE(eventually([&] { return archive_rows(config) == 150 && cache_rows(config) == 0; }))
      << "archive " << archive_rows(config) << ", cache " << cache_rows(config) << "\n"
      << slurp(dir_ / "collector.log");
  auto status = last_flush(config);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->archive_ok) << status->error;
  EXPECT_GT(status->last_ok_ns, 0);
  EXPECT_EQ(status->lag.rows, 0);
  auto [code, out] = flush_status_command(dir_ / "flexmon.yaml");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("behind by 0 rows"), std::string::npos) << out;
  EXPECT_NE(out.find(": ok, "), std::string::npos) << out;

  // The dump of last week, written once at start-up: the 100 stored rows.
  std::string week = dump_schedule(utc_now_ns(), 0).week;
  auto manifest_file = config.archive.dump_dir / week / "manifest.json";
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(manifest_file); }))
      << slurp(dir_ / "collector.log");
  EXPECT_EQ(nlohmann::json::parse(slurp(manifest_file)).at("rows"), 100);

  EXPECT_EQ(stop(), 0) << slurp(dir_ / "collector.log");
  std::string log = slurp(dir_ / "collector.log");
  EXPECT_NE(log.find("rows archived"), std::string::npos) << log;
  EXPECT_NE(log.find("behind by 0 rows"), std::string::npos) << log;
  EXPECT_NE(log.find(fmt::format("dump {}: 100 rows", week)), std::string::npos) << log;
}

TEST_P(CollectorFlushTest, ArchiveOutageOnlyDelaysFlushingAndIsReported) {
  std::string unreachable = GetParam() == "postgres"
                                ? "host=" + (dir_ / "no-server").string() + " port=1 dbname=none"
                                : "";
  Config config = write_config(unreachable);
  if (unreachable.empty()) {
    // The SQLite archive's folder is a file: the archive cannot be opened.
    std::ofstream(dir_ / "blocked") << "x";
    config.archive.sqlite_db = dir_ / "blocked" / "archive.db";
    std::string text = slurp(dir_ / "flexmon.yaml");
    text = std::regex_replace(text, std::regex("sqlite_db: archive.db"),
                              "sqlite_db: blocked/archive.db");
    std::ofstream(dir_ / "flexmon.yaml") << text;
  }
  store_last_week(config, 100);
  start();
  ASSERT_TRUE(send_until_acked(1, 20)) << slurp(dir_ / "collector.log");
  ASSERT_TRUE(eventually([&] {
    auto status = last_flush(config);
    return status && !status->archive_ok && status->lag.rows == 120;
  })) << slurp(dir_ / "collector.log");
  auto status = last_flush(config);
  EXPECT_NE(status->error, "");
  EXPECT_EQ(status->last_ok_ns, 0);
  EXPECT_GT(status->lag.seconds, 0);
  EXPECT_EQ(cache_rows(config), 120);  // retention 0, yet nothing unarchived is deleted
  auto [code, out] = flush_status_command(dir_ / "flexmon.yaml");
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("behind by 120 rows"), std::string::npos) << out;
  EXPECT_NE(out.find("archive unavailable ("), std::string::npos) << out;
  EXPECT_NE(out.find("archive last reached never"), std::string::npos) << out;

  EXPECT_EQ(stop(), 0) << slurp(dir_ / "collector.log");
  std::string log = slurp(dir_ / "collector.log");
  EXPECT_NE(log.find("archive unavailable"), std::string::npos) << log;
  EXPECT_NE(log.find("120 rows"), std::string::npos) << log;
}

}  // namespace
}  // namespace flexmon
