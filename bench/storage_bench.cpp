// Storage benchmarks; figures one per line ("name: value").
//   storage_bench flush CONNINFO ROWS   cache -> PostgreSQL flush, then plain COPY of the
//                                       same rows (same text format, columns, table,
//                                       indexes and one transaction) as the peer
//   storage_bench query CONNINFO ROWS   one path over one week, from an archive of ROWS
//                                       results; the archive is generated unless the
//                                       database already holds it (so runs can repeat)
//   storage_bench dump  CONNINFO ROWS   a week of ROWS results: rows/s, peak RSS
// CONNINFO names a database (bench/run-storage makes one per benchmark).
#include <libpq-fe.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/config.h"
#include "common/log.h"
#include "common/sqlite.h"
#include "storage/flusher.h"
#include "storage/reader.h"
#include "storage/weekly_dump.h"

using namespace flexmon;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int64_t kMonday = 1'779'667'200'000'000'000;  // 2026-05-25, ISO week 2026-W22
constexpr int kNodes = 45;                                   // 45 * 44 = 1980 paths

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void pg_exec(PGconn* conn, const std::string& sql) {
  PGresult* r = PQexec(conn, sql.c_str());
  auto s = PQresultStatus(r);
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
    fmt::print(stderr, "{}: {}\n", sql.substr(0, 120), PQerrorMessage(conn));
    std::exit(1);
  }
  PQclear(r);
}

