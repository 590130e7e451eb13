// Internal to flexmon_cache: RAII over libpq. A connection, results that are
// cleared when they go out of scope, and transactions that roll back unless
// committed. Errors throw storage::ArchiveError with PostgreSQL's message.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace flexmon::pq {

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

class Connection {
 public:
  // Connects; throws ArchiveError naming the server when it cannot.
  explicit Connection(const std::string& conninfo);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs SQL (one or more statements without parameters); throws on failure.
  void exec(std::string_view sql);
  // Runs one statement with text parameters (nullptr = NULL); returns its rows.
  ResultPtr query(const std::string& sql, const std::vector<std::string>& params = {});
  ResultPtr query(const std::string& sql, const std::vector<const char*>& params);

  // COPY ... FROM STDIN: start, send chunks, finish (throws on failure).
  void copy_start(const std::string& sql);
  void copy_send(std::string_view data);
  void copy_end();
  // Ends a COPY in progress with an error (the server discards it).
  void copy_abort(const std::string& why) noexcept;

  PGconn* handle() { return conn_; }
  std::string error() const;

 private:
  PGconn* conn_ = nullptr;
};

// BEGIN on construction (with `mode`, e.g. "ISOLATION LEVEL REPEATABLE READ");
// ROLLBACK on destruction unless committed.
class Transaction {
 public:
  explicit Transaction(Connection& connection, std::string_view mode = "");
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Connection& connection_;
  bool done_ = false;
};

}  // namespace flexmon::pq
