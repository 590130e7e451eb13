// The PostgreSQL archive: libpq, COPY into `results` partitioned by week.
#include <poll.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>

#include "archive_pg_schema.h"
#include "common/clock.h"
#include "storage/archive.h"
#include "storage/pq.h"

namespace flexmon::pq {

using storage::ArchiveError;
using storage::Cancelled;

// Connects without blocking (PQconnectPoll), looking at `stop` every 100 ms,
// so that a server that does not answer never holds up a stopping process.
Connection::Connection(const std::string& conninfo, std::stop_token stop) {
  conn_ = PQconnectStart(conninfo.c_str());
  auto fail = [&](const std::string& why) {
    PQfinish(conn_);
    conn_ = nullptr;
    throw ArchiveError(fmt::format("postgresql: cannot connect: {}", why));
  };
  if (!conn_) throw ArchiveError("postgresql: cannot connect: out of memory");
  if (PQstatus(conn_) == CONNECTION_BAD) fail(error());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kConnectTimeoutS);
  PostgresPollingStatusType polling = PGRES_POLLING_WRITING;
  while (polling != PGRES_POLLING_OK) {
    if (polling == PGRES_POLLING_FAILED) fail(error());
    pollfd wait{PQsocket(conn_),
                static_cast<short>(polling == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    int ready = ::poll(&wait, 1, 100);
    if (stop.stop_requested()) {
      PQfinish(conn_);
      conn_ = nullptr;
      throw Cancelled();
    }
    if (ready == 0) {
      if (std::chrono::steady_clock::now() > deadline)
        fail(fmt::format("no answer within {} s", kConnectTimeoutS));
      continue;
    }
    polling = PQconnectPoll(conn_);
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

ResultPtr Connection::query_prepared(const std::string& sql,
                                     const std::vector<std::string>& params) {
  auto found = prepared_.find(sql);
  if (found == prepared_.end()) {
    // Statement texts vary with the filters used (and a site's node count):
    // a long-lived connection keeps a bounded set.
    if (prepared_.size() >= 64) {
      exec("DEALLOCATE ALL");
      prepared_.clear();
    }
    std::string name = fmt::format("flexmon_s{}", ++statements_);
    ResultPtr prepared(
        PQprepare(conn_, name.c_str(), sql.c_str(), static_cast<int>(params.size()), nullptr));
    if (PQresultStatus(prepared.get()) != PGRES_COMMAND_OK)
      throw ArchiveError(fmt::format("postgresql: {}: {}", sql.substr(0, 80), error()));
    found = prepared_.emplace(sql, std::move(name)).first;
  }
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  ResultPtr result(PQexecPrepared(conn_, found->second.c_str(), static_cast<int>(values.size()),
                                  values.data(), nullptr, nullptr, 0));
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

void Connection::copy_abort(const std::string& why) noexcept {
  if (PQputCopyEnd(conn_, why.c_str()) == 1)
    while (ResultPtr(PQgetResult(conn_))) {
    }
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

// Rows of a query with a LIMIT (a page): one round trip, no cursor.
class PgResultCursor : public Cursor {
 public:
  PgResultCursor(pq::Connection& connection, const std::string& sql,
                 const std::vector<Param>& params) {
    std::vector<std::string> values;
    for (const auto& p : params) values.push_back(param_text(p));
    result_ = connection.query_prepared(sql, values);
    rows_ = PQntuples(result_.get());
  }
  bool next() override { return ++row_ < rows_; }
  bool is_null(int c) const override { return PQgetisnull(result_.get(), row_, c); }
  std::int64_t int64(int c) const override {
    const char* v = PQgetvalue(result_.get(), row_, c);
    std::int64_t out = 0;
    std::from_chars(v, v + PQgetlength(result_.get(), row_, c), out);
    return out;
  }
  double real(int c) const override {
    const char* v = PQgetvalue(result_.get(), row_, c);
    double out = 0;
    std::from_chars(v, v + PQgetlength(result_.get(), row_, c), out);
    return out;
  }
  std::string text(int c) const override {
    return std::string(PQgetvalue(result_.get(), row_, c),
                       static_cast<std::size_t>(PQgetlength(result_.get(), row_, c)));
  }

 private:
  pq::ResultPtr result_;
  int rows_ = 0, row_ = -1;
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
    if (select.limit) return std::make_unique<PgResultCursor>(connection_, sql, params);
    return std::make_unique<PgCursor>(connection_, fmt::format("flexmon_c{}", ++cursors_), sql,
                                      params);
  }

 private:
  pq::Connection& connection_;
  pq::Transaction transaction_;
  std::int64_t watermark_ = 0;
  int cursors_ = 0;
};

// ---- COPY of cache rows ----------------------------------------------------
//
// A producer thread reads the cache rows with one prepared statement (no
// per-row allocation but a chunk's new paths) and formats them as COPY text
// while the flushing thread sends the previous buffers: SQLite reading and
// PostgreSQL ingest overlap. Within chunks of kChunkRows, rows are grouped by
// path (src, dst) and each path's rows sorted by start_ns, so
// one path's rows of a flush land on a few heap pages and the path index is
// filled in runs: the one-path query then reads few pages, and the index
// inserts stay in cache. Chunks bound the memory whatever the batch size.

constexpr std::size_t kSendBytes = 1 << 20;  // one PQputCopyData
constexpr std::size_t kChunkRows = 65'536;   // rows sorted together
constexpr std::size_t kQueueBuffers = 3;     // formatted buffers in flight

// COPY text format: tab-separated, \N for NULL, backslash escapes.
void append_escaped(std::string& out, const char* text, std::size_t size) {
  const char* end = text + size;
  while (text < end) {
    const char* run = text;
    while (text < end && *text != '\\' && *text != '\t' && *text != '\n' && *text != '\r') ++text;
    out.append(run, static_cast<std::size_t>(text - run));
    if (text == end) break;
    switch (*text++) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += "\\r";
    }
  }
}

template <typename Number>
void append_number(std::string& out, Number value) {
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, end);
}

enum class Kind : unsigned char { integer, real, text };

constexpr std::array<Kind, kColumnCount> column_kinds() {
  std::array<Kind, kColumnCount> kinds{};
  kinds.fill(Kind::integer);
  for (int c : {1, 4, 5, 6, 7, 9, 10, 19}) kinds[static_cast<std::size_t>(c)] = Kind::text;
  for (int c : {20, 21, 22, 25}) kinds[static_cast<std::size_t>(c)] = Kind::real;
  return kinds;
}
constexpr auto kKinds = column_kinds();
constexpr int kSrcColumn = 6, kDstColumn = 7, kStartColumn = 8;
static_assert(kDstColumn == kSrcColumn + 1, "a path is read as one \"src\\tdst\" run");

class CopyProducer {
 public:
  CopyProducer(sqlite::Database& cache, std::int64_t lower, std::int64_t upper,
               std::stop_token stop)
      : cache_(cache), lower_(lower), upper_(upper), stop_(std::move(stop)) {
    thread_ = std::thread([this] { run(); });
  }
  ~CopyProducer() {
    cancel();
    thread_.join();
  }
  CopyProducer(const CopyProducer&) = delete;
  CopyProducer& operator=(const CopyProducer&) = delete;

  // The next formatted buffer; false at the end. Rethrows the producer's error.
  bool next(std::string& buffer) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !full_.empty() || done_; });
    if (full_.empty()) {
      if (error_) std::rethrow_exception(error_);
      return false;
    }
    if (!buffer.empty() || buffer.capacity()) free_.push_back(std::move(buffer));
    buffer = std::move(full_.front());
    full_.pop_front();
    changed_.notify_all();
    return true;
  }
  std::int64_t rows() const { return rows_; }  // after next() returned false

