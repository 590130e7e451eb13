// Internal to flexmon_storage: RAII over libpq. A connection, results that are
// cleared when they go out of scope, and transactions that roll back unless
// committed. Errors throw storage::ArchiveError with PostgreSQL's message.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace flexmon::pq {

// A server that accepts no connection within this long counts as down. Not a
// configuration default (no key sets it): the configurable timeout is the
// connection string's own connect_timeout (archive.postgres, common/config.h),
// which applies when shorter; this is only the ceiling over it.
inline constexpr int kConnectTimeoutS = 30;

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

class Connection {
 public:
  // Connects; throws ArchiveError naming the server when it cannot, within
  // kConnectTimeoutS, or Cancelled as soon as `stop` is requested.
  explicit Connection(const std::string& conninfo, std::stop_token stop = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs SQL (one or more statements without parameters); throws on failure.
  void exec(std::string_view sql);
  // Runs one statement with text parameters (nullptr = NULL); returns its rows.
  ResultPtr query(const std::string& sql, const std::vector<std::string>& params = {});
  ResultPtr query(const std::string& sql, const std::vector<const char*>& params);
  // The same through a statement prepared once per connection (for the
  // statements a reader repeats: no parsing and, once PostgreSQL settles on a
  // generic plan, no planning per call; partitions are then pruned at run time).
  ResultPtr query_prepared(const std::string& sql, const std::vector<std::string>& params);

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
  std::unordered_map<std::string, std::string> prepared_;  // SQL -> statement name
  int statements_ = 0;
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
