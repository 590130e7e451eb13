// Reads results from the cache and the archive as one table, without
// duplicates whatever the flush is doing: the cache contributes only the rows
// above the archive's flush watermark, read in one snapshot of each database
// (cache first, so that a row deleted by retention is already archived).
// Plain C++ types only; the manager maps them to query.* (schemas/xmlrpc-api.md;
// how reads stay consistent: schemas/storage-api.md).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "common/tool.h"
#include "storage/rtts.h"

namespace flexmon {

struct Config;

// One result, every column of the `results` table (schemas/cache.sql).
struct ResultRow {
  std::int64_t id = 0;  // id in the cache it was stored in (not unique in the archive)
  std::string node;
  std::int64_t boot_epoch = 0;
  std::int64_t seq = 0;
  std::string stream, tool, src, dst;
  UtcNs start_ns = 0;
  std::string status;
  std::optional<std::string> error;
  std::optional<std::int64_t> sent, received, duplicates;
  std::optional<std::int64_t> rtt_min_ns, rtt_avg_ns, rtt_median_ns, rtt_max_ns, rtt_stddev_ns;
  std::optional<PacketRtts> rtts;  // latency: per packet, in order
  std::optional<double> estimate_bps, lower_bps, upper_bps;
  std::optional<std::int64_t> bytes_sent, duration_ns;
  std::optional<double> throughput_bps;
  UtcNs committed_ns = 0;
};

// Filters shared by every read. Unset = no filter.
struct ResultFilter {
  std::optional<Tool> tool;
  std::optional<std::string> src;
  std::optional<std::string> dst;
  std::optional<std::string> site;  // src or dst is a node of this site
  std::optional<UtcNs> from;        // start_ns >= from
  std::optional<UtcNs> to;          // start_ns < to
  std::optional<std::string> status;
};

struct PageQuery {
  ResultFilter filter;
  std::uint32_t limit = 1000;  // 1..10000
  std::string cursor;          // from the previous page's next_cursor; empty = first page
  // Only the newest matching row of each path (tool, src, dst); one page, no
  // cursor. Reads every matching row's path and time: give `from` to keep it cheap.
  bool latest_per_path = false;
};

// Newest first: start_ns DESC, then (node, boot_epoch, seq) ascending.
struct ResultPage {
  std::vector<ResultRow> rows;
  std::string next_cursor;  // empty when this is the last page
  // The rows carry only their key and time (node, boot_epoch, seq,
  // start_ns): the caller said it holds every one of them (results' `held`).
  bool keys_only = false;
};

// Whether the caller already holds what it needs of a result, given its key
// and time. A stored result never changes, so what was made of it once (its
// XML, say) can serve every later page that shows it.
using HeldRow = std::function<bool(const ResultRow& key_and_time)>;

// Per path (tool, src, dst) over the filter's range. Percentiles come from a
// log histogram with 1 % relative resolution (memory per path is bounded).
struct PathSummary {
  std::string tool, src, dst;
  std::int64_t count = 0;  // results
  std::int64_t ok = 0;     // results with status ok
  std::int64_t sent = 0, received = 0;
  std::optional<double> loss;  // (sent - received) / sent, latency only
  std::optional<std::int64_t> rtt_min_ns, rtt_p50_ns, rtt_p90_ns, rtt_p99_ns;  // per packet
  std::optional<double> bandwidth_median_bps;  // abw estimate or throughput
  UtcNs first_ns = 0, last_ns = 0;
};

struct PathInfo {
  std::string tool, src, dst;
  std::int64_t count = 0;
  UtcNs first_ns = 0, last_ns = 0;
};

// Whether `cursor` is one that ResultPage::next_cursor could hold.
bool is_valid_cursor(const std::string& cursor);

// Reads never throw for expected failures: a bad cursor or an unreachable
// archive comes back as an Error whose message the caller can show.
// One ResultReader per thread; it keeps its prepared cache statements.
class ResultReader {
 public:
  // Opens the cache (config.collector.cache_db); the configured archive is
  // opened at the first read. Throws sqlite::UnwritableError while the
  // cache's files cannot be written (a read could write its -shm),
  // sqlite::SqliteError for a cache that cannot be opened.
  explicit ResultReader(const Config& config);
  ~ResultReader();
  ResultReader(const ResultReader&) = delete;
  ResultReader& operator=(const ResultReader&) = delete;

  // With `held`, the page's keys are read first, and when `held` is true for
  // every row of the page, the page comes back keys_only, which skips reading
  // and decoding the rows' other 23 columns. `held` is asked about the page's
  // rows in page order and stops at the first it does not hold; then the
  // full rows are read, in the same snapshot.
  Result<ResultPage> results(const PageQuery& query, const HeldRow& held = nullptr);
  Result<std::vector<PathSummary>> summary(const ResultFilter& filter);
  Result<std::vector<PathInfo>> paths(const ResultFilter& filter);

  // Streams every matching row oldest first (start_ns, node, boot_epoch, seq)
  // with flat memory; `visit` returns false to stop. Used by the dump.
  Status scan(const ResultFilter& filter, const std::function<bool(const ResultRow&)>& visit);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The most bytes one measurement sent on a path (tool abw or throughput).
struct PathBytesSent {
  Tool tool = Tool::kAbw;
  std::string src, dst;
  std::int64_t max_bytes_sent = 0;
};

// Per path, the largest bytes_sent of the abw and throughput results started
// since `since`: what the manager's cost model charges a bandwidth
// measurement (manager/cost.h). Read from the cache file alone, read-only and
// without opening the archive: the recent results it asks for are the
// cache's (archive.retention_s keeps a week), and the manager's housekeeping
// thread that asks holds no ResultReader. No cache file yet: no paths. An
// unreadable one: an Error (kIoError) with SQLite's message.
Result<std::vector<PathBytesSent>> largest_bytes_sent(const std::filesystem::path& cache_db,
                                                      UtcNs since);

// Process-wide, so never called by the library: a process that reads pages
// of results (the manager's main, the benchmarks that stand for it) calls it
// once at start. It makes glibc keep freed memory for the next page instead
// of returning it to the kernel (the figures are in storage/reader.cpp).
void keep_freed_memory_for_result_pages();

}  // namespace flexmon
