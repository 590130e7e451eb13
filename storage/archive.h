// Internal to flexmon_storage: the archive interface (PostgreSQL or SQLite),
// SQL rendering for both dialects, and row cursors. Not for other folders.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <variant>
#include <vector>

#include "common/sqlite.h"
#include "storage/flusher.h"  // FlushHook
#include "storage/reader.h"

namespace flexmon {
struct Config;
}

namespace flexmon::storage {

// Every column of `results`, in table order (cache, SQLite and PG archive).
inline constexpr const char* kColumns =
    "id, node, boot_epoch, seq, stream, tool, src, dst, start_ns, status, error, sent, received, "
    "duplicates, rtt_min_ns, rtt_avg_ns, rtt_median_ns, rtt_max_ns, rtt_stddev_ns, rtts_ns, "
    "estimate_bps, lower_bps, upper_bps, bytes_sent, duration_ns, throughput_bps, committed_ns";
inline constexpr int kColumnCount = 27;
// A result's key and time, which place it in a page.
inline constexpr const char* kKeyColumns = "node, boot_epoch, seq, start_ns";

// The archive failed or cannot be reached; the cache keeps the rows.
class ArchiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A stop was requested (the process is shutting down): the transaction in
// progress was rolled back, which the idempotent flush makes harmless.
class Cancelled : public ArchiveError {
 public:
  Cancelled() : ArchiveError("cancelled: the process is stopping") {}
};

// Opens the cache file with its schema applied; checks the schema version.
std::unique_ptr<sqlite::Database> open_cache_db(const std::filesystem::path& file);
// The cache's identity in the archive's flush watermarks.
std::string cache_uuid(sqlite::Database& cache);

enum class Dialect { sqlite, postgres };
using Param = std::variant<std::int64_t, std::string>;

// A SELECT over `results`, rendered for either database.
struct Select {
  ResultFilter filter;
  std::vector<std::string> site_nodes;   // when filter.site is set: its nodes
  std::optional<std::int64_t> above_id;  // cache part: id > this
  struct After {
    UtcNs start_ns = 0;
    std::string node;
    std::int64_t boot_epoch = 0, seq = 0;
  };
  std::optional<After> after;  // keyset cursor (newest first only)
  // newest_first and oldest_first order by (start_ns, node, boot_epoch,
  // seq); newest_by_time by start_ns alone, ties in no given order.
  enum class Order { none, newest_first, oldest_first, newest_by_time } order = Order::none;
  std::optional<std::uint32_t> limit;
  std::string columns = kColumns;
  bool group_by_path = false;  // GROUP BY tool, src, dst
};

std::string render(const Select& select, Dialect dialect, std::vector<Param>& params);

// Rows of a query, column by column (both databases look alike).
class Cursor {
 public:
  virtual ~Cursor() = default;
  virtual bool next() = 0;
  virtual bool is_null(int column) const = 0;
  virtual std::int64_t int64(int column) const = 0;
  virtual double real(int column) const = 0;
  virtual std::string text(int column) const = 0;
};

// Reads a row of kColumns.
void read_row(const Cursor& cursor, ResultRow& row);
// Reads a row of kKeyColumns into those fields of `row`.
void read_key(const Cursor& cursor, ResultRow& row);

// Prepared statements of one connection, kept by SQL text: the readers run
// the same few queries again and again, and preparing one costs as much as
// reading a 100-row page.
class StatementCache {
 public:
  explicit StatementCache(sqlite::Database& db) : db_(db) {}
  // The statement for `sql`, prepared on first use. It must be reset before
  // it is asked for again (SqliteCursor does that).
  sqlite::Statement& get(const std::string& sql);
  // Runs a statement that returns no rows ("BEGIN", "ROLLBACK"), prepared
  // once: sqlite3_exec parses its text again on every call.
  void run(const std::string& sql) { get(sql).run(); }

 private:
  static constexpr std::size_t kMaxStatements = 64;  // filter combinations are few
  sqlite::Database& db_;
  std::map<std::string, sqlite::Statement, std::less<>> statements_;
};

// Runs a cached statement with `params`; resets it when the cursor ends.
class SqliteCursor : public Cursor {
 public:
  SqliteCursor(sqlite::Statement& statement, const std::vector<Param>& params);
  ~SqliteCursor() override { statement_.reset(); }
  bool next() override { return statement_.step(); }
  bool is_null(int c) const override { return statement_.is_null(c); }
  std::int64_t int64(int c) const override { return statement_.int64(c); }
  double real(int c) const override { return statement_.real(c); }
  std::string text(int c) const override { return statement_.text(c); }

 private:
  sqlite::Statement& statement_;
};

// A consistent read of the archive: the watermark and the rows agree.
class ArchiveSnapshot {
 public:
  virtual ~ArchiveSnapshot() = default;
  // Every row of the cache `cache_uuid` with id <= this is in the archive.
  virtual std::int64_t watermark() = 0;
  virtual std::unique_ptr<Cursor> select(const Select& select) = 0;
};

class Archive {
 public:
  // PostgreSQL when config.archive.postgres is set, otherwise the SQLite file.
  // Throws ArchiveError when it cannot be opened, Cancelled when `stop` is
  // requested while connecting.
  static std::unique_ptr<Archive> open(const Config& config, std::stop_token stop = {});
  virtual ~Archive() = default;
  virtual std::string describe() const = 0;
  virtual std::int64_t watermark(const std::string& cache_uuid) = 0;
  // Copies the cache's rows with ids in (watermark, upper] and moves the
  // watermark to `upper`, in one transaction. Returns the rows copied (0 when
  // the watermark is already >= upper). Throws ArchiveError; Cancelled when
  // `stop` is requested meanwhile (the transaction is then rolled back).
  virtual std::int64_t append(sqlite::Database& cache, const std::string& cache_uuid,
                              std::int64_t upper, const FlushHook& hook,
                              std::stop_token stop = {}) = 0;
  virtual std::unique_ptr<ArchiveSnapshot> snapshot(const std::string& cache_uuid) = 0;
};

std::unique_ptr<Archive> open_sqlite_archive(const std::filesystem::path& file);
std::unique_ptr<Archive> open_pg_archive(const std::string& conninfo, std::stop_token stop = {});

// Monday 00:00 UTC of the ISO week holding t, in ns.
UtcNs week_start(UtcNs t);
inline constexpr std::int64_t kWeekNs = 7LL * 86'400 * 1'000'000'000;

}  // namespace flexmon::storage
