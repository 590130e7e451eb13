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
#include <string>
#include <string_view>

#include "common/clock.h"

namespace flexmon {

struct Config;

// How far the archive is behind the cache.
struct FlushLag {
  std::int64_t rows = 0;         // cache rows not yet archived
  double seconds = 0;            // age of the oldest of them (committed_ns), 0 if none
  std::int64_t archived_id = 0;  // every cache id <= this is archived
};

struct FlushReport {
  bool archive_ok = true;  // false: the archive failed or is unreachable (see error)
  std::string error;
  std::int64_t rows = 0;     // rows archived by this flush
  std::int64_t deleted = 0;  // cache rows removed by retention
  FlushLag lag;              // after this flush
};

// Called at named points of a flush (tests inject faults, e.g. SIGKILL):
// after_partitions, after_copy, before_archive_commit, after_archive_commit,
// after_cache_mark, after_retention.
using FlushHook = std::function<void(std::string_view point)>;

// One flush of config.collector.cache_db to the configured archive: every row
// committed more than archive.horizon_s ago, in batches of
// archive.flush_batch_rows, then retention. Never throws for an archive
// failure (reported in the result); throws for a broken cache file.
FlushReport flush_once(const Config& config, const FlushHook& hook = {});

// The lag, from the cache alone (no archive connection): cheap, for a status
// method.
FlushLag flush_lag(const Config& config);

// Flushes every archive.flush_interval_s on its own thread, for the
// collector: start() after opening the cache, stop() before exit (waits for a
// running flush to finish its transaction).
class Flusher {
 public:
  explicit Flusher(const Config& config);  // config must outlive the Flusher
  ~Flusher();                              // stops
  Flusher(const Flusher&) = delete;
  Flusher& operator=(const Flusher&) = delete;
  void start();
  void stop();
  // The report of the last flush (lag and archive state), for status methods.
  FlushReport last() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon
