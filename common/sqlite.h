// A thin RAII layer over SQLite: a connection, prepared statements and
// transactions that roll back unless committed. Errors throw SqliteError with
// SQLite's message and the statement that failed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace flexmon::sqlite {

class SqliteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A transaction that did not begin, or a read-write open that did not
// happen, because the database's files cannot be written
// (Database::unwritable): nothing was tried, nothing changed.
class UnwritableError : public SqliteError {
 public:
  using SqliteError::SqliteError;
};

class Statement;

// Why `file` cannot be written now, or empty: it is immutable (chattr +i),
// append-only (chattr +a), or on a read-only file system. A file that does
// not exist can be.
std::string unwritable_reason(const std::filesystem::path& file);

// Exit status of a process whose SQLite file mapping failed (EX_IOERR).
inline constexpr int kExitMappedFileFault = 74;

class Database {
 public:
  // Opens (creating if needed) a database file in WAL mode with a busy timeout.
  // A read-write open of files that cannot be written (unwritable_reason of
  // the file, its -wal or its -shm) throws UnwritableError naming the file.
  //
  // The first Database of a process also makes a SIGBUS in a memory-mapped
  // file end the process at once with one line on stderr ("PROGRAM: SIGBUS
  // writing ADDRESS in FILE, ...") and kExitMappedFileFault, instead of a
  // silent death. SQLite writes its -shm through a shared mapping, and its
  // first write to a page there after the file became unwritable is a SIGBUS
  // (ext4 refuses it in page_mkwrite since Linux 5.3); unwritable() before a
  // transaction keeps that from happening, and this names the file when the
  // file changed between that check and SQLite's write. Any other SIGBUS
  // keeps its default action (a core dump).
  explicit Database(const std::filesystem::path& file, bool read_only = false);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs one or more statements that return no rows.
  void exec(std::string_view sql);
  Statement prepare(std::string_view sql);
  std::int64_t last_insert_rowid() const;
  int changes() const;
  sqlite3* handle() { return db_; }
  const std::filesystem::path& file() const { return file_; }
  // Why the database, its -wal or its -shm cannot be written now, naming the
  // file; empty when they can. Call it before each transaction (reads too:
  // a reader writes its snapshot's end into the -shm): SQLite's write to a
  // page of the -shm's mapping would otherwise be a SIGBUS.
  std::string unwritable() const;

 private:
  // How long a statement waits for another connection's lock.
  static constexpr int kBusyTimeoutMs = 5000;
  void use_wal();

  sqlite3* db_ = nullptr;
  std::filesystem::path file_;
};

class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql);
  ~Statement();
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;

  // Binds by 1-based index.
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, double value);
  Statement& bind(int index, std::string_view value);
  Statement& bind(int index, const std::string& value) {
    return bind(index, std::string_view(value));
  }
  Statement& bind(int index, const char* value) { return bind(index, std::string_view(value)); }
  Statement& bind_blob(int index, std::string_view value);
  Statement& bind_null(int index);
  Statement& bind(int index, const std::optional<std::string>& value);

  // Advances to the next row; false when done.
  bool step();
  // Runs a statement that returns no rows, then resets it.
  void run();
  void reset();

  bool is_null(int column) const;
  std::int64_t int64(int column) const;
  double real(int column) const;
  std::string text(int column) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless committed.
// Throws UnwritableError instead of beginning when the database's files
// cannot be written (Database::unwritable).
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace flexmon::sqlite
