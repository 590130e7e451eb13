// The PostgreSQL archive: libpq, COPY into `results` partitioned by week.
#include <algorithm>
#include <charconv>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "archive_pg_schema.h"
#include "cache/pq.h"
#include "cache/storage.h"
#include "common/clock.h"

namespace flexmon::pq {

using storage::ArchiveError;

Connection::Connection(const std::string& conninfo) {
  conn_ = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string message = error();
    PQfinish(conn_);
    conn_ = nullptr;
    throw ArchiveError(fmt::format("postgresql: cannot connect: {}", message));
  }
  exec("SET client_min_messages = warning");
}

Connection::~Connection() { PQfinish(conn_); }

std::string Connection::error() const {
  std::string message = conn_ ? PQerrorMessage(conn_) : "out of memory";
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return message;
}

void Connection::exec(std::string_view sql) {
  std::string owned(sql);
  ResultPtr result(PQexec(conn_, owned.c_str()));
  auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    throw ArchiveError(fmt::format("postgresql: {}: {}", owned.substr(0, 80), error()));
}

ResultPtr Connection::query(const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  return query(sql, values);
}

ResultPtr Connection::query(const std::string& sql, const std::vector<const char*>& params) {
  ResultPtr result(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                                params.data(), nullptr, nullptr, 0));
  auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    throw ArchiveError(fmt::format("postgresql: {}: {}", sql.substr(0, 80), error()));
  return result;
}

void Connection::copy_start(const std::string& sql) {
  ResultPtr result(PQexec(conn_, sql.c_str()));
  if (PQresultStatus(result.get()) != PGRES_COPY_IN)
    throw ArchiveError(fmt::format("postgresql: {}: {}", sql.substr(0, 80), error()));
}

void Connection::copy_send(std::string_view data) {
  if (PQputCopyData(conn_, data.data(), static_cast<int>(data.size())) != 1)
    throw ArchiveError(fmt::format("postgresql: COPY: {}", error()));
}

void Connection::copy_end() {
  if (PQputCopyEnd(conn_, nullptr) != 1)
    throw ArchiveError(fmt::format("postgresql: COPY end: {}", error()));
  ResultPtr result(PQgetResult(conn_));
  bool ok = PQresultStatus(result.get()) == PGRES_COMMAND_OK;
  std::string message = ok ? "" : error();
  while (ResultPtr(PQgetResult(conn_))) {
  }
  if (!ok) throw ArchiveError(fmt::format("postgresql: COPY: {}", message));
}

Transaction::Transaction(Connection& connection, std::string_view mode) : connection_(connection) {
  connection_.exec(mode.empty() ? std::string("BEGIN") : "BEGIN " + std::string(mode));
}

Transaction::~Transaction() {
  if (done_) return;
  try {
    connection_.exec("ROLLBACK");
  } catch (const ArchiveError&) {
    // The connection is gone; the server rolls the transaction back itself.
  }
}

void Transaction::commit() {
  connection_.exec("COMMIT");
  done_ = true;
}

}  // namespace flexmon::pq

