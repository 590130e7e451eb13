#include "common/sqlite.h"

#include <sqlite3.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>

namespace flexmon::sqlite {

namespace {
[[noreturn]] void raise(sqlite3* db, std::string_view what) {
  throw SqliteError(fmt::format("sqlite: {}: {}", what, db ? sqlite3_errmsg(db) : "out of memory"));
}
}  // namespace

Database::Database(const std::filesystem::path& file, bool read_only) : file_(file) {
  int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  flags |= SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(file.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    std::string message = fmt::format("cannot open {}", file.string());
    sqlite3* failed = db_;
    db_ = nullptr;
    std::string reason = failed ? sqlite3_errmsg(failed) : "out of memory";
    sqlite3_close(failed);
    throw SqliteError(fmt::format("sqlite: {}: {}", message, reason));
  }
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  sqlite3_extended_result_codes(db_, 1);
  try {
    if (!read_only) use_wal();
    exec("PRAGMA foreign_keys=ON");
  } catch (const SqliteError& e) {
    sqlite3_close_v2(db_);  // no destructor runs for a constructor that throws
    db_ = nullptr;
    throw SqliteError(fmt::format("{} (opening {})", e.what(), file.string()));
  }
}

// A new file is switched to WAL by whichever connection comes first; a switch
// that meets another connection's lock fails with SQLITE_BUSY at once (SQLite
// calls no busy handler there), so it is tried again for as long as the busy
// timeout allows. The processes open the same new files together at a first
// start: the collector's flush and the manager's reader, the archive.
void Database::use_wal() {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  for (;;) {
    int rc = sqlite3_exec(db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) return;
    if ((rc & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= give_up)
      raise(db_, "PRAGMA journal_mode=WAL");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Database::~Database() { sqlite3_close_v2(db_); }

void Database::exec(std::string_view sql) {
  std::string owned(sql);
  char* error = nullptr;
  if (sqlite3_exec(db_, owned.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error ? error : sqlite3_errmsg(db_);
    sqlite3_free(error);
    throw SqliteError(fmt::format("sqlite: {}: {}", owned.substr(0, 80), message));
  }
}

Statement Database::prepare(std::string_view sql) { return Statement(db_, sql); }

std::int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

int Database::changes() const { return sqlite3_changes(db_); }

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
  if (sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                         &stmt_, nullptr) != SQLITE_OK)
    raise(db, fmt::format("prepare '{}'", sql.substr(0, 80)));
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement::Statement(Statement&& other) noexcept : db_(other.db_), stmt_(other.stmt_) {
  other.stmt_ = nullptr;
}

Statement& Statement::bind(int index, std::int64_t value) {
  if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

Statement& Statement::bind(int index, double value) {
  if (sqlite3_bind_double(stmt_, index, value) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  if (sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                        SQLITE_TRANSIENT) != SQLITE_OK)
    raise(db_, "bind");
  return *this;
}

Statement& Statement::bind_blob(int index, std::string_view value) {
  if (sqlite3_bind_blob(stmt_, index, value.data(), static_cast<int>(value.size()),
                        SQLITE_TRANSIENT) != SQLITE_OK)
    raise(db_, "bind");
  return *this;
}

Statement& Statement::bind_null(int index) {
  if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::string>& value) {
  return value ? bind(index, std::string_view(*value)) : bind_null(index);
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  raise(db_, fmt::format("step '{}'", std::string_view(sqlite3_sql(stmt_)).substr(0, 80)));
}

void Statement::run() {
  while (step()) {
  }
  reset();
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::int64_t Statement::int64(int column) const { return sqlite3_column_int64(stmt_, column); }

double Statement::real(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  return text ? std::string(reinterpret_cast<const char*>(text),
                            static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
              : std::string();
}

Transaction::Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Transaction::~Transaction() {
  if (!done_) {
    try {
      db_.exec("ROLLBACK");
    } catch (const SqliteError&) {
      // The transaction is already gone (SQLite rolled it back itself).
    }
  }
}

void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace flexmon::sqlite
