#include "storage/cache.h"

#include <algorithm>
#include <array>
#include <charconv>

#include <fmt/format.h>
#include <sqlite3.h>

#include "common/sqlite.h"
#include "common/status.h"
#include "storage/archive.h"
#include "wire.pb.h"

namespace flexmon {

namespace {

// The per-packet RTTs as a JSON array, null for a lost packet (what
// storage/rtts.h and the archive's readers expect). Written by hand rather than
// through a JSON library: this runs for every stored result.
std::string rtts_json(const wire::LatencyValues& values) {
  std::string text = "[";
  text.reserve(2 + static_cast<std::size_t>(values.rtt_ns_size()) * 8);
  char digits[24];
  for (std::int64_t rtt : values.rtt_ns()) {
    if (text.size() > 1) text.push_back(',');
    if (rtt < 0) {
      text += "null";
    } else {
      auto written = std::to_chars(digits, digits + sizeof digits, rtt);
      text.append(digits, written.ptr);
    }
  }
  text.push_back(']');
  return text;
}

// Columns written per result, in the order of kInsertColumns.
constexpr int kInsertColumnCount = 26;
constexpr const char* kInsertColumns =
    "node, boot_epoch, seq, stream, tool, src, dst, start_ns, status, error, sent, received, "
    "duplicates, rtt_min_ns, rtt_avg_ns, rtt_median_ns, rtt_max_ns, rtt_stddev_ns, rtts_ns, "
    "committed_ns, estimate_bps, lower_bps, upper_bps, bytes_sent, duration_ns, throughput_bps";
// Results per INSERT statement: one statement for many rows costs SQLite its
// per-statement work (AUTOINCREMENT bookkeeping, statement start and halt)
// once (measured: 38k -> 24k instructions per row at 32, little gain beyond).
constexpr std::size_t kRowsPerInsert = 32;

std::string insert_sql(std::size_t rows) {
  std::string sql = fmt::format("INSERT OR IGNORE INTO results ({}) VALUES ", kInsertColumns);
  for (std::size_t row = 0; row < rows; ++row) {
    sql += row == 0 ? "(" : ", (";
    for (int column = 1; column <= kInsertColumnCount; ++column)
      sql += fmt::format("{}?{}", column == 1 ? "" : ", ",
                         static_cast<int>(row) * kInsertColumnCount + column);
    sql += ")";
  }
  return sql;
}

// The INSERT of `rows` results, prepared once and bound through SQLite's C
// API rather than sqlite::Statement: text is bound SQLITE_STATIC (the results
// and the node outlive the step), and bindings are not cleared between runs
// (every parameter is bound again). sqlite::Statement's copying binds and
// clear_bindings cost ~7k of ~37k instructions per stored row (callgrind,
// collector_bench).
class InsertStatement {
 public:
  InsertStatement(sqlite::Database& db, std::size_t rows) : db_(db.handle()), rtts_(rows) {
    std::string sql = insert_sql(rows);
    if (sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK)
      fail("prepare");
  }
  ~InsertStatement() { sqlite3_finalize(stmt_); }
  InsertStatement(const InsertStatement&) = delete;
  InsertStatement& operator=(const InsertStatement&) = delete;

  // Binds one result as row `row` of the statement.
  void bind(std::size_t row, std::string_view node, std::uint64_t boot_epoch,
            const wire::Result& result, UtcNs committed_ns) {
    int base = static_cast<int>(row) * kInsertColumnCount;
    text(base + 1, node);
    int64(base + 2, static_cast<std::int64_t>(boot_epoch));
    int64(base + 3, static_cast<std::int64_t>(result.seq()));
    text(base + 4, result.stream());
    text(base + 5, result.tool());
    text(base + 6, result.src());
    text(base + 7, result.dst());
    int64(base + 8, result.start_ns());
    text(base + 9, status_name(result.status()));
    if (result.error().empty())
      null(base + 10);
    else
      text(base + 10, result.error());
    if (result.has_latency()) {
      const auto& l = result.latency();
      int64(base + 11, l.sent());
      int64(base + 12, l.received());
      int64(base + 13, l.duplicates());
      if (l.received() > 0) {
        int64(base + 14, l.min_ns());
        int64(base + 15, l.avg_ns());
        int64(base + 16, l.median_ns());
        int64(base + 17, l.max_ns());
        int64(base + 18, l.stddev_ns());
      } else {
        for (int i = 14; i <= 18; ++i) null(base + i);
      }
      rtts_[row] = rtts_json(l);
      text(base + 19, rtts_[row]);
    } else {
      for (int i = 11; i <= 19; ++i) null(base + i);
    }
    int64(base + 20, committed_ns);
    for (int i = 21; i <= 26; ++i) null(base + i);
    if (result.has_abw()) {
      const auto& a = result.abw();
      real(base + 21, a.estimate_bps());
      real(base + 22, a.lower_bps());
      real(base + 23, a.upper_bps());
      int64(base + 24, static_cast<std::int64_t>(a.bytes_sent()));
      int64(base + 25, static_cast<std::int64_t>(a.duration_ns()));
    } else if (result.has_throughput()) {
      const auto& t = result.throughput();
      int64(base + 24, static_cast<std::int64_t>(t.bytes_sent()));
      int64(base + 25, static_cast<std::int64_t>(t.duration_ns()));
      real(base + 26, t.throughput_bps());
    }
  }

