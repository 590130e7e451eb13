// The cache database: recent results in SQLite (WAL), schema in
// schemas/cache.sql. The collector writes through store(); the manager reads
// through query_latency() on its own connection. One Cache per thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"

namespace flexmon {

namespace wire {
class Result;
}
namespace sqlite {
class Database;
}

struct StoreOutcome {
  std::size_t stored = 0;      // new rows
  std::size_t duplicates = 0;  // already present: acknowledged, not stored again
  // Refused, not stored (acknowledge them all the same: resending cannot fix
  // them): start_ns outside [0, kMaxStartNs], which no weekly archive
  // partition can hold. `rejection` says why, for the first one.
  std::size_t rejected = 0;
  std::string rejection;
};

// Results must start in [1970-01-01, 2100-01-01) UTC (schemas/cache.md).
inline constexpr std::int64_t kMaxStartNs = 4'102'444'800'000'000'000;

struct LatencyQuery {
  std::optional<std::string> src;
  std::optional<std::string> dst;
  std::optional<UtcNs> from;     // inclusive
  std::optional<UtcNs> to;       // exclusive
  std::uint32_t limit = 1000;    // newest first
  bool latest_per_path = false;  // only the newest result of each path
};

struct LatencyRow {
  std::string src;
  std::string dst;
  UtcNs start_ns = 0;
  std::string status;
  std::string error;
  std::int64_t sent = 0;
  std::int64_t received = 0;
  std::int64_t duplicates = 0;
  // Empty when no packet came back.
  std::optional<std::int64_t> min_ns, avg_ns, median_ns, max_ns, stddev_ns;
  std::vector<std::int64_t> rtts_ns;  // per packet; -1 = lost
};

class Cache {
 public:
  // Opens or creates the cache and applies the schema (unless read-only).
  explicit Cache(const std::filesystem::path& file, bool read_only = false);
  ~Cache();
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // Stores results of one node's boot epoch in one transaction. A result
  // already present (same node, epoch, seq) is counted, not stored again.
  StoreOutcome store(const std::string& node, std::uint64_t boot_epoch,
                     const std::vector<const wire::Result*>& results);

  // One node's results of one boot epoch, for store_many().
  struct StoreGroup {
    std::string node;
    std::uint64_t boot_epoch = 0;
    std::vector<const wire::Result*> results;
  };
  // Stores several groups in one transaction (the collector's group commit);
  // one outcome per group, in order. All or nothing. `also`, when given, runs
  // in the same transaction before the commit (the collector's dedupe window).
  std::vector<StoreOutcome> store_many(
      const std::vector<StoreGroup>& groups,
      const std::function<void(sqlite::Database&)>& also = nullptr);

  // The write connection, for a writer that keeps its own tables in the cache
  // file and sets its own durability (the collector: collector_window).
  sqlite::Database& database();

  std::vector<LatencyRow> query_latency(const LatencyQuery& query);

  std::int64_t count_results();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon
