// The dedupe window: what was committed per (node, boot epoch), as every
// seq <= high_water plus a few ranges above it. CacheWriter
// (storage/cache_writer.h) classifies each result against it and writes it
// in the same transaction as the results it describes (table
// collector_window in the cache file), so duplicates are recognised after a
// collector crash and after retention trimmed the results themselves. Seqs
// further than kSeqWindow above the high-water mark are outside the window:
// dropped and not acknowledged (an honest prober never sends them, see
// schemas/wire.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/sqlite.h"
#include "common/wire_limits.h"

namespace flexmon {

class SeqWindow {
 public:
  enum class Verdict { fresh, duplicate, outside };

  Verdict classify(std::uint64_t seq) const;
  // Records a committed (or about to be) seq; precondition: classify == fresh.
  void add(std::uint64_t seq);

  std::uint64_t high_water() const { return high_water_; }
  const std::vector<std::pair<std::uint64_t, std::uint64_t>>& above() const { return above_; }

  // Compact form of the ranges above high_water (varints), and back; decode
  // returns false on a blob it did not write.
  std::string encode_above() const;
  static bool decode(std::uint64_t high_water, std::string_view above, SeqWindow& out);

 private:
  std::uint64_t high_water_ = 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> above_;  // sorted, disjoint, inclusive
};

using WindowKey = std::pair<std::string, std::uint64_t>;  // (node, boot epoch)

// Table collector_window on the cache's write connection (CacheWriter's),
// with its upsert prepared once (it runs in every commit).
class WindowTable {
 public:
  // Creates the table if needed.
  explicit WindowTable(sqlite::Database& db);
  // Every window; throws on a row CacheWriter did not write.
  std::map<WindowKey, SeqWindow> load();
  // Upserts one window; call inside the transaction that stores its results.
  void save(const WindowKey& key, const SeqWindow& window);

 private:
  sqlite::Database& db_;
  sqlite::Statement upsert_;
};

}  // namespace flexmon