 private:
  struct Line {
    std::uint32_t offset, size;  // in chunk_
    std::uint32_t path;          // paths_ number of (src, dst)
    std::int64_t start_ns;
  };

  void cancel() {
    std::lock_guard lock(mutex_);
    cancelled_ = true;
    changed_.notify_all();
  }

  // Hands `out` to the sender; false when cancelled.
  bool publish(std::string& out) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return full_.size() < kQueueBuffers || cancelled_; });
    if (cancelled_) return false;
    full_.push_back(std::move(out));
    changed_.notify_all();
    if (!free_.empty()) {
      out = std::move(free_.back());
      free_.pop_back();
    } else {
      out = std::string();
    }
    out.clear();
    out.reserve(kSendBytes + 64 * 1024);
    return true;
  }

  // Sorts the chunk's lines by path (in the order the chunk met them) and
  // time, and moves them to the send buffers. Paths are numbered once per
  // line, so the sort compares integers only (comparing the names took a
  // sixth of this thread's time).
  bool flush_chunk(std::string& out) {
    std::sort(lines_.begin(), lines_.end(), [](const Line& a, const Line& b) {
      return std::tie(a.path, a.start_ns) < std::tie(b.path, b.start_ns);
    });
    for (const Line& line : lines_) {
      out.append(chunk_.data() + line.offset, line.size);
      if (out.size() >= kSendBytes && !publish(out)) return false;
    }
    lines_.clear();
    paths_.clear();
    chunk_.clear();
    return true;
  }

  // The number of the path whose escaped "src\tdst" starts at `start` in
  // chunk_ (the two columns are adjacent, and escaped text holds no tab).
  std::uint32_t path_number(std::size_t start) {
    std::string_view line(chunk_.data() + start, chunk_.size() - start);
    auto path = line.substr(0, line.find('\t', line.find('\t') + 1));
    if (auto found = paths_.find(path); found != paths_.end()) return found->second;
    auto number = static_cast<std::uint32_t>(paths_.size());
    paths_.emplace(std::string(path), number);
    return number;
  }

  void run() {
    try {
      produce();
    } catch (...) {
      std::lock_guard lock(mutex_);
      error_ = std::current_exception();
    }
    std::lock_guard lock(mutex_);
    done_ = true;
    changed_.notify_all();
  }

  void produce() {
    std::string sql =
        fmt::format("SELECT {} FROM results WHERE id > ?1 AND id <= ?2 ORDER BY id", kColumns);
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(cache_.handle(), sql.c_str(), -1, &raw, nullptr) != SQLITE_OK)
      throw ArchiveError(fmt::format("cache: {}", sqlite3_errmsg(cache_.handle())));
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> statement(raw, sqlite3_finalize);
    sqlite3_bind_int64(raw, 1, lower_);
    sqlite3_bind_int64(raw, 2, upper_);
    std::string out;
    out.reserve(kSendBytes + 64 * 1024);
    chunk_.reserve(32 << 20);
    lines_.reserve(kChunkRows);
    std::int64_t count = 0;
    for (;;) {
      int rc = sqlite3_step(raw);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW)
        throw ArchiveError(fmt::format("cache: reading rows: {}", sqlite3_errmsg(cache_.handle())));
      Line line{};
      line.offset = static_cast<std::uint32_t>(chunk_.size());
      std::size_t path_start = 0;
      for (int c = 0; c < kColumnCount; ++c) {
        if (c) chunk_ += '\t';
        if (sqlite3_column_type(raw, c) == SQLITE_NULL) {
          chunk_ += "\\N";
          continue;
        }
        switch (kKinds[static_cast<std::size_t>(c)]) {
          case Kind::integer:
            append_number(chunk_, static_cast<std::int64_t>(sqlite3_column_int64(raw, c)));
            break;
          case Kind::real:
            append_number(chunk_, sqlite3_column_double(raw, c));
            break;
          case Kind::text: {
            auto* text = reinterpret_cast<const char*>(sqlite3_column_text(raw, c));
            auto size = static_cast<std::size_t>(sqlite3_column_bytes(raw, c));
            if (c == kSrcColumn) path_start = chunk_.size();
            append_escaped(chunk_, text, size);
          }
        }
      }
      chunk_ += '\n';
      line.path = path_number(path_start);
      line.start_ns = sqlite3_column_int64(raw, kStartColumn);
      line.size = static_cast<std::uint32_t>(chunk_.size()) - line.offset;
      lines_.push_back(line);
      if (++count % 1024 == 0 && stop_.stop_requested()) throw Cancelled();
      if (lines_.size() >= kChunkRows || chunk_.size() >= (std::size_t{1} << 28)) {
        if (!flush_chunk(out)) return;
      }
    }
    if (!flush_chunk(out)) return;
    if (!out.empty() && !publish(out)) return;
    rows_ = count;
  }

  sqlite::Database& cache_;
  std::int64_t lower_, upper_;
  std::stop_token stop_;
  std::string chunk_;
  std::vector<Line> lines_;
  // "src\tdst" -> number, for the chunk being read (looked up by string_view).
  struct PathHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view path) const {
      return std::hash<std::string_view>()(path);
    }
  };
  std::unordered_map<std::string, std::uint32_t, PathHash, std::equal_to<>> paths_;
  std::int64_t rows_ = 0;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::string> full_;
  std::vector<std::string> free_;
  bool done_ = false, cancelled_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

