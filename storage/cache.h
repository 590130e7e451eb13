// The cache database: recent results in SQLite (WAL), schema in
// schemas/cache.sql. The collector writes through CacheWriter
// (storage/cache_writer.h), which owns the dedupe window and durability and
// stores through store_many(); reads go through ResultReader
// (storage/reader.h). One Cache per thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
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

class Cache {
 public:
  // Opens or creates the cache and applies the schema (unless read-only).
  // `now` gives each commit's committed_ns.
  explicit Cache(const std::filesystem::path& file, bool read_only = false,
                 UtcClock now = utc_now_ns);
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

  // The connection, for CacheWriter, which keeps its own table in the cache
  // file (collector_window) and sets the durability.
  sqlite::Database& database();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon
