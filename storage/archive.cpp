// Shared pieces of the storage layer: opening the cache, SQL rendering for
// SQLite and PostgreSQL, row reading, and the SQLite archive.
#include "storage/archive.h"

#include <random>

#include <sqlite3.h>

#include <fmt/format.h>

#include "archive_sqlite_schema.h"
#include "archive_views_sqlite.h"
#include "cache_schema.h"
#include "common/config.h"

namespace flexmon::storage {

namespace {

constexpr int kCacheSchemaVersion = 1;
constexpr int kArchiveSchemaVersion = 1;

int user_version(sqlite::Database& db) {
  auto statement = db.prepare("PRAGMA user_version");
  statement.step();
  return static_cast<int>(statement.int64(0));
}

bool has_table(sqlite::Database& db, const char* name) {
  auto statement = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
  statement.bind(1, name);
  return statement.step();
}

// Applies `schema` and records `version`, refusing files from a newer build
// and pre-versioned files (there are none in the field: no migration). The
// looks at the version and at the tables are in the same write transaction as
// the schema: another connection may be applying it to the same new file at
// this moment, and between its tables and its version a file looks like a
// pre-versioned one.
void apply_versioned(sqlite::Database& db, const char* what, const char* schema, int version) {
  sqlite::Transaction transaction(db);
  int found = user_version(db);
  if (found == version) return;  // applied by another connection meanwhile
  if (found > version)
    throw sqlite::SqliteError(fmt::format("{} {}: schema version {} is newer than this build's {}",
                                          what, db.file().string(), found, version));
  if (found == 0 && has_table(db, "results"))
    throw sqlite::SqliteError(
        fmt::format("{} {}: written by a development build before schema version 1; move it away",
                    what, db.file().string()));
  db.exec(schema);
  db.exec(kArchiveViewsSqlite);
  db.exec(fmt::format("PRAGMA user_version = {}", version));
  transaction.commit();
}

void bind_params(sqlite::Statement& statement, const std::vector<Param>& params) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    int index = static_cast<int>(i + 1);
    if (auto* number = std::get_if<std::int64_t>(&params[i]))
      statement.bind(index, *number);
    else
      statement.bind(index, std::get<std::string>(params[i]));
  }
}

}  // namespace

std::unique_ptr<sqlite::Database> open_cache_db(const std::filesystem::path& file) {
  auto db = std::make_unique<sqlite::Database>(file);
  // NORMAL in WAL mode: a commit survives a process crash; the last commits
  // may be lost on power loss (see schemas/cache.md).
  db->exec("PRAGMA synchronous=NORMAL");
  if (user_version(*db) != kCacheSchemaVersion)
    apply_versioned(*db, "cache", kCacheSchema, kCacheSchemaVersion);
  return db;
}

std::string cache_uuid(sqlite::Database& cache) {
  auto select = cache.prepare("SELECT value FROM cache_meta WHERE key = 'uuid'");
  if (select.step()) return select.text(0);
  std::random_device random;
  std::string uuid;
  for (int i = 0; i < 4; ++i) uuid += fmt::format("{:08x}", random());
  auto insert = cache.prepare("INSERT OR IGNORE INTO cache_meta (key, value) VALUES ('uuid', ?1)");
  insert.bind(1, uuid).run();
  auto again = cache.prepare("SELECT value FROM cache_meta WHERE key = 'uuid'");
  again.step();
  return again.text(0);
}