class PgArchive : public Archive {
 public:
  PgArchive(const std::string& conninfo, std::stop_token stop) : connection_(conninfo, stop) {
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
        "SELECT DISTINCT (start_ns + 259200000000000) / 604800000000000 - "
        "((start_ns + 259200000000000) % 604800000000000 < 0) FROM results "
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
                      const FlushHook& hook, std::stop_token stop) override {
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

    connection_.copy_start(fmt::format("COPY results ({}) FROM STDIN", kColumns));
    std::int64_t count = 0;
    try {
      CopyProducer producer(cache, lower, upper, stop);
      std::string buffer;
      while (producer.next(buffer)) connection_.copy_send(buffer);
      count = producer.rows();
    } catch (const std::exception& e) {
      connection_.copy_abort(e.what());  // leaves the connection usable for the rollback
      throw;
    }
    connection_.copy_end();
    if (hook) hook("after_copy");
    connection_.query(
        "UPDATE flush_state SET flushed_id = $2, flushed_ns = $3, rows = rows + $4 "
        "WHERE cache_uuid = $1",
        {uuid, std::to_string(upper), std::to_string(utc_now_ns()), std::to_string(count)});
    if (hook) hook("before_archive_commit");
    if (stop.stop_requested()) throw Cancelled();
    transaction.commit();
    return count;
  }

  std::unique_ptr<ArchiveSnapshot> snapshot(const std::string& uuid) override {
    return std::make_unique<PgSnapshot>(connection_, uuid);
  }

 private:
  pq::Connection connection_;
  std::set<std::string> known_partitions_;
};

}  // namespace

std::unique_ptr<Archive> open_pg_archive(const std::string& conninfo, std::stop_token stop) {
  return std::make_unique<PgArchive>(conninfo, stop);
}

}  // namespace flexmon::storage