namespace flexmon::storage {

namespace {

std::string param_text(const Param& p) {
  if (auto* n = std::get_if<std::int64_t>(&p)) return std::to_string(*n);
  return std::get<std::string>(p);
}

// Rows of a server-side cursor, fetched in batches: memory stays flat.
class PgCursor : public Cursor {
 public:
  PgCursor(pq::Connection& connection, std::string name, const std::string& sql,
           const std::vector<Param>& params)
      : connection_(connection), name_(std::move(name)) {
    std::vector<std::string> values;
    for (const auto& p : params) values.push_back(param_text(p));
    connection_.query(fmt::format("DECLARE {} NO SCROLL CURSOR FOR {}", name_, sql), values);
  }
  ~PgCursor() override {
    try {
      connection_.exec("CLOSE " + name_);
    } catch (const ArchiveError&) {
    }
  }
  bool next() override {
    if (++row_ < rows_) return true;
    if (done_) return false;
    batch_ = connection_.query(fmt::format("FETCH 5000 FROM {}", name_));
    rows_ = PQntuples(batch_.get());
    row_ = 0;
    if (rows_ < 5000) done_ = true;
    return rows_ > 0;
  }
  bool is_null(int c) const override { return PQgetisnull(batch_.get(), row_, c); }
  std::int64_t int64(int c) const override {
    const char* v = PQgetvalue(batch_.get(), row_, c);
    std::int64_t out = 0;
    std::from_chars(v, v + std::strlen(v), out);
    return out;
  }
  double real(int c) const override {
    const char* v = PQgetvalue(batch_.get(), row_, c);
    double out = 0;
    std::from_chars(v, v + std::strlen(v), out);
    return out;
  }
  std::string text(int c) const override {
    return std::string(PQgetvalue(batch_.get(), row_, c),
                       static_cast<std::size_t>(PQgetlength(batch_.get(), row_, c)));
  }

 private:
  pq::Connection& connection_;
  std::string name_;
  pq::ResultPtr batch_;
  int rows_ = 0, row_ = -1;
  bool done_ = false;
};

class PgSnapshot : public ArchiveSnapshot {
 public:
  PgSnapshot(pq::Connection& connection, const std::string& uuid)
      : connection_(connection),
        transaction_(connection, "ISOLATION LEVEL REPEATABLE READ READ ONLY") {
    auto result =
        connection_.query("SELECT flushed_id FROM flush_state WHERE cache_uuid = $1", {uuid});
    if (PQntuples(result.get()) > 0) {
      const char* v = PQgetvalue(result.get(), 0, 0);
      std::from_chars(v, v + std::strlen(v), watermark_);
    }
  }
  std::int64_t watermark() override { return watermark_; }
  std::unique_ptr<Cursor> select(const Select& select) override {
    std::vector<Param> params;
    std::string sql = render(select, Dialect::postgres, params);
    return std::make_unique<PgCursor>(connection_, fmt::format("flexmon_c{}", ++cursors_), sql,
                                      params);
  }

 private:
  pq::Connection& connection_;
  pq::Transaction transaction_;
  std::int64_t watermark_ = 0;
  int cursors_ = 0;
};

// COPY text format: tab-separated, \N for NULL, backslash escapes.
void append_text(std::string& out, std::string_view text) {
  for (char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += c;
    }
  }
}

template <typename Number>
void append_number(std::string& out, Number value) {
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, end);
}

// Appends one cache row (kColumns, read by `s`) as a COPY text line.
void append_copy_line(std::string& out, sqlite::Statement& s) {
  for (int c = 0; c < kColumnCount; ++c) {
    if (c) out += '\t';
    if (s.is_null(c)) {
      out += "\\N";
      continue;
    }
    switch (c) {
      case 20:
      case 21:
      case 22:
      case 25:
        append_number(out, s.real(c));
        break;
      case 1:
      case 4:
      case 5:
      case 6:
      case 7:
      case 9:
      case 10:
      case 19:
        append_text(out, s.text(c));
        break;
      default:
        append_number(out, s.int64(c));
    }
  }
  out += '\n';
}

class PgArchive : public Archive {
 public:
  explicit PgArchive(const std::string& conninfo) : conninfo_(conninfo), connection_(conninfo) {
    pq::Transaction transaction(connection_);
    // Serialises schema set-up between processes starting together.
    connection_.exec("SELECT pg_advisory_xact_lock(7231001)");
    connection_.exec(kArchivePgSchema);
    transaction.commit();
  }

  std::string describe() const override {
    return fmt::format("postgresql {}", PQdb(const_cast<pq::Connection&>(connection_).handle()));
  }

  std::int64_t watermark(const std::string& uuid) override {
    auto result =
        connection_.query("SELECT flushed_id FROM flush_state WHERE cache_uuid = $1", {uuid});
    if (PQntuples(result.get()) == 0) return 0;
    return std::stoll(PQgetvalue(result.get(), 0, 0));
  }