std::string render(const Select& s, Dialect dialect, std::vector<Param>& params) {
  auto p = [&](Param value) {
    params.push_back(std::move(value));
    return dialect == Dialect::sqlite ? fmt::format("?{}", params.size())
                                      : fmt::format("${}", params.size());
  };
  std::string sql = fmt::format("SELECT {} FROM results WHERE TRUE", s.columns);
  const auto& f = s.filter;
  if (f.tool) sql += " AND tool = " + p(std::string(tool_name(*f.tool)));
  if (f.src) sql += " AND src = " + p(*f.src);
  if (f.dst) sql += " AND dst = " + p(*f.dst);
  if (f.site) {
    if (s.site_nodes.empty()) {
      sql += " AND FALSE";
    } else {
      std::string list;
      for (const auto& node : s.site_nodes) list += (list.empty() ? "" : ", ") + p(node);
      sql += fmt::format(" AND (src IN ({0}) OR dst IN ({0}))", list);
    }
  }
  if (f.from) sql += " AND start_ns >= " + p(*f.from);
  if (f.to) sql += " AND start_ns < " + p(*f.to);
  if (f.status) sql += " AND status = " + p(*f.status);
  if (s.above_id) sql += " AND id > " + p(*s.above_id);
  if (s.after) {
    std::string start = p(s.after->start_ns);
    sql += fmt::format(
        " AND (start_ns < {0} OR (start_ns = {0} AND (node, boot_epoch, seq) > ({1}, {2}, {3})))",
        start, p(s.after->node), p(s.after->boot_epoch), p(s.after->seq));
  }
  if (s.group_by_path) sql += " GROUP BY tool, src, dst";
  if (s.order == Select::Order::newest_first)
    sql += " ORDER BY start_ns DESC, node, boot_epoch, seq";
  else if (s.order == Select::Order::newest_by_time)
    sql += " ORDER BY start_ns DESC";
  else if (s.order == Select::Order::oldest_first)
    sql += " ORDER BY start_ns, node, boot_epoch, seq";
  // A parameter, so that one prepared statement serves every page size.
  if (s.limit) sql += " LIMIT " + p(static_cast<std::int64_t>(*s.limit));
  return sql;
}

void read_row(const Cursor& c, ResultRow& row) {
  auto opt_int = [&](int i) -> std::optional<std::int64_t> {
    if (c.is_null(i)) return std::nullopt;
    return c.int64(i);
  };
  auto opt_real = [&](int i) -> std::optional<double> {
    if (c.is_null(i)) return std::nullopt;
    return c.real(i);
  };
  auto opt_text = [&](int i) -> std::optional<std::string> {
    if (c.is_null(i)) return std::nullopt;
    return c.text(i);
  };
  row.id = c.int64(0);
  row.node = c.text(1);
  row.boot_epoch = c.int64(2);
  row.seq = c.int64(3);
  row.stream = c.text(4);
  row.tool = c.text(5);
  row.src = c.text(6);
  row.dst = c.text(7);
  row.start_ns = c.int64(8);
  row.status = c.text(9);
  row.error = opt_text(10);
  row.sent = opt_int(11);
  row.received = opt_int(12);
  row.duplicates = opt_int(13);
  row.rtt_min_ns = opt_int(14);
  row.rtt_avg_ns = opt_int(15);
  row.rtt_median_ns = opt_int(16);
  row.rtt_max_ns = opt_int(17);
  row.rtt_stddev_ns = opt_int(18);
  if (c.is_null(19))
    row.rtts.reset();
  else
    row.rtts.emplace(c.text(19));
  row.estimate_bps = opt_real(20);
  row.lower_bps = opt_real(21);
  row.upper_bps = opt_real(22);
  row.bytes_sent = opt_int(23);
  row.duration_ns = opt_int(24);
  row.throughput_bps = opt_real(25);
  row.committed_ns = c.int64(26);
}

void read_key(const Cursor& c, ResultRow& row) {
  row.node = c.text(0);
  row.boot_epoch = c.int64(1);
  row.seq = c.int64(2);
  row.start_ns = c.int64(3);
}

sqlite::Statement& StatementCache::get(const std::string& sql) {
  if (auto it = statements_.find(sql); it != statements_.end()) return it->second;
  if (statements_.size() >= kMaxStatements) statements_.clear();
  return statements_.emplace(sql, db_.prepare(sql)).first->second;
}

SqliteCursor::SqliteCursor(sqlite::Statement& statement, const std::vector<Param>& params)
    : statement_(statement) {
  bind_params(statement_, params);
}

UtcNs week_start(UtcNs t) {
  // The epoch was a Thursday: shift so that weeks start on Monday.
  constexpr std::int64_t kShift = 3LL * 86'400 * 1'000'000'000;
  std::int64_t shifted = t + kShift;
  std::int64_t week = shifted / kWeekNs - (shifted % kWeekNs < 0 ? 1 : 0);
  return week * kWeekNs - kShift;
}

std::unique_ptr<Archive> Archive::open(const Config& config, std::stop_token stop) {
  if (stop.stop_requested()) throw Cancelled();
  if (!config.archive.postgres.empty()) return open_pg_archive(config.archive.postgres, stop);
  return open_sqlite_archive(config.archive.sqlite_db);
}

// ---- SQLite archive -------------------------------------------------------

