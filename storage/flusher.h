// Write-back flush of the cache to the archive. Idempotent by construction:
// the archive stores the flush watermark (highest cache id archived) in the
// same transaction as the rows, so a flush killed at any moment and run again
// leaves exactly the same archive rows. After the archive commit the cache
// records how far it is flushed; retention then deletes flushed rows older
// than archive.retention_s. An archive outage only delays flushing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/config.h"

namespace flexmon {

// How far the archive is behind the cache.
struct FlushLag {
  std::int64_t rows = 0;         // cache rows not yet archived
  double seconds = 0;            // age of the oldest of them (committed_ns), 0 if none
  std::int64_t archived_id = 0;  // every cache id <= this is archived
};

struct FlushReport {
  bool archive_ok = true;  // false: the archive failed or is unreachable (see error)
  bool cancelled = false;  // a stop was requested: rolled back, nothing lost, rerun later
  std::string error;
  std::int64_t rows = 0;     // rows archived by this flush
  std::int64_t deleted = 0;  // cache rows removed by retention
  FlushLag lag;              // after this flush
};

// What the last flush of a cache recorded in it (cache_meta 'last_flush'),
// for status reports by any process that reads the cache.
struct FlushStatus {
  UtcNs at_ns = 0;  // when it ended
  bool archive_ok = false;
  std::string error;      // when !archive_ok
  std::int64_t rows = 0;  // archived by it
  UtcNs last_ok_ns = 0;   // when a flush last reached the archive; 0: never
  FlushLag lag;           // right after it
};

// Called at named points of a flush (tests inject faults, e.g. SIGKILL):
// after_partitions, after_copy, before_archive_commit, after_archive_commit,
// after_cache_mark, after_retention.
using FlushHook = std::function<void(std::string_view point)>;

// One flush of config.collector.cache_db to the configured archive: every row
// committed more than archive.horizon_s ago, in batches of
// archive.flush_batch_rows, then retention; records a FlushStatus in the
// cache. Never throws for an archive failure (reported in the result); throws
// for a broken cache file. When `stop` is requested it returns promptly with
// `cancelled` set: the batch in progress is rolled back, and retention skipped.
// `now` gives the horizon's and the retention's reference time.
FlushReport flush_once(const Config& config, const FlushHook& hook = {}, std::stop_token stop = {},
                       const UtcClock& now = utc_now_ns);

// The lag, from the cache alone (no archive connection): cheap, for a status
// method; its age is measured at now().
FlushLag flush_lag(const Config& config, const UtcClock& now = utc_now_ns);

// The status the last flush recorded; nullopt before the first one.
std::optional<FlushStatus> last_flush(const Config& config);

// Flushes every archive.flush_interval_s on its own thread, for the
// collector; while the archive is unreachable it retries every
// min(flush_interval_s, kFlushRetryS), logging how far behind the cache is.
// start() after opening the cache; stop() returns within moments even in the
// middle of a flush (which is then rolled back and redone by the next run).
class Flusher {
 public:
  explicit Flusher(Config config, UtcClock now = utc_now_ns);
  ~Flusher();  // stops
  Flusher(const Flusher&) = delete;
  Flusher& operator=(const Flusher&) = delete;
  void start();
  void request_stop();  // returns at once
  // Requests and waits a few seconds at most; a run still stuck then is left
  // to the process exit (storage/periodic_job.h says why).
  void stop();
  // The report of the last flush (lag and archive state), for status methods.
  FlushReport last() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

inline constexpr double kFlushRetryS = 300;

}  // namespace flexmon