  // Runs the statement; returns the rows it inserted.
  std::size_t run() {
    int rc = sqlite3_step(stmt_);
    sqlite3_reset(stmt_);
    if (rc != SQLITE_DONE) fail("insert into results");
    return static_cast<std::size_t>(sqlite3_changes(db_));
  }

 private:
  [[noreturn]] void fail(std::string_view what) {
    throw sqlite::SqliteError(fmt::format("sqlite: {}: {}", what, sqlite3_errmsg(db_)));
  }
  void check(int rc) {
    if (rc != SQLITE_OK) fail("bind");
  }
  void text(int index, std::string_view value) {
    check(sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                            SQLITE_STATIC));
  }
  void int64(int index, std::int64_t value) { check(sqlite3_bind_int64(stmt_, index, value)); }
  void real(int index, double value) { check(sqlite3_bind_double(stmt_, index, value)); }
  void null(int index) { check(sqlite3_bind_null(stmt_, index)); }

  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::vector<std::string> rtts_;  // per row: bound SQLITE_STATIC, so kept until the next bind
};

}  // namespace

struct Cache::Impl {
  std::unique_ptr<sqlite::Database> owned;
  sqlite::Database& db;
  // inserts[n]: the INSERT of n rows, prepared when first needed and kept. A
  // group goes in statements of kRowsPerInsert rows and one for the rest.
  std::array<std::unique_ptr<InsertStatement>, kRowsPerInsert + 1> inserts;
  InsertStatement& insert(std::size_t rows) {
    if (!inserts[rows]) inserts[rows] = std::make_unique<InsertStatement>(db, rows);
    return *inserts[rows];
  }
  UtcClock now;
  Impl(const std::filesystem::path& file, bool read_only, UtcClock clock)
      : owned(read_only ? std::make_unique<sqlite::Database>(file, true)
                        : storage::open_cache_db(file)),
        db(*owned),
        now(std::move(clock)) {}
};

Cache::Cache(const std::filesystem::path& file, bool read_only, UtcClock now)
    : impl_(std::make_unique<Impl>(file, read_only, std::move(now))) {
  // Version-1 files written before 2026-11-30 carry an index on committed_ns
  // that nothing reads any more and every stored row paid for
  // (schemas/cache.sql).
  if (!read_only) impl_->db.exec("DROP INDEX IF EXISTS results_by_commit");
}

Cache::~Cache() = default;

StoreOutcome Cache::store(const std::string& node, std::uint64_t boot_epoch,
                          const std::vector<const wire::Result*>& results) {
  return store_many({StoreGroup{node, boot_epoch, results}}).front();
}

sqlite::Database& Cache::database() { return impl_->db; }

std::vector<StoreOutcome> Cache::store_many(const std::vector<StoreGroup>& groups,
                                            const std::function<void(sqlite::Database&)>& also) {
  auto& db = impl_->db;
  std::vector<StoreOutcome> outcomes;
  outcomes.reserve(groups.size());
  sqlite::Transaction transaction(db);
  UtcNs now = impl_->now();
  std::vector<const wire::Result*> storable;
  for (const StoreGroup& group : groups) {
    StoreOutcome& outcome = outcomes.emplace_back();
    std::string_view node = group.node;
    storable.clear();
    for (const wire::Result* result : group.results) {
      if (result->start_ns() < 0 || result->start_ns() >= kMaxStartNs) {
        if (outcome.rejected++ == 0)
          outcome.rejection = fmt::format(
              "result {} of node '{}': start_ns {} is outside 1970-01-01..2100-01-01 UTC",
              result->seq(), node.substr(0, 64), result->start_ns());
        continue;
      }
      storable.push_back(result);
    }
    // INSERT OR IGNORE: a row already present changes nothing, so each
    // statement's changes() counts the stored ones.
    for (std::size_t next = 0; next < storable.size();) {
      std::size_t rows = std::min(kRowsPerInsert, storable.size() - next);
      InsertStatement& insert = impl_->insert(rows);
      for (std::size_t row = 0; row < rows; ++row)
        insert.bind(row, node, group.boot_epoch, *storable[next + row], now);
      std::size_t stored = insert.run();
      outcome.stored += stored;
      outcome.duplicates += rows - stored;
      next += rows;
    }
  }
  if (also) also(db);
  transaction.commit();
  return outcomes;
}

}  // namespace flexmon
