// The spool holds results from the moment they are numbered until a collector
// acknowledges them, keyed by (boot epoch, seq) so that results of earlier
// epochs are still delivered after a prober restart. SqliteSpool keeps them on
// disk: put() and erase() join an open transaction that sync() commits (one
// fsync per event-loop tick: group commit); the sender syncs before it sends,
// so a result is durable before it first leaves the node.
#pragma once

#include <atomic>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace flexmon::sqlite {
class Database;
class Statement;
}  // namespace flexmon::sqlite

namespace flexmon::prober {

struct SpoolKey {
  std::uint64_t epoch = 0;
  std::uint64_t seq = 0;
  auto operator<=>(const SpoolKey&) const = default;
};

class Spool {
 public:
  virtual ~Spool() = default;
  // Keeps a result; false (and the result is not kept) when the spool is full.
  virtual bool put(SpoolKey key, std::string result) = 0;
  // Removes the results of `epoch` with first <= seq <= last; returns how many.
  virtual std::size_t erase(std::uint64_t epoch, std::uint64_t first, std::uint64_t last) = 0;
  // Makes every put() and erase() so far durable. Throws on an I/O failure.
  virtual void sync() {}
  virtual std::size_t size() const = 0;
  virtual std::size_t capacity() const = 0;
  // Visits results with key >= from in key order while `visit` returns true.
  virtual void scan(SpoolKey from,
                    const std::function<bool(SpoolKey, const std::string&)>& visit) = 0;
};

// An ordered map in memory, bounded; lost when the process ends (tests).
class MemorySpool : public Spool {
 public:
  explicit MemorySpool(std::size_t capacity = 1'000'000) : capacity_(capacity) {}
  bool put(SpoolKey key, std::string result) override;
  std::size_t erase(std::uint64_t epoch, std::uint64_t first, std::uint64_t last) override;
  std::size_t size() const override { return entries_.size(); }
  std::size_t capacity() const override { return capacity_; }
  void scan(SpoolKey from, const std::function<bool(SpoolKey, const std::string&)>& visit) override;

 private:
  std::size_t capacity_;
  std::map<SpoolKey, std::string> entries_;
};

struct SqliteSpoolOptions {
  std::size_t capacity = 10'000'000;  // results
  // Also records every (epoch, seq) ever put in table `history`, in the same
  // transaction, never deleted: what this prober produced, for the fault
  // tests. Off in production (it grows without bound).
  bool history = false;
};

// SQLite in WAL mode with synchronous=FULL: a synced result survives a
// process crash and power loss. One connection, used by the loop thread only.
class SqliteSpool : public Spool {
 public:
  // Opens or creates `file`; throws naming the file on failure.
  SqliteSpool(const std::filesystem::path& file, SqliteSpoolOptions options);
  ~SqliteSpool() override;

  bool put(SpoolKey key, std::string result) override;
  std::size_t erase(std::uint64_t epoch, std::uint64_t first, std::uint64_t last) override;
  void sync() override;
  std::size_t size() const override { return size_; }
  std::size_t capacity() const override { return options_.capacity; }
  void scan(SpoolKey from, const std::function<bool(SpoolKey, const std::string&)>& visit) override;
  // The highest (epoch, seq) ever kept, to check that a new epoch is above it.
  SpoolKey last_key();

 private:
  void begin();

  SqliteSpoolOptions options_;
  std::unique_ptr<sqlite::Database> db_;
  std::unique_ptr<sqlite::Statement> insert_, record_, erase_, scan_;
  bool in_transaction_ = false;
  std::size_t size_ = 0;
};

}  // namespace flexmon::prober
