// Test helpers that read a cache file in plain SQL (common/sqlite.h), as a
// test looks at what was stored; the product reads through ResultReader
// (storage/reader.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/sqlite.h"
#include "storage/rtts.h"

namespace flexmon::test {

// Rows of table `results`.
inline std::int64_t count_cache_results(const std::filesystem::path& cache_db,
                                        bool read_only = false) {
  sqlite::Database db(cache_db, read_only);
  auto count = db.prepare("SELECT COUNT(*) FROM results");
  count.step();
  return count.int64(0);
}

// Per-packet RTTs of a stored rtts_ns column, -1 for a lost packet.
inline std::vector<std::int64_t> decode_rtts(const std::optional<std::string>& json) {
  std::vector<std::int64_t> rtts;
  if (json)
    visit_rtts(*json, [&](std::optional<std::int64_t> rtt) { rtts.push_back(rtt.value_or(-1)); });
  return rtts;
}

// Per-packet RTTs as the reader serves them, -1 for a lost packet.
inline std::vector<std::int64_t> decode_rtts(const std::optional<PacketRtts>& rtts) {
  std::vector<std::int64_t> out;
  if (rtts)
    rtts->for_each([&](std::optional<std::int64_t> rtt) { out.push_back(rtt.value_or(-1)); });
  return out;
}

// A latency result as stored, with its RTTs decoded.
struct CachedLatency {
  std::string src, dst, status;
  UtcNs start_ns = 0;
  std::int64_t sent = 0, received = 0;
  std::optional<std::int64_t> min_ns, median_ns;
  std::vector<std::int64_t> rtts_ns;
};

// Every latency result in the cache, newest first.
inline std::vector<CachedLatency> cached_latency(const std::filesystem::path& cache_db,
                                                 bool read_only = true) {
  sqlite::Database db(cache_db, read_only);
  auto select = db.prepare(
      "SELECT src, dst, status, start_ns, sent, received, rtt_min_ns, rtt_median_ns, rtts_ns "
      "FROM results WHERE tool = 'latency' ORDER BY start_ns DESC, src, dst");
  std::vector<CachedLatency> rows;
  while (select.step()) {
    CachedLatency row;
    row.src = select.text(0);
    row.dst = select.text(1);
    row.status = select.text(2);
    row.start_ns = select.int64(3);
    row.sent = select.int64(4);
    row.received = select.int64(5);
    if (!select.is_null(6)) row.min_ns = select.int64(6);
    if (!select.is_null(7)) row.median_ns = select.int64(7);
    if (!select.is_null(8)) row.rtts_ns = decode_rtts(select.text(8));
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace flexmon::test