  // Creates the weekly partitions the rows need, each committed on its own
  // (an empty partition is harmless, and the copy's transaction then holds no
  // lock that blocks readers of `results`).
  void ensure_partitions(sqlite::Database& cache, std::int64_t lower, std::int64_t upper) {
    auto weeks = cache.prepare(
        "SELECT DISTINCT (start_ns + 259200000000000) / 604800000000000 FROM results "
        "WHERE id > ?1 AND id <= ?2");
    weeks.bind(1, lower).bind(2, upper);
    std::vector<UtcNs> starts;
    while (weeks.step()) starts.push_back(week_start(weeks.int64(0) * kWeekNs));
    for (UtcNs start : starts) {
      std::string name = fmt::format("results_w{}", format_utc(start).substr(0, 10));
      name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
      if (known_partitions_.count(name)) continue;
      pq::Transaction transaction(connection_);
      connection_.exec("SELECT pg_advisory_xact_lock(7231002)");
      connection_.exec(fmt::format(
          "CREATE TABLE IF NOT EXISTS {} PARTITION OF results FOR VALUES FROM ({}) TO ({})", name,
          start, start + kWeekNs));
      transaction.commit();
      known_partitions_.insert(name);
    }
  }

  std::int64_t append(sqlite::Database& cache, const std::string& uuid, std::int64_t upper,
                      const FlushHook& hook) override {
    std::int64_t lower = watermark(uuid);
    if (lower >= upper) return 0;
    ensure_partitions(cache, lower, upper);
    if (hook) hook("after_partitions");

    pq::Transaction transaction(connection_);
    connection_.query(
        "INSERT INTO flush_state (cache_uuid, flushed_id, flushed_ns, rows) "
        "VALUES ($1, 0, 0, 0) ON CONFLICT (cache_uuid) DO NOTHING",
        {uuid});
    // The row lock serialises flushers of one cache; re-read under it.
    auto locked = connection_.query(
        "SELECT flushed_id FROM flush_state WHERE cache_uuid = $1 FOR UPDATE", {uuid});
    // Another flusher may have moved it: its rows need no new partitions.
    lower = std::stoll(PQgetvalue(locked.get(), 0, 0));
    if (lower >= upper) return 0;

    auto rows = cache.prepare(
        fmt::format("SELECT {} FROM results WHERE id > ?1 AND id <= ?2 ORDER BY id", kColumns));
    rows.bind(1, lower).bind(2, upper);
    connection_.copy_start(fmt::format("COPY results ({}) FROM STDIN", kColumns));
    std::string buffer;
    buffer.reserve(1 << 20);
    std::int64_t count = 0;
    while (rows.step()) {
      append_copy_line(buffer, rows);
      ++count;
      if (buffer.size() >= (1 << 20) - 4096) {
        connection_.copy_send(buffer);
        buffer.clear();
      }
    }
    if (!buffer.empty()) connection_.copy_send(buffer);
    connection_.copy_end();
    if (hook) hook("after_copy");
    connection_.query(
        "UPDATE flush_state SET flushed_id = $2, flushed_ns = $3, rows = rows + $4 "
        "WHERE cache_uuid = $1",
        {uuid, std::to_string(upper), std::to_string(utc_now_ns()), std::to_string(count)});
    if (hook) hook("before_archive_commit");
    transaction.commit();
    return count;
  }

  std::unique_ptr<ArchiveSnapshot> snapshot(const std::string& uuid) override {
    return std::make_unique<PgSnapshot>(connection_, uuid);
  }

 private:
  std::string conninfo_;
  pq::Connection connection_;
  std::set<std::string> known_partitions_;
};

}  // namespace

std::unique_ptr<Archive> open_pg_archive(const std::string& conninfo) {
  return std::make_unique<PgArchive>(conninfo);
}

}  // namespace flexmon::storage