namespace {

class SqliteSnapshot : public ArchiveSnapshot {
 public:
  SqliteSnapshot(StatementCache& statements, const std::string& uuid) : statements_(statements) {
    statements_.run("BEGIN");  // deferred: the first read below fixes the snapshot
    SqliteCursor select(statements_.get("SELECT flushed_id FROM flush_state WHERE cache_uuid = ?1"),
                        {uuid});
    watermark_ = select.next() ? select.int64(0) : 0;
  }
  ~SqliteSnapshot() override {
    try {
      statements_.run("ROLLBACK");
    } catch (const sqlite::SqliteError&) {
    }
  }
  std::int64_t watermark() override { return watermark_; }
  std::unique_ptr<Cursor> select(const Select& select) override {
    std::vector<Param> params;
    std::string sql = render(select, Dialect::sqlite, params);
    return std::make_unique<SqliteCursor>(statements_.get(sql), params);
  }

 private:
  StatementCache& statements_;
  std::int64_t watermark_ = 0;
};

class SqliteArchive : public Archive {
 public:
  explicit SqliteArchive(const std::filesystem::path& file) : db_(file) {
    db_.exec("PRAGMA synchronous=NORMAL");
    if (user_version(db_) != kArchiveSchemaVersion)
      apply_versioned(db_, "archive", kArchiveSqliteSchema, kArchiveSchemaVersion);
  }
  std::string describe() const override { return "sqlite " + db_.file().string(); }

  std::int64_t watermark(const std::string& uuid) override {
    auto select = db_.prepare("SELECT flushed_id FROM flush_state WHERE cache_uuid = ?1");
    select.bind(1, uuid);
    return select.step() ? select.int64(0) : 0;
  }

  std::int64_t append(sqlite::Database& cache, const std::string& uuid, std::int64_t upper,
                      const FlushHook& hook, std::stop_token stop) override {
    // SQLite interrupts the copy (SQLITE_INTERRUPT, then rollback) when the
    // handler, called every few thousand VM steps, sees a stop request.
    sqlite3_progress_handler(
        db_.handle(), 10'000,
        [](void* token) { return static_cast<std::stop_token*>(token)->stop_requested() ? 1 : 0; },
        &stop);
    struct ClearHandler {
      sqlite3* db;
      ~ClearHandler() { sqlite3_progress_handler(db, 0, nullptr, nullptr); }
    } clear{db_.handle()};
    try {
      if (attached_ != cache.file()) {
        if (!attached_.empty()) db_.exec("DETACH DATABASE cache");
        auto attach = db_.prepare("ATTACH DATABASE ?1 AS cache");
        attach.bind(1, cache.file().string()).run();
        attached_ = cache.file();
      }
      sqlite::Transaction transaction(db_);
      std::int64_t lower = watermark(uuid);
      if (lower >= upper) return 0;
      auto copy = db_.prepare(fmt::format(
          "INSERT INTO main.results ({0}) SELECT {0} FROM cache.results WHERE id > ?1 AND id <= ?2",
          kColumns));
      copy.bind(1, lower).bind(2, upper).run();
      std::int64_t rows = db_.changes();
      if (hook) hook("after_copy");
      auto mark = db_.prepare(
          "INSERT INTO flush_state (cache_uuid, flushed_id, flushed_ns, rows) "
          "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (cache_uuid) DO UPDATE SET "
          "flushed_id = excluded.flushed_id, flushed_ns = excluded.flushed_ns, "
          "rows = flush_state.rows + excluded.rows");
      mark.bind(1, uuid).bind(2, upper).bind(3, utc_now_ns()).bind(4, rows).run();
      if (hook) hook("before_archive_commit");
      if (stop.stop_requested()) throw Cancelled();
      transaction.commit();
      return rows;
    } catch (const sqlite::SqliteError& e) {
      if (stop.stop_requested()) throw Cancelled();
      throw ArchiveError(e.what());
    }
  }

  std::unique_ptr<ArchiveSnapshot> snapshot(const std::string& uuid) override {
    return std::make_unique<SqliteSnapshot>(statements_, uuid);
  }

 private:
  sqlite::Database db_;
  StatementCache statements_{db_};
  std::filesystem::path attached_;
};

}  // namespace

std::unique_ptr<Archive> open_sqlite_archive(const std::filesystem::path& file) {
  try {
    return std::make_unique<SqliteArchive>(file);
  } catch (const sqlite::SqliteError& e) {
    throw ArchiveError(e.what());
  }
}

}  // namespace flexmon::storage