// Rows over one week, every path of a mesh, spread evenly in time (SQL that
// both SQLite and PostgreSQL run).
std::string generated_rows(std::int64_t rows, const std::string& series) {
  return fmt::format(
      "SELECT i, 'n' || (i % {0}), 1, i, 'latency/udp', 'latency', 'n' || (i % {0}), "
      "'n' || ((i % {0} + 1 + (i / {0}) % ({0} - 1)) % {0}), {1} + i * {2}, 'ok', NULL, 10, 9, 0, "
      "1000000 + i % 1000, 1500000, 1400000, 2500000, 300000, "
      "'[1000000,1100000,1200000,null,1300000,1400000,1500000,1600000,1700000,2500000]', NULL, "
      "NULL, NULL, NULL, NULL, NULL, {1} + i * {2} FROM {3}",
      kNodes, kMonday, (7LL * 86400 * 1'000'000'000 - 1) / rows, series);
}

void fill_cache(const std::filesystem::path& file, std::int64_t rows) {
  {
    Config c;
    c.collector.cache_db = file;
    flush_lag(c);
  }  // creates the schema
  sqlite::Database db(file);
  db.exec("PRAGMA synchronous=OFF");
  db.exec(fmt::format(
      "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {}) "
      "INSERT INTO results (id, node, boot_epoch, seq, stream, tool, src, dst, start_ns, status, "
      "error, sent, received, duplicates, rtt_min_ns, rtt_avg_ns, rtt_median_ns, rtt_max_ns, "
      "rtt_stddev_ns, rtts_ns, estimate_bps, lower_bps, upper_bps, bytes_sent, duration_ns, "
      "throughput_bps, committed_ns) {}",
      rows, generated_rows(rows, "s")));
}

std::int64_t pg_count(PGconn* conn, const std::string& sql) {
  PGresult* r = PQexec(conn, sql.c_str());
  std::int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK ? std::stoll(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  return n;
}

// The archive as the flush leaves it: rows in commit (= time) order, grouped
// by path and in time order within each chunk of 65,536 rows
// (storage/pg_archive.cpp groups every chunk it copies; an hourly flush at 10 M
// rows a week is one chunk). Then
// VACUUM ANALYZE, as autovacuum does to a table that stopped changing.
void fill_archive(PGconn* conn, std::int64_t rows, const Config& config) {
  flush_once(config);  // an empty flush applies the archive's schema
  pg_exec(conn, fmt::format("CREATE TABLE IF NOT EXISTS results_w20260525 PARTITION OF results "
                            "FOR VALUES FROM ({}) TO ({})",
                            kMonday, kMonday + 7LL * 86400 * 1'000'000'000));
  pg_exec(conn, "INSERT INTO results " +
                    generated_rows(rows, fmt::format("generate_series(1::bigint, {}) AS i", rows)) +
                    " ORDER BY (i - 1) / 65536, 7, 8, 9");
  pg_exec(conn, "VACUUM ANALYZE results");
}

// Generates the archive unless the database holds exactly `rows` results.
void ensure_archive(PGconn* conn, std::int64_t rows, const Config& config, const char* what) {
  if (pg_count(conn, "SELECT count(*) FROM results") == rows) {
    fmt::print(stderr, "{}: reusing the archive of {} rows\n", what, rows);
    return;
  }
  auto start = Clock::now();
  fill_archive(conn, rows, config);
  fmt::print(stderr, "{}: archive of {} rows generated in {:.0f} s\n", what, rows,
             seconds_since(start));
}

Config bench_config(const std::filesystem::path& dir, const std::string& conninfo) {
  Config c;
  c.collector.cache_db = dir / "cache.db";
  c.archive.postgres = conninfo;
  c.archive.horizon_s = 0;
  c.archive.retention_s = 1e12;
  c.archive.flush_batch_rows = 100'000'000;
  return c;
}

// CPU seconds used so far by the PostgreSQL server: every `postgres`
// process, with the children it reaped (a backend that exits, like the
// flush's, is counted in the postmaster's cutime). Robust to other load.
struct ProcStat {
  long ppid = 0;
  double ticks = 0;  // utime + stime + cutime + cstime
};

std::optional<ProcStat> proc_stat(const std::filesystem::path& dir) {
  std::FILE* f = std::fopen((dir / "stat").c_str(), "r");
  if (!f) return std::nullopt;
  char line[1024];
  std::size_t n = std::fread(line, 1, sizeof line - 1, f);
  std::fclose(f);
  line[n] = 0;
  std::string text(line);
  auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  // After ")": state ppid ... utime(12th) stime cutime cstime.
  std::vector<std::string> fields;
  std::size_t at = close + 2;
  while (at < text.size() && fields.size() < 15) {
    auto space = text.find(' ', at);
    fields.push_back(text.substr(at, space - at));
    if (space == std::string::npos) break;
    at = space + 1;
  }
  if (fields.size() < 15) return std::nullopt;
  ProcStat out;
  out.ppid = std::stol(fields[1]);
  for (int i : {11, 12, 13, 14}) out.ticks += std::stod(fields[static_cast<std::size_t>(i)]);
  return out;
}

long g_postmaster = 0;  // set in main from a backend's parent

double server_cpu_s() {
  double ticks = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    auto name = entry.path().filename().string();
    if (name.empty() || name[0] < '0' || name[0] > '9') continue;
    auto stat = proc_stat(entry.path());
    if (stat && (std::stol(name) == g_postmaster || stat->ppid == g_postmaster))
      ticks += stat->ticks;
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double self_cpu_s() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

long peak_rss_kb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

}  // namespace

int main(int argc, char** argv) {
  flexmon::keep_freed_memory_for_result_pages();  // as flexmon-manager's main does
  if (argc != 4) {
    fmt::print(stderr, "usage: storage_bench flush|query|dump CONNINFO ROWS\n");
    return 64;
  }
  set_log_level("warn");
  std::string mode = argv[1], conninfo = argv[2];
  std::int64_t rows = std::stoll(argv[3]);
  auto dir = std::filesystem::temp_directory_path() / fmt::format("flexmon-bench-{}", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  Config config = bench_config(dir, conninfo);
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    fmt::print(stderr, "cannot connect: {}\n", PQerrorMessage(conn));
    return 1;
  }

  if (auto backend = proc_stat(fmt::format("/proc/{}", PQbackendPID(conn))))
    g_postmaster = backend->ppid;

  if (mode == "flush") {
    fill_cache(config.collector.cache_db, rows);
    pg_exec(conn, "CHECKPOINT");
    double server0 = server_cpu_s(), client0 = self_cpu_s();
    auto start = Clock::now();
    auto report = flush_once(config);
    double flush_s = seconds_since(start);
    double flush_server = server_cpu_s() - server0, flush_client = self_cpu_s() - client0;
    if (!report.archive_ok || report.rows != rows) {
      fmt::print(stderr, "flush failed: {} ({} rows)\n", report.error, report.rows);
      return 1;
    }
    // The peer: the same rows as the same COPY text, in the order the flush
    // sent them, prepared in memory before the clock starts; sent in 1 MiB
    // chunks into the same table in one transaction. No reading, no
    // formatting: what any client could at best achieve on this server.
    const std::string columns =
        "id, node, boot_epoch, seq, stream, tool, src, dst, start_ns, status, error, sent, "
        "received, duplicates, rtt_min_ns, rtt_avg_ns, rtt_median_ns, rtt_max_ns, "
        "rtt_stddev_ns, rtts_ns, estimate_bps, lower_bps, upper_bps, bytes_sent, duration_ns, "
        "throughput_bps, committed_ns";
    std::string data;
    {
      PGresult* r =
          PQexec(conn, fmt::format("COPY (SELECT {} FROM results) TO STDOUT", columns).c_str());
      char* line = nullptr;
      int n;
      while ((n = PQgetCopyData(conn, &line, 0)) > 0) {
        data.append(line, static_cast<std::size_t>(n));
        PQfreemem(line);
      }
      PQclear(r);
      while (PGresult* rest = PQgetResult(conn)) PQclear(rest);
    }
    pg_exec(conn, "TRUNCATE results");
    pg_exec(conn, "CHECKPOINT");
    server0 = server_cpu_s();
    client0 = self_cpu_s();
    start = Clock::now();
    pg_exec(conn, "BEGIN");
    PGresult* r = PQexec(conn, fmt::format("COPY results ({}) FROM STDIN", columns).c_str());
    PQclear(r);
    for (std::size_t at = 0; at < data.size(); at += 1 << 20)
      PQputCopyData(conn, data.data() + at,
                    static_cast<int>(std::min<std::size_t>(1 << 20, data.size() - at)));
    PQputCopyEnd(conn, nullptr);
    while (PGresult* rest = PQgetResult(conn)) PQclear(rest);
    pg_exec(conn, "COMMIT");
    double copy_s = seconds_since(start);
    double copy_server = server_cpu_s() - server0, copy_client = self_cpu_s() - client0;
    if (pg_count(conn, "SELECT count(*) FROM results") != rows) {
      fmt::print(stderr, "plain COPY did not load {} rows\n", rows);
      return 1;
    }
    fmt::print("flush_rows: {}\n", rows);
    fmt::print("flush_rows_per_s: {:.0f}\n", rows / flush_s);
    fmt::print("copy_rows_per_s: {:.0f}\n", rows / copy_s);
    fmt::print("flush_vs_copy: {:.2f}\n", copy_s / flush_s);
    // CPU per 100,000 rows: what a run costs whatever else the machine does.
    fmt::print("flush_server_cpu_s_per_100k: {:.2f}\n", flush_server * 1e5 / rows);
    fmt::print("flush_client_cpu_s_per_100k: {:.2f}\n", flush_client * 1e5 / rows);
    fmt::print("copy_server_cpu_s_per_100k: {:.2f}\n", copy_server * 1e5 / rows);
    fmt::print("copy_client_cpu_s_per_100k: {:.2f}\n", copy_client * 1e5 / rows);
  } else if (mode == "query") {
    ensure_archive(conn, rows, config, "query");
    flush_lag(config);  // creates the (empty) cache
    ResultReader reader(config);
    // Another sample of paths every run: repeated runs do not just re-read
    // the pages the previous run left in the caches.
    unsigned seed = std::random_device()();
    fmt::print(stderr, "query: 200 queries, path seed {}\n", seed);
    std::mt19937 random(seed);
    std::vector<double> ms;
    std::int64_t returned = 0;
    double server0 = server_cpu_s(), client0 = self_cpu_s();
    for (int i = 0; i < 200; ++i) {
      int src = static_cast<int>(random() % kNodes);
      int dst = (src + 1 + static_cast<int>(random() % (kNodes - 1))) % kNodes;
      PageQuery q;
      q.filter.tool = flexmon::Tool::kLatency;
      q.filter.src = fmt::format("n{}", src);
      q.filter.dst = fmt::format("n{}", dst);
      q.filter.from = kMonday;
      q.filter.to = kMonday + 7LL * 86400 * 1'000'000'000;
      q.limit = 10000;
      auto t = Clock::now();
      auto page = reader.results(q);
      ms.push_back(seconds_since(t) * 1e3);
      if (!page) {
        fmt::print(stderr, "query failed: {}\n", page.error().message);
        return 1;
      }
      returned += static_cast<std::int64_t>(page->rows.size());
    }
    double server_ms = (server_cpu_s() - server0) * 1e3 / 200;
    double client_ms = (self_cpu_s() - client0) * 1e3 / 200;
    std::sort(ms.begin(), ms.end());
    fmt::print("query_archive_rows: {}\n", rows);
    fmt::print("query_rows_per_query: {}\n", returned / 200);
    fmt::print("query_p50_ms: {:.2f}\n", ms[ms.size() / 2]);
    fmt::print("query_p99_ms: {:.2f}\n", ms[ms.size() * 99 / 100]);
    // CPU per query (mean): the latency floor on an idle machine with the
    // week in the page cache, whatever else the machine runs meanwhile.
    fmt::print("query_server_cpu_ms: {:.2f}\n", server_ms);
    fmt::print("query_client_cpu_ms: {:.2f}\n", client_ms);
  } else if (mode == "dump") {
    ensure_archive(conn, rows, config, "dump");
    long rss_before = peak_rss_kb();
    auto start = Clock::now();
    auto report = dump_week(config, "2026-W22", dir / "dumps");
    double s = seconds_since(start);
    if (!report) {
      fmt::print(stderr, "dump failed: {}\n", report.error().message);
      return 1;
    }
    fmt::print("dump_rows: {}\n", report->rows);
    fmt::print("dump_rows_per_s: {:.0f}\n", report->rows / s);
    fmt::print("dump_peak_rss_mb: {:.1f}\n", peak_rss_kb() / 1024.0);
    fmt::print("dump_rss_before_mb: {:.1f}\n", rss_before / 1024.0);
  } else {
    fmt::print(stderr, "unknown mode {}\n", mode);
    return 64;
  }
  PQfinish(conn);
  std::filesystem::remove_all(dir);
  return 0;
}
